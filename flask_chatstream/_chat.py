"""What one stream carries, as plain data: the request the model gets, the tool calls of its
answer, and how the stream ended. The hooks (``_hooks``), the tools and the relay all pass these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._errors import ChatStreamError


class StopReason(str, Enum):
    """Why a stream was stopped from outside its body, in one place: each is also the ``outcome`` of its
    ``ChatResult`` and, where the format says so, the ``code`` of its end. A ``str``: it compares, hashes
    and prints as its value (``"stopped"``), so code that checks ``result.outcome == "stopped"`` works."""

    STOPPED = "stopped"
    """Asked for: ``POST <prefix>/chat/<id>/stop``, on any worker the shared state reaches."""
    CLIENT_LEFT = "client_left"
    """The client hung up."""
    CLIENT_STALLED = "client_stalled"
    """The client stopped reading: a write blocked for longer than ``send_timeout``."""
    TIMEOUT = "timeout"
    """The upstream sent nothing for longer than ``read_timeout``."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


GONE = frozenset({StopReason.CLIENT_LEFT, StopReason.CLIENT_STALLED, StopReason.STOPPED})
"""Stop reasons after which nothing more is written to the client (its answer was stopped, not failed)."""


DENIED = "The user denied this tool call."
"""What the model is told of a call a person denied (``_approvals``), with their reason if they gave one."""


@dataclass(frozen=True)
class ChatRequest:
    """What goes to the model. Plain data: nothing here refers to the Flask request.

    ``messages`` are the messages as they will be sent, the configured system prompt included.
    What the browser sent has been validated strictly; what the app adds in ``before_upstream``
    is trusted.
    """

    messages: list[dict[str, Any]]
    model: str
    max_tokens: int
    temperature: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    """More fields for the upstream's body (``tools``, ``response_format``, ``user``, ``metadata``,
    ``reasoning_effort``, ...). Only the app sets these, never the browser."""
    context: dict[str, Any] = field(default_factory=dict)
    """The app's own, to carry from ``before_upstream`` to ``after_stream`` (a user id, a conversation)."""
    body: Mapping[str, Any] = field(default_factory=dict)
    """The client's JSON body as it came, for the app's own fields (``conversation_id``, say).
    Validate what you take from it: only the fields above have been."""
    state: Any = None
    """The agent's state as the client holds it (an AG-UI ``RunAgentInput.state``; any JSON), or None.
    Send it a new one with ``set_state`` or ``patch_state``."""
    client_tools: tuple[dict[str, Any], ...] = ()
    """The definitions of the tools the browser runs itself (an AG-UI ``RunAgentInput.tools``), in the
    upstream API's shape: offered to the model beside the server's (``params["tools"]``)."""


@dataclass(frozen=True)
class ToolCall:
    """One tool call of the answer, assembled from its streamed fragments, and what came of it."""

    id: str
    name: str
    arguments: str
    """The arguments as the model wrote them: a JSON text, not yet parsed or checked."""
    output: Any = None
    """What a server-side tool returned (``None`` for a client-side tool, or one that failed)."""
    error: str | None = None
    """Why a server-side tool gave no output: the error text the model got instead."""
    denied: bool = False
    """A person denied the call (a tool that needs approval): it did not run, and ``error`` says so."""


@dataclass(frozen=True)
class ChatResult:
    """How one stream ended, for ``after_stream``.

    ``outcome`` is ``"done"`` (the answer is complete), ``"error"`` (``error`` says why: the upstream
    refused, broke off or sent something unreadable), ``"client_left"`` or ``"client_stalled"`` (the
    stream was stopped because the client went away or stopped reading), ``"stopped"`` (asked for) or
    ``"timeout"`` (the upstream went silent): those four are the stop reasons (``StopReason``). With
    ``on_client_leave="finish"`` an answer whose client left can still end ``"done"``;
    ``delivered`` then says the client did not receive its end.
    """

    id: str
    request: ChatRequest
    outcome: str
    text: str = ""
    refusal: str | None = None
    reasoning: str | None = None
    """A reasoning model's thinking, where the upstream streams it (``reasoning_content``)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Every call of every step, with the results of the server-side ones."""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    """The upstream's whole usage object (clients get the token counts only); with tools, the token
    counts summed over every model call of the answer. Set however the stream ended: where the upstream
    did not count a call (it was stopped, cut, timed out), it is counted here and the dict has
    ``"estimated": True``; None only when no model call was made."""
    cost: float | None = None
    """What ``usage`` cost in USD, by ``prices``; None for a model with no price."""
    error: ChatStreamError | None = None
    delivered: bool = False
    """Did the client receive the end of the stream: its terminal event, or all of the text?"""
    started_at: datetime | None = None
    duration: float = 0.0
    """Seconds from the start of the request to the end of the stream."""
    first_token: float | None = None
    """Seconds from the start of the request to the answer's first token (text, reasoning, a refusal
    or a tool call); None if none came."""
    completion_id: str | None = None
    """The upstream's own id for the answer's first model call (``chatcmpl-...``, or ``resp_...``)."""
    response_id: str | None = None
    """With the Responses API: the id of the answer's first response (``resp_...``)."""
