"""The silence before the first token: a real provider sends its response head at once, then a reasoning
model may think for a minute before its first chunk. A client that leaves in that silence is noticed
then, in every format and on both upstream APIs, and its model call is closed: not when the first
chunk comes, nor when ``first_event_wait`` runs out. Under gunicorn with a gevent worker, 200 clients
at once."""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator

import pytest

from flask_chatstream.testing import Script, StandInServer

from .servers import Gunicorn, STOP_ON_LEAVE, stand_in_env

pytestmark = pytest.mark.server

CLIENTS = 200


@pytest.fixture(scope="module", params=["chat", "responses"])
def server(_standin: StandInServer, request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    # Nothing else may end these streams within the test's bound: not the read timeout, and not the end
    # of first_event_wait (after which the response starts, and its head would find the client gone).
    env = {**STOP_ON_LEAVE, **stand_in_env(_standin.url, api=request.param, read_timeout="3600",
                                           first_event_wait="3600")}
    with Gunicorn("tests.resume_app:app", env=env) as gunicorn:
        yield gunicorn


def ask(port: int, fmt: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"content": "think hard"}).encode()
    sock.sendall(f"POST /api/chat?format={fmt} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def heard(clients: list[socket.socket]) -> str:
    """What the clients have been sent so far, counted by its first line: why a barrier was not met."""
    firsts: Counter[bytes] = Counter()
    for sock in clients:
        sock.setblocking(False)
        try:
            firsts[sock.recv(65536)[:120]] += 1
        except BlockingIOError:
            firsts[b"(nothing yet)"] += 1
        except OSError as exc:
            firsts[repr(exc).encode()] += 1
    return f"the clients heard {dict(firsts)}"


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse", "ui", "agui"])
def test_clients_that_leave_while_the_model_thinks_stop_it(server: Gunicorn, upstream: StandInServer,
                                                           fmt: str) -> None:
    """Every head is out and the model is silent (its first chunk would come in an hour); the clients
    leave; every model call is closed, none finished: the relay watched the clients in the silence."""
    upstream.script = Script(reply="never sent", first_delay=3600)
    clients = [ask(server.port, fmt) for _ in range(CLIENTS)]
    try:
        # a barrier: every model call is thinking
        server.barrier(upstream, lambda stats: stats.open == CLIENTS, explain=lambda: heard(clients))
    finally:
        for sock in clients:
            sock.close()
    stats = server.barrier(upstream, lambda stats: stats.open == 0)
    assert (stats.opened, stats.cancelled, stats.finished) == (CLIENTS, CLIENTS, 0)
