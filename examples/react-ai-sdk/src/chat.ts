// useChat against Flask: the Vercel AI SDK's own client, unchanged, talking to flask_chatstream.
//
// The blueprint speaks the AI SDK's UI message stream (`ui`) to any request in useChat's shape, so
// DefaultChatTransport needs no options beyond the URL. One addition: Stop. useChat's stop() aborts
// the request, which a server that finishes answers for readers who leave (the example app does)
// takes as a closed tab; so Stop first tells the server, with the assistant message's id, which is
// the server's stream id.
import { Chat } from "@ai-sdk/react";
import { DefaultChatTransport, type UIMessage } from "ai";

let apiBase = "/api";
/** Where the blueprint lives; tests point it at a running server. */
export function setApiBase(url: string): void {
  apiBase = url.replace(/\/$/, "");
}

export function makeChat(): Chat<UIMessage> {
  return new Chat<UIMessage>({ transport: new DefaultChatTransport({ api: `${apiBase}/chat` }) });
}

/** Stop the answer now streaming: in the browser at once, and on the server (the model stops). The
 * stop may take a moment to reach the worker that runs the stream, and its answer ends cut then: so
 * the browser lets go first, or useChat would take the cut for an error. */
export async function stopAnswer(chat: Chat<UIMessage>): Promise<void> {
  const last = chat.messages.at(-1);
  const told = last?.role === "assistant"
    ? fetch(`${apiBase}/chat/${encodeURIComponent(last.id)}/stop`, { method: "POST", keepalive: true }).catch(() => {})
    : undefined;
  await chat.stop();
  await told;
}

/** What to show for useChat's error: the server's message from its JSON error body, if there is one. */
export function errorText(error: Error | undefined): string {
  if (!error) return "";
  try {
    return JSON.parse(error.message).error.message as string;
  } catch {
    return error.message;
  }
}

/** The text of a message's text parts. */
export function textOf(message: UIMessage): string {
  return message.parts.map((part) => (part.type === "text" ? part.text : "")).join("");
}
