"""Usage for every stream (``_usage``): where the upstream did not count a model call (the stream was
stopped, its client left, it was cut), it is counted with the model's tokenizer, as OpenAI bills it,
and marked estimated; a whole answer keeps the upstream's own."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import tiktoken

from flask_chatstream import ChatRequest
from flask_chatstream._usage import count_tokens, estimate_usage, prompt_tokens, tokens
from flask_chatstream._usage.images import image_tokens
from flask_chatstream.testing import Script, StandInServer
from flask_chatstream.testing.script import split_reply

from .conftest import eventually, hooked_app

REPLY = ("Streaming lets people read the answer while it is written — token by token, naïvely fast: "
         "東京 and Zürich, ½ a cup, 🙂 emoji, code like `print(sum(range(10)))`, and the rest of a long sentence "
         "that the model would have gone on with had nobody stopped it here.")
HELD = 12
"""The upstream sends this many pieces (words, with their spaces), then holds."""
O200K = tiktoken.get_encoding("o200k_base")


def cookbook(messages: list[dict[str, Any]], encoding: Any = O200K) -> int:
    """OpenAI's cookbook, "How to count tokens with tiktoken", num_tokens_from_messages, for gpt-4o: as
    written there, to hold ours to it."""
    num_tokens = 0
    for message in messages:
        num_tokens += 3
        for key, value in message.items():
            num_tokens += len(encoding.encode(value))
            if key == "name":
                num_tokens += 1
    return num_tokens + 3


def test_prompt_tokens_are_counted_as_the_cookbook_counts_them() -> None:
    messages = [{"role": "system", "content": "You are a helpful, pattern-following assistant."},
                {"role": "user", "name": "example_user", "content": "New synergies will help drive top-line growth."},
                {"role": "assistant", "content": "Things working well together will increase revenue."},
                {"role": "user", "content": "東京 🙂 naïve"}]
    request = ChatRequest(messages=messages, model="gpt-4o-mini", max_tokens=100)
    assert prompt_tokens(request) == cookbook(messages)


def test_tools_are_counted_by_the_cookbooks_formula() -> None:
    """The cookbook's worked example (gpt-4o-mini, one function with an enum): its formula, counted by hand."""
    tools = [{"type": "function", "function": {
        "name": "get_current_weather", "description": "Get the current weather in a given location",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "description": "The unit of temperature to return",
                     "enum": ["celsius", "fahrenheit"]}},
            "required": ["location"]}}}]
    messages = [{"role": "user", "content": "What's the weather like in San Francisco?"}]
    by_hand = (7 + len(O200K.encode("get_current_weather:Get the current weather in a given location")) + 3
               + 3 + len(O200K.encode("location:string:The city and state, e.g. San Francisco, CA"))
               + 3 - 3 + 3 + len(O200K.encode("celsius")) + 3 + len(O200K.encode("fahrenheit"))
               + len(O200K.encode("unit:string:The unit of temperature to return")) + 12)
    request = ChatRequest(messages=messages, model="gpt-4o-mini", max_tokens=100, params={"tools": tools})
    assert prompt_tokens(request) == cookbook(messages) + by_hand


def test_images_and_tool_calls_count_too() -> None:
    image = {"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA",
                                                                              "detail": "low"}}]}
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]}
    request = ChatRequest(messages=[image, call], model="gpt-4o", max_tokens=10)
    expected = 3 + 2 * 3 + len(O200K.encode("user")) + len(O200K.encode("what is this?")) + 85 \
        + len(O200K.encode("assistant")) + len(O200K.encode("add")) + len(O200K.encode('{"a": 2, "b": 3}'))
    assert prompt_tokens(request) == expected


def test_a_model_of_unknown_tokenizer_counts_four_characters_a_token() -> None:
    assert count_tokens("x" * 10, "llama-3.1-8b") == math.ceil(10 / 4)
    assert count_tokens(REPLY, "gpt-4o-mini") == len(O200K.encode(REPLY))
    assert count_tokens(REPLY, "gpt-4") == len(tiktoken.get_encoding("cl100k_base").encode(REPLY))
    usage = estimate_usage(ChatRequest(messages=[], model="gpt-5-mini", max_tokens=1), ["ab", None], [("f", "{}")])
    assert usage == {"prompt_tokens": 3, "completion_tokens": 3 + 7, "total_tokens": 13, "estimated": True}


