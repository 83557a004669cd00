"""What streams tell the outside: Prometheus metrics (in one process, and summed over two gunicorn
workers in multiprocess mode) and OpenTelemetry spans and metrics in the GenAI conventions."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, eventually, hooked_app
from .servers import ROOT, Gunicorn, free_port, wait_for_port
from .streams import events_of, post_chat

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

# ---- Prometheus, in one process ------------------------------------------------------------------------


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_stream_a_refusal_and_a_tool_are_counted(upstream: StandInServer) -> None:
    app, blueprint, results = hooked_app(upstream, allowed_models=["gpt-4o-mini", "gpt-4o"])
    blueprint.tool(lambda a, b: a + b, name="add", description="Add.")
    before = {
        "done": value("chatstream_streams_total", format="ndjson", model="gpt-4o", outcome="done"),
        "error": value("chatstream_streams_total", format="ndjson", model="gpt-4o", outcome="error"),
        "rate_limited": value("chatstream_upstream_errors_total", code="rate_limited"),
        "input": value("chatstream_tokens_total", model="gpt-4o", type="input", estimated="false"),
        "output": value("chatstream_tokens_total", model="gpt-4o", type="output", estimated="false"),
        "ttft": value("chatstream_time_to_first_token_seconds_count", model="gpt-4o"),
        "tool": value("chatstream_tool_calls_total", tool="add", outcome="ok"),
        "active": value("chatstream_streams_active", format="ndjson"),  # (tests before may leave theirs open)
    }
    client = app.test_client()
    upstream.script = Script(reply=lambda messages: str(messages[-1]["content"]),
                             tool_calls=[{"id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}}])
    done = events_of("ndjson", client.post("/api/chat?format=ndjson", json={"content": "add", "model": "gpt-4o"},
                                         buffered=True).data)
    upstream.script = Script(status=429)
    assert client.post("/api/chat?format=ndjson", json={"content": "hi", "model": "gpt-4o"},
                       buffered=True).status_code == 429
    assert client.post("/api/chat?format=ndjson", json={"content": "hi", "model": "not-allowed"}).status_code == 400
    usage = done[-1]["usage"]
    assert value("chatstream_streams_total", format="ndjson", model="gpt-4o", outcome="done") == before["done"] + 1
    assert value("chatstream_streams_total", format="ndjson", model="gpt-4o", outcome="error") == before["error"] + 1
    assert value("chatstream_upstream_errors_total", code="rate_limited") == before["rate_limited"] + 1
    assert value("chatstream_tokens_total", model="gpt-4o", type="input", estimated="false") == before["input"] + usage["prompt_tokens"]
    assert value("chatstream_tokens_total", model="gpt-4o", type="output", estimated="false") == before["output"] + usage["completion_tokens"]
    assert value("chatstream_time_to_first_token_seconds_count", model="gpt-4o") == before["ttft"] + 1
    assert value("chatstream_tool_calls_total", tool="add", outcome="ok") == before["tool"] + 1
    assert value("chatstream_streams_active", format="ndjson") == before["active"]
    # the model a client asked for but was not allowed never becomes a label
    assert not [s for m in REGISTRY.collect() for s in m.samples if s.labels.get("model") == "not-allowed"]
    assert [r.first_token is not None for r in results] == [True, False]
    assert 0 < results[0].first_token <= results[0].duration  # type: ignore[operator]


def test_a_tool_that_times_out_is_counted_so(upstream: StandInServer) -> None:
    app, blueprint, _ = hooked_app(upstream, tool_timeout=0.3)
    release = threading.Event()

    @blueprint.tool
    def stuck() -> str:
        """Never answers in time."""
        release.wait(30)
        return "late"

    upstream.script = Script(reply="gave up", tool_calls=[{"id": "c", "name": "stuck", "arguments": {}}])
    before = value("chatstream_tool_calls_total", tool="stuck", outcome="timeout")
    try:
        app.test_client().post("/api/chat?format=ndjson", json={"content": "go"}, buffered=True)
    finally:
        release.set()
    assert value("chatstream_tool_calls_total", tool="stuck", outcome="timeout") == before + 1
    assert value("chatstream_tool_calls_total", tool="stuck", outcome="ok") == 0


def test_metrics_off_counts_nothing(upstream: StandInServer) -> None:
    app, _, _ = hooked_app(upstream, metrics=False, allowed_models=["gpt-4o-mini", "m-off"])
    before = value("chatstream_streams_total", format="ndjson", model="m-off", outcome="done")
    app.test_client().post("/api/chat?format=ndjson", json={"content": "hi", "model": "m-off"}, buffered=True)
    assert value("chatstream_streams_total", format="ndjson", model="m-off", outcome="done") == before


# ---- Prometheus, two gunicorn workers ------------------------------------------------------------------


def scrape(server: Gunicorn) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Traffic:
    """Two gunicorn workers in multiprocess mode, after streams that finished (on both workers), called
    a tool, failed with a 429 (retried once) and lost their client."""

    server: Gunicorn
    done: int
    usage: dict[str, int]


@pytest.fixture(scope="module")
def traffic(_standin: StandInServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    hogs = tmp_path_factory.mktemp("hogs")
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "CHATSTREAM_MAX_RETRIES": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("metrics")), "HOG_DIR": str(hogs)}
    with Gunicorn(app="tests.metrics_app:app", workers=2, env=env) as server:
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        done = 0

        def chats(worker: str, same: bool) -> None:
            """Two chats, each on a fresh connection: served by ``worker`` (``same``), or by the other."""
            nonlocal done
            for _ in range(2):
                conn, response = post_chat(server.port, "ndjson", timeout=60)
                assert (response.getheader("X-Worker") == worker) == same
                events = events_of("ndjson", response.read())
                conn.close()
                done += 1
                for key in usage:
                    usage[key] += events[-1]["usage"][key]

        # Each worker in turn holds its hub (hog), so the other must take the next connections: both
        # serve chats, whatever the kernel would have chosen.
        _standin.script = Script(reply="one two three")
        first = Hog(server, hogs, "first")
        chats(first.worker, same=False)
        second = Hog(server, hogs, "second")  # the first worker cannot take it
        assert second.worker != first.worker
        first.release()
        chats(first.worker, same=True)
        second.release()
        _standin.script = Script(reply=lambda m: f"sum {m[-1]['content']}",
                                 tool_calls=[{"id": "c", "name": "add", "arguments": {"a": 1, "b": 2}}])
        conn, response = post_chat(server.port, "ndjson", timeout=60)
        events = events_of("ndjson", response.read())
        conn.close()
        for key in usage:
            usage[key] += events[-1]["usage"][key]
        _standin.script = Script(status=429, retry_after="0")
        conn, response = post_chat(server.port, "ndjson", timeout=60)
        assert response.status == 429
        conn.close()
        _standin.script = Script(reply="one two three four five", hold_after=1)
        sock = socket.create_connection(("127.0.0.1", server.port))
        body = json.dumps({"content": "hi"}).encode()
        sock.sendall(b"POST /api/chat?format=ndjson HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        read_until_socket(sock, b'"delta"')
        sock.close()  # the client leaves while the model is held
        _standin.wait_for(lambda s: s.open == 0)
        yield Traffic(server, done + 1, usage)


@pytest.mark.server
def test_two_workers_in_multiprocess_mode_sum_to_the_exact_counts(traffic: Traffic) -> None:
    """A scrape sums both workers' counts exactly, and no stream is left open."""
    # The one who left is counted a moment after its upstream closed, one series after another: wait for
    # its last (a scrape in between would see its stream counted and not yet its tokens).
    scraped = eventually(lambda: scrape(traffic.server),
                         lambda m: sample(m, "chatstream_streams_total", format="ndjson", model="gpt-4o-mini",
                                          outcome="client_left") == 1
                         and sample(m, "chatstream_tokens_total", type="output", estimated="true", model="gpt-4o-mini"))
    model, done, usage = {"model": "gpt-4o-mini"}, traffic.done, traffic.usage
    assert sample(scraped, "chatstream_streams_total", format="ndjson", outcome="done", **model) == done
    assert sample(scraped, "chatstream_streams_total", format="ndjson", outcome="error", **model) == 1
    assert sample(scraped, "chatstream_upstream_errors_total", code="rate_limited") == 1  # once, though tried twice
    assert sample(scraped, "chatstream_upstream_retries_total") == 1
    assert sample(scraped, "chatstream_tool_calls_total", tool="add", outcome="ok") == 1
    assert sample(scraped, "chatstream_tokens_total", type="input", estimated="false", **model) == usage["prompt_tokens"]
    assert sample(scraped, "chatstream_tokens_total", type="output", estimated="false", **model) \
        == usage["completion_tokens"]
    assert sample(scraped, "chatstream_tokens_total", type="input", estimated="true", **model) > 0  # the one who left
    assert sample(scraped, "chatstream_time_to_first_token_seconds_count", **model) == done + 1  # and the one who left
    assert sample(scraped, "chatstream_stream_duration_seconds_count", outcome="done", **model) == done
    assert sample(scraped, "chatstream_streams_active", format="ndjson") == 0


