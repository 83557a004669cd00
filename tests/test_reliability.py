"""Long silences and departures, against gunicorn + gevent: heartbeats, clients who leave while the
model is silent, and graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import Gunicorn
from .streams import answer_of, events_of, post_chat, send_chat_raw

SILENT = Script(reply="late answer", first_delay=3600)  # a reasoning model thinking


@pytest.fixture(scope="module")
def server(_standin: StandInServer) -> Iterator[Gunicorn]:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "CHATSTREAM_MAX_RETRIES": "0",
           "CHATSTREAM_HEARTBEAT": "0.3", "WORKER_CONNECTIONS": "4000"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn
    assert "Traceback" not in gunicorn.log()


@pytest.mark.parametrize(("fmt", "ping"), [("ndjson", b'{"type":"ping"}\n'), ("sse", b": ping\n\n")])
def test_heartbeats_while_the_model_is_silent(server: Gunicorn, upstream: StandInServer, fmt: str,
                                              ping: bytes) -> None:
    upstream.script = Script(reply="after the wait", first_delay=1.5)
    conn, response = post_chat(server.port, fmt, {"content": "think hard"})
    body = response.read()
    conn.close()
    head, _, tail = body.partition(b"after")
    assert head.count(ping) >= 3, body  # pings during the 1.5 s of silence, before the answer
    events = events_of(fmt, body)
    assert answer_of(events) == "after the wait" and events[-1]["type"] == "done"
    assert all(e["type"] != "ping" for e in events if fmt == "sse")


def test_no_heartbeats_in_text(server: Gunicorn, upstream: StandInServer) -> None:
    upstream.script = Script(reply="plain", first_delay=1.0)
    conn, response = post_chat(server.port, "text", {"content": "think hard"})
    assert response.read() == b"plain"
    conn.close()


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_client_leaving_during_silence_closes_the_upstream(server: Gunicorn, upstream: StandInServer,
                                                            fmt: str) -> None:
    upstream.script = SILENT
    sock = send_chat_raw(server.port, fmt)
    upstream.wait_for(lambda s: s.open == 1)
    left = time.monotonic()
    sock.close()
    stats = upstream.wait_for(lambda s: s.open == 0, timeout=2)
    print(f"\n{fmt}: upstream closed {time.monotonic() - left:.2f}s after the client left")
    assert (stats.cancelled, stats.finished) == (1, 0)


def worker_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def worker_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


async def _arrive_and_leave(url: str, count: int, upstream: StandInServer) -> float:
    connector = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))

    async def one() -> None:
        async with session.post(url, json={"content": "think"}) as response:
            await response.content.read()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    while upstream.stats.open < count:
        await asyncio.sleep(0.05)
    left = time.monotonic()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()  # every client socket is closed now
    return left


def settled_fds(pid: int, idle: int, timeout: float = 5.0) -> int:
    """The worker's descriptor count once it has finished closing sockets (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while worker_fds(pid) > idle and time.monotonic() < deadline:
        time.sleep(0.05)
    return worker_fds(pid)


def test_a_thousand_clients_leave_during_silence_ten_times(server: Gunicorn, upstream: StandInServer) -> None:
    upstream.script = SILENT
    worker = server.worker_pids()[0]
    idle = worker_fds(worker)
    fds, rss, detect = [], [], []
    for round_ in range(10):
        fmt = ["text", "ndjson", "sse"][round_ % 3]
        upstream.reset()
        left = asyncio.run(_arrive_and_leave(f"{server.url}/api/chat?format={fmt}", 1000, upstream))
        stats = upstream.wait_for(lambda s: s.open == 0, timeout=2)  # every upstream closed within 2 s
        detect.append(time.monotonic() - left)
        assert (stats.opened, stats.cancelled, stats.finished) == (1000, 1000, 0)
        fds.append(settled_fds(worker, idle))
        rss.append(worker_rss_kb(worker))
    print(f"\n1000 clients x 10 rounds: all upstreams closed within {max(detect):.2f}s "
          f"(median {sorted(detect)[5]:.2f}s); worker fds idle {idle}, after each round {fds}; "
          f"RSS MB {[r // 1024 for r in rss]}")
    assert server.worker_pids() == [worker]
    assert fds == [idle] * 10  # every socket of every round was released
    assert max(rss[2:]) <= rss[1] + 16 * 1024, rss  # no growth once the first rounds warmed the pools


def test_graceful_shutdown(_standin: StandInServer, upstream: StandInServer) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "GRACEFUL_TIMEOUT": "20"}
    reply = " ".join(f"word{i}" for i in range(25))
    upstream.script = Script(reply=reply, delay=0.2)  # five seconds of answer
    with Gunicorn(env=env) as server:
        conn, response = post_chat(server.port, "text", {"content": "think hard"})
        first = response.read1(100)
        server.process.send_signal(signal.SIGTERM)
        # gevent workers notice within a second; from then on new connections are refused
        deadline = time.monotonic() + 3
        while True:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "still accepting connections 3 s after SIGTERM"
            time.sleep(0.1)
        assert upstream.stats.open == 1  # refused while the stream is still in flight
        rest = response.read()  # which finishes whole
        conn.close()
        assert (first + rest).decode() == reply
        assert server.process.wait(timeout=20) == 0
    assert upstream.wait_for(lambda s: s.open == 0).finished == 1
