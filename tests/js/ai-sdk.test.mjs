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

// ---- AI SDK 6 only: tool approval, through the Chat class useChat wraps ----------------------------

// useChat's state, in memory: what @ai-sdk/react keeps in React state.
class MemoryState {
  constructor() { this.messages = []; this.status = "ready"; this.error = undefined; }
  pushMessage = (message) => { this.messages = this.messages.concat(message); };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  replaceMessage = (index, message) => { this.messages = this.messages.map((m, i) => (i === index ? message : m)); };
  snapshot = (value) => structuredClone(value);
}

class TestChat extends ai6.AbstractChat {
  constructor(options) { super({ ...options, state: new MemoryState() }); }
}

// The example app's way: the chat's id is a saved conversation, and each request carries only the
// newest message (the question, or the answer whose tool calls were just approved or denied).
function savedChat(id) {
  return new TestChat({
    id,
    transport: new ai6.DefaultChatTransport({
      api: `${SERVER}/api/chat`,
      prepareSendMessagesRequest: ({ id, messages, body }) => ({ body: { ...body, id, conversation_id: id, messages: messages.slice(-1) } }),
    }),
    sendAutomaticallyWhen: ai6.lastAssistantMessageIsCompleteWithApprovalResponses,
  });
}

const RENAME = { reply: "Done.", tool_calls: [{ id: "call_rename", name: "rename_chat", arguments: { title: "Trip plans" } }] };

async function askToRename(chat) {
  await chat.sendMessage({ text: "Rename this chat to Trip plans" });
  assert.equal(chat.status, "ready", String(chat.error));
  const [answer] = chat.messages.slice(1);
  const part = answer.parts.find((p) => p.type === "tool-rename_chat");
  assert.equal(part.state, "approval-requested");
  assert.deepEqual(part.input, { title: "Trip plans" });
  assert.match(part.approval.id, /^approval-/);
  return { answer, part };
}

async function settled(chat) {
  // sendAutomaticallyWhen sends the approval in the background: wait until that request has ended,
  // with the tool's part answered, or with an error
  const answered = () => chat.messages[1].parts.some((p) => p.type === "tool-rename_chat" && p.state.startsWith("output-"));
  for (let i = 0; i < 1500; i++) {
    if (chat.status === "error" || (chat.status === "ready" && answered())) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`the approval's request did not end: ${chat.status}`);
}

async function title(id) {
  const response = await fetch(`${SERVER}/api/conversations/${id}`);
  return (await response.json()).title;
}

test("ai 6: approved, the tool runs and the answer goes on in the same message", async () => {
  await script(RENAME);
  const chat = savedChat("approve-1");
  const { answer, part } = await askToRename(chat);
  assert.equal(await title("approve-1"), "Rename this chat to Trip plans"); // not run yet
  await chat.addToolApprovalResponse({ id: part.approval.id, approved: true });
  await settled(chat);
  assert.equal(chat.status, "ready", String(chat.error));
  assert.equal(chat.messages.length, 2); // the same assistant message, not a second one
  const [, message] = chat.messages;
  assert.equal(message.id, answer.id);
  const tool = message.parts.filter((p) => p.type === "tool-rename_chat");
  assert.equal(tool.length, 1);
  assert.equal(tool[0].state, "output-available");
  assert.equal(tool[0].output, "Renamed the chat to \u201cTrip plans\u201d");
  assert.equal(textOf(message), "Done.");
  assert.equal(await title("approve-1"), "Trip plans");
  const sent = await sentMessages();
  assert.equal(sent.length, 2);
  assert.deepEqual(sent[1].slice(-2).map((m) => m.role), ["assistant", "tool"]);
  // ...and the next question carries the tool's part as done: nothing is asked or run again
  await script({ reply: "Anything else?" });
  await chat.sendMessage({ text: "Thanks" });
  assert.equal(chat.status, "ready", String(chat.error));
  assert.equal((await stats()).requests, 1);
});

test("ai 6: denied, the tool does not run, the part says so and the model is told", async () => {
  await script(RENAME);
  const chat = savedChat("deny-1");
  const { part } = await askToRename(chat);
  await chat.addToolApprovalResponse({ id: part.approval.id, approved: false, reason: "I like the old name" });
  await settled(chat);
  assert.equal(chat.status, "ready", String(chat.error));
  assert.equal(chat.messages.length, 2);
  const tool = chat.messages[1].parts.find((p) => p.type === "tool-rename_chat");
  assert.equal(tool.state, "output-denied");
  assert.equal(await title("deny-1"), "Rename this chat to Trip plans");
  const [, second] = await sentMessages();
  assert.equal(second.at(-1).content, JSON.stringify({ error: "The user denied this tool call. Their reason: I like the old name" }));
});

