"""The example app, in offline demo mode and pointed at a model, as the README's quick start runs it."""

from __future__ import annotations

import http.client
import importlib
import json

import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import Gunicorn
from .streams import answer_of, check_event_stream, ndjson_events


def load_example(monkeypatch: pytest.MonkeyPatch, **env: str):  # type: ignore[no-untyped-def]
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import example_app

    return importlib.reload(example_app).app


def test_offline_demo_streams_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    app = load_example(monkeypatch)
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert 'id="demo-banner"' in page and "/api/chatstream.js" in page
    response = client.post("/api/chat", json={"content": "What is NDJSON?"},
                           headers={"Accept": "application/x-ndjson"}, buffered=False)
    pieces = list(response.response)
    events = ndjson_events(b"".join(pieces))
    assert check_event_stream(events)["type"] == "done"
    assert events[0]["model"] == "offline-demo"
    assert answer_of(events).startswith("You asked: \u201cWhat is NDJSON?\u201d. This is the offline demo model")
    assert len(pieces) > 20


def test_with_a_key_it_uses_the_configured_model(monkeypatch: pytest.MonkeyPatch, upstream: StandInServer) -> None:
    upstream.script = Script(reply="from the configured upstream")
    app = load_example(monkeypatch, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url)
    client = app.test_client()
    assert 'id="demo-banner"' not in client.get("/").get_data(as_text=True)
    assert client.post("/api/chat", json={"content": "hi"}).get_data(as_text=True) == "from the configured upstream"
    assert upstream.stats.requests == 1


def test_quick_start_under_gunicorn_runs_the_demo() -> None:
    with Gunicorn(env={}) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("POST", "/api/chat", body=json.dumps({"content": "hello"}),
                     headers={"Content-Type": "application/json", "Accept": "application/x-ndjson"})
        response = conn.getresponse()
        events = ndjson_events(response.read())
        conn.close()
        assert check_event_stream(events)["type"] == "done" and "offline demo model" in answer_of(events)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/api/chatstream.js")
        script = conn.getresponse()
        assert script.status == 200 and script.getheader("Content-Type").startswith("text/javascript")
        assert b"export async function* streamChat" in script.read()
        conn.close()
        assert "DEMO MODE" in server.log()
