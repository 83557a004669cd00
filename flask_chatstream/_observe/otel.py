"""OpenTelemetry: spans and metrics in the GenAI semantic conventions, through ``opentelemetry-api``.

Without an SDK configured by the host, the API's tracer and meter do nothing; a stream is then not
watched at all (asked per stream, so a provider the host sets later is used from then on). This module
is imported only when ``opentelemetry-api`` is installed (and ``tracing`` is on).

- A span per model call, ``chat {model}`` (CLIENT), and one per server-side tool call,
  ``execute_tool {name}``, both children of the span that was current in the view: the Flask
  request's, when the host instruments Flask. They are made as each call ends, with its own start
  and end times, so nothing here runs per chunk.
- The metrics ``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration`` (per model call)
  and ``gen_ai.client.operation.time_to_first_chunk`` (per answer).

Message contents are never recorded: only names, counts, ids and error codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .watch import NOT_WATCHED, ModelCall, Observer, Watch, token_counts

if TYPE_CHECKING:
    from .._chat import ChatRequest, ChatResult
    from .._tools import ToolRun

PROVIDER = "openai"
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
"""The buckets the GenAI conventions advise."""


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class OtelObserver(Observer):
    def __init__(self) -> None:
        self.tracer = trace.get_tracer("flask_chatstream")
        meter = metrics.get_meter("flask_chatstream")
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used, input and output.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Seconds one model call took.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk", unit="s",
            description="Seconds from the request to the answer's first chunk.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)

    def stream(self, fmt: str, request: ChatRequest) -> Watch:
        if _unset():
            return NOT_WATCHED
        return _OtelWatch(self, otel_context.get_current())


def _unset() -> bool:
    """Has the host set neither a tracer provider nor a meter provider (so that every span and record
    would go to the API's no-op)? The API hands out its proxies until one is set."""
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) \
        and type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"


class _OtelWatch(Watch):
    def __init__(self, observer: OtelObserver, parent: otel_context.Context) -> None:
        self._o = observer
        self._parent = parent
        """The context current in the view: its span (the Flask request's) is the parent of ours."""
        self._calls = 0

    def model_call(self, call: ModelCall) -> None:
        self._calls += 1
        request = call.request
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": request.model, "gen_ai.request.max_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        chat_id = request.context.get("chat_id")
        if isinstance(chat_id, str):
            attributes["gen_ai.conversation.id"] = chat_id
        metric = {k: attributes[k] for k in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model")}
        if call.response_model:
            attributes["gen_ai.response.model"] = metric["gen_ai.response.model"] = call.response_model
        if call.response_id:
            attributes["gen_ai.response.id"] = call.response_id
        if call.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [call.finish_reason]
        for kind, count in token_counts(call.usage):
            attributes[f"gen_ai.usage.{kind}_tokens"] = count
            self._o.token_usage.record(count, {**metric, "gen_ai.token.type": kind})
        if call.usage and call.usage.get("estimated"):
            attributes["chatstream.usage.estimated"] = True  # counted here: the upstream did not
        if call.error is not None:
            attributes["error.type"] = metric["error.type"] = call.error.code
        self._o.duration.record(max(0.0, call.end - call.start), metric)
        span = self._o.tracer.start_span(f"chat {request.model}", context=self._parent, kind=SpanKind.CLIENT,
                                         start_time=_ns(call.start), attributes=attributes)
        if call.error is not None:
            span.set_status(Status(StatusCode.ERROR, call.error.code))
        span.end(end_time=_ns(call.end))

    def tool_ran(self, run: ToolRun, outcome: str, start: float, end: float) -> None:
        attributes: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": run.call.name,
                                      "gen_ai.tool.call.id": run.call.id, "gen_ai.tool.type": "function"}
        if outcome != "ok":
            attributes["error.type"] = outcome if outcome == "timeout" else "tool_error"
        span = self._o.tracer.start_span(f"execute_tool {run.call.name}", context=self._parent,
                                         kind=SpanKind.INTERNAL, start_time=_ns(start), attributes=attributes)
        if outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, attributes["error.type"]))
        span.end(end_time=_ns(end))

    def ended(self, result: ChatResult) -> None:
        model = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDER,
                 "gen_ai.request.model": result.request.model}
        if result.first_token is not None:
            self._o.first_chunk.record(result.first_token, model)
        if not self._calls and result.error is not None and result.started_at is not None:
            # refused before the first byte: no stream was read, but a call was made
            start = result.started_at.timestamp()
            self.model_call(ModelCall(result.request, start, start + result.duration, error=result.error))
