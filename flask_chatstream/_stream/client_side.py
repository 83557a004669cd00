"""The client's end of one response, for the live stream (``Relay``) and a resume (``Replay``) alike.

It knows the client's socket (the watchdog polls it), the server's WSGI ``write()`` once the
response has started, and when the client was last written to. Each watchdog tick asks it what the
client's side says: a write blocked past ``send_timeout`` (the client stopped reading), a hang-up,
or a half-close. A half-closed client may have left or may only be done sending (``nc -N``, some
proxies); only a write can tell, so it writes something harmless (a heartbeat) and looks again a
tick later: to a client that is gone the write draws a reset, which the next poll shows as a hang-up.

Writes from the watchdog (heartbeats, probes) and the body's own chunks never interleave: the body
holds ``writing`` while the server writes a chunk, and a heartbeat only goes out when it can take
it at once.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable

from .._chat import StopReason
from .._gevent import poll_now
from .._sockets import fileno_of, shutdown
from .._watchdog import HALF_CLOSED, HUNG_UP

CLIENT_STALLED = StopReason.CLIENT_STALLED
CLIENT_LEFT = StopReason.CLIENT_LEFT
START_RESPONSE = "start"
"""Half-closed before the response started: start it, and its head is the probe."""
PROBING = "probing"
"""Half-closed: a probe is out, or the client is known to be listening still; nothing more this tick."""


class ClientSide:
    """One response's client: its socket, the server's ``write()``, and when it was written to."""

    def __init__(self, client: socket.socket | None, *, ping: bytes, heartbeat: float, send_timeout: float,
                 probe: bool = True) -> None:
        self.fd = fileno_of(client)
        self._socket = client if self.fd is not None else None
        self.ping = ping
        self.heartbeat = heartbeat if ping else 0.0
        self._send_timeout = send_timeout
        self._probe = probe
        """Write to a half-closed client to find out whether it left. A body that writes its own
        heartbeats (a resume) needs none: those writes are the probe."""
        self.write: Callable[[bytes], object] | None = None
        """The server's WSGI ``write()``, once the response has started."""
        self.open = True
        """False once the stream has let go of the client: nothing more is written from outside the body."""
        self.writing = threading.Lock()
        """Held while the server writes one of the body's chunks."""
        self.last_sent = self._last_tick = time.monotonic()
        self.sending_since: float | None = None
        self.wrote = False
        """Has a chunk of the body gone out?"""
        self._half_closed_at: float | None = None
        self._still_listening = False

    def sending(self) -> None:
        """A chunk of the body goes to the server now (call with ``writing`` held): how long its write
        blocks is the send timeout's business."""
        self.sending_since = time.monotonic()

    def sent(self) -> None:
        """The server has written the chunk."""
        self.last_sent = time.monotonic()
        self.sending_since = None
        self.wrote = True

    def look(self, now: float, events: int) -> str | None:
        """What the client's side says on this tick: ``CLIENT_STALLED``, ``CLIENT_LEFT``, ``START_RESPONSE``,
        ``PROBING``, or
        None (nothing; the stream's own checks and a heartbeat may follow)."""
        previous, self._last_tick = self._last_tick, now
        if self.sending_since is not None and now - self.sending_since > self._send_timeout:
            return CLIENT_STALLED
        if events & HUNG_UP:
            return CLIENT_LEFT
        if events & HALF_CLOSED and self._probe and not self._still_listening:
            return self._half_closed(now, previous)
        return None

    def _half_closed(self, now: float, previous: float) -> str | None:
        since = self._half_closed_at
        if since is None:
            since = self._half_closed_at = now
        if since < self.last_sent <= previous:
            self._still_listening = True  # a write went out a tick ago and drew no reset
        elif self.write is None:
            return START_RESPONSE
        elif self.ping:
            self.beat(now)
        elif self.last_sent < since and self.wrote:
            # text/plain, silent since the client shut its side: nothing harmless to write, so it
            # counts as gone, and the answer is cut, never ended as if complete.
            return CLIENT_LEFT
        return PROBING

    def beat(self, now: float) -> bool:
        """Write a heartbeat, unless the body is writing (activity enough) or the client cannot take it
        now. Returns whether it went out."""
        if not self.writing.acquire(blocking=False):
            return False
        try:
            write = self.write
            if not self.open or write is None or self.fd is None:
                return False
            if not poll_now(self.fd, select.POLLOUT) & select.POLLOUT:
                return False
            write(self.ping)
            self.last_sent = now
            return True
        except OSError:
            return False  # the client is gone; the next tick sees its hang-up
        finally:
            self.writing.release()

    def due(self, now: float) -> bool:
        """Is a heartbeat due?"""
        return bool(self.heartbeat) and now - self.last_sent >= self.heartbeat

    def cut(self) -> None:
        """Shut the client's socket: a write blocked on a client that stopped reading returns."""
        if self._socket is not None:
            shutdown(self._socket)

    def let_go(self) -> None:
        """The stream is done with the client (call with ``writing`` held): no more writes from outside."""
        self.open = False
        self.fd = None
        self.write = None
