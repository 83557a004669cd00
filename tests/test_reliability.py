"""Long silences, departures and stalls, against gunicorn + gevent: heartbeats, clients who leave (or
only half-close) while the model is silent, clients who stop reading, and graceful shutdown.

Nothing here leans on a clock: the stand-in holds a stream at a gate until the test has seen what
it waits for (pings, say), and timeouts only bound how long a broken server may take to fail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, eventually
from .servers import ROOT, STOP_ON_LEAVE, Gunicorn, stand_in_env
from .streams import answer_of, check_event_stream, events_of, post_chat, read_until, send_chat_raw

pytestmark = pytest.mark.server

SILENT = Script(reply="late answer", first_delay=3600)  # a reasoning model thinking
PINGS = {"ndjson": b'{"type":"ping"}\n', "sse": b": ping\n\n"}
REPLY = "one two three four five six seven eight"


def silence_env(url: str, api: str = "chat") -> dict[str, str]:
    return {**STOP_ON_LEAVE, **stand_in_env(url, heartbeat="0.3", first_event_wait="0.2", api=api),
            "WORKER_CONNECTIONS": "4000"}


@pytest.fixture(scope="module")
def server(_standin: StandInServer) -> Iterator[Gunicorn]:
    with Gunicorn(env=silence_env(_standin.url)) as gunicorn:
        yield gunicorn


@pytest.fixture(scope="module", params=["chat", "responses"])
def each_api(_standin: StandInServer, request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    """The same server on each upstream API in turn, for what both APIs' streams must do alike."""
    with Gunicorn(env=silence_env(_standin.url, request.param)) as gunicorn:
        yield gunicorn


def read_pings(response: object, ping: bytes, count: int) -> bytes:
    """Read until ``count`` pings have arrived."""
    received = b""
    while received.count(ping) < count:
        piece = response.read1(65536)  # type: ignore[attr-defined]
        assert piece, f"the stream ended before {count} pings: {received!r}"
        received += piece
    return received


@pytest.mark.parametrize("fmt", ["ndjson", "sse"])
@pytest.mark.parametrize("comments", [False, True], ids=["silent", "upstream-comments"])
def test_heartbeats_while_the_model_is_silent(each_api: Gunicorn, upstream: StandInServer, fmt: str,
                                              comments: bool) -> None:
    """Pings measure silence towards the client: upstream SSE comments (": OPENROUTER PROCESSING")
    reach the relay but not the client, so they must not hold the pings back."""
    upstream.script = Script(reply="after the wait", hold_after=0, comment_every=0.05 if comments else None)
    conn, response = post_chat(each_api.port, fmt, {"content": "think hard"}, timeout=30)
    head = read_pings(response, PINGS[fmt], 3)
    assert b"after" not in head and b"PROCESSING" not in head
    upstream.release()
    body = head + response.read()
    conn.close()
    events = events_of(fmt, body)
    assert answer_of(events) == "after the wait" and check_event_stream(events)["type"] == "done"
    # SSE pings are comments, not events; NDJSON pings are events the client skips
    assert [e["type"] for e in events if e["type"] == "ping"] == (["ping"] * 3 if fmt == "ndjson" else [])


def test_no_heartbeats_in_text(server: Gunicorn, upstream: StandInServer) -> None:
    upstream.script = Script(reply="plain", hold_after=0)
    text_conn, text = post_chat(server.port, "text", {"content": "think hard"}, timeout=30)
    # An NDJSON stream beside it, held the same way, shows that heartbeats were due meanwhile.
    conn, events = post_chat(server.port, "ndjson", {"content": "think hard"}, timeout=30)
    read_pings(events, PINGS["ndjson"], 2)
    upstream.release()
    assert text.read() == b"plain"
    conn.close()
    text_conn.close()


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse", "ui", "agui"])
def test_client_leaving_during_silence_closes_the_upstream(each_api: Gunicorn, upstream: StandInServer,
                                                            fmt: str) -> None:
    upstream.script = SILENT
    sock = send_chat_raw(each_api.port, fmt)
    upstream.wait_for(lambda s: s.open == 1)
    left = time.monotonic()
    sock.close()
    stats = upstream.wait_for(lambda s: s.open == 0)
    print(f"\n{fmt}: upstream closed {time.monotonic() - left:.2f}s after the client left")
    assert (stats.cancelled, stats.finished) == (1, 0)


def half_closed_request(port: int, fmt: str) -> socket.socket:
    """A client that shuts its sending side once the request is out (``nc -N``), and goes on reading."""
    sock = send_chat_raw(port, fmt)
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(30)
    return sock


LEFT_BEFORE_HEAD = "the client left before the model answered"
HELD_HEAD = Script(reply="late answer", header_delay=3600)  # a gateway holding the head until the first token