test("ai 6: a forged approval is refused with 400, and nothing runs", async () => {
  await script(RENAME);
  const chat = savedChat("forged-1");
  await askToRename(chat);
  chat.messages[1].parts = chat.messages[1].parts.map((p) => (p.type === "tool-rename_chat" ? { ...p, approval: { id: "approval-forged" } } : p));
  await chat.addToolApprovalResponse({ id: "approval-forged", approved: true });
  await settled(chat);
  assert.equal(chat.status, "error");
  assert.equal(JSON.parse(chat.error.message).error.code, "invalid_approval");
  assert.equal(await title("forged-1"), "Rename this chat to Trip plans");
  assert.equal((await stats()).requests, 1);
});

test("ai 6: a tool's data part arrives before its output, and metadata is on the message", async () => {
  await script({ reply: "Used the clock.", tool_calls: [{ name: "current_time", arguments: { zone: "UTC" } }] });
  const chunks = [];
  const data = [];
  const chat = new TestChat({ transport: new ai6.DefaultChatTransport({ api: `${SERVER}/api/chat` }), onData: (part) => data.push(part) });
  const original = chat.transport.sendMessages.bind(chat.transport);
  chat.transport.sendMessages = async (options) => (await original(options)).pipeThrough(
    new TransformStream({ transform(chunk, c) { chunks.push(chunk.type); c.enqueue(chunk); } }));
  await chat.sendMessage({ text: "What time is it?" });
  assert.ok(chunks.indexOf("data-status") < chunks.indexOf("tool-output-available"), chunks.join());
  assert.deepEqual(data, [{ type: "data-status", data: "Reading the server's UTC clock", transient: true }]);
  const message = chat.messages.at(-1);
  assert.ok(!message.parts.some((p) => p.type === "data-status")); // transient: onData only
  assert.equal(message.metadata.model, "gpt-4o-mini");
  assert.equal(typeof message.metadata.seconds, "number");
  assert.deepEqual(chunks.filter((c) => c.endsWith("-step")), ["start-step", "finish-step", "start-step", "finish-step"]);
});

test("ai 6: Stop works on a continuation: the stream the approval started is the one stopped", async () => {
  await script({ ...RENAME, reply: "one two three four five", hold_after: 2 });
  let streamId;
  const chat = new TestChat({
    id: "stop-1",
    transport: new ai6.DefaultChatTransport({
      api: `${SERVER}/api/chat`,
      fetch: async (input, init) => {
        const response = await fetch(input, init);
        streamId = response.headers.get("X-Chat-Stream-Id"); // what the React example's Stop uses
        return response;
      },
      prepareSendMessagesRequest: ({ id, messages, body }) => ({ body: { ...body, id, conversation_id: id, messages: messages.slice(-1) } }),
    }),
    sendAutomaticallyWhen: ai6.lastAssistantMessageIsCompleteWithApprovalResponses,
  });
  const { answer, part } = await askToRename(chat);
  const first = streamId;
  const original = chat.transport.sendMessages.bind(chat.transport);
  chat.transport.sendMessages = async (options) => (await original(options)).pipeThrough(new TransformStream({
    transform(chunk, c) {
      if (chunk.type === "text-delta") fetch(`${SERVER}/api/chat/${streamId}/stop`, { method: "POST" });
      c.enqueue(chunk);
    },
  }));
  await chat.addToolApprovalResponse({ id: part.approval.id, approved: true });
  await settled(chat);
  assert.notEqual(streamId, first);
  assert.equal(chat.status, "ready", String(chat.error));
  assert.equal(chat.messages.length, 2);
  assert.equal(chat.messages[1].id, answer.id);
  assert.match(textOf(chat.messages[1]), /^one/);
  assert.doesNotMatch(textOf(chat.messages[1]), /five/);
  const after = await waitFor((s) => s.open === 0);
  assert.deepEqual([after.cancelled, after.finished], [1, 1]); // the first request finished; the second was stopped
});