def data_url(size: tuple[int, int], kind: str) -> str:
    """A real image of ``size``, encoded by Pillow, as a data URL."""
    import base64
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, "white").save(out, format=kind, **({"lossless": True} if kind == "WEBP" else {}))
    return f"data:image/{kind.lower()};base64," + base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "GIF", "WEBP"])
def test_an_images_tokens_follow_its_size_and_its_model(kind: str) -> None:
    """OpenAI's vision guide: a 2048 x 4096 image at high detail is 6 tiles (gpt-4o: 85 + 170 x 6 = 1105
    tokens), 640 x 480 is 2; gpt-4o-mini bills 2833 + 5667 a tile, the gpt-5 family 70 + 140; low
    detail is the base alone. A size that cannot be read counts as 4 tiles, and bounds as 8."""
    def tokens(url: str, model: str, detail: str = "high", **options: Any) -> int:
        return image_tokens({"type": "image_url", "image_url": {"url": url, "detail": detail}}, model, **options)

    tall, small = data_url((2048, 4096), kind), data_url((640, 480), kind)
    assert tokens(tall, "gpt-4o") == 1105 and tokens(tall, "gpt-4o", "low") == 85
    assert tokens(small, "gpt-4o") == 85 + 170 * 2 and tokens(small, "gpt-4o", "auto") == 85 + 170 * 2
    assert tokens(small, "gpt-4o-mini") == 2833 + 5667 * 2 and tokens(small, "gpt-4o-mini", "low") == 2833
    assert tokens(small, "gpt-5-mini") == 70 + 140 * 2
    assert tokens(data_url((100, 100), kind), "gpt-4.1") == 85 + 170
    assert tokens("https://example.com/cat.png", "gpt-4o") == 85 + 170 * 4
    assert tokens("https://example.com/cat.png", "gpt-4o", bound=True) == 85 + 170 * 8
    assert tokens("data:image/png;base64,not-an-image", "gpt-4o") == 85 + 170 * 4


def test_a_structured_outputs_schema_counts_as_its_json() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
              "required": ["city", "days"], "additionalProperties": False}
    messages = [{"role": "user", "content": "Plan a trip."}]
    compact = len(O200K.encode(json.dumps(schema, separators=(",", ":"))))
    for params in ({"response_format": {"type": "json_schema", "json_schema": {"name": "trip", "schema": schema}}},
                   {"text": {"format": {"type": "json_schema", "name": "trip", "schema": schema}}}):
        request = ChatRequest(messages=messages, model="gpt-4o", max_tokens=10, params=params)
        assert prompt_tokens(request) == cookbook(messages) + compact


def test_without_its_file_the_tokenizer_is_never_fetched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """No file in tiktoken's cache: the rule counts, with one warning, and nothing is downloaded (the
    folder stays empty); a damaged file is not read either."""
    monkeypatch.setattr(tokens, "_ENCODINGS", {})
    monkeypatch.setattr(tokens, "_BY_MODEL", {})
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert count_tokens("abcdefgh", "gpt-4o") == 2
    assert count_tokens("abcdefgh", "gpt-4o") == 2
    assert caplog.text.count("is not in its cache") == 1 and os.listdir(tmp_path) == []
    monkeypatch.setattr(tokens, "_ENCODINGS", {})
    monkeypatch.setattr(tokens, "_BY_MODEL", {})
    Path(tokens.cache_path("o200k_base")).write_bytes(b"not the file")
    with caplog.at_level(logging.WARNING):
        assert count_tokens("abcdefgh", "gpt-4o") == 2
    assert "is damaged" in caplog.text


