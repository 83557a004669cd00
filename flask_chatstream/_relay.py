"""One stream's life once the view has opened the upstream: the one place it is decided.

The relay reads upstream bytes, turns them into events and one write per network read, and ends
the response in exactly one way: ``done``, one terminal ``error`` (NDJSON, SSE) or a cut connection
(text/plain), or silence when the client has gone. The upstream is closed in ``finally`` on every
path, including the one where the server closes the body because the client left.

Before the response starts, the view calls ``prime``: it reads ahead until the answer's first
visible event, so an upstream failure before it is still a real HTTP status.

Its life is a ``Phase``: ``OPEN`` while the body is written to the client, then ``CLOSED`` (let go
of: the slot, the watchdog, the upstream); or, when the client left an answer that is read to its end
for ``after_stream`` (``on_client_leave="finish"``, or a resumable stream's grace), ``READING_ON``
and then ``READ_ON``.
Three things that could each be called "finishing" are named apart: letting go (``_let_go``), reading
on after the client left (``_read_on``), and draining a complete answer's upstream body so its
connection serves the next request (``_drain``).

The watchdog calls ``tick`` five times a second. Under ``_state``, a lock of its own, a stop can
only happen while the stream is active, and the upstream and client sockets are only shut down
before the stream closes them (never a descriptor that may have been reused). What the client's
side says (a hang-up, a half-close, a write blocked too long) and the heartbeats are the
``ClientSide``'s, which the resume's ``Replay`` uses too.
"""

from __future__ import annotations

import enum
import inspect
import logging
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import ContextManager
from datetime import datetime, timezone

from ._answer import Answer
from ._client_side import CLIENT_LEFT, CLIENT_STALLED, PROBING, START_RESPONSE, ClientSide
from ._config import Settings
from ._errors import ChatStreamError, StreamAborted, StreamEnded, UpstreamRejected, UpstreamTimeout
from ._events import Event, error_event
from ._formats import TEXT, Format
from ._hooks import ChatRequest, ChatResult
from ._journal import Recording
from ._reader import PENDING, Reader
from ._store import STREAMS
from ._tools import Tool, run_calls
from ._transport import Cancel
from ._upstream import STALLED, Stopped, UpstreamStream, interrupted
from ._watchdog import WATCHDOG

log = logging.getLogger("flask_chatstream")

GONE = ("client_left", "client_stalled", "stopped")
"""Stop reasons after which nothing more is written to the client."""

_NO_REQUEST = ChatRequest(messages=[], model="", max_tokens=0)

FINISH_WAIT = 0.5
"""After a complete answer, how long ``close`` waits for the end of the upstream body to reuse the connection."""


class ClientGone(Exception):
    """The client left before the response started."""


class Phase(enum.Enum):
    """Where a stream is in its life: ``OPEN`` → ``CLOSED``, or ``OPEN`` → ``READING_ON`` → ``READ_ON``."""

    OPEN = "open"
    """The body is being written to the client."""
    CLOSED = "closed"
    """Let go of: its slot, the watchdog, the upstream."""
    READING_ON = "reading_on"
    """The client left; the answer is read to its end, for ``after_stream``, by a thread of its own."""
    READ_ON = "read_on"
    """Let go of, after reading on."""


