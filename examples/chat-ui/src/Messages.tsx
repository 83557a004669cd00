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

export function ToolMessage({ id, name, input, output, error, done, denied = false, approval }: {
  id: string;
  name: string;
  input: unknown;
  output?: unknown;
  error?: string;
  /** Has the tool answered? (An output may itself be undefined.) */
  done: boolean;
  /** The user said no to this call. */
  denied?: boolean;
  /** The call waits for the user's approval: what Approve and Deny do. */
  approval?: { onApprove: () => void; onDeny: () => void };
}) {
  const call = `${name}(${JSON.stringify(input)})`;
  if (approval) {
    return (
      <li className="message tool approval" data-tool-id={id}>
        <p>The model wants to use a tool: <code>{call}</code></p>
        <div className="actions">
          <button type="button" className="approve" onClick={approval.onApprove}>Approve</button>
          <button type="button" className="deny" onClick={approval.onDeny}>Deny</button>
        </div>
      </li>
    );
  }
  const result = denied ? "denied by you" : error !== undefined ? `error: ${error}` : done ? JSON.stringify(output, null, 2) : "";
  const state = denied ? " (denied)" : error !== undefined ? " (failed)" : done ? "" : " …";
  return (
    <li className="message tool" data-tool-id={id}>
      <details>
        <summary>Used a tool: {name}{state}</summary>
        <pre>{`${call}${result ? `\n→ ${result}` : ""}`}</pre>
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
