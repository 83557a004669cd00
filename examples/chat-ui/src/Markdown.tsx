// An answer as markdown, while it streams. Model output is untrusted: react-markdown builds React
// elements (never innerHTML), leaves raw HTML out, and drops javascript: and other unsafe URLs.
// Nor does the page load what an answer names: an image would be fetched from wherever the model (or
// a prompt injected into it) points, a tracking and exfiltration channel, so an image is a link to it.
// GFM adds tables and lists of tasks; rehype-highlight colours code (the colours are in chat.css).
import { memo, useRef, type ComponentProps } from "react";
import ReactMarkdown, { type Components } from "react-markdown";
import rehypeHighlight from "rehype-highlight";
import remarkGfm from "remark-gfm";
import { CopyButton } from "./CopyButton";

function CodeBlock({ node: _node, children, ...props }: ComponentProps<"pre"> & { node?: unknown }) {
  const pre = useRef<HTMLPreElement>(null);
  return (
    <pre ref={pre} {...props}>
      {children}
      <CopyButton className="copy-code" title="Copy the code" text={() => pre.current?.querySelector("code")?.textContent ?? ""} />
    </pre>
  );
}

function Link({ node: _node, ...props }: ComponentProps<"a"> & { node?: unknown }) {
  return <a {...props} target="_blank" rel="noopener noreferrer" />;
}

function ImageLink({ src, alt }: ComponentProps<"img"> & { node?: unknown }) {
  return <a href={typeof src === "string" ? src : undefined} target="_blank" rel="noopener noreferrer">image: {alt || String(src ?? "")}</a>;
}

const components: Components = { pre: CodeBlock, a: Link, img: ImageLink };
const remarkPlugins = [remarkGfm];
const rehypePlugins = [rehypeHighlight];

/** Renders again only when the text changes; an unclosed code fence renders as code to the end. */
export const Markdown = memo(function Markdown({ text }: { text: string }) {
  return (
    <div className="content">
      {text && <ReactMarkdown remarkPlugins={remarkPlugins} rehypePlugins={rehypePlugins} components={components}>{text}</ReactMarkdown>}
    </div>
  );
});