class FinishingLimit:
    """How many streams of one blueprint may read on after their client left (``on_client_leave=
    "finish"``): ``max_finishing_streams``, counted per blueprint in each worker."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.count = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.count >= self.most:
                return False
            self.count += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.count -= 1


class Relay:
    """One stream's body: an iterable the server writes out and then closes (PEP 3333)."""

    def __init__(
        self,
        stream: UpstreamStream,
        fmt: Format,
        settings: Settings,
        *,
        client: socket.socket | None = None,
        chat: ChatRequest | None = None,
        stream_id: str = "",
        owner: str = "",
        on_close: Callable[[], None] | None = None,
        on_end: Callable[[ChatResult], None] | None = None,
        tools: Mapping[str, Tool] | None = None,
        reopen: Callable[[ChatRequest, Cancel], UpstreamStream] | None = None,
        recording: Recording | None = None,
        context: Callable[[], ContextManager[object]] | None = None,
        finishing: FinishingLimit | None = None,
    ) -> None:
        self.stream = stream
        self.fmt = fmt
        self.on_close = on_close
        """Called once when the relay lets go of the stream: gives back the client's stream slot."""
        self.on_end = on_end
        """Called once with the ``ChatResult`` after the client has its last byte (``after_stream``)."""
        self.chat = chat
        self.id = stream_id
        self._tools = tools or {}
        self._relay_reasoning = settings.relay_reasoning
        self._encoder = fmt.encoder()
        self._tool_timeout = settings.tool_timeout
        self._max_tool_output = settings.max_tool_output_chars
        self._context = context
        """What each tool call runs inside: a copy of the request's Flask context."""
        self._reopen = reopen
        self._opening: Cancel | None = None
        """The next model call's request while it waits for its head: a stop cancels it."""
        self._request = chat
        """The request of the current model call: the first one's, then with the tool turns added."""
        self._next: ChatRequest | None = None
        """The request of the next model call, once a turn of tools has run."""
        self._tools_running = False
        self.started_at = datetime.now(timezone.utc)
        self._recording = recording
        """Where a resumable stream's events are kept, numbered, for clients that come back."""
        self._finish_after_leave = settings.on_client_leave == "finish"
        self._grace: float | None = None
        """With resume: how long the answer goes on after its client left, with nobody reading."""
        if recording is not None and not self._finish_after_leave and settings.resume_grace:
            self._finish_after_leave = True
            self._grace = settings.resume_grace
        self._seen_reader = 0.0
        self._abandoned = False
        self._finishing = finishing if finishing is not None else FinishingLimit(settings.max_finishing_streams)
        self.client = ClientSide(client, ping=fmt.ping, heartbeat=settings.heartbeat,
                                 send_timeout=settings.send_timeout)
        self._read_timeout = settings.read_timeout
        self.started = now = time.monotonic()
        self.last_event = now
        """When the upstream last sent a data event (comments do not count)."""
        self.phase = Phase.OPEN
        self.stop_reason: str | None = None
        self.visible = False
        """Has an event reached the relay that the client needs, beyond ``start``?"""
        self.error: ChatStreamError | None = None
        self._pending = b""
        self._drain_on_close = False
        """The answer is complete and the client has it: ``close`` drains the upstream body."""
        self._delivered = False
        self._left = False
        self.ended = 0.0
        self._state = threading.Lock()
        self._answer = Answer(expect_usage=settings.include_usage, max_event_bytes=settings.max_event_bytes,
                              stream_id=stream_id or None, server_tools=self._tools.keys(),
                              max_tool_steps=settings.max_tool_steps)
        self._reader = Reader(iter(stream), stream.ready)
        self._body = self._run()
        WATCHDOG.watch(self)
        if stream_id:
            STREAMS.add(stream_id, self, owner)

    def __iter__(self) -> Iterator[bytes]:
        return self._body

    @property
    def active(self) -> bool:
        """Not yet let go of (``OPEN`` or ``READING_ON``)."""
        return self.phase is Phase.OPEN or self.phase is Phase.READING_ON

    @property
    def read_on_after_leave(self) -> bool:
        """Is (or was) the answer read on after its client left (``READING_ON`` or ``READ_ON``)?"""
        return self.phase is Phase.READING_ON or self.phase is Phase.READ_ON

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
        deadline = time.monotonic() + wait
        pieces = []
        while not (self.visible or self._ended() or self._answer.turn is not None):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            piece = self._advance(left)
            if piece is None:
                break
            pieces.append(piece)
        self._pending = b"".join(pieces)
        if self.stop_reason in GONE:
            self._let_go()
            raise ClientGone()
        if self.error is not None and not self.visible:
            self._let_go()
            raise self.error

    # -- the body --------------------------------------------------------------------------------

    def _run(self) -> Generator[bytes, None, None]:
        try:
            # The first write goes out even when empty: the server sends the status line and
            # headers with it, so the client knows its answer has started.
            out, self._pending = self._pending, b""
            first = True
            client = self.client
            while True:
                if out or first:
                    first = False
                    with client.writing:  # (plain calls: a context manager per chunk costs more)
                        client.sending()
                        yield out
                    client.sent()
                if self._ended():
                    break
                out = self._step()
            if self.stop_reason in GONE:
                # Nobody is listening, or a client that only half-closed: either way no terminator,
                # so a cut answer never looks complete.
                raise StreamAborted(self.stop_reason)
            if self.error is not None:
                if not self.fmt.in_band_errors:
                    self._delivered = True  # the cut is how text says it
                    raise StreamAborted(self.error)
                with self.client.writing:
                    yield self._encoder(self._record([error_event(self.error)]))
            self._delivered = True
        except GeneratorExit:
            self._left = True  # the server closed the body early: a write to the client failed
            raise
        finally:
            self._let_go()

    def _step(self) -> bytes:
        """One move of the answer: open the next model call, run a turn of tools, or read."""
        if self._next is not None:
            return self._open_next()
        if self._answer.turn is not None:
            return self._run_turn()
        return self._advance() or b""

    def _advance(self, timeout: float | None = None) -> bytes | None:
        """Read once and translate: the bytes to send (maybe none), or None if ``timeout`` passed."""
        try:
            data = self._reader.next(timeout)
        except StopIteration:
            return self._encode(self._answer.end_of_stream())
        except Stopped as stopped:
            self._stopped(stopped.reason)
            return b""
        except Exception as exc:
            self.error = interrupted(exc)
            return b""
        if data is PENDING:
            return None
        if self.stream.stopped is not None:
            self._stopped(self.stream.stopped)
            return b""
        events, data_event = self._answer.feed(data)
        if data_event:
            self.last_event = time.monotonic()
        return self._encode(events)

    def _encode(self, events: list[Event]) -> bytes:
        if self._answer.error is not None and self.error is None:
            self.error = self._answer.error
        if not self._relay_reasoning:
            events = [event for event in events if event["type"] != "reasoning"]
        if not events:
            return b""
        if self.fmt is TEXT and self._answer.turn is None:
            for i, each in enumerate(events):
                if each["type"] == "tool_call":  # for the client to run: text has no way to say so
                    self.error = UpstreamRejected(
                        "The model answered with a tool call, which text/plain cannot carry. "
                        "Ask for application/x-ndjson or text/event-stream.", code="tool_calls_need_events")
                    events = events[:i]
                    break
        if not self.visible:
            self.visible = any(event["type"] != "start" for event in events)
        return self._encoder(self._record(events)) if events else b""

    def _record(self, events: list[Event]) -> list[Event]:
        if self._recording is not None:
            self._recording.add(events)
        return events

    # -- tools -----------------------------------------------------------------------------------

    def _run_turn(self) -> bytes:
        """Run the model's calls of server-side tools, and line up the next model call."""
        calls = self._answer.turn or []
        self._tools_running = True
        try:
            runs = run_calls(self._tools, calls, self._request or _NO_REQUEST, self._tool_timeout, self._max_tool_output,
                             stopped=lambda: self._gone, context=self._context)
        finally:
            self._tools_running = False
            self.last_event = time.monotonic()
        if self._gone:
            return b""  # the client left: no more model calls on its account
        events = self._answer.results(runs)
        if not self._answer.finished:  # else the client has calls of its own to run first
            self._next = self._answer.next_request(self._request or _NO_REQUEST, runs)
        return self._encode(events)

    def _open_next(self) -> bytes:
        assert self._next is not None and self._reopen is not None
        request, self._next = self._next, None
        # Set before the look at _gone: a stop that comes after the look finds it and cancels it.
        self._opening = opening = Cancel()
        if self._gone:
            self._opening = None
            return b""
        try:
            stream = self._reopen(request, opening)
        except ChatStreamError as error:
            self.error = error
            return b""
        except Stopped:
            return b""  # stopped, or the client left, while the model had not answered yet
        finally:
            self._opening = None
        with self._state:
            finished, self.stream = self.stream, stream
        finished.finish(self._tail(), FINISH_WAIT)  # drained: its connection, back for the next request
        self._request = request
        self._answer.next_call()
        self._reader = Reader(iter(stream), stream.ready)
        self.last_event = time.monotonic()
        return b""

    @property
    def _gone(self) -> bool:
        """The client left (and the answer is not being finished for it), or stopped the stream."""
        return (self.stop_reason == "stopped" or self._abandoned
                or (self.stop_reason in GONE and not self.read_on_after_leave))

    def _drain(self) -> None:
        """Read what is left of a complete answer's upstream body (``[DONE]``, the chunked terminator),
        for at most ``FINISH_WAIT``, so its connection can serve the next request."""
        self.stream.finish(self._tail(), FINISH_WAIT)

    def _tail(self) -> int:
        """How much may be left of a finished model call's body: nothing after ``[DONE]``, else that line."""
        return 0 if self._answer.marker else len(b"data: [DONE]\n\n")

    def _stopped(self, reason: str) -> None:
        if reason == "timeout":
            self.error = UpstreamTimeout(STALLED)

    def _ended(self) -> bool:
        return self._answer.finished or self.error is not None or self.stop_reason in GONE

    def close(self) -> None:
        """The server is done with the body, perhaps because the client left: stop the upstream.

        After a complete answer the client already has its last byte, so this is where the rest of
        the upstream body (``[DONE]`` and the chunked terminator, nothing more) is read, to keep
        the connection for the next request, and then where ``on_end`` gets the result."""
        if inspect.getgeneratorstate(self._body) == inspect.GEN_CREATED:
            self._let_go()  # never started, so its finally will not run
        self._body.close()
        if self.read_on_after_leave:
            return  # the finisher reads the rest, then ends
        if self._drain_on_close:
            self._drain_on_close = False
            self._drain()
        self._end()

    def _let_go(self) -> None:
        """Let go of the stream: the slot, the watchdog, the upstream. Once. (Or, if the client left an
        answer that is to be read on, start reading on: ``READING_ON``.)"""
        with self.client.writing, self._state:
            if not self.active or self.read_on_after_leave:
                return
            if self._may_read_on():
                self.phase = Phase.READING_ON
                self._watch_for_readers()
            else:
                self.phase = Phase.CLOSED
            self.client.let_go()  # nothing more to watch, or write, on the client's side
        if self.on_close is not None:
            self.on_close()
        if self.read_on_after_leave:
            threading.Thread(target=self._read_on, name="chatstream-read-on", daemon=True).start()
            return
        self._release()

    def _may_read_on(self) -> bool:
        """``on_client_leave="finish"``: the client left an answer that was going well, and there is room."""
        if not self._finish_after_leave or self._answer.finished or self.error is not None:
            return False
        if self.stop_reason == "stopped" or self._abandoned:
            return False
        if not (self.stop_reason in GONE or self._left):
            return False
        if not self._finishing.take():
            log.info("stream id=%s: %d streams are already finishing for clients that left; stopping this one",
                     self._answer.completion_id, self._finishing.most)
            return False
        return True

    def _read_on(self) -> None:
        """Read the rest of an answer nobody is waiting for, so ``after_stream`` gets all of it."""
        try:
            while not (self._answer.finished or self.error is not None or self.stop_reason == "stopped"
                       or self._abandoned):
                self._step()
        finally:
            self._finishing.give_back()
            with self._state:
                self.phase = Phase.READ_ON
            self._release()
            if self._answer.finished:
                self._drain()
            self._end()

    def _release(self) -> None:
        WATCHDOG.forget(self)
        if self.id:
            STREAMS.discard(self.id)
        if self._recording is not None:
            self._recording.end(error_event(self.error or StreamEnded(self._outcome())))
        self.ended = time.monotonic()
        if self._reader.pending and not self.stream.owns_socket:
            # A read ahead is still waiting on a connection shared with other streams (HTTP/2):
            # closing the response under it would break the connection for all of them. It is
            # closed when that read ends, at the stream's next data or its read timeout.
            self._reader.abandon(self.stream.close)
        elif self._reader.pending:
            self.stream.stop("closed")  # wake the read ahead so it lets go of the connection
            self.stream.close()
        elif self._answer.finished and not self.read_on_after_leave and self.stop_reason is None:
            self._drain_on_close = True
        elif not (self.read_on_after_leave and self._answer.finished):
            self.stream.close()
        self._log()

    def _end(self) -> None:
        """Hand the result to ``on_end``, once."""
        on_end, self.on_end = self.on_end, None
        if on_end is not None:
            on_end(self.result())

    def _outcome(self) -> str:
        if self._answer.finished:
            return "done"
        if self.error is not None:
            return "error"
        return self.stop_reason if self.stop_reason in GONE else "client_left"

    def result(self) -> ChatResult:
        answer = self._answer
        return ChatResult(
            id=self.id, request=self.chat or _NO_REQUEST, outcome=self._outcome(), text=answer.text,
            refusal=answer.refusal, reasoning=answer.reasoning, tool_calls=answer.tool_calls,
            finish_reason=answer.finish_reason,
            usage=answer.usage, error=self.error, delivered=self._delivered, started_at=self.started_at,
            duration=(self.ended or time.monotonic()) - self.started, completion_id=answer.completion_id,
        )

    def _log(self) -> None:
        answer = self._answer
        outcome = self._outcome()
        if outcome == "error" and self.error is not None:
            outcome = self.error.code
        if self.read_on_after_leave:
            outcome += "_after_client_left"
        usage = answer.usage or {}
        log.info(
            "stream id=%s outcome=%s format=%s chunks=%d steps=%d duration_ms=%d finish_reason=%s "
            "prompt_tokens=%s completion_tokens=%s",
            answer.completion_id, outcome, self.fmt.name, answer.chunks, answer.steps,
            (time.monotonic() - self.started) * 1000, answer.finish_reason, usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
        )

    # -- what the watchdog asks ------------------------------------------------------------------

    def tick(self, now: float, client_events: int) -> None:
        """Called on every watchdog tick with the client socket's poll events."""
        if not self.active:
            return
        if self.read_on_after_leave:  # nobody to watch on the client's side; the read timeout still holds
            if now - self.last_event > self._read_timeout and not self._tools_running:
                with self._state:
                    if self.active:
                        self._halt("timeout")
            elif self._grace is not None:
                self._abandon_unread(now)
            return
        if self.stop_reason is not None:
            if self.stop_reason in GONE and self._grace is not None:
                self._abandon_unread(now)  # still in the body, reading on for a reader to come
            return
        said = self.client.look(now, client_events)
        if said == CLIENT_STALLED or said == CLIENT_LEFT:
            self._stop(said)
        elif said == START_RESPONSE:
            self._reader.interrupt()  # still priming: start the response, whose head is the probe
        elif said == PROBING:
            pass
        elif now - self.last_event > self._read_timeout and not self._tools_running:
            self._stop("timeout")
        elif self.client.due(now):
            self.client.beat(now)

    def _watch_for_readers(self) -> None:
        """The client left an answer that goes on: from now on, the grace period counts."""
        if self._recording is not None and not self._seen_reader:
            self._seen_reader = time.monotonic()
            self._recording.watch_readers()

    def _abandon_unread(self, now: float) -> None:
        """With resume: stop an answer whose client left once nobody has read it for the grace period."""
        assert self._recording is not None and self._grace is not None
        if self._abandoned:
            return
        if self._recording.attached:
            self._seen_reader = now
        elif now - self._seen_reader > self._grace:
            with self._state:
                if self.active:
                    self._abandoned = True
                    self._halt("client_left")

    def stop(self, reason: str = "stopped") -> None:
        """Stop the stream on the client's word (``POST .../stop``), whatever ``on_client_leave`` says:
        generation ends, and so does the response, cut as when a client leaves."""
        with self._state:
            if not self.active or self.stop_reason == reason:
                return
            self.stop_reason = reason
            self._reader.interrupt()
            self._halt(reason)

    def _stop(self, reason: str) -> None:
        with self._state:
            if not self.active or self.stop_reason is not None:
                return
            self.stop_reason = reason
            if reason == "client_stalled":
                self.client.cut()  # unblocks the server's write, which then closes the body
            if reason in GONE and self._finish_after_leave:
                self._watch_for_readers()
                self._reader.interrupt()  # a prime waiting on a silent upstream ends; the read goes on
                return  # the relay ends at its next read, and the rest of the answer is read for after_stream
            self._halt(reason)

    def _halt(self, reason: str) -> None:
        """Stop the model: the stream being read, or the next call's request still waiting for its head."""
        self.stream.stop(reason)
        opening = self._opening
        if opening is not None:
            opening.cancel(reason)

