// The RTK Query pattern the docs leave out: a *mutation* that streams, into a query's cache entry.
//
// - `getConversation` is a real query: it loads the conversation the server keeps (the example app
//   saves every question and answer in its database). A new conversation is simply empty.
// - `sendMessage` is a mutation whose queryFn POSTs only the new message (the server adds the
//   history), reads the NDJSON stream with chatstream.js, and appends each delta to the last
//   assistant message with `api.util.updateQueryData`. Components re-render as text arrives.
// - When it settles it invalidates the conversation (and the list), so the cache is refetched from
//   the server: what you see afterwards is what was saved.
// - It resolves with the final message as the mutation's data, and returns {error} (never throws)
//   when the request fails or the stream breaks.
// - Stop is `promise.abort()` on the mutation's promise: RTK aborts the `signal` it handed to
//   queryFn; chatstream.js cancels the body and tells the server to stop the model, and the
//   message is marked "stopped".
// Only plain, serializable data goes into the store.
import { createApi, fakeBaseQuery } from "@reduxjs/toolkit/query/react";
import { ChatStreamError, streamChat } from "chatstream";

export type Role = "user" | "assistant";
export type MessageStatus = "complete" | "streaming" | "stopped" | "error";

export interface ToolUse {
  id: string;
  name: string;
  arguments: unknown;
  output?: unknown;
  error?: string;
}

export interface Message {
  id: string | number;
  role: Role;
  content: string;
  status: MessageStatus;
  error?: string;
  /** The tools the server ran for this answer, as they happened (not saved by the example app). */
  tools?: ToolUse[];
}

export interface Conversation {
  id: string;
  title?: string;
  messages: Message[];
}

export interface ConversationSummary {
  id: string;
  title: string;
  updated_at: string;
  messages: number;
}

export interface SendMessageArgs {
  conversationId: string;
  content: string;
}

/** What a failed request returns as `error`: plain data, safe for the store. */
export interface ChatError {
  status: number | "ABORTED" | "STREAM_ERROR";
  code: string;
  message: string;
}

let apiBase = "/api";
/** Where the blueprint lives; tests point it at a running server. */
export function setApiBase(url: string): void {
  apiBase = url.replace(/\/$/, "");
}

let nextId = 0;
const newId = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${(nextId++).toString(36)}`;
export const newConversationId = () => newId("conversation");

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

async function getJSON<T>(url: string): Promise<{ data: T } | { error: ChatError }> {
  try {
    const response = await fetch(url);
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      return { error: { status: response.status, code: body?.error?.code ?? "http_error", message: body?.error?.message ?? response.statusText } };
    }
    return { data: (await response.json()) as T };
  } catch (caught) {
    return { error: toChatError(caught) };
  }
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 100));

export const chatApi = createApi({
  reducerPath: "chatApi",
  baseQuery: fakeBaseQuery<ChatError>(),
  tagTypes: ["Conversation", "ConversationList"],
  endpoints: (build) => ({
    listConversations: build.query<ConversationSummary[], void>({
      queryFn: () => getJSON<ConversationSummary[]>(`${apiBase}/conversations`),
      providesTags: ["ConversationList"],
    }),
    getConversation: build.query<Conversation, string>({
      async queryFn(id) {
        // The server saves an answer once its stream has ended; until then its message says
        // "streaming". Ask again a few times rather than show a half-saved turn.
        for (let attempt = 0; ; attempt++) {
          const result = await getJSON<Conversation>(`${apiBase}/conversations/${encodeURIComponent(id)}`);
          if ("error" in result) {
            return result.error.status === 404 ? { data: { id, messages: [] } } : result; // new: empty
          }
          if (result.data.messages.at(-1)?.status !== "streaming" || attempt >= 50) return result;
          await settle();
        }
      },
      providesTags: (_result, _error, id) => [{ type: "Conversation", id }],
    }),
    sendMessage: build.mutation<Message, SendMessageArgs>({
      async queryFn({ conversationId, content }, { dispatch, signal }) {
        const update = (recipe: (draft: Conversation) => void) =>
          dispatch(chatApi.util.updateQueryData("getConversation", conversationId, recipe));
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
          // Only the new message goes up: the server keeps the conversation and adds its history.
          const body = { conversation_id: conversationId, content };
          for await (const event of streamChat(`${apiBase}/chat`, body, { format: "ndjson", signal })) {
            if (event.type === "delta") {
              text += event.content;
              patchAssistant((m) => {
                m.content += event.content;
              });
            } else if (event.type === "tool_call") {
              const { id, name, arguments: args } = event;
              patchAssistant((m) => {
                (m.tools ??= []).push({ id, name, arguments: args });
              });
            } else if (event.type === "tool_result") {
              patchAssistant((m) => {
                const tool = m.tools?.find((t) => t.id === event.id);
                if (tool) Object.assign(tool, "error" in event ? { error: event.error } : { output: event.output });
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
      // Settled either way: refetch what the server saved.
      invalidatesTags: (_result, _error, { conversationId }) => [
        { type: "Conversation", id: conversationId },
        "ConversationList",
      ],
    }),
  }),
});

export const {
  useGetConversationQuery,
  useListConversationsQuery,
  useSendMessageMutation,
} = chatApi;
