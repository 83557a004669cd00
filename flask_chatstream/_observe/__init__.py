"""What streams tell the outside: Prometheus metrics and OpenTelemetry traces, each optional.

An ``Observer`` hears a few things per stream, never per chunk: a stream starts (it passed
validation and the hooks), it ends (its ``ChatResult``, on every path ``after_stream`` sees), a tool
call ran, the upstream was retried. ``observer(settings)`` builds what the settings and the installed
packages allow: ``prometheus_client`` for metrics (``prometheus``), ``opentelemetry-api`` for
traces and GenAI metrics (``otel``). Neither package is imported unless it is installed and on.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._chat import ChatResult
    from .._config import Settings
    from .._tools import ToolRun


class Observer:
    """Hears nothing: the base, and what runs when nothing observes."""

    def started(self, fmt: str) -> None:
        """A stream starts (``fmt`` is its format's name)."""

    def ended(self, result: ChatResult, fmt: str) -> None:
        """A stream that ``started`` has ended."""

    def tool_ran(self, run: ToolRun, outcome: str, start: float, end: float) -> None:
        """A server-side tool call ended: ``ok``, ``error`` or ``timeout``, between two ``time.time()``s."""

    def retried(self) -> None:
        """The upstream is asked again after a failed attempt."""


class Observers(Observer):
    """Several observers, each told everything in turn."""

    def __init__(self, observers: list[Observer]) -> None:
        self._observers = observers

    def started(self, fmt: str) -> None:
        for observer in self._observers:
            observer.started(fmt)

    def ended(self, result: ChatResult, fmt: str) -> None:
        for observer in self._observers:
            observer.ended(result, fmt)

    def tool_ran(self, run: ToolRun, outcome: str, start: float, end: float) -> None:
        for observer in self._observers:
            observer.tool_ran(run, outcome, start, end)

    def retried(self) -> None:
        for observer in self._observers:
            observer.retried()


NOTHING = Observer()


def observer(settings: Settings) -> Observer:
    """What observes a blueprint's streams: metrics and traces as the settings ask and the installed
    packages allow, or ``NOTHING``."""
    found: list[Observer] = []
    if settings.metrics and importlib.util.find_spec("prometheus_client") is not None:
        from .prometheus import PrometheusObserver

        found.append(PrometheusObserver())
    if not found:
        return NOTHING
    return found[0] if len(found) == 1 else Observers(found)
