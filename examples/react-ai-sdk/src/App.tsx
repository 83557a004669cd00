import { useChat } from "@ai-sdk/react";
import { getToolName, isToolUIPart } from "ai";
import {
  AnswerMessage,
  ChatLayout,
  ReasoningMessage,
  ToolMessage,
  UserMessage,
  statusNote,
  useHashId,
  type AnswerStatus,
  type ConversationSummary,
} from "chat-ui";
import { Fragment, useCallback, useEffect, useState } from "react";
import {
  deleteConversation,
  errorText,
  listConversations,
  loadConversation,
  makeChat,
  renameConversation,
  stopAnswer,
  textOf,
  type ChatMessage,
} from "./chat";

export function App() {
  const [current, setCurrent] = useHashId(); // a reload reopens the conversation
  const [chat, setChat] = useState(() => makeChat());
  // Re-render at most every 50 ms: a fast model sends hundreds of chunks a second, and each render parses the
  // answer's markdown again (the demo page renders once per animation frame for the same reason).
  const { messages, sendMessage, regenerate, status, error, addToolApprovalResponse } = useChat({ chat, experimental_throttle: 50 });
  const [conversations, setConversations] = useState<ConversationSummary[]>([]);
  const [asked, setAsked] = useState(0);
  const busy = status === "submitted" || status === "streaming";

  const refreshList = useCallback(async () => {
    const listed = await listConversations();
    if (listed) setConversations(listed);
  }, []);

  const open = useCallback(async (id: string | null) => {
    const saved = id ? await loadConversation(id) : null;
    setCurrent(saved ? id : null);
    setChat(makeChat(saved ? id! : undefined, saved ?? []));
  }, [setCurrent]);

  useEffect(() => {
    void open(current);
  }, []); // eslint-disable-line react-hooks/exhaustive-deps -- once, for the conversation in the URL

  useEffect(() => {
    // at first, and after each answer: a new conversation, a new title, a later date
    if (status === "ready" || status === "error") void refreshList();
  }, [status, refreshList]);

  // An answer the server is still finishing (the page was reloaded under it): look again until it is saved.
  const finishing = !busy && messages.at(-1)?.metadata?.status === "streaming";
  useEffect(() => {
    if (!finishing) return;
    const timer = setTimeout(async () => {
      const saved = await loadConversation(chat.id);
      if (saved && chat.status === "ready") chat.messages = saved;
    }, 1500);
    return () => clearTimeout(timer);
  }, [finishing, messages, chat]);

  function ask(text: string) {
    if (!current) setCurrent(chat.id);
    setAsked((n) => n + 1);
    void sendMessage({ text });
  }

  function statusOf(message: ChatMessage, last: boolean): AnswerStatus {
    if (last && busy) return "streaming";
    if (last && status === "error") return "error";
    return message.metadata?.status ?? "complete";
  }

  const answer = (key: string, text: string, state: AnswerStatus, last: boolean) => (
    <AnswerMessage key={key} text={text} status={state}
      note={statusNote(state, { live: last && busy, error: last ? errorText(error) : "" })}
      onRegenerate={last && !busy ? () => void regenerate() : undefined} />
  );
  const tail = messages.at(-1);

  return (
    <ChatLayout
      title={conversations.find((c) => c.id === current)?.title || "flask_chatstream"}
      kind="React + useChat"
      conversations={conversations}
      current={current}
      onOpen={(id) => void open(id)}
      onNew={() => void open(null)}
      onRename={async (id, title) => {
        await renameConversation(id, title);
        await refreshList();
      }}
      onDelete={async (id) => {
        await deleteConversation(id);
        if (id === current) await open(null);
        await refreshList();
      }}
      followKey={asked}
      busy={busy}
      error={errorText(error)}
      onSend={ask}
      onStop={() => void stopAnswer(chat)}
    >
      {messages.map((m, i) => {
        if (m.role === "user") return <UserMessage key={m.id} text={textOf(m)} />;
        const last = i === messages.length - 1;
        return (
          <Fragment key={m.id}>
            {m.parts.map((part, j) => {
              if (part.type === "reasoning") {
                return <ReasoningMessage key={j} text={part.text} thinking={part.state === "streaming"} />;
              }
              if (isToolUIPart(part)) {
                // A tool that needs approval waits for the user: the answer goes on once they say
                // (makeChat sends the answer back by itself, sendAutomaticallyWhen).
                const asking = part.state === "approval-requested" && !busy;
                const answer = (approved: boolean) => () =>
                  void addToolApprovalResponse({ id: part.approval!.id, approved });
                return (
                  <ToolMessage key={part.toolCallId} id={part.toolCallId} name={getToolName(part)} input={part.input}
                    output={part.state === "output-available" ? part.output : undefined}
                    error={part.state === "output-error" ? part.errorText : undefined}
                    done={part.state === "output-available" || part.state === "output-error"}
                    denied={part.state === "output-denied"}
                    approval={asking ? { onApprove: answer(true), onDeny: answer(false) } : undefined} />
                );
              }
              return null;
            })}
            {answer(`${m.id}-answer`, textOf(m), statusOf(m, last), last)}
          </Fragment>
        );
      })}
      {/* The question is out and no answer has begun, or it was refused: say so under it. */}
      {tail?.role === "user" && (busy || status === "error") && answer("pending", "", busy ? "streaming" : "error", true)}
    </ChatLayout>
  );
}