def leave_while_the_head_is_held(server: Gunicorn, upstream: StandInServer, fmt: str, count: int,
                                 how: str = "close") -> None:
    """``count`` clients send a chat, all wait for a head the upstream holds back (a count, not a
    clock), then all leave; each upstream request must see its caller hang up."""
    upstream.script = HELD_HEAD
    upstream.reset()
    socks = [send_chat_raw(server.port, fmt) for _ in range(count)]
    upstream.wait_for(lambda s: s.waiting == count)
    left = time.monotonic()
    for sock in socks:
        if how == "half-close":
            sock.shutdown(socket.SHUT_WR)  # gone as far as anyone can tell before the response starts
        else:
            sock.close()
    stats = upstream.wait_for(lambda s: s.waiting == 0, timeout=60)
    print(f"\n{count} clients left during a held head ({fmt}, {how}): every upstream request closed "
          f"{time.monotonic() - left:.2f}s after they left")
    assert (stats.left_waiting, stats.opened) == (count, 0)
    for sock in socks:
        sock.close()


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse", "ui", "agui"])
def test_clients_that_leave_before_the_head_close_their_upstream_requests(server: Gunicorn, upstream: StandInServer,
                                                                          fmt: str) -> None:
    before = server.log().count(LEFT_BEFORE_HEAD)
    leave_while_the_head_is_held(server, upstream, fmt, 200)
    eventually(lambda: server.log().count(LEFT_BEFORE_HEAD) - before, lambda lines: lines == 200)


def test_a_client_that_half_closes_before_the_head_counts_as_gone(server: Gunicorn, upstream: StandInServer) -> None:
    leave_while_the_head_is_held(server, upstream, "ndjson", 5, how="half-close")


def test_clients_of_a_custom_client_that_leave_before_the_head_close_their_requests(
        _standin: StandInServer, upstream: StandInServer) -> None:
    """httpx's socket is out of reach until the head is in: under gevent the wait is interrupted."""
    env = {**STOP_ON_LEAVE, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url}
    with Gunicorn("tests.custom_client_app:app", env=env) as server:
        leave_while_the_head_is_held(server, upstream, "sse", 50)
        upstream.script = Script(reply="still fine")
        conn, response = post_chat(server.port, "text", timeout=30)
        assert (response.status, response.read()) == (200, b"still fine")  # the pool was left clean
        conn.close()
    assert "Traceback" not in server.log()


def read_all(sock: socket.socket) -> bytes:
    received = b""
    while piece := sock.recv(65536):
        received += piece
    sock.close()
    return received


def dechunk(raw: bytes) -> tuple[bytes, bool]:
    """The body of a chunked HTTP response, and whether it ended with the terminator."""
    body = raw.partition(b"\r\n\r\n")[2]
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out, True
        out += rest[:size]
        body = rest[size + 2:]
    return out, False


@pytest.mark.parametrize("fmt", ["ndjson", "sse"])
def test_a_half_closed_client_gets_the_whole_answer_through_silence(server: Gunicorn, upstream: StandInServer,
                                                                   fmt: str) -> None:
    upstream.script = Script(reply=REPLY, hold_after=2)
    sock = send_chat_raw(server.port, fmt)
    sock.settimeout(30)
    received = b""
    while b"\r\n\r\n" not in received:  # the response has begun: before it, a half-close counts as gone
        received += sock.recv(65536)
    sock.shutdown(socket.SHUT_WR)
    while received.count(PINGS[fmt]) < 3:  # silent, half-closed, and ticks went by: still streaming
        piece = sock.recv(65536)
        assert piece, received
        received += piece
    upstream.release()
    body, terminated = dechunk(received + read_all(sock))
    events = events_of(fmt, body.replace(PINGS[fmt], b"") if fmt == "ndjson" else body)
    assert terminated and answer_of(events) == REPLY and check_event_stream(events)["type"] == "done"


def test_a_half_closed_text_client_gets_the_whole_answer(server: Gunicorn, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY)
    body, terminated = dechunk(read_all(half_closed_request(server.port, "text")))
    assert (body.decode(), terminated) == (REPLY, True)


def test_text_cut_for_a_half_closed_client_in_silence_never_looks_complete(server: Gunicorn,
                                                                        upstream: StandInServer) -> None:
    """text/plain cannot probe a silent half-closed client, so it counts as gone: the answer is cut
    without the chunked terminator, never ended as if whole."""
    upstream.script = Script(reply=REPLY, hold_after=2)
    sock = send_chat_raw(server.port, "text")
    sock.settimeout(30)
    received = b""
    while b"two" not in received:
        received += sock.recv(65536)
    sock.shutdown(socket.SHUT_WR)
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)
    body, terminated = dechunk(received + read_all(sock))
    assert (body, terminated) == (b"one two", False)


