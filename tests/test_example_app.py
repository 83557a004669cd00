"""The example app, in offline demo mode and pointed at a model, as the README's quick start runs it."""

from __future__ import annotations

import http.client
import importlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import Gunicorn
from .streams import answer_of, check_event_stream, ndjson_events


@pytest.fixture(autouse=True)
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite file of the test's own: the example app keeps its conversations there."""
    path = tmp_path / "chat.db"
    monkeypatch.setenv("CHAT_DATABASE_URL", f"sqlite:///{path}")
    return path


def load_example(monkeypatch: pytest.MonkeyPatch, **env: str):  # type: ignore[no-untyped-def]
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import example_app

    return importlib.reload(example_app).app


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_offline_demo_streams_without_a_key(monkeypatch: pytest.MonkeyPatch, api: str) -> None:
    app = load_example(monkeypatch, CHATSTREAM_API=api, DEMO_DELAY="0.002")  # the pace is no part of the check
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert 'id="demo-banner"' in page and "/api/chatstream.js" in page
    response = client.post("/api/chat", json={"content": "What is NDJSON?"},
                           headers={"Accept": "application/x-ndjson"}, buffered=False)
    pieces = list(response.response)
    events = ndjson_events(b"".join(pieces))
    assert check_event_stream(events)["type"] == "done"
    assert events[0]["model"] == "offline-demo"
    answer = answer_of(events)
    assert answer.startswith("You asked: \u201cWhat is NDJSON?\u201d. This is the offline demo model")
    # markdown, its whitespace intact through the stream: a list, a table, a fenced code block
    assert "\n\n1. the **openai** client" in answer and "\n| Format | Content-Type | Good for |\n|---|" in answer
    assert "\n```js\nconst reader" in answer and "\n  const { value, done } = await reader.read();\n" in answer
    assert len(pieces) > 20


