"""An asyncio load generator that opens many streams at once and watches each one read by read.

Tools that read whole bodies cannot see gaps; this one records, per stream, the time to first byte,
every gap between reads, the total time, the latency each token picked up on the way (from the
send time the bench upstream writes into it), and whether all tokens arrived, in order.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field

import aiohttp

TOKEN = re.compile(r"(\d+)@(\d+\.\d+)\|")


@dataclass
class StreamResult:
    ok: bool = False
    error: str = ""
    ttfb: float = 0.0
    total: float = 0.0
    tokens: int = 0
    gaps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


async def one_stream(session: aiohttp.ClientSession, url: str, prompt: str, expected: int) -> StreamResult:
    result = StreamResult()
    started = time.monotonic()
    last = started
    buffer = ""
    seq = 0
    try:
        async with session.post(url, json={"content": prompt}) as response:
            if response.status != 200:
                result.error = f"status {response.status}"
                return result
            async for data in response.content.iter_any():
                now = time.monotonic()
                wall = time.time()
                if result.ttfb == 0.0:
                    result.ttfb = now - started
                else:
                    result.gaps.append(now - last)
                last = now
                buffer += data.decode()
                end = buffer.rfind("|") + 1
                for match in TOKEN.finditer(buffer, 0, end):
                    if int(match.group(1)) != seq:
                        result.error = f"token {match.group(1)} where {seq} was due"
                        return result
                    seq += 1
                    result.latencies.append(wall - float(match.group(2)))
                buffer = buffer[end:]
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        result.error = type(exc).__name__
        return result
    result.total = time.monotonic() - started
    result.tokens = seq
    result.ok = seq == expected and not buffer
    if not result.ok:
        result.error = f"{seq} of {expected} tokens"
    return result


async def run_streams(url: str, prompt: str, expected: int, *, streams: int, concurrency: int | None = None,
                      ramp: float = 0.0) -> list[StreamResult]:
    """Run ``streams`` streams, at most ``concurrency`` at once, starts spread over ``ramp`` seconds."""
    limit = asyncio.Semaphore(concurrency or streams)
    timeout = aiohttp.ClientTimeout(total=600, sock_read=120)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def run(delay: float) -> StreamResult:
            await asyncio.sleep(delay)
            async with limit:
                return await one_stream(session, url, prompt, expected)

        delays = sorted(random.uniform(0, ramp) for _ in range(streams)) if ramp else [0.0] * streams
        return await asyncio.gather(*[run(d) for d in delays])
