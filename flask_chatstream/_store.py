"""The streams this process holds, by id: so that a stop asked for on another request finds its stream.

``POST <prefix>/chat/<stream_id>/stop`` comes in on a connection of its own, while the stream's
relay lives in the request that started it. This registry joins the two within one worker process.
A stop that lands on another worker of the machine goes through the host's shared state (``_host``),
and to another instance through Redis (``_redis``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class Stoppable(Protocol):
    def stop(self, reason: str) -> None:
        """Stop the stream from another request."""


class LocalStreams:
    def __init__(self) -> None:
        self._streams: dict[str, tuple[Stoppable, str]] = {}
        self._on_discard: dict[str, Callable[[], None]] = {}
        self._lock = threading.Lock()

    def add(self, stream_id: str, stream: Stoppable, owner: str) -> None:
        with self._lock:
            self._streams[stream_id] = (stream, owner)

    def discard(self, stream_id: str) -> None:
        with self._lock:
            self._streams.pop(stream_id, None)
            then = self._on_discard.pop(stream_id, None)
        if then is not None:
            then()

    def on_discard(self, stream_id: str, then: Callable[[], None]) -> None:
        """Call ``then`` once the stream is no longer here (at once if it is gone already)."""
        with self._lock:
            if stream_id in self._streams:
                self._on_discard[stream_id] = then
                return
        then()

    def stop(self, stream_id: str, owner: str) -> bool:
        """Stop the stream if it is here and ``owner`` (the client key) started it."""
        with self._lock:
            entry = self._streams.get(stream_id)
        if entry is None or entry[1] != owner:
            return False
        entry[0].stop("stopped")
        return True

    def stop_here(self, stream_id: str) -> None:
        """Stop the stream if this process holds it; whoever asks has checked the owner."""
        with self._lock:
            entry = self._streams.get(stream_id)
        if entry is not None:
            entry[0].stop("stopped")


STREAMS = LocalStreams()
