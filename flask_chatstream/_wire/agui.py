"""AG-UI 1.0 (docs.ag-ui.com/spec/1.0), the event protocol of CopilotKit and of the agent frameworks'
browser side: our events as its events, each an SSE ``data:`` line of JSON, with only the keys its
schemas know (1.0's objects are closed: the stream id travels in ``X-Chat-Stream-Id``).

One run per stream: ``RUN_STARTED`` (the request's ``threadId`` and ``runId``), then the answer, then
``RUN_FINISHED`` or ``RUN_ERROR``. Each model call is a step (``STEP_STARTED`` ... ``STEP_FINISHED``,
named ``model-call-<n>``), as the ``ui`` format frames its steps. Inside one:

- text as ``TEXT_MESSAGE_START`` / ``_CONTENT`` / ``_END``; a refusal is text too (it is what the
  model says to the person);
- a reasoning model's thinking as ``REASONING_START``, ``REASONING_MESSAGE_START`` / ``_CONTENT`` /
  ``_END``, ``REASONING_END``;
- each tool call as ``TOOL_CALL_START`` / ``_ARGS`` / ``_END`` once the model has written it whole,
  on the step's assistant message (``parentMessageId``), so the client's next request holds the call
  where the model made it; a server-side tool's result as ``TOOL_CALL_RESULT``;
- ``emit()`` data as ``CUSTOM`` (its name and data; an ``id`` or ``transient`` in ``metadata``),
  a cited URL as ``CUSTOM`` named ``source``, ``set_state`` / ``patch_state`` as ``STATE_SNAPSHOT`` /
  ``STATE_DELTA``.

The run ends with ``RUN_FINISHED``: outcome ``success`` (with ``pendingToolCallIds`` naming the calls
of tools the browser runs itself), ``interrupt`` (one interrupt per call that waits for a person's
approval: its id is the signed approval id, ``reason: "tool_call"``), or ``cancelled`` for a stream
that was stopped; with the answer's token counts in ``usage``. A failure is ``RUN_ERROR`` with our
error code and its sentence. Message ids are made from the stream id and a count, so a replay of the
stream (a resume) gives the same ones. The host's message metadata goes on the first text message's
start and the last one's end (on ``RUN_FINISHED`` when the answer has no text).
"""

from __future__ import annotations

from typing import Any

import orjson

from .._chat import GONE
from .events import Event

APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["approved"],
    "additionalProperties": False,
}
"""What a resume answers an approval interrupt with (``payload``)."""

_USAGE = (("prompt_tokens", "inputTokens"), ("completion_tokens", "outputTokens"), ("total_tokens", "totalTokens"))


