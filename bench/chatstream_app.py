"""This project as the benchmark measures it: the README's app, the blueprint and nothing else (the
example app adds a database, hooks and a tool, which are the app's costs, not the relay's)."""

from __future__ import annotations

import os

from flask import Flask

from flask_chatstream import create_blueprint

if os.environ.get("BENCH_OTEL_SDK"):  # tracing measured as a host that traces runs it: a real SDK
    from collections.abc import Sequence

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        """Spans made, batched and handed over, then dropped: an exporter's network is not ours to count."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))

app = Flask(__name__)
app.config.update({k: v for k, v in os.environ.items() if k.startswith("CHATSTREAM_")})  # for bench.compare
app.register_blueprint(create_blueprint(model="gpt-4o-mini"), url_prefix="/api")  # OPENAI_API_KEY, OPENAI_BASE_URL
