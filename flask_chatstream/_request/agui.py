"""AG-UI's request body, ``RunAgentInput`` (what ``@ag-ui/client``'s ``HttpAgent`` and CopilotKit post):
its messages as chat messages, and its tools, state and ids.

``{threadId, runId, messages, tools, context, state, forwardedProps, resume}``. Messages: ``user``
(text, or parts: ``text``, and ``image`` from inline data or a URL), ``assistant`` (``content`` and
``toolCalls``), ``tool`` (``toolCallId``; its ``error`` is its content when it has one), ``system`` and
``developer`` (as ``system``, so refused unless ``allow_system_role``); ``reasoning`` and ``activity``
messages are the UI's own and dropped. What comes out is then validated like any other body
(``chat``). ``tools`` are the browser's own tools (frontend tools), checked here as request input;
``resume`` answers approval interrupts (``_approvals.verdicts_in``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from .._errors import RequestError

MAX_TOOLS = 32
"""At most this many browser tools in one request."""
MAX_TOOL_BYTES = 16_384
"""A browser tool's definition (its description and parameters' schema), as JSON, at most."""
MAX_ID = 256
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DROPPED = ("reasoning", "activity")


def is_agui_body(data: Mapping[str, Any]) -> bool:
    """Is this AG-UI's ``RunAgentInput``: a thread id, a run id and messages?"""
    return isinstance(data.get("threadId"), str) and isinstance(data.get("runId"), str) \
        and isinstance(data.get("messages"), list)


def run_ids(data: Mapping[str, Any]) -> tuple[str, str]:
    """The run's thread id and run id, checked."""
    ids = data["threadId"], data["runId"]
    if not all(0 < len(value) <= MAX_ID for value in ids):
        raise RequestError(f"threadId and runId must be 1 to {MAX_ID} characters.", code="invalid_run")
    return ids


def run_of(data: Mapping[str, Any]) -> tuple[str, str] | None:
    """An AG-UI run's thread id and run id, or None for another body."""
    return run_ids(data) if is_agui_body(data) else None


def chat_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """AG-UI's messages as chat messages, in order, unvalidated beyond their shape."""
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise RequestError(f'{where} must be an object with "role".')
        role = message.get("role")
        if role in _DROPPED:
            continue
        if role == "assistant":
            calls = message.get("toolCalls")
            converted: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
            if calls:
                converted["tool_calls"] = calls
            elif converted["content"] is None:
                continue  # an empty assistant message (a client that made room for an answer)
            out.append(converted)
        elif role == "tool":
            content = message.get("content")
            if isinstance(message.get("error"), str):
                content = orjson.dumps({"error": message["error"]}).decode()
            elif isinstance(content, list):
                content = _text_of(content, where)
            out.append({"role": "tool", "tool_call_id": message.get("toolCallId"), "content": content})
        elif role == "user":
            content = message.get("content")
            out.append({"role": "user", "content": _parts(content, where) if isinstance(content, list) else content})
        elif role in ("system", "developer"):
            out.append({"role": "system", "content": message.get("content")})
        else:
            raise RequestError(f"{where}.role must be one of: user, assistant, tool, system, developer, "
                               "reasoning, activity.", code="invalid_role")
    return out


def _parts(parts: list[Any], where: str) -> list[dict[str, Any]]:
    """A user message's parts as OpenAI content parts (then checked as those are)."""
    out: list[dict[str, Any]] = []
    for number, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append({"type": "text", "text": part.get("text")})
        elif kind == "image" and isinstance(part.get("source"), dict):
            source = part["source"]
            if source.get("type") == "data":
                url = f"data:{source.get('mimeType')};base64,{source.get('value')}"
            elif source.get("type") == "url":
                url = source.get("value")
            else:
                raise RequestError(f"{where}.content[{number}]: an image must come inline or from a URL.",
                                   code="invalid_content_part")
            out.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise RequestError(f"{where}.content[{number}]: only text and image parts can be sent here.",
                               code="invalid_content_part")
    return out


def _text_of(parts: list[Any], where: str) -> str:
    """A tool message's parts: their text (a result the model reads)."""
    if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
        raise RequestError(f"{where}.content: a tool's result can only be text here.", code="invalid_tool_message")
    return "".join(p["text"] for p in parts)


def client_tools(value: Any, api: str) -> tuple[dict[str, Any], ...]:
    """The browser's tools (``RunAgentInput.tools``) as the upstream's tool definitions, checked as the
    request input they are: at most ``MAX_TOOLS``, each a name, a description and an object schema,
    within ``MAX_TOOL_BYTES``."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise RequestError(f'"tools" must be a list of at most {MAX_TOOLS} tools.', code="invalid_tools")
    definitions: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, tool in enumerate(value):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not _NAME.fullmatch(tool["name"]):
            raise RequestError(f"{where}.name must be 1 to 64 letters, digits, '_' or '-'.", code="invalid_tools")
        name, description = tool["name"], tool.get("description", "")
        parameters = tool.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(description, str) or not isinstance(parameters, dict):
            raise RequestError(f"{where} needs a description (a string) and parameters (a JSON Schema object).",
                               code="invalid_tools")
        if parameters.get("type", "object") != "object":
            raise RequestError(f"{where}.parameters must be the schema of an object.", code="invalid_tools")
        if len(orjson.dumps([description, parameters])) > MAX_TOOL_BYTES:
            raise RequestError(f"{where} is larger than {MAX_TOOL_BYTES} bytes.", code="invalid_tools")
        if name in names:
            raise RequestError(f"{where}: two tools are named {name!r}.", code="invalid_tools")
        names.add(name)
        function = {"name": name, "description": description, "parameters": parameters}
        definitions.append({"type": "function", "function": function} if api == "chat"
                           else {"type": "function", **function})
    return tuple(definitions)


def offer_client_tools(definitions: tuple[dict[str, Any], ...], server: Mapping[str, Any]
                       ) -> tuple[dict[str, Any], ...]:
    """The browser's tools, to offer beside the server's: a name the server's tools have is refused (the
    model could not tell them apart, and the server would run its own)."""
    taken = next((d.get("function", d)["name"] for d in definitions if d.get("function", d)["name"] in server), None)
    if taken is not None:
        raise RequestError(f"The browser offers a tool named {taken!r}, as a tool of this server is named.",
                           code="tool_name_taken")
    return definitions


def context_of(data: Mapping[str, Any]) -> dict[str, Any]:
    """What ``ChatRequest.context`` gets from a run: its ids (the thread is the chat, for a resume of its
    stream), and the client's ``context`` entries (``[{description, value}]``) for the hooks to use."""
    thread_id, run_id = run_ids(data)
    context: dict[str, Any] = {"chat_id": thread_id, "run_id": run_id}
    entries = data.get("context")
    if entries:
        if not (isinstance(entries, list) and all(isinstance(e, dict) and isinstance(e.get("description"), str)
                                                  and isinstance(e.get("value"), str) for e in entries)):
            raise RequestError('"context" must be a list of {"description", "value"} strings.', code="invalid_context")
        context["agui_context"] = [{"description": e["description"], "value": e["value"]} for e in entries]
    return context
