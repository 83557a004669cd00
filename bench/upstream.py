"""A realistic OpenAI-compatible upstream for benchmarks, on asyncio (aiohttp) so that thousands of
concurrent streams cost it little.

Each stream sends ``chunks`` content events in OpenAI's ``chat.completion.chunk`` shape (about 300
bytes each; ``/v1/responses``: the Responses API's ``response.output_text.delta`` events), in bursts of ``burst`` events per network write, with jittered gaps, a time to first
token drawn from a log-normal distribution, and occasional stalls. Every content token is
``<seq>@<unix time sent>|``, so a client can check the text arrived whole and in order, and measure
the latency each relay adds.

The profile comes from the last message's content, ``bench:<json>``, which every contestant passes
through untouched, so one upstream serves every scenario; see ``Profile``.

    python -m bench.upstream --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass

from aiohttp import web


@dataclass(frozen=True)
class Profile:
    chunks: int = 100
    gap: float = 0.02
    """Mean seconds between content events (a burst of n events waits n gaps)."""
    jitter: float = 0.0
    """Each wait is multiplied by uniform(1 - jitter, 1 + jitter)."""
    burst: tuple[int, int] = (1, 1)
    """Events per network write: uniform over this inclusive range."""
    ttft: float = 0.0
    """Median time to first token (log-normal, sigma 0.5); 0 for none."""
    stall_chance: float = 0.0
    stall: float = 1.0

    def bursts(self, rng: random.Random) -> Iterator[tuple[int, int, float]]:
        """``(first token, tokens in this write, seconds to wait before it)``, stalls aside."""
        seq = 0
        while seq < self.chunks:
            n = min(rng.randint(*self.burst), self.chunks - seq)
            wait = 0.0
            if seq:
                wait = self.gap * n
                if self.jitter:
                    wait *= rng.uniform(1 - self.jitter, 1 + self.jitter)
            yield seq, n, wait
            seq += n

    def prompt(self) -> str:
        return "bench:" + json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_prompt(cls, prompt: str) -> Profile:
        if not prompt.startswith("bench:"):
            return cls()
        fields = json.loads(prompt.removeprefix("bench:"))
        fields["burst"] = tuple(fields.get("burst", (1, 1)))
        return cls(**fields)


def token(seq: int) -> str:
    return f"{seq}@{time.time():.6f}|"


async def paced(profile: Profile, rng: random.Random) -> AsyncIterator[tuple[int, int]]:
    """``(first token, tokens in this write)``, each once its wait (the time to first token, a gap, a
    stall) has passed."""
    if profile.ttft:
        await asyncio.sleep(profile.ttft * math.exp(rng.gauss(0, 0.5)))
    for seq, n, wait in profile.bursts(rng):
        if seq:
            if profile.stall_chance and rng.random() < profile.stall_chance:
                wait += profile.stall
            await asyncio.sleep(wait)
        yield seq, n


def event(cid: str, model: str, created: int, delta: dict[str, object], finish: str | None = None) -> bytes:
    body = {
        "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
        "system_fingerprint": "fp_bench0000", "service_tier": "default",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = str(body.get("model", ""))
    messages = body.get("messages") or [{}]
    profile = Profile.from_prompt(str(messages[-1].get("content", "")))
    rng = random.Random()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())

    try:
        await response.write(event(cid, model, created, {"role": "assistant", "content": "", "refusal": None}))
        async for seq, n in paced(profile, rng):
            data = b"".join(event(cid, model, created, {"content": token(seq + i)}) for i in range(n))
            await response.write(data)
        await response.write(event(cid, model, created, {}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 5, "completion_tokens": profile.chunks, "total_tokens": 5 + profile.chunks}
            tail = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": usage}
            await response.write(b"data: " + json.dumps(tail, separators=(",", ":")).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


def responses_event(kind: str, sequence: int, **fields: object) -> bytes:
    body = {"type": kind, **fields, "sequence_number": sequence}
    return b"event: " + kind.encode() + b"\ndata: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


async def responses(request: web.Request) -> web.StreamResponse:
    """The same answer as ``completions``, as the Responses API streams it."""
    body = await request.json()
    items = body.get("input") or [{}]
    profile = Profile.from_prompt(str(items[-1].get("content", "")) if isinstance(items, list) else str(items))
    rng = random.Random()
    http = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await http.prepare(request)
    rid, mid = "resp_" + uuid.uuid4().hex[:24], "msg_" + uuid.uuid4().hex[:24]
    response = {"id": rid, "object": "response", "created_at": int(time.time()), "status": "in_progress",
                "model": str(body.get("model", "")), "output": [], "parallel_tool_calls": True, "tool_choice": "auto",
                "tools": [], "usage": None, "error": None, "incomplete_details": None, "store": False}
    sequence = iter(range(1 << 30))
    item = {"id": mid, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    text: list[str] = []
    try:
        await http.write(responses_event("response.created", next(sequence), response=response)
                         + responses_event("response.in_progress", next(sequence), response=response)
                         + responses_event("response.output_item.added", next(sequence), output_index=0, item=item)
                         + responses_event("response.content_part.added", next(sequence), item_id=mid, output_index=0,
                                           content_index=0, part=part))
        async for seq, n in paced(profile, rng):
            tokens = [token(seq + i) for i in range(n)]
            text += tokens
            await http.write(b"".join(
                responses_event("response.output_text.delta", next(sequence), item_id=mid, output_index=0,
                                content_index=0, delta=piece, logprobs=[]) for piece in tokens))
        done_part = {**part, "text": "".join(text)}
        done_item = {**item, "status": "completed", "content": [done_part]}
        usage = {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": profile.chunks,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 5 + profile.chunks}
        await http.write(
            responses_event("response.output_text.done", next(sequence), item_id=mid, output_index=0, content_index=0,
                            text=done_part["text"], logprobs=[])
            + responses_event("response.content_part.done", next(sequence), item_id=mid, output_index=0,
                              content_index=0, part=done_part)
            + responses_event("response.output_item.done", next(sequence), output_index=0, item=done_item)
            + responses_event("response.completed", next(sequence), response={
                **response, "status": "completed", "output": [done_item], "usage": usage}))
        await http.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return http


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/v1/responses", responses)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
