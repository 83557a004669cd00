"""before_upstream and after_stream: the host app shapes requests and keeps answers."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import abort, g, request

from flask_chatstream import ChatRequest, ChatResult, TooManyStreams
from flask_chatstream.testing import Script, StandInServer

from .conftest import eventually, hooked_app
from .servers import Gunicorn, stand_in_env
from .streams import answer_of, events_of, post_chat, send_chat_raw, ui_parts


def test_before_upstream_hooks_run_in_order_and_shape_the_request(upstream: StandInServer) -> None:
    app, blueprint, results = hooked_app(upstream, system_prompt="Configured.", allowed_models=["other"])
    seen: list[str] = []

    @blueprint.before_upstream
    def who(chat: ChatRequest) -> ChatRequest:
        seen.append(f"who:{request.headers.get('X-User')}")  # the request context is there
        g.user = request.headers.get("X-User")
        return dataclasses.replace(
            chat, messages=[{"role": "system", "content": f"The user is {g.user}."}, *chat.messages],
            model="per-user-model", params={"user": g.user, "metadata": {"plan": "pro"}},
            context={"user": g.user})

    @blueprint.before_upstream
    def keep(chat: ChatRequest) -> None:
        seen.append(f"keep:{chat.model}")  # sees what the one before returned
        chat.context["kept"] = True

    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi", "conversation_id": "c9"},
                                      headers={"X-User": "ada"}, buffered=True)  # (buffered: read, then closed)
    assert response.status_code == 200 and seen == ["who:ada", "keep:per-user-model"]
    sent = upstream.stats.bodies[-1]
    assert sent["messages"] == [{"role": "system", "content": "The user is ada."},
                                {"role": "system", "content": "Configured."}, {"role": "user", "content": "hi"}]
    assert (sent["model"], sent["user"], sent["metadata"]) == ("per-user-model", "ada", {"plan": "pro"})
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    [result] = results
    assert result.request.context == {"user": "ada", "kept": True}
    assert result.request.body == {"content": "hi", "conversation_id": "c9"}  # the client's own fields


@pytest.mark.parametrize(("refuse", "status", "code"), [
    (lambda: abort(403, "Chatting is for members."), 403, "forbidden"),
    (lambda: abort(429), 429, "too_many_requests"),
    (lambda: (_ for _ in ()).throw(TooManyStreams()), 429, "too_many_streams"),
])
def test_a_hook_refuses_with_the_json_error(upstream: StandInServer, refuse: Any, status: int, code: str) -> None:
    app, blueprint, results = hooked_app(upstream)

    @blueprint.before_upstream
    def gate(chat: ChatRequest) -> None:
        refuse()

    response = app.test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == status and response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"]
    if status == 403:
        assert error["message"] == "Chatting is for members."
    assert upstream.stats.requests == 0 and results == []  # nothing sent, nothing to save


def test_a_hook_that_fails_is_a_logged_500(upstream: StandInServer, caplog: pytest.LogCaptureFixture) -> None:
    app, blueprint, results = hooked_app(upstream)

    @blueprint.before_upstream
    def broken(chat: ChatRequest) -> Any:
        return {"not": "a ChatRequest"}

    response = app.test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_error"
    assert "return a ChatRequest" in caplog.text and upstream.stats.requests == 0 and results == []


def test_after_stream_gets_the_whole_answer(upstream: StandInServer) -> None:
    upstream.script = Script(reply="the whole answer", usage_extra={"cost": 0.5})
    app, _, results = hooked_app(upstream)
    response = app.test_client().post("/api/chat?format=sse", json={"content": "hi"}, buffered=False)
    events = events_of("sse", b"".join(response.response))
    assert results == []  # not before the server is done with the response
    response.close()
    [result] = results
    assert (result.outcome, result.text, result.finish_reason, result.delivered) == (
        "done", "the whole answer", "stop", True)
    assert result.usage == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4, "cost": 0.5}
    assert result.completion_id == events[0]["id"] and result.error is None and result.duration > 0
    assert result.request.messages == [{"role": "user", "content": "hi"}] and len(result.id) == 32


def test_after_stream_when_the_upstream_refuses(upstream: StandInServer) -> None:
    upstream.script = Script(status=503)
    app, _, results = hooked_app(upstream)
    response = app.test_client().post("/api/chat", json={"content": "hi"}, buffered=True)
    assert response.status_code == 502
    [result] = results
    assert (result.outcome, result.error.code, result.text) == ("error", "upstream_unavailable", "")  # type: ignore[union-attr]


@pytest.mark.parametrize(("script", "code"), [
    (Script(reply="a b", error_after=0), "upstream_error"),  # before any text: a 502
    (Script(reply="a b c d", cut_after=2), "upstream_interrupted"),  # after some
])
def test_after_stream_when_the_stream_fails(upstream: StandInServer, script: Script, code: str) -> None:
    upstream.script = script
    app, _, results = hooked_app(upstream)
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=False)
    b"".join(response.response)
    response.close()
    [result] = results
    assert (result.outcome, result.error.code) == ("error", code)  # type: ignore[union-attr]
    assert result.text == ("" if code == "upstream_error" else "a b")


def test_after_stream_when_the_client_leaves(upstream: StandInServer) -> None:
    upstream.script = Script(reply="a b c d", hold_after=1)
    app, _, results = hooked_app(upstream)
    response = app.test_client().post("/api/chat?format=text", json={"content": "hi"}, buffered=False)
    assert next(iter(response.response)) == b"a"
    response.close()
    [result] = results
    assert (result.outcome, result.text, result.delivered) == ("client_left", "a", False)
    assert upstream.wait_for(lambda s: s.open == 0).cancelled == 1


def test_after_stream_gets_refusals_and_assembled_tool_calls(upstream: StandInServer) -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return "data: " + json.dumps({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

    fragments = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "look", "arguments": ""}},
                 {"index": 0, "function": {"arguments": '{"q": '}}, {"index": 0, "function": {"arguments": '"x"}'}},
                 {"index": 1, "id": "call_2", "function": {"name": "other", "arguments": "{}"}}]
    upstream.script = Script(body=chunk({"refusal": "No, "}) + chunk({"refusal": "sorry."})
                             + "".join(chunk({"tool_calls": [f]}) for f in fragments)
                             + chunk({}, "tool_calls") + "data: [DONE]\n\n")
    app, _, results = hooked_app(upstream)
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=False)
    b"".join(response.response)
    response.close()
    [result] = results
    assert result.refusal == "No, sorry." and result.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_1", "look", '{"q": "x"}'), ("call_2", "other", "{}")]


def test_a_raising_after_stream_hook_changes_nothing(upstream: StandInServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    app, blueprint, results = hooked_app(upstream)

    @blueprint.after_stream
    def broken(result: ChatResult) -> None:
        raise RuntimeError("the database is down")

    client = app.test_client()
    for _ in range(2):
        response = client.post("/api/chat", json={"content": "hi"}, buffered=False)
        assert b"".join(response.response)
        response.close()
    assert len(results) == 2 and all(r.outcome == "done" for r in results)  # the first hook still ran
    assert caplog.text.count("after_stream hook broken failed") == 2 and "the database is down" in caplog.text


def test_finish_mode_reads_the_answer_to_its_end_for_after_stream(upstream: StandInServer) -> None:
    upstream.script = Script(reply="a b c d e f", hold_after=2)
    app, _, results = hooked_app(upstream, on_client_leave="finish", max_streams_per_client=1)
    client = app.test_client()
    response = client.post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=False)
    read_body_until(response, b' b"')  # two words in (in one delta or two)
    response.close()  # the client left, mid-answer
    upstream.script = Script(reply="fine")
    assert client.post("/api/chat", json={"content": "again"}, buffered=True).status_code == 200  # its slot is free
    upstream.release()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.finished, stats.cancelled) == (2, 0)  # read to its end, not stopped
    [left] = [r for r in wait_for_results(results, 2) if r.request.body["content"] == "hi"]
    assert (left.outcome, left.text, left.delivered) == ("done", "a b c d e f", False)


def test_finish_mode_is_bounded_per_worker(upstream: StandInServer) -> None:
    upstream.script = Script(reply="a b c d", hold_after=1)
    app, _, results = hooked_app(upstream, on_client_leave="finish", max_finishing_streams=1)
    client = app.test_client()
    for _ in range(2):
        response = client.post("/api/chat?format=text", json={"content": "hi"}, buffered=False)
        next(iter(response.response))
        response.close()
    upstream.release()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.finished, stats.cancelled) == (1, 1)  # the second was stopped as usual
    outcomes = sorted(r.outcome for r in wait_for_results(results, 2))
    assert outcomes == ["client_left", "done"]


def read_body_until(response: Any, needle: bytes) -> bytes:
    received = b""
    for piece in response.response:
        received += piece
        if needle in received:
            break
    return received


def test_finish_mode_is_bounded_per_blueprint(upstream: StandInServer) -> None:
    """Two chat blueprints in one worker each finish their own max_finishing_streams: one's streams
    that read on for clients that left never take the other's room."""
    upstream.script = Script(reply="a b c d", hold_after=1)
    apps = [hooked_app(upstream, on_client_leave="finish", max_finishing_streams=1) for _ in range(2)]
    for app, _, _ in apps:
        response = app.test_client().post("/api/chat?format=text", json={"content": "hi"}, buffered=False)
        next(iter(response.response))
        response.close()
    upstream.release()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.finished, stats.cancelled) == (2, 0)  # each was read to its end
    for _, _, results in apps:
        assert [r.outcome for r in wait_for_results(results, 1)] == ["done"]


