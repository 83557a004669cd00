"""The four wire formats, as pure encoders from events to bytes.

No Flask and no openai here: an encoder takes the events of one upstream read
and returns the one write that carries them.

- ``text``: ``text/plain; charset=utf-8``, the answer's text and nothing else.
  It has no way to say "error" in-band, so the relay cuts the connection; nor to
  carry a tool call for the client, which the relay treats as an error.
- ``ndjson``: ``application/x-ndjson``, one JSON event per line (with ``seq`` when resumable).
- ``sse``: ``text/event-stream``, each event as ``event: <type>`` + ``data: <json>``.
- ``ui``: the Vercel AI SDK's UI message stream (v1), what ``useChat`` reads: SSE
  ``data:`` lines of parts, ending with ``data: [DONE]``. Its parts open and close
  (``text-start`` ... ``text-end``), so its encoder keeps a little state: one per
  stream (``Format.encoder``).
- ``agui``: AG-UI 1.0's events (CopilotKit, ``@ag-ui/client``), SSE ``data:`` lines too, from a
  stateful encoder of its own (``agui``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .._chat import GONE
from .agui import AGUIEncoder
from .events import Event

Encoder = Callable[[list[Event]], bytes]


@dataclass(frozen=True)
class Format:
    name: str
    mimetype: str
    encode: Encoder
    ping: bytes
    in_band_errors: bool
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers the format needs beside its Content-Type."""
    stateful: Callable[[], Encoder] | None = None
    says_stopped: bool = False
    """Can the format tell a reader that the answer was stopped (``ui``: an ``abort`` part)? Others are
    cut, so a stopped answer never looks complete."""
    carries_events: bool = True
    """Can it carry more than text (tool calls, data, the end)? text/plain cannot: a tool call for the
    client to run is an error there, and an error after the first byte is a cut."""

    def encoder(self) -> Encoder:
        """The encoder for one stream."""
        return self.stateful() if self.stateful is not None else self.encode


def encode_text(events: list[Event]) -> bytes:
    """The text of deltas and refusals; other events have no place in text/plain."""
    return "".join([e["content"] for e in events if e["type"] == "delta" or e["type"] == "refusal"]).encode()


def encode_ndjson(events: list[Event]) -> bytes:
    if len(events) == 1:
        return orjson.dumps(events[0]) + b"\n"
    return b"".join([orjson.dumps(event) + b"\n" for event in events])


def encode_sse(events: list[Event]) -> bytes:
    """Each event as ``event:`` and ``data:``, with ``id: <seq>`` first in a resumable stream (the
    browser's EventSource sends it back as ``Last-Event-ID``)."""
    return b"".join([
        (b"id: %d\n" % event["seq"] if "seq" in event else b"")
        + b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
        for event in events
    ])


FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content-filter",
                  "tool_calls": "tool-calls", "function_call": "tool-calls"}
"""OpenAI's finish reasons as the AI SDK names them; any other is "other"."""


