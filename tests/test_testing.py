"""The stand-in upstream: the SDK's own typed parser must accept what it sends."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from flask_chatstream.testing import Script, StandInServer, split_reply


def sdk(upstream: StandInServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=upstream.url, max_retries=0)


def test_stream_has_openais_chunk_shape(upstream: StandInServer) -> None:
    upstream.script = Script(reply="Bonjour à tous, ça va?")
    chunks = list(sdk(upstream).chat.completions.create(
        model="any", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Bonjour à tous, ça va?"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.opened, stats.finished, stats.open, stats.cancelled) == (1, 1, 0, 0)


def test_error_status_is_openai_shaped(upstream: StandInServer) -> None:
    upstream.script = Script(status=429, retry_after="2")
    with pytest.raises(openai.RateLimitError) as info:
        sdk(upstream).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    assert info.value.response.headers["retry-after"] == "2"


def test_counts_a_caller_that_leaves_even_during_a_stall(upstream: StandInServer) -> None:
    upstream.script = Script(reply="a b c d", stall_after=1)
    stream = sdk(upstream).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                   stream=True)
    next(iter(stream))
    stream.close()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)


def test_scripts_by_model_and_chunk_counts(upstream: StandInServer) -> None:
    upstream.scripts["fast"] = Script(reply="abcdefgh", chunks=4)
    stream = sdk(upstream).chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}],
                                                   stream=True)
    assert [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content] == \
        ["ab", "cd", "ef", "gh"]
    assert split_reply("one two three", None) == ["one", " two", " three"]


def test_control_api(upstream: StandInServer) -> None:
    base = upstream.url.removesuffix("/v1")
    put = urllib.request.Request(f"{base}/_standin/script", data=json.dumps({"reply": "set remotely"}).encode(),
                                 method="PUT", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(put).read()
    text = "".join(c.choices[0].delta.content or "" for c in sdk(upstream).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True) if c.choices)
    assert text == "set remotely"
    upstream.wait_for(lambda s: s.open == 0)
    stats = json.loads(urllib.request.urlopen(f"{base}/_standin/stats").read())
    assert stats["finished"] == 1 and stats["requests"] == 1
