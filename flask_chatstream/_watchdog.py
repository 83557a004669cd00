"""One background loop per process that looks after every open stream.

Five times a second it polls every stream's client socket at once, then hands each stream its
result (``Relay.tick``), which decides: the client hung up, a write has blocked for longer than the
send timeout, the upstream has been silent for longer than the read timeout, or a heartbeat is due.
Stopping means shutting the upstream socket down: the relay's blocked read wakes with an
end-of-stream and ends the answer with the right reason. Doing this here, for all streams at once,
is what lets the per-chunk path read without a timer per read (gevent starts one for every blocking
read of a socket with a timeout).

One stream's failure in a tick is logged and does not skip the others. Under gevent the loop is a
greenlet (threading is patched); elsewhere it is a daemon thread. It starts with the first stream
in each process, so it is safe with forking servers.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ._gevent import unpatched

log = logging.getLogger("flask_chatstream")

INTERVAL = 0.2

# POLLRDHUP is Linux's "peer closed its write side"; POLLHUP/POLLERR a peer that reset or is gone.
HUNG_UP = select.POLLHUP | select.POLLERR | select.POLLNVAL
HALF_CLOSED = getattr(select, "POLLRDHUP", 0)
_CLIENT_EVENTS = HALF_CLOSED | select.POLLHUP | select.POLLERR


class Watched(Protocol):
    @property
    def client_fd(self) -> int | None:
        """The client's socket to poll, if any."""

    def tick(self, now: float, client_events: int) -> None:
        """Enforce timeouts and heartbeats; called on every tick with the client socket's poll events."""


class Deadline:
    """A one-off deadline the watchdog keeps: at ``seconds`` from now, ``action`` runs once.

    For waits that cannot carry a timer of their own, such as a server reading a request body for
    the view: a per-read socket timeout never trips on a body that trickles in a byte at a time.
    """

    client_fd: int | None = None

    def __init__(self, seconds: float, action: Callable[[], None]) -> None:
        self.when = time.monotonic() + seconds
        self.action = action
        self.expired = False

    def tick(self, now: float, client_events: int) -> None:
        if not self.expired and now >= self.when:
            self.expired = True
            self.action()


class Hangup:
    """A client watched before anything has been written to it (the upstream's head is awaited):
    when it goes, ``action`` runs once.

    Before the response starts there is nothing harmless to write, so a client that shut its sending
    side counts as gone here (as Go's net/http takes it); once the response has started the relay
    probes such a client instead (``Relay._half_closed_client``)."""

    def __init__(self, client_fd: int | None, action: Callable[[], None]) -> None:
        self.client_fd = client_fd
        self.action = action
        self.gone = False

    def tick(self, now: float, client_events: int) -> None:
        if not self.gone and client_events & (HUNG_UP | HALF_CLOSED):
            self.gone = True
            self.action()


class Watchdog:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._streams: dict[Watched, None] = {}
        self._pid = -1
        self._lock = threading.Lock()

    def watch(self, stream: Watched) -> None:
        if self._pid != os.getpid():
            self._start()
        self._streams[stream] = None

    def forget(self, stream: Watched) -> None:
        self._streams.pop(stream, None)

    def watching(self) -> int:
        return len(self._streams)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._streams = {}
            threading.Thread(target=self._run, name="chatstream-watchdog", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.tick()
            except Exception:  # pragma: no cover - the loop must outlive a bug
                log.exception("watchdog tick failed")

    def tick(self) -> None:
        streams = list(self._streams)
        events: dict[int, int] = {}
        poller = _POLL()
        for stream in streams:
            if stream.client_fd is not None:
                poller.register(stream.client_fd, _CLIENT_EVENTS)
                events[stream.client_fd] = 0
        if events:
            events.update(poller.poll(0))
        now = time.monotonic()
        for stream in streams:
            try:
                stream.tick(now, events.get(stream.client_fd, 0) if stream.client_fd is not None else 0)
            except Exception:
                log.exception("watchdog: checking one stream failed; the others go on")


_POLL = unpatched("poll")
WATCHDOG = Watchdog()
