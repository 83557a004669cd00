// Types for chatstream.js.

export type Format = "text" | "ndjson" | "sse";

/** A sentence for a person about an error from `streamChat` (by its code), an abort, or a network failure. */
export function errorText(error: unknown): string;

/** Every error code the relay can send, with the sentence `errorText` gives for it. */
export const ERROR_CODES: Readonly<Record<string, string>>;

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  [key: string]: unknown;
}

/** In a resumable stream (NDJSON and SSE) every event carries `seq`, numbered from 1. */
export type ChatEvent = { seq?: number } & (
  | { type: "start"; id: string | null; model: string | null; stream_id?: string; metadata?: Record<string, unknown>;
      message_id?: string }
  | { type: "delta"; content: string }
  | { type: "refusal"; content: string }
  | { type: "reasoning"; content: string }
  | { type: "tool_call"; id: string; name: string; arguments: unknown }
  | { type: "tool_result"; id: string; name: string; output?: unknown; error?: string; denied?: boolean }
  /** A tool that needs a person's approval: send `approvals` with the next request to run (or deny) it. */
  | { type: "tool_approval"; id: string; name: string; arguments: unknown; approval_id: string }
  /** The server's own data (`emit`): a later one with the same `name` and `id` replaces it. */
  | { type: "data"; name: string; data: unknown; id?: string; transient?: boolean }
  | { type: "source"; url: string; title: string | null }
  | { type: "done"; finish_reason: string | null; usage: Usage | null; metadata?: Record<string, unknown> }
);

export interface ResumeOptions {
  /** Resume attempts per outage (reset by every event that arrives). Default 5. */
  attempts?: number;
  /** Milliseconds before the first attempt; the n-th waits n times as long. Default 500. */
  delay?: number;
}

export interface ToolCallMessage {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export type ChatMessage =
  | { role: "user" | "system"; content: string }
  | { role: "assistant"; content: string | null; tool_calls?: ToolCallMessage[] }
  | { role: "tool"; tool_call_id: string; content: string };

/** A person's answer to a `tool_approval` event, sent with the conversation that holds its call. */
export interface Approval {
  approval_id: string;
  approved: boolean;
  reason?: string;
}

export type ChatBody =
  | { messages: ChatMessage[]; approvals?: Approval[]; model?: string; temperature?: number; max_tokens?: number }
  | { content: string; model?: string; temperature?: number; max_tokens?: number };

export interface StreamOptions {
  /** Wire format to ask for. Default "ndjson". */
  format?: Format;
  /** Aborting it stops reading, asks the server to stop the model (POST <url>/<stream id>/stop),
   * closes the connection and throws an AbortError. */
  signal?: AbortSignal;
  /** Extra request headers, e.g. Authorization, or Flask-WTF's X-CSRFToken. Sent with the stop and
   * resume requests too. */
  headers?: Record<string, string>;
  /** fetch's credentials mode for every request ("include" for cookies on a cross-origin API). */
  credentials?: RequestCredentials;
  /** A fetch implementation to use instead of globalThis.fetch. */
  fetch?: typeof fetch;
  /** Against a server with resumable streams: after a dropped connection, fetch the rest with
   * GET <url>/<stream id>?after=<last seq> and go on, every event exactly once. NDJSON and SSE only
   * (text/plain carries no numbers: a TypeError). Default false. */
  resume?: boolean | ResumeOptions;
}

export interface ReadOptions {
  signal?: AbortSignal;
}

/** An HTTP error (status > 0), the server's terminal error event, or a truncated stream (code "truncated"). */
export class ChatStreamError extends Error {
  constructor(message: string, options?: { status?: number; code?: string; cause?: unknown; retryAfter?: number | null });
  readonly name: "ChatStreamError";
  /** The HTTP status for errors before the stream; 0 after it started. */
  status: number;
  /** The server's machine-readable code, "truncated", or "http_error". */
  code: string;
  /** Seconds until trying again may work (the response's Retry-After: a 429's), or null. */
  retryAfter: number | null;
}

export function streamChat(url: string, body: ChatBody, options?: StreamOptions): AsyncGenerator<ChatEvent, void>;
export function checkResponse(response: Response): Promise<Response>;
export function readText(response: Response, options?: ReadOptions): AsyncGenerator<ChatEvent, void>;
export function readNDJSON(response: Response, options?: ReadOptions): AsyncGenerator<ChatEvent, void>;
export function readSSE(response: Response, options?: ReadOptions): AsyncGenerator<ChatEvent, void>;
