// Where the question is written: Enter sends, Shift+Enter adds a line, a blank message never leaves,
// the box clears on send and grows with its text. Stop takes Send's place while an answer comes.
// A message the server refuses before answering (too long, say) comes back into the box to edit.
import { useLayoutEffect, useRef, useState, type FormEvent } from "react";

export function Composer({ busy, error, onSend, onStop }: {
  busy: boolean;
  /** Words for a person (chatstream.js's errorText), or "". */
  error: string;
  /** Resolves to false when the server refused the message before answering: the box gets it back. */
  onSend(text: string): void | Promise<boolean | void>;
  onStop(): void;
}) {
  const [text, setText] = useState("");
  const area = useRef<HTMLTextAreaElement>(null);
  useLayoutEffect(() => {
    const box = area.current;
    if (!box) return;
    box.style.height = "auto";
    box.style.height = `${box.scrollHeight + 2}px`;
  }, [text]);

  function submit(event: FormEvent) {
    event.preventDefault();
    if (!text.trim() || busy) return;
    const sent = text;
    setText("");
    void Promise.resolve(onSend(sent)).then((accepted) => {
      if (accepted === false) setText((now) => now || sent); // unless something new was typed meanwhile
    });
  }

  return (
    <div className="composer">
      <form className="ask" id="ask" onSubmit={submit}>
        <label className="visually-hidden" htmlFor="prompt">Message</label>
        <textarea ref={area} className="prompt" id="prompt" rows={1} placeholder="Ask something" autoComplete="off"
          autoFocus value={text} onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
              e.preventDefault();
              e.currentTarget.form?.requestSubmit();
            }
          }} />
        <button className="send" id="send" type="submit" hidden={busy} disabled={busy || !text.trim()}>Send</button>
        <button className="stop" id="stop" type="button" hidden={!busy} onClick={onStop}>Stop</button>
      </form>
      <p className="error" id="error" role="alert">{error}</p>
      <p className="hint">Enter sends, Shift+Enter adds a line.</p>
    </div>
  );
}
