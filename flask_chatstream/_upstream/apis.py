"""The two upstream APIs, one adapter each: the body a ``ChatRequest`` becomes, and the translator
of the stream that answers it. Pure: no openai, no sockets.

Clients and hooks speak chat completions' messages whatever the API (``messages``, with
``tool_calls`` and ``tool`` messages); for the Responses API they become input items here:

    system messages before the first other one → ``instructions``
    user and assistant messages                 → messages (``input_text``, ``input_image`` parts)
    an assistant's ``tool_calls``               → ``function_call`` items, by ``call_id``
    ``tool`` messages                           → ``function_call_output`` items
    ``max_tokens``                              → ``max_output_tokens``; ``store`` is false unless set

``params`` are the configured API's (a hook may set the Responses API's ``reasoning``, say). Function
tools and ``tool_choice`` are accepted in either API's shape and sent in the one the upstream takes,
so ``api="auto"`` can fall back to chat completions with the same request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._chat import ChatRequest
from .._config import Settings
from .._wire.events import Translator
from .._wire.responses import ResponsesTranslator


@dataclass(frozen=True)
class API:
    name: str
    """``"chat"`` or ``"responses"``."""
    translator: type[Translator]
    body: Callable[[ChatRequest, Settings], dict[str, Any]]
    """The upstream request's body, but for ``model`` and ``stream``."""


def chat_body(request: ChatRequest, settings: Settings) -> dict[str, Any]:
    params = dict(request.params)
    if "tools" in params:
        params["tools"] = [_chat_tool(tool) for tool in params["tools"] or ()]
    if isinstance(params.get("tool_choice"), dict) and "name" in params["tool_choice"]:
        params["tool_choice"] = {"type": "function", "function": {"name": params["tool_choice"]["name"]}}
    body: dict[str, Any] = {**params, "messages": request.messages, settings.max_tokens_param: request.max_tokens}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if settings.include_usage:
        body["stream_options"] = {**body.get("stream_options", {}), "include_usage": True}
    return body


def responses_body(request: ChatRequest, settings: Settings) -> dict[str, Any]:
    params = dict(request.params)
    if "tools" in params:
        params["tools"] = [_responses_tool(tool) for tool in params["tools"] or ()]
    choice = params.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        params["tool_choice"] = {"type": "function", "name": choice["function"].get("name")}
    instructions, items = input_items(request.messages)
    body: dict[str, Any] = {"store": False}
    if instructions:
        body["instructions"] = instructions
    body.update(params)
    body["input"] = items
    body["max_output_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    return body


def input_items(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """Chat messages as Responses input items, and the leading system messages as ``instructions``."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            if items:
                items.append({"role": role, "content": _text(content)})
            else:
                instructions.append(_text(content))
        elif role == "user":
            items.append({"role": "user", "content": _user_content(content)})
        elif role == "assistant":
            text = _text(content)
            if text:
                items.append({"role": "assistant", "content": text})
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call.get("id"), "name": function.get("name"),
                              "arguments": function.get("arguments") or ""})
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id"),
                          "output": _text(content)})
    return ("\n\n".join(instructions) if instructions else None), items


def _user_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content if isinstance(content, str) else ""
    parts = []
    for part in content:
        if part.get("type") == "text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail") or "auto"})
    return parts


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    return ""


def _chat_tool(tool: Any) -> Any:
    """A function tool in chat completions' shape (``{"type": "function", "function": {...}}``)."""
    if isinstance(tool, dict) and tool.get("type") == "function" and "function" not in tool and "name" in tool:
        return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
    return tool


def _responses_tool(tool: Any) -> Any:
    """A function tool in the Responses API's flat shape (``{"type": "function", "name": ...}``)."""
    if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        return {"type": "function", **tool["function"]}
    return tool


CHAT = API("chat", Translator, chat_body)
RESPONSES = API("responses", ResponsesTranslator, responses_body)
