// The API against the real app (CHATSTREAM_SERVER, with its database) and stand-in model
// (STANDIN_CONTROL), started by tests/test_react_example.py. No fetch or stream is mocked, and no
// clock decides anything: the stand-in holds answers at a gate until a test releases them.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { chatApi, errorMessage, newConversationId, setApiBase, startConversation, type Conversation } from "./chatApi";
import { makeStore, type AppStore } from "./store";

declare const process: { env: Record<string, string | undefined> };
const SERVER = process.env.CHATSTREAM_SERVER!;
const CONTROL = process.env.STANDIN_CONTROL!;
const REPLY = "one two three four five six seven eight";

async function control(path: string, settings?: object) {
  const response = await fetch(`${CONTROL}/_standin/${path}`, {
    method: settings ? "PUT" : "POST",
    headers: { "Content-Type": "application/json" },
    body: settings ? JSON.stringify(settings) : undefined,
  });
  expect(response.status).toBe(200);
}

async function script(settings: object) {
  // From zero counts, once the streams of the test before have ended (a stream's end is counted
  // after its client has its last byte, so it could land after a reset).
  await until(stats, (s) => s.open === 0);
  await control("reset");
  await control("script", settings);
}

async function stats(): Promise<Record<string, number>> {
  return (await fetch(`${CONTROL}/_standin/stats`)).json();
}

/** The first request body the upstream got since the last reset (each script() resets it). */
async function firstUpstreamBody() {
  return (await (await fetch(`${CONTROL}/_standin/bodies`)).json())[0];
}

