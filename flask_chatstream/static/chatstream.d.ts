// Types for chatstream.js.

export type Format = "text" | "ndjson" | "sse";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  [key: string]: unknown;
}

export type ChatEvent =
  | { type: "start"; id: string | null; model: string | null; stream_id?: string }
  | { type: "delta"; content: string }
  | { type: "refusal"; content: string }
  | { type: "tool_call"; id: string; name: string; arguments: unknown }
  | { type: "tool_result"; id: string; name: string; output?: unknown; error?: string }
  | { type: "done"; finish_reason: string | null; usage: Usage | null };

export interface ChatMessage {
  role: "user" | "assistant" | "system";
  content: string;
}

export type ChatBody =
  | { messages: ChatMessage[]; model?: string; temperature?: number; max_tokens?: number }
  | { content: string; model?: string; temperature?: number; max_tokens?: number };

export interface StreamOptions {
  /** Wire format to ask for. Default "ndjson". */
  format?: Format;
  /** Aborting it stops reading, asks the server to stop the model (POST <url>/<stream id>/stop),
   * closes the connection and throws an AbortError. */
  signal?: AbortSignal;
  /** Extra request headers, e.g. Authorization. */
  headers?: Record<string, string>;
  /** A fetch implementation to use instead of globalThis.fetch. */
  fetch?: typeof fetch;
}

export interface ReadOptions {
  signal?: AbortSignal;
}

/** An HTTP error (status > 0), the server's terminal error event, or a truncated stream (code "truncated"). */
export class ChatStreamError extends Error {
  constructor(message: string, options?: { status?: number; code?: string; cause?: unknown });
  readonly name: "ChatStreamError";
  /** The HTTP status for errors before the stream; 0 after it started. */
  status: number;
  /** The server's machine-readable code, "truncated", or "http_error". */
  code: string;
}

export function streamChat(url: string, body: ChatBody, options?: StreamOptions): AsyncGenerator<ChatEvent, void>;
export function checkResponse(response: Response): Promise<Response>;
export function readText(response: Response, options?: ReadOptions): AsyncGenerator<ChatEvent, void>;
export function readNDJSON(response: Response, options?: ReadOptions): AsyncGenerator<ChatEvent, void>;
export function readSSE(response: Response, options?: ReadOptions): AsyncGenerator<ChatEvent, void>;
