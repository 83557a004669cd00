"""What the view decided for one stream, as one object: the relay, its generation and its answer each
read their part of it, instead of taking a constructor argument each."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ContextManager

from .._chat import ChatRequest, ChatResult, ToolCall
from .._emit import HostEvent
from .._observe import NOT_WATCHED, Watch
from .._tools import Tool, ToolRun
from .._upstream.client import UpstreamStream
from .._upstream.transport import Cancel
from .after_leave import FinishingLimit


if TYPE_CHECKING:
    from .._approvals import ApprovalKey
    from .._hooks import MessageMetadataHooks
    from .._resume.journal import Recording  # the stream records; it needs no more of resume

NO_REQUEST = ChatRequest(messages=[], model="", max_tokens=0)
"""The request of a stream made without one (the warm-up's)."""


@dataclass(frozen=True)
class Prelude:
    """What the answer starts with, before the model says anything."""

    message_id: str | None = None
    """The assistant message the answer goes on with (the AI SDK's id): the ``ui`` format's
    ``messageId``, so the client adds to that message instead of showing a second one."""
    data: tuple[HostEvent, ...] = ()
    """What the ``before_upstream`` hooks (and the calls a request approved) emitted."""
    runs: tuple[ToolRun, ...] = ()
    """The calls the request approved (run) or denied: their results."""
    run: tuple[str, str] | None = None
    """An AG-UI run's thread id and run id, for its ``RUN_STARTED`` and ``RUN_FINISHED``."""


@dataclass(frozen=True)
class StreamSpec:
    """One stream's parts beside its upstream, its format and the settings. Every field has a default:
    a relay of a bare upstream (the warm-up, ``flask chatstream check``) needs none of them."""

    stream_id: str = ""
    owner: str = ""
    """The client key that started it: who may stop it."""
    chat: ChatRequest | None = None
    """The request the model got (after the hooks)."""
    client: socket.socket | None = None
    """The client's socket, for the watchdog and heartbeats."""
    tools: Mapping[str, Tool] = field(default_factory=dict)
    """The server-side tools this request offers."""
    reopen: Callable[[ChatRequest, Cancel], UpstreamStream] | None = None
    """Opens the next model call of a tool loop."""
    context: Callable[[], ContextManager[object]] | None = None
    """A copy of the request's context, for each tool call's thread."""
    recording: Recording | None = None
    """Where a resumable stream's events are kept."""
    finishing: FinishingLimit | None = None
    """The blueprint's streams that read on for clients that left."""
    metadata: MessageMetadataHooks | None = None
    """The host's message metadata hooks."""
    approval_key: ApprovalKey | None = None
    """Signs the approval ids of calls that wait for a person."""
    prelude: Prelude = Prelude()
    watch: Watch = NOT_WATCHED
    """What hears of its model calls, tool calls and end (``_observe``)."""
    on_close: Callable[[], None] | None = None
    """Called once when the relay lets go of the stream: gives back the client's stream slot."""
    on_end: Callable[[ChatResult], None] | None = None
    """Called once with the ``ChatResult`` after the client has its last byte (``after_stream``)."""
    started: float | None = None
    """When the request started (``time.monotonic()``): durations count from here."""
    asked: float | None = None
    """When the first model call was asked for (``time.time()``)."""

    @property
    def approval_tools(self) -> set[str]:
        """Server-side tools that run only once a person approves the call."""
        return {name for name, tool in self.tools.items() if tool.needs_approval}

    @property
    def approval_id(self) -> Callable[[ToolCall], str] | None:
        return self.approval_key.approval_id if self.approval_key is not None else None

    @property
    def preface(self) -> list[Any]:
        """What goes out right after ``start``: the host's data, the results of approved calls."""
        return [*self.prelude.data, *(run.event() for run in self.prelude.runs)]
