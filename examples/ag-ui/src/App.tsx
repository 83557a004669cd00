// AG-UI's own client, @ag-ui/client's HttpAgent, on the blueprint's POST /api/chat: the body is a
// RunAgentInput, so the answer comes as AG-UI events (docs/howto/ag-ui.md). The agent keeps the
// conversation (its `messages`), and this page draws them with the shared chat look as they change.
// A tool that needs approval ends the run with an interrupt; Approve or Deny answers it in the next
// run's `resume`, and the answer goes on. Stop asks the server to stop the model (POST .../stop, with the
// stream id the response's X-Chat-Stream-Id gave), then `abortRun()`: this app finishes answers for
// readers who merely leave, so leaving alone would not stop it.
import { HttpAgent, type Interrupt, type Message } from "@ag-ui/client";
import { AnswerMessage, ChatLayout, ReasoningMessage, ToolMessage, UserMessage, type AnswerStatus } from "chat-ui";
import { Fragment, useEffect, useMemo, useRef, useState } from "react";

type Ended = "complete" | "stopped" | "error";

const newId = () => crypto.randomUUID();

function parsed(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Words for a person from a failed run: the server's own sentence when it sent one. */
function words(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const body = text.slice(text.indexOf("{"));
  try {
    return JSON.parse(body).error.message ?? "Something went wrong.";
  } catch {
    return "Something went wrong. Try again.";
  }
}

export function App() {
  const [session, setSession] = useState(0); // New chat: a new agent, a new thread
  const streamId = useRef<string | null>(null);
  const agent = useMemo(() => new HttpAgent({
    url: "/api/chat",
    fetch: async (url: RequestInfo | URL, init?: RequestInit) => {
      const response = await fetch(url, init);
      streamId.current = response.headers.get("X-Chat-Stream-Id");
      return response;
    },
  }), [session]);
  const [messages, setMessages] = useState<Message[]>([]);
  const [running, setRunning] = useState(false);
  const [error, setError] = useState("");
  const [interrupts, setInterrupts] = useState<Interrupt[]>([]);
  const [ended, setEnded] = useState<Record<string, Ended>>({});
  const [asked, setAsked] = useState(0);
  const stopped = useRef(false);

  useEffect(() => {
    setMessages([]);
    setInterrupts([]);
    setEnded({});
    setError("");
    const subscription = agent.subscribe({
      onMessagesChanged: ({ messages: now }) => setMessages([...now]),
      onRunErrorEvent: ({ event }) => setError(event.message),
    });
    return () => subscription.unsubscribe();
  }, [agent]);

  async function run(parameters: Parameters<HttpAgent["runAgent"]>[0]): Promise<boolean> {
    setRunning(true);
    setError("");
    setAsked((n) => n + 1);
    stopped.current = false;
    const before = new Set(agent.messages.map((m) => m.id));
    let outcome: Ended = "complete";
    try {
      await agent.runAgent(parameters, { onRunErrorEvent: () => void (outcome = "error") });
      if (stopped.current) outcome = "stopped";
      return true;
    } catch (caught) {
      outcome = "error";
      setError(words(caught));
      return false;
    } finally {
      setRunning(false);
      setInterrupts([...agent.pendingInterrupts]);
      const answers = agent.messages.filter((m) => m.role === "assistant" && !before.has(m.id));
      setEnded((was) => ({ ...was, ...Object.fromEntries(answers.map((m) => [m.id, outcome])) }));
    }
  }

  async function send(text: string): Promise<boolean> {
    const message: Message = { id: newId(), role: "user", content: text };
    agent.addMessage(message);
    const accepted = await run({});
    if (!accepted) agent.setMessages(agent.messages.filter((m) => m.id !== message.id)); // refused: the box gets it back
    return accepted;
  }

  function answer(interrupt: Interrupt, approved: boolean) {
    void run({ resume: [{ interruptId: interrupt.id, status: "resolved", payload: { approved } }] });
  }

  const results = new Map(messages.flatMap((m) => (m.role === "tool" ? [[m.toolCallId, m] as const] : [])));
  const last = messages.findLast((m) => m.role === "assistant")?.id;
  const status = (id: string): AnswerStatus => (running && id === last ? "streaming" : ended[id] ?? "complete");

  return (
    <ChatLayout title="flask_chatstream" kind="React + AG-UI" conversations={[]} current={null}
      onOpen={() => {}} onNew={() => setSession((n) => n + 1)} onRename={() => {}} onDelete={() => {}}
      followKey={asked} busy={running} error={error} onSend={send}
      onStop={() => {
        stopped.current = true;
        if (streamId.current) void fetch(`/api/chat/${streamId.current}/stop`, { method: "POST" });
        agent.abortRun();
      }}>
      {messages.map((m) => {
        if (m.role === "user") return <UserMessage key={m.id} text={typeof m.content === "string" ? m.content : ""} />;
        if (m.role === "reasoning") {
          return <ReasoningMessage key={m.id} text={m.content} thinking={running && m.id === messages.at(-1)?.id} />;
        }
        if (m.role !== "assistant") return null;
        return (
          <Fragment key={m.id}>
            {m.toolCalls?.map((call) => {
              const result = results.get(call.id);
              const waiting = interrupts.find((i) => i.toolCallId === call.id);
              const output = result ? parsed(typeof result.content === "string" ? result.content : "") : undefined;
              return (
                <ToolMessage key={call.id} id={call.id} name={call.function.name} input={parsed(call.function.arguments)}
                  output={output} done={result !== undefined}
                  denied={typeof output === "string" && output.startsWith("The user denied")}
                  approval={waiting && !running
                    ? { onApprove: () => answer(waiting, true), onDeny: () => answer(waiting, false) }
                    : undefined} />
              );
            })}
            {(m.content || !m.toolCalls?.length) && (
              <AnswerMessage text={m.content ?? ""} status={status(m.id)}
                note={status(m.id) === "stopped" ? "Stopped." : status(m.id) === "error" ? error || "This answer failed." : ""} />
            )}
          </Fragment>
        );
      })}
    </ChatLayout>
  );
}
