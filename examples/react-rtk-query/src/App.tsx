import { skipToken } from "@reduxjs/toolkit/query/react";
import { AnswerMessage, ChatLayout, ReasoningMessage, ToolMessage, UserMessage, statusNote, useHashId } from "chat-ui";
import { Fragment, useEffect, useRef, useState } from "react";
import {
  chatApi,
  errorMessage,
  newConversationId,
  refused,
  startConversation,
  useDeleteConversationMutation,
  useGetConversationQuery,
  useListConversationsQuery,
  useRenameConversationMutation,
  useSendMessageMutation,
  type ToolUse,
} from "./chatApi";
import { useAppDispatch } from "./store";

export function App() {
  const dispatch = useAppDispatch();
  const [current, setCurrent] = useHashId(); // a reload reopens the conversation
  const [finishing, setFinishing] = useState(false);
  const { data: conversations = [] } = useListConversationsQuery();
  // A conversation the server is still answering (the page was reloaded under it): look again until it is saved.
  const { data } = useGetConversationQuery(current ?? skipToken, { pollingInterval: finishing ? 1500 : 0 });
  const [sendMessage, { isLoading, error, reset }] = useSendMessageMutation();
  const [renameConversation] = useRenameConversationMutation();
  const [deleteConversation] = useDeleteConversationMutation();
  const running = useRef<{ abort(): void } | null>(null);
  const [asked, setAsked] = useState(0);

  const messages = current ? data?.messages ?? [] : [];
  const serverIsFinishing = !isLoading && messages.at(-1)?.status === "streaming";
  useEffect(() => setFinishing(serverIsFinishing), [serverIsFinishing]);

  /** False when the server refused the message before answering (too long, say): the box gets it back. */
  async function ask(content: string, regenerate = false): Promise<boolean> {
    let conversationId = current;
    if (!conversationId) {
      conversationId = newConversationId();
      dispatch(startConversation(conversationId));
      setCurrent(conversationId);
    }
    setAsked((n) => n + 1);
    const request = sendMessage({ conversationId, content, regenerate });
    running.current = request;
    const result = await request; // resolves with {data} or {error}; never throws
    running.current = null;
    // A stopped mutation invalidates nothing: refetch the list, and the conversation as the server saved
    // it (the words on their way when the model stopped are in it: the page shows them, as a reload would).
    const stopped = "error" in result && typeof result.error === "object" && result.error !== null
      && "name" in result.error && result.error.name === "AbortError";
    dispatch(chatApi.util.invalidateTags(stopped ? ["ConversationList", { type: "Conversation", id: conversationId }]
      : ["ConversationList"]));
    return !("error" in result && refused(result.error));
  }

  async function answerApproval(call: ToolUse, approved: boolean) {
    if (!current) return;
    setAsked((n) => n + 1);
    const request = sendMessage({ conversationId: current, content: "", approval: { call, approved } });
    running.current = request;
    await request;
    running.current = null;
  }

  function regenerate() {
    const question = messages.findLast((m) => m.role === "user");
    if (question) void ask(question.content, true);
  }

  function open(id: string | null) {
    reset();
    setCurrent(id);
  }

  return (
    <ChatLayout
      title={conversations.find((c) => c.id === current)?.title || "flask_chatstream"}
      kind="React + RTK Query"
      conversations={conversations}
      current={current}
      onOpen={open}
      onNew={() => open(null)}
      onRename={(id, title) => void renameConversation({ id, title })}
      onDelete={(id) => {
        void deleteConversation(id);
        if (id === current) open(null);
      }}
      followKey={asked}
      busy={isLoading}
      error={errorMessage(error)}
      onSend={(text) => ask(text)}
      onStop={() => running.current?.abort()}
    >
      {messages.map((m, i) => {
        if (m.role === "user") return <UserMessage key={m.id} text={m.content} />;
        const last = i === messages.length - 1;
        // The words of a failed answer: its own, or (once refetched from the server) the mutation's.
        const failure = m.error ?? (last ? errorMessage(error) : "");
        return (
          <Fragment key={m.id}>
            {m.reasoning && <ReasoningMessage text={m.reasoning} thinking={m.status === "streaming" && !m.content} />}
            {m.tools?.map((t) => (
              // A tool that needs approval waits for the person: the answer goes on once they say.
              <ToolMessage key={t.id} id={t.id} name={t.name} input={t.arguments} output={t.output} error={t.error}
                done={"output" in t || t.error !== undefined} denied={t.denied}
                approval={t.approval_id && !isLoading
                  ? { onApprove: () => void answerApproval(t, true), onDeny: () => void answerApproval(t, false) }
                  : undefined} />
            ))}
            <AnswerMessage text={m.content} status={m.status}
              note={statusNote(m.status, { live: isLoading && last, error: failure })}
              onRegenerate={last && !isLoading ? regenerate : undefined} />
          </Fragment>
        );
      })}
    </ChatLayout>
  );
}
