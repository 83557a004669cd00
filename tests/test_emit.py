"""``emit``: the host's own data with the answer, from a tool (while it runs, before its result) and
from a ``before_upstream`` hook; ``data`` events in NDJSON and SSE, ``data-<name>`` parts in ``ui``."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask

from flask_chatstream import ChatRequest, emit
from flask_chatstream.testing import Script, StandInServer

from .conftest import hooked_app
from .streams import answer_of, check_event_stream, events_of, ui_parts


def results_said(messages: list[dict[str, Any]]) -> str:
    return " | ".join(m["content"] for m in messages if m["role"] == "tool")


def progress_app(upstream: StandInServer, gate: threading.Event | None = None, **options: Any) -> Flask:
    upstream.script = Script(reply=results_said, tool_calls=[{"id": "call_1", "name": "index_files", "arguments": {}}])
    app, blueprint, _ = hooked_app(upstream, **options)

    @blueprint.tool
    def index_files() -> str:
        """Index the user's files."""
        emit("progress", {"done": 0, "of": 2}, id="indexing")
        if gate is not None:
            assert gate.wait(30), "the test never saw the progress"
        emit("progress", {"done": 2, "of": 2}, id="indexing")
        emit("log", "indexed", transient=True)
        return "2 files"

    return app


def test_a_tools_progress_goes_out_while_it_runs(upstream: StandInServer) -> None:
    """The tool waits until the client has its first progress event: it must arrive while the tool is
    still running, not with the tool's result."""
    gate = threading.Event()
    app = progress_app(upstream, gate)
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "index"}, buffered=False)
    seen: list[dict[str, Any]] = []
    for chunk in response.response:
        seen += events_of("ndjson", chunk)
        if not gate.is_set() and any(e["type"] == "data" for e in seen):
            assert not any(e["type"] == "tool_result" for e in seen)
            gate.set()
    response.close()
    check_event_stream(seen)
    # (how many deltas the answer's text comes in is the network's: a run of them counts once)
    types = [t for i, t in enumerate(e["type"] for e in seen) if not (t == "delta" and seen[i - 1]["type"] == "delta")]
    assert types == ["start", "tool_call", "data", "data", "data", "tool_result", "delta", "done"]
    assert seen[2:5] == [
        {"type": "data", "name": "progress", "data": {"done": 0, "of": 2}, "id": "indexing"},
        {"type": "data", "name": "progress", "data": {"done": 2, "of": 2}, "id": "indexing"},
        {"type": "data", "name": "log", "data": "indexed", "transient": True}]
    assert answer_of(seen) == "2 files"


def test_ui_data_parts_come_before_the_tools_output(upstream: StandInServer) -> None:
    app = progress_app(upstream)
    parts = ui_parts(app.test_client().post("/api/chat?format=ui", json={"content": "index"}, buffered=True).data)
    kinds = [p["type"] for p in parts]
    assert kinds.index("data-progress") < kinds.index("tool-output-available")
    assert [p for p in parts if p["type"].startswith("data-")] == [
        {"type": "data-progress", "data": {"done": 0, "of": 2}, "id": "indexing"},
        {"type": "data-progress", "data": {"done": 2, "of": 2}, "id": "indexing"},
        {"type": "data-log", "data": "indexed", "transient": True}]


def test_a_hooks_data_goes_out_first(upstream: StandInServer) -> None:
    """A hook that retrieves documents sends them before the model says anything."""
    upstream.script = Script(reply="Per the handbook, yes.")
    app, blueprint, _ = hooked_app(upstream)

    @blueprint.before_upstream
    def retrieve(chat: ChatRequest) -> None:
        emit("sources", [{"title": "Handbook", "page": 12}])

    events = events_of("sse", app.test_client().post("/api/chat?format=sse", json={"content": "may I?"}).data)
    assert [e["type"] for e in events[:3]] == ["start", "data", "delta"]
    assert events[1] == {"type": "data", "name": "sources", "data": [{"title": "Handbook", "page": 12}]}
    text = app.test_client().post("/api/chat?format=text", json={"content": "may I?"}).data
    assert text == b"Per the handbook, yes."  # text/plain has no place for it


def test_transient_data_is_not_kept_for_a_resume(upstream: StandInServer) -> None:
    app = progress_app(upstream, resumable=True, state_path=":memory:")
    client = app.test_client()
    response = client.post("/api/chat?format=ndjson", json={"content": "index"}, buffered=True)
    live = events_of("ndjson", response.data)
    replayed = events_of("ndjson", client.get(f"/api/chat/{response.headers['X-Chat-Stream-Id']}?format=ndjson").data)
    assert [e.get("name") for e in live if e["type"] == "data"] == ["progress", "progress", "log"]
    assert [e.get("name") for e in replayed if e["type"] == "data"] == ["progress", "progress"]


def test_emit_outside_a_chat_says_where_to_call_it() -> None:
    with pytest.raises(RuntimeError, match="from a tool, or from a before_upstream hook"):
        emit("progress", 1)


@pytest.mark.parametrize(("args", "kwargs", "error"), [
    (("has space", 1), {}, ValueError), (("", 1), {}, ValueError), (("x", object()), {}, TypeError),
    (("x", 1), {"id": 5}, TypeError)])
def test_bad_emits_are_refused_in_the_tool(upstream: StandInServer, args: Any, kwargs: Any, error: type) -> None:
    """A tool whose emit is wrong fails like any tool that raises: the model hears that it failed."""
    upstream.script = Script(reply=results_said, tool_calls=[{"id": "c", "name": "bad", "arguments": {}}])
    app, blueprint, results = hooked_app(upstream)
    raised: list[BaseException] = []

    @blueprint.tool
    def bad() -> str:
        """Emit something wrong."""
        try:
            emit(*args, **kwargs)
        except Exception as exc:
            raised.append(exc)
            raise
        return "never"

    events = events_of("ndjson", app.test_client().post("/api/chat?format=ndjson", json={"content": "go"}).data)
    assert [type(e) for e in raised] == [error]
    assert [e.get("error") for e in events if e["type"] == "tool_result"] == ["The tool failed."]
    assert not [e for e in events if e["type"] == "data"]


def test_emit_after_its_turn_ended_raises(upstream: StandInServer) -> None:
    """A tool that outlives its timeout and emits later, from the thread it left running: emit says so
    (RuntimeError), rather than dropping the data without a word."""
    upstream.script = Script(reply=results_said, tool_calls=[{"id": "c", "name": "slow", "arguments": {}}])
    app, blueprint, _ = hooked_app(upstream, tool_timeout=0.2)
    late, tried, raised = threading.Event(), threading.Event(), []

    @blueprint.tool
    def slow() -> str:
        """Take too long."""
        assert late.wait(30), "the test never let it go on"
        try:
            emit("progress", "too late")
        except RuntimeError as exc:
            raised.append(exc)
        finally:
            tried.set()
        return "never seen"

    events = events_of("ndjson", app.test_client().post("/api/chat?format=ndjson", json={"content": "go"}).data)
    assert check_event_stream(events)["type"] == "done"
    assert [e.get("error") for e in events if e["type"] == "tool_result"] != [None]  # it timed out
    late.set()
    assert tried.wait(30)
    assert [str(e) for e in raised] == ["emit() was called after its answer ended (from a thread that a tool left "
                                        "running past its timeout?): nothing can carry the data now."]
