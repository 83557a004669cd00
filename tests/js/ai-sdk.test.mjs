// The Vercel AI SDK's own client code, versions 5 and 6 from the npm registry, against the real app
// (CHATSTREAM_SERVER) and the stand-in model (STANDIN_CONTROL): DefaultChatTransport sends what
// useChat sends and parses our stream with the SDK's own schemas; readUIMessageStream builds the
// UIMessage that useChat would show. Run by tests/test_js_client.py.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as ai5 from "ai5";
import * as ai6 from "ai6";

const SERVER = process.env.CHATSTREAM_SERVER;
const CONTROL = process.env.STANDIN_CONTROL;

async function script(settings) {
  // From zero counts, once the streams of the test before have ended (a stream's end is counted
  // after its client has its last byte, so it could land after a reset).
  await waitFor((s) => s.open === 0);
  await fetch(`${CONTROL}/_standin/reset`, { method: "POST" });
  const response = await fetch(`${CONTROL}/_standin/script`, {
    method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(settings),
  });
  assert.equal(response.status, 200);
}

// The conversation each request sent, as chat messages, whichever upstream API the app asks (the
// stand-in reads a Responses API request's input items back into messages).
async function sentMessages() {
  return (await fetch(`${CONTROL}/_standin/messages`)).json();
}

async function stats() {
  return (await fetch(`${CONTROL}/_standin/stats`)).json();
}

