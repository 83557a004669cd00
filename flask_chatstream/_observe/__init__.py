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
from typing import TYPE_CHECKING

from .watch import NOT_WATCHED, NOTHING, ModelCall, Observer, Watch, token_counts

if TYPE_CHECKING:
    from .._chat import ChatRequest, ChatResult
    from .._config import Settings
    from .._tools import ToolRun

__all__ = ["NOT_WATCHED", "NOTHING", "ModelCall", "Observer", "Watch", "observer", "token_counts"]


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
