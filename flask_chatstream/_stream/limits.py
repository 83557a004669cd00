"""Who may stream: a per-client cap on concurrent streams, so one client cannot run up the bill.

The count lives in each worker process: with several workers, a client's cap is per worker. With
``redis_url`` set, ``_redis.FleetLimit`` counts across every worker and instance instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .._errors import TooManyStreams


def nothing() -> None:
    pass


def once(release: Callable[[], None]) -> Callable[[], None]:
    """``release``, made safe to call more than once: only the first call runs it."""
    done = False

    def release_once() -> None:
        nonlocal done
        if not done:
            done = True
            release()

    return release_once


class StreamLimit:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, error: type[TooManyStreams] = TooManyStreams) -> Callable[[], None]:
        """Count a stream for ``key``, or raise ``error``. Call what it returns when the stream ends."""
        if not self.limit:
            return nothing
        with self._lock:
            count = self._open.get(key, 0)
            if count >= self.limit:
                raise error()
            self._open[key] = count + 1

        def release() -> None:
            with self._lock:
                left = self._open[key] - 1
                if left:
                    self._open[key] = left
                else:
                    del self._open[key]

        return once(release)

    def sibling(self, limit: int) -> StreamLimit:
        """A limit of another size, counted where this one is (this worker, this machine, the fleet)."""
        return StreamLimit(limit)

    def open_streams(self, key: str) -> int:
        return self._open.get(key, 0)
