// chatstream.js: read a flask_chatstream answer as it streams. No dependencies.
//
//   import { streamChat } from "/api/chatstream.js";
//   for await (const ev of streamChat("/api/chat", { content: "Hi" }, { signal })) {
//     if (ev.type === "delta") output.textContent += ev.content;
//   }
//
// The iterator yields {type: "delta", content} for each piece of text and ends
// with {type: "done", finish_reason, usage}. NDJSON and SSE also carry "start",
// "refusal", "reasoning", "source" ({url, title}: a cited URL), and for tools
// "tool_call" ({id, name, arguments}) and "tool_result"
// ({id, name, output} or {id, name, error}). It never ends quietly on a broken
// stream: an HTTP error, the server's terminal error event, or a stream that
// stops before "done" all throw a ChatStreamError; an abort throws the
// standard AbortError. With {resume: true}, a dropped connection to a server
// with resumable streams is picked up where it broke off instead.

const MEDIA_TYPES = {
  text: "text/plain",
  ndjson: "application/x-ndjson",
  sse: "text/event-stream",
};

/** An error from the server or the stream, with the HTTP status and the server's error code. */
export class ChatStreamError extends Error {
  constructor(message, { status = 0, code = "stream_error", cause, retryAfter = null } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "ChatStreamError";
    this.status = status;
    this.code = code;
    /** Seconds until trying again may work (the response's Retry-After), or null. */
    this.retryAfter = retryAfter;
  }
}

// What each error code means, in words for the person who reads the chat. Every code
// the relay sends is here; an app's own codes (a 401 from its login, say) keep the
// server's message, which the app wrote for people.
const ERROR_TEXT = {
  // the request
  invalid_json: "The message could not be sent: the app sent something the server could not read.",
  invalid_request: "The message could not be sent: the app sent something the server could not read.",
  invalid_body: "The message arrived incomplete. Check your connection and try again.",
  missing_messages: "There was nothing to send. Type a message first.",
  empty_messages: "There was nothing to send. Type a message first.",
  empty_content: "Type a message first.",
  content_too_long: "That message is too long. Shorten it and try again.",
  too_many_messages: "This conversation has grown too long to go on. Start a new chat.",
  request_too_large: "That message is too large to send.",
  request_timeout: "Your message took too long to reach the server. Check your connection and try again.",
  role_not_allowed: "That kind of message is not allowed here.",
  invalid_role: "That kind of message is not allowed here.",
  model_not_allowed: "That model is not available here.",
  invalid_content_part: "Part of that message could not be sent (an attachment the server does not take).",
  invalid_image: "That image could not be sent.",
  image_url_not_allowed: "Images can only be sent as files here, not as links.",
  invalid_tool_message: "The conversation's tool results do not match its tool calls. Start a new chat.",
  unknown_tool: "The conversation uses a tool that is not available here. Start a new chat.",
  invalid_approval: "That approval does not match a tool call this server asked about. Ask again.",
  invalid_tools: "The page offered tools the server cannot take. Reload the page.",
  tool_name_taken: "The page offered a tool with the name of one of the server's. Reload the page.",
  invalid_run: "The run's thread or run id is not valid. Reload the page.",
  invalid_context: "The run's context is not valid. Reload the page.",
  invalid_format: "The app asked for a format the server does not speak.",
  not_acceptable: "The app asked for a format the server does not speak.",
  unsupported_media_type: "The app sent the message in a form the server does not take.",
  method_not_allowed: "The app used the chat the wrong way (HTTP method not allowed).",
  too_many_streams: "You already have as many answers coming as you may. Wait for one to finish, or stop it.",
  too_many_readers: "This answer is already open in too many places.",
  budget_exceeded: "You have used up your allowance for now. Try again later.",
  budget_unavailable: "The server cannot check your allowance right now. Try again in a moment.",
  invalid_after: "The answer could not be picked up again.",
  stream_not_found: "That answer is no longer available.",
  stream_truncated: "The start of that answer is no longer kept, so it cannot be picked up again.",
  resume_unavailable: "The answer cannot be picked up again right now. Try again in a moment.",
  // the model provider
  upstream_auth: "The server could not sign in to the AI provider (its API key was refused).",
  upstream_rejected: "The AI provider refused the request.",
  rate_limited: "The AI provider is busy right now. Try again in a moment.",
  upstream_unavailable: "The AI provider cannot be reached right now. Try again in a moment.",
  upstream_timeout: "The AI provider took too long to answer. Try again.",
  upstream_malformed: "The AI provider sent an answer that could not be read.",
  upstream_interrupted: "The connection to the AI provider broke in the middle of the answer.",
  upstream_error: "The AI provider reported an error during the answer.",
  tool_calls_need_events: "The model wanted to use a tool, which this kind of answer cannot show.",
  max_tool_steps: "The model kept calling tools without coming to an answer.",
  // the stream's end
  stopped: "Stopped.",
  client_left: "The answer stopped because the connection was lost.",
  client_stalled: "The answer stopped because the connection was too slow.",
  stream_lost: "The server working on this answer went away.",
  truncated: "The connection dropped before the answer was complete.",
  invalid_stream: "The answer could not be read.",
  stream_error: "The answer could not be read.",
  internal_error: "Something went wrong on the server.",
};

