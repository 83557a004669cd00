"""A stream's life, and what ends it from outside its body.

Its life is a ``Phase``: ``OPEN`` while the body is written to the client, then ``CLOSED`` (let go
of: the slot, the watchdog, the upstream); or, when the client left an answer that is read to its
end for ``after_stream``, ``READING_ON`` and then ``READ_ON``::

    OPEN ──let go──▶ CLOSED
      └──client left, read on──▶ READING_ON ──answer read──▶ READ_ON

``Stops`` is what can end it from outside: the watchdog's tick, five times a second (the client
left or stopped reading, the upstream went silent past the read timeout, nobody came back to a
resumable answer within its grace), and a stop asked for (``POST .../stop``, or another worker).
Under the ``Life``'s lock, a stop only happens while the stream is active, so the upstream and
client sockets are only shut down before the stream closes them (never a descriptor that may have
been reused).
"""

from __future__ import annotations

import enum
import threading

from .._chat import GONE, StopReason
from .after_leave import AfterLeave
from .client_side import CLIENT_LEFT, CLIENT_STALLED, PROBING, START_RESPONSE, ClientSide
from .generation import Generation



class Phase(enum.Enum):
    """Where a stream is in its life."""

    OPEN = "open"
    """The body is being written to the client."""
    CLOSED = "closed"
    """Let go of: its slot, the watchdog, the upstream."""
    READING_ON = "reading_on"
    """The client left; the answer is read to its end, for ``after_stream``, by a thread of its own."""
    READ_ON = "read_on"
    """Let go of, after reading on."""


class Life:
    """One stream's phase, and why it was stopped, under one lock."""

    __slots__ = ("phase", "stop_reason", "lock")

    def __init__(self) -> None:
        self.phase = Phase.OPEN
        self.stop_reason: str | None = None
        self.lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Not yet let go of (``OPEN`` or ``READING_ON``)."""
        return self.phase is Phase.OPEN or self.phase is Phase.READING_ON

    @property
    def read_on_after_leave(self) -> bool:
        """Is (or was) the answer read on after its client left (``READING_ON`` or ``READ_ON``)?"""
        return self.phase is Phase.READING_ON or self.phase is Phase.READ_ON


class Stops:
    """The decisions that stop one stream from outside its body."""

    def __init__(self, life: Life, client: ClientSide, gen: Generation, leave: AfterLeave, read_timeout: float) -> None:
        self._life = life
        self._client = client
        self._gen = gen
        self._leave = leave
        self._read_timeout = read_timeout

    def tick(self, now: float, client_events: int) -> None:
        """The watchdog's, with the client socket's poll events."""
        life = self._life
        if not life.active:
            return
        gen = self._gen
        silent = now - gen.last_event > self._read_timeout and not gen.tools.running
        if life.read_on_after_leave:  # nobody to watch on the client's side; the read timeout still holds
            if silent:
                with life.lock:
                    if life.active:
                        gen.halt(StopReason.TIMEOUT)
            elif self._leave.grace is not None:
                self._abandon_unread(now)
            return
        if life.stop_reason is not None:
            if life.stop_reason in GONE and self._leave.grace is not None:
                self._abandon_unread(now)  # still in the body, reading on for a reader to come
            return
        said = self._client.look(now, client_events)
        if said == CLIENT_STALLED or said == CLIENT_LEFT:
            self.client_gone(said)
        elif said == START_RESPONSE:
            gen.reader.interrupt()  # still priming: start the response, whose head is the probe
        elif said == PROBING:
            pass
        elif silent:
            self.client_gone(StopReason.TIMEOUT)
        elif self._client.due(now):
            self._client.beat(now)

    def stop(self, reason: str) -> None:
        """Stop on the client's word, whatever ``on_client_leave`` says: generation ends, and so does the
        response, cut as when a client leaves."""
        life = self._life
        with life.lock:
            if not life.active or life.stop_reason == reason:
                return
            life.stop_reason = reason
            self._gen.reader.interrupt()
            self._gen.halt(reason)

    def client_gone(self, reason: str) -> None:
        """The client left or stalled, or the upstream went silent (``timeout``): stop, unless the answer
        is to be read on after the client left."""
        life = self._life
        with life.lock:
            if not life.active or life.stop_reason is not None:
                return
            life.stop_reason = reason
            if reason == StopReason.CLIENT_STALLED:
                self._client.cut()  # unblocks the server's write, which then closes the body
            if reason in GONE and self._leave.read_on:
                self._leave.watch_for_readers()
                self._gen.reader.interrupt()  # a prime waiting on a silent upstream ends; the read goes on
                return  # the relay ends at its next read, and the rest of the answer is read for after_stream
            self._gen.halt(reason)

    def _abandon_unread(self, now: float) -> None:
        """With resume: stop an answer whose client left once nobody has read it for the grace period."""
        if self._leave.unread(now):
            with self._life.lock:
                if self._life.active:
                    self._leave.abandoned = True
                    self._gen.halt("client_left")
