"""The model's side of one stream: its calls, read and turned into the bytes the client gets.

A stream is one model call, or several with turns of server-side tools between them (the
``ToolLoop``). Each read of the upstream goes through the ``Answer`` (events), the recording (a
resumable stream's journal) and the format's encoder. The ``Relay`` decides when to read and when
to stop; this decides what a read means, and how the upstream is let go of.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from .._budget import price_of
from .._chat import ChatResult, StopReason
from .._config import Settings
from .._errors import ChatStreamError, UpstreamRejected, UpstreamTimeout
from .._observe import ModelCall
from .._upstream.client import STALLED, Stopped, UpstreamStream, interrupted
from .answer import Answer
from .._wire.encoders import Format
from .._wire.events import Event, error_event
from .marks import Marks
from .reader import PENDING, Reader
from .spec import StreamSpec
from .spec import NO_REQUEST
from .tool_loop import ToolLoop


log = logging.getLogger("flask_chatstream")

TOKENS = ("delta", "reasoning", "refusal", "tool_call")
"""The events that carry what the model said: the first one is its first token."""

TURN_WAIT = 0.2
"""How long one step of a turn of tools waits for them, before what they emitted meanwhile goes out."""

FINISH_WAIT = 0.5
"""After a complete answer, how long ``drain`` waits for the end of the upstream body to reuse the connection."""


class Generation:
    """What the model says in one stream, and the upstream it says it through."""

    def __init__(self, stream: UpstreamStream, fmt: Format, settings: Settings, spec: StreamSpec, *,
                 gone: Callable[[], bool], lock: threading.Lock) -> None:
        self.stream = stream
        self.request = spec.chat
        self._fmt = fmt
        self._encoder = fmt.encoder()
        self._relay_reasoning = settings.relay_reasoning
        self._prices = settings.prices
        self._recording = spec.recording
        """Where a resumable stream's events are kept, numbered, for clients that come back."""
        self._lock = lock
        """The relay's: a stop and the switch to the next model call's stream never cross."""
        self.answer = Answer(settings, spec, stream.api.translator)
        self.marks = Marks(spec.prelude.message_id, spec.prelude.run)
        """What goes on the answer's ``start`` and ``done``: the message id, the host's metadata."""
        self.tools = ToolLoop(spec.tools, spec.chat, timeout=settings.tool_timeout,
                              max_output_chars=settings.max_tool_output_chars, gone=gone, reopen=spec.reopen,
                              context=spec.context, report=spec.watch.tool_ran)
        self.reader = Reader(stream.read, stream.ready)
        self.error: ChatStreamError | None = None
        self.visible = False
        """Has an event reached the relay that the client needs, beyond ``start``?"""
        self.first_token_at: float | None = None
        """When the model's first token reached the relay (``time.monotonic()``)."""
        self.last_event = time.monotonic()
        """When the upstream last sent a data event (comments do not count), or a turn of tools ended."""
        self._watch = spec.watch
        self._asked: float | None = spec.asked if spec.asked is not None else time.time()
        """When the model call being read was asked for (``time.time()``); None once it is told to the watch."""
        self._priming = False
        self.held: list[Event] | None = None
        """The answer's ``done`` (and what follows it), held back when the host's end metadata is to go
        on it and text came with it: the hook runs once that text is out (``release_held``)."""

    @property
    def over(self) -> bool:
        """The answer is complete, or has failed."""
        return self.answer.finished or self.error is not None

    def read_ahead(self, wait: float, ended: Callable[[], bool]) -> bytes:
        """Read until the answer's first visible event, its end (or ``ended()``), a turn of tools, or
        ``wait`` seconds: what to send first."""
        deadline = time.monotonic() + wait
        pieces = []
        self._priming = True
        try:
            while not (self.visible or ended() or self.answer.turn is not None):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                piece = self.advance(left)
                if piece is None:
                    break
                pieces.append(piece)
        finally:
            self._priming = False
        return b"".join(pieces)

    def release_held(self) -> bytes:
        """The ``done`` held back while priming, now with the host's end metadata (its hook runs now)."""
        held, self.held = self.held, None
        return self.encode(held) if held else b""

    def step(self) -> bytes:
        """One move of the answer: open the next model call, run a turn of tools, or read."""
        if self.tools.next is not None:
            return self._open_next()
        if self.answer.turn is not None:
            return self._run_turn()
        return self.advance() or b""

    def advance(self, timeout: float | None = None) -> bytes | None:
        """Read once and translate: the bytes to send (maybe none), or None if ``timeout`` passed."""
        try:
            data = self.reader.next(timeout)
        except StopIteration:
            out = self.encode(self.answer.end_of_stream())
            self._call_ended()
            return out
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
        events, data_event = self.answer.feed(data)
        if data_event:
            self.last_event = time.monotonic()
            if self.answer.translator.finished:
                self._call_ended()
        return self.encode(events)

    def encode(self, events: list[Event]) -> bytes:
        """The events for the client, recorded (resume) and encoded."""
        if self.answer.error is not None and self.error is None:
            self.error = self.answer.error
        if not self._relay_reasoning:
            events = [event for event in events if event["type"] != "reasoning"]
        if not events:
            return b""
        if not self._fmt.carries_events and self.answer.turn is None:
            for i, each in enumerate(events):
                if each["type"] == "tool_call":  # for the client to run: text has no way to say so
                    self.error = UpstreamRejected(
                        "The model answered with a tool call, which text/plain cannot carry. "
                        "Ask for application/x-ndjson or text/event-stream.", code="tool_calls_need_events")
                    events = events[:i]
                    break
        if self.first_token_at is None:
            self.visible = self.visible or any(event["type"] != "start" for event in events)
            if any(event["type"] in TOKENS for event in events):
                self.first_token_at = time.monotonic()
        marks = self.marks
        if marks.any:
            events, held = marks.hold(events, self._priming)
            if held is not None:
                self.held = held
            marks.add(events)
        return self._encoder(self.record(events)) if events else b""

    def encode_error(self, error: ChatStreamError, *, record: bool = True) -> bytes:
        """The terminal ``error`` event, encoded, and recorded unless the recording gets its own as the
        stream is let go of (``record=False``)."""
        events: list[Event] = [error_event(error)]
        return self._encoder(self.record(events) if record else events)

    def record(self, events: list[Event]) -> list[Event]:
        """Keep the events for a resume (all but transient data, which is for the moment only)."""
        if self._recording is not None:
            self._recording.add([e for e in events if not (e["type"] == "data" and e.get("transient"))])
        return events

    def _stopped(self, reason: str) -> None:
        if reason == StopReason.TIMEOUT:
            self.error = UpstreamTimeout(STALLED)

    # -- between model calls ---------------------------------------------------------------------

    def _run_turn(self) -> bytes:
        try:
            events = self.tools.run_turn(self.answer, TURN_WAIT)
        finally:
            self.last_event = time.monotonic()
        return b"" if events is None else self.encode(events)

    def _open_next(self) -> bytes:
        self._asked = time.time()
        try:
            stream = self.tools.open_next()
        except ChatStreamError as error:
            self.error = error
            self._call_ended(opened=False)
            return b""
        if stream is None:
            self._asked = None  # never answered: stopped, or the client left first
            return b""
        with self._lock:
            finished, self.stream = self.stream, stream
        finished.finish(self._tail(), FINISH_WAIT)  # drained: its connection, back for the next request
        self.answer.next_call(self.tools.request)
        self.reader = Reader(stream.read, stream.ready)
        self.last_event = time.monotonic()
        return b""

    # -- letting go of the upstream --------------------------------------------------------------

    def halt(self, reason: str) -> None:
        """Stop the model: the stream being read, or the next call's request still waiting for its head.
        (Call with the relay's lock held.)"""
        self.stream.stop(reason)
        self.tools.cancel(reason)

    def _call_ended(self, opened: bool = True) -> None:
        """Tell the watch of the model call being read, once: it ended, or failed (``self.error``), or is
        let go of."""
        asked, self._asked = self._asked, None
        if asked is None:
            return
        answer, translator = self.answer, self.answer.translator
        self._watch.model_call(ModelCall(
            self.tools.request, asked, time.time(), response_id=translator.id if opened else None,
            response_model=translator.model if opened else None,
            finish_reason=translator.finish_reason if opened else None, usage=answer.call_usage() if opened else None,
            error=(self.error or answer.error) if not translator.finished or not opened else None))

    def let_go(self, keep: bool) -> bool:
        """Close the upstream, or with ``keep`` (a complete answer) leave its body to ``drain``: returns
        whether it was kept."""
        self._call_ended()
        if self.reader.pending and not self.stream.owns_socket:
            # A read ahead is still waiting on a connection shared with other streams (HTTP/2):
            # closing the response under it would break the connection for all of them. It is
            # closed when that read ends, at the stream's next data or its read timeout.
            self.reader.abandon(self.stream.close)
        elif self.reader.pending:
            self.stream.stop("closed")  # wake the read ahead so it lets go of the connection
            self.stream.close()
        elif keep:
            return True
        else:
            self.stream.close()
        return False

    def drain(self) -> None:
        """Read what is left of a complete answer's upstream body (``[DONE]``, the chunked terminator),
        for at most ``FINISH_WAIT``, so its connection can serve the next request."""
        self.stream.finish(self._tail(), FINISH_WAIT)

    def _tail(self) -> int:
        """How much may be left of a finished model call's body: nothing after ``[DONE]``, else that line."""
        return 0 if self.answer.marker else len(b"data: [DONE]\n\n")

    # -- the result ------------------------------------------------------------------------------

    def result(self, *, stream_id: str, outcome: str, delivered: bool, started_at: datetime,
               duration: float, first_token: float | None) -> ChatResult:
        answer, request = self.answer, self.request or NO_REQUEST
        usage = answer.usage
        price = price_of(self._prices, request.model, answer.translator.model) if usage is not None else None
        return ChatResult(
            id=stream_id, request=request, outcome=outcome, text=answer.text,
            refusal=answer.refusal, reasoning=answer.reasoning, tool_calls=answer.tool_calls,
            finish_reason=answer.finish_reason, usage=usage, cost=price.cost(usage) if price and usage else None,
            error=self.error, delivered=delivered,
            started_at=started_at, duration=duration, first_token=first_token, completion_id=answer.completion_id,
            response_id=answer.response_id,
        )

    def log(self, outcome: str, duration: float) -> None:
        """The stream's one log line."""
        answer = self.answer
        usage = answer.usage or {}
        log.info(
            "stream id=%s outcome=%s format=%s chunks=%d steps=%d duration_ms=%d finish_reason=%s "
            "prompt_tokens=%s completion_tokens=%s usage=%s",
            answer.completion_id, outcome, self._fmt.name, answer.chunks, answer.steps, duration * 1000,
            answer.finish_reason, usage.get("prompt_tokens"), usage.get("completion_tokens"),
            "estimated" if usage.get("estimated") else "upstream" if usage else "none",
        )
