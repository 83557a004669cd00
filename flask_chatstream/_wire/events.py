"""The relay's own events, and the translation of ``chat.completion.chunk`` payloads into them
(``_wire.responses`` translates the Responses API's events into the same).

Events are plain dicts, ready for the encoders, and typed: one ``TypedDict`` per event type, so mypy
checks every place that makes or reads one, from this translation to each encoder. The README's
event table is tested against them (tests/test_events.py).

    StartEvent       {"type": "start", "id": ..., "model": ..., "stream_id": ...}
    DeltaEvent       {"type": "delta", "content": "..."}
    RefusalEvent     {"type": "refusal", "content": "..."}
    ReasoningEvent   {"type": "reasoning", "content": "..."}       # a reasoning model's thinking, where streamed
    ToolCallEvent    {"type": "tool_call", "id": ..., "name": ..., "arguments": {...}}   # by the relay, once whole
    ToolResultEvent  {"type": "tool_result", "id": ..., "name": ..., "output": ...}      # a server-side tool's
    ToolApprovalEvent {"type": "tool_approval", "id": ..., "name": ..., "arguments": {...}, "approval_id": ...}
    DataEvent        {"type": "data", "name": ..., "data": ..., "id": ...}   # the host's own (``emit``)
    StateEvent       {"type": "state", "snapshot": ...} or {"type": "state", "delta": [...]}  # ``set_state``
    SourceEvent      {"type": "source", "url": ..., "title": ...}  # a URL the answer cites
    DoneEvent        {"type": "done", "finish_reason": "stop", "usage": {...} | None}
    ErrorEvent       {"type": "error", "error": {"code": ..., "message": ...}}
    PingEvent        {"type": "ping"}

A resumable stream numbers its events (``seq``) as it records them.

Content deltas that arrive in one network read are merged into one ``delta``
event: the text is the same, and the client gets fewer, larger writes. Nothing
is dropped: refusals become events of their own, in order, and tool-call fragments are
assembled (``tool_calls()``) for the relay, which sends each call once it is whole.

Only choice 0 is relayed. A request never asks for more (``n`` is not sent), and an
upstream that sends other choices anyway has them ignored rather than mixed in.

One job, and over 400 lines because the protocol is wide: our events' types, and what chat completions' chunks become.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypedDict, Union, get_args

import orjson

from .._errors import ChatStreamError, ErrorBody, UpstreamError, UpstreamInterrupted, UpstreamMalformed

if TYPE_CHECKING:
    from typing_extensions import NotRequired


class Usage(TypedDict, total=False):
    """The token counts clients get (those the upstream sent as whole numbers)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _Event(TypedDict):
    seq: NotRequired[int]
    """Its number in a resumable stream."""


class StartEvent(_Event):
    type: Literal["start"]
    id: str | None
    """The provider's completion id."""
    model: str | None
    stream_id: NotRequired[str]
    """Ours: for stopping and resuming the stream."""
    metadata: NotRequired[dict[str, Any]]
    """The host's message metadata (``message_metadata``), as the answer starts."""
    message_id: NotRequired[str]
    """The assistant message this answer goes on with (the AI SDK's, after a tool approval or a
    client-side tool): the ``ui`` format's ``messageId`` then, so the client adds to that message."""
    thread_id: NotRequired[str]
    """An AG-UI run's thread (``RunAgentInput.threadId``), for the ``agui`` format's run events."""
    run_id: NotRequired[str]
    """An AG-UI run's id (``RunAgentInput.runId``)."""


class DeltaEvent(_Event):
    type: Literal["delta"]
    content: str


class RefusalEvent(_Event):
    type: Literal["refusal"]
    content: str


class ReasoningEvent(_Event):
    type: Literal["reasoning"]
    content: str


class ToolCallEvent(_Event):
    type: Literal["tool_call"]
    id: str
    name: str
    arguments: Any
    """Parsed from the model's JSON; its text when that does not parse."""


