"""Resumable streams: every event of a stream kept, in order, for clients that come back for it.

The relay hands the events of each write to the stream's ``Recording``, which numbers them (``seq``,
from 1, in the event itself: NDJSON shows it, SSE sends it as ``id:``) and keeps them.
``GET <prefix>/chat/<stream_id>`` reads them back after any ``seq`` and follows the live stream to
its terminal event (``replay``). A stream's last kept event is always terminal: its ``done`` or
``error``, or, when it was stopped or abandoned, an ``error`` saying so.

Two stores behind one interface, ``Journal``:

- ``MemoryJournal``, here: this process's memory. A resume must reach the worker that runs the
  stream, so it is for one worker (or the dev server); nothing to set up.
- ``RedisJournal`` (``_redis``): Redis Streams, so any worker of any instance sharing the Redis can
  serve a resume, and a stop reaches the stream wherever it runs.

Either way the live stream never waits on the store: ``Recording.add`` only queues.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import orjson

from .._stream.registry import STREAMS
from .._wire.events import Event

TERMINAL = frozenset({"done", "error"})


class Unavailable(Exception):
    """The store cannot be reached right now."""


@dataclass(frozen=True)
class Found:
    owner: str
    first: int
    """The oldest ``seq`` still kept (1 unless the stream outgrew ``resume_max_events``)."""
    live: bool
    """Still running: its terminal event is not in yet."""


@dataclass(frozen=True)
class Batch:
    events: list[bytes]
    """The JSON of each event after the one asked for, oldest first."""
    lost: bool = False
    """Nothing more will come, and no terminal event came: the stream's producer died, or the
    store lost its events."""


class Recording:
    """The producer's side of one resumable stream."""

    def __init__(self) -> None:
        self.seq = 0
        self.ended = False
        self.readers_seen = False
        """Set by a store that asks, from time to time, whether anyone reads the stream."""

    def add(self, events: list[Event]) -> None:
        """Number the events (in place: the live client sees the same ``seq``) and keep them."""
        if self.ended:
            return
        data = []
        for event in events:
            self.seq += 1
            event["seq"] = self.seq
            data.append(orjson.dumps(event))
        self.ended = events[-1]["type"] in TERMINAL if events else False
        self._keep(data, self.ended)

    def end(self, terminal: Event) -> None:
        """Close the record with ``terminal``, unless a terminal event is in already."""
        if not self.ended:
            self.add([terminal])

    @property
    def attached(self) -> bool:
        """Is someone reading the stream through a resume right now?"""
        return self.readers_seen

    def watch_readers(self) -> None:
        """Its client left: from now on, keep ``attached`` up to date."""

    def _keep(self, data: list[bytes], ended: bool) -> None:
        raise NotImplementedError


class Journal:
    """Where resumable streams are kept. Every method but ``begin`` may raise ``Unavailable``."""

    def begin(self, stream_id: str, owner: str, chat_id: str | None) -> Recording | None:
        """Start keeping a stream; None if the store is unavailable (the stream goes on without)."""
        raise NotImplementedError

    def find(self, stream_id: str) -> Found | None:
        raise NotImplementedError

    def read(self, stream_id: str, after: int, wait: float) -> Batch:
        """The events after ``after``, waiting up to ``wait`` seconds for the first of them."""
        raise NotImplementedError

    @contextmanager
    def attach(self, stream_id: str) -> Iterator[None]:
        """Count a reader of the stream while the block runs (its producer's grace goes on)."""
        yield

    def active(self, chat_id: str, owner: str) -> str | None:
        """The live stream of an AI SDK chat that ``owner`` (a client key) started, if one is running.
        Chat ids are the client's to pick: another client's stream of the same chat id is not this one's."""
        raise NotImplementedError

    def stop(self, stream_id: str) -> None:
        """Tell the stream's producer to stop, wherever it runs (the caller checked the owner)."""
        STREAMS.stop_here(stream_id)

    def stop_owned(self, stream_id: str, owner: str) -> bool:
        """Stop the live stream ``owner`` started, wherever it runs; False if there is none."""
        found = self.find(stream_id)
        if found is None or not found.live or found.owner != owner:
            return False
        self.stop(stream_id)
        return True


class _Log:
    __slots__ = ("owner", "chat_id", "events", "first", "ended", "readers", "changed")

    def __init__(self, owner: str, chat_id: str | None) -> None:
        self.owner = owner
        self.chat_id = chat_id
        self.events: list[bytes] = []
        self.first = 1
        self.ended = False
        self.readers = 0
        self.changed = threading.Condition(threading.Lock())


class _MemoryRecording(Recording):
    def __init__(self, journal: MemoryJournal, stream_id: str, log: _Log) -> None:
        super().__init__()
        self._journal = journal
        self._id = stream_id
        self._log = log

    @property
    def attached(self) -> bool:
        return self._log.readers > 0

    def _keep(self, data: list[bytes], ended: bool) -> None:
        log = self._log
        with log.changed:
            log.events += data
            extra = len(log.events) - self._journal.max_events
            if extra > 0:
                del log.events[:extra]
                log.first += extra
            log.ended = ended
            log.changed.notify_all()
        if ended:
            self._journal.ended(self._id, log)


class MemoryJournal(Journal):
    """Streams kept in this process: resume works only on the worker that runs the stream."""

    def __init__(self, ttl: float, max_events: int) -> None:
        self.ttl = ttl
        self.max_events = max_events
        self._logs: dict[str, _Log] = {}
        self._chats: dict[tuple[str, str], str] = {}
        """The live stream of each (owner, chat id)."""
        self._expiry: deque[tuple[float, str]] = deque()  # (when, stream id), in order of ending

    def begin(self, stream_id: str, owner: str, chat_id: str | None) -> Recording:
        self._expire()
        log = self._logs[stream_id] = _Log(owner, chat_id)
        if chat_id:
            self._chats[owner, chat_id] = stream_id
        return _MemoryRecording(self, stream_id, log)

    def ended(self, stream_id: str, log: _Log) -> None:
        self._expiry.append((time.monotonic() + self.ttl, stream_id))
        if log.chat_id and self._chats.get((log.owner, log.chat_id)) == stream_id:
            del self._chats[log.owner, log.chat_id]

    def find(self, stream_id: str) -> Found | None:
        self._expire()
        log = self._logs.get(stream_id)
        return None if log is None else Found(log.owner, log.first, not log.ended)

    def read(self, stream_id: str, after: int, wait: float) -> Batch:
        log = self._logs.get(stream_id)
        if log is None:
            return Batch([], lost=True)
        with log.changed:
            if log.first + len(log.events) - 1 <= after and not log.ended:
                log.changed.wait(wait)
            return Batch(log.events[max(0, after - log.first + 1):])

    @contextmanager
    def attach(self, stream_id: str) -> Iterator[None]:
        log = self._logs.get(stream_id)
        if log is None:
            yield
            return
        log.readers += 1
        try:
            yield
        finally:
            log.readers -= 1

    def active(self, chat_id: str, owner: str) -> str | None:
        return self._chats.get((owner, chat_id))

    def _expire(self) -> None:
        now = time.monotonic()
        while self._expiry and self._expiry[0][0] <= now:
            self._logs.pop(self._expiry.popleft()[1], None)
