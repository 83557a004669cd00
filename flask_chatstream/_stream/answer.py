"""One answer, over however many model calls it takes: from upstream bytes to the client's events.

Pure: no Flask, no openai, no sockets. The relay feeds it what each network read brought; it parses
the SSE (``sse``), translates the chunks (``events``), and at the end of each model call decides
what comes next:

- the answer is complete: ``done``, with the token counts summed over every call;
- the model called server-side tools: a ``tool_call`` event for each call, then ``turn`` holds the
  calls for the relay to run; ``results`` turns their results into ``tool_result`` events, and
  ``next_request`` into the request for the next model call, whose stream the relay feeds in after
  ``next_call``;
- the model called a tool the server does not run (a client-side tool): ``tool_call`` events, then
  ``done`` with ``finish_reason: "tool_calls"``; the client runs it and sends the conversation back;
- both kinds in one turn: the server's run (``turn``), their ``tool_result`` events go out, and then
  ``done`` ends the answer with the client's calls pending, as the AI SDK does: the client runs
  those and sends the conversation back, the server's results in it;
- the model called a tool that needs approval (``approval_tools``): its ``tool_call`` event, then a
  ``tool_approval`` event, and it is left for the client like a client-side call (the next request
  approves or denies it);
- the model still calls tools after ``max_tool_steps`` model calls: an ``error``
  (``max_tool_steps``), since there is no answer yet.

The relay asks ``finished`` and ``error``, and reads ``text``, ``usage`` and the rest for
``ChatResult``. ``usage`` is there however the answer ended: each model call's own, where the upstream
counted it, else counted here (``_usage.estimate``, marked ``"estimated": True``), for a call cut short
as for one whose upstream sends no usage.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .._chat import ChatRequest, ToolCall
from .._config import Settings
from .._errors import ChatStreamError, ToolStepsExhausted, UpstreamMalformed
from .._tools import ToolRun, call_event
from .._usage import estimate_usage
from .._wire.events import USAGE_FIELDS, DoneEvent, Event, ToolApprovalEvent, Translator, Usage, client_usage
from .._wire.sse import SSEParser
from .spec import NO_REQUEST, StreamSpec


class Answer:
    def __init__(self, settings: Settings, spec: StreamSpec = StreamSpec(), translator: type[Translator] = Translator
                 ) -> None:
        expect_usage, max_event_bytes = settings.include_usage, settings.max_event_bytes
        self._expect_usage = expect_usage
        self._translator = translator
        """The upstream API's: ``Translator`` (chat completions) or ``ResponsesTranslator``."""
        self._max_event_bytes = max_event_bytes
        self._server_tools = spec.tools.keys()
        self._approval_tools = spec.approval_tools
        """Server-side tools that run only once approved: ``approval_id`` names each call's request."""
        self._approval_id = spec.approval_id
        self._max_steps = settings.max_tool_steps
        self.steps = 1
        self.parser = SSEParser(max_event_bytes)
        self.translator = translator(expect_usage=expect_usage, stream_id=spec.stream_id or None)
        self.finished = False
        self.error: ChatStreamError | None = None
        self.turn: list[ToolCall] | None = None
        """Server-side calls the relay is to run now."""
        self.completion_id: str | None = None
        self._texts: list[str] = []
        self._refusals: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[ToolCall] = [run.recorded() for run in spec.prelude.runs]
        """Every call of the answer: those the request approved or denied (``earlier``), then the model's."""
        self._preface: list[Event] = spec.preface
        """What goes out right after ``start``: the host's data, the results of approved calls."""
        self._usage: dict[str, Any] | None = None
        self._request = spec.chat or NO_REQUEST
        """The request of the model call being read (for an estimate of its usage)."""
        self._counted: tuple[int, int, dict[str, Any]] | None = None
        """The last estimate of the call being read, with the step and chunk it was worked out at."""
        self._settled = False
        self._then_done: DoneEvent | None = None
        """With client-side calls pending beside the turn's server-side ones: the answer's last event."""

    # -- feeding ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> tuple[list[Event], bool]:
        """One network read's bytes: the events for the client, and whether it held a data event
        (comments and keep-alives do not count for the read timeout)."""
        payloads = self.parser.feed(data)
        events = self.translator.feed(payloads) if payloads else []
        if self.parser.too_large and self.translator.error is None:
            self.translator.error = UpstreamMalformed(
                f"The model provider sent an event larger than {self._max_event_bytes} bytes.")
        return self._settle(events), bool(payloads)

    def end_of_stream(self) -> list[Event]:
        """The upstream closed the body of the current model call."""
        events = self.translator.feed(self.parser.close())
        return self._settle(events + self.translator.end_of_stream())

    def _settle(self, events: list[Event]) -> list[Event]:
        translator = self.translator
        if self._preface and events and events[0]["type"] == "start":
            events[1:1], self._preface = self._preface, []
        if translator.error is not None:
            self.error = translator.error
        if self.completion_id is None:
            self.completion_id = translator.id
        if not translator.finished or self._settled:
            return events
        self._settled = True
        # The model call is over: its done event is the answer's only if nothing comes after it.
        last = events[-1] if events else None
        done: DoneEvent
        if last is not None and last["type"] == "done":
            done = last
            events.pop()
        else:
            done = {"type": "done", "finish_reason": translator.finish_reason, "usage": None}
        self._texts.append(translator.text)
        if translator.refusal:
            self._refusals.append(translator.refusal)
        if translator.reasoning:
            self._reasoning.append(translator.reasoning)
        self._usage = add_usage(self._usage, self.call_usage())
        calls = [ToolCall(id=i, name=n, arguments=a) for i, n, a in translator.tool_calls()]
        self._calls += calls
        for call in calls:
            events.append(call_event(call))
            if call.name in self._approval_tools:
                events.append(self._approval_event(call))
        server = [call for call in calls if call.name in self._server_tools and call.name not in self._approval_tools]
        if server and len(server) < len(calls):
            self.turn = server  # then the answer ends, the client's calls pending: no model call to count
            self._then_done = done
        elif server and self.steps < self._max_steps:
            self.turn = calls
        elif server:
            self.error = ToolStepsExhausted(
                f"The model kept calling tools after {self._max_steps} model calls for one answer.")
        else:
            self.finished = True
            done["usage"] = self.client_usage()
            events.append(done)
        return events

    # -- tools -----------------------------------------------------------------------------------

    def _approval_event(self, call: ToolCall) -> ToolApprovalEvent:
        assert self._approval_id is not None
        return {"type": "tool_approval", "id": call.id, "name": call.name,
                "arguments": call_event(call)["arguments"], "approval_id": self._approval_id(call)}

    def results(self, runs: list[ToolRun]) -> list[Event]:
        """Record a turn's results: the ``tool_result`` events for the client (and ``done``, when
        client-side calls are left for the client: the answer is ``finished`` then)."""
        recorded = {run.call.id: run.recorded() for run in runs}
        self._calls = [recorded.get(call.id, call) for call in self._calls]
        events: list[Event] = [run.event() for run in runs]
        if self._then_done is not None:
            self.turn = None
            self.finished = True
            self._then_done["usage"] = self.client_usage()
            events.append(self._then_done)
        return events

    def next_request(self, chat: ChatRequest, runs: list[ToolRun]) -> ChatRequest:
        """The request for the next model call: the last one's, then the assistant's tool calls and
        their results."""
        step_text = self._texts[-1] if self._texts else ""
        assistant = {
            "role": "assistant", "content": step_text or None,
            "tool_calls": [{"id": r.call.id, "type": "function",
                            "function": {"name": r.call.name, "arguments": r.call.arguments}} for r in runs],
        }
        return dataclasses.replace(chat, messages=[*chat.messages, assistant, *(run.message() for run in runs)])

    def next_call(self, request: ChatRequest) -> None:
        """The next model call's stream (of ``request``) starts: a parser and translator of its own, no
        second start."""
        self.turn = None
        self._settled = False
        self.steps += 1
        self._request = request
        self.parser = SSEParser(self._max_event_bytes)
        self.translator = self._translator(expect_usage=self._expect_usage, started=True)

    # -- what it came to -------------------------------------------------------------------------

    def _estimate(self) -> dict[str, Any]:
        """The usage of the model call being read, counted from its request and what it sent so far."""
        translator = self.translator
        return estimate_usage(self._request, (translator.text, translator.refusal, translator.reasoning),
                              [(name, arguments) for _, name, arguments in translator.tool_calls()])

    def client_usage(self) -> Usage | None:
        return client_usage(self._usage)

    @property
    def text(self) -> str:
        return "".join(self._texts) + ("" if self.translator.finished else self.translator.text)

    @property
    def refusal(self) -> str | None:
        parts = self._refusals + ([] if self.translator.finished or not self.translator.refusal
                                  else [self.translator.refusal])
        return "".join(parts) if parts else None

    @property
    def reasoning(self) -> str | None:
        parts = self._reasoning + ([] if self.translator.finished or not self.translator.reasoning
                                   else [self.translator.reasoning])
        return "".join(parts) if parts else None

    def call_usage(self) -> dict[str, Any]:
        """The usage of the model call being read: the upstream's, else counted here from its request and
        what it sent so far (worked out once for each point it is asked at)."""
        translator = self.translator
        if translator.usage is not None:
            return translator.usage
        counted = self._counted
        if counted is None or counted[0] != self.steps or counted[1] != translator.chunks:
            counted = self._counted = (self.steps, translator.chunks, self._estimate())
        return counted[2]

    @property
    def usage(self) -> dict[str, Any] | None:
        """Every model call's usage, summed: the upstream's where it counted it, else an estimate."""
        if self.translator.finished:
            return self._usage
        return add_usage(self._usage, self.call_usage())

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        pending = [] if self.translator.finished else \
            [ToolCall(id=i, name=n, arguments=a) for i, n, a in self.translator.tool_calls()]
        return tuple(self._calls + pending)

    @property
    def response_id(self) -> str | None:
        """The Responses API's id for the (first) response; None on chat completions."""
        return self.completion_id if self._translator.api == "responses" else None

    @property
    def finish_reason(self) -> str | None:
        return self.translator.finish_reason

    @property
    def chunks(self) -> int:
        return self.translator.chunks

    @property
    def marker(self) -> bool:
        """Did the last model call end with ``[DONE]`` itself (so nothing more is due on its body)?"""
        return self.translator.marker


def add_usage(total: dict[str, Any] | None, usage: dict[str, Any]) -> dict[str, Any]:
    """Two model calls' usage as one: the token counts summed, ``estimated`` if either was."""
    if total is None:
        return dict(usage)
    summed = dict(total)
    for name in USAGE_FIELDS:
        if isinstance(usage.get(name), int) and isinstance(summed.get(name), int):
            summed[name] += usage[name]
    if usage.get("estimated"):
        summed["estimated"] = True
    return summed
