// chatstream.js against real servers: the example app under gunicorn (CHATSTREAM_SERVER) with the
// stand-in model (STANDIN_CONTROL), and a raw node HTTP server for byte-level splits and pings.
// Run by tests/test_js_client.py, which starts and stops the servers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { streamChat, readNDJSON, readSSE, readText, ChatStreamError, errorText } from "../../flask_chatstream/static/chatstream.js";

const SERVER = process.env.CHATSTREAM_SERVER;
const CONTROL = process.env.STANDIN_CONTROL;
const REPLY = "Grüße aus Köln, 日本語 and 🎉 — streamed word by word.";

async function script(settings) {
  const response = await fetch(`${CONTROL}/_standin/script`, {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(settings),
  });
  assert.equal(response.status, 200);
}

async function stats() {
  return (await fetch(`${CONTROL}/_standin/stats`)).json();
}

// A test starts from zero counts, once the streams of the one before have ended (a stream's end
// is counted after its client has its last byte, so it could land after a reset).
async function fresh() {
  await waitFor((s) => s.open === 0);
  assert.equal((await fetch(`${CONTROL}/_standin/reset`, { method: "POST" })).status, 200);
}

async function waitFor(condition, timeout = 30000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const current = await stats();
    if (condition(current)) return current;
    if (Date.now() > deadline) throw new Error(`condition not met: ${JSON.stringify(current)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function collect(iterable) {
  const events = [];
  for await (const event of iterable) events.push(event);
  return events;
}

const text = (events) => events.filter((e) => e.type === "delta").map((e) => e.content).join("");

// A raw server whose bytes we control, split anywhere.
let raw;
let rawUrl;
const rawBodies = {};
const rawRequests = [];
before(async () => {
  raw = http.createServer(async (request, response) => {
    rawRequests.push({ method: request.method, url: request.url, headers: request.headers });
    const { type, pieces, end, status = 200, headers = {}, onEnd } = rawBodies[request.url];
    response.writeHead(status, { "Content-Type": type, ...headers });
    for (const piece of pieces) {
      response.write(piece);
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
    if (end === "destroy") response.socket.destroy();
    else response.end();
    onEnd?.();
  });
  await new Promise((resolve) => raw.listen(0, "127.0.0.1", resolve));
  rawUrl = `http://127.0.0.1:${raw.address().port}`;
});
after(() => raw.close());

function splitEverywhere(string, size) {
  const bytes = Buffer.from(string, "utf8");
  const pieces = [];
  for (let i = 0; i < bytes.length; i += size) pieces.push(bytes.subarray(i, i + size));
  return pieces;
}

async function release() {
  assert.equal((await fetch(`${CONTROL}/_standin/release`, { method: "POST" })).status, 200);
}

for (const format of ["ndjson", "sse", "text"]) {
  test(`${format}: deltas in order, the first before the upstream is done, then done`, async () => {
    // The stand-in holds after three words until released: no clock decides what arrives when.
    await fresh();
    await script({ reply: REPLY, hold_after: 3 });
    const events = [];
    for await (const event of streamChat(`${SERVER}/api/chat`, { content: "hi" }, { format })) {
      events.push(event);
      if (event.type === "delta" && text(events) === "Grüße aus Köln,") {
        assert.equal((await stats()).finished, 0);
        await release();
      }
    }
    assert.equal(text(events), REPLY);
    const done = events.at(-1);
    assert.equal(done.type, "done");
    if (format !== "text") {
      assert.equal(done.finish_reason, "stop");
      assert.equal(done.usage.completion_tokens, 11);
    }
  });
}

