import { useEffect, useState } from "react";

/** A button that copies `text()` to the clipboard and says whether it worked. */
export function CopyButton({ text, className, title = "Copy" }: { text: () => string; className: string; title?: string }) {
  const [label, setLabel] = useState("Copy");
  useEffect(() => {
    if (label === "Copy") return;
    const timer = setTimeout(() => setLabel("Copy"), 1500);
    return () => clearTimeout(timer);
  }, [label]);
  async function copy() {
    try {
      await navigator.clipboard.writeText(text());
      setLabel("Copied");
    } catch {
      setLabel("Copy failed");
    }
  }
  return <button type="button" className={className} title={title} onClick={() => void copy()}>{label}</button>;
}