@pytest.mark.server
@pytest.mark.prometheus
def test_every_query_of_the_grafana_dashboard_finds_its_metrics(traffic: Traffic, tmp_path: Path) -> None:
    """Debian's Prometheus scrapes the two workers every second; each panel's query, run by it, finds
    series (a name the metrics do not have would find none)."""
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(queries) >= 8
    with Prometheus(tmp_path, traffic.server.port) as prometheus:
        # two scrapes of the counters at least, so that rate() has two points
        eventually(lambda: prometheus.query("count_over_time(chatstream_streams_total[1m])"),
                   lambda r: r and min(float(s["value"][1]) for s in r) >= 2)
        for query in queries:
            result = prometheus.query(query.replace("$__rate_interval", "1m"))
            assert result, f"no series for {query}"
        names = set(re.findall(r"\bchatstream_[a-z_]+", " ".join(queries)))
        assert {n.removesuffix("_bucket") for n in names} >= {
            "chatstream_streams_active", "chatstream_streams_total", "chatstream_time_to_first_token_seconds",
            "chatstream_tokens_total", "chatstream_upstream_errors_total"}


class Hog:
    """One request that holds its worker's gevent hub (it spins without yielding, tests/metrics_app.py)
    until released: that worker accepts nothing meanwhile."""

    def __init__(self, server: Gunicorn, hogs: Path, name: str) -> None:
        self._path = hogs / name
        self._thread = threading.Thread(target=self._hog, args=(server.port, name), daemon=True)
        self._thread.start()
        self.worker = eventually(lambda: self._path.with_suffix(".hogging").exists() and
                                 self._path.with_suffix(".hogging").read_text(), bool)
        """Its worker's pid, as ``X-Worker`` gives it."""

    @staticmethod
    def _hog(port: int, name: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", f"/_hog/{name}")
        conn.getresponse().read()
        conn.close()

    def release(self) -> None:
        self._path.with_suffix(".release").touch()
        self._thread.join(60)
        assert not self._thread.is_alive()


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping one target every second, with its data in ``tmp``."""

    def __init__(self, tmp: Path, target: int) -> None:
        assert Path(PROMETHEUS).exists(), "prometheus is required: apt-get install prometheus (make test does)"
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n"
                          f"scrape_configs: [{{job_name: chatstream, static_configs: [{{targets: ['127.0.0.1:{target}']}}]}}]\n")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.process)  # type: ignore[arg-type]
        eventually(self._ready, bool, timeout=60)  # it listens before its storage is open (503 until then)

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/-/ready")
        ready = conn.getresponse().status == 200
        conn.close()
        return ready

    def query(self, promql: str) -> list[dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/api/v1/query?" + urlencode({"query": promql}))
        answer = json.loads(conn.getresponse().read())
        conn.close()
        assert answer["status"] == "success", (promql, answer)
        return list(answer["data"]["result"])

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def read_until_socket(sock: socket.socket, needle: bytes) -> bytes:
    seen = b""
    sock.settimeout(10)
    while needle not in seen:
        piece = sock.recv(65536)
        assert piece, seen
        seen += piece
    return seen


# ---- OpenTelemetry, with the real SDK's in-memory exporters ---------------------------------------------


class Otel:
    """The SDK, set up once for the process (a provider can be set only once), exporting to memory."""

    def __init__(self) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        trace.set_tracer_provider(provider)
        self.reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[self.reader]))

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [point for resource in (data.resource_metrics if data else []) for scope in resource.scope_metrics
                for metric in scope.metrics if metric.name == name for point in metric.data.data_points]


_otel: Otel | None = None


@pytest.fixture
def otel() -> Otel:
    global _otel
    if _otel is None:
        _otel = Otel()
    _otel.spans.clear()
    return _otel


def instrumented(upstream: StandInServer, **options: Any) -> Any:
    """An app as a host that traces runs it: Flask instrumented by opentelemetry-instrumentation-flask."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    app, blueprint, results = hooked_app(upstream, **options)
    FlaskInstrumentor().instrument_app(app)
    return app, blueprint, results


def test_spans_of_a_tool_loop_share_the_flask_requests_trace(upstream: StandInServer, otel: Otel) -> None:
    app, blueprint, _ = instrumented(upstream)
    blueprint.tool(lambda a, b: a + b, name="add", description="Add.")
    upstream.script = Script(reply=lambda messages: f"it is {messages[-1]['content']}",
                             tool_calls=[{"id": "call_a", "name": "add", "arguments": {"a": 2, "b": 3}}])
    body = {"id": "chat-7", "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "2+3?"}]}]}
    response = app.test_client().post("/api/chat?format=ndjson", json=body, buffered=True)
    assert response.status_code == 200
    spans = {span.name: span for span in otel.spans.get_finished_spans()}
    request = next(span for name, span in spans.items() if name.startswith("POST"))
    chats = [span for span in otel.spans.get_finished_spans() if span.name == "chat gpt-4o-mini"]
    tool = spans["execute_tool add"]
    assert len(chats) == 2  # the call that asked for the tool, and the answer after it
    for span in [*chats, tool]:
        assert span.context.trace_id == request.context.trace_id and span.parent.span_id == request.context.span_id
    from opentelemetry.trace import SpanKind, StatusCode

    first, second = sorted(chats, key=lambda s: s.start_time)
    assert first.kind == SpanKind.CLIENT and first.status.status_code == StatusCode.UNSET
    assert dict(first.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 4096, "gen_ai.conversation.id": "chat-7",
        "gen_ai.response.model": "gpt-4o-mini", "gen_ai.response.id": first.attributes["gen_ai.response.id"],
        "gen_ai.response.finish_reasons": ("tool_calls",), "gen_ai.usage.input_tokens": 1,
        "gen_ai.usage.output_tokens": 1}
    assert second.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert first.attributes["gen_ai.response.id"] != second.attributes["gen_ai.response.id"]
    assert first.end_time <= tool.start_time <= tool.end_time <= second.start_time  # in the order they ran
    assert dict(tool.attributes) == {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add",
                                     "gen_ai.tool.call.id": "call_a", "gen_ai.tool.type": "function"}
    assert "2+3" not in json.dumps([dict(s.attributes) for s in otel.spans.get_finished_spans()])  # no contents
    usage = {p.attributes["gen_ai.token.type"]: p for p in otel.points("gen_ai.client.token.usage")
             if p.attributes.get("gen_ai.request.model") == "gpt-4o-mini"}
    assert set(usage) == {"input", "output"}
    assert otel.points("gen_ai.client.operation.duration") and otel.points("gen_ai.client.operation.time_to_first_chunk")


def test_a_refused_call_is_one_span_with_its_error(upstream: StandInServer, otel: Otel) -> None:
    app, _, _ = instrumented(upstream)
    upstream.script = Script(status=429)
    assert app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=True).status_code == 429
    [chat] = [span for span in otel.spans.get_finished_spans() if span.name.startswith("chat ")]
    from opentelemetry.trace import StatusCode

    assert chat.attributes["error.type"] == "rate_limited" and chat.status.status_code == StatusCode.ERROR


def test_a_stopped_calls_span_carries_the_same_estimated_usage_as_after_stream(upstream: StandInServer,
                                                                               otel: Otel) -> None:
    """The client left after a few pieces: the upstream sent no usage, so the call's span has the usage
    counted here, the numbers ``after_stream`` got, marked estimated."""
    app, _, results = instrumented(upstream)
    upstream.script = Script(reply="one two three four five six seven", hold_after=3)
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "count"}, buffered=False)
    pieces, body = iter(response.response), b""
    while b"three" not in body:
        body += next(pieces)
    response.close()
    result = eventually(lambda: results, lambda found: found)[0]
    [chat] = eventually(lambda: [s for s in otel.spans.get_finished_spans() if s.name.startswith("chat ")],
                        lambda found: found)
    assert result.outcome == "client_left" and result.usage is not None and result.usage["estimated"] is True
    assert chat.attributes["chatstream.usage.estimated"] is True
    assert chat.attributes["gen_ai.usage.input_tokens"] == result.usage["prompt_tokens"]
    assert chat.attributes["gen_ai.usage.output_tokens"] == result.usage["completion_tokens"] > 0