test("UTF-8 and lines split across reads are joined (ndjson)", async () => {
  const body = ['{"type":"start","id":"x","model":"m"}', '{"type":"delta","content":"Grüße 日本 🎉"}',
    '{"type":"ping"}', '{"type":"delta","content":" ok"}', '{"type":"done","finish_reason":"stop","usage":null}']
    .join("\n") + "\n";
  rawBodies["/split.ndjson"] = { type: "application/x-ndjson", pieces: splitEverywhere(body, 3) };
  const events = await collect(readNDJSON(await fetch(`${rawUrl}/split.ndjson`)));
  assert.equal(text(events), "Grüße 日本 🎉 ok");
  assert.deepEqual(events.map((e) => e.type), ["start", "delta", "delta", "done"]); // ping ignored
});

test("SSE split across reads, CRLF endings and heartbeat comments", async () => {
  const body = ": ping\r\n\r\nevent: delta\r\ndata: {\"type\":\"delta\",\"content\":\"Kö\"}\r\n\r\n" +
    ": ping\n\nevent: delta\ndata: {\"type\":\"delta\",\"content\":\"ln 🎉\"}\n\n" +
    "event: done\ndata: {\"type\":\"done\",\"finish_reason\":\"stop\",\"usage\":null}\n\n";
  rawBodies["/split.sse"] = { type: "text/event-stream", pieces: splitEverywhere(body, 4) };
  const events = await collect(readSSE(await fetch(`${rawUrl}/split.sse`)));
  assert.equal(text(events), "Köln 🎉");
  assert.equal(events.at(-1).type, "done");
});

test("text split inside multi-byte characters", async () => {
  rawBodies["/split.txt"] = { type: "text/plain", pieces: splitEverywhere("日本語 🎉 Grüße", 1) };
  const events = await collect(readText(await fetch(`${rawUrl}/split.txt`)));
  assert.equal(text(events), "日本語 🎉 Grüße");
});

test("HTTP error before the stream throws with status, code and message", async () => {
  await assert.rejects(collect(streamChat(`${SERVER}/api/chat`, { messages: [] })), (error) => {
    assert.ok(error instanceof ChatStreamError);
    assert.equal(error.status, 400);
    assert.equal(error.code, "empty_messages");
    assert.match(error.message, /must not be empty/);
    return true;
  });
  await script({ status: 429, retry_after: "3" });
  await assert.rejects(collect(streamChat(`${SERVER}/api/chat`, { content: "hi" })),
    { status: 429, code: "rate_limited", retryAfter: 3 });
});

test("errorText puts the server's errors, aborts and network failures in words", async () => {
  const refused = await collect(streamChat(`${SERVER}/api/chat`, { messages: [] })).catch((error) => error);
  assert.equal(errorText(refused), "There was nothing to send. Type a message first.");
  await script({ status: 503 });
  const down = await collect(streamChat(`${SERVER}/api/chat`, { content: "hi" })).catch((error) => error);
  assert.equal(errorText(down), "The AI provider cannot be reached right now. Try again in a moment.");
  const aborted = await collect(streamChat(`${SERVER}/api/chat`, { content: "hi" }, { signal: AbortSignal.abort() }))
    .catch((error) => error);
  assert.equal(errorText(aborted), "Stopped.");
  const unreachable = await collect(streamChat("http://127.0.0.1:9/api/chat", { content: "hi" })).catch((error) => error);
  assert.equal(errorText(unreachable), "The server cannot be reached. Check your connection.");
  // a spent budget says when it renews, from the response's Retry-After
  const spent = new ChatStreamError("used up", { status: 429, code: "budget_exceeded", retryAfter: 7200 });
  assert.equal(errorText(spent), "You have used up your allowance for now. Try again in 2 hours.");
  assert.equal(errorText(new ChatStreamError("x", { status: 429, code: "budget_exceeded" })),
    "You have used up your allowance for now. Try again later.");
  // an app's own error (its login, say) keeps the message the app wrote for people
  assert.equal(errorText(new ChatStreamError("Log in first.", { status: 401, code: "unauthorized" })), "Log in first.");
});

