"""Between model calls: run a turn of server-side tools, then open the next call with their results.

The model asks for tools, the stream runs them at once (``Calls``), and the next model call's
request is the last one with the turn added. The turn runs in steps of a fraction of a second, so
what its calls ``emit`` goes out while they run. Opening that call waits for the upstream's head; a
stop in the meantime cancels it (``cancel``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ContextManager

from .._chat import ChatRequest
from .._emit import Emitted
from .._tools import Calls, Report, Tool
from .._upstream.client import Stopped, UpstreamStream
from .._upstream.transport import Cancel
from .answer import Answer
from .spec import NO_REQUEST
from .._wire.events import Event



class ToolLoop:
    """One stream's turns of server-side tools."""

    def __init__(self, tools: Mapping[str, Tool], request: ChatRequest | None, *, timeout: float,
                 max_output_chars: int, gone: Callable[[], bool],
                 reopen: Callable[[ChatRequest, Cancel], UpstreamStream] | None,
                 context: Callable[[], ContextManager[object]] | None, report: Report | None = None) -> None:
        self.tools = tools
        self.request = request or NO_REQUEST
        """The request of the current model call: the first one's, then with the tool turns added."""
        self.next: ChatRequest | None = None
        """The request of the next model call, once a turn of tools has run."""
        self.running = False
        """A turn of tools is running (the read timeout waits for it)."""
        self._timeout = timeout
        self._max_output_chars = max_output_chars
        self._gone = gone
        """Has the client left (or stopped the stream)? Then no more tools, and no more model calls."""
        self._reopen = reopen
        self._context = context
        """What each tool call runs inside: a copy of the request's Flask context."""
        self._opening: Cancel | None = None
        """The next model call's request while it waits for its head: a stop cancels it."""
        self._report = report
        """Told of each call that ended (the observer's ``tool_ran``)."""
        self._calls: Calls | None = None
        self._emitted = Emitted()

    def run_turn(self, answer: Answer, wait: float) -> list[Event] | None:
        """Run the model's calls of server-side tools for up to ``wait`` seconds: the data they emitted
        meanwhile; once all have ended (``running`` is False again), their results after it, and the
        next model call is lined up. None if the client left meanwhile."""
        if self._calls is None:
            self.running = True
            self._emitted = Emitted()  # the turn's: closed when it ends, so a call left running cannot emit
            self._calls = Calls(self.tools, answer.turn or [], self.request, timeout=self._timeout,
                                max_output_chars=self._max_output_chars, context=self._context,
                                sink=self._emitted.add, report=self._report)
        ended = self._calls.wait(wait)
        if self._gone():
            self._calls, self.running = None, False
            self._emitted.close()
            return None  # the client left: no more tools or model calls on its account
        events: list[Event] = list(self._emitted.take())
        if not ended:
            return events
        runs = self._calls.results()
        self._calls, self.running = None, False
        events += self._emitted.close() + answer.results(runs)
        if not answer.finished:  # else the client has calls of its own to run first
            self.next = answer.next_request(self.request, runs)
        return events

    def open_next(self) -> UpstreamStream | None:
        """Open the next model call: its stream, or None if the stream was stopped or the client left
        first. Raises the ``ChatStreamError`` that refused it."""
        assert self.next is not None and self._reopen is not None
        request, self.next = self.next, None
        # Set before the look at _gone: a stop that comes after the look finds it and cancels it.
        self._opening = opening = Cancel()
        if self._gone():
            self._opening = None
            return None
        try:
            stream = self._reopen(request, opening)
        except Stopped:
            return None  # stopped, or the client left, while the model had not answered yet
        finally:
            self._opening = None
        self.request = request
        return stream

    def cancel(self, reason: str) -> None:
        """Stop the next model call's request, if it is waiting for its head."""
        opening = self._opening
        if opening is not None:
            opening.cancel(reason)
