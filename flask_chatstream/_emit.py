"""``emit``: the host's own data, sent with the answer (a tool's progress, a hook's documents); and
``set_state`` / ``patch_state``: the agent's state, which an AG-UI client keeps (its shared state).

A stream's data goes out in order with the rest of its events: ``data-<name>`` parts in ``ui``,
``{"type": "data", ...}`` events in NDJSON and SSE (text/plain has no place for it). Where ``emit``
sends to is a context variable: the view sets it while the ``before_upstream`` hooks (and calls a
request approved) run, and each tool call's thread sets it for the call; its data then goes out
while the tool is still running, before its result.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Union

import orjson

from ._wire.events import DataEvent, StateEvent

HostEvent = Union[DataEvent, StateEvent]
"""What the host sends with an answer itself."""
Sink = Callable[[HostEvent], None]

_SINK: ContextVar[Sink | None] = ContextVar("flask_chatstream.emit", default=None)
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def emit(name: str, data: Any, *, id: str | None = None, transient: bool = False) -> None:
    """Send ``data`` (anything JSON can carry) to the client with the answer now being made.

    Call it from a tool, or from a ``before_upstream`` hook. With ``id``, a later ``emit`` of the same
    name and id replaces this one on the client (``useChat`` updates the part: progress). A
    ``transient`` one is for the moment only: ``useChat`` hands it to ``onData`` and keeps no part, and
    a resumed stream does not replay it.
    """
    sink = _sink("emit()")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"emit(): the name must be 1 to 64 letters, digits, '_' or '-': {name!r}.")
    if id is not None and not isinstance(id, str):
        raise TypeError("emit(): id must be a string.")
    data = _json("emit()", data)
    event: DataEvent = {"type": "data", "name": name, "data": data}
    if id is not None:
        event["id"] = id
    if transient:
        event["transient"] = True
    sink(event)


def set_state(state: Any) -> None:
    """Send the agent's whole state to the client with the answer now being made: AG-UI's
    ``STATE_SNAPSHOT`` (the client's ``agent.state`` becomes it). Call it from a tool or a
    ``before_upstream`` hook; the request's state is ``chat_request.state``. Other formats carry it as a
    ``state`` event (``data-state`` in ``ui``)."""
    sink = _sink("set_state()")
    if state is None:
        raise ValueError("set_state(): the state cannot be None (AG-UI has no null state).")
    sink({"type": "state", "snapshot": _json("set_state()", state)})


def patch_state(operations: list[dict[str, Any]]) -> None:
    """Send a change to the agent's state, as a JSON Patch (RFC 6902) to what the client holds: AG-UI's
    ``STATE_DELTA``. ``[{"op": "replace", "path": "/count", "value": 2}]``."""
    sink = _sink("patch_state()")
    if not isinstance(operations, list) or not all(
            isinstance(op, dict) and op.get("op") in _OPS and isinstance(op.get("path"), str) for op in operations):
        raise ValueError('patch_state(): the change must be a JSON Patch: a list of {"op", "path", ...} '
                         f"with op one of {', '.join(_OPS)}.")
    sink({"type": "state", "delta": _json("patch_state()", operations)})


_OPS = ("add", "remove", "replace", "move", "copy", "test")


def _sink(caller: str) -> Sink:
    sink = _SINK.get()
    if sink is None:
        raise RuntimeError(f"{caller} sends data with an answer: call it from a tool, or from a before_upstream "
                           "hook, while a chat request runs.")
    return sink


def _json(caller: str, value: Any) -> Any:
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError as exc:
        raise TypeError(f"{caller}: the data must be what JSON can carry: {exc}") from None


class Emitted:
    """What was emitted and has not gone out yet (from any thread), until it is closed."""

    _events: deque[HostEvent] | None = None
    """Made at the first ``emit``: most answers emit nothing, and an empty deque is 600 bytes a stream."""

    def __init__(self) -> None:
        self._open = True

    def add(self, event: HostEvent) -> None:
        if not self._open:
            raise RuntimeError("emit() was called after its answer ended (from a thread that a tool left "
                               "running past its timeout?): nothing can carry the data now.")
        events = self._events
        if events is None:  # the first: made once however many threads emit at once (setdefault is atomic)
            events = self.__dict__.setdefault("_events", deque())
        events.append(event)

    def close(self) -> list[HostEvent]:
        """What was emitted and has not gone out yet; a later ``emit`` to this raises ``RuntimeError``."""
        self._open = False
        return self.take()

    def take(self) -> list[HostEvent]:
        taken: list[HostEvent] = []
        events = self._events
        while events:
            taken.append(events.popleft())
        return taken


@contextmanager
def emitting_to(sink: Sink | None) -> Iterator[None]:
    """``emit`` sends to ``sink`` inside this block (in this thread, or greenlet)."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)
