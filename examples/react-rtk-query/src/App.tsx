import { useRef, useState, type FormEvent } from "react";
import {
  errorMessage,
  newConversationId,
  useGetConversationQuery,
  useListConversationsQuery,
  useSendMessageMutation,
} from "./chatApi";

export function App() {
  const [current, setCurrent] = useState(newConversationId);
  const { data: conversations } = useListConversationsQuery();
  const { data } = useGetConversationQuery(current);
  const [sendMessage, { isLoading, error, reset }] = useSendMessageMutation();
  const [prompt, setPrompt] = useState("Explain streaming in one paragraph.");
  const running = useRef<{ abort(): void } | null>(null);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    const request = sendMessage({ conversationId: current, content: prompt });
    running.current = request;
    await request; // resolves with {data} or {error}; never throws
    running.current = null;
  }

  function open(id: string) {
    reset();
    setCurrent(id);
  }

  return (
    <main>
      <h1>React + RTK Query</h1>
      <nav aria-label="Conversations">
        <button id="new" type="button" disabled={isLoading} onClick={() => open(newConversationId())}>
          New chat
        </button>
        <ul id="conversations">
          {conversations?.map((c) => (
            <li key={c.id}>
              <button type="button" data-id={c.id} aria-current={c.id === current} disabled={isLoading}
                onClick={() => open(c.id)}>
                {c.title || "(untitled)"}
              </button>
            </li>
          ))}
        </ul>
      </nav>
      <ol id="messages">
        {data?.messages.map((m) => (
          <li key={m.id} className={`message ${m.role}`} data-status={m.status}>
            {m.tools?.map((t) => (
              <div key={t.id} className="tool" data-tool={t.name}>
                {t.name}({JSON.stringify(t.arguments)})
                {t.error !== undefined ? ` → error: ${t.error}` : t.output !== undefined ? ` → ${JSON.stringify(t.output)}` : ""}
              </div>
            ))}
            <strong>{m.role}:</strong> <span className="content">{m.content}</span>
            {m.status === "stopped" && <em className="note"> (stopped)</em>}
          </li>
        ))}
      </ol>
      <form onSubmit={onSubmit}>
        <textarea id="prompt" rows={3} value={prompt} onChange={(e) => setPrompt(e.target.value)} />
        <button id="send" type="submit" disabled={isLoading}>Send</button>
        <button id="stop" type="button" disabled={!isLoading} onClick={() => running.current?.abort()}>
          Stop
        </button>
      </form>
      <p id="error" role="alert">{errorMessage(error)}</p>
    </main>
  );
}