def wait_for_results(results: list[ChatResult], count: int) -> list[ChatResult]:
    return eventually(lambda: results, lambda r: len(r) >= count)


# ---- under gunicorn: after_stream runs after the client's last byte ----------------------------------


@pytest.fixture(scope="module")
def hooks_server(_standin: StandInServer) -> Iterator[Gunicorn]:
    env = stand_in_env(_standin.url, first_event_wait="0.1", heartbeat="0.2", on_client_leave="finish")
    with Gunicorn("tests.hooks_app:app", env=env) as server:
        yield server


def control(server: Gunicorn, method: str, path: str) -> Any:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(method, path)
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body)


def hook(server: Gunicorn, until: Any) -> dict[str, Any]:
    """The hook's state, once ``until`` holds (the server runs the hook as soon as it has closed the response)."""
    return eventually(lambda: control(server, "GET", "/hook"), until)


@pytest.mark.server
@pytest.mark.parametrize("fmt", ["text", "ndjson"])
def test_a_slow_after_stream_does_not_delay_the_last_byte(hooks_server: Gunicorn, upstream: StandInServer,
                                                          fmt: str) -> None:
    upstream.script = Script(reply="all of it")
    control(hooks_server, "POST", "/hook/hold")  # the hook will wait at a gate of its own
    conn, response = post_chat(hooks_server.port, fmt, timeout=30)
    body = response.read()  # the whole response, its terminator included...
    conn.close()
    assert (body.decode() if fmt == "text" else answer_of(events_of(fmt, body))) == "all of it"
    assert hook(hooks_server, lambda s: s["waiting"] == 1)["saved"] == []  # ...while the hook had not finished
    control(hooks_server, "POST", "/hook/release")
    assert hook(hooks_server, lambda s: s["saved"])["saved"] == [["done", "all of it", True]]


