"""When a client leaves an answer that is going well, the answer may still be read to its end.

With ``on_client_leave="finish"`` it is, so ``after_stream`` gets all of it (a chat history keeps
the whole answer), as long as fewer than ``max_finishing_streams`` of the blueprint's streams in
this worker are doing so. A resumable stream reads on too, for ``resume_grace`` seconds with
nobody reading it: a client that comes back finds the answer going on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .._config import Settings

if TYPE_CHECKING:
    from .._resume.journal import Recording  # the stream records; it needs no more of resume

log = logging.getLogger("flask_chatstream")


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


class AfterLeave:
    """What one stream does once its client has left: stop, or read on (and for how long)."""

    def __init__(self, settings: Settings, recording: Recording | None, limit: FinishingLimit | None) -> None:
        self.read_on = settings.on_client_leave == "finish"
        self.grace: float | None = None
        """With resume: how long the answer goes on after its client left, with nobody reading."""
        if recording is not None and not self.read_on and settings.resume_grace:
            self.read_on = True
            self.grace = settings.resume_grace
        self.abandoned = False
        """Nobody came back to read it within the grace period: stopped."""
        self.limit = limit if limit is not None else FinishingLimit(settings.max_finishing_streams)
        self._recording = recording
        self._seen_reader = 0.0

    def take_room(self, stream: str | None) -> bool:
        """Room to read on, under ``max_finishing_streams``? (Give it back with ``limit.give_back``.)"""
        if self.limit.take():
            return True
        log.info("stream id=%s: %d streams are already finishing for clients that left; stopping this one",
                 stream, self.limit.most)
        return False

    def watch_for_readers(self) -> None:
        """The client left an answer that goes on: from now on, the grace period counts."""
        if self._recording is not None and not self._seen_reader:
            self._seen_reader = time.monotonic()
            self._recording.watch_readers()

    def unread(self, now: float) -> bool:
        """With resume: has nobody read the answer for the grace period (and it is not yet abandoned)?"""
        assert self._recording is not None and self.grace is not None
        if self.abandoned:
            return False
        if self._recording.attached:
            self._seen_reader = now
            return False
        return now - self._seen_reader > self.grace
