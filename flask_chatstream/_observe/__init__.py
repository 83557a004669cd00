"""What streams tell the outside: Prometheus metrics and OpenTelemetry traces, each optional.

A blueprint's ``Observer`` makes a ``Watch`` for each stream, in the view (so a trace can follow the
request's), and hears of upstream retries. A watch hears a few things, never a chunk: each model call
that ended, each tool call that ended, and the stream's end (its ``ChatResult``, on every path
``after_stream`` sees). ``observer(settings)`` builds what the settings and the installed packages
allow: ``prometheus_client`` for metrics (``prometheus``), ``opentelemetry-api`` for traces and the
GenAI metrics (``otel``). Neither is imported unless it is installed and on.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._chat import ChatRequest, ChatResult
    from .._config import Settings
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


class _Watches(Watch):
    def __init__(self, watches: list[Watch]) -> None:
        self._watches = watches

    def model_call(self, call: ModelCall) -> None:
        for watch in self._watches:
            watch.model_call(call)

    def tool_ran(self, run: ToolRun, outcome: str, start: float, end: float) -> None:
        for watch in self._watches:
            watch.tool_ran(run, outcome, start, end)

    def ended(self, result: ChatResult) -> None:
        for watch in self._watches:
            watch.ended(result)


class _Observers(Observer):
    def __init__(self, observers: list[Observer]) -> None:
        self._observers = observers

    def stream(self, fmt: str, request: ChatRequest) -> Watch:
        watches = [watch for observer in self._observers if (watch := observer.stream(fmt, request)) is not NOT_WATCHED]
        if len(watches) < 2:  # (OpenTelemetry with no provider set does not watch: no layer for it)
            return watches[0] if watches else NOT_WATCHED
        return _Watches(watches)

    def retried(self) -> None:
        for observer in self._observers:
            observer.retried()


def observer(settings: Settings) -> Observer:
    """What observes a blueprint's streams: metrics and traces as the settings ask and the installed
    packages allow, or ``NOTHING``."""
    found: list[Observer] = []
    if settings.metrics and importlib.util.find_spec("prometheus_client") is not None:
        from .prometheus import PrometheusObserver

        found.append(PrometheusObserver())
    if settings.tracing and importlib.util.find_spec("opentelemetry") is not None \
            and importlib.util.find_spec("opentelemetry.trace") is not None:
        from .otel import OtelObserver

        found.append(OtelObserver())
    if not found:
        return NOTHING
    return found[0] if len(found) == 1 else _Observers(found)
