"""Reading a source with a deadline, without losing the read when the deadline passes first.

The view reads ahead to the answer's first event before it starts the response, but only for so
long (``first_event_wait``): a blocking read cannot be given up on halfway without losing what it
would have brought, so a read with a deadline runs in a helper thread (a greenlet under gevent),
and the next read picks its result up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

PENDING: Any = object()
"""What ``Reader.next`` returns when its deadline passed first."""
SLICE = 0.2
"""The longest a wait for the source goes on after an ``interrupt`` (the watchdog's interval)."""


class Reader:
    """The upstream's reads (``read()``: the next bytes, ``StopIteration`` at the end), with an
    optional deadline per read.

    A read with a deadline runs in a helper thread (a greenlet under gevent), so the view can stop
    waiting without disturbing the read: the next read picks up its result. ``interrupt`` ends a
    wait early, as if its deadline had passed.
    """

    __slots__ = ("_read", "_ready", "_result", "_has_result", "pending", "_readable", "_then")

    def __init__(self, read: Callable[[], bytes], readable: Callable[[float], bool | None] | None = None) -> None:
        self._read = read
        self._readable = readable
        self._then: Callable[[], None] | None = None
        """Where the source can tell whether a read would wait (``Body.ready``), no thread is needed."""
        self._ready = threading.Event()
        self._result: tuple[bool, Any] = (True, b"")
        self._has_result = False
        self.pending = False

    def next(self, timeout: float | None = None) -> bytes:
        if not self.pending:
            if timeout is None:
                return self._read()
            if self._readable is not None:
                ready = self._wait_readable(timeout)
                if ready is not None:
                    return self._read() if ready else PENDING
            self._has_result = False
            self._ready.clear()
            self.pending = True
            threading.Thread(target=self._fetch, name="chatstream-read-ahead", daemon=True).start()
        while not self._has_result:
            if not self._ready.wait(timeout):
                return PENDING  # type: ignore[no-any-return]
            if not self._has_result:  # interrupted
                self._ready.clear()
                if not self._has_result and timeout is not None:
                    return PENDING  # type: ignore[no-any-return]
        self.pending = False
        ok, value = self._result
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def interrupt(self) -> None:
        self._ready.set()

    def _wait_readable(self, timeout: float) -> bool | None:
        """Wait for the source to be readable, in slices, so that ``interrupt`` ends the wait within one:
        a client that leaves while the model is silent (a reasoning model's thinking, after the
        upstream's head) is noticed then, not when the first chunk comes."""
        assert self._readable is not None
        deadline = time.monotonic() + timeout
        self._ready.clear()
        while True:
            ready = self._readable(max(0.0, min(SLICE, deadline - time.monotonic())))
            if ready is None or ready:
                return ready
            if self._ready.is_set() or time.monotonic() >= deadline:
                return False

    def abandon(self, then: Callable[[], None]) -> None:
        """Nobody will take the pending read's result: call ``then`` once it is in."""
        self._then = then
        if self._has_result:
            then()

    def _fetch(self) -> None:
        try:
            self._result = (True, self._read())
        except BaseException as exc:  # handed to the reader, StopIteration included
            self._result = (False, exc)
        self._has_result = True
        self._ready.set()
        if self._then is not None:
            self._then()
