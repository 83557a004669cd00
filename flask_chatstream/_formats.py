"""The three wire formats, as pure encoders from events to bytes.

No Flask and no openai here: an encoder takes the events of one upstream read
and returns the one write that carries them.

- ``text``: ``text/plain; charset=utf-8``, the answer's text and nothing else.
  It has no way to say "error" in-band, so the relay cuts the connection; nor to
  carry a tool call, which the relay treats as an error.
- ``ndjson``: ``application/x-ndjson``, one JSON event per line.
- ``sse``: ``text/event-stream``, each event as ``event: <type>`` + ``data: <json>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from ._events import Event


@dataclass(frozen=True)
class Format:
    name: str
    mimetype: str
    encode: Callable[[list[Event]], bytes]
    ping: bytes
    in_band_errors: bool


def encode_text(events: list[Event]) -> bytes:
    """The text of deltas and refusals; other events have no place in text/plain."""
    return "".join([e["content"] for e in events if e["type"] == "delta" or e["type"] == "refusal"]).encode()


def encode_ndjson(events: list[Event]) -> bytes:
    if len(events) == 1:
        return orjson.dumps(events[0]) + b"\n"
    return b"".join([orjson.dumps(event) + b"\n" for event in events])


def encode_sse(events: list[Event]) -> bytes:
    return b"".join(
        [b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n" for event in events]
    )


TEXT = Format("text", "text/plain; charset=utf-8", encode_text, ping=b"", in_band_errors=False)
NDJSON = Format("ndjson", "application/x-ndjson", encode_ndjson, ping=b'{"type":"ping"}\n', in_band_errors=True)
SSE = Format("sse", "text/event-stream", encode_sse, ping=b": ping\n\n", in_band_errors=True)

FORMATS: dict[str, Format] = {f.name: f for f in (TEXT, NDJSON, SSE)}
"""By the name used in ``?format=``."""

MIMETYPES: dict[str, Format] = {
    "text/plain": TEXT,
    "application/x-ndjson": NDJSON,
    "text/event-stream": SSE,
}
"""By the bare media type matched against ``Accept``, in order of preference."""
