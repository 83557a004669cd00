// An answer as markdown, while it streams. Model output is untrusted: react-markdown builds React
// elements (never innerHTML), leaves raw HTML out, and drops javascript: and other unsafe URLs.
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

const components: Components = { pre: CodeBlock, a: Link };
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
