// useChat against Flask: the Vercel AI SDK's own client, unchanged, talking to flask_chatstream.
//
// The blueprint speaks the AI SDK's UI message stream (`ui`) to any request in useChat's shape, so
// DefaultChatTransport needs little more than the URL. What this file adds:
// - Conversations the server keeps. The example app saves every question and answer; the chat's id
//   is the conversation's, each request carries only the new message (so one refused message never
//   poisons the next), and `loadConversation` turns a saved conversation (text, tools, reasoning) back into UIMessages.
// - Stop. useChat's stop() aborts the request, which a server that finishes answers for readers who
//   leave (the example app does) takes as a closed tab; so Stop first tells the server, with the
//   stream's id (its X-Chat-Stream-Id header).
// - Tools that need approval: the answer stops at the call, the page shows Approve and Deny
//   (addToolApprovalResponse), and once every call is answered the chat sends the answer back by
//   itself (sendAutomaticallyWhen); the server runs or refuses the call and the answer goes on in
//   the same message.
// - Errors in words, from chatstream.js's table of the relay's error codes.
import { Chat } from "@ai-sdk/react";
import { DefaultChatTransport, lastAssistantMessageIsCompleteWithApprovalResponses, type UIMessage } from "ai";
import { ChatStreamError, errorText as chatstreamErrorText } from "chatstream";
import type { ConversationSummary } from "chat-ui";

export type AnswerStatus = "complete" | "streaming" | "stopped" | "error";

/** What an answer carries beside its parts: the server's token usage (sent at the end), and its
 * state as saved ("stopped" is also set here, by Stop). */
export interface Metadata {
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  status?: AnswerStatus;
}
export type ChatMessage = UIMessage<Metadata>;

let apiBase = "/api";
/** Where the blueprint lives; tests point it at a running server. */
export function setApiBase(url: string): void {
  apiBase = url.replace(/\/$/, "");
}

/** Each chat's stream now running, as the server names it (for Stop). */
const streamIds = new WeakMap<object, string>();

/** A chat; its id is the conversation's on the server (a new one gets a fresh id). */
export function makeChat(id?: string, messages: ChatMessage[] = []): Chat<ChatMessage> {
  const chat: Chat<ChatMessage> = new Chat<ChatMessage>({
    id,
    messages,
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
    transport: new DefaultChatTransport({
      api: `${apiBase}/chat`,
      fetch: async (input, init) => {
        const response = await fetch(input, init);
        const streamId = response.headers.get("X-Chat-Stream-Id");
        if (streamId) streamIds.set(chat, streamId);
        return response;
      },
      prepareSendMessagesRequest: ({ id, messages, trigger, body }) => ({
        body: {
          ...body,
          id,
          conversation_id: id,
          messages: messages.slice(-1), // the question; the server adds the history
          ...(trigger === "regenerate-message" ? { regenerate: true } : {}), // the server drops the old answer
        },
      }),
    }),
  });
  return chat;
}

/** A conversation as the example app keeps it (GET /api/conversations/<id>). */
interface SavedConversation {
  id: string;
  title: string;
  messages: {
    id: number;
    role: "user" | "assistant";
    content: string;
    status: AnswerStatus;
    tools?: { id: string; name: string; arguments: unknown; output?: unknown; error?: string; denied?: boolean }[];
    reasoning?: string;
  }[];
}

const conversationUrl = (id: string) => `${apiBase}/conversations/${encodeURIComponent(id)}`;

/** The saved conversations, newest first; null if the server cannot say. */
export async function listConversations(): Promise<ConversationSummary[] | null> {
  const response = await fetch(`${apiBase}/conversations`);
  return response.ok ? response.json() : null;
}

export async function renameConversation(id: string, title: string): Promise<void> {
  await fetch(conversationUrl(id), {
    method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ title }),
  });
}

export async function deleteConversation(id: string): Promise<void> {
  await fetch(conversationUrl(id), { method: "DELETE" });
}

/** A saved conversation as UIMessages, or null if the server has no such conversation. */
export async function loadConversation(id: string): Promise<ChatMessage[] | null> {
  const response = await fetch(conversationUrl(id));
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`The server answered with an error (${response.status}).`);
  const saved = (await response.json()) as SavedConversation;
  return saved.messages.map((m): ChatMessage => {
    const text = { type: "text" as const, text: m.content, state: "done" as const };
    if (m.role === "user") return { id: String(m.id), role: "user", parts: [text] };
    const tools = (m.tools ?? []).map((t) => t.denied
      ? { type: `tool-${t.name}` as const, toolCallId: t.id, state: "output-denied" as const, input: t.arguments,
          approval: { id: t.id, approved: false as const } } // a denial, not a failure (the approval's own id is not kept)
      : t.error !== undefined
      ? { type: `tool-${t.name}` as const, toolCallId: t.id, state: "output-error" as const, input: t.arguments, errorText: t.error }
      : { type: `tool-${t.name}` as const, toolCallId: t.id, state: "output-available" as const, input: t.arguments, output: t.output });
    const thought = m.reasoning ? [{ type: "reasoning" as const, text: m.reasoning, state: "done" as const }] : [];
    return { id: String(m.id), role: "assistant", metadata: { status: m.status }, parts: [...thought, ...tools, text] };
  });
}

/** Stop the answer now streaming: in the browser at once, and on the server (the model stops). The
 * stop may take a moment to reach the worker that runs the stream, and its answer ends cut then: so
 * the browser lets go first, or useChat would take the cut for an error. The answer is marked stopped,
 * and then shown as the server saved it: the words that were on their way when it stopped are in the
 * saved answer, so the page shows them too (as a reload would), rather than less than was kept. */
export async function stopAnswer(chat: Chat<ChatMessage>): Promise<void> {
  const last = chat.messages.at(-1);
  const streamId = streamIds.get(chat);
  const told = streamId
    ? fetch(`${apiBase}/chat/${encodeURIComponent(streamId)}/stop`, { method: "POST", keepalive: true }).catch(() => {})
    : undefined;
  await chat.stop();
  await told;
  if (last?.role !== "assistant") return;
  chat.messages = chat.messages.map((m) => m.id === last.id ? { ...m, metadata: { ...m.metadata, status: "stopped" } } : m);
  for (let attempt = 0; attempt < 50; attempt++) { // saved a moment after the stream's end
    const saved = await loadConversation(chat.id).catch(() => null);
    const answer = saved?.at(-1);
    if (answer?.role === "assistant" && answer.metadata?.status !== "streaming") {
      if (chat.status === "ready" && chat.messages.at(-1)?.id === last.id) chat.messages = saved!;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** What to show for useChat's error, in words for a person: an HTTP error's body is the server's
 * JSON error, whose code chatstream.js has a sentence for; an in-stream error's text is the server's. */
export function errorText(error: Error | undefined): string {
  if (!error) return "";
  try {
    const { code, message } = JSON.parse(error.message).error as { code: string; message: string };
    return chatstreamErrorText(new ChatStreamError(message, { code }));
  } catch {
    return error.message;
  }
}

/** The text of a message's text parts. */
export function textOf(message: UIMessage): string {
  return message.parts.map((part) => (part.type === "text" ? part.text : "")).join("");
}
