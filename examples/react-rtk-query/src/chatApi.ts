// The RTK Query pattern the docs leave out: a *mutation* that streams, into a query's cache entry.
//
// - `getConversation` is a real query: it loads the conversation the server keeps (the example app
//   saves every question and answer in its database). A conversation begun in this page is put in
//   the cache with `startConversation` instead, so nothing asks the server for what it cannot have.
// - `sendMessage` is a mutation whose queryFn POSTs only the new message (the server adds the
//   history), reads the NDJSON stream with chatstream.js, and appends each delta to the last
//   assistant message with `api.util.updateQueryData`. Components re-render as text arrives.
//   With `regenerate: true` the last answer makes way for a new one, on the server and in the cache.
// - When it settles it invalidates the conversation (and the list), so the cache is refetched from
//   the server: what you see afterwards is what was saved.
// - It resolves with the final message as the mutation's data, and returns {error} (never throws)
//   when the request fails or the stream breaks; the error's `message` is words for a person.
// - Stop is `promise.abort()` on the mutation's promise: RTK aborts the `signal` it handed to
//   queryFn; chatstream.js cancels the body and tells the server to stop the model, and the
//   message is marked "stopped".
// - `renameConversation` and `deleteConversation` are plain mutations that refresh the list.
// Only plain, serializable data goes into the store.
import { createApi, fakeBaseQuery } from "@reduxjs/toolkit/query/react";
import { ChatStreamError, checkResponse, errorText, streamChat, type ChatBody } from "chatstream";

export type Role = "user" | "assistant";
export type MessageStatus = "complete" | "streaming" | "stopped" | "error";

export interface ToolUse {
  id: string;
  name: string;
  arguments: unknown;
  output?: unknown;
  error?: string;
  /** The person said no to it (a tool that needs approval). */
  denied?: boolean;
  /** It waits for the person's approval: the signed id to answer with (sendMessage's `approval`). */
  approval_id?: string;
}

export interface Message {
  id: string | number;
  role: Role;
  content: string;
  status: MessageStatus;
  /** Why it failed or stopped, in words for a person. */
  error?: string;
  /** The tools the server ran for this answer, in order (the example app saves them too). */
  tools?: ToolUse[];
  /** A reasoning model's thinking, as it streamed (the example app saves it too). */
  reasoning?: string;
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
  /** Answer `content`, the last question, again: the last answer is dropped first. */
  regenerate?: boolean;
  /** Instead of a question: the person's word on a tool call that waits for approval. The last
   * answer goes on, in the same message, after the call's result (the server runs it only if approved). */
  approval?: { call: ToolUse; approved: boolean };
}

/** What a failed request returns as `error`: plain data, safe for the store. */
export interface ChatError {
  status: number | "ABORTED" | "STREAM_ERROR";
  code: string;
  /** For a person: chatstream.js's sentence for the code, or the server's own message. */
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
const conversationUrl = (id: string) => `${apiBase}/conversations/${encodeURIComponent(id)}`;

export function toChatError(error: unknown): ChatError {
  if (error instanceof DOMException && error.name === "AbortError") {
    return { status: "ABORTED", code: "aborted", message: errorText(error) };
  }
  if (error instanceof ChatStreamError) {
    return { status: error.status || "STREAM_ERROR", code: error.code, message: errorText(error) };
  }
  return { status: "STREAM_ERROR", code: "network_error", message: errorText(error) };
}

/** The text to show for a mutation's error; "" for a stop, which is not an error. */
export function errorMessage(error: unknown): string {
  if (!error || typeof error !== "object") return "";
  if ("name" in error && error.name === "AbortError") return "";
  if ("code" in error && error.code === "aborted") return "";
  return "message" in error ? String(error.message) : "Something went wrong.";
}

/** A request the server answered with a 4xx before any answer: the message itself was refused. */
export const refused = (error: unknown): boolean =>
  typeof error === "object" && error !== null && "status" in error && typeof error.status === "number"
  && error.status >= 400 && error.status < 500;

type Result<T> = { data: T } | { error: ChatError };

/** A JSON request to the example app's conversation API; its errors (read by chatstream.js's
 * checkResponse, as the chat's are) as ChatError. */
async function call<T>(url: string, init?: RequestInit): Promise<Result<T>> {
  try {
    const response = await checkResponse(await fetch(url, init));
    return { data: (response.status === 204 ? null : await response.json()) as T };
  } catch (caught) {
    return { error: toChatError(caught) };
  }
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 100));

