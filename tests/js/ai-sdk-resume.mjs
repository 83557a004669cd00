// useChat({resume: true}) with the AI SDK's own transport: DefaultChatTransport.reconnectToStream
// picks up a chat's running answer on a resumable server, and readUIMessageStream builds the message
// useChat would show. The model is held: it is released only once the resumed stream has text, so the
// rest of the answer can reach us only through the resume.
// Run by tests/test_resume.py: node tests/js/ai-sdk-resume.mjs <ai version> <api> <chat id> <user>
import assert from "node:assert/strict";
import * as ai5 from "ai5";
import * as ai6 from "ai6";

const [version, api, chatId, user] = process.argv.slice(2);
const sdk = { 5: ai5, 6: ai6 }[version];
const CONTROL = process.env.STANDIN_CONTROL;

const transport = new sdk.DefaultChatTransport({ api, headers: { "X-User": user } });
const stream = await transport.reconnectToStream({ chatId });
assert.ok(stream, "the chat has a running answer to resume");
const types = [];
let released = false;
const watched = stream.pipeThrough(new TransformStream({
  async transform(chunk, controller) {
    types.push(chunk.type);
    if (chunk.type === "text-delta" && !released) {
      released = true;
      assert.equal((await fetch(`${CONTROL}/_standin/release`, { method: "POST" })).status, 200);
    }
    controller.enqueue(chunk);
  },
}));
let message;
for await (const current of sdk.readUIMessageStream({ stream: watched, terminateOnError: true })) message = current;
const text = message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
console.log(JSON.stringify({ role: message.role, text, types }));
