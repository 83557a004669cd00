"""Who may stream: a per-client cap on concurrent streams, so one client cannot run up the bill.

The count lives in each worker process. With several workers, a client's cap is per worker: set
it with that in mind, or put a shared limiter (nginx ``limit_conn``, Redis) in front.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._errors import TooManyStreams


def _nothing() -> None:
    pass


class StreamLimit:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> Callable[[], None]:
        """Count a stream for ``key``, or raise ``TooManyStreams``. Call what it returns when the stream ends."""
        if not self.limit:
            return _nothing
        with self._lock:
            count = self._open.get(key, 0)
            if count >= self.limit:
                raise TooManyStreams()
            self._open[key] = count + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            with self._lock:
                left = self._open[key] - 1
                if left:
                    self._open[key] = left
                else:
                    del self._open[key]

        return release

    def open_streams(self, key: str) -> int:
        return self._open.get(key, 0)