def test_streams_that_need_the_tokenizer_at_once_load_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thousand streams stopped together each need the encoding before it is loaded: one loads it (80 MB,
    half a second), the others wait for that load instead of each loading their own copy."""
    monkeypatch.setattr(tokens, "_ENCODINGS", {})
    monkeypatch.setattr(tokens, "_BY_MODEL", {})
    monkeypatch.setattr(tokens, "_LOADING", {})
    loads, load = [], tokens._load
    monkeypatch.setattr(tokens, "_load", lambda name: (loads.append(name), load(name)))
    barrier, counts = threading.Barrier(20), []

    def count() -> None:
        barrier.wait()
        counts.append(count_tokens(REPLY, "gpt-4o-mini"))

    threads = [threading.Thread(target=count) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == ["o200k_base"] and counts == [len(O200K.encode(REPLY))] * 20


FORMATS = ["text", "ndjson", "sse", "ui", "agui"]


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("how", ["client_left", "stopped"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_stopped_stream_reports_what_it_used(upstream: StandInServer, fmt: str, how: str, api: str) -> None:
    """The upstream sent 12 pieces and holds; the client leaves, or stops the stream: its usage is the
    prompt the upstream was sent and the tokens of those 12 pieces, marked estimated."""
    upstream.script = Script(reply=REPLY, hold_after=HELD)
    app, _, results = hooked_app(upstream, api=api, system_prompt="Be brief.")
    client = app.test_client()
    response = client.post(f"/api/chat?format={fmt}", json={"content": "Tell me about streaming."}, buffered=False)
    pieces, body = iter(response.response), b""
    sent = split_reply(REPLY, None)[:HELD]
    while sent[-1].strip().encode() not in body:
        body += next(pieces)
    if how == "stopped":
        assert client.post(f"/api/chat/{response.headers['X-Chat-Stream-Id']}/stop").status_code == 204
    response.close()
    result = eventually(lambda: results, lambda found: found)[0]
    assert result.outcome == how
    usage = result.usage
    assert usage is not None and usage["estimated"] is True
    text = "".join(sent)
    expected = len(O200K.encode(text))
    assert abs(usage["completion_tokens"] - expected) <= max(2, expected / 10), (usage, expected)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about streaming."}]
    assert usage["prompt_tokens"] == cookbook(messages)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_whole_answer_keeps_the_upstreams_usage(upstream: StandInServer, api: str) -> None:
    upstream.script = Script(reply=REPLY)
    app, _, results = hooked_app(upstream, api=api)
    with app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"}) as response:
        response.get_data()
    usage = eventually(lambda: results, lambda found: found)[0].usage
    assert usage is not None and "estimated" not in usage
    assert usage["completion_tokens"] == len(split_reply(REPLY, None))  # the stand-in's own count, not ours


def test_a_call_cut_before_its_usage_chunk_is_estimated_and_the_tool_steps_summed(upstream: StandInServer) -> None:
    """Two model calls (a server tool, then the answer, cut by the upstream before its end): the first
    call's usage is the upstream's, the second's is counted here; the sum is marked estimated."""
    upstream.script = Script(reply=REPLY, cut_after=HELD,
                             tool_calls=[{"id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}}])
    app, blueprint, results = hooked_app(upstream)
    blueprint.tool(lambda a, b: a + b, name="add", description="Add.")
    with app.test_client().post("/api/chat?format=ndjson", json={"content": "add"}) as response:
        response.get_data()
    result = eventually(lambda: results, lambda found: found)[0]
    assert result.outcome == "error" and result.usage is not None and result.usage["estimated"] is True
    # The first call, by the stand-in: the prompt's one word, one call. The second, here: its prompt (the
    # question, the call and its result) and the 12 pieces it sent.
    second = len(O200K.encode("".join(split_reply(REPLY, None)[:HELD])))
    assert abs(result.usage["completion_tokens"] - (1 + second)) <= 2
    assert result.usage["prompt_tokens"] > 1 + cookbook([{"role": "user", "content": "add"}])


def test_a_budgets_hold_never_counts_a_prompt_short() -> None:
    """The hold bounds the prompt by its bytes, with no tokenizer: never less than the tokens, whatever
    the script (an emoji or a rare CJK character may be several tokens, never more than its bytes)."""
    from flask_chatstream._usage.estimate import prompt_bound

    texts = [REPLY, "東京都庁 𠮷野家 🙂🙂🙂 ☃", "a" * 1000, " ".join(str(n) for n in range(500)), "\n\n\t  x"]
    for text in texts:
        request = ChatRequest(messages=[{"role": "user", "content": text}], model="gpt-4o-mini", max_tokens=1)
        assert prompt_bound(request) >= prompt_tokens(request)
