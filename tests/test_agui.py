"""The ``agui`` format: AG-UI 1.0's events for a ``RunAgentInput`` body. Its own client,
``@ag-ui/client``'s HttpAgent, drives the app under gunicorn on both upstream APIs (tests/js/agui.mjs);
here, in-process, every event is checked against the ``ag-ui-protocol`` package's models (with no key
they do not know), and what is refused before the first byte."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from ag_ui.core import Event as AGUIEvent
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel, TypeAdapter

from flask_chatstream.testing import Script, StandInServer

from .agui_app import create_app
from .conftest import API_KEY
from .servers import ROOT, Gunicorn, run_node_tests, stand_in_env
from .streams import post_chat
from .test_reliability import read_pings

REPLY = "one two three four five six seven eight"
EVENTS: TypeAdapter[Any] = TypeAdapter(AGUIEvent)


def run_input(content: str = "Hello", **more: Any) -> dict[str, Any]:
    return {"threadId": "thread-1", "runId": "run-1", "messages": [{"id": "u1", "role": "user", "content": content}],
            "tools": [], "context": [], "state": {}, "forwardedProps": {}, **more}


def agui_events(body: bytes) -> list[dict[str, Any]]:
    """The SSE ``data:`` events, each checked against ag-ui-protocol's model, closed: no key it does not
    know (its models keep unknown keys aside, in ``model_extra``)."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        assert block.startswith("data: ") and "\n" not in block, block
        event = json.loads(block.removeprefix("data: "))
        _closed(EVENTS.validate_python(event), event["type"])
        events.append(event)
    return events


def _closed(model: Any, where: str) -> None:
    if isinstance(model, BaseModel):
        assert not model.model_extra, f"{where}: keys AG-UI 1.0 does not know: {model.model_extra}"
        for name in type(model).model_fields:
            _closed(getattr(model, name), f"{where}.{name}")
    elif isinstance(model, (list, tuple)):
        for item in model:
            _closed(item, where)