class ToolResultEvent(_Event):
    type: Literal["tool_result"]
    id: str
    name: str
    output: NotRequired[Any]
    error: NotRequired[str]
    """Instead of ``output``, when the tool failed."""
    denied: NotRequired[bool]
    """A person denied the call (``error`` says so)."""


class ToolApprovalEvent(_Event):
    """A call of a tool that needs approval: it runs once the next request approves ``approval_id``."""

    type: Literal["tool_approval"]
    id: str
    name: str
    arguments: Any
    approval_id: str


class DataEvent(_Event):
    """The host's own data, sent with ``emit`` (a tool's progress, a hook's documents)."""

    type: Literal["data"]
    name: str
    data: Any
    id: NotRequired[str]
    """A later event with the same name and id replaces this one."""
    transient: NotRequired[bool]
    """For the moment only: not part of the message (``ui``), not kept for a resume."""


class StateEvent(_Event):
    """The agent's state for the client (AG-UI's shared state), sent with ``set_state`` or ``patch_state``:
    the whole of it (``snapshot``), or a JSON Patch (RFC 6902) to what the client holds (``delta``)."""

    type: Literal["state"]
    snapshot: NotRequired[Any]
    delta: NotRequired[list[dict[str, Any]]]


class SourceEvent(_Event):
    type: Literal["source"]
    url: str
    title: str | None


class DoneEvent(_Event):
    type: Literal["done"]
    finish_reason: str | None
    usage: Usage | None
    metadata: NotRequired[dict[str, Any]]
    """The host's message metadata (``message_metadata``), as the answer is done."""


class ErrorEvent(_Event):
    type: Literal["error"]
    error: ErrorBody


class PingEvent(_Event):
    type: Literal["ping"]


Event = Union[StartEvent, DeltaEvent, RefusalEvent, ReasoningEvent, ToolCallEvent, ToolResultEvent, ToolApprovalEvent,
              SourceEvent, DataEvent, StateEvent, DoneEvent, ErrorEvent, PingEvent]
EVENT_TYPES: tuple[type, ...] = get_args(Event)

PING: PingEvent = {"type": "ping"}

USAGE_FIELDS: tuple[Literal["prompt_tokens", "completion_tokens", "total_tokens"], ...] = (
    "prompt_tokens", "completion_tokens", "total_tokens")
"""The token counts that go to clients; the upstream's whole usage object stays on the server."""

_DONE_PAYLOAD = b"[DONE]"


def error_event(error: ChatStreamError) -> ErrorEvent:
    return {"type": "error", "error": error.to_dict()}


class Malformed(Exception):
    """A payload that is not what the upstream's API sends."""


