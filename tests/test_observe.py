"""What streams tell the outside: Prometheus metrics (in one process, and summed over two gunicorn
workers in multiprocess mode) and OpenTelemetry spans and metrics in the GenAI conventions."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, eventually, hooked_app
from .servers import Gunicorn
from .streams import events_of, post_chat, read_until

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
        "input": value("chatstream_tokens_total", model="gpt-4o", type="input"),
        "output": value("chatstream_tokens_total", model="gpt-4o", type="output"),
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
    assert value("chatstream_tokens_total", model="gpt-4o", type="input") == before["input"] + usage["prompt_tokens"]
    assert value("chatstream_tokens_total", model="gpt-4o", type="output") == before["output"] + usage["completion_tokens"]
    assert value("chatstream_time_to_first_token_seconds_count", model="gpt-4o") == before["ttft"] + 1
    assert value("chatstream_tool_calls_total", tool="add", outcome="ok") == before["tool"] + 1
    assert value("chatstream_streams_active", format="ndjson") == before["active"]
    # the model a client asked for but was not allowed never becomes a label
    assert not [s for m in REGISTRY.collect() for s in m.samples if s.labels.get("model") == "not-allowed"]
    assert [r.first_token is not None for r in results] == [True, False]
    assert 0 < results[0].first_token <= results[0].duration  # type: ignore[operator]


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


def test_two_workers_in_multiprocess_mode_sum_to_the_exact_counts(_standin: StandInServer, tmp_path: Path) -> None:
    """Streams that finish, call a tool, fail with a 429 (retried once), and lose their client, each on
    a fresh connection until both workers have served some: a scrape sums them exactly, and no stream
    is left open."""
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "CHATSTREAM_MAX_RETRIES": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with Gunicorn(app="tests.metrics_app:app", workers=2, env=env) as server:
        workers: set[str] = set()
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        done = 0
        _standin.script = Script(reply="one two three")
        while len(workers) < 2 or done < 4:
            assert done < 200, "one worker served every request"
            conn, response = post_chat(server.port, "ndjson")
            workers.add(response.getheader("X-Worker"))
            events = events_of("ndjson", response.read())
            conn.close()
            done += 1
            for key in usage:
                usage[key] += events[-1]["usage"][key]
        _standin.script = Script(reply=lambda m: f"sum {m[-1]['content']}",
                                 tool_calls=[{"id": "c", "name": "add", "arguments": {"a": 1, "b": 2}}])
        conn, response = post_chat(server.port, "ndjson")
        events = events_of("ndjson", response.read())
        conn.close()
        for key in usage:
            usage[key] += events[-1]["usage"][key]
        _standin.script = Script(status=429, retry_after="0")
        conn, response = post_chat(server.port, "ndjson")
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

        scraped = eventually(lambda: scrape(server),
                             lambda m: sample(m, "chatstream_streams_total", format="ndjson", model="gpt-4o-mini",
                                              outcome="client_left") == 1)
    model = {"model": "gpt-4o-mini"}
    assert sample(scraped, "chatstream_streams_total", format="ndjson", outcome="done", **model) == done + 1
    assert sample(scraped, "chatstream_streams_total", format="ndjson", outcome="error", **model) == 1
    assert sample(scraped, "chatstream_upstream_errors_total", code="rate_limited") == 1  # once, though tried twice
    assert sample(scraped, "chatstream_upstream_retries_total") == 1
    assert sample(scraped, "chatstream_tool_calls_total", tool="add", outcome="ok") == 1
    assert sample(scraped, "chatstream_tokens_total", type="input", **model) == usage["prompt_tokens"]
    assert sample(scraped, "chatstream_tokens_total", type="output", **model) == usage["completion_tokens"]
    assert sample(scraped, "chatstream_time_to_first_token_seconds_count", **model) == done + 1 + 1  # and the one who left
    assert sample(scraped, "chatstream_stream_duration_seconds_count", outcome="done", **model) == done + 1
    assert sample(scraped, "chatstream_streams_active", format="ndjson") == 0


def read_until_socket(sock: socket.socket, needle: bytes) -> bytes:
    seen = b""
    sock.settimeout(10)
    while needle not in seen:
        piece = sock.recv(65536)
        assert piece, seen
        seen += piece
    return seen
