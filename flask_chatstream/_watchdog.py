"""One background loop per process that looks after every open stream.

Five times a second it:
- stops streams whose upstream has been silent for longer than their read timeout;
- stops streams whose client hung up, even while the upstream is silent (a reasoning model
  thinking before its first token), which writes alone would never notice;
- sends heartbeats on streams whose client has heard nothing for a while.

"Stops" means shutting the upstream socket down: the relay's blocked read wakes with an
end-of-stream, and the relay ends the answer with the right reason. Doing this here, for all streams
at once, is what lets the per-chunk path read without a timer per read (gevent starts one for every
blocking read of a socket with a timeout, which cost a fifth of the relay's CPU per chunk).

Under gevent the loop is a greenlet (threading is patched); elsewhere it is a daemon thread. It
starts with the first stream in each process, so it is safe with forking servers.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from typing import Any, Protocol

log = logging.getLogger("flask_chatstream")

INTERVAL = 0.2

# A peer that closed or reset its end. POLLRDHUP is Linux's "peer closed its write side"; elsewhere a
# closed client shows as POLLHUP only once it resets.
_HUNG_UP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR


class Watched(Protocol):
    client_fd: int | None

    def check(self, now: float) -> None:
        """Enforce timeouts and heartbeats; called on every tick."""

    def client_left(self) -> None:
        """The client hung up."""


def unpatched(name: str) -> Any:
    """``select.<name>`` as the OS gives it, even where gevent patched it to wait cooperatively.

    For zero-timeout checks, which never block, the patched versions only add watchers, a timer
    and a hub switch.
    """
    if "gevent.monkey" in sys.modules:
        import gevent.monkey

        if gevent.monkey.is_module_patched("select"):
            return gevent.monkey.get_original("select", name)
    return getattr(select, name)


def writable(fd: int) -> bool:
    """Can ``fd`` take a small write right now, without blocking?"""
    poller = _POLL()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLOUT for _, events in poller.poll(0))


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
        clients: dict[int, Watched] = {}
        poller = _POLL()
        for stream in streams:
            if stream.client_fd is not None:
                clients[stream.client_fd] = stream
                poller.register(stream.client_fd, _HUNG_UP)
        if clients:
            for fd, events in poller.poll(0):
                if events & _HUNG_UP:
                    clients[fd].client_left()
        now = time.monotonic()
        for stream in streams:
            stream.check(now)


_POLL = unpatched("poll")
WATCHDOG = Watchdog()
