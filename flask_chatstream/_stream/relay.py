"""One stream's body once the view has opened the upstream: it is written, and let go of, here.

The relay writes what the ``Generation`` (the model's side: reads, tool turns, events, encoding)
makes of the upstream, one write per network read, and ends the response in exactly one way:
``done``, one terminal ``error`` (NDJSON, SSE) or a cut connection (text/plain), or silence when
the client has gone. The upstream is let go of on every path, including the one where the server
closes the body because the client left.

Before the response starts, the view calls ``prime``: it reads ahead until the answer's first
visible event, so an upstream failure before it is still a real HTTP status.

Its ``Life`` is a ``Phase`` (``_lifecycle``), and ``Stops`` ends it from outside (the watchdog's
tick, a stop asked for). Three things that could each be called "finishing" are named apart:
letting go (``_let_go``), reading on after the client left (``_read_on``, when ``AfterLeave``
says so), and draining a complete answer's upstream body so its connection serves the next
request (``Generation.drain``).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Generator, Iterator
from datetime import datetime, timezone

from .._chat import GONE, ChatResult, StopReason
from .._config import Settings
from .._errors import ChatStreamError, StreamAborted, StreamEnded
from .._upstream.client import UpstreamStream
from .._wire.encoders import Format
from .._wire.events import error_event
from .after_leave import AfterLeave
from .client_side import ClientSide
from .generation import Generation
from .lifecycle import Life, Phase, Stops
from .registry import STREAMS
from .spec import StreamSpec
from .spec import NO_REQUEST
from .._watchdog import WATCHDOG


class ClientGone(Exception):
    """The client left before the response started."""


class Relay:
    """One stream's body: an iterable the server writes out and then closes (PEP 3333)."""

    def __init__(self, stream: UpstreamStream, fmt: Format, settings: Settings, spec: StreamSpec = StreamSpec()) -> None:
        self.fmt = fmt
        self.id = spec.stream_id
        self.on_close = spec.on_close
        """Called once when the relay lets go of the stream: gives back the client's stream slot."""
        self.on_end = spec.on_end
        """Called once with the ``ChatResult`` after the client has its last byte (``after_stream``)."""
        self.life = Life()
        self.gen = Generation(stream, fmt, settings, spec, gone=self._gone, lock=self.life.lock)
        metadata, chat = spec.metadata, spec.chat
        if metadata is not None:  # the answer's start is known now, in the request; its end when it is done
            self.gen.marks.metadata(metadata(chat or NO_REQUEST), lambda: metadata(self.result()))
        self._recording = spec.recording
        self._leave = AfterLeave(settings, spec.recording, spec.finishing)
        self.client = ClientSide(spec.client, ping=fmt.ping, heartbeat=settings.heartbeat,
                                 send_timeout=settings.send_timeout)
        self.started_at = datetime.now(timezone.utc)
        self.started = spec.started if spec.started is not None else time.monotonic()
        """When the request started (the view's clock): durations count from here."""
        self.ended = 0.0
        self._pending = b""
        self._drain_on_close = False
        """The answer is complete and the client has it: ``close`` drains the upstream body."""
        self._delivered = False
        self._left = False
        self._stops = Stops(self.life, self.client, self.gen, self._leave, settings.read_timeout)
        self._body = self._run()
        WATCHDOG.watch(self)
        if spec.stream_id:
            STREAMS.add(spec.stream_id, self, spec.owner)

    def __iter__(self) -> Iterator[bytes]:
        return self._body

    @property
    def error(self) -> ChatStreamError | None:
        return self.gen.error

    @property
    def stream(self) -> UpstreamStream:
        """The model call being read."""
        return self.gen.stream

    @property
    def stop_reason(self) -> str | None:
        return self.life.stop_reason

    @property
    def client_fd(self) -> int | None:
        """The client's socket, for the watchdog to poll."""
        return self.client.fd

    @client_fd.setter
    def client_fd(self, fd: int | None) -> None:
        self.client.fd = fd

    @property
    def write(self) -> Callable[[bytes], object] | None:
        """The server's WSGI write(), set by the response when the server starts it."""
        return self.client.write

    @write.setter
    def write(self, write: Callable[[bytes], object] | None) -> None:
        self.client.write = write

    # -- before the response starts --------------------------------------------------------------

    def prime(self, wait: float) -> None:
        """Read ahead until the answer's first visible event, its end, or ``wait`` seconds.

        Raises the ``ChatStreamError`` that ended the stream before anything visible, or
        ``ClientGone``; the relay has let go of the stream then, and ``close`` (once the error
        response is out) hands its result to ``on_end``.
        """
        gen = self.gen
        self._pending = gen.read_ahead(wait, self._ended)
        if self.life.stop_reason in GONE:
            self._let_go()
            raise ClientGone()
        if gen.error is not None and not gen.visible:
            self._let_go()
            raise gen.error

    # -- the body --------------------------------------------------------------------------------

    def _run(self) -> Generator[bytes, None, None]:
        gen, answer, life, client = self.gen, self.gen.answer, self.life, self.client
        try:
            # The first write goes out even when empty: the server sends the status line and
            # headers with it, so the client knows its answer has started.
            out, self._pending = self._pending, b""
            first = True
            while True:
                if out or first:
                    first = False
                    with client.writing:  # (plain calls: a context manager per chunk costs more)
                        client.sending()
                        yield out
                    client.sent()
                if gen.held is not None and life.stop_reason not in GONE:
                    out = gen.release_held()  # the end metadata's hook, after the text it ends
                    continue
                if answer.finished or gen.error is not None or life.stop_reason in GONE:
                    break
                out = gen.step()
            if self.life.stop_reason == StopReason.STOPPED and self.fmt.says_stopped:
                with self.client.writing:  # a reader that is still there (the stop came from elsewhere)
                    yield gen.encode_error(StreamEnded(StopReason.STOPPED), record=False)
                return
            if self.life.stop_reason in GONE:
                # Nobody is listening, or a client that only half-closed: either way no terminator,
                # so a cut answer never looks complete.
                raise StreamAborted(self.life.stop_reason)
            if gen.error is not None:
                if not self.fmt.in_band_errors:
                    self._delivered = True  # the cut is how text says it
                    raise StreamAborted(gen.error)
                with self.client.writing:
                    yield gen.encode_error(gen.error)
            self._delivered = True
        except GeneratorExit:
            self._left = True  # the server closed the body early: a write to the client failed
            raise
        finally:
            self._let_go()

    def _ended(self) -> bool:
        return self.gen.over or self.life.stop_reason in GONE

    def _gone(self) -> bool:
        """The client left (and the answer is not being finished for it), or stopped the stream."""
        return (self.life.stop_reason == StopReason.STOPPED or self._leave.abandoned
                or (self.life.stop_reason in GONE and not self.life.read_on_after_leave))

    # -- letting go ------------------------------------------------------------------------------

    def close(self) -> None:
        """The server is done with the body, perhaps because the client left: stop the upstream.

        After a complete answer the client already has its last byte, so this is where the rest of
        the upstream body (``[DONE]`` and the chunked terminator, nothing more) is read, to keep
        the connection for the next request, and then where ``on_end`` gets the result."""
        if inspect.getgeneratorstate(self._body) == inspect.GEN_CREATED:
            self._let_go()  # never started, so its finally will not run
        self._body.close()
        if self.life.read_on_after_leave:
            return  # the thread reading on reads the rest, then ends
        if self._drain_on_close:
            self._drain_on_close = False
            self.gen.drain()
        self._end()

    def _let_go(self) -> None:
        """Let go of the stream: the slot, the watchdog, the upstream. Once. (Or, if the client left an
        answer that is to be read on, start reading on: ``READING_ON``.)"""
        with self.client.writing, self.life.lock:
            if not self.life.active or self.life.read_on_after_leave:
                return
            if self._may_read_on():
                self.life.phase = Phase.READING_ON
                self._leave.watch_for_readers()
            else:
                self.life.phase = Phase.CLOSED
            self.client.let_go()  # nothing more to watch, or write, on the client's side
        if self.on_close is not None:
            self.on_close()
        if self.life.read_on_after_leave:
            threading.Thread(target=self._read_on, name="chatstream-read-on", daemon=True).start()
            return
        self._release()

    def _may_read_on(self) -> bool:
        """``on_client_leave="finish"``: the client left an answer that was going well, and there is room."""
        if not self._leave.read_on or self.gen.over or self.life.stop_reason == StopReason.STOPPED or self._leave.abandoned:
            return False
        if not (self.life.stop_reason in GONE or self._left):
            return False
        return self._leave.take_room(self.gen.answer.completion_id)

    def _read_on(self) -> None:
        """Read the rest of an answer nobody is waiting for, so ``after_stream`` gets all of it."""
        gen = self.gen
        try:
            while not (gen.over or self.life.stop_reason == StopReason.STOPPED or self._leave.abandoned):
                gen.step()
        finally:
            self._leave.limit.give_back()
            with self.life.lock:
                self.life.phase = Phase.READ_ON
            self._release()
            if gen.answer.finished:
                gen.drain()
            self._end()

    def _release(self) -> None:
        WATCHDOG.forget(self)
        if self.id:
            STREAMS.discard(self.id)
        gen = self.gen
        if gen.held is not None:
            gen.release_held()  # not sent (the client went first), but recorded for a resume
        if self._recording is not None:
            self._recording.end(error_event(gen.error or StreamEnded(self._outcome())))
        self.ended = time.monotonic()
        complete, read_on = gen.answer.finished, self.life.read_on_after_leave
        if gen.let_go(keep=complete and (read_on or self.life.stop_reason is None)) and not read_on:
            self._drain_on_close = True
        outcome = self._outcome()
        if outcome == "error" and gen.error is not None:
            outcome = gen.error.code
        gen.log(outcome + ("_after_client_left" if read_on else ""), time.monotonic() - self.started)

    def _end(self) -> None:
        """Hand the result to ``on_end``, once."""
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            on_end(self.result())

    def _outcome(self) -> str:
        if self.gen.error is not None:  # (an answer can finish and still fail: text/plain met a tool call)
            return "error"
        if self.gen.answer.finished:
            return "done"
        return self.life.stop_reason if self.life.stop_reason in GONE else StopReason.CLIENT_LEFT

    def result(self) -> ChatResult:
        first = self.gen.first_token_at
        return self.gen.result(stream_id=self.id, outcome=self._outcome(), delivered=self._delivered,
                               started_at=self.started_at, duration=(self.ended or time.monotonic()) - self.started,
                               first_token=first - self.started if first is not None else None)

    # -- what stops it from outside -------------------------------------------------------------

    def tick(self, now: float, client_events: int) -> None:
        self._stops.tick(now, client_events)

    def stop(self, reason: str = StopReason.STOPPED) -> None:
        """Stop the stream on the client's word (``POST .../stop``)."""
        self._stops.stop(reason)
