import { useChat } from "@ai-sdk/react";
import { isToolUIPart, getToolName } from "ai";
import { useState, type FormEvent } from "react";
import { errorText, makeChat, stopAnswer } from "./chat";

export function App() {
  const [chat] = useState(makeChat);
  const { messages, sendMessage, status, error } = useChat({ chat });
  const [prompt, setPrompt] = useState("Explain streaming in one paragraph.");
  const busy = status === "submitted" || status === "streaming";

  function onSubmit(event: FormEvent) {
    event.preventDefault();
    void sendMessage({ text: prompt });
  }

  return (
    <main>
      <h1>React + the AI SDK's useChat</h1>
      <ol id="messages">
        {messages.map((m) => (
          <li key={m.id} className={`message ${m.role}`}>
            <strong>{m.role}:</strong>{" "}
            {m.parts.map((part, i) => {
              if (part.type === "text") return <span key={i} className="content">{part.text}</span>;
              if (part.type === "reasoning") return <em key={i} className="reasoning">{part.text}</em>;
              if (isToolUIPart(part)) {
                return (
                  <code key={i} className="tool" data-state={part.state}>
                    {getToolName(part)}({JSON.stringify(part.input)})
                    {part.state === "output-available" ? ` → ${JSON.stringify(part.output)}` : ""}
                  </code>
                );
              }
              return null;
            })}
          </li>
        ))}
      </ol>
      <form onSubmit={onSubmit}>
        <textarea id="prompt" rows={3} value={prompt} onChange={(e) => setPrompt(e.target.value)} />
        <button id="send" type="submit" disabled={busy}>Send</button>
        <button id="stop" type="button" disabled={!busy} onClick={() => void stopAnswer(chat)}>Stop</button>
      </form>
      <p id="status">{status}</p>
      <p id="error" role="alert">{errorText(error)}</p>
    </main>
  );
}
