// The example's chat against the real app (CHATSTREAM_SERVER) and stand-in model (STANDIN_CONTROL),
// started by tests/test_react_ai_sdk.py: the AI SDK's own Chat (what useChat runs), nothing mocked,
// and no clock: the stand-in holds answers at a gate until a test releases it.
import { beforeEach, describe, expect, it } from "vitest";
import { errorText, loadConversation, makeChat, setApiBase, stopAnswer, textOf } from "./chat";

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

async function until<T>(get: () => T | Promise<T>, ok: (value: T) => boolean): Promise<T> {
  for (let i = 0; i < 1500; i++) {
    const value = await get();
    if (ok(value)) return value;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("condition not met");
}

const stats = async (): Promise<Record<string, number>> => (await fetch(`${CONTROL}/_standin/stats`)).json();

/** The first request body the upstream got since the last reset (each script() resets it). */
const firstUpstreamBody = async () => (await (await fetch(`${CONTROL}/_standin/bodies`)).json())[0];

/** The conversation as the server keeps it, once it has saved the last answer (it does so after the
 * stream's last byte, which the Chat may already have). */
const savedConversation = async (id: string) =>
  (await until(() => loadConversation(id), (m) => !!m && m.every((x) => x.metadata?.status !== "streaming")))!;

beforeEach(() => setApiBase(`${SERVER}/api`));

describe("useChat's Chat against flask_chatstream", () => {
  it("streams the answer into the messages before the upstream is done", async () => {
    await script({ reply: REPLY, hold_after: 3 });
    const chat = makeChat();
    const sent = chat.sendMessage({ text: "count" });
    const partial = REPLY.split(" ").slice(0, 3).join(" ");
    await until(() => chat.messages.at(-1), (m) => m?.role === "assistant" && textOf(m) === partial);
    expect(chat.status).toBe("streaming");
    expect((await stats()).finished).toBe(0);
    await control("release");
    await sent;
    expect(chat.status).toBe("ready");
    expect(textOf(chat.messages.at(-1)!)).toBe(REPLY);
    // the token counts, and the app's message metadata from the answer's start and end (example_app.py)
    expect(chat.messages.at(-1)!.metadata).toEqual({
      usage: { prompt_tokens: 1, completion_tokens: 8, total_tokens: 9 }, model: "gpt-4o-mini", seconds: expect.any(Number),
    });
  });

  it("sends the conversation so far", async () => {
    const chat = makeChat();
    await script({ reply: "first answer" });
    await chat.sendMessage({ text: "first" });
    await script({ reply: "second answer" });
    await chat.sendMessage({ text: "second" });
    const body = await firstUpstreamBody();
    expect(body.messages).toEqual([
      { role: "user", content: "first" },
      { role: "assistant", content: "first answer" },
      { role: "user", content: "second" },
    ]);
  });

  it("says what an HTTP error means, in chatstream.js's words for its code", async () => {
    await script({ status: 503 });
    const chat = makeChat();
    await chat.sendMessage({ text: "hi" });
    expect(chat.status).toBe("error");
    expect(errorText(chat.error)).toBe("The AI provider cannot be reached right now. Try again in a moment.");
  });

  it("is never stuck on a refused message: each request carries only the new one", async () => {
    await script({ reply: "fine" });
    const chat = makeChat();
    await chat.sendMessage({ text: "   " }); // what the page's composer never sends
    expect(chat.status).toBe("error");
    expect(errorText(chat.error)).toBe("Type a message first.");
    await chat.sendMessage({ text: "hello" });
    expect(chat.status).toBe("ready");
    expect(textOf(chat.messages.at(-1)!)).toBe("fine");
  });

  it("keeps the conversation on the server: a reload gets it back as UIMessages", async () => {
    await script({ reply: "It is late.", tool_calls: [{ name: "current_time", arguments: { zone: "UTC" } }] });
    const chat = makeChat();
    await chat.sendMessage({ text: "What time is it?" });
    const saved = await savedConversation(chat.id);
    expect(saved.map((m) => [m.role, textOf(m), m.metadata?.status])).toEqual([
      ["user", "What time is it?", undefined],
      ["assistant", "It is late.", "complete"],
    ]);
    expect(saved[1].parts[0]).toMatchObject({ type: "tool-current_time", state: "output-available", input: { zone: "UTC" } });
    expect(await loadConversation("no-such-conversation")).toBeNull();
    // and it goes on from there, in a new Chat, with the server's history
    await script({ reply: "later still" });
    const reopened = makeChat(chat.id, saved);
    await reopened.sendMessage({ text: "And now?" });
    const body = await firstUpstreamBody();
    expect(body.messages).toEqual([
      { role: "user", content: "What time is it?" },
      { role: "assistant", content: "It is late." },
      { role: "user", content: "And now?" },
    ]);
  });

  it("regenerates: the server drops the old answer, and the chat holds one answer", async () => {
    await script({ reply: "first answer" });
    const chat = makeChat();
    await chat.sendMessage({ text: "question" });
    await script({ reply: "second answer" });
    await chat.regenerate();
    expect(chat.messages.map((m) => [m.role, textOf(m)])).toEqual([["user", "question"], ["assistant", "second answer"]]);
    const body = await firstUpstreamBody();
    expect(body.messages).toEqual([{ role: "user", content: "question" }]);
    const saved = await savedConversation(chat.id);
    expect(saved.map((m) => textOf(m))).toEqual(["question", "second answer"]);
  });

  it("shows an in-stream error and keeps the text before it", async () => {
    await script({ reply: REPLY, error_after: 3 });
    const chat = makeChat();
    await chat.sendMessage({ text: "hi" });
    expect(chat.status).toBe("error");
    expect(errorText(chat.error)).toBe("The model provider reported an error during the answer.");
    expect(textOf(chat.messages.at(-1)!)).toBe("one two three");
  });

  it("stops: the server stops the model, though it finishes answers for readers who leave", async () => {
    await script({ reply: REPLY.repeat(10), hold_after: 1 }); // held after one word: it cannot finish first
    const chat = makeChat();
    const sent = chat.sendMessage({ text: "hi" });
    await until(() => chat.messages.at(-1), (m) => m?.role === "assistant" && textOf(m) === "one");
    await stopAnswer(chat);
    await sent;
    expect(chat.status).toBe("ready");
    expect(chat.messages.at(-1)!.metadata?.status).toBe("stopped");
    const after = await until(stats, (s) => s.open === 0);
    expect([after.cancelled, after.finished]).toEqual([1, 0]);
  });

  it("shows a server-side tool's call and result", async () => {
    await script({ reply: "Used the clock.", tool_calls: [{ name: "current_time", arguments: { zone: "UTC" } }] });
    const chat = makeChat();
    await chat.sendMessage({ text: "What time is it?" });
    const message = chat.messages.at(-1)!;
    const tool = message.parts.find((p) => p.type === "tool-current_time") as { state: string; output: string };
    expect(tool.state).toBe("output-available");
    expect(tool.output).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(textOf(message)).toBe("Used the clock.");
  });
});
