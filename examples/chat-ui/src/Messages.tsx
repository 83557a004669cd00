// The items of a thread: the user's bubble, the answer (markdown, its state in words, Copy and
// Regenerate), and what the model did on the way (tools, reasoning), folded.
import { CopyButton } from "./CopyButton";
import { Markdown } from "./Markdown";

export type AnswerStatus = "streaming" | "complete" | "stopped" | "error";

/** The words under an answer in each state; `error` says what went wrong, if known. A saved answer
 * still "streaming" is one the server is finishing after a reload. */
export function statusNote(status: AnswerStatus, { live = true, error = "" } = {}): string {
  if (status === "stopped") return "Stopped.";
  if (status === "error") return error || "This answer failed.";
  if (status === "streaming" && !live) return "Still answering… this updates when it is done.";
  return "";
}

export function UserMessage({ text }: { text: string }) {
  return <li className="message user">{text}</li>;
}

export function AnswerMessage({ text, status, note = "", onRegenerate }: {
  text: string;
  status: AnswerStatus;
  note?: string;
  /** Only for the last answer: ask its question again. */
  onRegenerate?: () => void;
}) {
  return (
    <li className="message assistant" data-status={status}>
      <Markdown text={text} />
      <p className="note">{note}</p>
      {status !== "streaming" && (
        <div className="actions">
          {text && <CopyButton className="icon copy" title="Copy the answer" text={() => text} />}
          {onRegenerate && (
            <button type="button" className="icon regenerate" title="Answer the last question again" onClick={onRegenerate}>
              Regenerate
            </button>
          )}
        </div>
      )}
    </li>
  );
}

export function ToolMessage({ id, name, input, output, error, done }: {
  id: string;
  name: string;
  input: unknown;
  output?: unknown;
  error?: string;
  /** Has the tool answered? (An output may itself be undefined.) */
  done: boolean;
}) {
  const result = error !== undefined ? `error: ${error}` : done ? JSON.stringify(output, null, 2) : "";
  return (
    <li className="message tool" data-tool-id={id}>
      <details>
        <summary>Used a tool: {name}{error !== undefined ? " (failed)" : done ? "" : " …"}</summary>
        <pre>{`${name}(${JSON.stringify(input)})${result ? `\n→ ${result}` : ""}`}</pre>
      </details>
    </li>
  );
}

export function ReasoningMessage({ text, thinking }: { text: string; thinking: boolean }) {
  return (
    <li className="message reasoning">
      <details>
        <summary>{thinking ? "Thinking…" : "Thought it through"}</summary>
        <p className="thought">{text}</p>
      </details>
    </li>
  );
}
