// The conversation list: newest first, each with its date; open, rename in place, delete (asked first).
import { useState } from "react";

export interface ConversationSummary {
  id: string;
  title: string;
  /** ISO 8601; the example app writes UTC without an offset. */
  updated_at: string;
}

const when = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const today = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });

/** "Today 14:05", or a date and time for older ones. */
export function dateText(iso: string): string {
  const date = new Date(/Z|[+-]\d\d:?\d\d$/.test(iso) ? iso : `${iso}Z`);
  return date.toDateString() === new Date().toDateString() ? `Today ${today.format(date)}` : when.format(date);
}

export interface SidebarProps {
  conversations: ConversationSummary[];
  /** The open conversation's id; null for a new chat. */
  current: string | null;
  onOpen(id: string): void;
  onNew(): void;
  onRename(id: string, title: string): void;
  onDelete(id: string): void;
}

export function Sidebar({ conversations, current, onOpen, onNew, onRename, onDelete }: SidebarProps) {
  const [renaming, setRenaming] = useState<string | null>(null);

  function finish(conversation: ConversationSummary, input: HTMLInputElement, save: boolean) {
    if (renaming !== conversation.id) return; // Enter, then the blur it causes: once
    setRenaming(null);
    const title = input.value.trim();
    if (save && title && title !== conversation.title) onRename(conversation.id, title);
  }

  return (
    <aside className="sidebar" id="sidebar" aria-label="Conversations">
      <header>
        <button className="new-chat" id="new" type="button" onClick={onNew}>+ New chat</button>
      </header>
      <ul className="conversations" id="conversations">
        {conversations.map((c) => (
          <li key={c.id} data-id={c.id} aria-current={c.id === current}>
            {renaming === c.id ? (
              <input aria-label="New title" defaultValue={c.title} autoFocus onFocus={(e) => e.currentTarget.select()}
                onKeyDown={(e) => {
                  if (e.key === "Enter") finish(c, e.currentTarget, true);
                  if (e.key === "Escape") finish(c, e.currentTarget, false);
                }}
                onBlur={(e) => finish(c, e.currentTarget, true)} />
            ) : (
              <>
                <button type="button" className="open" onClick={() => onOpen(c.id)}>
                  <span className="title">{c.title || "(untitled)"}</span>
                  <time dateTime={c.updated_at}>{dateText(c.updated_at)}</time>
                </button>
                <button type="button" className="icon rename" title="Rename" onClick={() => setRenaming(c.id)}>✎</button>
                <button type="button" className="icon delete" title="Delete"
                  onClick={() => confirm(`Delete "${c.title || "(untitled)"}"?`) && onDelete(c.id)}>✕</button>
              </>
            )}
          </li>
        ))}
      </ul>
    </aside>
  );
}
