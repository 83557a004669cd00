"""From upstream ``chat.completion.chunk`` payloads to the relay's own events.

Events are plain dicts, ready for the encoders:

    {"type": "start", "id": ..., "model": ...}
    {"type": "delta", "content": "..."}
    {"type": "refusal", "content": "..."}
    {"type": "tool_calls", "tool_calls": [...]}        # the upstream's deltas, as sent
    {"type": "done", "finish_reason": "stop", "usage": {...} | None}
    {"type": "error", "error": {"code": ..., "message": ...}}
    {"type": "ping"}

Content deltas that arrive in one network read are merged into one ``delta``
event: the text is the same, and the client gets fewer, larger writes. Nothing
is dropped: refusals and tool-call deltas become events of their own, in order.
"""

from __future__ import annotations

from typing import Any

import orjson

from ._errors import ChatStreamError, UpstreamError, UpstreamInterrupted

Event = dict[str, Any]

PING: Event = {"type": "ping"}

_DONE_PAYLOAD = b"[DONE]"


def error_event(error: ChatStreamError) -> Event:
    return {"type": "error", "error": error.to_dict()}


class Translator:
    """Follows one upstream stream and says what to tell the client.

    ``feed`` raises an ``UpstreamError`` when the upstream reports an error
    in-band or sends something unreadable; the relay turns that into the
    stream's terminal error.
    """

    __slots__ = ("started", "finished", "finish_reason", "usage", "chunks", "id")

    def __init__(self) -> None:
        self.id: str | None = None
        self.started = False
        self.finished = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.chunks = 0

    def feed(self, payloads: list[bytes]) -> list[Event]:
        events: list[Event] = []
        text: list[str] = []
        for payload in payloads:
            if payload == _DONE_PAYLOAD:
                self._flush(text, events)
                events.append(self._done())
                break
            chunk = _load(payload)
            self.chunks += 1
            if not self.started:
                self.started = True
                self.id = chunk.get("id")
                events.append({"type": "start", "id": chunk.get("id"), "model": chunk.get("model")})
            choices = chunk.get("choices")
            if choices:
                choice = choices[0]
                delta = choice.get("delta")
                if delta:
                    content = delta.get("content")
                    if content:
                        text.append(content)
                    refusal = delta.get("refusal")
                    if refusal:
                        self._flush(text, events)
                        events.append({"type": "refusal", "content": refusal})
                    tool_calls = delta.get("tool_calls")
                    if tool_calls:
                        self._flush(text, events)
                        events.append({"type": "tool_calls", "tool_calls": tool_calls})
                finish_reason = choice.get("finish_reason")
                if finish_reason:
                    self.finish_reason = finish_reason
            usage = chunk.get("usage")
            if usage:
                self.usage = usage
        self._flush(text, events)
        return events

    def end_of_stream(self) -> list[Event]:
        """The upstream closed its body. Done if the answer was complete."""
        if self.finished:
            return []
        if self.finish_reason is None:
            raise UpstreamInterrupted()
        # Some OpenAI-compatible servers end without "[DONE]" after finish_reason.
        return [self._done()]

    def _done(self) -> Event:
        self.finished = True
        return {"type": "done", "finish_reason": self.finish_reason, "usage": self.usage}

    @staticmethod
    def _flush(text: list[str], events: list[Event]) -> None:
        if text:
            events.append({"type": "delta", "content": text[0] if len(text) == 1 else "".join(text)})
            text.clear()


def _load(payload: bytes) -> dict[str, Any]:
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        chunk = None
    if not isinstance(chunk, dict):
        raise UpstreamInterrupted(
            "The model provider sent data that could not be read.", code="upstream_malformed"
        )
    if "error" in chunk:
        # The upstream's own message is not relayed: it can quote credentials.
        raise UpstreamError("The model provider reported an error during the answer.")
    return chunk
