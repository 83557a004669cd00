"""The Responses API as the upstream (``api="responses"``, ``"auto"``): the same events, formats,
tools, errors and results as chat completions, so no client can tell which API answered.

Most tests run on both APIs (the ``api`` fixture), against the stand-in's ``/v1/responses`` and
``/v1/chat/completions``; the first ones prove that the stand-in's Responses stream is what the
official SDK parses."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
from flask import Flask

from flask_chatstream import ChatRequest, ConfigError, Settings, UpstreamInterrupted, create_blueprint
from flask_chatstream._stream.relay import Relay
from flask_chatstream._upstream.client import Upstream
from flask_chatstream._wire.encoders import NDJSON
from flask_chatstream._wire.responses import ResponsesTranslator
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, AppFactory, hooked_app
from .streams import answer_of, check_event_stream, events_of, ndjson_events, streams_while_held, ui_parts


@pytest.fixture(params=["chat", "responses"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def post(client: Any, fmt: str, body: dict[str, Any]) -> bytes:
    """POST a chat and read the whole stream; closing the response is what runs ``after_stream``."""
    response = client.post(f"/api/chat?format={fmt}", json=body)
    data: bytes = response.get_data()
    response.close()
    return data


# ---- the stand-in speaks the Responses API as the SDK reads it ------------------------------------


def test_the_sdk_parses_the_stand_ins_responses_stream(upstream: StandInServer) -> None:
    upstream.script = Script(reply="Paris is the capital.", reasoning="Recall geography.",
                             citations=[{"url": "https://example.org/paris", "title": "Paris"}])
    client = openai.OpenAI(api_key=API_KEY, base_url=upstream.url, max_retries=0)
    with client.responses.stream(model="m", input="Capital of France?", instructions="Be brief.") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert final.output_text == "Paris is the capital."
    assert final.status == "completed" and final.usage is not None and final.usage.output_tokens > 0
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Recall geography."
    assert message.type == "message"
    [annotation] = message.content[0].annotations  # type: ignore[union-attr]
    assert annotation.type == "url_citation" and annotation.url == "https://example.org/paris"
    body = upstream.stats.bodies[-1]
    assert body["input"] == "Capital of France?" and body["instructions"] == "Be brief."


def test_the_sdk_parses_the_stand_ins_function_calls(upstream: StandInServer) -> None:
    upstream.script = Script(tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}},
                                         {"name": "time", "arguments": {"zone": "CET"}}])
    client = openai.OpenAI(api_key=API_KEY, base_url=upstream.url, max_retries=0)
    with client.responses.stream(model="m", input="Weather and time?") as stream:
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("weather", {"city": "Oslo"}),
                                                                   ("time", {"zone": "CET"})]
    assert all(c.call_id.startswith("call_") for c in calls)


def test_a_server_without_the_responses_api_answers_404(upstream: StandInServer) -> None:
    upstream.script = Script(apis=("chat",))
    client = openai.OpenAI(api_key=API_KEY, base_url=upstream.url, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", input="hi", stream=True)


# ---- the translation, event by event (pure) ------------------------------------------------------


def feed(*events: dict[str, Any]) -> tuple[ResponsesTranslator, list[dict[str, Any]]]:
    translator = ResponsesTranslator(stream_id="s1")
    payloads = [json.dumps({**event, "sequence_number": n}).encode() for n, event in enumerate(events)]
    return translator, [dict(e) for e in translator.feed(payloads)]


CREATED = {"type": "response.created", "response": {"id": "resp_1", "model": "m", "status": "in_progress"}}


def test_refusals_text_and_the_end_in_one_read() -> None:
    translator, events = feed(
        CREATED,
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hel"},
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "lo"},
        {"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0, "content_index": 1, "delta": "No."},
        {"type": "response.completed", "response": {"id": "resp_1", "status": "completed", "usage": {
            "input_tokens": 3, "output_tokens": 2, "total_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}}}},
    )
    assert events == [
        {"type": "start", "id": "resp_1", "model": "m", "stream_id": "s1"},
        {"type": "delta", "content": "Hello"},  # what one read brought, merged
        {"type": "refusal", "content": "No."},
        {"type": "done", "finish_reason": "stop", "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
    ]
    assert translator.finished and translator.usage is not None and translator.usage["input_tokens"] == 3


@pytest.mark.parametrize(("event", "code"), [
    ({"type": "error", "code": "rate_limit_exceeded", "message": "Rate limit reached for sk-secret"}, "rate_limited"),
    ({"type": "error", "code": "invalid_prompt", "message": "bad"}, "upstream_rejected"),
    ({"type": "response.failed", "response": {"status": "failed", "error": {"code": "server_error",
                                                                            "message": "oops sk-secret"}}}, "upstream_error"),
])
def test_failures_in_band_have_our_codes_and_never_the_upstreams_words(event: dict[str, Any], code: str) -> None:
    translator, events = feed(CREATED, event)
    assert [e["type"] for e in events] == ["start"]
    assert translator.error is not None and translator.error.code == code
    assert "sk-secret" not in translator.error.message


def test_a_function_call_is_whole_by_its_call_id_and_ends_with_tool_calls() -> None:
    item = {"id": "fc_1", "type": "function_call", "call_id": "call_9", "name": "weather", "arguments": ""}
    translator, events = feed(
        CREATED,
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": '{"city":'},
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0, "delta": '"Oslo"}'},
        {"type": "response.output_item.done", "output_index": 0, "item": {**item, "arguments": '{"city":"Oslo"}'}},
        {"type": "response.completed", "response": {"status": "completed"}},
    )
    assert translator.tool_calls() == [("call_9", "weather", '{"city":"Oslo"}')]
    assert events[-1] == {"type": "done", "finish_reason": "tool_calls", "usage": None}


@pytest.mark.parametrize("payload", [b"{not json", b'{"no": "type"}', json.dumps(
    {"type": "response.output_text.delta", "delta": 7}).encode()])
def test_what_the_responses_api_never_sends_is_malformed(payload: bytes) -> None:
    translator = ResponsesTranslator()
    translator.feed([json.dumps(CREATED).encode(), payload])
    assert translator.error is not None and translator.error.code == "upstream_malformed"


def test_a_stream_that_ends_before_its_terminal_event_was_interrupted() -> None:
    translator, _ = feed(CREATED, {"type": "response.output_text.delta", "output_index": 0, "delta": "Hi"})
    assert translator.end_of_stream() == []
    assert translator.error is not None and translator.error.code == "upstream_interrupted"


def test_a_done_marker_without_the_terminal_event_was_cut(make_app: AppFactory, upstream: StandInServer) -> None:
    """The Responses API ends an answer with response.completed (or .incomplete), never with [DONE]: a
    stream that has the marker and not that event was cut, and says so, as a chat completions stream
    that ends without its finish does."""
    translator, _ = feed(CREATED, {"type": "response.output_text.delta", "output_index": 0, "delta": "Hi"})
    assert translator.feed([b"[DONE]"]) == [] and not translator.finished
    assert translator.error is not None and translator.error.code == "upstream_interrupted"
    raw = "".join(f"data: {json.dumps(event)}\n\n" for event in
                  (CREATED, {"type": "response.output_text.delta", "output_index": 0, "delta": "Half an answer"}))
    upstream.script = Script(content_type="text/event-stream", body=raw + "data: [DONE]\n\n")
    response = make_app(api="responses").test_client().post("/api/chat?format=ndjson", json={"content": "hi"})
    events = ndjson_events(response.data)
    assert answer_of(events) == "Half an answer"
    assert events[-1] == {"type": "error", "error": {"code": "upstream_interrupted",
                                                     "message": UpstreamInterrupted.message}}


# ---- the same relay on either API -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_streams_token_by_token(make_app: AppFactory, upstream: StandInServer, api: str, fmt: str) -> None:
    client = make_app(api=api).test_client()
    streams_while_held(client, upstream, fmt)  # the first words arrive while the upstream is held
    body = upstream.stats.bodies[-1]
    if api == "responses":
        assert "messages" not in body and body["input"] == [{"role": "user", "content": "hi"}]
        assert body["store"] is False and body["stream"] is True and body["max_output_tokens"] == 4096
    else:
        assert "input" not in body and body["messages"][-1] == {"role": "user", "content": "hi"}


def test_the_request_becomes_input_items(make_app: AppFactory, upstream: StandInServer) -> None:
    client = make_app(api="responses", system_prompt="You are terse.").test_client()
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi, how can I help?"},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                     {"type": "image_url", "image_url": {"url": image, "detail": "low"}}]},
    ]
    response = client.post("/api/chat?format=ndjson", json={"messages": messages, "temperature": 0.5})
    assert response.status_code == 200, response.get_data()
    body = upstream.stats.bodies[-1]
    assert body["instructions"] == "You are terse." and body["temperature"] == 0.5
    assert body["input"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi, how can I help?"},
        {"role": "user", "content": [{"type": "input_text", "text": "what is this?"},
                                     {"type": "input_image", "image_url": image, "detail": "low"}]},
    ]


def test_done_carries_usage_and_the_result_keeps_the_details(upstream: StandInServer, api: str) -> None:
    upstream.script = Script(reply="one two three", reasoning="hmm")
    app, _, results = hooked_app(upstream, api=api)
    events = events_of("ndjson", post(app.test_client(), "ndjson", {"content": "a b"}))
    done = check_event_stream(events)
    assert done["finish_reason"] == "stop"
    assert set(done["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    [result] = results
    assert result.outcome == "done" and result.text == "one two three" and result.reasoning == "hmm"
    assert result.usage is not None and result.usage["total_tokens"] == done["usage"]["total_tokens"]
    if api == "responses":
        assert result.response_id is not None and result.response_id.startswith("resp_")
        assert result.response_id == events[0]["id"] == result.completion_id
        assert result.usage["output_tokens_details"] == {"reasoning_tokens": 1}  # the details stay on the server
    else:
        assert result.response_id is None and result.completion_id.startswith("chatcmpl-")


@pytest.mark.parametrize(("finish", "expected"), [("length", "length"), ("content_filter", "content_filter")])
def test_an_incomplete_answer_says_why(make_app: AppFactory, upstream: StandInServer, api: str, finish: str,
                                       expected: str) -> None:
    upstream.script = Script(reply="cut short", finish_reason=finish)
    body = make_app(api=api).test_client().post("/api/chat?format=sse", json={"content": "hi"}).get_data()
    events = events_of("sse", body)
    assert check_event_stream(events)["finish_reason"] == expected
    assert answer_of(events) == "cut short"


def test_reasoning_summaries_are_reasoning_events(make_app: AppFactory, upstream: StandInServer, api: str) -> None:
    upstream.script = Script(reply="42", reasoning="Think it through first")
    client = make_app(api=api).test_client()
    events = events_of("ndjson", client.post("/api/chat?format=ndjson", json={"content": "q"}).get_data())
    check_event_stream(events)
    assert "".join(e["content"] for e in events if e["type"] == "reasoning") == "Think it through first"
    kinds = [e["type"] for e in events]
    assert kinds.index("reasoning") < kinds.index("delta")
    parts = ui_parts(client.post("/api/chat?format=ui", json={"content": "q"}).get_data())
    assert [p["type"] for p in parts if p["type"].startswith("reasoning")][:2] == ["reasoning-start", "reasoning-delta"]


def test_url_citations_are_source_events(make_app: AppFactory, upstream: StandInServer, api: str) -> None:
    citations = [{"url": "https://example.org/a", "title": "A"}, {"url": "https://example.org/b", "title": "B"}]
    upstream.script = Script(reply="See the sources.", citations=citations)
    client = make_app(api=api).test_client()
    for fmt in ("ndjson", "sse"):
        events = events_of(fmt, client.post(f"/api/chat?format={fmt}", json={"content": "q"}).get_data())
        check_event_stream(events)
        assert [e for e in events if e["type"] == "source"] == [
            {"type": "source", "url": "https://example.org/a", "title": "A"},
            {"type": "source", "url": "https://example.org/b", "title": "B"}]
    parts = ui_parts(client.post("/api/chat?format=ui", json={"content": "q"}).get_data())
    assert [p for p in parts if p["type"] == "source-url"] == [
        {"type": "source-url", "sourceId": "source-1", "url": "https://example.org/a", "title": "A"},
        {"type": "source-url", "sourceId": "source-2", "url": "https://example.org/b", "title": "B"}]
    text = client.post("/api/chat?format=text", json={"content": "q"}).get_data()
    assert text == b"See the sources."


def test_a_failure_in_the_answer_is_the_error_event(make_app: AppFactory, upstream: StandInServer, api: str) -> None:
    upstream.script = Script(reply="one two three four", error_after=2)
    client = make_app(api=api).test_client()
    events = events_of("ndjson", client.post("/api/chat?format=ndjson", json={"content": "q"}).get_data())
    error = check_event_stream(events)
    assert error["type"] == "error" and error["error"]["code"] == "upstream_error"
    assert answer_of(events) == "one two"
    assert "stand-in failure" not in json.dumps(events)  # the upstream's words are never passed on


def test_a_failure_before_any_text_is_a_status(make_app: AppFactory, upstream: StandInServer, api: str) -> None:
    upstream.script = Script(reply="never", error_after=0)
    response = make_app(api=api).test_client().post("/api/chat?format=ndjson", json={"content": "q"})
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] == "upstream_error"


def test_refusals_are_statuses_and_retries_hold(make_app: AppFactory, upstream: StandInServer, api: str) -> None:
    upstream.script = Script(status=429, retry_after="7")
    client = make_app(api=api).test_client()
    response = client.post("/api/chat", json={"content": "q"})
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert API_KEY not in response.get_data(as_text=True)
    upstream.reset()
    upstream.script = Script(status=503)
    response = make_app(api=api, max_retries=1, max_retry_wait=5).test_client().post(
        "/api/chat", json={"content": "q"})
    assert response.status_code == 502 and response.get_json()["error"]["code"] == "upstream_unavailable"
    assert upstream.stats.requests == 2  # retried once


def test_server_side_tools_round_trip_with_the_same_call_id(upstream: StandInServer, api: str) -> None:
    def reply(messages: Any) -> str:
        return f"The sum is {messages[-1]['content']}."

    upstream.script = Script(tool_calls=[{"id": "call_sum1", "name": "add", "arguments": {"a": 2, "b": 3}}],
                             reply=reply)
    app, blueprint, results = hooked_app(upstream, api=api)

    @blueprint.tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    events = events_of("ndjson", post(app.test_client(), "ndjson", {"content": "2+3"}))
    check_event_stream(events)
    kinds = [e["type"] for e in events]
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("delta")
    assert answer_of(events) == "The sum is 5."
    first, second = list(upstream.stats.bodies)[-2:]
    if api == "responses":
        assert first["tools"] == [{"type": "function", "name": "add", "description": "Add two numbers.",
                                   "parameters": first["tools"][0]["parameters"]}]
        assert second["input"][-2:] == [
            {"type": "function_call", "call_id": "call_sum1", "name": "add", "arguments": '{"a": 2, "b": 3}'},
            {"type": "function_call_output", "call_id": "call_sum1", "output": "5"}]
    else:
        assert first["tools"][0]["function"]["name"] == "add"
        assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_sum1", "content": "5"}
    assert results[0].tool_calls[0].output == 5


def test_client_side_tools_and_their_history(upstream: StandInServer, api: str) -> None:
    upstream.script = Script(tool_calls=[{"id": "call_loc", "name": "get_location", "arguments": {}}])
    app, blueprint, _ = hooked_app(upstream, api=api)

    @blueprint.before_upstream
    def offer(chat: ChatRequest) -> None:  # in chat completions' shape: accepted on either API
        chat.params["tools"] = [{"type": "function", "function": {"name": "get_location", "parameters": {}}}]

    client = app.test_client()
    events = events_of("ndjson", client.post("/api/chat?format=ndjson", json={"content": "where?"}).get_data())
    done = check_event_stream(events)
    [call] = [e for e in events if e["type"] == "tool_call"]
    assert done["finish_reason"] == "tool_calls" and call["id"] == "call_loc" and call["name"] == "get_location"
    history = [{"role": "user", "content": "where?"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_loc", "type": "function", "function": {"name": "get_location", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "call_loc", "content": "Oslo"}]
    upstream.script = Script(reply="You are in Oslo.")
    events = events_of("ndjson", client.post("/api/chat?format=ndjson", json={"messages": history}).get_data())
    assert answer_of(events) == "You are in Oslo."
    body = upstream.stats.bodies[-1]
    if api == "responses":
        assert body["tools"] == [{"type": "function", "name": "get_location", "parameters": {}}]
        assert body["input"][1:] == [
            {"type": "function_call", "call_id": "call_loc", "name": "get_location", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_loc", "output": "Oslo"}]


def test_hooks_shape_the_responses_request(upstream: StandInServer) -> None:
    app, blueprint, _ = hooked_app(upstream, api="responses")

    @blueprint.before_upstream
    def think(chat: ChatRequest) -> None:
        chat.params["reasoning"] = {"effort": "low", "summary": "auto"}
        chat.params["store"] = True

    assert app.test_client().post("/api/chat?format=ndjson", json={"content": "q"}).status_code == 200
    body = upstream.stats.bodies[-1]
    assert body["reasoning"] == {"effort": "low", "summary": "auto"} and body["store"] is True


def test_a_silent_upstream_is_stopped_at_the_read_timeout(upstream: StandInServer, api: str) -> None:
    upstream.script = Script(reply="never", first_delay=3600)
    settings = Settings(api_key=API_KEY, base_url=upstream.url, max_retries=0, read_timeout=5.0, api=api)
    relay = Relay(Upstream(settings).open(ChatRequest(messages=[{"role": "user", "content": "hi"}], model="m",
                                                      max_tokens=10)), NDJSON, settings)
    relay.tick(time.monotonic() + 1, 0)
    assert relay.stop_reason is None
    relay.tick(time.monotonic() + 6, 0)  # the watchdog's tick, past the read timeout
    assert relay.stop_reason == "timeout"
    events = events_of("ndjson", b"".join(relay))  # stopped before its first read: the error alone
    assert [e["type"] for e in events] == ["error"] and events[0]["error"]["code"] == "upstream_timeout"
    assert upstream.wait_for(lambda s: s.open == 0).cancelled == 1


# ---- api="auto" -------------------------------------------------------------------------------------


def test_auto_takes_the_responses_api_where_there_is_one(make_app: AppFactory, upstream: StandInServer) -> None:
    client = make_app(api="auto").test_client()
    for _ in range(2):
        events = events_of("ndjson", client.post("/api/chat?format=ndjson", json={"content": "hi"}).get_data())
        assert check_event_stream(events)["type"] == "done"
    assert upstream.stats.requests == 2 and all("input" in body for body in upstream.stats.bodies)


def test_auto_falls_back_to_chat_completions_and_remembers(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(reply="from chat completions", apis=("chat",))
    client = make_app(api="auto").test_client()
    for _ in range(3):
        events = events_of("ndjson", client.post("/api/chat?format=ndjson", json={"content": "hi"}).get_data())
        assert answer_of(events) == "from chat completions"
    bodies = list(upstream.stats.bodies)
    assert len(bodies) == 4  # one /responses (404), then chat completions each time
    assert "input" in bodies[0] and all("messages" in body for body in bodies[1:])


def test_the_setting_is_checked_at_startup() -> None:
    app = Flask(__name__)
    app.config["CHATSTREAM_API"] = "completions"
    with pytest.raises(ConfigError, match="CHATSTREAM_API"):
        app.register_blueprint(create_blueprint(api_key=API_KEY))