async function waitFor(condition) {
  for (let i = 0; i < 1500; i++) {
    const current = await stats();
    if (condition(current)) return current;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error("stand-in condition not met");
}

const user = (text, id = "u1") => ({ id, role: "user", parts: [{ type: "text", text }] });

// What useChat does: send the messages, read the stream into the message it shows.
async function chat(sdk, messages, { api = `${SERVER}/api/chat`, signal, onChunk } = {}) {
  const transport = new sdk.DefaultChatTransport({ api });
  let stream = await transport.sendMessages({
    chatId: "chat-1", messages, trigger: "submit-message", messageId: undefined, abortSignal: signal,
  });
  if (onChunk) stream = stream.pipeThrough(new TransformStream({ transform(chunk, c) { onChunk(chunk); c.enqueue(chunk); } }));
  let last;
  for await (const message of sdk.readUIMessageStream({ stream, terminateOnError: true })) last = message;
  return last;
}

const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

for (const [version, sdk] of [["5", ai5], ["6", ai6]]) {
  test(`ai ${version}: a whole answer, with usage in the metadata`, async () => {
    await script({ reply: "Streamed to useChat, word by word." });
    const chunks = [];
    const message = await chat(sdk, [user("Hi")], { onChunk: (c) => chunks.push(c.type) });
    assert.equal(message.role, "assistant");
    assert.equal(textOf(message), "Streamed to useChat, word by word.");
    // the token counts, and the app's message metadata from its start and its end (example_app.py)
    const { usage, model, seconds } = message.metadata;
    assert.deepEqual(usage, { prompt_tokens: 1, completion_tokens: 6, total_tokens: 7 });
    assert.equal(model, "gpt-4o-mini");
    assert.equal(typeof seconds, "number");
    assert.deepEqual([chunks[0], chunks[1], chunks[2]], ["start", "start-step", "text-start"]);
    assert.deepEqual(chunks.slice(-3), ["text-end", "finish-step", "finish"]);
  });

  test(`ai ${version}: the history goes to the model as chat messages`, async () => {
    await script({ reply: "second answer" });
    const history = [
      user("first question"),
      { id: "a1", role: "assistant", parts: [{ type: "step-start" }, { type: "text", text: "first answer" },
        { type: "reasoning", text: "dropped" }] },
      user("second question", "u2"),
    ];
    assert.equal(textOf(await chat(sdk, history)), "second answer");
    const [messages] = await sentMessages();
    assert.deepEqual(messages, [
      { role: "user", content: "first question" },
      { role: "assistant", content: "first answer" },
      { role: "user", content: "second question" },
    ]);
  });

  test(`ai ${version}: an HTTP error is the transport's error, with our JSON body`, async () => {
    await script({ status: 429, retry_after: "5" });
    await assert.rejects(chat(sdk, [user("Hi")]), (error) => {
      assert.equal(JSON.parse(error.message).error.code, "rate_limited");
      return true;
    });
  });

  test(`ai ${version}: an in-stream error ends the stream with an error part`, async () => {
    await script({ reply: "one two three four", error_after: 2 });
    const chunks = [];
    await assert.rejects(chat(sdk, [user("Hi")], { onChunk: (c) => chunks.push(c) }),
      /The model provider reported an error during the answer/);
    assert.deepEqual(chunks.at(-1), { type: "error", errorText: "The model provider reported an error during the answer." });
  });

  test(`ai ${version}: aborting closes the upstream`, async () => {
    await script({ reply: "one two three four five six", hold_after: 1 }); // held: it cannot finish first
    const controller = new AbortController();
    await assert.rejects(chat(sdk, [user("Hi")], {
      signal: controller.signal,
      onChunk: (c) => { if (c.type === "text-delta") controller.abort(); },
    }));
    const after = await waitFor((s) => s.open === 0);
    assert.deepEqual([after.cancelled, after.finished], [1, 0]);
  });

  test(`ai ${version}: reasoning arrives as reasoning parts, before the text`, async () => {
    await script({ reply: "The answer.", reasoning: "Let me think about this." });
    const message = await chat(sdk, [user("Hi")]);
    assert.deepEqual(message.parts.filter((p) => p.type !== "step-start").map((p) => [p.type, p.text]), [
      ["reasoning", "Let me think about this."],
      ["text", "The answer."],
    ]);
  });

  test(`ai ${version}: a stop from elsewhere ends the message as stopped, not failed`, async () => {
    await script({ reply: "one two three four five", hold_after: 2 });
    const chunks = [];
    let streamId;
    const message = await chat(sdk, [user("Count")], {
      onChunk: (c) => {
        chunks.push(c.type);
        if (c.type === "start") streamId = c.messageId;
        // another tab stops it, while this reader goes on reading
        if (c.type === "text-delta" && chunks.filter((t) => t === "text-delta").length === 1) {
          fetch(`${SERVER}/api/chat/${streamId}/stop`, { method: "POST" });
        }
      },
    });
    assert.equal(chunks.at(-1), "abort");
    assert.ok(!chunks.includes("error") && !chunks.includes("finish"));
    assert.match(textOf(message), /^one/);
    assert.doesNotMatch(textOf(message), /four/);
    const after = await waitFor((s) => s.open === 0);
    assert.deepEqual([after.cancelled, after.finished], [1, 0]);
  });

  test(`ai ${version}: cited URLs are source-url parts`, async () => {
    await script({ reply: "See the sources.", citations: [{ url: "https://example.org/a", title: "A" }] });
    const message = await chat(sdk, [user("Sources?")]);
    assert.deepEqual(message.parts.filter((p) => p.type === "source-url").map(({ url, title }) => [url, title]),
      [["https://example.org/a", "A"]]);
    assert.equal(textOf(message), "See the sources.");
  });

  test(`ai ${version}: a server-side tool call and its result are a tool part`, async () => {
    await script({ reply: "Used the clock.", tool_calls: [{ name: "current_time", arguments: { zone: "UTC" } }] });
    const message = await chat(sdk, [user("What time is it?")]);
    const tool = message.parts.find((p) => p.type === "tool-current_time");
    assert.equal(tool.state, "output-available");
    assert.deepEqual(tool.input, { zone: "UTC" });
    assert.match(tool.output, /^\d{4}-\d\d-\d\dT/);
    assert.equal(textOf(message), "Used the clock.");
    // ...and sent back as history, it becomes the tool call and its result again
    await script({ reply: "Still the clock." });
    await chat(sdk, [user("What time is it?"), message, user("Again?", "u2")]);
    const [messages] = await sentMessages();
    assert.deepEqual(messages.map((m) => m.role), ["user", "assistant", "tool", "assistant", "user"]);
    assert.equal(messages[1].tool_calls[0].function.name, "current_time");
    assert.equal(messages[2].tool_call_id, messages[1].tool_calls[0].id);
  });

  test(`ai ${version}: TextStreamChatTransport reads ?format=text`, async () => {
    await script({ reply: "plain text for the text transport" });
    const transport = new sdk.TextStreamChatTransport({ api: `${SERVER}/api/chat?format=text` });
    const stream = await transport.sendMessages({ chatId: "c", messages: [user("Hi")], trigger: "submit-message" });
    let last;
    for await (const message of sdk.readUIMessageStream({ stream })) last = message;
    assert.equal(textOf(last), "plain text for the text transport");
  });

  test(`ai ${version}: useChat's resume request gets 204: nothing to resume`, async () => {
    const transport = new sdk.DefaultChatTransport({ api: `${SERVER}/api/chat` });
    assert.equal(await transport.reconnectToStream({ chatId: "chat-1" }), null);
  });
}