def worker_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def worker_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def arrive_and_leave(server: Gunicorn, upstream: StandInServer, fmt: str, count: int) -> float:
    """``count`` clients (tests/leavers.py, a process of their own) send a chat each; once every one has
    reached the model (a barrier), all leave at once. When they left."""
    leavers = subprocess.Popen([sys.executable, "-m", "tests.leavers", str(server.port), f"/api/chat?format={fmt}",
                                str(count)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # a barrier: the bound is for a broken (or a very busy) machine
        while (stats := upstream.stats).open < count:
            if time.monotonic() > deadline or leavers.poll() is not None:
                raise AssertionError(f"{stats.open} of {count} streams reached the model (the clients' process "
                                     f"{'ended' if leavers.poll() is not None else 'runs'}); the server's log ends: "
                                     f"{server.log()[-2500:]}")
            time.sleep(0.05)
        assert leavers.stdin is not None and leavers.stdout is not None
        left = time.monotonic()  # taken before they go
        leavers.stdin.write("\n")
        leavers.stdin.flush()
        assert leavers.wait(60) == 0 and leavers.stdout.read().split() == ["sent", "left"]
        return left
    finally:
        if leavers.poll() is None:
            leavers.kill()
            leavers.wait()


def settled_fds(pid: int, idle: int, timeout: float = 30.0) -> int:
    """The worker's descriptor count once it has finished closing sockets (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while worker_fds(pid) > idle and time.monotonic() < deadline:
        time.sleep(0.05)
    return worker_fds(pid)


@pytest.mark.timeout(600)  # 40 s on a quiet machine; 10,000 streams through the threaded stand-in take
# past the default 120 s on a busy one (as in CI beside a benchmark). The bound is for a broken build.
def test_a_thousand_clients_leave_during_silence_ten_times(server: Gunicorn, upstream: StandInServer) -> None:
    # One stream first: a worker's first stream opens what it keeps for good (the shared state's
    # database connections), which is no leak.
    conn, response = post_chat(server.port, "text", timeout=30)
    assert response.status == 200 and response.read()
    conn.close()
    upstream.wait_for(lambda s: s.open == 0)
    upstream.script = SILENT
    worker = server.worker_pids()[0]
    idle = settled_fds(worker, 0, timeout=1.0)  # once the first stream's sockets are closed
    fds, rss, detect = [], [], []
    for round_ in range(10):
        fmt = ["text", "ndjson", "sse"][round_ % 3]
        upstream.reset()
        left = arrive_and_leave(server, upstream, fmt, 1000)
        stats = server.barrier(upstream, lambda s: s.open == 0)  # every upstream closed
        detect.append(time.monotonic() - left)
        assert (stats.opened, stats.cancelled, stats.finished) == (1000, 1000, 0)
        fds.append(settled_fds(worker, idle))
        rss.append(worker_rss_kb(worker))
    print(f"\n1000 clients x 10 rounds: all upstreams closed within {max(detect):.2f}s "
          f"(median {sorted(detect)[5]:.2f}s); worker fds idle {idle}, after each round {fds}; "
          f"RSS MB {[r // 1024 for r in rss]}")
    assert server.worker_pids() == [worker]
    assert len(set(fds)) == 1 and fds[0] <= idle, fds  # every socket of every round was released
    assert max(rss[2:]) <= rss[1] + 16 * 1024, rss  # no growth once the first rounds warmed the pools


def test_a_client_that_stops_reading_is_cut_at_the_send_timeout(_standin: StandInServer,
                                                                upstream: StandInServer) -> None:
    env = {**STOP_ON_LEAVE, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "CHATSTREAM_MAX_RETRIES": "0",
           "CHATSTREAM_SEND_TIMEOUT": "1", "CHATSTREAM_MAX_STREAMS_PER_CLIENT": "1"}
    # 12 MB of answer, more than the socket buffers between the relay and a client that reads nothing;
    # and held at a gate before its end, so the upstream can only end by being stopped, however much
    # of it the buffers take (under CPU load they took all of it before the send timeout was seen).
    upstream.script = Script(reply="lorem " * 2_000_000, chunks=1200, hold_after=1199)
    with Gunicorn(env=env) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        body = b'{"content": "talk a lot"}'
        sock.sendall(b"POST /api/chat?format=text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        upstream.wait_for(lambda s: s.opened == 1)
        stats = upstream.wait_for(lambda s: s.open == 0, timeout=60)
        assert (stats.opened, stats.cancelled, stats.finished) == (1, 1, 0)
        # the slot was released: the same client may stream again
        upstream.script = Script(reply="again")
        conn, response = post_chat(server.port, "text", timeout=30)
        assert (response.status, response.read()) == (200, b"again")
        conn.close()
        sock.close()
        log = server.wait_for_log("outcome=client_stalled")
    assert "Traceback" not in log


def test_graceful_shutdown(_standin: StandInServer, upstream: StandInServer) -> None:
    env = {**STOP_ON_LEAVE, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "GRACEFUL_TIMEOUT": "30"}
    reply = " ".join(f"word{i}" for i in range(25))
    upstream.script = Script(reply=reply, hold_after=3)  # in flight until the test opens the gate
    with Gunicorn(env=env) as server:
        conn, response = post_chat(server.port, "text", {"content": "think hard"}, timeout=30)
        first = read_until(response, b"word2")
        server.process.send_signal(signal.SIGTERM)
        # from now on new connections are refused, while the stream goes on
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "still accepting connections 30 s after SIGTERM"
            time.sleep(0.1)
        assert upstream.stats.open == 1  # refused while the stream is still in flight
        upstream.release()
        rest = response.read()  # which finishes whole
        conn.close()
        assert (first + rest).decode() == reply
        assert server.process.wait(timeout=30) == 0
    assert upstream.wait_for(lambda s: s.open == 0).finished == 1
