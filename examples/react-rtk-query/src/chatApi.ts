// The RTK Query pattern the docs leave out: a *mutation* that streams.
//
// - `getConversation` is a query whose cache entry holds the conversation.
// - `sendMessage` is a mutation whose queryFn POSTs the prompt, reads the NDJSON
//   stream with chatstream.js, and appends each delta to the last assistant
//   message with `api.util.updateQueryData`. Components re-render as text arrives.
// - It resolves with the final message as the mutation's data, and returns
//   {error} (never throws) when the request fails or the stream breaks.
// - Stop is `promise.abort()` on the mutation's promise: RTK aborts the `signal`
//   it handed to queryFn, the reader cancels the body (the server then closes
//   the model's stream), and the message is marked "stopped". RTK settles an
//   aborted mutation with its own {name: "AbortError"} error.
// Only plain, serializable data goes into the store.
import { createApi, fakeBaseQuery } from "@reduxjs/toolkit/query/react";
import { ChatStreamError, streamChat } from "chatstream";

export type Role = "user" | "assistant";
export type MessageStatus = "complete" | "streaming" | "stopped" | "error";

export interface Message {
  id: string;
  role: Role;
  content: string;
  status: MessageStatus;
  error?: string;
}

export interface Conversation {
  id: string;
  messages: Message[];
}

export interface SendMessageArgs {
  conversationId: string;
  content: string;
}

/** What a failed sendMessage returns as `error`: plain data, safe for the store. */
export interface ChatError {
  status: number | "ABORTED" | "STREAM_ERROR";
  code: string;
  message: string;
}

let chatUrl = "/api/chat";
/** Where the blueprint lives; tests point it at a running server. */
export function setChatUrl(url: string): void {
  chatUrl = url;
}

let nextId = 0;
const newId = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${(nextId++).toString(36)}`;

export function toChatError(error: unknown): ChatError {
  if (error instanceof DOMException && error.name === "AbortError") {
    return { status: "ABORTED", code: "aborted", message: "Stopped." };
  }
  if (error instanceof ChatStreamError) {
    return { status: error.status || "STREAM_ERROR", code: error.code, message: error.message };
  }
  return { status: "STREAM_ERROR", code: "network_error", message: "Could not reach the server." };
}

/** The text to show for a mutation's error; "" for a stop, which is not an error. */
export function errorMessage(error: unknown): string {
  if (!error || typeof error !== "object") return "";
  if ("name" in error && error.name === "AbortError") return "";
  if ("code" in error && error.code === "aborted") return "";
  return "message" in error ? String(error.message) : "Something went wrong.";
}

export const chatApi = createApi({
  reducerPath: "chatApi",
  baseQuery: fakeBaseQuery<ChatError>(),
  endpoints: (build) => ({
    getConversation: build.query<Conversation, string>({
      // The conversation lives only in the cache; a real app might load it from the server here.
      queryFn: (id) => ({ data: { id, messages: [] } }),
      keepUnusedDataFor: 3600,
    }),
    sendMessage: build.mutation<Message, SendMessageArgs>({
      async queryFn({ conversationId, content }, { dispatch, getState, signal }) {
        const update = (recipe: (draft: Conversation) => void) =>
          dispatch(chatApi.util.updateQueryData("getConversation", conversationId, recipe));
        const history = (chatApi.endpoints.getConversation.select(conversationId)(getState() as never).data
          ?.messages ?? [])
          .filter((m) => m.status === "complete" && m.content)
          .map(({ role, content }) => ({ role, content }));

        const assistantId = newId("assistant");
        update((draft) => {
          draft.messages.push({ id: newId("user"), role: "user", content, status: "complete" });
          draft.messages.push({ id: assistantId, role: "assistant", content: "", status: "streaming" });
        });
        const patchAssistant = (patch: (m: Message) => void) =>
          update((draft) => {
            const message = draft.messages.find((m) => m.id === assistantId);
            if (message) patch(message);
          });

        let text = "";
        try {
          const body = { messages: [...history, { role: "user" as const, content }] };
          for await (const event of streamChat(chatUrl, body, { format: "ndjson", signal })) {
            if (event.type === "delta") {
              text += event.content;
              patchAssistant((m) => {
                m.content += event.content;
              });
            }
          }
          patchAssistant((m) => {
            m.status = "complete";
          });
          return { data: { id: assistantId, role: "assistant", content: text, status: "complete" } };
        } catch (caught) {
          const error = toChatError(caught);
          patchAssistant((m) => {
            m.status = error.status === "ABORTED" ? "stopped" : "error";
            m.error = error.message;
          });
          return { error };
        }
      },
    }),
  }),
});

export const { useGetConversationQuery, useSendMessageMutation } = chatApi;
