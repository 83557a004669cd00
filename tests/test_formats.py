from __future__ import annotations

import json

from flask_chatstream._wire.encoders import NDJSON, SSE, TEXT

EVENTS = [
    {"type": "start", "id": "c1", "model": "m"},
    {"type": "delta", "content": "Grüße "},
    {"type": "refusal", "content": "no"},
    {"type": "done", "finish_reason": "stop", "usage": None},
]


def test_text_is_only_the_answer() -> None:
    assert TEXT.encode(EVENTS) == "Grüße no".encode()


def test_text_has_no_place_for_other_events() -> None:
    # (the relay ends a text stream that meets a tool call with tool_calls_need_events)
    assert TEXT.encode([{"type": "tool_calls", "tool_calls": []}, {"type": "ping"}]) == b""


def test_ndjson_is_one_event_per_line() -> None:
    lines = NDJSON.encode(EVENTS).decode().split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == EVENTS
    assert NDJSON.encode(EVENTS[:1]) == b'{"type":"start","id":"c1","model":"m"}\n'


def test_sse_names_each_event_and_carries_the_same_json() -> None:
    blocks = SSE.encode(EVENTS).decode().split("\n\n")
    assert blocks[-1] == ""
    for block, event in zip(blocks[:-1], EVENTS):
        name, data = block.split("\n")
        assert name == f"event: {event['type']}"
        assert json.loads(data.removeprefix("data: ")) == event


def test_pings() -> None:
    assert json.loads(NDJSON.ping) == {"type": "ping"}
    assert SSE.ping.startswith(b":") and SSE.ping.endswith(b"\n\n")
    assert TEXT.ping == b""
