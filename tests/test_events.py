from __future__ import annotations

import json
from typing import Any

import pytest

from flask_chatstream import UpstreamError, UpstreamInterrupted
from flask_chatstream._events import Translator


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"id": "chatcmpl-1", "model": "m", "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    body.update(extra)
    return json.dumps(body).encode()


def test_start_then_merged_deltas_from_one_read() -> None:
    t = Translator()
    events = t.feed([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"})])
    assert events == [{"type": "start", "id": "chatcmpl-1", "model": "m"}, {"type": "delta", "content": "Hello"}]
    assert t.chunks == 3


def test_finish_usage_and_done() -> None:
    t = Translator()
    t.feed([chunk({"content": "x"})])
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    events = t.feed([chunk({}, "length"), json.dumps({"id": "c", "choices": [], "usage": usage}).encode(), b"[DONE]"])
    assert events == [{"type": "done", "finish_reason": "length", "usage": usage}]
    assert t.finished


def test_refusal_and_tool_calls_keep_their_order_and_are_not_dropped() -> None:
    t = Translator()
    calls = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{"}}]
    events = t.feed([chunk({"content": "a"}), chunk({"refusal": "I can't"}), chunk({"content": "b"}),
                     chunk({"tool_calls": calls})])
    assert [e["type"] for e in events] == ["start", "delta", "refusal", "delta", "tool_calls"]
    assert events[2]["content"] == "I can't" and events[4]["tool_calls"] == calls


def test_in_band_upstream_error_raises_without_its_text() -> None:
    t = Translator()
    with pytest.raises(UpstreamError) as info:
        t.feed([b'{"error": {"message": "Incorrect API key provided: sk-secret"}}'])
    assert "sk-secret" not in info.value.message


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b'"text"'])
def test_unreadable_payload_is_malformed(payload: bytes) -> None:
    with pytest.raises(UpstreamInterrupted) as info:
        Translator().feed([payload])
    assert info.value.code == "upstream_malformed"


def test_end_without_finish_is_interrupted() -> None:
    t = Translator()
    t.feed([chunk({"content": "half"})])
    with pytest.raises(UpstreamInterrupted):
        t.end_of_stream()


def test_end_after_finish_without_done_marker_is_done() -> None:
    t = Translator()
    t.feed([chunk({"content": "whole"}, "stop")])
    assert t.end_of_stream() == [{"type": "done", "finish_reason": "stop", "usage": None}]
