from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given

from flask_chatstream._wire.events import Translator

from .servers import ROOT
from .streams import EVENT_SHAPES
from .upstream_bodies import sse_bodies


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, index: int = 0, **extra: Any) -> bytes:
    body: dict[str, Any] = {"id": "chatcmpl-1", "model": "m", "object": "chat.completion.chunk",
                            "choices": [{"index": index, "delta": delta or {}, "finish_reason": finish}]}
    body.update(extra)
    return json.dumps(body).encode()


USAGE = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_start_then_merged_deltas_from_one_read() -> None:
    t = Translator()
    events = t.feed([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"})])
    assert events == [{"type": "start", "id": "chatcmpl-1", "model": "m"}, {"type": "delta", "content": "Hello"}]
    assert t.chunks == 3


def test_finish_usage_and_done() -> None:
    t = Translator(expect_usage=True)
    t.feed([chunk({"content": "x"})])
    assert t.feed([chunk({}, "length")]) == [] and not t.finished  # the usage chunk is still to come
    events = t.feed([json.dumps({"id": "c", "choices": [], "usage": USAGE}).encode(), b"[DONE]"])
    assert events == [{"type": "done", "finish_reason": "length", "usage": USAGE}]
    assert t.finished


def test_the_answer_is_complete_without_waiting_for_done_marker() -> None:
    t = Translator(expect_usage=False)
    assert t.feed([chunk({"content": "all"}, "stop"), b"ignored"]) == [
        {"type": "start", "id": "chatcmpl-1", "model": "m"}, {"type": "delta", "content": "all"},
        {"type": "done", "finish_reason": "stop", "usage": None}]
    assert t.finished and t.feed([chunk({"content": "more"})]) == []


def test_usage_reaches_clients_as_token_counts_only() -> None:
    t = Translator(expect_usage=True)
    full = {**USAGE, "cost": 0.0021, "prompt_tokens_details": {"cached_tokens": 0}, "x_internal": "id-9"}
    events = t.feed([chunk({"content": "x"}, "stop"), json.dumps({"choices": [], "usage": full}).encode()])
    assert events[-1] == {"type": "done", "finish_reason": "stop", "usage": USAGE}
    assert t.usage == full  # the host app still sees everything


def test_only_choice_zero_is_relayed() -> None:
    t = Translator()
    events = t.feed([chunk({"content": "zero "}), chunk({"content": "ONE "}, index=1),
                     chunk({"content": "again"}), chunk({}, "stop", index=1)])
    assert [e["content"] for e in events if e["type"] == "delta"] == ["zero again"]
    assert t.finish_reason is None


def test_refusals_keep_their_order_and_tool_call_fragments_are_assembled() -> None:
    t = Translator()
    fragments = [[{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{"}}],
                 [{"index": 0, "function": {"arguments": '"a": 1}'}}],
                 [{"index": 1, "id": "call_2", "function": {"name": "g", "arguments": "{}"}}]]
    events = t.feed([chunk({"content": "a"}), chunk({"refusal": "I can't"}), chunk({"content": "b"}),
                     *(chunk({"tool_calls": f}) for f in fragments)])
    assert [e["type"] for e in events] == ["start", "delta", "refusal", "delta"]  # calls: when whole (the relay)
    assert events[2]["content"] == "I can't" and t.refusal == "I can't" and t.text == "ab"
    assert t.tool_calls() == [("call_1", "f", '{"a": 1}'), ("call_2", "g", "{}")]


def test_in_band_upstream_error_keeps_what_came_before_and_not_its_text() -> None:
    t = Translator()
    events = t.feed([chunk({"content": "before"}),
                     b'{"error": {"message": "Incorrect API key provided: sk-secret"}}', chunk({"content": "after"})])
    assert events == [{"type": "start", "id": "chatcmpl-1", "model": "m"}, {"type": "delta", "content": "before"}]
    assert t.error is not None and t.error.code == "upstream_error" and "sk-secret" not in t.error.message
    assert t.feed([chunk({"content": "later"})]) == []


@pytest.mark.parametrize("payload", [
    b"{not json", b"[1, 2]", b'"text"',
    # valid JSON of the wrong shape
    b'{"choices": "x"}', b'{"choices": [1]}', b'{"choices": [{"delta": ["a"]}]}',
    b'{"choices": [{"delta": {"content": 5}}]}', b'{"choices": [{"delta": {"content": {"a": 1}}}]}',
    b'{"choices": [{"delta": {"refusal": 1}}]}', b'{"choices": [{"delta": {"tool_calls": "f"}}]}',
    b'{"choices": [{"delta": {}, "finish_reason": 3}]}', b'{"choices": [], "usage": [1]}',
])
def test_unreadable_payload_is_malformed(payload: bytes) -> None:
    t = Translator()
    events = t.feed([chunk({"content": "ok"}), payload])
    assert events[-1] == {"type": "delta", "content": "ok"}
    assert t.error is not None and t.error.code == "upstream_malformed"


def test_end_without_finish_is_interrupted() -> None:
    t = Translator()
    t.feed([chunk({"content": "half"})])
    assert t.end_of_stream() == []
    assert t.error is not None and t.error.code == "upstream_interrupted"


def test_end_after_finish_without_done_marker_is_done() -> None:
    t = Translator(expect_usage=True)
    t.feed([chunk({"content": "whole"}, "stop")])
    assert t.end_of_stream() == [{"type": "done", "finish_reason": "stop", "usage": None}]


@given(sse_bodies())
def test_any_payloads_end_in_events_or_one_error_never_an_exception(payloads: list[bytes]) -> None:
    t = Translator(expect_usage=True)
    events = t.feed(payloads) + t.end_of_stream()
    assert t.finished != (t.error is not None)  # exactly one way to end
    done = [e for e in events if e["type"] == "done"]
    assert done == ([events[-1]] if t.finished else [])
    for event in events:
        json.dumps(event)


def test_done_marker_before_any_chunk_is_malformed() -> None:
    t = Translator()
    assert t.feed([b"[DONE]"]) == []
    assert t.error is not None and t.error.code == "upstream_malformed" and not t.finished


def test_the_manuals_event_table_matches_the_event_types() -> None:
    """Each row's example holds the keys its type has (an optional one may be named in the row's words
    instead), and every event type a client can get has a row."""
    rows = re.findall(r'^\| `(\{"type":"(\w+)".*?\})` \| (.*) \|$', (ROOT / "docs" / "reference" / "http.md").read_text(),
                      re.MULTILINE)
    documented = {}
    for example, kind, words in rows:
        shown = json.loads(re.sub(r'\{…\}', "{}", example).replace(":…", ":null").replace("…", ""))
        documented[kind] = (set(shown), words)
    assert set(documented) == set(EVENT_SHAPES) - {"ping"}  # pings are documented with the heartbeat
    for kind, (keys, words) in documented.items():
        required, allowed = EVENT_SHAPES[kind]
        assert required - {"seq"} <= keys <= allowed, (kind, keys, allowed)
        for key in allowed - keys - {"seq"}:
            assert f'`"{key}"' in words, (kind, key)
