"""What the client asked for: the chat body and the wire format, validated before any byte is sent.

Known fields are checked strictly and unknown ones ignored, because frontends
commonly send extras (a message ``id``, ``stream: true``) that do no harm.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
from werkzeug.datastructures import MIMEAccept

from .._chat import ChatRequest
from .._config import Settings
from .._errors import FormatNotAcceptable, RequestError, UnsupportedContentType
from .._wire.encoders import FORMATS, MIMETYPES, Format
from . import agui
from .uimessages import chat_messages, is_ui_body


def choose_format(query_format: str | None, accept: MIMEAccept, *, ui_body: bool = False,
                  agui_body: bool = False) -> Format:
    """``?format=`` wins; else an AG-UI body (``RunAgentInput``) gets AG-UI's stream, whatever it
    accepts (``HttpAgent`` always sends ``Accept: text/event-stream``); else the best ``Accept`` match;
    else text/plain. A body in the AI SDK's shape gets the AI SDK's stream (``ui``) unless ``Accept``
    names one of our types itself."""
    if query_format is not None:
        try:
            return FORMATS[query_format]
        except KeyError:
            raise RequestError(
                "The format parameter must be one of: text, ndjson, sse, ui, agui.", code="invalid_format"
            ) from None
    if agui_body:
        return FORMATS["agui"]
    if ui_body and not any(value in MIMETYPES for value in accept.values()):
        return FORMATS["ui"]
    if not accept:
        return FORMATS["text"]
    best = accept.best_match(MIMETYPES)
    if best is None:
        raise FormatNotAcceptable()
    return MIMETYPES[best]


def check_content_type(mimetype: str) -> None:
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedContentType()


def parse_chat_request(body: bytes, settings: Settings) -> ChatRequest:
    """Validate a JSON body (already size-checked) against the settings, or raise a ``RequestError``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestError("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.")

    context: dict[str, Any] = {}
    state: Any = None
    tools: tuple[dict[str, Any], ...] = ()
    if agui.is_agui_body(data):  # AG-UI's RunAgentInput (CopilotKit, @ag-ui/client)
        context = agui.context_of(data)
        messages = _messages(agui.chat_messages(data["messages"]), settings)
        state, tools = data.get("state"), agui.client_tools(data.get("tools"), settings.api)
    elif is_ui_body(data):  # the AI SDK's useChat
        messages = _messages(chat_messages(data["messages"]), settings)
        if isinstance(data.get("id"), str):
            context["chat_id"] = data["id"]
    elif "messages" in data:
        messages = _messages(data["messages"], settings)
    elif "content" in data:
        messages = [_message({"role": "user", "content": data["content"]}, 0, settings)]
    else:
        raise RequestError(
            'The body needs "messages": [{"role": "user", "content": "..."}] or "content": "...".',
            code="missing_messages",
        )
    if settings.system_prompt is not None:
        messages.insert(0, {"role": "system", "content": settings.system_prompt})

    return ChatRequest(
        messages=messages,
        model=_model(data.get("model"), settings),
        max_tokens=_max_tokens(data.get("max_tokens"), settings),
        temperature=_temperature(data.get("temperature")),
        context=context,
        body=data,
        state=state,
        client_tools=tools,
    )


def _messages(value: Any, settings: Settings) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise RequestError('"messages" must be a list of messages.')
    if not value:
        raise RequestError('"messages" must not be empty.', code="empty_messages")
    if len(value) > settings.max_messages:
        raise RequestError(
            f'"messages" may hold at most {settings.max_messages} messages.', code="too_many_messages"
        )
    return [_message(item, index, settings) for index, item in enumerate(value)]


def _message(item: Any, index: int, settings: Settings) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(item, dict):
        raise RequestError(f'{where} must be an object with "role" and "content".')
    role, content = item.get("role"), item.get("content")
    allowed = ("user", "assistant", "tool", "system") if settings.allow_system_role else ("user", "assistant", "tool")
    if role == "tool" or (role == "assistant" and item.get("tool_calls") is not None):
        return _tool_message(item, where, settings)
    if role not in allowed:
        if role == "system":
            raise RequestError(f"{where}: the system role is not allowed here.", code="role_not_allowed")
        raise RequestError(f'{where}.role must be one of: {", ".join(allowed)}.', code="invalid_role")
    if isinstance(content, list):
        parts, text = _parts(content, where, images=role == "user", settings=settings)
        if role == "user" and not text.strip() and not any(part["type"] == "image_url" for part in parts):
            raise RequestError(f"{where}.content must not be empty.", code="empty_content")
        return {"role": str(role), "content": parts}
    if not isinstance(content, str):
        raise RequestError(f"{where}.content must be a string or a list of content parts.")
    if role == "user" and not content.strip():
        raise RequestError(f"{where}.content must not be empty.", code="empty_content")
    _check_length(content, where, settings)
    return {"role": str(role), "content": content}


MAX_PARTS = 64
_IMAGE_DATA_URL = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}")


