"""From the Responses API's stream events to the relay's own events: the same events as chat
completions, so no client can tell which API answered.

    response.created                          → start (the response's id and model)
    response.output_text.delta                → delta (what one read brought, merged)
    response.refusal.delta                    → refusal
    response.reasoning_summary_text.delta,
    response.reasoning_text.delta             → reasoning
    response.output_item.added (function_call),
    response.function_call_arguments.delta,
    response.output_item.done                 → a tool call, assembled, by ``call_id``
    response.output_text.annotation.added     → source (``url_citation`` annotations)
    response.completed                        → done: finish_reason "stop", or "tool_calls" after calls
    response.incomplete                       → done: "length" (max_output_tokens), "content_filter"
    response.failed, error                    → the in-band error, with our codes
    anything else                             → nothing

Usage comes with the terminal event. Clients get the counts under chat completions' names
(``prompt_tokens``, ``completion_tokens``, ``total_tokens``); ``ChatResult.usage`` keeps the
Responses API's own object beside them (``input_tokens``, ``output_tokens``, their details).
"""

from __future__ import annotations

from typing import Any

from .._errors import UpstreamError, UpstreamRateLimited, UpstreamRejected
from .events import Event, Malformed, Translator, load_event, source_event

INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}
"""Why a response is incomplete, as a chat completions ``finish_reason``."""

_TERMINAL = {"response.completed", "response.incomplete"}


class ResponsesTranslator(Translator):
    """Follows one Responses API stream, with ``Translator``'s contract: ``feed`` never raises, the
    answer is ``finished`` at its terminal event, and ``tool_calls()`` are by ``call_id``."""

    __slots__ = ()
    api = "responses"
    marker_ends = False

    def __init__(self, *, expect_usage: bool = False, stream_id: str | None = None, started: bool = False) -> None:
        super().__init__(expect_usage=False, stream_id=stream_id, started=started)  # usage comes at the end

    def _chunk(self, payload: bytes, text: list[str], events: list[Event]) -> None:
        event = load_event(payload)
        self.chunks += 1
        kind = event.get("type")
        if not isinstance(kind, str):
            raise Malformed()
        if not self.started:
            response = event.get("response") if kind == "response.created" else None
            self._start(response if isinstance(response, dict) else {}, events)
        elif self.id is None and kind == "response.created" and isinstance(event.get("response"), dict):
            self._note(event["response"])  # a later model call of the answer: no start event, but its id and model
        if kind == "response.output_text.delta":
            text.append(_string(event.get("delta")))
        elif kind == "response.reasoning_summary_text.delta" or kind == "response.reasoning_text.delta":
            self._add_reasoning(_string(event.get("delta")), text, events)
        elif kind == "response.refusal.delta":
            self._add_refusal(_string(event.get("delta")), text, events)
        elif kind == "response.output_item.added" or kind == "response.output_item.done":
            self._item(event)
        elif kind == "response.function_call_arguments.delta":
            call = self._calls.get(_index(event))
            if call is not None:
                call["arguments"].append(_string(event.get("delta")))
        elif kind == "response.output_text.annotation.added":
            annotation = event.get("annotation")
            if isinstance(annotation, dict) and annotation.get("type") == "url_citation":
                self._flush(text, events)
                events.append(source_event(_string(annotation.get("url")), annotation.get("title")))
        elif kind in _TERMINAL:
            self._end(kind, event.get("response"))
        elif kind == "response.failed":
            response = event.get("response")
            failure = response.get("error") if isinstance(response, dict) else None
            raise _error(failure.get("code") if isinstance(failure, dict) else None)
        elif kind == "error":
            raise _error(event.get("code"))

    def _item(self, event: dict[str, Any]) -> None:
        """A function call's id and name when its item is added; the whole call when it is done."""
        item = event.get("item")
        if not isinstance(item, dict):
            raise Malformed()
        if item.get("type") != "function_call":
            return
        call = self._calls.setdefault(_index(event), {"id": "", "name": "", "arguments": []})
        if isinstance(item.get("call_id"), str):
            call["id"] = item["call_id"]
        if isinstance(item.get("name"), str):
            call["name"] = item["name"]
        arguments = item.get("arguments")
        if isinstance(arguments, str) and (arguments or event.get("type") == "response.output_item.done"):
            call["arguments"] = [arguments]

    def _end(self, kind: str, response: Any) -> None:
        response = response if isinstance(response, dict) else {}
        self.usage = responses_usage(response.get("usage"))
        if kind == "response.completed":
            self.finish_reason = "tool_calls" if self._calls else "stop"
        else:
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            self.finish_reason = INCOMPLETE.get(reason if isinstance(reason, str) else "", "length")


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """The Responses API's usage object, with the chat completions names for its counts beside them."""
    if not isinstance(usage, dict):
        return None
    mapped = dict(usage)
    counts = {"prompt_tokens": usage.get("input_tokens"), "completion_tokens": usage.get("output_tokens"),
              "total_tokens": usage.get("total_tokens")}
    for name, value in counts.items():
        if isinstance(value, int) and not isinstance(value, bool):
            mapped[name] = value
    return mapped


def _error(code: Any) -> UpstreamError:
    """The upstream's error in our words (its own message can quote credentials)."""
    if code in ("rate_limit_exceeded", "insufficient_quota"):
        return UpstreamRateLimited()
    if isinstance(code, str) and code.startswith("invalid"):
        return UpstreamRejected()
    return UpstreamError("The model provider reported an error during the answer.")


def _index(event: dict[str, Any]) -> int:
    index = event.get("output_index", 0)
    return index if isinstance(index, int) else 0


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise Malformed()
    return value
