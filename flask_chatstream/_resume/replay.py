"""Reading a resumable stream again: the body of ``GET <prefix>/chat/<stream_id>``.

The view has decided everything that can fail before the first byte (the stream exists, the
client may read it, the events asked for are still kept). The replay then sends the kept events
after ``after``, follows the live ones to the terminal event, and ends the way the live stream
would have: ``done``, an ``error`` event, or for text/plain a cut connection on an error. Heartbeats
go out, from the body itself, while it waits; the watchdog asks the client's side (``ClientSide``,
as for the live stream) whether its client left or stopped reading. The body's own heartbeats are
what finds out about a half-closed client: one that left answers a write with a reset.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Generator, Iterator

import orjson

from .._errors import ChatStreamError, ResumeUnavailable, StreamAborted, StreamEnded, StreamTruncated
from .._stream.client_side import CLIENT_LEFT, CLIENT_STALLED, ClientSide
from .._watchdog import WATCHDOG
from .._wire.encoders import Format
from .._wire.events import Event, error_event
from .journal import TERMINAL, Journal, Unavailable

READ_WAIT = 1.0
"""Longest one read of the journal waits, so a replay notices its client left within about this."""


class Replay:
    """The body of a resume: an iterable the server writes out and then closes."""

    def __init__(self, journal: Journal, stream_id: str, after: int, fmt: Format, *, heartbeat: float,
                 send_timeout: float, client: socket.socket | None,
                 on_close: Callable[[], object] | None = None) -> None:
        self._journal = journal
        self._id = stream_id
        self._after = after
        self._fmt = fmt
        self._encoder = fmt.encoder()
        self.client = ClientSide(client, ping=fmt.ping, heartbeat=heartbeat, send_timeout=send_timeout, probe=False)
        self.gone = False
        self._on_close = on_close
        """Gives back the reader's slots, once."""
        self._body = self._run()

    def __iter__(self) -> Iterator[bytes]:
        return self._body

    @property
    def client_fd(self) -> int | None:
        return self.client.fd

    def close(self) -> None:
        self._body.close()
        self._let_go()  # also where the server never started the body

    def _let_go(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def _run(self) -> Generator[bytes, None, None]:
        WATCHDOG.watch(self)
        try:
            with self._journal.attach(self._id):
                yield from self._send(b"")  # the status line and headers go out now
                last = self._after
                while not self.gone:
                    try:
                        batch = self._journal.read(self._id, last, READ_WAIT)
                    except Unavailable:
                        yield from self._end(ResumeUnavailable())
                        return
                    events: list[Event] = [orjson.loads(data) for data in batch.events]
                    if events and events[0].get("seq") != last + 1:
                        yield from self._end(StreamTruncated(
                            "The stream outran this reader: its next events are no longer kept."))
                        return
                    if events:
                        final = events[-1]
                        last = final["seq"]
                        yield from self._send(self._encoder(events))
                        if final["type"] in TERMINAL:
                            if final["type"] == "error" and not self._fmt.in_band_errors:
                                raise StreamAborted(final["error"]["code"])
                            return
                    elif batch.lost:
                        yield from self._end(StreamEnded("stream_lost"))
                        return
                    elif self.client.due(time.monotonic()):
                        yield from self._send(self._fmt.ping)
        finally:
            WATCHDOG.forget(self)
            self._let_go()

    def _send(self, data: bytes) -> Generator[bytes, None, None]:
        self.client.sending()  # (nothing else writes to a replay's client: no lock to take)
        yield data
        self.client.sent()

    def _end(self, error: ChatStreamError) -> Generator[bytes, None, None]:
        if not self._fmt.in_band_errors:
            raise StreamAborted(error)
        yield from self._send(self._encoder([error_event(error)]))

    def tick(self, now: float, client_events: int) -> None:
        """The watchdog's: the client hung up, or a write has blocked past the send timeout."""
        said = self.client.look(now, client_events)
        if said == CLIENT_LEFT:
            self.gone = True
        elif said == CLIENT_STALLED:
            self.gone = True
            self.client.cut()  # unblocks the server's write, which then closes the body