for (const format of ["ndjson", "sse"]) {
  test(`${format}: the terminal error event throws after the deltas before it`, async () => {
    await script({ reply: REPLY, error_after: 2 });
    const seen = [];
    await assert.rejects(
      (async () => { for await (const e of streamChat(`${SERVER}/api/chat`, { content: "hi" }, { format })) seen.push(e); })(),
      { name: "ChatStreamError", code: "upstream_error", status: 0 },
    );
    assert.equal(text(seen), "Grüße aus");
  });
}

test("text: a cut stream throws 'truncated', never done", async () => {
  await script({ reply: REPLY, cut_after: 2 });
  const seen = [];
  await assert.rejects(
    (async () => { for await (const e of streamChat(`${SERVER}/api/chat`, { content: "hi" }, { format: "text" })) seen.push(e); })(),
    { name: "ChatStreamError", code: "truncated" },
  );
  assert.equal(text(seen), "Grüße aus");
  assert.ok(!seen.some((e) => e.type === "done"));
});

test("ndjson and sse: a body that ends before done throws 'truncated'", async () => {
  rawBodies["/short.ndjson"] = { type: "application/x-ndjson", pieces: ['{"type":"delta","content":"half"}\n'] };
  await assert.rejects(collect(readNDJSON(await fetch(`${rawUrl}/short.ndjson`))), { code: "truncated" });
  rawBodies["/short.sse"] = { type: "text/event-stream", pieces: ['event: delta\ndata: {"type":"delta","content":"half"}\n\n'], end: "destroy" };
  await assert.rejects(collect(readSSE(await fetch(`${rawUrl}/short.sse`))), { code: "truncated" });
});

for (const format of ["ndjson", "sse", "text"]) {
  test(`${format}: abort stops reading, throws AbortError, and the server closes the upstream`, async () => {
    await fresh();
    await script({ reply: REPLY.repeat(10), hold_after: 1 }); // held after one word: it cannot finish first
    const controller = new AbortController();
    const seen = [];
    await assert.rejects(
      (async () => {
        for await (const e of streamChat(`${SERVER}/api/chat`, { content: "hi" }, { format, signal: controller.signal })) {
          seen.push(e);
          if (e.type === "delta") controller.abort();
        }
      })(),
      { name: "AbortError" },
    );
    assert.equal(seen.filter((e) => e.type === "delta").length, 1);
    const after = await waitFor((s) => s.open === 0);
    assert.equal(after.cancelled, 1);
    assert.equal(after.finished, 0);
  });
}

