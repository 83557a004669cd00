// AG-UI's own client, @ag-ui/client 1.0's HttpAgent, against the app under gunicorn (CHATSTREAM_SERVER,
// tests/agui_app.py) and the stand-in model (STANDIN_CONTROL). HttpAgent checks the order of the events
// itself (a protocol error fails the run) and strips, with a warning, any key 1.0 does not know: every
// test fails on such a warning. Run by tests/test_agui.py, once per upstream API.
import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { HttpAgent } from "@ag-ui/client";

const SERVER = process.env.CHATSTREAM_SERVER;
const CONTROL = process.env.STANDIN_CONTROL;
const REPLY = "one two three four five six seven eight";

async function control(path, settings) {
  const response = await fetch(`${CONTROL}/_standin/${path}`, {
    method: settings ? "PUT" : "POST",
    headers: { "Content-Type": "application/json" },
    body: settings ? JSON.stringify(settings) : undefined,
  });
  assert.equal(response.status, 200);
}

const stats = async () => (await fetch(`${CONTROL}/_standin/stats`)).json();
const bodies = async () => (await fetch(`${CONTROL}/_standin/bodies`)).json();

async function until(get, ok, timeout = 30000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await get();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`condition not met: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// From zero counts, once the streams of the test before have ended.
async function script(settings) {
  await until(stats, (s) => s.open === 0);
  await control("reset");
  await control("script", settings);
}

let warnings;
const warn = console.warn;
const error = console.error;
beforeEach(() => {
  warnings = [];
  console.warn = (...args) => warnings.push(args.map(String).join(" "));
  console.error = (...args) => warnings.push(args.map(String).join(" "));
});
afterEach(() => {
  console.warn = warn;
  console.error = error;
  assert.deepEqual(warnings, [], "the client stripped or refused something");
});

/** An agent on the app, and every event it applied, in order. */
function agent(options = {}) {
  const seen = [];
  const headers = [];
  const made = new HttpAgent({
    url: `${SERVER}/api/chat`,
    fetch: async (url, init) => {
      const response = await fetch(url, init);
      headers.push(response.headers);
      return response;
    },
    ...options,
  });
  made.subscribe({ onEvent: ({ event }) => void seen.push(event) });
  return { agent: made, seen, headers };
}

const user = (content) => ({ id: `u-${Math.random().toString(36).slice(2)}`, role: "user", content });
const types = (events) => events.map((e) => e.type);
const finished = (events) => events.find((e) => e.type === "RUN_FINISHED");

test("text streams into the agent's messages while the model is still held", async () => {
  await script({ reply: REPLY, hold_after: 3 });
  const { agent: a, seen } = agent();
  a.addMessage(user("Count to eight"));
  const run = a.runAgent({ runId: "run-text" });
  const partial = await until(() => a.messages.at(-1), (m) => m?.role === "assistant" && m.content === "one two three");
  const held = await stats();
  assert.equal(held.finished, 0); // the agent had the words before the model was done
  assert.equal(partial.content, "one two three");
  await control("release");
  await run;
  assert.equal(a.messages.at(-1).content, REPLY);
  assert.deepEqual(types(seen).slice(0, 4), ["RUN_STARTED", "STEP_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]);
  assert.deepEqual(types(seen).slice(-3), ["TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_FINISHED"]);
  const end = finished(seen);
  assert.equal(end.runId, "run-text");
  assert.equal(end.threadId, a.threadId);
  assert.deepEqual(end.outcome, { type: "success" });
  assert.ok(end.usage[0].outputTokens > 0 && end.usage[0].inputTokens > 0);
});

test("a server-side tool runs between two steps, its result in the conversation", async () => {
  await script({ tool_calls: [{ name: "current_time", arguments: {} }], reply: "It is noon." });
  const { agent: a, seen } = agent();
  a.addMessage(user("What time is it?"));
  await a.runAgent();
  const result = seen.find((e) => e.type === "TOOL_CALL_RESULT");
  const start = seen.find((e) => e.type === "TOOL_CALL_START");
  assert.equal(start.toolCallName, "current_time");
  assert.equal(result.toolCallId, start.toolCallId);
  assert.equal(result.content, "2026-12-06T12:00:00Z");
  assert.equal(seen.filter((e) => e.type === "STEP_STARTED").length, 2);
  assert.deepEqual(a.messages.map((m) => m.role), ["user", "assistant", "tool", "assistant"]);
  assert.equal(a.messages.at(-1).content, "It is noon.");
});

test("a frontend tool: the run ends with its call pending, and the next run carries its result", async () => {
  const pickColor = { name: "pick_color", description: "Ask the person for a color.",
    parameters: { type: "object", properties: { mood: { type: "string" } }, required: ["mood"] } };
  await script({ tool_calls: [{ name: "pick_color", arguments: { mood: "calm" } }], reply: "Blue it is." });
  const { agent: a, seen } = agent();
  a.addMessage(user("Pick a color for me"));
  let pending;
  await a.runAgent({ tools: [pickColor] }, { onRunFinishedEvent: (p) => void (pending = p.pendingToolCallIds) });
  const offered = (await bodies())[0].tools.map((t) => t.function?.name ?? t.name);
  assert.ok(offered.includes("pick_color") && offered.includes("current_time"), offered.join());
  const call = seen.find((e) => e.type === "TOOL_CALL_START");
  assert.equal(call.toolCallName, "pick_color");
  assert.deepEqual(finished(seen).outcome, { type: "success", pendingToolCallIds: [call.toolCallId] });
  assert.deepEqual(pending, [call.toolCallId]);
  assert.equal(seen.some((e) => e.type === "TOOL_CALL_RESULT"), false);

  a.addMessage({ id: "result-1", role: "tool", toolCallId: call.toolCallId, content: "blue" });
  await a.runAgent({ tools: [pickColor] });
  assert.equal(a.messages.at(-1).content, "Blue it is.");
  const sent = (await bodies()).at(-1).messages ?? (await bodies()).at(-1).input;
  assert.ok(JSON.stringify(sent).includes("blue"));
});

test("a tool that needs approval interrupts the run; the resume runs it and the model goes on", async () => {
  await script({ tool_calls: [{ name: "delete_file", arguments: { path: "/tmp/old" } }], reply: "Deleted." });
  const { agent: a, seen } = agent();
  a.addMessage(user("Delete /tmp/old"));
  await a.runAgent();
  const outcome = finished(seen).outcome;
  assert.equal(outcome.type, "interrupt");
  const [interrupt] = outcome.interrupts;
  const call = seen.find((e) => e.type === "TOOL_CALL_START");
  assert.equal(interrupt.reason, "tool_call");
  assert.equal(interrupt.toolCallId, call.toolCallId);
  assert.match(interrupt.id, /^approval-/);
  assert.deepEqual(interrupt.responseSchema.required, ["approved"]);
  assert.deepEqual(a.pendingInterrupts.map((i) => i.id), [interrupt.id]);
  assert.equal((await stats()).requests, 1); // the tool did not run: the model was not asked again

  seen.length = 0;
  await a.runAgent({ resume: [{ interruptId: interrupt.id, status: "resolved", payload: { approved: true } }] });
  // The resumed run gives the original call's result without repeating the call.
  assert.equal(seen.some((e) => e.type === "TOOL_CALL_START"), false);
  const result = seen.find((e) => e.type === "TOOL_CALL_RESULT");
  assert.equal(result.toolCallId, call.toolCallId);
  assert.equal(result.content, "deleted /tmp/old");
  assert.deepEqual(finished(seen).outcome, { type: "success" });
  assert.equal(a.messages.at(-1).content, "Deleted.");
  assert.deepEqual(a.pendingInterrupts, []);
});

test("a denied approval: the tool does not run, and the model is told", async () => {
  await script({ tool_calls: [{ name: "delete_file", arguments: { path: "/etc" } }], reply: "I did not." });
  const { agent: a, seen } = agent();
  a.addMessage(user("Delete /etc"));
  await a.runAgent();
  const [interrupt] = finished(seen).outcome.interrupts;
  seen.length = 0;
  await a.runAgent({ resume: [{ interruptId: interrupt.id, status: "resolved", payload: { approved: false } }] });
  const result = seen.find((e) => e.type === "TOOL_CALL_RESULT");
  assert.match(result.content, /denied/);
  assert.equal(a.messages.at(-1).content, "I did not.");
});

test("abortRun() stops the model upstream", async () => {
  await script({ reply: REPLY, hold_after: 2 });
  const { agent: a } = agent();
  a.addMessage(user("Talk"));
  const run = a.runAgent();
  await until(() => a.messages.at(-1), (m) => m?.role === "assistant" && m.content === "one two");
  a.abortRun();
  await run;
  const after = await until(stats, (s) => s.open === 0);
  assert.deepEqual([after.cancelled, after.finished], [1, 0]);
});

test("a stop from elsewhere ends the run as cancelled", async () => {
  await script({ reply: REPLY, hold_after: 2 });
  const { agent: a, seen, headers } = agent();
  a.addMessage(user("Talk"));
  const run = a.runAgent();
  await until(() => a.messages.at(-1), (m) => m?.role === "assistant" && m.content === "one two");
  const streamId = headers[0].get("x-chat-stream-id");
  const stop = await fetch(`${SERVER}/api/chat/${streamId}/stop`, { method: "POST" });
  assert.equal(stop.status, 204);
  await run;
  assert.deepEqual(finished(seen).outcome, { type: "cancelled" });
  const after = await until(stats, (s) => s.open === 0);
  assert.deepEqual([after.cancelled, after.finished], [1, 0]);
});

test("an error after the first byte is RUN_ERROR with our code and sentence", async () => {
  await script({ reply: REPLY, error_after: 2 });
  const { agent: a, seen } = agent();
  a.addMessage(user("Talk"));
  let failed;
  await a.runAgent({}, { onRunErrorEvent: ({ event }) => void (failed = event) }).catch(() => {});
  assert.equal(failed.code, "upstream_error");
  assert.equal(failed.message, seen.at(-1).message);
  assert.doesNotMatch(failed.message, /stand-in|injected/i); // ours, not the upstream's words
  assert.equal(seen.at(-1).type, "RUN_ERROR");
});

test("state: the request's reaches the tool, and the tool's new state reaches the agent", async () => {
  await script({ tool_calls: [{ name: "remember", arguments: { note: "buy milk" } }], reply: "Noted." });
  const { agent: a, seen } = agent({ initialState: { notes: ["call mom"] } });
  a.addMessage(user("Remember to buy milk"));
  const progress = [];
  await a.runAgent({}, { onCustomEvent: ({ event }) => void progress.push([event.name, event.value]) });
  assert.deepEqual(a.state, { notes: ["call mom", "buy milk"], saved: true });
  assert.deepEqual(progress, [["progress", { saving: "buy milk" }]]);
  assert.deepEqual(types(seen).filter((t) => t.startsWith("STATE_")), ["STATE_SNAPSHOT", "STATE_DELTA"]);
});