/** A sentence for a person about `error`: a ChatStreamError (by its code), an
 * AbortError ("Stopped."), a network failure, or anything else. */
export function errorText(error) {
  if (error?.name === "AbortError") return ERROR_TEXT.stopped;
  const code = error?.code;
  if (code === "budget_exceeded" && Number.isInteger(error.retryAfter) && error.retryAfter > 1) {
    return `You have used up your allowance for now. Try again in ${inWords(error.retryAfter)}.`;
  }
  if (typeof code === "string" && Object.hasOwn(ERROR_TEXT, code)) return ERROR_TEXT[code];
  if (error instanceof ChatStreamError) {
    if (code === "http_error") return `The server answered with an error (${error.status}).`;
    return error.message || ERROR_TEXT.stream_error;  // an app's own error, in its own words
  }
  if (error instanceof TypeError) return "The server cannot be reached. Check your connection.";
  return ERROR_TEXT.internal_error;
}

function inWords(seconds) {
  for (const [name, size] of [["hour", 3600], ["minute", 60]]) {
    if (seconds >= size) {
      const count = Math.round(seconds / size);
      return `${count} ${name}${count === 1 ? "" : "s"}`;
    }
  }
  return `${seconds} second${seconds === 1 ? "" : "s"}`;
}

/** Every error code the relay can send, with its sentence. */
export const ERROR_CODES = Object.freeze({ ...ERROR_TEXT });

/** POST `body` as JSON to `url` and iterate over the answer's events.
 *
 * Aborting `signal` stops reading, and tells the server to stop the model
 * (POST <url>/<stream id>/stop): a server that reads on for clients that left
 * (on_client_leave="finish") then knows this one was stopped on purpose.
 *
 * With `resume` (NDJSON or SSE, against a server with resumable streams), a
 * dropped connection is not the end: the rest of the answer is fetched with
 * GET <url>/<stream id>?after=<last seq>, and the iterator goes on as if nothing
 * happened, every event exactly once. */
export async function* streamChat(url, body, options = {}) {
  const { format = "ndjson", signal, headers = {}, credentials, fetch: fetchImpl = globalThis.fetch } = options;
  const accept = MEDIA_TYPES[format];
  if (!accept) throw new TypeError(`format must be one of: ${Object.keys(MEDIA_TYPES).join(", ")}`);
  const retry = resumePolicy(options.resume, format);
  let response = await fetchImpl(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: accept, ...headers },
    body: JSON.stringify(body),
    signal,
    credentials,
  });
  const path = url.split("?")[0].replace(/\/$/, "");
  // The header, or (cross-origin, where a CORS setup does not expose it) the "start" event's stream_id.
  let streamId = response.headers.get("X-Chat-Stream-Id");
  const stop = () => {
    fetchImpl(`${path}/${encodeURIComponent(streamId)}/stop`, { method: "POST", headers, credentials, keepalive: true })
      .catch(() => {}); // best effort: the closed connection stops it too, unless the server finishes answers
  };
  const watch = () => {
    if (streamId && signal) signal.addEventListener("abort", stop, { once: true });
  };
  watch();
  const read = { text: readText, ndjson: readNDJSON, sse: readSSE }[format];
  let seq = 0; // the last numbered event yielded
  let failures = 0; // resume attempts since the last event
  try {
    for (;;) {
      try {
        for await (const event of read(response, { signal })) {
          if (!streamId && event.type === "start" && event.stream_id) {
            streamId = event.stream_id;
            watch();
          }
          if (typeof event.seq === "number") {
            if (event.seq <= seq) continue; // already yielded before the drop
            seq = event.seq;
            failures = 0;
          }
          yield event;
        }
        return;
      } catch (error) {
        // Only a stream that broke off (not an HTTP or in-band error, not an abort) is resumed,
        // and only once the server has numbered an event: an unnumbered stream cannot be resumed.
        if (!retry || !streamId || seq === 0 || error?.code !== "truncated" || failures >= retry.attempts) throw error;
        failures += 1;
        response = await reconnect(error);
      }
    }
  } finally {
    signal?.removeEventListener("abort", stop);
  }

  async function reconnect(error) {
    for (;;) {
      await sleep(retry.delay * failures, signal);
      const resumeUrl = `${path}/${encodeURIComponent(streamId)}?after=${seq}`;
      try {
        return await fetchImpl(resumeUrl, { headers: { Accept: accept, ...headers }, signal, credentials });
      } catch (cause) {
        if (signal?.aborted) throw abortError();
        if (failures >= retry.attempts) throw truncated(cause ?? error);
        failures += 1; // the network is still down: wait longer and try again
      }
    }
  }
}

