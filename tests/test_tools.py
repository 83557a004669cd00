"""Server-side tools: Python functions the model calls, run in the worker while the stream stays open."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from flask import Flask

from flask_chatstream import ChatRequest, ToolError
from flask_chatstream._tools import make_tool
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, eventually, hooked_app
from .servers import Gunicorn
from .streams import answer_of, check_event_stream, events_of, post_chat, send_chat_raw

# ---- the schema ------------------------------------------------------------------------------------


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    def get_weather(city: str, unit: Literal["c", "f"] = "c", days: int = 1) -> dict:
        """The current weather in a city.

        Args:
            city: The city, with its country if the name is ambiguous.
            unit: Celsius or Fahrenheit.
        """
        return {}

    assert make_tool(get_weather).definition() == {"type": "function", "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object", "additionalProperties": False, "required": ["city"],
            "properties": {
                "city": {"type": "string", "description": "The city, with its country if the name is ambiguous."},
                "unit": {"type": "string", "enum": ["c", "f"], "default": "c", "description": "Celsius or Fahrenheit."},
                "days": {"type": "integer", "default": 1},
            },
        }}}


def test_a_chat_request_parameter_is_not_in_the_schema_and_overrides_apply() -> None:
    def lookup(query: str, chat: ChatRequest) -> str:
        """Look something up."""
        return query

    tool = make_tool(lookup, name="search", description="Search the user's notes.", strict=True)
    function = tool.definition()["function"]
    assert (function["name"], function["description"], function["strict"]) == ("search", "Search the user's notes.", True)
    assert function["parameters"] == {"type": "object", "properties": {"query": {"type": "string"}},
                                      "required": ["query"], "additionalProperties": False}
    assert tool.request_parameter == "chat"
    function["parameters"]["properties"].clear()  # as a before_upstream hook may: it changes one request only
    assert tool.definition()["function"]["parameters"]["properties"] == {"query": {"type": "string"}}


@pytest.mark.parametrize("bad", [
    lambda: None,  # no docstring
])
def test_a_tool_without_a_description_is_refused_at_once(bad: Any) -> None:
    with pytest.raises(TypeError, match="description"):
        make_tool(bad, name="x")


def test_a_tool_with_varargs_or_a_bad_name_is_refused() -> None:
    def anything(*args: int) -> None:
        """Anything."""

    with pytest.raises(TypeError, match=r"\*args"):
        make_tool(anything)
    with pytest.raises(TypeError, match="name"):
        make_tool(test_a_tool_with_varargs_or_a_bad_name_is_refused, name="has spaces", description="x")


# ---- the loop, in process ------------------------------------------------------------------------------


def results_said(messages: list[dict[str, Any]]) -> str:
    """The stand-in's answer once tools have run: what their results were."""
    return " | ".join(m["content"] for m in messages if m["role"] == "tool")


def ask(app: Flask, fmt: str = "ndjson", content: str = "go") -> list[dict[str, Any]] | bytes:
    response = app.test_client().post(f"/api/chat?format={fmt}", json={"content": content}, buffered=True)
    assert response.status_code == 200, response.data
    return response.data if fmt == "text" else events_of(fmt, response.data)