class Translator:
    """Follows one upstream stream and says what to tell the client.

    ``feed`` never raises: when the upstream reports an error in-band or sends something
    unreadable, it returns the events that came before, sets ``error``, and translates nothing
    more. The answer is complete (``finished``) at ``[DONE]``, or as soon as ``finish_reason`` and,
    when it was asked for, the usage chunk have both arrived: nothing the client needs comes after.
    """

    api = "chat"
    """The upstream API whose stream this translates."""
    marker_ends = True
    """Is ``[DONE]`` this API's own end of an answer? (The Responses API's is its terminal event.)"""
    __slots__ = ("started", "finished", "finish_reason", "usage", "chunks", "id", "model", "error", "expect_usage", "marker",
                 "stream_id", "_text", "_refusal", "_calls", "_reasoning")

    def __init__(self, *, expect_usage: bool = False, stream_id: str | None = None, started: bool = False) -> None:
        self.stream_id = stream_id
        self.id: str | None = None
        """The upstream's id for this model call (``chatcmpl-...``, ``resp_...``)."""
        self.model: str | None = None
        """The model that answered, as the upstream names it."""
        self.started = started
        """Set for the model calls after the first (tools): their stream has no ``start`` of its own."""
        self.finished = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.chunks = 0
        self.error: ChatStreamError | None = None
        self.expect_usage = expect_usage
        self.marker = False
        """Did the stream end with the ``[DONE]`` marker itself?"""
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, payloads: list[bytes]) -> list[Event]:
        events: list[Event] = []
        if self.finished or self.error is not None:
            return events
        text: list[str] = []
        for payload in payloads:
            if payload == _DONE_PAYLOAD:
                self.marker = True
                self._flush(text, events)
                if not self.started:
                    self.error = UpstreamMalformed("The model provider ended the stream without an answer.")
                    return events
                if not self.marker_ends and self.finish_reason is None:
                    self.error = UpstreamInterrupted()  # a marker, but not the answer's end: it was cut
                    return events
                events.append(self._done())
                return events
            try:
                self._chunk(payload, text, events)
            except Malformed:
                self.error = UpstreamMalformed()
            except UpstreamError as error:
                self.error = error
            if self.error is not None:
                break
            if self.finish_reason is not None and (self.usage is not None or not self.expect_usage):
                self._flush(text, events)
                events.append(self._done())
                return events
        self._flush(text, events)
        return events

    def _chunk(self, payload: bytes, text: list[str], events: list[Event]) -> None:
        chunk = load_event(payload)
        self.chunks += 1
        if not self.started:
            self._start(chunk, events)
        elif self.id is None:
            self._note(chunk)  # a later model call of the answer: no start event, but its id and model
        choices = chunk.get("choices")
        if choices:
            if not isinstance(choices, list):
                raise Malformed()
            for choice in choices:
                if not isinstance(choice, dict):
                    raise Malformed()
                if choice.get("index", 0) == 0:
                    self._choice(choice, text, events)
        usage = chunk.get("usage")
        if usage:
            if not isinstance(usage, dict):
                raise Malformed()
            self.usage = usage

    def _note(self, source: dict[str, Any]) -> None:
        upstream_id, model = source.get("id"), source.get("model")
        self.id = upstream_id if isinstance(upstream_id, str) else None
        self.model = model if isinstance(model, str) else None

    def _start(self, source: dict[str, Any], events: list[Event]) -> None:
        """The ``start`` event, with the upstream's id and model from ``source`` (the first chunk, or
        the Responses API's response)."""
        self.started = True
        self._note(source)
        start: StartEvent = {"type": "start", "id": self.id, "model": self.model}
        if self.stream_id is not None:
            start["stream_id"] = self.stream_id
        events.append(start)

    def _choice(self, choice: dict[str, Any], text: list[str], events: list[Event]) -> None:
        delta = choice.get("delta")
        if delta:
            if not isinstance(delta, dict):
                raise Malformed()
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                # vLLM, DeepSeek, Ollama, LM Studio: "reasoning_content"; OpenRouter: "reasoning".
                if not isinstance(reasoning, str):
                    raise Malformed()
                self._add_reasoning(reasoning, text, events)
            content = delta.get("content")
            if content:
                if not isinstance(content, str):
                    raise Malformed()
                text.append(content)
            refusal = delta.get("refusal")
            if refusal:
                if not isinstance(refusal, str):
                    raise Malformed()
                self._add_refusal(refusal, text, events)
            annotations = delta.get("annotations")
            if annotations:
                self._flush(text, events)
                events += _sources(annotations)
            tool_calls = delta.get("tool_calls")
            if tool_calls:
                if not isinstance(tool_calls, list):
                    raise Malformed()
                self._assemble(tool_calls)  # the relay tells the client once each call is whole
        finish_reason = choice.get("finish_reason")
        if finish_reason:
            if not isinstance(finish_reason, str):
                raise Malformed()
            self.finish_reason = finish_reason

    def _add_reasoning(self, reasoning: str, text: list[str], events: list[Event]) -> None:
        """A piece of the model's thinking, after the text before it; what one read brought, as one event."""
        self._flush(text, events)
        self._reasoning.append(reasoning)
        last = events[-1] if events else None
        if last is not None and last["type"] == "reasoning":
            last["content"] += reasoning
        else:
            events.append({"type": "reasoning", "content": reasoning})

    def _add_refusal(self, refusal: str, text: list[str], events: list[Event]) -> None:
        """A piece of a refusal, as an event of its own after the text before it."""
        self._flush(text, events)
        self._refusal.append(refusal)
        events.append({"type": "refusal", "content": refusal})

    def end_of_stream(self) -> list[Event]:
        """The upstream closed its body. Done if the answer was complete."""
        if self.finished or self.error is not None:
            return []
        if self.finish_reason is None:
            self.error = UpstreamInterrupted()
            return []
        # Some OpenAI-compatible servers end without "[DONE]" after finish_reason.
        return [self._done()]

    def _done(self) -> DoneEvent:
        self.finished = True
        return {"type": "done", "finish_reason": self.finish_reason, "usage": client_usage(self.usage)}

    def _flush(self, text: list[str], events: list[Event]) -> None:
        if text:
            content = text[0] if len(text) == 1 else "".join(text)
            self._text.append(content)
            events.append({"type": "delta", "content": content})
            text.clear()

    def _assemble(self, deltas: list[Any]) -> None:
        """Tool calls stream in fragments, keyed by index: the id and name once, the arguments in pieces."""
        for delta in deltas:
            if not isinstance(delta, dict):
                raise Malformed()
            index = delta.get("index", 0)
            call = self._calls.setdefault(index if isinstance(index, int) else 0,
                                          {"id": "", "name": "", "arguments": []})
            function = delta.get("function") or {}
            if not isinstance(function, dict):
                raise Malformed()
            if isinstance(delta.get("id"), str):
                call["id"] = delta["id"]
            if isinstance(function.get("name"), str):
                call["name"] += function["name"]
            if isinstance(function.get("arguments"), str):
                call["arguments"].append(function["arguments"])

    @property
    def text(self) -> str:
        """The answer's text so far, as relayed."""
        return "".join(self._text)

    @property
    def refusal(self) -> str | None:
        return "".join(self._refusal) if self._refusal else None

    @property
    def reasoning(self) -> str | None:
        return "".join(self._reasoning) if self._reasoning else None

    def tool_calls(self) -> list[tuple[str, str, str]]:
        """The tool calls so far, assembled: (id, name, arguments), in index order."""
        return [(call["id"], call["name"], "".join(call["arguments"]))
                for _, call in sorted(self._calls.items())]


