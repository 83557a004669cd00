"""The watchdog loop, and what it may and may not do to a stream: real relays over the stand-in."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import pytest

from flask_chatstream._chat import ChatRequest, StopReason
from flask_chatstream._config import Settings
from flask_chatstream._stream.relay import Relay
from flask_chatstream._watchdog import Watchdog
from flask_chatstream._upstream.client import Upstream
from flask_chatstream._wire.encoders import NDJSON
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY

CHAT = ChatRequest(messages=[{"role": "user", "content": "hi"}], model="m", max_tokens=10)


class Ticked:
    def __init__(self, fail: bool = False) -> None:
        self.client_fd = None
        self.fail = fail
        self.ticks = 0

    def tick(self, now: float, client_events: int) -> None:
        self.ticks += 1
        if self.fail:
            raise RuntimeError("a bug in one stream's check")


def test_one_streams_failure_does_not_skip_the_others(caplog: pytest.LogCaptureFixture) -> None:
    watchdog = Watchdog()
    broken, healthy = Ticked(fail=True), Ticked()
    watchdog._streams = {broken: None, healthy: None}
    watchdog.tick()
    watchdog.tick()
    assert (broken.ticks, healthy.ticks) == (2, 2)
    assert "checking one stream failed" in caplog.text


@pytest.fixture
def relay(upstream: StandInServer) -> Iterator[tuple[Relay, list[bytes]]]:
    settings = Settings(api_key=API_KEY, base_url=upstream.url, max_retries=0, heartbeat=1.0, read_timeout=5.0)
    stream = Upstream(settings).open(CHAT)
    relay = Relay(stream, NDJSON, settings)
    written: list[bytes] = []
    relay.write = written.append
    yield relay, written
    relay.close()


def test_no_heartbeat_after_the_body_ended(relay: tuple[Relay, list[bytes]], upstream: StandInServer) -> None:
    body, written = relay
    a, b = socket.socketpair()  # a client socket that can always take a ping
    body.client_fd = a.fileno()
    b"".join(body)
    body.tick(time.monotonic() + 60, 0)  # long after a heartbeat was due
    assert written == []
    a.close()
    b.close()


def test_a_stop_after_close_touches_nothing(relay: tuple[Relay, list[bytes]], upstream: StandInServer) -> None:
    """Once a stream is closed, its descriptors' numbers belong to whatever connection the worker opens
    next: a tick or a stop that comes late must not shut them. Forced here (``dup2``): the upstream's and
    the client's old numbers are live sockets when the late tick and stop come."""
    body, _ = relay
    upstream.script = Script(reply="a b c")
    client, _peer = socket.socketpair()
    body.client_fd = client.fileno()
    numbers = [body.stream._socket.fileno(), client.fileno()]
    pairs = [socket.socketpair() for _ in numbers]  # made first: they must not get the old numbers themselves
    body.close()
    client.close()
    reused = []
    for number, (a, _b) in zip(numbers, pairs):
        os.dup2(a.fileno(), number)  # the new connection has the old number
        reused.append(socket.socket(fileno=number))
    body.tick(time.monotonic() + 600, 0)  # read timeout long past
    body.stop(StopReason.CLIENT_LEFT)
    assert body.stop_reason is None and body.stream.stopped is None
    for sock, (a, b) in zip(reused, pairs):
        sock.sendall(b"still here")
        assert b.recv(100) == b"still here"
        b.sendall(b"and here")
        assert sock.recv(100) == b"and here"
        for each in (sock, a, b):
            each.close()
    _peer.close()


def test_a_silent_upstream_is_stopped_at_the_read_timeout(upstream: StandInServer) -> None:
    upstream.script = Script(reply="never", first_delay=3600)
    settings = Settings(api_key=API_KEY, base_url=upstream.url, max_retries=0, read_timeout=5.0)
    relay = Relay(Upstream(settings).open(CHAT), NDJSON, settings)
    relay.tick(time.monotonic() + 1, 0)
    assert relay.stop_reason is None
    relay.tick(time.monotonic() + 6, 0)
    assert relay.stop_reason == "timeout"
    body = b"".join(relay)
    assert b'"code":"upstream_timeout"' in body
    assert upstream.wait_for(lambda s: s.open == 0).cancelled == 1