@pytest.mark.parametrize("fmt", ["ndjson", "sse"])
def test_a_tool_call_runs_and_the_answer_goes_on_on_the_same_response(upstream: StandInServer, fmt: str) -> None:
    upstream.script = Script(reply=results_said, tool_fragments=5,
                             tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris", "unit": "f"}}])
    app, blueprint, results = hooked_app(upstream)

    @blueprint.tool
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict:
        """The current weather in a city."""
        return {"city": city, "temp": 70, "unit": unit}

    events = ask(app, fmt)
    assert [e["type"] for e in events] == ["start", "tool_call", "tool_result", "delta", "done"]  # type: ignore[index]
    assert events[1] == {"type": "tool_call", "id": "call_1", "name": "get_weather",  # type: ignore[index]
                         "arguments": {"city": "Paris", "unit": "f"}}
    assert events[2] == {"type": "tool_result", "id": "call_1", "name": "get_weather",  # type: ignore[index]
                         "output": {"city": "Paris", "temp": 70, "unit": "f"}}
    assert answer_of(events) == '{"city":"Paris","temp":70,"unit":"f"}'  # type: ignore[arg-type]
    first, second = upstream.stats.bodies
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    assert second["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris", "unit": "f"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"city":"Paris","temp":70,"unit":"f"}'}]
    [result] = results
    assert [(c.name, c.output) for c in result.tool_calls] == [("get_weather", {"city": "Paris", "temp": 70, "unit": "f"})]
    assert result.usage is not None and result.usage["completion_tokens"] == 1 + 1  # summed over both model calls


def test_text_carries_only_the_answer(upstream: StandInServer) -> None:
    upstream.script = Script(reply="It is sunny.", tool_calls=[{"name": "weather", "arguments": {}}])
    app, blueprint, _ = hooked_app(upstream)
    blueprint.tool(lambda: "sunny", name="weather", description="The weather.")
    assert ask(app, "text") == b"It is sunny."


def test_parallel_calls_run_at_once(upstream: StandInServer) -> None:
    """Each of the two calls waits for the other at a barrier: run one after the other, neither
    would ever get past it (and both would time out)."""
    upstream.script = Script(reply=results_said, tool_calls=[
        {"id": "a", "name": "meet", "arguments": {"who": "a"}}, {"id": "b", "name": "meet", "arguments": {"who": "b"}}])
    app, blueprint, _ = hooked_app(upstream, tool_timeout=30)
    barrier = threading.Barrier(2, timeout=30)

    @blueprint.tool
    def meet(who: str) -> str:
        """Meet the other call."""
        barrier.wait()
        return f"{who} met"

    events = ask(app)
    assert [(e["id"], e.get("output")) for e in events if e["type"] == "tool_result"] == [("a", "a met"), ("b", "b met")]  # type: ignore[union-attr]
    assert answer_of(events) == "a met | b met"  # type: ignore[arg-type]


@pytest.mark.parametrize(("arguments", "expected"), [
    ({"n": "three"}, "Invalid arguments: n: Input should be a valid integer"),
    ({}, "Invalid arguments: n: Field required"),
    ({"n": 1, "extra": 2}, "Invalid arguments: extra: Extra inputs are not permitted"),
    ("not json {", "The arguments must be a JSON object."),
])
def test_invalid_arguments_go_back_to_the_model_as_an_error(upstream: StandInServer, arguments: Any,
                                                            expected: str) -> None:
    upstream.script = Script(reply=results_said, tool_calls=[{"id": "c", "name": "double", "arguments": arguments}])
    app, blueprint, _ = hooked_app(upstream)
    ran: list[int] = []

    @blueprint.tool
    def double(n: int) -> int:
        """Double it."""
        ran.append(n)
        return n * 2

    events = ask(app)
    [result] = [e for e in events if e["type"] == "tool_result"]  # type: ignore[union-attr]
    assert result["error"].startswith(expected) and "output" not in result
    assert ran == [] and check_event_stream(events)["type"] == "done"  # type: ignore[arg-type]
    assert json.loads(upstream.stats.bodies[-1]["messages"][-1]["content"])["error"].startswith(expected)


def test_a_raising_tool_tells_the_model_and_the_stream_goes_on(upstream: StandInServer,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    upstream.script = Script(reply=results_said, tool_calls=[
        {"id": "x", "name": "broken", "arguments": {}}, {"id": "y", "name": "picky", "arguments": {}}])
    app, blueprint, results = hooked_app(upstream)

    @blueprint.tool
    def broken() -> None:
        """Always fails."""
        raise RuntimeError("connection string postgres://admin:hunter2@db")

    @blueprint.tool
    def picky() -> None:
        """Fails on purpose, saying why."""
        raise ToolError("No such city.")

    events = ask(app)
    errors = {e["id"]: e["error"] for e in events if e["type"] == "tool_result"}  # type: ignore[union-attr]
    assert errors == {"x": "The tool failed.", "y": "No such city."}
    assert check_event_stream(events)["type"] == "done"  # type: ignore[arg-type]
    assert "hunter2" in caplog.text and "hunter2" not in json.dumps(events)  # logged, never sent
    assert [c.error for c in results[0].tool_calls] == ["The tool failed.", "No such city."]


def test_a_slow_tool_is_cut_at_tool_timeout(upstream: StandInServer) -> None:
    upstream.script = Script(reply=results_said, tool_calls=[{"id": "s", "name": "slow", "arguments": {}}])
    app, blueprint, _ = hooked_app(upstream, tool_timeout=0.2)
    release = threading.Event()

    @blueprint.tool
    def slow() -> str:
        """Never finishes on its own."""
        release.wait(60)
        return "too late"

    try:
        events = ask(app)
    finally:
        release.set()
    [result] = [e for e in events if e["type"] == "tool_result"]  # type: ignore[union-attr]
    assert result["error"] == "The tool did not finish within 0.2 seconds."
    assert check_event_stream(events)["type"] == "done"  # type: ignore[arg-type]


def test_max_tool_steps_ends_a_model_that_keeps_calling_tools(upstream: StandInServer) -> None:
    upstream.script = Script(tool_calls=lambda messages: [{"name": "again", "arguments": {}}])  # always
    app, blueprint, results = hooked_app(upstream, max_tool_steps=3)
    blueprint.tool(lambda: "once more", name="again", description="Call me again.")
    events = ask(app)
    assert check_event_stream(events)["error"]["code"] == "max_tool_steps"  # type: ignore[arg-type]
    assert [e["type"] for e in events].count("tool_result") == 2  # type: ignore[union-attr]
    assert upstream.stats.requests == 3 and results[0].outcome == "error"


def test_a_tool_gets_the_request_and_hooks_choose_the_tools(upstream: StandInServer) -> None:
    upstream.script = Script(reply=results_said, tool_calls=[{"name": "whoami", "arguments": {}}])
    app, blueprint, _ = hooked_app(upstream)

    @blueprint.tool
    def whoami(chat: ChatRequest) -> str:
        """Who is asking."""
        return str(chat.context["user"])

    @blueprint.tool
    def secret() -> str:
        """Not for this user."""
        return "no"

    @blueprint.before_upstream
    def per_user(chat: ChatRequest) -> ChatRequest:
        chat.context["user"] = "ada"
        tools = [t for t in chat.params["tools"] if t["function"]["name"] != "secret"]
        return dataclasses.replace(chat, params={**chat.params, "tools": tools})

    assert answer_of(ask(app)) == "ada"  # type: ignore[arg-type]
    assert [t["function"]["name"] for t in upstream.stats.bodies[0]["tools"]] == ["whoami"]


CLIENT_TOOL = {"type": "function", "function": {"name": "pick_color", "description": "Ask the user.",
                                                "parameters": {"type": "object", "properties": {}}}}


def test_client_side_tools_round_trip(upstream: StandInServer) -> None:
    upstream.script = Script(reply=results_said, tool_calls=[{"id": "call_c", "name": "pick_color", "arguments": {}}])
    app, blueprint, results = hooked_app(upstream)

    @blueprint.before_upstream
    def offer(chat: ChatRequest) -> ChatRequest:
        return dataclasses.replace(chat, params={**chat.params, "tools": [CLIENT_TOOL]})

    events = ask(app)
    assert [e["type"] for e in events] == ["start", "tool_call", "done"]  # type: ignore[union-attr]
    assert events[-1]["finish_reason"] == "tool_calls"  # type: ignore[index]
    assert results[0].tool_calls[0].output is None
    # The browser runs it and sends the conversation back with the call and its result.
    history = [{"role": "user", "content": "go"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_c", "type": "function", "function": {"name": "pick_color", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "call_c", "content": "teal"}]
    response = app.test_client().post("/api/chat?format=ndjson", json={"messages": history}, buffered=True)
    assert answer_of(events_of("ndjson", response.data)) == "teal"
    assert upstream.stats.bodies[-1]["messages"] == history


@pytest.mark.parametrize("fmt", ["ndjson", "ui"])
def test_a_turn_of_server_and_client_tools_runs_the_servers_and_leaves_the_clients(upstream: StandInServer,
                                                                                 fmt: str) -> None:
    """As the AI SDK does: the server's calls run and their results go out, and the answer ends with
    the client's call pending; the client then sends the conversation back with every result."""
    upstream.script = Script(reply=results_said, tool_calls=[
        {"id": "call_s", "name": "get_time", "arguments": {}},
        {"id": "call_c", "name": "pick_color", "arguments": {}}])
    app, blueprint, results = hooked_app(upstream)
    blueprint.tool(lambda: "noon", name="get_time", description="The time.")

    @blueprint.before_upstream
    def offer(chat: ChatRequest) -> ChatRequest:
        return dataclasses.replace(chat, params={**chat.params, "tools": [*chat.params["tools"], CLIENT_TOOL]})

    if fmt == "ui":
        response = app.test_client().post("/api/chat?format=ui", json={"content": "go"}, buffered=True)
        parts = [json.loads(line[6:]) for line in response.get_data(as_text=True).splitlines()
                 if line.startswith("data: {")]
        outputs = {p["toolCallId"]: p["output"] for p in parts if p["type"] == "tool-output-available"}
        inputs = {p["toolCallId"] for p in parts if p["type"] == "tool-input-available"}
        assert (outputs, inputs) == ({"call_s": "noon"}, {"call_s", "call_c"})
        assert parts[-1]["type"] == "finish"
    else:
        events = ask(app)
        assert [e["type"] for e in events] == ["start", "tool_call", "tool_call", "tool_result", "done"]  # type: ignore[union-attr]
        assert events[3] == {"type": "tool_result", "id": "call_s", "name": "get_time", "output": "noon"}  # type: ignore[index]
        assert events[-1]["finish_reason"] == "tool_calls"  # type: ignore[index]
    assert upstream.stats.requests == 1  # no model call until the client has run its tool
    assert [(c.name, c.output) for c in results[0].tool_calls] == [("get_time", "noon"), ("pick_color", None)]
    history = [{"role": "user", "content": "go"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_s", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                   {"id": "call_c", "type": "function", "function": {"name": "pick_color", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "call_s", "content": "noon"},
               {"role": "tool", "tool_call_id": "call_c", "content": "teal"}]
    response = app.test_client().post("/api/chat?format=ndjson", json={"messages": history}, buffered=True)
    assert answer_of(events_of("ndjson", response.data)) == "noon | teal"


@pytest.mark.parametrize("output", ["text", "json"])
def test_a_huge_tool_output_is_cut_with_a_marker(upstream: StandInServer, output: str) -> None:
    upstream.script = Script(reply=lambda messages: f"{len(results_said(messages))} characters came back",
                             tool_calls=[{"id": "call_1", "name": "dump", "arguments": {}}])
    app, blueprint, results = hooked_app(upstream, max_tool_output_chars=1000)
    ten_mb = "x" * 10_000_000
    blueprint.tool(lambda: ten_mb if output == "text" else {"rows": [ten_mb]}, name="dump", description="Dump it.")
    events = ask(app)
    [result_event] = [e for e in events if e["type"] == "tool_result"]  # type: ignore[union-attr]
    shown = result_event["output"]
    assert isinstance(shown, str) and len(shown) < 1200
    assert shown.endswith("only the first 1,000 are shown]")
    sent_to_model = upstream.stats.bodies[-1]["messages"][-1]["content"]
    assert sent_to_model == shown
    assert answer_of(events) == f"{len(shown)} characters came back"  # type: ignore[arg-type]
    assert results[0].tool_calls[0].output == shown


def test_max_tool_output_chars_is_a_setting_with_a_default() -> None:
    from flask_chatstream._config import resolve

    assert resolve({}, {}, {}).max_tool_output_chars == 50_000
    assert resolve({}, {"CHATSTREAM_MAX_TOOL_OUTPUT_CHARS": "2000"}, {}).max_tool_output_chars == 2000


@pytest.mark.parametrize(("history", "code"), [
    ([{"role": "user", "content": "go"},
      {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "rm_rf", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "c", "content": "done"}], "unknown_tool"),
    ([{"role": "user", "content": "go"}, {"role": "tool", "tool_call_id": "never-called", "content": "x"}],
     "invalid_tool_message"),
    ([{"role": "user", "content": "go"}, {"role": "tool", "content": "x"}], "invalid_tool_message"),
    ([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "pick_color"}}]}], "invalid_tool_message"),
])
def test_tool_history_must_fit_the_offered_tools(upstream: StandInServer, history: list[Any], code: str) -> None:
    app, blueprint, _ = hooked_app(upstream)

    @blueprint.before_upstream
    def offer(chat: ChatRequest) -> ChatRequest:
        return dataclasses.replace(chat, params={**chat.params, "tools": [CLIENT_TOOL]})

    response = app.test_client().post("/api/chat", json={"messages": history})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code
    assert upstream.stats.requests == 0


# ---- under gunicorn: the client leaving during a tool run ----------------------------------------------


def chat_until(port: int, needle: bytes) -> socket.socket:
    """An NDJSON chat on a bare socket, read until ``needle`` has arrived; the caller drops it."""
    sock = send_chat_raw(port, "ndjson")
    sock.settimeout(30)
    received = b""
    while needle not in received:
        piece = sock.recv(65536)
        assert piece, received
        received += piece
    return sock


@pytest.fixture(scope="module")
def tools_server(_standin: StandInServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gunicorn, Any]]:
    gate = tmp_path_factory.mktemp("tools") / "open"
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "CHATSTREAM_MAX_RETRIES": "0",
           "TOOL_GATE": str(gate)}
    with Gunicorn("tests.tools_app:app", env=env) as server:
        yield server, gate
    assert "Traceback" not in server.log()