def _sources(annotations: Any) -> list[Event]:
    """URL citations in a chat completions delta (web search models, OpenRouter's web plugin):
    ``{"type": "url_citation", "url_citation": {"url": ..., "title": ...}}``."""
    if not isinstance(annotations, list):
        raise Malformed()
    sources: list[Event] = []
    for annotation in annotations:
        citation = annotation.get("url_citation") if isinstance(annotation, dict) else None
        if isinstance(citation, dict) and annotation.get("type") == "url_citation" and isinstance(citation.get("url"), str):
            sources.append(source_event(citation["url"], citation.get("title")))
    return sources


def source_event(url: str, title: Any) -> SourceEvent:
    """A cited URL, its title where the upstream gave one as text."""
    return {"type": "source", "url": url, "title": title if isinstance(title, str) else None}


def client_usage(usage: dict[str, Any] | None) -> Usage | None:
    """The documented token counts, and nothing else a provider added (costs, internal ids)."""
    if usage is None:
        return None
    counts: Usage = {}
    for name in USAGE_FIELDS:
        if isinstance(value := usage.get(name), int) and not isinstance(value, bool):
            counts[name] = value
    return counts


def load_event(payload: bytes) -> dict[str, Any]:
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise Malformed() from None
    if not isinstance(chunk, dict):
        raise Malformed()
    if "error" in chunk:
        # The upstream's own message is not relayed: it can quote credentials.
        raise UpstreamError("The model provider reported an error during the answer.")
    return chunk