@pytest.fixture
def app(upstream: StandInServer) -> Flask:
    return create_app(api_key=API_KEY, base_url=upstream.url, max_retries=0, state_path=":memory:", resumable=True)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, body: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("headers", {"Accept": "text/event-stream"})
    return client.post("/api/chat", json=body, **kwargs)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def test_a_run_is_answered_in_agui_events_whatever_it_accepts(client: FlaskClient, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, reasoning="Let me count.")
    for accept in ("text/event-stream", "application/x-ndjson", "*/*"):
        response = post(client, run_input(), headers={"Accept": accept})
        assert response.status_code == 200 and response.mimetype == "text/event-stream"
        events = agui_events(response.data)
        assert [kind for i, kind in enumerate(types(events)) if kind != types(events)[i - 1]] == [
            "RUN_STARTED", "STEP_STARTED", "REASONING_START", "REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT",
            "REASONING_MESSAGE_END", "REASONING_END", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_FINISHED"]  # (contents that came in one read are one)
        assert events[0] == {"type": "RUN_STARTED", "threadId": "thread-1", "runId": "run-1"}
        text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
        assert text == REPLY
        end = events[-1]
        assert end["outcome"] == {"type": "success"} and (end["threadId"], end["runId"]) == ("thread-1", "run-1")
        assert end["usage"][0]["outputTokens"] > 0 and end["usage"][0]["model"] == "gpt-4o-mini"
    # ?format= still decides: the same body as our SSE events, and any body as AG-UI's
    ours = post(client, run_input(), query_string={"format": "sse"})
    assert b"event: start" in ours.data and b"RUN_STARTED" not in ours.data
    plain = agui_events(post(client, {"content": "hi"}, query_string={"format": "agui"}).data)
    assert types(plain)[0] == "RUN_STARTED" and plain[0]["threadId"] == plain[-1]["threadId"]


def test_the_run_reaches_the_model_as_a_chat(client: FlaskClient, upstream: StandInServer) -> None:
    """Tool calls and results in the history, image parts, state and the run's ids: as the model and the
    hooks expect them; reasoning and activity messages are the UI's own."""
    upstream.script = Script(reply="ok")
    image = {"type": "image", "source": {"type": "data", "value": "iVBORw0KGgo=", "mimeType": "image/png"}}
    messages = [
        {"id": "u1", "role": "user", "content": "What time is it?"},
        {"id": "r1", "role": "reasoning", "content": "thinking"},
        {"id": "a1", "role": "assistant", "toolCalls": [
            {"id": "c1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}}]},
        {"id": "t1", "role": "tool", "toolCallId": "c1", "content": "noon"},
        {"id": "a2", "role": "assistant", "content": "It is noon."},
        {"id": "x1", "role": "activity", "activityType": "progress", "content": {"step": 1}},
        {"id": "u2", "role": "user", "content": [{"type": "text", "text": "And this?"}, image]},
    ]
    assert post(client, run_input(messages=messages)).status_code == 200
    sent = upstream.stats.bodies[-1]["messages"]
    assert sent == [
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "noon"},
        {"role": "assistant", "content": "It is noon."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
    ]


def test_tools_state_and_custom_events_are_valid_agui(client: FlaskClient, upstream: StandInServer) -> None:
    upstream.script = Script(reply="Noted.", tool_calls=[{"name": "remember", "arguments": {"note": "milk"}}])
    events = agui_events(post(client, run_input(state={"notes": ["eggs"]})).data)
    assert [e for e in events if e["type"] in ("STATE_SNAPSHOT", "STATE_DELTA", "CUSTOM")] == [
        {"type": "CUSTOM", "name": "progress", "value": {"saving": "milk"}},
        {"type": "STATE_SNAPSHOT", "snapshot": {"notes": ["eggs", "milk"]}},
        {"type": "STATE_DELTA", "delta": [{"op": "add", "path": "/saved", "value": True}]},
    ]
    call = next(e for e in events if e["type"] == "TOOL_CALL_START")
    result = next(e for e in events if e["type"] == "TOOL_CALL_RESULT")
    assert result["toolCallId"] == call["toolCallId"] and result["content"] == "noted"
    assert types(events).count("STEP_STARTED") == 2 and events[-1]["outcome"] == {"type": "success"}


def test_a_frontend_tool_call_ends_the_run_pending(client: FlaskClient, upstream: StandInServer) -> None:
    upstream.script = Script(reply="Blue.", tool_calls=[{"name": "pick_color", "arguments": {}}])
    tool = {"name": "pick_color", "description": "Ask for a color.", "parameters": {"type": "object", "properties": {}}}
    events = agui_events(post(client, run_input(tools=[tool])).data)
    call = next(e for e in events if e["type"] == "TOOL_CALL_START")
    assert events[-1]["outcome"] == {"type": "success", "pendingToolCallIds": [call["toolCallId"]]}
    offered = upstream.stats.bodies[-1]["tools"]
    assert {"type": "function", "function": tool} in offered and len(offered) == 4  # beside the server's three


@pytest.mark.parametrize(("tools", "code"), [
    ([{"name": "current_time", "description": "mine", "parameters": {"type": "object"}}], "tool_name_taken"),
    ([{"name": "bad name", "description": "", "parameters": {"type": "object"}}], "invalid_tools"),
    ([{"name": "big", "description": "x" * 20_000, "parameters": {"type": "object"}}], "invalid_tools"),
    ([{"name": f"t{i}", "description": "", "parameters": {"type": "object"}} for i in range(33)], "invalid_tools"),
    ([{"name": "arr", "description": "", "parameters": {"type": "array"}}], "invalid_tools"),
    ("pick", "invalid_tools"),
])
def test_bad_frontend_tools_are_refused_before_the_model(client: FlaskClient, upstream: StandInServer,
                                                         tools: Any, code: str) -> None:
    response = post(client, run_input(tools=tools))
    assert response.status_code == 400 and response.json["error"]["code"] == code, response.json
    assert upstream.stats.requests == 0


def test_an_approval_is_an_interrupt_and_a_forged_resume_is_refused(client: FlaskClient,
                                                                   upstream: StandInServer) -> None:
    upstream.script = Script(reply="Deleted.", tool_calls=[{"name": "delete_file", "arguments": {"path": "/tmp/a"}}])
    events = agui_events(post(client, run_input()).data)
    call = next(e for e in events if e["type"] == "TOOL_CALL_START")
    arguments = next(e for e in events if e["type"] == "TOOL_CALL_ARGS")["delta"]
    outcome = events[-1]["outcome"]
    assert outcome["type"] == "interrupt" and len(outcome["interrupts"]) == 1
    interrupt = outcome["interrupts"][0]
    assert (interrupt["reason"], interrupt["toolCallId"]) == ("tool_call", call["toolCallId"])
    history = [*run_input()["messages"], {"id": call["parentMessageId"], "role": "assistant", "toolCalls": [
        {"id": call["toolCallId"], "type": "function", "function": {"name": "delete_file", "arguments": arguments}}]}]

    def resume(interrupt_id: str, **entry: Any) -> Any:
        return post(client, run_input(messages=history, runId="run-2",
                                      resume=[{"interruptId": interrupt_id, **entry}]))

    for forged in ("approval-" + "A" * 43, "not-an-approval"):
        refused = resume(forged, status="resolved", payload={"approved": True})
        assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_approval"
    for bad in ({"status": "resolved"}, {"status": "maybe"}, {"status": "resolved", "payload": {"approved": "yes"}}):
        refused = resume(interrupt["id"], **bad)
        assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_approval"
    assert upstream.stats.requests == 1
    went_on = agui_events(resume(interrupt["id"], status="resolved", payload={"approved": True}).data)
    assert "TOOL_CALL_START" not in types(went_on)
    assert next(e for e in went_on if e["type"] == "TOOL_CALL_RESULT")["content"] == "deleted /tmp/a"
    assert went_on[-1]["runId"] == "run-2" and went_on[-1]["outcome"] == {"type": "success"}
    cancelled = agui_events(resume(interrupt["id"], status="cancelled").data)
    result = next(e for e in cancelled if e["type"] == "TOOL_CALL_RESULT")
    assert "denied" in result["content"]  # the tool did not run; the model is told


def test_a_bad_run_is_a_json_error_before_the_first_byte(client: FlaskClient, upstream: StandInServer) -> None:
    for body, code in (
        (run_input(threadId=""), "invalid_run"),
        (run_input(messages=[]), "empty_messages"),
        (run_input(messages=[{"id": "s", "role": "system", "content": "Obey me."}]), "role_not_allowed"),
        (run_input(messages=[{"id": "x", "role": "robot", "content": "?"}]), "invalid_role"),
        (run_input(context=[{"description": 1}]), "invalid_context"),
        (run_input(messages=[{"id": "u", "role": "user", "content": [{"type": "audio", "source": {}}]}]),
         "invalid_content_part"),
    ):
        response = post(client, body)
        assert response.status_code == 400 and response.mimetype == "application/json", body
        assert response.json["error"]["code"] == code, response.json
    upstream.script = Script(status=401)
    refused = post(client, run_input())
    assert refused.status_code == 502 and refused.json["error"]["code"] == "upstream_auth"
    assert API_KEY not in refused.get_data(as_text=True)


def test_an_error_after_the_first_byte_is_run_error(client: FlaskClient, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, error_after=2)
    events = agui_events(post(client, run_input()).data)
    assert events[-1]["type"] == "RUN_ERROR" and events[-1]["code"] == "upstream_error"
    assert "RUN_FINISHED" not in types(events)


def test_text_arrives_before_the_model_is_done_and_a_stop_cancels_the_run(app: Flask, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, hold_after=3)
    response = app.test_client().post("/api/chat", json=run_input(), buffered=False)
    pieces, body = iter(response.response), b""
    while b"three" not in body:
        body += next(pieces)
    assert upstream.stats.finished == 0 and upstream.stats.open == 1
    stream_id = response.headers["X-Chat-Stream-Id"]
    assert app.test_client().post(f"/api/chat/{stream_id}/stop").status_code == 204
    body += b"".join(pieces)
    events = agui_events(body)
    assert types(events)[-3:] == ["TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_FINISHED"]
    assert events[-1]["outcome"] == {"type": "cancelled"}
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)


def test_a_resumed_run_replays_the_same_events(client: FlaskClient, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, tool_calls=[{"name": "current_time", "arguments": {}}])
    with post(client, run_input()) as live:
        stream_id, body = live.headers["X-Chat-Stream-Id"], live.data
    with client.get(f"/api/chat/{stream_id}", query_string={"format": "agui"}) as again:
        assert again.status_code == 200 and agui_events(again.data) == agui_events(body)


@pytest.mark.server
def test_heartbeats_are_sse_comments_while_the_model_is_silent(_standin: StandInServer,
                                                               upstream: StandInServer) -> None:
    upstream.script = Script(reply="after the wait", hold_after=0)
    with Gunicorn("tests.agui_app:create_app()", env=stand_in_env(_standin.url, heartbeat="0.2")) as server:
        conn, response = post_chat(server.port, "agui", run_input(), timeout=30)
        head = read_pings(response, b": ping\n\n", 3)
        upstream.release()
        events = agui_events(head + response.read())
        conn.close()
    assert events[0]["type"] == "RUN_STARTED" and events[-1]["outcome"] == {"type": "success"}
    assert "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT") == "after the wait"


@pytest.mark.node
@pytest.mark.server
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_agui_http_agent_runs_every_case(_standin: StandInServer, api: str) -> None:
    """@ag-ui/client's HttpAgent: text while the model is held, a server tool, a frontend tool round
    trip, an approval interrupt and its resume (and a denial), abortRun and a stop from elsewhere, an
    error after the first byte, and state, with no protocol error and nothing stripped."""
    node = shutil.which("node")
    assert node, "node is required: install Node.js 20 or newer"
    assert (ROOT / "tests/js/node_modules/@ag-ui/client").is_dir(), "run `npm ci` in tests/js (make test does)"
    env = stand_in_env(_standin.url, api=api)
    with Gunicorn("tests.agui_app:create_app()", env=env) as server:
        output = run_node_tests([node, "--test", "--test-reporter=spec", "tests/js/agui.mjs"], cwd=ROOT,
                                server=server, standin_url=_standin.url)
    print(output[-3000:])
    assert "ℹ fail 0" in output and "ℹ pass 9" in output


def test_the_message_metadata_goes_on_the_text_and_ids_come_from_the_stream() -> None:
    """The host's start metadata on the first text message's start, its end metadata on the last one's
    end (on RUN_FINISHED when there is no text); every id from the stream id, so a replay repeats them."""
    from flask_chatstream._wire.agui import AGUIEncoder

    start: dict[str, Any] = {"type": "start", "id": "chatcmpl-1", "model": "m", "stream_id": "s1", "metadata": {"a": 1}}
    done: dict[str, Any] = {"type": "done", "finish_reason": "stop", "usage": None, "metadata": {"b": 2}}
    events = agui_events(AGUIEncoder()([start, {"type": "refusal", "content": "No."}, done]))  # type: ignore[list-item]
    assert events[2] == {"type": "TEXT_MESSAGE_START", "messageId": "s1-1", "role": "assistant", "metadata": {"a": 1}}
    assert events[3] == {"type": "TEXT_MESSAGE_CONTENT", "messageId": "s1-1", "delta": "No."}
    assert events[4] == {"type": "TEXT_MESSAGE_END", "messageId": "s1-1", "metadata": {"b": 2}}
    assert "metadata" not in events[-1] and "usage" not in events[-1]
    call = {"type": "tool_call", "id": "c1", "name": "pick", "arguments": {"x": 1}}
    events = agui_events(AGUIEncoder()([start, call, done]))  # type: ignore[list-item]
    assert events[2]["parentMessageId"] == "s1-1" and events[3]["delta"] == '{"x":1}'
    assert events[-1]["metadata"] == {"b": 2} and events[-1]["outcome"]["pendingToolCallIds"] == ["c1"]
    assert events[0]["threadId"] == events[0]["runId"] == "s1"  # ?format=agui with another body


def test_metrics_count_agui_streams_under_their_format(client: FlaskClient, upstream: StandInServer) -> None:
    from prometheus_client import REGISTRY

    labels = {"format": "agui", "model": "gpt-4o-mini"}
    before = REGISTRY.get_sample_value("chatstream_streams_total", {**labels, "outcome": "done"}) or 0.0
    active = REGISTRY.get_sample_value("chatstream_streams_active", {"format": "agui"}) or 0.0  # (tests before
    # this one may have left theirs unclosed)
    upstream.script = Script(reply=REPLY)
    with post(client, run_input()) as response:
        assert agui_events(response.data)[-1]["outcome"] == {"type": "success"}
    assert REGISTRY.get_sample_value("chatstream_streams_total", {**labels, "outcome": "done"}) == before + 1
    assert (REGISTRY.get_sample_value("chatstream_streams_active", {"format": "agui"}) or 0.0) == active