async function until<T>(get: () => T | Promise<T>, ok: (value: T) => boolean): Promise<T> {
  for (let i = 0; i < 1500; i++) {
    const value = await get();
    if (ok(value)) return value;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("condition not met");
}

let store: AppStore;
let id: string;
let unsubscribe: () => void;
let consoleErrors: unknown[][];

function conversation(): Conversation {
  return chatApi.endpoints.getConversation.select(id)(store.getState()).data!;
}

async function subscribe(to: AppStore, conversationId: string) {
  const subscription = to.dispatch(chatApi.endpoints.getConversation.initiate(conversationId));
  await subscription;
  return subscription.unsubscribe;
}

beforeEach(async () => {
  setApiBase(`${SERVER}/api`);
  store = makeStore();
  id = newConversationId();
  unsubscribe = await subscribe(store, id);
  consoleErrors = [];
  vi.spyOn(console, "error").mockImplementation((...args) => void consoleErrors.push(args));
});

afterEach(() => {
  unsubscribe();
  vi.restoreAllMocks();
  // RTK's serializability check logs with console.error: nothing may trip it.
  expect(consoleErrors).toEqual([]);
});

describe("getConversation", () => {
  it("loads a conversation the server does not have (a stale link) as empty", () => {
    expect(conversation()).toEqual({ id, messages: [] });
  });

  it("does not ask the server for a conversation begun here", async () => {
    const other = makeStore();
    const fresh = newConversationId();
    const requests = vi.spyOn(globalThis, "fetch"); // watched, not replaced
    other.dispatch(startConversation(fresh));
    const stop = await subscribe(other, fresh);
    const entry = chatApi.endpoints.getConversation.select(fresh)(other.getState());
    expect(entry).toMatchObject({ status: "fulfilled", data: { id: fresh, messages: [] } });
    expect(requests).not.toHaveBeenCalled();
    stop();
  });
});

describe("sendMessage", () => {
  it("streams deltas into the conversation cache, then the cache holds what the server saved", async () => {
    await script({ reply: REPLY, hold_after: 3 });
    const request = store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "count" }));
    const partial = REPLY.split(" ").slice(0, 3).join(" ");
    await until(() => conversation().messages.at(-1)?.content, (c) => c === partial);
    expect(conversation().messages.at(-1)?.status).toBe("streaming");
    expect((await stats()).finished).toBe(0); // what the store shows came before the upstream was done
    await control("release");
    const result = await request;

    expect(result.data).toMatchObject({ role: "assistant", content: REPLY, status: "complete" });
    // invalidated: refetched from the server, whose messages carry the database's ids
    const saved = await until(conversation, (c) => typeof c.messages.at(-1)?.id === "number");
    expect(saved.messages.map((m) => [m.role, m.content, m.status])).toEqual([
      ["user", "count", "complete"],
      ["assistant", REPLY, "complete"],
    ]);
    const state = store.getState();
    expect(JSON.parse(JSON.stringify(state))).toEqual(state);
  });

  it("keeps streaming into the cache while a refetch begun before it comes back", async () => {
    // The page saw an answer end and refetched the conversation; the person sent the next message at
    // once. The server's reply to the refetch (without that message) must not replace it in the cache.
    await script({ reply: "first answer" });
    await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "first" }));
    await until(conversation, (c) => typeof c.messages.at(-1)?.id === "number");
    await script({ reply: REPLY, hold_after: 2 });
    const refetch = store.dispatch(chatApi.endpoints.getConversation.initiate(id, { forceRefetch: true }));
    const request = store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "second" }));
    await until(stats, (s) => s.open === 1);
    await until(() => conversation().messages.at(-1)?.content, (c) => c === "one two");
    expect(conversation().messages.map((m) => [m.role, m.content])).toEqual([
      ["user", "first"], ["assistant", "first answer"], ["user", "second"], ["assistant", "one two"]]);
    await control("release");
    expect((await request).data).toMatchObject({ content: REPLY, status: "complete" });
    await refetch;
    refetch.unsubscribe();
    const saved = await until(conversation, (c) => c.messages.length === 4 && typeof c.messages.at(-1)?.id === "number");
    expect(saved.messages.map((m) => [m.role, m.content, m.status])).toEqual([
      ["user", "first", "complete"], ["assistant", "first answer", "complete"],
      ["user", "second", "complete"], ["assistant", REPLY, "complete"]]);
  });

  it("sends only the new message; the server adds the history", async () => {
    await script({ reply: "first answer" });
    await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "first" }));
    await script({ reply: "second answer" });
    await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "second" }));
    const body = await firstUpstreamBody();
    expect(body.messages).toEqual([
      { role: "user", content: "first" },
      { role: "assistant", content: "first answer" },
      { role: "user", content: "second" },
    ]);
  });

  it("returns {error} with the server's status and code, and words for a person, for a refused request", async () => {
    await script({ reply: REPLY });
    const result = await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "   " }));
    expect(result.error).toEqual({ status: 400, code: "empty_content", message: "Type a message first." });
    expect(errorMessage(result.error)).toBe("Type a message first.");
  });

  it("regenerates: the last answer makes way for a new one, in the cache and on the server", async () => {
    await script({ reply: "first answer" });
    await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "question" }));
    await until(conversation, (c) => typeof c.messages.at(-1)?.id === "number");
    await script({ reply: REPLY, hold_after: 2 });
    const request = store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "question", regenerate: true }));
    await until(() => conversation().messages.at(-1)?.content, (c) => c === "one two");
    expect(conversation().messages.map((m) => [m.role, m.content])).toEqual([["user", "question"], ["assistant", "one two"]]);
    await control("release");
    await request;
    const saved = await until(conversation, (c) => typeof c.messages.at(-1)?.id === "number");
    expect(saved.messages.map((m) => [m.role, m.content, m.status])).toEqual([
      ["user", "question", "complete"],
      ["assistant", REPLY, "complete"],
    ]);
    const body = await firstUpstreamBody();
    expect(body.messages).toEqual([{ role: "user", content: "question" }]); // the old answer is not history
  });

  it("streams a reasoning model's thinking into the answer, and the tools it used", async () => {
    await script({ reply: "It is late.", reasoning: "Let me look at the clock.",
      tool_calls: [{ name: "current_time", arguments: { zone: "UTC" } }] });
    await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "time?" }));
    // As streamed (the refetch of what was saved has only just begun): reasoning is not saved.
    const live = conversation().messages.at(-1);
    expect(typeof live?.id).toBe("string");
    expect(live?.content).toBe("It is late.");
    expect(live!.reasoning).toContain("Let me look at the clock.");
    expect(live!.tools).toMatchObject([{ name: "current_time", arguments: { zone: "UTC" } }]);
    expect(String(live!.tools![0].output)).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it("returns {error} when the stream ends in an error event; the partial answer is saved as such", async () => {
    await script({ reply: REPLY, error_after: 3 });
    const result = await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "hi" }));
    expect(result.error).toMatchObject({ status: "STREAM_ERROR", code: "upstream_error" });
    const saved = await until(conversation, (c) => typeof c.messages.at(-1)?.id === "number");
    expect(saved.messages.at(-1)).toMatchObject({ status: "error", content: "one two three" });
  });

  it("stops on promise.abort(): the server stops the model and saves the message as stopped", async () => {
    await script({ reply: REPLY.repeat(20), hold_after: 1 }); // held after one word: it cannot finish first
    const request = store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "hi" }));
    await until(() => conversation().messages.at(-1)?.content, (c) => !!c);
    request.abort();
    const result = await request;
    // RTK settles an aborted mutation at once with its own AbortError...
    expect(result.error).toMatchObject({ name: "AbortError" });
    expect(errorMessage(result.error)).toBe("");
    // ...chatstream.js tells the server to stop (the example app would otherwise finish the answer
    // for a reader who left), and the stopped answer is what gets saved.
    const after = await until(stats, (s) => s.open === 0);
    expect([after.cancelled, after.finished]).toEqual([1, 0]);
    expect(conversation().messages.at(-1)).toMatchObject({ status: "stopped", content: "one" });
    // (an aborted mutation invalidates nothing: ask the server itself what it saved)
    const saved = await until(
      async (): Promise<Conversation> => (await fetch(`${SERVER}/api/conversations/${id}`)).json(),
      (c) => c.messages.at(-1)?.status !== "streaming",
    );
    expect(saved.messages.at(-1)).toMatchObject({ role: "assistant", status: "stopped", content: "one" });
  });
});

describe("a saved conversation", () => {
  it("reopens in a fresh store, and is listed", async () => {
    await script({ reply: "remembered" });
    await store.dispatch(chatApi.endpoints.sendMessage.initiate({ conversationId: id, content: "remember me" }));
    const other = makeStore(); // a reload: nothing in memory
    const stop = await subscribe(other, id);
    const reopened = chatApi.endpoints.getConversation.select(id)(other.getState()).data!;
    expect(reopened.messages.map((m) => [m.role, m.content])).toEqual([
      ["user", "remember me"],
      ["assistant", "remembered"],
    ]);
    stop();
    const list = await other.dispatch(chatApi.endpoints.listConversations.initiate());
    expect(list.data?.find((c) => c.id === id)).toMatchObject({ title: "remember me", messages: 2 });
  });
});