test("cross-origin without the exposed header: the stop still goes out, with the start event's id and the credentials", async () => {
  await fresh();
  await script({ reply: REPLY.repeat(10), hold_after: 1 });
  const stops = [];
  // What a browser's CORS filter does to a header the server did not expose.
  const hiding = async (url, init) => {
    const response = await fetch(url, init);
    if (url.endsWith("/stop")) {
      stops.push({ url, credentials: init.credentials, status: response.status });
      return response;
    }
    const headers = new Headers(response.headers);
    headers.delete("X-Chat-Stream-Id");
    return new Response(response.body, { status: response.status, headers });
  };
  const controller = new AbortController();
  let start;
  await assert.rejects(
    (async () => {
      const options = { signal: controller.signal, fetch: hiding, credentials: "include" };
      for await (const e of streamChat(`${SERVER}/api/chat`, { content: "hi" }, options)) {
        if (e.type === "start") start = e;
        if (e.type === "delta") controller.abort();
      }
    })(),
    { name: "AbortError" },
  );
  for (let i = 0; i < 500 && stops.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(stops.length, 1);
  assert.equal(stops[0].url, `${SERVER}/api/chat/${start.stream_id}/stop`);
  assert.equal(stops[0].credentials, "include");
  assert.ok([204, 404].includes(stops[0].status), `${stops[0].status}`); // 404 once the hang-up ended it first
  await waitFor((s) => s.open === 0);
});

test("an already-aborted signal never reads", async () => {
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(collect(streamChat(`${SERVER}/api/chat`, { content: "hi" }, { signal: controller.signal })), { name: "AbortError" });
});

test("a custom fetch and extra headers are used", async () => {
  await script({ reply: "custom" });
  const calls = [];
  const myFetch = (url, init) => { calls.push(init.headers); return fetch(url, init); };
  const events = await collect(streamChat(`${SERVER}/api/chat`, { content: "hi" }, { fetch: myFetch, headers: { "X-Trace": "1" } }));
  assert.equal(text(events), "custom");
  assert.equal(calls.length, 1);
  assert.equal(calls[0]["X-Trace"], "1");
  assert.equal(calls[0].Accept, "application/x-ndjson");
});

for (const format of ["ndjson", "sse"]) {
  test(`${format}: a server-side tool's call and result come through as events`, async () => {
    await script({ reply: "The answer uses the tool.", tool_calls: [{ name: "current_time", arguments: { zone: "UTC" } }] });
    const events = await collect(streamChat(`${SERVER}/api/chat`, { content: "time?" }, { format }));
    const types = events.map((e) => e.type).filter((t, i, all) => !(t === "delta" && all[i - 1] === "delta"));
    assert.deepEqual(types, ["start", "tool_call", "data", "tool_result", "delta", "done"]); // (how many deltas is the network's)
    const [, call, status, result] = events;
    assert.deepEqual([call.name, call.arguments], ["current_time", { zone: "UTC" }]);
    // what the tool emit()s as it runs, before its result
    assert.deepEqual(status, { type: "data", name: "status", data: "Reading the server's UTC clock", transient: true });
    assert.equal(result.id, call.id);
    assert.match(result.output, /^\d{4}-\d\d-\d\dT/);
    assert.equal(text(events), "The answer uses the tool.");
  });
}

// -- resume: a dropped connection picked up where it broke off ---------------------------------------

const numbered = (events) => events.map((e, i) => JSON.stringify({ seq: i + 1, ...e }) + "\n");
const ANSWER = [{ type: "start", id: "c", model: "m", stream_id: "s1" }, { type: "delta", content: "one" },
  { type: "delta", content: " two" }, { type: "delta", content: " three" }, { type: "done", finish_reason: "stop", usage: null }];

test("resume: a dropped NDJSON stream goes on from the last seq, every event once, headers kept", async () => {
  rawRequests.length = 0;
  const lines = numbered(ANSWER);
  rawBodies["/r1/chat"] = { type: "application/x-ndjson", headers: { "X-Chat-Stream-Id": "s1" }, pieces: lines.slice(0, 3), end: "destroy" };
  // The server may send again what the client has already seen: it is skipped by seq.
  rawBodies["/r1/chat/s1?after=3"] = { type: "application/x-ndjson", pieces: lines.slice(2) };
  const events = await collect(streamChat(`${rawUrl}/r1/chat`, { content: "hi" }, { resume: { delay: 1 }, headers: { "X-User": "u" } }));
  assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5]);
  assert.equal(text(events), "one two three");
  assert.deepEqual(rawRequests.map((r) => `${r.method} ${r.url}`), ["POST /r1/chat", "GET /r1/chat/s1?after=3"]);
  assert.equal(rawRequests[1].headers["x-user"], "u");
  assert.equal(rawRequests[1].headers.accept, "application/x-ndjson");
});

test("resume: SSE too, across several drops", async () => {
  rawRequests.length = 0;
  const blocks = ANSWER.map((e, i) => `id: ${i + 1}\nevent: ${e.type}\ndata: ${JSON.stringify({ seq: i + 1, ...e })}\n\n`);
  rawBodies["/r2/chat"] = { type: "text/event-stream", headers: { "X-Chat-Stream-Id": "s2" }, pieces: blocks.slice(0, 2), end: "destroy" };
  rawBodies["/r2/chat/s2?after=2"] = { type: "text/event-stream", pieces: blocks.slice(2, 3), end: "destroy" };
  rawBodies["/r2/chat/s2?after=3"] = { type: "text/event-stream", pieces: blocks.slice(3) };
  const events = await collect(streamChat(`${rawUrl}/r2/chat`, { content: "hi" }, { format: "sse", resume: { delay: 1 } }));
  assert.equal(text(events), "one two three");
  assert.equal(events.at(-1).type, "done");
  assert.equal(rawRequests.length, 3);
});