def test_the_demo_page_and_the_react_examples_share_one_stylesheet(monkeypatch: pytest.MonkeyPatch) -> None:
    client = load_example(monkeypatch).test_client()
    assert '<link rel="stylesheet" href="/chat-ui/chat.css">' in client.get("/").get_data(as_text=True)
    css = client.get("/chat-ui/chat.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert b"prefers-color-scheme: dark" in css.data and b".hljs-keyword" in css.data


def test_with_a_key_it_uses_the_configured_model(monkeypatch: pytest.MonkeyPatch, upstream: StandInServer) -> None:
    upstream.script = Script(reply="from the configured upstream")
    app = load_example(monkeypatch, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url)
    client = app.test_client()
    assert 'id="demo-banner"' not in client.get("/").get_data(as_text=True)
    assert client.post("/api/chat", json={"content": "hi"}).get_data(as_text=True) == "from the configured upstream"
    assert upstream.stats.requests == 1


@pytest.mark.server
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
        log = server.log()
        assert "Demo mode: no OPENAI_API_KEY" in log
        # make demo starts quietly: gevent patches before anything imports ssl (no MonkeyPatchWarning)
        assert "Warning" not in log and " WARNING " not in log, log


def ask(client: Any, conversation_id: str, content: str, **options: Any) -> list[dict[str, Any]]:
    response = client.post("/api/chat?format=ndjson", json={"conversation_id": conversation_id, "content": content},
                           buffered=True, **options)
    assert response.status_code == 200, response.data
    return ndjson_events(response.data)


def test_conversations_are_saved_and_sent_back_as_history(monkeypatch: pytest.MonkeyPatch, database: Path,
                                                          upstream: StandInServer) -> None:
    upstream.script = Script(reply=lambda messages: f"answer {len(messages)}")
    client = load_example(monkeypatch, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url).test_client()
    assert answer_of(ask(client, "conv-1", "first question")) == "answer 1"
    assert answer_of(ask(client, "conv-1", "second question")) == "answer 3"  # the history went along
    assert upstream.stats.bodies[-1]["messages"] == [
        {"role": "user", "content": "first question"}, {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": "second question"}]
    conversation = client.get("/api/conversations/conv-1").get_json()
    assert [(m["role"], m["content"], m["status"]) for m in conversation["messages"]] == [
        ("user", "first question", "complete"), ("assistant", "answer 1", "complete"),
        ("user", "second question", "complete"), ("assistant", "answer 3", "complete")]
    assert conversation["title"] == "first question"
    assert [(c["id"], c["messages"]) for c in client.get("/api/conversations").get_json()] == [("conv-1", 4)]
    # It is a real database: the rows are in the SQLite file.
    with sqlite3.connect(database) as db:
        assert db.execute("select count(*) from messages").fetchone() == (4,)
    assert client.delete("/api/conversations/conv-1").status_code == 204
    missing = client.get("/api/conversations/conv-1")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "conversation_not_found"
    assert client.delete("/api/conversations/conv-1").status_code == 404


def test_an_answer_keeps_its_reasoning_and_tools_and_an_older_database_gains_the_column(
        monkeypatch: pytest.MonkeyPatch, database: Path, upstream: StandInServer) -> None:
    with sqlite3.connect(database) as old:  # the tables as they were before reasoning was saved
        old.executescript("""
            CREATE TABLE conversations (id VARCHAR(64) PRIMARY KEY, title VARCHAR(200) NOT NULL,
                                        created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL);
            CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id VARCHAR(64) NOT NULL
                                   REFERENCES conversations (id) ON DELETE CASCADE, role VARCHAR(20) NOT NULL,
                                   content TEXT NOT NULL, status VARCHAR(20) NOT NULL, tools TEXT);""")
    upstream.script = Script(reply="It is late.", reasoning="Look at the clock first.",
                             tool_calls=[{"name": "current_time", "arguments": {"zone": "UTC"}}])
    client = load_example(monkeypatch, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url).test_client()
    assert answer_of(ask(client, "conv-r", "What time is it?")) == "It is late."
    answer = client.get("/api/conversations/conv-r").get_json()["messages"][-1]
    assert answer["reasoning"] == "Look at the clock first."
    assert [(t["name"], t["arguments"]) for t in answer["tools"]] == [("current_time", {"zone": "UTC"})]
    assert "reasoning" not in client.get("/api/conversations/conv-r").get_json()["messages"][0]


def test_a_bad_conversation_id_is_a_json_400(monkeypatch: pytest.MonkeyPatch, upstream: StandInServer) -> None:
    client = load_example(monkeypatch, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url).test_client()
    response = client.post("/api/chat", json={"conversation_id": "../etc", "content": "hi"})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request"
    assert upstream.stats.requests == 0


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_an_answer_in_progress_shows_and_a_closed_tab_still_gets_it_saved(monkeypatch: pytest.MonkeyPatch,
                                                                          upstream: StandInServer, api: str) -> None:
    upstream.script = Script(reply="saved even so", hold_after=1)
    app = load_example(monkeypatch, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url,
                       CHATSTREAM_FIRST_EVENT_WAIT="0.1", CHATSTREAM_API=api)
    client = app.test_client()
    response = client.post("/api/chat?format=ndjson", json={"conversation_id": "c2", "content": "q"}, buffered=False)
    next(iter(response.response))
    during = client.get("/api/conversations/c2").get_json()["messages"]
    assert [(m["role"], m["status"]) for m in during] == [("user", "complete"), ("assistant", "streaming")]
    response.close()  # the tab is closed
    upstream.release()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.finished, stats.cancelled) == (1, 0)
    saved = wait_for_answer(client, "c2")
    assert (saved["content"], saved["status"]) == ("saved even so", "complete")


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_stop_stops_the_model_and_keeps_what_came(monkeypatch: pytest.MonkeyPatch, upstream: StandInServer,
                                                  api: str) -> None:
    upstream.script = Script(reply="a b c d e f", hold_after=2)
    app = load_example(monkeypatch, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.url,
                       CHATSTREAM_FIRST_EVENT_WAIT="0.1", CHATSTREAM_API=api)
    client = app.test_client()
    response = client.post("/api/chat?format=ndjson", json={"conversation_id": "c3", "content": "q"}, buffered=False)
    stream_id = response.headers["X-Chat-Stream-Id"]
    pieces = iter(response.response)
    received = next(pieces)
    assert json.loads(received.split(b"\n")[0])["stream_id"] == stream_id
    while b' b"' not in received:  # both words are in (in one delta or two); the upstream holds at its gate
        received += next(pieces)
    assert client.post(f"/api/chat/{stream_id}/stop", environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 404
    assert client.post(f"/api/chat/{stream_id}/stop").status_code == 204  # what chatstream.js does on abort
    response.close()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.finished, stats.cancelled) == (0, 1)
    saved = wait_for_answer(client, "c3")
    assert (saved["content"], saved["status"]) == ("a b", "stopped")
    assert client.post(f"/api/chat/{stream_id}/stop").status_code == 404  # gone now


def wait_for_answer(client: Any, conversation_id: str) -> dict[str, Any]:
    """The last message once it is no longer streaming (after_stream saves it once the stream ends)."""
    import time

    deadline = time.monotonic() + 30
    while True:
        last: dict[str, Any] = client.get(f"/api/conversations/{conversation_id}").get_json()["messages"][-1]
        if last["status"] != "streaming":
            return last
        assert time.monotonic() < deadline, last
        time.sleep(0.02)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_the_offline_demo_calls_its_tool(monkeypatch: pytest.MonkeyPatch, api: str) -> None:
    client = load_example(monkeypatch, CHATSTREAM_API=api).test_client()
    response = client.post("/api/chat?format=ndjson", json={"content": "What time is it?"}, buffered=True)
    events = ndjson_events(response.data)
    call, result = [e for e in events if e["type"] in ("tool_call", "tool_result")]
    assert (call["name"], call["arguments"]) == ("current_time", {"zone": "UTC"})
    assert answer_of(events) == f"The server's clock says {result['output']}. (That came from a tool the model called.)"