class AGUIEncoder:
    """Our events as AG-UI events, for one stream (it keeps which message, step and calls are open)."""

    def __init__(self) -> None:
        self._thread = self._run = self._prefix = ""
        self._model: str | None = None
        self._open: tuple[str, str] | None = None  # ("TEXT" | "REASONING", message id)
        self._count = 0
        self._steps = 0
        self._in_step = False
        self._tools_ran = False
        self._message: str | None = None
        """The step's assistant message: its text, and the parent of its tool calls."""
        self._spoke = False
        """Has the step's message had its text (closed since)? More text is another message."""
        self._texts = 0
        self._metadata: dict[str, Any] | None = None
        """The host's start metadata, for the first text message."""
        self._pending: list[str] = []
        """Calls of the answer nobody here answered: the browser's own tools."""
        self._interrupts: list[dict[str, Any]] = []

    def __call__(self, events: list[Event]) -> bytes:
        out: list[dict[str, Any]] = []
        for event in events:
            if event["type"] == "delta" or event["type"] == "refusal":
                if event["content"]:
                    self._content(out, "TEXT", event["content"])
            elif event["type"] == "reasoning":
                if event["content"]:
                    self._content(out, "REASONING", event["content"])
            elif event["type"] == "start":
                self._prefix = event.get("stream_id") or event["id"] or "run"
                self._thread = event.get("thread_id") or self._prefix
                self._run = event.get("run_id") or self._prefix
                self._model = event["model"]
                self._metadata = event.get("metadata")
                out.append({"type": "RUN_STARTED", "threadId": self._thread, "runId": self._run})
            elif event["type"] == "tool_call":
                self._step(out)
                self._close(out)
                call_id, arguments = event["id"], event["arguments"]
                out += [
                    {"type": "TOOL_CALL_START", "toolCallId": call_id, "toolCallName": event["name"],
                     "parentMessageId": self._assistant()},
                    {"type": "TOOL_CALL_ARGS", "toolCallId": call_id,
                     "delta": arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()},
                    {"type": "TOOL_CALL_END", "toolCallId": call_id},
                ]
                self._pending.append(call_id)
            elif event["type"] == "tool_approval":
                self._answered(event["id"])
                self._interrupts.append({
                    "id": event["approval_id"], "reason": "tool_call", "toolCallId": event["id"],
                    "message": f"The assistant asks to run {event['name']}.", "responseSchema": APPROVAL_SCHEMA})
            elif event["type"] == "tool_result":
                self._close(out)
                self._answered(event["id"])
                self._count += 1
                content = event["error"] if "error" in event else event["output"]
                out.append({"type": "TOOL_CALL_RESULT", "messageId": f"{self._prefix}-{self._count}",
                            "toolCallId": event["id"], "role": "tool",
                            "content": content if isinstance(content, str) else orjson.dumps(content).decode()})
                self._tools_ran = True
            elif event["type"] == "data":
                custom: dict[str, Any] = {"type": "CUSTOM", "name": event["name"], "value": event["data"]}
                if "id" in event or event.get("transient"):
                    custom["metadata"] = {key: event[key] for key in ("id", "transient") if key in event}
                out.append(custom)
            elif event["type"] == "state":
                if "delta" in event:
                    out.append({"type": "STATE_DELTA", "delta": event["delta"]})
                else:
                    out.append({"type": "STATE_SNAPSHOT", "snapshot": event.get("snapshot")})
            elif event["type"] == "source":
                out.append({"type": "CUSTOM", "name": "source",
                            "value": {"url": event["url"], "title": event["title"]}})
            elif event["type"] == "done":
                self._finish(out, self._outcome(), event.get("metadata"), event["usage"])
            elif event["type"] == "error" and event["error"]["code"] in GONE:
                self._finish(out, {"type": "cancelled"}, None, None)
            elif event["type"] == "error":
                out.append({"type": "RUN_ERROR", "message": event["error"]["message"], "code": event["error"]["code"]})
        return b"".join([b"data: " + orjson.dumps(e) + b"\n\n" for e in out])

    def _content(self, out: list[dict[str, Any]], part: str, delta: str) -> None:
        if self._open is None or self._open[0] != part:
            self._step(out)
            self._close(out)
            if part == "TEXT":
                if self._spoke:
                    self._message, self._spoke = None, False
                message_id = self._assistant()
                start: dict[str, Any] = {"type": "TEXT_MESSAGE_START", "messageId": message_id, "role": "assistant"}
                self._texts += 1
                if self._texts == 1 and self._metadata:
                    start["metadata"] = self._metadata
                out.append(start)
            else:
                self._count += 1
                message_id = f"{self._prefix}-{self._count}"
                out += [{"type": "REASONING_START", "messageId": message_id},
                        {"type": "REASONING_MESSAGE_START", "messageId": message_id, "role": "reasoning"}]
            self._open = (part, message_id)
        out.append({"type": f"{part}_MESSAGE_CONTENT", "messageId": self._open[1], "delta": delta})

    def _assistant(self) -> str:
        """The step's assistant message id (made at its first text or tool call)."""
        if self._message is None:
            self._count += 1
            self._message = f"{self._prefix}-{self._count}"
        return self._message

    def _close(self, out: list[dict[str, Any]], metadata: dict[str, Any] | None = None) -> bool:
        """End the open text or reasoning message (with ``metadata`` on a text's end): was it text?"""
        if self._open is None:
            return False
        part, message_id = self._open
        self._open = None
        if part == "REASONING":
            out += [{"type": "REASONING_MESSAGE_END", "messageId": message_id},
                    {"type": "REASONING_END", "messageId": message_id}]
            return False
        end: dict[str, Any] = {"type": "TEXT_MESSAGE_END", "messageId": message_id}
        if metadata:
            end["metadata"] = metadata
        out.append(end)
        self._spoke = True
        return True

    def _step(self, out: list[dict[str, Any]]) -> None:
        """What the model says opens its step, if none is open; after tool results, the next."""
        if self._tools_ran:
            self._tools_ran = False
            self._end_step(out)
        if not self._in_step:
            self._in_step = True
            self._steps += 1
            self._message, self._spoke = None, False
            out.append({"type": "STEP_STARTED", "stepName": f"model-call-{self._steps}"})

    def _end_step(self, out: list[dict[str, Any]], metadata: dict[str, Any] | None = None) -> bool:
        closed_text = self._close(out, metadata)
        if self._in_step:
            self._in_step = False
            out.append({"type": "STEP_FINISHED", "stepName": f"model-call-{self._steps}"})
        return closed_text

    def _answered(self, call_id: str) -> None:
        if call_id in self._pending:
            self._pending.remove(call_id)

    def _outcome(self) -> dict[str, Any]:
        if self._interrupts:
            return {"type": "interrupt", "interrupts": self._interrupts}
        if self._pending:
            return {"type": "success", "pendingToolCallIds": list(self._pending)}
        return {"type": "success"}

    def _finish(self, out: list[dict[str, Any]], outcome: dict[str, Any], metadata: dict[str, Any] | None,
                usage: Any) -> None:
        on_text = self._end_step(out, metadata)
        finished: dict[str, Any] = {"type": "RUN_FINISHED", "threadId": self._thread, "runId": self._run,
                                    "outcome": outcome}
        if usage:
            counts: dict[str, Any] = {ours: usage[theirs] for theirs, ours in _USAGE
                                      if isinstance(usage.get(theirs), int)}
            if counts:
                finished["usage"] = [{"model": self._model, **counts} if self._model else counts]
        if metadata and not on_text:
            finished["metadata"] = metadata
        out.append(finished)
