"""Python functions the model can call: their JSON schema, and running a turn's calls.

A tool's schema comes from its signature and docstring, through pydantic (which the openai package
already installs): the name, the description (the docstring; an ``Args:`` section describes the
parameters), each parameter's type, default and ``Literal`` choices as an ``enum``, and which are
required. A parameter annotated ``ChatRequest`` is not in the schema: it gets the request (so a tool
knows who is asking, from ``context``).

The calls of one turn run at once, each in a thread of its own (a greenlet under gevent), each with
``tool_timeout``, and each inside a copy of the request's Flask context, as
``flask.copy_current_request_context`` gives: ``current_app``, ``g`` (its own), ``request``,
``session`` and what extensions keep there (a Flask-SQLAlchemy session, Flask-Login's
``current_user``) work as in a view. Whatever goes wrong in a call (arguments that are not JSON or do not fit the schema,
an exception, the timeout) becomes an error text for the model, which can recover; the exception is
logged. A call that times out is abandoned, not killed: keep tools that may block on I/O
cooperative (any socket under gevent is).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import re
import threading
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ContextManager

import orjson
import pydantic

from ._chat import ChatRequest, ToolCall
from ._emit import Sink, emitting_to
from ._wire.events import ToolCallEvent, ToolResultEvent

log = logging.getLogger("flask_chatstream")


class ToolError(Exception):
    """Raise it from a tool to tell the model what went wrong, in its own words ("No such city.").

    Any other exception is logged with its traceback, and the model (and the client's
    ``tool_result`` event) only learn that the tool failed: exception messages can hold what no one
    outside the server should read.
    """


_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    function: Callable[..., Any]
    arguments: type[pydantic.BaseModel]
    request_parameter: str | None
    """The parameter that gets the ``ChatRequest``, if any."""
    strict: bool
    needs_approval: bool = False
    """Run only once a person approves the call (``_approvals``)."""

    _definition: bytes = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: pydantic's schema generation costs more than the rest of a request's set-up.
        schema = _clean(self.arguments.model_json_schema())
        if self.strict:
            schema["additionalProperties"] = False
            schema["required"] = list(schema.get("properties", {}))
        function: dict[str, Any] = {"name": self.name, "description": self.description, "parameters": schema}
        if self.strict:
            function["strict"] = True
        object.__setattr__(self, "_definition", orjson.dumps({"type": "function", "function": function}))

    def definition(self, api: str = "chat") -> dict[str, Any]:
        """The OpenAI tool definition for the upstream's ``tools``, in the shape of ``api`` (chat
        completions nest it under ``function``; the Responses API does not): a fresh copy each time,
        since ``before_upstream`` hooks may change it."""
        definition: dict[str, Any] = orjson.loads(self._definition)
        return definition if api == "chat" else {"type": "function", **definition["function"]}


def make_tool(function: Callable[..., Any], *, name: str | None = None, description: str | None = None,
              strict: bool = False, needs_approval: bool = False) -> Tool:
    """A ``Tool`` from a function, or a ``TypeError`` that says what to fix."""
    name = name or function.__name__
    if not _NAME.fullmatch(name):
        raise TypeError(f"A tool's name must be 1 to 64 letters, digits, '_' or '-': {name!r}.")
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:
        raise TypeError(f"Cannot read the type hints of tool {name!r}: {exc}") from None
    doc, parameter_docs = _docstring(inspect.getdoc(function) or "")
    fields: dict[str, Any] = {}
    request_parameter = None
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"Tool {name!r} cannot take *{parameter.name}: the model needs named arguments.")
        annotation = hints.get(parameter.name, Any)
        if annotation is ChatRequest:
            request_parameter = parameter.name
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, pydantic.Field(default, description=parameter_docs.get(parameter.name)))
    text = description if description is not None else doc
    if not text:
        raise TypeError(f"Tool {name!r} needs a description: give it a docstring or description=.")
    try:
        model = pydantic.create_model(f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields)
        return Tool(name, text, function, model, request_parameter, strict, needs_approval)  # builds the schema
    except Exception as exc:
        raise TypeError(f"Tool {name!r} has a parameter pydantic cannot describe: {exc}") from None


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description, and parameter descriptions from a Google-style ``Args:`` section."""
    head, _, args = doc.partition("\nArgs:\n")
    params: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        match = re.match(r"\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
        if match:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current and line.strip() and line.startswith(" " * 6):
            params[current] += " " + line.strip()
        elif line.strip() and not line.startswith(" "):
            break  # the next section
    return head.strip(), params


def _clean(schema: Any) -> Any:
    """pydantic's JSON schema without its ``title`` keys, which only cost tokens."""
    if isinstance(schema, dict):
        return {k: _clean(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_clean(v) for v in schema]
    return schema


@dataclass(frozen=True)
class ToolRun:
    """One call of one turn: what the model asked for, and what came of it."""

    call: ToolCall
    arguments: Any
    """The arguments parsed from JSON, or the model's text itself where it was not JSON."""
    output: Any = None
    error: str | None = None
    denied: bool = False
    """A person denied the call (``error`` says so to the model)."""

    def recorded(self) -> ToolCall:
        """The call as ``ChatResult.tool_calls`` lists it, with its output or error."""
        return dataclasses.replace(self.call, output=self.output, error=self.error, denied=self.denied)

    def message(self) -> dict[str, Any]:
        """The ``tool`` message that carries the result back to the model."""
        content = {"error": self.error} if self.error is not None else self.output
        return {"role": "tool", "tool_call_id": self.call.id,
                "content": content if isinstance(content, str) else orjson.dumps(content, default=str).decode()}

    def event(self) -> ToolResultEvent:
        event: ToolResultEvent = {"type": "tool_result", "id": self.call.id, "name": self.call.name}
        if self.error is not None:
            event["error"] = self.error
            if self.denied:
                event["denied"] = True
        else:
            event["output"] = self.output
        return event


def call_event(call: ToolCall) -> ToolCallEvent:
    return {"type": "tool_call", "id": call.id, "name": call.name, "arguments": parsed_arguments(call.arguments)}


def parsed_arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text


Report = Callable[[ToolRun, str, float, float], None]
"""Told of each call that ended: its run, ``ok``/``error``/``timeout``, and its start and end (``time.time()``)."""


class Calls:
    """One turn's calls, running at once, each in a thread of its own (a greenlet under gevent), inside
    ``context()`` (a fresh one per call) and sending what it emits to ``sink``."""

    def __init__(self, tools: Mapping[str, Tool], calls: Sequence[ToolCall], chat: ChatRequest, *, timeout: float,
                 max_output_chars: int, context: Callable[[], ContextManager[object]] | None = None,
                 sink: Sink | None = None, report: Report | None = None) -> None:
        self.calls = calls
        self._report = report
        self._started = time.time()
        self._ended_at: list[float | None] = [None] * len(calls)
        self._runs: list[ToolRun | None] = [None] * len(calls)
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._left = len(calls)
        self._lock = threading.Lock()
        self._ended = threading.Event()
        if not calls:
            self._ended.set()

        def run(index: int, call: ToolCall) -> None:
            try:
                with emitting_to(sink), context() if context is not None else contextlib.nullcontext():
                    self._runs[index] = _capped(_run_one(tools[call.name], call, chat), max_output_chars)
            finally:
                self._ended_at[index] = time.time()
                with self._lock:
                    self._left -= 1
                    if not self._left:
                        self._ended.set()

        for index, call in enumerate(calls):
            threading.Thread(target=run, args=(index, call), name=f"chatstream-tool-{call.name}", daemon=True).start()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds: have all the calls ended (or has ``tool_timeout`` passed)?"""
        left = self._deadline - time.monotonic()
        return self._ended.wait(max(0.0, min(timeout, left))) or time.monotonic() >= self._deadline

    def results(self, *, stopped: bool = False) -> list[ToolRun]:
        """Each call's result, or error, in the order of the calls, each cut to ``max_output_chars``; a
        call still running has timed out (or, ``stopped``, was abandoned)."""
        results: list[ToolRun] = []
        for index, call in enumerate(self.calls):
            result = self._runs[index]
            outcome = "ok" if result is not None and result.error is None else "error"
            if result is None:
                if not stopped:
                    log.warning("tool %s (call %s) did not finish within tool_timeout (%ss)", call.name, call.id,
                                self._timeout)
                result = ToolRun(call, parsed_arguments(call.arguments),
                                 error=f"The tool did not finish within {self._timeout:g} seconds.")
                outcome = "timeout"
            if self._report is not None and not stopped:
                self._report(result, outcome, self._started, self._ended_at[index] or time.time())
            results.append(result)
        return results


def run_calls(tools: Mapping[str, Tool], calls: Sequence[ToolCall], chat: ChatRequest, timeout: float,
              max_output_chars: int, stopped: Callable[[], bool],
              context: Callable[[], ContextManager[object]] | None = None, sink: Sink | None = None,
              report: Report | None = None) -> list[ToolRun]:
    """Run one turn's calls at once, until they end, ``tool_timeout`` passes or ``stopped()``: their results."""
    running = Calls(tools, calls, chat, timeout=timeout, max_output_chars=max_output_chars, context=context, sink=sink,
                    report=report)
    while not running.wait(0.2) and not stopped():
        pass
    return running.results(stopped=stopped())


def _run_one(tool: Tool, call: ToolCall, chat: ChatRequest) -> ToolRun:
    arguments = parsed_arguments(call.arguments)
    if not isinstance(arguments, dict):
        return ToolRun(call, arguments, error="The arguments must be a JSON object.")
    try:
        valid = tool.arguments.model_validate(arguments)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
        return ToolRun(call, arguments, error=f"Invalid arguments: {problems}")
    kwargs = {name: getattr(valid, name) for name in type(valid).model_fields}
    if tool.request_parameter is not None:
        kwargs[tool.request_parameter] = chat
    try:
        output = tool.function(**kwargs)
    except ToolError as exc:
        return ToolRun(call, arguments, error=str(exc) or "The tool failed.")
    except Exception:
        log.exception("tool %s (call %s) raised", tool.name, call.id)
        return ToolRun(call, arguments, error="The tool failed.")
    return ToolRun(call, arguments, output=_jsonable(output))


def _capped(run: ToolRun, limit: int) -> ToolRun:
    """The run, with an output (as text, or as JSON text) or an error longer than ``limit`` characters
    cut to it, as text, with a marker that the model and the reader both understand."""
    if run.error is not None:
        return run if len(run.error) <= limit else dataclasses.replace(run, error=_cut(run.error, limit))
    text = run.output if isinstance(run.output, str) else orjson.dumps(run.output).decode()
    if len(text) <= limit:
        return run
    log.warning("tool %s (call %s) returned %d characters; max_tool_output_chars (%d) cut it",
                run.call.name, run.call.id, len(text), limit)
    return dataclasses.replace(run, output=_cut(text, limit))


def _cut(text: str, limit: int) -> str:
    return f"{text[:limit]}\n[cut: the tool's output was {len(text):,} characters; only the first {limit:,} are shown]"


def _jsonable(value: Any) -> Any:
    """What a tool returned, as JSON can carry it (anything else as its text)."""
    return orjson.loads(orjson.dumps(value, default=str))
