"""Hypothesis strategies for what an upstream may send: chat chunks, right and wrong."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
deltas = st.fixed_dictionaries({}, optional={
    "role": st.just("assistant"), "content": st.one_of(st.text(max_size=12), st.none(), json_values),
    "refusal": st.one_of(st.none(), st.text(max_size=8)),
    "tool_calls": st.one_of(st.just([{"index": 0, "id": "c", "type": "function",
                                      "function": {"name": "f", "arguments": "{}"}}]), json_values)})
choices = st.fixed_dictionaries({"index": st.sampled_from([0, 0, 0, 1]), "delta": st.one_of(deltas, json_values)},
                                optional={"finish_reason": st.one_of(st.none(), st.just("stop"), json_values)})
chunks = st.fixed_dictionaries({"id": st.just("chatcmpl-x"), "object": st.just("chat.completion.chunk"),
                                "choices": st.one_of(st.lists(choices, max_size=2), json_values)},
                               optional={"usage": st.one_of(st.just({"prompt_tokens": 1, "completion_tokens": 2,
                                                                     "total_tokens": 3}), json_values)})


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


payloads = st.one_of(
    chunks.map(_dump), chunks.map(_dump), chunks.map(_dump),
    st.just(b"[DONE]"), st.just(b'{"error": {"message": "boom"}}'), json_values.map(_dump),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"\r" not in b),
)


def sse_bodies() -> st.SearchStrategy[list[bytes]]:
    """Lists of SSE data payloads."""
    return st.lists(payloads, max_size=12)


def encode_sse(items: list[bytes], comments: bool = False) -> bytes:
    """The payloads as an SSE body, with keep-alive comments between events if asked."""
    return b"".join((b": keep-alive\n\n" if comments else b"") + b"data: " + item + b"\n\n" for item in items)
