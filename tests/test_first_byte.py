"""Until the answer's first visible event, every upstream failure is a real HTTP status with the JSON
body; after it, odd upstreams still end each stream in exactly one way."""

from __future__ import annotations

import json

import pytest

from flask_chatstream._errors import StreamAborted
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, AppFactory
from .streams import answer_of, check_event_stream, events_of

FORMATS = ["text", "ndjson", "sse"]


def chunk(delta: dict[str, object], finish: str | None = None) -> str:
    body = {"id": "chatcmpl-raw", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return "data: " + json.dumps(body) + "\n\n"


ROLE = chunk({"role": "assistant", "content": ""})
TOOL_CALL = chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "lookup", "arguments": "{}"}}]})

BEFORE_CONTENT = {
    "json instead of a stream": (Script(content_type="application/json", body='{"choices": []}'), 502,
                                 "upstream_malformed"),
    "an html error page": (Script(content_type="text/html", body="<html>Bad gateway</html>"), 502,
                           "upstream_malformed"),
    "in-stream error": (Script(error_after=0), 502, "upstream_error"),
    "malformed data": (Script(malformed_after=0), 502, "upstream_malformed"),
    "silence past read_timeout": (Script(first_delay=3600), 504, "upstream_timeout"),
    "a line that never ends": (Script(giant_line=4 * 1024 * 1024), 502, "upstream_malformed"),
    "wrongly typed chunk": (Script(body=ROLE + 'data: {"choices": [{"delta": {"content": 7}}]}\n\n'), 502,
                            "upstream_malformed"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", list(BEFORE_CONTENT))
def test_failure_before_the_first_content_is_a_status(make_app: AppFactory, upstream: StandInServer, fmt: str,
                                                       fault: str) -> None:
    script, status, code = BEFORE_CONTENT[fault]
    upstream.script = script
    client = make_app(read_timeout=0.5 if code == "upstream_timeout" else 30,
                      max_event_bytes=1024 * 1024).test_client()
    response = client.post(f"/api/chat?format={fmt}", json={"content": "hi"})
    assert response.status_code == status, response.data[:200]
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == code
    assert API_KEY not in response.get_data(as_text=True)
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert stats.opened == 1


def test_a_tool_call_before_any_text_is_a_status_in_text_only(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(body=ROLE + TOOL_CALL + chunk({}, "tool_calls") + "data: [DONE]\n\n")
    client = make_app().test_client()
    response = client.post("/api/chat?format=text", json={"content": "hi"})
    assert response.status_code == 502 and response.get_json()["error"]["code"] == "tool_calls_need_events"
    events = events_of("ndjson", client.post("/api/chat?format=ndjson", json={"content": "hi"}).data)
    assert [e["type"] for e in events] == ["start", "tool_call", "done"]
    assert events[-1]["finish_reason"] == "tool_calls"


def test_text_cut_at_a_tool_call_after_its_text_is_an_error_for_after_stream(upstream: StandInServer) -> None:
    """Regression: text/plain met a tool call once its text was out, and the client's answer was cut,
    but the answer had finished upstream, so after_stream (the metrics, the log line) said "done"."""
    from .conftest import hooked_app

    upstream.script = Script(body=ROLE + chunk({"content": "kept"}) + TOOL_CALL + chunk({}, "tool_calls")
                             + "data: [DONE]\n\n")
    app, _, results = hooked_app(upstream)
    response = app.test_client().post("/api/chat?format=text", json={"content": "hi"}, buffered=False)
    received = b""
    with pytest.raises(StreamAborted) as info:
        for piece in response.response:
            received += piece
    response.close()
    assert received == b"kept" and info.value.code == "tool_calls_need_events"
    [result] = results
    assert result.outcome == "error" and result.error is not None and result.error.code == "tool_calls_need_events"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_slow_first_token_starts_the_response_after_first_event_wait(make_app: AppFactory,
                                                                       upstream: StandInServer, fmt: str) -> None:
    upstream.script = Script(reply="late but whole", hold_after=0)  # held at the gate until released
    client = make_app(first_event_wait=0.2).test_client()
    response = client.post(f"/api/chat?format={fmt}", json={"content": "hi"}, buffered=False)
    assert response.status_code == 200  # committed while the upstream is still held
    assert (upstream.stats.open, upstream.stats.finished) == (1, 0)
    upstream.release()
    body = b"".join(response.response)
    assert (body.decode() if fmt == "text" else answer_of(events_of(fmt, body))) == "late but whole"


@pytest.mark.parametrize("fmt", ["ndjson", "sse"])
def test_an_error_in_the_same_read_as_text_comes_after_that_text(make_app: AppFactory, upstream: StandInServer,
                                                                  fmt: str) -> None:
    error = 'data: {"error": {"message": "Incorrect API key provided: ' + API_KEY + '"}}\n\n'
    upstream.script = Script(body=ROLE + chunk({"content": "kept "}) + chunk({"content": "too"}) + error)
    response = make_app().test_client().post(f"/api/chat?format={fmt}", json={"content": "hi"}, buffered=False)
    body = b"".join(response.response)
    events = events_of(fmt, body)
    assert answer_of(events) == "kept too"
    assert check_event_stream(events)["error"]["code"] == "upstream_error"
    assert API_KEY.encode() not in body


def test_an_error_in_the_same_read_as_text_cuts_text_after_it(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(body=ROLE + chunk({"content": "kept"}) + 'data: {"error": {"message": "x"}}\n\n')
    response = make_app().test_client().post("/api/chat?format=text", json={"content": "hi"}, buffered=False)
    received = b""
    with pytest.raises(StreamAborted) as info:
        for piece in response.response:
            received += piece
    assert received == b"kept" and info.value.code == "upstream_error"


@pytest.mark.parametrize("fmt", ["text", "ndjson"])
def test_a_line_that_never_ends_after_text_is_malformed(make_app: AppFactory, upstream: StandInServer,
                                                        fmt: str) -> None:
    upstream.script = Script(body=ROLE + chunk({"content": "before"}) + "data: " + "x" * 300_000)
    response = make_app(max_event_bytes=100_000).test_client().post(f"/api/chat?format={fmt}",
                                                                    json={"content": "hi"}, buffered=False)
    received = b""
    try:
        for piece in response.response:
            received += piece
    except StreamAborted as aborted:
        assert fmt == "text" and aborted.code == "upstream_malformed"
    if fmt == "ndjson":
        events = events_of(fmt, received)
        assert answer_of(events) == "before"
        assert check_event_stream(events)["error"]["code"] == "upstream_malformed"
    else:
        assert received == b"before"


@pytest.mark.parametrize("fmt", ["ndjson", "sse"])
def test_only_choice_zero_reaches_the_client(make_app: AppFactory, upstream: StandInServer, fmt: str) -> None:
    upstream.script = Script(reply="one two three", choices=3)
    events = events_of(fmt, make_app().test_client().post(f"/api/chat?format={fmt}", json={"content": "hi"}).data)
    assert answer_of(events) == "one two three"
    assert check_event_stream(events)["finish_reason"] == "stop"


def test_usage_reaches_the_client_as_token_counts_only(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(reply="a b", usage_extra={"cost": 0.000042, "litellm_call_id": "abc"})
    events = events_of("ndjson", make_app().test_client().post("/api/chat?format=ndjson", json={"content": "hi"}).data)
    assert check_event_stream(events)["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("after_done", ["hold", "data"])
def test_the_response_ends_with_the_answer(make_app: AppFactory, upstream: StandInServer, fmt: str,
                                           after_done: str) -> None:
    """An upstream that holds the connection after [DONE], or keeps sending, is not waited for or read."""
    upstream.script = Script(reply="the whole answer", after_done=after_done)
    client = make_app(read_timeout=60).test_client()
    response = client.post(f"/api/chat?format={fmt}", json={"content": "hi"}, buffered=False)
    body = b"".join(response.response)  # ends without waiting for the upstream to close
    response.close()
    if fmt == "text":
        assert body == b"the whole answer"
    else:
        events = events_of(fmt, body)
        assert answer_of(events) == "the whole answer" and check_event_stream(events)["type"] == "done"
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)


def test_a_clean_end_keeps_the_upstream_connection(make_app: AppFactory, upstream: StandInServer) -> None:
    client = make_app().test_client()
    for _ in range(5):
        response = client.post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=False)
        b"".join(response.response)
        response.close()
    stats = upstream.wait_for(lambda s: s.finished == 5)
    assert (stats.requests, stats.connections) == (5, 1)
