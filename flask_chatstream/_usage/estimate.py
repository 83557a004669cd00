"""Token counts as OpenAI bills them, for what the upstream did not count.

The prompt follows OpenAI's cookbook ("How to count tokens with tiktoken", which its authors checked
against the API): each message costs 3 tokens beside its values (1 more with a ``name``), the reply 3
more, and the tools their cookbook formula. An image costs what OpenAI's vision guide says for its size
and model (``images``). A structured output's JSON schema (``response_format``, or the Responses API's
``text.format``) counts as the tokens of its compact JSON, which is how close recorded bills come
(bench/results/usage.md). The completion is the tokens of what the model had sent: text, refusal,
streamed reasoning, each tool call's name and arguments. A reasoning model's hidden reasoning (billed,
never streamed) cannot be seen, so an estimate leaves it out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from .._chat import ChatRequest
from .images import image_tokens
from .tokens import count_tokens, tokenizer_name

PER_MESSAGE, PER_NAME, REPLY = 3, 1, 3
PER_CALL = 7
"""Tokens a tool call of the answer costs beside its name and arguments: the median over 58 calls that
OpenAI billed in recorded traffic (bench/usage_estimate.py, docs/howto/cost-control.md)."""
_TOOLS = {"o200k_base": (7, 3, 3, -3, 3, 12), "cl100k_base": (10, 3, 3, -3, 3, 12)}
"""The cookbook's tool counts: per function, per parameters, per property, per enum, per enum item, the end."""


def prompt_tokens(request: ChatRequest) -> int:
    """The prompt tokens of ``request``'s messages, tools and output schema."""
    return _prompt(request, count_tokens)


def prompt_bound(request: ChatRequest) -> int:
    """At least the prompt tokens of ``request``, without its tokenizer: each text's UTF-8 bytes (no token
    is shorter than a byte), an image of a size it cannot read as the largest. Cheap enough for every
    request (a budget's hold)."""
    return _prompt(request, _bytes, bound=True)


def _bytes(text: str, model: str) -> int:
    return len(text.encode())


Count = Callable[[str, str], int]


def _prompt(request: ChatRequest, count_tokens: Count, *, bound: bool = False) -> int:
    model = request.model
    total = REPLY
    for message in request.messages:
        total += PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                total += _content(value, model, count_tokens, bound)
            elif key == "tool_calls" and isinstance(value, list):
                total += sum(_call(call, model, count_tokens) for call in value if isinstance(call, Mapping))
            elif isinstance(value, str):
                total += count_tokens(value, model) + (PER_NAME if key == "name" else 0)
    tools = request.params.get("tools")
    if isinstance(tools, list) and tools:
        total += _tools(tools, model, count_tokens)
    schema = _output_schema(request.params)
    if schema is not None:
        total += count_tokens(orjson.dumps(schema).decode(), model)
    return total


def _output_schema(params: Mapping[str, Any]) -> Any:
    """A structured output's JSON schema: chat's ``response_format``, the Responses API's ``text.format``."""
    chat, text = params.get("response_format"), params.get("text")
    found = chat.get("json_schema") if isinstance(chat, Mapping) else \
        text.get("format") if isinstance(text, Mapping) else None
    return found.get("schema") if isinstance(found, Mapping) else None


def _content(content: Any, model: str, count_tokens: Count, bound: bool = False) -> int:
    if isinstance(content, str):
        return count_tokens(content, model)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, Mapping):
            continue
        if isinstance(part.get("text"), str):
            total += count_tokens(part["text"], model)
        elif part.get("type") in ("image_url", "input_image"):
            total += image_tokens(part, model, bound=bound)
    return total


def _call(call: Mapping[str, Any], model: str, count_tokens: Count) -> int:
    function = call.get("function")
    if not isinstance(function, Mapping):
        return 0
    return sum(count_tokens(function[k], model) for k in ("name", "arguments") if isinstance(function.get(k), str))


def _tools(tools: list[Any], model: str, count_tokens: Count) -> int:
    func_init, prop_init, prop_key, enum_init, enum_item, func_end = _TOOLS.get(tokenizer_name(model) or "",
                                                                                _TOOLS["o200k_base"])
    total = func_end
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping):
            continue
        total += func_init + count_tokens(f"{function.get('name', '')}:{_sentence(function.get('description'))}", model)
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        if not isinstance(properties, Mapping) or not properties:
            continue
        total += prop_init
        for name, schema in properties.items():
            schema = schema if isinstance(schema, Mapping) else {}
            total += prop_key
            if isinstance(schema.get("enum"), list):
                total += enum_init + sum(enum_item + count_tokens(str(item), model) for item in schema["enum"])
            total += count_tokens(f"{name}:{schema.get('type', '')}:{_sentence(schema.get('description'))}", model)
    return total


def _sentence(text: Any) -> str:
    text = text if isinstance(text, str) else ""
    return str(text[:-1] if text.endswith(".") else text)


def completion_tokens(model: str, texts: Iterable[str | None], calls: Iterable[tuple[str, str]] = ()) -> int:
    """The tokens of what the model sent: its texts (answer, refusal, reasoning) and tool calls."""
    return sum(count_tokens(text, model) for text in texts if text) + \
        sum(PER_CALL + count_tokens(name, model) + count_tokens(arguments, model) for name, arguments in calls)


def estimate_usage(request: ChatRequest, texts: Iterable[str | None], calls: Iterable[tuple[str, str]] = ()
                   ) -> dict[str, Any]:
    """A model call's usage, counted here: its prompt, and what it had sent."""
    prompt, completion = prompt_tokens(request), completion_tokens(request.model, texts, calls)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "estimated": True}


def reservation(request: ChatRequest) -> tuple[int, int]:
    """The most one model call of ``request`` may use: its prompt (bounded from above, ``prompt_bound``),
    and ``max_tokens`` of answer."""
    return prompt_bound(request), request.max_tokens
