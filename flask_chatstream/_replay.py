"""Reading a resumable stream again: the body of ``GET <prefix>/chat/<stream_id>``.

The view has decided everything that can fail before the first byte (the stream exists, the
client may read it, the events asked for are still kept). The replay then sends the kept events
after ``after``, follows the live ones to the terminal event, and ends the way the live stream
would have: ``done``, an ``error`` event, or for text/plain a cut connection on an error. Heartbeats
go out while it waits; the watchdog tells it when its client leaves or stops reading.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Generator, Iterator

import orjson

from ._errors import ChatStreamError, ResumeUnavailable, StreamAborted, StreamEnded, StreamTruncated
from ._events import Event, error_event
from ._formats import Format
from ._journal import TERMINAL, Journal, Unavailable
from ._transport import fileno_of, shutdown
from ._watchdog import HUNG_UP, WATCHDOG

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
        self._heartbeat = heartbeat if fmt.ping else 0.0
        self._send_timeout = send_timeout
        self.client_fd = fileno_of(client)
        self._client = client if self.client_fd is not None else None
        self.sending_since: float | None = None
        self.gone = False
        self._on_close = on_close
        """Gives back the reader's slots, once."""
        self._body = self._run()

    def __iter__(self) -> Iterator[bytes]:
        return self._body

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
                yield b""  # the status line and headers go out now
                last, last_sent = self._after, time.monotonic()
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
                        last_sent = time.monotonic()
                        if final["type"] in TERMINAL:
                            if final["type"] == "error" and not self._fmt.in_band_errors:
                                raise StreamAborted(final["error"]["code"])
                            return
                    elif batch.lost:
                        yield from self._end(StreamEnded("stream_lost"))
                        return
                    elif self._heartbeat and time.monotonic() - last_sent >= self._heartbeat:
                        yield from self._send(self._fmt.ping)
                        last_sent = time.monotonic()
        finally:
            WATCHDOG.forget(self)
            self._let_go()

    def _send(self, data: bytes) -> Generator[bytes, None, None]:
        self.sending_since = time.monotonic()
        yield data
        self.sending_since = None

    def _end(self, error: ChatStreamError) -> Generator[bytes, None, None]:
        if not self._fmt.in_band_errors:
            raise StreamAborted(error)
        yield from self._send(self._encoder([error_event(error)]))

    def tick(self, now: float, client_events: int) -> None:
        """The watchdog's: the client hung up, or a write has blocked past the send timeout."""
        if client_events & HUNG_UP:
            self.gone = True
        elif self.sending_since is not None and now - self.sending_since > self._send_timeout:
            self.gone = True
            if self._client is not None:
                shutdown(self._client)  # unblocks the server's write, which then closes the body