@pytest.mark.server
def test_the_client_leaving_during_a_tool_run_stops_the_loop(tools_server: tuple[Gunicorn, Any],
                                                             upstream: StandInServer) -> None:
    server, gate = tools_server
    upstream.script = Script(reply="never asked for", tool_calls=[{"name": "wait_at_gate", "arguments": {}}])
    chat_until(server.port, b'"tool_call"').close()  # the tab is closed while the tool runs
    server.wait_for_log("outcome=client_left")  # the relay has ended, the tool still running
    gate.touch()
    assert upstream.stats.requests == 1  # no further model call


@pytest.mark.server
def test_the_client_leaving_while_the_next_model_call_waits_for_its_head(tools_server: tuple[Gunicorn, Any],
                                                                        upstream: StandInServer) -> None:
    """After a turn of tools, the next model call may wait long for its head (a gateway holding it):
    a client that leaves then closes that request too."""
    server, gate = tools_server
    gate.touch()  # the tool answers at once
    upstream.script = Script(reply="never sent", tool_calls=[{"name": "wait_at_gate", "arguments": {}}],
                             header_delay=lambda messages: 3600 if messages[-1]["role"] == "tool" else 0)
    sock = chat_until(server.port, b'"tool_result"')
    upstream.wait_for(lambda s: s.waiting == 1)  # the second model call, held before its head
    sock.close()
    stats = upstream.wait_for(lambda s: s.waiting == 0)
    assert (stats.requests, stats.left_waiting) == (2, 1)
    server.wait_for_log("outcome=client_left")


