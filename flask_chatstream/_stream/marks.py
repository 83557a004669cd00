"""What the relay adds to an answer's ``start`` and ``done``: the message id the answer goes on with
(an AG-UI run's ids), and the host's message metadata; and the ``done`` it holds back while the end hook waits for the text
before it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._wire.events import Event


class Marks:
    __slots__ = ("message_id", "run", "start", "end", "any")  # one per open stream: no dict of its own

    def __init__(self, message_id: str | None, run: tuple[str, str] | None = None) -> None:
        self.message_id = message_id
        self.run = run
        self.start: dict[str, Any] | None = None
        self.end: Callable[[], dict[str, Any] | None] | None = None
        self.any = message_id is not None or run is not None  # anything to add? (checked once per read: most
        # answers have nothing)

    def metadata(self, start: dict[str, Any] | None, end: Callable[[], dict[str, Any] | None]) -> None:
        """The host's message metadata: ``start`` goes on the ``start`` event, and what ``end()`` says
        once the answer is done on the ``done`` event."""
        self.start, self.end, self.any = start, end, True

    def hold(self, events: list[Event], priming: bool) -> tuple[list[Event], list[Event] | None]:
        """The events to send now, and the answer's ``done`` (with what follows it) to hold back. The end
        hook (it may be slow) runs once the text before the answer's end is out: hold the ``done`` back
        when text comes with it in one read, or before the first byte (an answer that came whole while
        the start hook ran, say)."""
        if self.end is None:
            return events, None
        at = next((i for i, event in enumerate(events) if event["type"] == "done"), None)
        if at is not None and (at > 0 or priming):
            return events[:at], events[at:]
        return events, None

    def add(self, events: list[Event]) -> None:
        for event in events:
            if event["type"] == "start":
                if self.message_id is not None:
                    event["message_id"] = self.message_id
                if self.run is not None:
                    event["thread_id"], event["run_id"] = self.run
                if self.start:
                    event["metadata"] = self.start
            elif event["type"] == "done" and self.end is not None:
                end = self.end()
                if end:
                    event["metadata"] = end