test("resume: the server's answer to the resume (404 stream_not_found) is thrown, not retried", async () => {
  rawRequests.length = 0;
  const lines = numbered(ANSWER);
  rawBodies["/r3/chat"] = { type: "application/x-ndjson", headers: { "X-Chat-Stream-Id": "s3" }, pieces: lines.slice(0, 2), end: "destroy" };
  rawBodies["/r3/chat/s3?after=2"] = { type: "application/json", status: 404,
    pieces: [JSON.stringify({ error: { code: "stream_not_found", message: "No such stream." } })] };
  const seen = [];
  await assert.rejects(
    (async () => { for await (const e of streamChat(`${rawUrl}/r3/chat`, { content: "hi" }, { resume: { delay: 1 } })) seen.push(e); })(),
    { name: "ChatStreamError", status: 404, code: "stream_not_found" },
  );
  assert.equal(text(seen), "one");
  assert.equal(rawRequests.length, 2);
});

test("resume: gives up after the attempts, with 'truncated'; unnumbered streams and text are never resumed", async () => {
  rawRequests.length = 0;
  const lines = numbered(ANSWER);
  rawBodies["/r4/chat"] = { type: "application/x-ndjson", headers: { "X-Chat-Stream-Id": "s4" }, pieces: lines.slice(0, 2), end: "destroy" };
  rawBodies["/r4/chat/s4?after=2"] = { type: "application/x-ndjson", pieces: [], end: "destroy" };
  await assert.rejects(collect(streamChat(`${rawUrl}/r4/chat`, {}, { resume: { attempts: 3, delay: 1 } })), { code: "truncated" });
  assert.equal(rawRequests.length, 4); // the POST and three attempts

  rawRequests.length = 0;
  rawBodies["/r5/chat"] = { type: "application/x-ndjson", headers: { "X-Chat-Stream-Id": "s5" },
    pieces: ANSWER.slice(0, 2).map((e) => JSON.stringify(e) + "\n"), end: "destroy" };
  await assert.rejects(collect(streamChat(`${rawUrl}/r5/chat`, {}, { resume: true })), { code: "truncated" });
  assert.equal(rawRequests.length, 1);

  await assert.rejects(collect(streamChat(`${rawUrl}/r5/chat`, {}, { format: "text", resume: true })), TypeError);
});

test("resume: an abort while waiting to resume throws AbortError and makes no further request", async () => {
  rawRequests.length = 0;
  const lines = numbered(ANSWER);
  const controller = new AbortController();
  // Aborted after the server dropped the connection, so while the client waits (a minute) to resume.
  rawBodies["/r6/chat"] = { type: "application/x-ndjson", headers: { "X-Chat-Stream-Id": "s6" }, pieces: lines.slice(0, 2),
    end: "destroy", onEnd: () => setTimeout(() => controller.abort(), 200) };
  rawBodies["/r6/chat/s6/stop"] = { type: "text/plain", status: 204, pieces: [] };
  const seen = [];
  await assert.rejects(
    (async () => {
      for await (const e of streamChat(`${rawUrl}/r6/chat`, {}, { resume: { delay: 60_000 }, signal: controller.signal })) {
        seen.push(e);
      }
    })(),
    { name: "AbortError" },
  );
  assert.equal(text(seen), "one");
  assert.ok(!rawRequests.some((r) => r.method === "GET"), JSON.stringify(rawRequests.map((r) => r.url)));
});