function resumePolicy(resume, format) {
  if (!resume) return null;
  if (format === "text") throw new TypeError("resume needs numbered events: use format \"ndjson\" or \"sse\"");
  const { attempts = 5, delay = 500 } = resume === true ? {} : resume;
  return { attempts, delay };
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError());
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Throw a ChatStreamError for a non-2xx response, using the JSON error body when there is one. */
export async function checkResponse(response) {
  if (response.ok) return response;
  let code = "http_error";
  let message = `The server answered ${response.status} ${response.statusText}`.trim();
  try {
    const payload = await response.json();
    if (payload && payload.error) {
      code = payload.error.code || code;
      message = payload.error.message || message;
    }
  } catch {
    // not a JSON body: keep the status line
  }
  const wait = response.headers.get("Retry-After");
  const retryAfter = wait !== null && /^\d+$/.test(wait) ? Number(wait) : null;
  throw new ChatStreamError(message, { status: response.status, code, retryAfter });
}

/** Read a text/plain answer: every piece of text is a delta; a clean end is "done". */
export async function* readText(response, { signal } = {}) {
  await checkResponse(response);
  for await (const text of decodedChunks(response, signal)) {
    if (text) yield { type: "delta", content: text };
  }
  yield { type: "done", finish_reason: null, usage: null };
}

/** Read an application/x-ndjson answer: one JSON event per line. */
export async function* readNDJSON(response, { signal } = {}) {
  await checkResponse(response);
  let buffer = "";
  for await (const text of decodedChunks(response, signal)) {
    buffer += text;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.trim()) continue;
      const event = parseEvent(line);
      if (event.type === "ping") continue;
      yield event;
      if (event.type === "done") return;
    }
  }
  throw truncated();
}

/** Read a text/event-stream answer: the same events as NDJSON, in `data:` fields. */
export async function* readSSE(response, { signal } = {}) {
  await checkResponse(response);
  let buffer = "";
  for await (const text of decodedChunks(response, signal)) {
    buffer += text;
    // Normalise line endings; a CR at the very end may be half of a CRLF.
    const keep = buffer.endsWith("\r") ? "\r" : "";
    buffer = buffer.slice(0, buffer.length - keep.length).replace(/\r\n?/g, "\n") + keep;
    const blocks = buffer.split("\n\n");
    buffer = blocks.pop();
    for (const block of blocks) {
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5));
      if (data.length === 0) continue; // a comment, such as a heartbeat
      const event = parseEvent(data.join("\n"));
      if (event.type === "ping") continue;
      yield event;
      if (event.type === "done") return;
    }
  }
  throw truncated();
}

function parseEvent(json) {
  let event;
  try {
    event = JSON.parse(json);
  } catch (cause) {
    throw new ChatStreamError("The stream held data that is not JSON.", { code: "invalid_stream", cause });
  }
  if (event.type === "error") {
    const error = event.error || {};
    throw new ChatStreamError(error.message || "The stream failed.", { code: error.code || "stream_error" });
  }
  return event;
}

function truncated(cause) {
  return new ChatStreamError("The stream ended before the answer was complete.", { code: "truncated", cause });
}

function abortError() {
  return new DOMException("The stream was aborted.", "AbortError");
}

// Decoded text as it arrives. UTF-8 split across reads is joined by the
// decoder's stream mode. The reader is always released; on abort the body is
// cancelled, which closes the connection and lets the server stop the model.
async function* decodedChunks(response, signal) {
  if (signal?.aborted) throw abortError();
  const reader = response.body.getReader();
  const decoder = new TextDecoder("utf-8");
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    while (true) {
      let result;
      try {
        result = await reader.read();
      } catch (cause) {
        if (signal?.aborted || cause?.name === "AbortError") throw abortError();
        throw truncated(cause);
      }
      if (signal?.aborted) throw abortError();
      if (result.done) break;
      yield decoder.decode(result.value, { stream: true });
    }
    const rest = decoder.decode();
    if (rest) yield rest;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    try {
      await reader.cancel();
    } catch {
      // already closed or errored
    }
    reader.releaseLock();
  }
}