@pytest.mark.server
def test_finish_mode_under_gunicorn_when_the_client_leaves_in_silence(hooks_server: Gunicorn,
                                                                     upstream: StandInServer) -> None:
    control(hooks_server, "POST", "/hook/hold")
    control(hooks_server, "POST", "/hook/release")  # (resets what was saved)
    upstream.script = Script(reply="thought long and hard", hold_after=0)
    sock = send_chat_raw(hooks_server.port, "ndjson")
    upstream.wait_for(lambda s: s.open == 1)
    sock.close()  # the tab is closed while the model thinks; the answer is still wanted
    upstream.release()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.finished, stats.cancelled) == (1, 0)
    assert hook(hooks_server, lambda s: s["saved"])["saved"] == [["done", "thought long and hard", False]]


# ---- message metadata ----------------------------------------------------------------------------


def test_message_metadata_goes_out_at_the_start_and_at_the_end(upstream: StandInServer) -> None:
    upstream.script = Script(reply="one two three", hold_after=1)
    app, blueprint, _ = hooked_app(upstream)
    seen: list[Any] = []

    @blueprint.message_metadata
    def about(known: ChatRequest | ChatResult) -> dict[str, Any] | None:
        seen.append(known)
        if isinstance(known, ChatRequest):
            return {"model": known.model, "asked": known.messages[-1]["content"]}
        return {"words": len(known.text.split()), "finish": known.finish_reason}

    @blueprint.message_metadata
    def nothing(known: ChatRequest | ChatResult) -> None:
        return None

    client = app.test_client()
    response = client.post("/api/chat?format=ndjson", json={"content": "count"}, buffered=False)
    chunks = iter(response.response)
    first = next(chunks)
    start = json.loads(first.split(b"\n")[0])
    assert start["metadata"] == {"model": "gpt-4o-mini", "asked": "count"}  # while the model is held
    assert upstream.stats.finished == 0 and len(seen) == 1
    upstream.release()
    events = events_of("ndjson", first + b"".join(chunks))
    response.close()
    assert events[-1]["metadata"] == {"words": 3, "finish": "stop"} and events[-1]["type"] == "done"
    assert isinstance(seen[1], ChatResult) and seen[1].text == "one two three" and seen[1].outcome == "done"
    upstream.script = Script(reply="one two three")
    parts = ui_parts(client.post("/api/chat?format=ui", json={"content": "count"}).get_data())
    assert parts[0]["messageMetadata"] == {"model": "gpt-4o-mini", "asked": "count"}
    assert parts[-1]["type"] == "finish" and parts[-1]["messageMetadata"] == {
        "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}, "words": 3, "finish": "stop"}


@pytest.mark.parametrize("fmt", ["ndjson", "ui"])
def test_a_slow_end_hook_runs_after_the_client_has_the_text(fmt: str) -> None:
    """The whole answer arrives while the (slow) start hook runs, so it is complete before the first
    byte: its text still goes out first, and the end hook runs after the client has it (a gate the
    test opens once it has read the text), so the first byte waits only for the start hook."""
    with StandInServer(Script(reply="one two three")) as upstream:  # its own: nothing else counts there
        _slow_end_hook(upstream, fmt)


def _slow_end_hook(upstream: StandInServer, fmt: str) -> None:
    app, blueprint, _ = hooked_app(upstream)
    text_read = threading.Event()
    end_waited: list[bool] = []

    @blueprint.message_metadata
    def slow(known: ChatRequest | ChatResult) -> dict[str, Any]:
        if isinstance(known, ChatRequest):
            upstream.wait_for(lambda stats: stats.finished == 1)  # the answer is whole, while this runs
            return {"hook": "start"}
        end_waited.append(text_read.wait(10))  # before the fix: called before the first byte, so never set
        return {"hook": "end"}

    response = app.test_client().post(f"/api/chat?format={fmt}", json={"content": "count"}, buffered=False)
    chunks, received = iter(response.response), b""
    while b"three" not in received:
        received += next(chunks)
    text_read.set()
    received += b"".join(chunks)
    response.close()
    assert end_waited == [True]
    if fmt == "ndjson":
        events = events_of("ndjson", received)
        assert answer_of(events) == "one two three" and events[-1]["metadata"] == {"hook": "end"}
    else:
        parts = ui_parts(received)
        assert parts[-1]["type"] == "finish" and parts[-1]["messageMetadata"]["hook"] == "end"


def test_a_message_metadata_hook_that_fails_is_logged_and_left_out(upstream: StandInServer,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    app, blueprint, results = hooked_app(upstream)

    @blueprint.message_metadata
    def broken(known: ChatRequest | ChatResult) -> dict[str, Any]:
        if isinstance(known, ChatResult):
            raise RuntimeError("metadata hook broke")
        return {"when": object()}  # not JSON

    @blueprint.message_metadata
    def fine(known: ChatRequest | ChatResult) -> dict[str, Any]:
        return {"fine": True}

    response = app.test_client().post("/api/chat?format=sse", json={"content": "hi"})
    events = events_of("sse", response.get_data())
    response.close()
    assert events[0]["metadata"] == {"fine": True} and events[-1]["metadata"] == {"fine": True}
    assert answer_of(events) and events[-1]["type"] == "done"
    assert caplog.text.count("message_metadata hook broken failed") == 2 and "metadata hook broke" in caplog.text
    assert [r.outcome for r in results] == ["done"]


def test_no_end_metadata_after_an_error(upstream: StandInServer) -> None:
    upstream.script = Script(reply="one two three four", error_after=2)
    app, blueprint, _ = hooked_app(upstream)
    seen: list[Any] = []

    @blueprint.message_metadata
    def about(known: ChatRequest | ChatResult) -> dict[str, Any]:
        seen.append(type(known).__name__)
        return {"seen": len(seen)}

    events = events_of("ndjson", app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"}).get_data())
    assert events[0]["metadata"] == {"seen": 1} and events[-1]["type"] == "error" and "metadata" not in events[-1]
    assert seen == ["ChatRequest"]