def _parts(content: list[Any], where: str, *, images: bool, settings: Settings) -> tuple[list[dict[str, Any]], str]:
    """OpenAI content parts: text, and for user messages images (``data:`` URLs; remote ones only
    with ``allow_image_urls``). Returns the parts as they will be sent, and their text."""
    if not content or len(content) > MAX_PARTS:
        raise RequestError(f"{where}.content must hold 1 to {MAX_PARTS} parts.")
    parts: list[dict[str, Any]] = []
    texts: list[str] = []
    for number, part in enumerate(content):
        here = f"{where}.content[{number}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"{here}.text must be a string.")
            texts.append(text)
            parts.append({"type": "text", "text": text})
        elif kind == "image_url" and images:
            parts.append({"type": "image_url", "image_url": _image(part.get("image_url"), here, settings)})
        else:
            kinds = "text or image_url" if images else "text"
            raise RequestError(f"{here}.type must be {kinds}.", code="invalid_content_part")
    text = "".join(texts)
    _check_length(text, where, settings)
    return parts, text


def _image(value: Any, where: str, settings: Settings) -> dict[str, str]:
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        raise RequestError(f'{where}.image_url must be an object with a "url".', code="invalid_content_part")
    url: str = value["url"]
    if url.startswith("data:"):
        if not _IMAGE_DATA_URL.fullmatch(url):
            raise RequestError(f"{where}: an image data URL must be base64 PNG, JPEG, GIF or WebP.",
                               code="invalid_image")
    elif url.startswith(("https://", "http://")):
        if not settings.allow_image_urls:
            raise RequestError(f"{where}: images must be sent inline as data: URLs here.", code="image_url_not_allowed")
    else:
        raise RequestError(f"{where}: an image URL must be a data: or https: URL.", code="invalid_image")
    image = {"url": url}
    detail = value.get("detail")
    if detail is not None:
        if detail not in ("auto", "low", "high"):
            raise RequestError(f'{where}.image_url.detail must be "auto", "low" or "high".')
        image["detail"] = detail
    return image


def _tool_message(item: dict[str, Any], where: str, settings: Settings) -> dict[str, Any]:
    """Tool use in the history: an assistant's ``tool_calls``, or a ``tool`` message with a result.
    Their tools are checked against what the request offers once the hooks have run
    (``check_tool_history``)."""
    content = item.get("content")
    if item["role"] == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not 0 < len(call_id) <= 128:
            raise RequestError(f"{where}.tool_call_id must be a string.", code="invalid_tool_message")
        if not isinstance(content, str):
            raise RequestError(f"{where}.content must be a string: the tool's result.", code="invalid_tool_message")
        _check_length(content, where, settings)
        return {"role": "tool", "tool_call_id": call_id, "content": content}
    calls = item["tool_calls"]
    if not isinstance(calls, list) or not 0 < len(calls) <= MAX_PARTS:
        raise RequestError(f"{where}.tool_calls must be a list of 1 to {MAX_PARTS} calls.", code="invalid_tool_message")
    if content is not None and not isinstance(content, str):
        raise RequestError(f"{where}.content must be a string or null.", code="invalid_tool_message")
    checked = []
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(function, dict) and isinstance(call.get("id"), str) and call.get("type", "function") == "function"
                and isinstance(function.get("name"), str) and isinstance(function.get("arguments"), str)):
            raise RequestError(f'{where}.tool_calls[{number}] must be {{"id", "type": "function", '
                               f'"function": {{"name", "arguments"}}}} with strings.', code="invalid_tool_message")
        _check_length(function["arguments"], where, settings)
        checked.append({"id": call["id"], "type": "function",
                        "function": {"name": function["name"], "arguments": function["arguments"]}})
    return {"role": "assistant", "content": content or None, "tool_calls": checked}


def check_tool_history(chat: ChatRequest) -> None:
    """Tool use in the history must be of tools this request offers (``params["tools"]``, after the
    hooks), and every tool result must answer a call made before it."""
    offered = offered_names(chat)
    calls: set[str] = set()
    for index, message in enumerate(chat.messages):
        for call in message.get("tool_calls") or ():
            name = call["function"]["name"]
            if name not in offered:
                raise RequestError(f"messages[{index}] calls a tool that is not offered here: {name!r}.",
                                   code="unknown_tool")
            calls.add(call["id"])
        if message.get("role") == "tool" and message.get("tool_call_id") not in calls:
            raise RequestError(f"messages[{index}] answers a tool call that is not in the conversation before it.",
                               code="invalid_tool_message")


def _check_length(text: str, where: str, settings: Settings) -> None:
    if len(text) > settings.max_content_chars:
        raise RequestError(
            f"{where}.content is longer than {settings.max_content_chars} characters.",
            code="content_too_long",
        )


def _model(value: Any, settings: Settings) -> str:
    if value is None:
        return settings.model
    if not isinstance(value, str) or value not in settings.models:
        raise RequestError(
            f'"model" must be one of: {", ".join(settings.models)}.', code="model_not_allowed"
        )
    return value


def _max_tokens(value: Any, settings: Settings) -> int:
    if value is None:
        return settings.max_tokens
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RequestError('"max_tokens" must be a positive integer.')
    return min(value, settings.max_tokens)


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError('"temperature" must be a number from 0 to 2.')
    if not 0 <= value <= 2:
        raise RequestError('"temperature" must be a number from 0 to 2.')
    return float(value)


def tool_name(definition: Any) -> str | None:
    """The name of a function tool's definition, in either API's shape."""
    if not isinstance(definition, dict):
        return None
    function = definition.get("function")
    name = function.get("name") if isinstance(function, dict) else definition.get("name")
    return name if isinstance(name, str) else None


def offered_names(chat: ChatRequest) -> set[str | None]:
    """The names of the tools the request offers the model (``params["tools"]``, after the hooks)."""
    return {tool_name(d) for d in chat.params.get("tools") or ()}
