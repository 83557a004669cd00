import { useRef, useState, type FormEvent } from "react";
import { errorMessage, useGetConversationQuery, useSendMessageMutation } from "./chatApi";

const CONVERSATION = "main";

export function App() {
  const { data } = useGetConversationQuery(CONVERSATION);
  const [sendMessage, { isLoading, error }] = useSendMessageMutation();
  const [prompt, setPrompt] = useState("Explain streaming in one paragraph.");
  const running = useRef<{ abort(): void } | null>(null);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    const request = sendMessage({ conversationId: CONVERSATION, content: prompt });
    running.current = request;
    await request; // resolves with {data} or {error}; never throws
    running.current = null;
  }

  return (
    <main>
      <h1>React + RTK Query</h1>
      <ol id="messages">
        {data?.messages.map((m) => (
          <li key={m.id} className={`message ${m.role}`} data-status={m.status}>
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
