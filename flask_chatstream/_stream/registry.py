"""The streams this process holds, by id: so that a stop asked for on another request finds its stream.

``POST <prefix>/chat/<stream_id>/stop`` comes in on a connection of its own, while the stream's
relay lives in the request that started it. This registry joins the two within one worker process.
A stop that lands on another worker of the machine goes through the host's shared state (``_host``),
and to another instance through Redis (``_redis``).
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Protocol


# A stream id's layout, in one place: the blueprint's tag (8 hex digits), the worker that runs it (6),
# and 18 random ones. A stop that lands on another worker of the machine knows whom to ask, and an id
# that no worker runs is answered at once.


def stream_tag(scope: str) -> str:
    """Eight hex digits for a blueprint's scope, the same in every worker and instance."""
    return hashlib.blake2b(scope.encode(), digest_size=4, person=b"chatstream").hexdigest()


def worker_number(pid: int) -> int:
    """The part of a worker's pid that a stream id carries."""
    return pid & 0xFFFFFF


def new_stream_id(tag: str) -> str:
    return f"{tag}{worker_number(os.getpid()):06x}{os.urandom(9).hex()}"  # 72 random bits


def worker_of(stream_id: str) -> int:
    """The ``worker_number`` of the worker that runs the stream, or -1 for an id not of that shape."""
    try:
        return int(stream_id[8:14], 16)
    except ValueError:
        return -1


class Stoppable(Protocol):
    def stop(self, reason: str) -> None:
        """Stop the stream from another request."""


class LocalStreams:
    def __init__(self) -> None:
        self._streams: dict[str, tuple[Stoppable, str]] = {}
        self._lock = threading.Lock()

    def add(self, stream_id: str, stream: Stoppable, owner: str) -> None:
        with self._lock:
            self._streams[stream_id] = (stream, owner)

    def discard(self, stream_id: str) -> None:
        with self._lock:
            self._streams.pop(stream_id, None)

    def stop(self, stream_id: str, owner: str) -> bool:
        """Stop the stream if it is here and ``owner`` (the client key) started it."""
        with self._lock:
            entry = self._streams.get(stream_id)
        if entry is None or entry[1] != owner:
            return False
        entry[0].stop("stopped")
        return True

    def stop_if_here(self, stream_id: str, owner: str | None) -> bool:
        """``stop``, or with ``owner`` None whoever started it (the asker checked); False if not here."""
        if owner is not None:
            return self.stop(stream_id, owner)
        with self._lock:
            entry = self._streams.get(stream_id)
        if entry is None:
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