def test_a_failing_tool_span_says_so(upstream: StandInServer, otel: Otel) -> None:
    app, blueprint, _ = instrumented(upstream, tool_timeout=30)

    @blueprint.tool
    def broken() -> str:
        """Fail."""
        raise RuntimeError("no")

    upstream.script = Script(reply="sorry", tool_calls=[{"id": "c", "name": "broken", "arguments": {}}])
    app.test_client().post("/api/chat?format=ndjson", json={"content": "go"}, buffered=True)
    [tool] = [span for span in otel.spans.get_finished_spans() if span.name == "execute_tool broken"]
    assert tool.attributes["error.type"] == "tool_error"


def test_tracing_off_makes_no_spans(upstream: StandInServer, otel: Otel) -> None:
    app, _, _ = hooked_app(upstream, tracing=False)
    upstream.script = Script(reply="hi")
    app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=True)
    assert otel.spans.get_finished_spans() == ()


def test_a_provider_the_host_sets_after_registration_is_used_from_then_on(upstream: StandInServer) -> None:
    """Until the host sets a tracer or meter provider, a stream is not watched (every span would go to the
    API's no-op); the first stream after one is set is traced. In a process of its own: a provider can be
    set once per process."""
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        from flask import Flask
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from flask_chatstream import create_blueprint
        from flask_chatstream._observe import otel

        made = []
        class Counted(otel._OtelWatch):
            def __init__(self, *args):
                made.append(self)
                super().__init__(*args)
        otel._OtelWatch = Counted
        app = Flask(__name__)
        app.register_blueprint(create_blueprint(api_key="k", base_url="{upstream.url}", metrics=False),
                               url_prefix="/api")
        chat = lambda: app.test_client().post("/api/chat?format=text", json={{"content": "hi"}}, buffered=True).data
        assert chat() == b"plain" and made == []  # nothing set: not watched
        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(provider)
        assert chat() == b"plain" and len(made) == 1
        assert [span.name for span in spans.get_finished_spans()] == ["chat gpt-4o-mini"]
        print("ok")
    """)
    upstream.script = Script(reply="plain")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("missing", [("prometheus_client", "opentelemetry"), ("prometheus_client",),
                                     ("opentelemetry",)])
def test_without_a_package_nothing_of_it_is_imported_and_streams_work(upstream: StandInServer,
                                                                     missing: tuple[str, ...]) -> None:
    """As in an app without prometheus_client or opentelemetry installed, or without one of them: the
    other still observes (its module must not need the missing one)."""
    import subprocess
    import sys
    import textwrap

    from .servers import ROOT

    present = [p for p in ("prometheus_client", "opentelemetry") if p not in missing]
    script = textwrap.dedent(f"""
        import sys
        for name in {list(missing)!r}:
            sys.modules[name] = None   # as if not installed
        from flask import Flask
        from flask_chatstream import create_blueprint
        app = Flask(__name__)
        app.register_blueprint(create_blueprint(api_key="k", base_url="{upstream.url}"), url_prefix="/api")
        body = app.test_client().post("/api/chat?format=text", json={{"content": "hi"}}, buffered=True).data
        assert body == b"plain", body
        assert not [m for m in sys.modules if m.startswith({missing!r}) and sys.modules[m]]
        assert all(name in sys.modules for name in {present!r})  # the other is in use
        print("ok")
    """)
    upstream.script = Script(reply="plain")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_request_that_breaks_in_our_code_still_ends_its_watch(upstream: StandInServer) -> None:
    """A hook's params that cannot be sent (a bug): a 500, and after_stream and the metrics still hear of
    the stream, so no stream stays open in the gauge."""
    import dataclasses

    from flask_chatstream import ChatRequest

    app, blueprint, results = hooked_app(upstream, allowed_models=["gpt-4o-mini", "m-broken"])

    @blueprint.before_upstream
    def unsendable(chat: ChatRequest) -> ChatRequest:
        return dataclasses.replace(chat, params={**chat.params, "metadata": object()})

    active = value("chatstream_streams_active", format="ndjson")
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi", "model": "m-broken"},
                                      buffered=True)
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_error"
    assert [r.outcome for r in results] == ["error"]
    assert value("chatstream_streams_active", format="ndjson") == active
    assert value("chatstream_streams_total", format="ndjson", model="m-broken", outcome="error") == 1
