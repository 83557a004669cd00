"""Prometheus metrics, through ``prometheus_client``, in its default registry.

Under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` (an empty folder) before the
workers start: each worker then writes its values there, a ``MultiProcessCollector`` sums them for a
scrape, and the package's gunicorn settings mark a dead worker's files (``child_exit``), so its open
streams leave ``chatstream_streams_active``.

Label values are bounded: formats and outcomes are ours, ``model`` is the model the relay asked for
(one of ``allowed_models``, or what a hook chose), ``code`` one of our error codes, ``tool`` one of the
blueprint's tools.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from .._errors import UpstreamError
from .watch import Observer, Watch, token_counts

if TYPE_CHECKING:
    from .._chat import ChatRequest, ChatResult
    from .._tools import ToolRun

TTFT_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 45.0, 60.0)
"""Seconds to the first token: a fast model answers in well under a second, a reasoning model may think for a minute."""
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
OUTCOMES = ("done", "error", "client_left", "client_stalled", "stopped")


class _Metrics:
    """The metrics, made once per process: a registry takes each name once."""

    def __init__(self) -> None:
        self.streams = Counter("chatstream_streams", "Chats that passed validation, by how they ended.",
                               ["format", "model", "outcome"])
        self.active = Gauge("chatstream_streams_active", "Streams open now.", ["format"], multiprocess_mode="livesum")
        self.ttft = Histogram("chatstream_time_to_first_token_seconds",
                              "Seconds from the request to the answer's first token.", ["model"],
                              buckets=TTFT_BUCKETS)
        self.duration = Histogram("chatstream_stream_duration_seconds", "Seconds from the request to the stream's end.",
                                  ["model", "outcome"], buckets=DURATION_BUCKETS)
        self.tokens = Counter("chatstream_tokens", "Tokens of every stream however it ended, input and output; "
                              "estimated=\"true\" for those counted here, where the upstream did not count them "
                              "(a stopped or cut stream).", ["model", "type", "estimated"])
        self.cost = Counter("chatstream_cost_usd", "What the answers cost in US dollars, by the prices setting.",
                            ["model"])
        self.upstream_errors = Counter("chatstream_upstream_errors", "Chats the upstream failed, once per chat, by code.",
                                       ["code"])
        self.retries = Counter("chatstream_upstream_retries", "Upstream attempts made again after a failure.")
        self.tool_calls = Counter("chatstream_tool_calls", "Server-side tool calls, by how they ended.",
                                  ["tool", "outcome"])
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per label set: ``labels()`` checks and locks on every
        call, and a stream's end touches six. The label values are bounded (above), so is this cache."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found


_made: _Metrics | None = None
_lock = threading.Lock()


def metrics() -> _Metrics:
    global _made
    with _lock:
        if _made is None:
            _made = _Metrics()
        return _made


class PrometheusObserver(Observer):
    def __init__(self) -> None:
        self._m = metrics()

    def stream(self, fmt: str, request: ChatRequest) -> Watch:
        return _PrometheusWatch(self._m, fmt)

    def retried(self) -> None:
        self._m.retries.inc()


class _PrometheusWatch(Watch):
    def __init__(self, m: _Metrics, fmt: str) -> None:
        self._m = m
        self._fmt = fmt
        m.child(m.active, fmt).inc()

    def tool_ran(self, run: ToolRun, outcome: str, start: float, end: float) -> None:
        self._m.child(self._m.tool_calls, run.call.name, outcome).inc()

    def ended(self, result: ChatResult) -> None:
        m = self._m
        model = result.request.model
        outcome = result.outcome if result.outcome in OUTCOMES else "error"
        m.child(m.active, self._fmt).dec()
        m.child(m.streams, self._fmt, model, outcome).inc()
        m.child(m.duration, model, outcome).observe(result.duration)
        if result.first_token is not None:
            m.child(m.ttft, model).observe(result.first_token)
        estimated = "true" if result.usage and result.usage.get("estimated") else "false"
        for kind, count in token_counts(result.usage):
            m.child(m.tokens, model, kind, estimated).inc(count)
        if result.cost:
            m.child(m.cost, model).inc(result.cost)
        if isinstance(result.error, UpstreamError):
            m.child(m.upstream_errors, result.error.code).inc()

