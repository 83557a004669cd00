"""Faults the stand-in plays at a point of an answer, each small, and composed: a ``Script`` takes any
number of them, played in the order given (``Script(faults=[Stall(after=2, seconds=5), Cut(after=4)])``).
The script's ``*_after`` fields are shorthand for the same faults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .playback import Playback
    from .wire import ChatWire, ResponsesWire

Send = Callable[[bytes], None]


class Dropped(Exception):
    """The connection is dropped: no finish, no [DONE], no chunked terminator."""


@dataclass(frozen=True)
class Fault:
    after: int
    """How many content chunks are sent before it (0: before the first)."""

    at_end: ClassVar[bool] = False
    """Does it happen after the last chunk when ``after`` is past the answer's end?"""

    def play(self, playback: Playback, wire: ChatWire | ResponsesWire, send: Send) -> bool:
        """Do it; True if the answer ends here (with its chunked terminator)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Cut(Fault):
    """Drop the connection."""

    at_end: ClassVar[bool] = True

    def play(self, playback: Playback, wire: ChatWire | ResponsesWire, send: Send) -> bool:
        raise Dropped()


@dataclass(frozen=True)
class Hold(Fault):
    """Wait until ``StandInServer.release()`` (a gate the test opens)."""

    at_end: ClassVar[bool] = True

    def play(self, playback: Playback, wire: ChatWire | ResponsesWire, send: Send) -> bool:
        playback.hold()
        return False


@dataclass(frozen=True)
class Stall(Fault):
    """Send nothing for ``seconds`` (but the script's comments), then carry on."""

    seconds: float = 3600.0

    def play(self, playback: Playback, wire: ChatWire | ResponsesWire, send: Send) -> bool:
        playback.wait(self.seconds)
        return False


@dataclass(frozen=True)
class Malformed(Fault):
    """Send a data line that is not JSON, then carry on."""

    def play(self, playback: Playback, wire: ChatWire | ResponsesWire, send: Send) -> bool:
        send(b"data: {not json\n\n")
        return False


@dataclass(frozen=True)
class Fail(Fault):
    """Send an in-stream error event (``response.failed`` in the Responses API) and end."""

    def play(self, playback: Playback, wire: ChatWire | ResponsesWire, send: Send) -> bool:
        send(wire.failed())
        return True