/** The sends of each conversation from this page: how many began, and how many are under way. A
 * refetch that overlaps one has older news than the cache, which the send streams into. */
const sends = new Map<string, { begun: number; running: number }>();
function sendsOf(conversationId: string) {
  let counts = sends.get(conversationId);
  if (!counts) sends.set(conversationId, (counts = { begun: 0, running: 0 }));
  return counts;
}

export const chatApi = createApi({
  reducerPath: "chatApi",
  baseQuery: fakeBaseQuery<ChatError>(),
  tagTypes: ["Conversation", "ConversationList"],
  endpoints: (build) => ({
    listConversations: build.query<ConversationSummary[], void>({
      queryFn: () => call<ConversationSummary[]>(`${apiBase}/conversations`),
      providesTags: ["ConversationList"],
    }),
    getConversation: build.query<Conversation, string>({
      async queryFn(id, { getState }) {
        // The server saves an answer once its stream has ended, a moment after the last byte: right
        // after this page's own stream (the cache has seen it end), ask again for a few seconds rather
        // than show a half-saved turn. A conversation the server is still answering for someone else
        // (another tab's, or a reload's) shows at once, as it stands; the component polls for the rest.
        const state = getState() as Parameters<ReturnType<typeof chatApi.endpoints.getConversation.select>>[0];
        const cached = chatApi.endpoints.getConversation.select(id)(state).data;
        let sawItEnd = cached !== undefined && cached.messages.at(-1)?.status !== "streaming";
        const own = sendsOf(id);
        for (let attempt = 0; ; attempt++) {
          const begun = own.begun;
          const result = await call<Conversation>(conversationUrl(id));
          if ("error" in result) {
            return result.error.status === 404 ? { data: { id, messages: [] } } : result; // a stale link: empty
          }
          if (own.running > 0 || own.begun !== begun) {
            // This page sent a message while the server answered: what it said would overwrite the
            // message streaming into the cache. Ask again once the send is over (and saved).
            while (own.running > 0) await settle();
            sawItEnd = true;
            attempt = -1;
            continue;
          }
          if (!sawItEnd || result.data.messages.at(-1)?.status !== "streaming" || attempt >= 50) return result;
          await settle();
        }
      },
      providesTags: (_result, _error, id) => [{ type: "Conversation", id }],
    }),
    sendMessage: build.mutation<Message & { awaitingApproval?: boolean }, SendMessageArgs>({
      async queryFn({ conversationId, content, regenerate = false, approval }, { dispatch, signal }) {
        const update = (recipe: (draft: Conversation) => void) =>
          dispatch(chatApi.util.updateQueryData("getConversation", conversationId, recipe));
        let assistantId: string | number = newId("assistant");
        update((draft) => {
          if (approval) {
            const answer = draft.messages.findLast((m) => m.role === "assistant");
            if (!answer) return;
            assistantId = answer.id; // it goes on
            answer.status = "streaming";
            const tool = answer.tools?.find((t) => t.id === approval.call.id);
            if (tool) delete tool.approval_id; // answered
            return;
          }
          if (regenerate) {
            const last = draft.messages.findLastIndex((m) => m.role === "user");
            draft.messages.splice(last + 1); // the question stays; its answer goes
          } else {
            draft.messages.push({ id: newId("user"), role: "user", content, status: "complete" });
          }
          draft.messages.push({ id: assistantId, role: "assistant", content: "", status: "streaming" });
        });
        const patchAssistant = (patch: (m: Message) => void) =>
          update((draft) => {
            const message = draft.messages.find((m) => m.id === assistantId);
            if (message) patch(message);
          });

        let text = "";
        let awaitingApproval = false;
        const own = sendsOf(conversationId);
        own.begun++;
        own.running++;
        try {
          // Only the new message goes up: the server keeps the conversation and adds its history. An
          // approval sends the call as the model made it, and the signed id, the same way.
          const body: ChatBody & { conversation_id: string } = approval
            ? { conversation_id: conversationId,
                messages: [{ role: "assistant", content: null, tool_calls: [{ id: approval.call.id, type: "function",
                  function: { name: approval.call.name, arguments: JSON.stringify(approval.call.arguments) } }] }],
                approvals: [{ approval_id: approval.call.approval_id ?? "", approved: approval.approved }] }
            : { conversation_id: conversationId, content, ...(regenerate ? { regenerate } : {}) };
          for await (const event of streamChat(`${apiBase}/chat`, body, { format: "ndjson", signal })) {
            if (event.type === "delta") {
              text += event.content;
              patchAssistant((m) => {
                m.content += event.content;
              });
            } else if (event.type === "reasoning") {
              patchAssistant((m) => {
                m.reasoning = (m.reasoning ?? "") + event.content;
              });
            } else if (event.type === "tool_call") {
              const { id, name, arguments: args } = event;
              patchAssistant((m) => {
                (m.tools ??= []).push({ id, name, arguments: args });
              });
            } else if (event.type === "tool_approval") {
              awaitingApproval = true;
              const { id, name, arguments: args, approval_id } = event;
              patchAssistant((m) => {
                const tool = m.tools?.find((t) => t.id === id);
                if (tool) tool.approval_id = approval_id;
                else (m.tools ??= []).push({ id, name, arguments: args, approval_id });
              });
            } else if (event.type === "tool_result") {
              patchAssistant((m) => {
                const tool = m.tools?.find((t) => t.id === event.id);
                if (tool) Object.assign(tool, "error" in event ? { error: event.error } : { output: event.output },
                  event.denied ? { denied: true } : {});
              });
            }
          }
          patchAssistant((m) => {
            m.status = "complete";
          });
          return { data: { id: assistantId, role: "assistant", content: text, status: "complete", awaitingApproval } };
        } catch (caught) {
          const error = toChatError(caught);
          if (refused(error) && !regenerate && !approval) {
            // Refused before any answer (too long, say): the server kept nothing, and nor does the page.
            update((draft) => {
              draft.messages.splice(-2);
            });
          } else {
            patchAssistant((m) => {
              m.status = error.status === "ABORTED" ? "stopped" : "error";
              m.error = error.message;
            });
          }
          return { error };
        } finally {
          own.running--;
        }
      },
      // Settled either way: refetch what the server saved (nothing new, for a refused message).
      // (The example app does not save a pending approval's signed id: the cache keeps it until answered.)
      invalidatesTags: (result, error, { conversationId, regenerate, approval }) =>
        result?.awaitingApproval || (refused(error) && !regenerate && !approval) ? ["ConversationList"] : [{ type: "Conversation", id: conversationId }, "ConversationList"],
    }),
    renameConversation: build.mutation<null, { id: string; title: string }>({
      queryFn: ({ id, title }) =>
        call<null>(conversationUrl(id), {
          method: "PATCH",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ title }),
        }),
      invalidatesTags: (_result, _error, { id }) => [{ type: "Conversation", id }, "ConversationList"],
    }),
    deleteConversation: build.mutation<null, string>({
      queryFn: (id) => call<null>(conversationUrl(id), { method: "DELETE" }),
      invalidatesTags: ["ConversationList"],
    }),
  }),
});

/** Put a conversation begun in this page into the cache, empty: `sendMessage` streams into it, and
 * nobody asks the server for a conversation it does not have yet. */
export const startConversation = (id: string) =>
  chatApi.util.upsertQueryEntries([{ endpointName: "getConversation", arg: id, value: { id, messages: [] } }]);

export const {
  useDeleteConversationMutation,
  useGetConversationQuery,
  useListConversationsQuery,
  useRenameConversationMutation,
  useSendMessageMutation,
} = chatApi;
