// The sendMessage mutation against the real app (CHATSTREAM_SERVER) and stand-in model
// (STANDIN_CONTROL), started by tests/test_react_example.py. No fetch or stream is mocked.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { chatApi, errorMessage, setChatUrl, type Conversation } from "./chatApi";
import { makeStore, type AppStore } from "./store";

declare const process: { env: Record<string, string | undefined> };
const SERVER = process.env.CHATSTREAM_SERVER!;
const CONTROL = process.env.STANDIN_CONTROL!;
const REPLY = "one two three four five six seven eight";

async function script(settings: object) {
  await fetch(`${CONTROL}/_standin/reset`, { method: "POST" });
  const response = await fetch(`${CONTROL}/_standin/script`, {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(settings),
  });
  expect(response.status).toBe(200);
}

async function waitForStats(condition: (s: Record<string, number>) => boolean) {
  for (let i = 0; i < 1500; i++) {
    const stats = await (await fetch(`${CONTROL}/_standin/stats`)).json();
    if (condition(stats)) return stats;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("stand-in condition not met");
}

function conversation(store: AppStore): Conversation {
  return chatApi.endpoints.getConversation.select("c1")(store.getState()).data!;
}

let store: AppStore;
let unsubscribe: () => void;
let consoleErrors: unknown[][];

beforeEach(async () => {
  setChatUrl(`${SERVER}/api/chat`);
  store = makeStore();
  const subscription = store.dispatch(chatApi.endpoints.getConversation.initiate("c1"));
  unsubscribe = subscription.unsubscribe;
  await subscription;
  consoleErrors = [];
  vi.spyOn(console, "error").mockImplementation((...args) => void consoleErrors.push(args));
});

afterEach(() => {
  unsubscribe();
  vi.restoreAllMocks();
  // RTK's serializability check logs with console.error: nothing may trip it.
  expect(consoleErrors).toEqual([]);
});

describe("sendMessage", () => {
  it("streams deltas into the conversation cache and resolves with the final message", async () => {
    // The stand-in holds after three words until the test releases it: what the store shows while
    // it is held is what streamed in before the answer was done. No clock involved.
    await fetch(`${CONTROL}/_standin/reset`, { method: "POST" });
    await script({ reply: REPLY, hold_after: 3 });
    const request = store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: "c1", content: "count" }));
    const partial = REPLY.split(" ").slice(0, 3).join(" ");
    while (conversation(store).messages.at(-1)?.content !== partial) await new Promise((r) => setTimeout(r, 10));
    expect(conversation(store).messages.at(-1)?.status).toBe("streaming");
    expect((await (await fetch(`${CONTROL}/_standin/stats`)).json()).finished).toBe(0);
    await fetch(`${CONTROL}/_standin/release`, { method: "POST" });
    const result = await request;

    expect(result.data).toMatchObject({ role: "assistant", content: REPLY, status: "complete" });
    const messages = conversation(store).messages;
    expect(messages.map((m) => [m.role, m.content, m.status])).toEqual([
      ["user", "count", "complete"],
      ["assistant", REPLY, "complete"],
    ]);
    const state = store.getState();
    expect(JSON.parse(JSON.stringify(state))).toEqual(state);
  });

  it("sends the earlier conversation as history", async () => {
    await script({ reply: "first answer" });
    await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: "c1", content: "first" }));
    await script({ reply: "second answer" });
    await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: "c1", content: "second" }));
    const [body] = await (await fetch(`${CONTROL}/_standin/bodies`)).json();
    expect(body.messages).toEqual([
      { role: "user", content: "first" },
      { role: "assistant", content: "first answer" },
      { role: "user", content: "second" },
    ]);
  });

  it("returns {error} with the server's status and code for a refused request", async () => {
    await script({ reply: REPLY });
    const result = await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: "c1", content: "   " }));
    expect(result.error).toEqual({ status: 400, code: "empty_content", message: "messages[0].content must not be empty." });
    expect(errorMessage(result.error)).toBe("messages[0].content must not be empty.");
    expect(conversation(store).messages.at(-1)).toMatchObject({ status: "error", content: "" });
  });

  it("returns {error} when the stream ends in an error event, keeping the partial text", async () => {
    await script({ reply: REPLY, error_after: 3 });
    const result = await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: "c1", content: "hi" }));
    expect(result.error).toMatchObject({ status: "STREAM_ERROR", code: "upstream_error" });
    expect(conversation(store).messages.at(-1)).toMatchObject({ status: "error", content: "one two three" });
  });

  it("stops on promise.abort(), marks the message stopped, and the server closes the upstream", async () => {
    await fetch(`${CONTROL}/_standin/reset`, { method: "POST" });
    await script({ reply: REPLY.repeat(20), hold_after: 1 }); // held after one word: it cannot finish first
    const request = store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: "c1", content: "hi" }));
    while (!conversation(store).messages.at(-1)?.content) await new Promise((r) => setTimeout(r, 10));
    request.abort();
    const result = await request;
    // RTK settles an aborted mutation at once with its own AbortError...
    expect(result.error).toMatchObject({ name: "AbortError" });
    expect(errorMessage(result.error)).toBe("");
    // ...while queryFn's reader throws AbortError too and marks the message stopped.
    while (conversation(store).messages.at(-1)!.status === "streaming") await new Promise((r) => setTimeout(r, 10));
    const last = conversation(store).messages.at(-1)!;
    expect(last.status).toBe("stopped");
    expect(last.content.length).toBeLessThan(REPLY.repeat(20).length);
    const stats = await waitForStats((s) => s.open === 0);
    expect(stats.cancelled).toBe(1);
    expect(stats.finished).toBe(0);
  });
});
