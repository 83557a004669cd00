"""The Vercel AI SDK's request bodies (``useChat``): UIMessages into chat messages.

``{id, messages: [{id, role, parts: [...]}], trigger, messageId, ...}``. ``text`` parts become
content; ``file`` parts with an image media type become ``image_url`` content parts; tool parts
that carry a result (``output-available``, ``output-error``, ``output-denied``) become the
assistant's ``tool_calls`` and the ``tool`` messages answering them, a step at a time
(``step-start``); one a person has just approved or denied (``approval-responded``) becomes a call
with no result yet, which the server runs or refuses (``_approvals``); ``step-start``,
``reasoning``, ``source-*`` and ``data-*`` parts are dropped. What comes out is then validated like
any other body (``chat``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .._chat import DENIED
from .._errors import RequestError

_DROPPED = ("reasoning", "source-url", "source-document")


def is_ui_body(data: Mapping[str, Any]) -> bool:
    """Is this the AI SDK's shape: messages that have ``parts``?"""
    messages = data.get("messages")
    return (isinstance(messages, list) and bool(messages)
            and all(isinstance(m, dict) and "parts" in m and "content" not in m for m in messages))


def continued_message(data: Mapping[str, Any]) -> str | None:
    """The id of the assistant message a useChat request ends with, which the answer goes on with
    (after a tool approval, or a client-side tool's result): else the client would add a second one."""
    if not is_ui_body(data):
        return None
    last = data["messages"][-1]
    return last["id"] if last.get("role") == "assistant" and isinstance(last.get("id"), str) else None


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The UIMessages as chat messages, in order, unvalidated beyond their shape."""
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        parts = message.get("parts")
        if not isinstance(parts, list) or not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in parts):
            raise RequestError(f'{where}.parts must be a list of parts, each with a "type".')
        if message.get("role") == "assistant":
            out += _assistant(parts, where)
        else:
            out.append({"role": message.get("role"), "content": _content(parts, where)})
    return out


def _content(parts: list[dict[str, Any]], where: str) -> str | list[dict[str, Any]]:
    """A user (or system) message's text and images, as a string when it is only text."""
    content: list[dict[str, Any]] = []
    for number, part in enumerate(parts):
        kind = part["type"]
        if kind == "text":
            content.append({"type": "text", "text": part.get("text")})
        elif kind == "file":
            if not str(part.get("mediaType", "")).startswith("image/"):
                raise RequestError(f"{where}.parts[{number}]: only image files can be sent here.",
                                   code="invalid_content_part")
            content.append({"type": "image_url", "image_url": {"url": part.get("url")}})
        elif not _dropped(kind):
            raise RequestError(f"{where}.parts[{number}]: a {kind!r} part has no place in this message.",
                               code="invalid_content_part")
    texts = [part["text"] for part in content if part["type"] == "text"]
    if len(texts) == len(content) and all(isinstance(text, str) for text in texts):
        return "".join(texts)
    return content


def _assistant(parts: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """An assistant UIMessage: one chat message per step, each followed by its tools' results."""
    out: list[dict[str, Any]] = []
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def flush() -> None:
        if text or calls:
            message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
            if calls:
                message["tool_calls"] = list(calls)
            out.append(message)
            out.extend(results)
        text.clear()
        calls.clear()
        results.clear()

    for number, part in enumerate(parts):
        kind = part["type"]
        if kind == "text":
            if calls:
                flush()  # text after a step's tool calls belongs to the next step
            if not isinstance(part.get("text"), str):
                raise RequestError(f"{where}.parts[{number}].text must be a string.")
            text.append(part["text"])
        elif kind == "step-start":
            if calls:
                flush()
        elif kind == "dynamic-tool" or kind.startswith("tool-"):
            name = part.get("toolName") if kind == "dynamic-tool" else kind[5:]
            state = part.get("state")
            if state not in ("output-available", "output-error", "output-denied", "approval-responded"):
                continue  # a call without its result yet: nothing the model can use
            call_id = part.get("toolCallId")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise RequestError(f"{where}.parts[{number}]: a tool part needs its toolCallId and name.",
                                   code="invalid_tool_message")
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": name, "arguments": orjson.dumps(part.get("input", {})).decode()}})
            if state == "approval-responded":
                continue  # its result comes from the server now (``_approvals``)
            output = {"error": part.get("errorText")} if state == "output-error" else \
                {"error": DENIED} if state == "output-denied" else part.get("output")
            results.append({"role": "tool", "tool_call_id": call_id,
                            "content": output if isinstance(output, str) else orjson.dumps(output).decode()})
        elif not (_dropped(kind) or kind == "file"):
            raise RequestError(f"{where}.parts[{number}]: a {kind!r} part has no place in this message.",
                               code="invalid_content_part")
    flush()
    return out


def _dropped(kind: str) -> bool:
    return kind in _DROPPED or kind == "step-start" or kind.startswith("data-")
