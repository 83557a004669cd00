"""What a stream's watch and a blueprint's observer hear: the base classes, which hear nothing, and the
plain data they are told (``ModelCall``). The backends (``prometheus``, ``otel``) subclass them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._chat import ChatRequest, ChatResult
    from .._errors import ChatStreamError
    from .._tools import ToolRun


@dataclass(frozen=True)
class ModelCall:
    """One call of the model for an answer (a tool loop makes several), as plain data."""

    request: ChatRequest
    start: float
    """``time.time()`` as the call was asked for; ``end`` as its answer ended (or it failed)."""
    end: float
    response_id: str | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: ChatStreamError | None = None


class Watch:
    """Hears one stream: the base hears nothing."""

    def model_call(self, call: ModelCall) -> None:
        """A model call of the answer ended."""

    def tool_ran(self, run: ToolRun, outcome: str, start: float, end: float) -> None:
        """A server-side tool call ended: ``ok``, ``error`` or ``timeout``, between two ``time.time()``s."""

    def ended(self, result: ChatResult) -> None:
        """The stream ended (once)."""


class Observer:
    """Hears a blueprint's streams: the base hears nothing."""

    def stream(self, fmt: str, request: ChatRequest) -> Watch:
        """A stream starts, in the view (``fmt`` is its format's name)."""
        return NOT_WATCHED

    def retried(self) -> None:
        """The upstream is asked again after a failed attempt."""


def token_counts(usage: dict[str, Any] | None) -> list[tuple[str, int]]:
    """``input`` and ``output`` token counts from either API's usage (those it gave as whole numbers)."""
    counts = []
    for kind, names in (("input", ("prompt_tokens", "input_tokens")), ("output", ("completion_tokens", "output_tokens"))):
        count = next((usage[n] for n in names if isinstance(usage.get(n), int)), None) if usage else None
        if count:
            counts.append((kind, count))
    return counts


NOT_WATCHED = Watch()
NOTHING = Observer()