class UIEncoder:
    """Our events as the AI SDK's UI message stream parts, with only the keys its schemas know.

    One message per stream, opened by ``start`` (its ``messageId`` the message the answer goes on
    with, or the stream's id). Each model call is a step, framed by ``start-step`` and
    ``finish-step`` as the AI SDK's own server frames them. Inside: each run of text or reasoning
    inside its ``-start``/``-end``; each tool call as ``tool-input-start``/``-delta``/``-available``
    (then ``tool-approval-request`` for a tool that needs approval), and a server-side tool's result
    as ``tool-output-available``, ``tool-output-error`` or ``tool-output-denied``, after which the
    next model call is a new step; each cited URL as ``source-url``; the host's data as
    ``data-<name>``, ``set_state``'s as ``data-state``. Results of calls approved in the request
    come first, before any step. Then
    ``finish`` (usage and the host's message metadata in ``messageMetadata``, which ``start``
    carries too) and ``[DONE]``. An error is an ``error`` part, then ``[DONE]``; a stopped answer an
    ``abort`` part, then ``[DONE]``.
    """

    def __init__(self) -> None:
        self._open: tuple[str, str] | None = None  # ("text" | "reasoning", id)
        self._count = 0
        self._in_step = False
        self._steps = 0
        self._tools_ran = False
        self._sources = 0

    def __call__(self, events: list[Event]) -> bytes:
        parts: list[dict[str, Any]] = []
        end = False
        for event in events:
            if event["type"] == "start":
                message_id = event.get("message_id") or event.get("stream_id") or event["id"]
                start: dict[str, Any] = {"type": "start", "messageId": message_id} if message_id else {"type": "start"}
                if "metadata" in event:
                    start["messageMetadata"] = event["metadata"]
                parts.append(start)
            elif event["type"] == "delta" or event["type"] == "reasoning":
                self._step(parts)
                part = "text" if event["type"] == "delta" else "reasoning"
                if self._open is None or self._open[0] != part:
                    self._close(parts)
                    self._count += 1
                    self._open = (part, f"{part}-{self._count}")
                    parts.append({"type": f"{part}-start", "id": self._open[1]})
                parts.append({"type": f"{part}-delta", "id": self._open[1], "delta": event["content"]})
            elif event["type"] == "refusal":
                self._step(parts)
                self._close(parts)
                parts.append({"type": "data-refusal", "data": event["content"]})
            elif event["type"] == "tool_call":
                self._step(parts)
                self._close(parts)
                call_id, name = event["id"], event["name"]
                arguments = event["arguments"]
                parts += [
                    {"type": "tool-input-start", "toolCallId": call_id, "toolName": name},
                    {"type": "tool-input-delta", "toolCallId": call_id,
                     "inputTextDelta": arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()},
                    {"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": arguments},
                ]
            elif event["type"] == "tool_approval":
                parts.append({"type": "tool-approval-request", "approvalId": event["approval_id"],
                              "toolCallId": event["id"]})
            elif event["type"] == "tool_result":
                self._close(parts)
                if event.get("denied"):
                    parts.append({"type": "tool-output-denied", "toolCallId": event["id"]})
                elif "error" in event:
                    parts.append({"type": "tool-output-error", "toolCallId": event["id"], "errorText": event["error"]})
                else:
                    parts.append({"type": "tool-output-available", "toolCallId": event["id"], "output": event["output"]})
                self._tools_ran = True
            elif event["type"] == "source":
                self._step(parts)
                parts.append(self._source(event["url"], event["title"]))
            elif event["type"] == "data":
                data: dict[str, Any] = {"type": f"data-{event['name']}", "data": event["data"]}
                if "id" in event:
                    data["id"] = event["id"]
                if event.get("transient"):
                    data["transient"] = True
                parts.append(data)
            elif event["type"] == "state":
                parts.append({"type": "data-state", "data": {k: v for k, v in event.items() if k != "type" and k != "seq"}})
            elif event["type"] == "done":
                if not self._steps:
                    self._step(parts)  # an empty answer is still one step
                self._end_step(parts)
                finish: dict[str, Any] = {"type": "finish",
                                          "finishReason": FINISH_REASONS.get(event["finish_reason"] or "", "other")}
                metadata = {**({"usage": event["usage"]} if event["usage"] else {}), **event.get("metadata", {})}
                if metadata:
                    finish["messageMetadata"] = metadata
                parts.append(finish)
                end = True
            elif event["type"] == "error" and event["error"]["code"] in GONE:
                parts.append({"type": "abort"})  # useChat shows it as stopped, not failed
                end = True
            elif event["type"] == "error":
                parts.append({"type": "error", "errorText": event["error"]["message"]})
                end = True
        out = b"".join([b"data: " + orjson.dumps(part) + b"\n\n" for part in parts])
        return out + b"data: [DONE]\n\n" if end else out

    def _source(self, url: str, title: str | None) -> dict[str, Any]:
        self._sources += 1
        source: dict[str, Any] = {"type": "source-url", "sourceId": f"source-{self._sources}", "url": url}
        if title:
            source["title"] = title
        return source

    def _close(self, parts: list[dict[str, Any]]) -> None:
        if self._open is not None:
            parts.append({"type": f"{self._open[0]}-end", "id": self._open[1]})
            self._open = None

    def _step(self, parts: list[dict[str, Any]]) -> None:
        """What the model says opens its step, if none is open; after tool results, the next."""
        if self._tools_ran:
            self._tools_ran = False
            self._end_step(parts)
        if not self._in_step:
            self._in_step = True
            self._steps += 1
            parts.append({"type": "start-step"})

    def _end_step(self, parts: list[dict[str, Any]]) -> None:
        self._close(parts)
        if self._in_step:
            self._in_step = False
            parts.append({"type": "finish-step"})


TEXT = Format("text", "text/plain; charset=utf-8", encode_text, ping=b"", in_band_errors=False,
              carries_events=False)
NDJSON = Format("ndjson", "application/x-ndjson", encode_ndjson, ping=b'{"type":"ping"}\n', in_band_errors=True)
SSE = Format("sse", "text/event-stream", encode_sse, ping=b": ping\n\n", in_band_errors=True)
UI = Format("ui", "text/event-stream", lambda events: UIEncoder()(events), ping=b": ping\n\n", in_band_errors=True,
            headers={"x-vercel-ai-ui-message-stream": "v1"}, stateful=UIEncoder, says_stopped=True)

AGUI = Format("agui", "text/event-stream", lambda events: AGUIEncoder()(events), ping=b": ping\n\n",
              in_band_errors=True, stateful=AGUIEncoder, says_stopped=True)

FORMATS: dict[str, Format] = {f.name: f for f in (TEXT, NDJSON, SSE, UI, AGUI)}
"""By the name used in ``?format=``."""

MIMETYPES: dict[str, Format] = {
    "text/plain": TEXT,
    "application/x-ndjson": NDJSON,
    "text/event-stream": SSE,
}
"""By the bare media type matched against ``Accept``, in order of preference."""