@pytest.mark.server
def test_an_answer_is_finished_for_a_client_that_left_during_a_tool_run(_standin: StandInServer,
                                                                       upstream: StandInServer,
                                                                       tmp_path: Any) -> None:
    """With on_client_leave="finish", a client that leaves while a tool runs still gets its answer
    finished (for after_stream): the model is called again once the tool is done, not cancelled."""
    gate = tmp_path / "open"
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "CHATSTREAM_MAX_RETRIES": "0",
           "TOOL_GATE": str(gate), "CHATSTREAM_ON_CLIENT_LEAVE": "finish", "CHATSTREAM_MAX_STREAMS_PER_CLIENT": "1",
           "CHATSTREAM_ALLOWED_MODELS": "probe"}
    upstream.script = Script(reply="finished for nobody", tool_calls=[{"name": "wait_at_gate", "arguments": {}}])
    upstream.scripts["probe"] = Script(reply="probe")
    with Gunicorn("tests.tools_app:app", env=env) as server:
        chat_until(server.port, b'"tool_call"').close()  # the tab is closed while the tool runs

        def probe() -> int:  # the client's one slot is free once the relay has seen it go
            conn, response = post_chat(server.port, "text", {"content": "hi", "model": "probe"}, timeout=30)
            response.read()
            conn.close()
            return response.status

        eventually(probe, lambda status: status == 200)
        gate.touch()
        log = server.wait_for_log("outcome=done_after_client_left")
    assert "Traceback" not in log
    assert [b["messages"][-1]["role"] for b in upstream.stats.bodies if b["model"] != "probe"] == ["user", "tool"]
