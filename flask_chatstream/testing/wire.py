"""What the stand-in sends: chat completions' chunks and the Responses API's events, in OpenAI's exact
SSE shapes, and the body's compression. Pure: no sockets."""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from .script import Script, split_reply


def _sse_data(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _prompt_tokens(messages: list[Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))


class ChatWire:
    """Chat completions' chunks."""

    def __init__(self, body: dict[str, Any], script: Script) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.billed = 0
        """The tokens of its usage, once it finished."""
        self.model = str(body.get("model") or "stand-in")
        self.created = int(time.time())
        self.usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.messages = body.get("messages") or []
        self.script = script

    def chunk(self, delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
        return _sse_data({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": "fp_standin",
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        })

    def start(self) -> bytes:
        return self.chunk({"role": "assistant", "content": "", "refusal": None})

    def reasoning(self, piece: str) -> bytes:
        return self.chunk({"reasoning_content": piece})

    def text(self, piece: str, index: int) -> bytes:
        return self.chunk({"content": piece}, index=index)

    def cite(self, citations: list[dict[str, str]]) -> bytes:
        """URL citations as web search models stream them in a delta."""
        if not citations:
            return b""
        return self.chunk({"annotations": [
            {"type": "url_citation", "url_citation": {"url": c["url"], "title": c.get("title", ""), "start_index": 0,
                                                      "end_index": 0}} for c in citations]})

    def call_start(self, index: int, call_id: str, name: str) -> bytes:
        return self.chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                           "function": {"name": name, "arguments": ""}}]})

    def call_arguments(self, index: int, piece: str) -> bytes:
        return self.chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})

    def call_done(self) -> bytes:
        return b""

    def failed(self) -> bytes:
        return b'data: {"error":{"message":"stand-in failure","type":"server_error","code":null}}\n\n'

    def finish(self, reason: str, completion_tokens: int) -> bytes:
        """The finish_reason chunk, the usage chunk if it was asked for, and [DONE]."""
        choices = self.script.choices if reason != "tool_calls" else 1
        out = b"".join(self.chunk({}, reason, index=k) for k in range(choices))
        prompt = _prompt_tokens(self.messages)
        self.billed = prompt + completion_tokens
        if self.usage:
            usage = {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                     "total_tokens": prompt + completion_tokens, **(self.script.usage_extra or {})}
            out += _sse_data({"id": "chatcmpl-usage", "object": "chat.completion.chunk", "created": int(time.time()),
                              "model": self.model, "choices": [], "usage": usage})
        return out + b"data: [DONE]\n\n"


class ResponsesWire:
    """The Responses API's events: items added, their deltas, the items done, and the response's end."""

    def __init__(self, body: dict[str, Any], script: Script, messages: list[Any]) -> None:
        self.id = "resp_" + uuid.uuid4().hex[:24]
        self.billed = 0
        self.body = body
        self.script = script
        self.messages = messages
        self.created = int(time.time())
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.item: dict[str, Any] | None = None
        """The output item being streamed."""

    def event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\n" + _sse_data(data)

    def response(self, status: str, **fields: Any) -> dict[str, Any]:
        body = self.body
        return {"id": self.id, "object": "response", "created_at": self.created, "status": status,
                "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"), "model": str(body.get("model") or "stand-in"),
                "output": list(self.output), "parallel_tool_calls": True, "previous_response_id": None,
                "reasoning": {"effort": None, "summary": None}, "store": bool(body.get("store", True)),
                "temperature": body.get("temperature"), "text": {"format": {"type": "text"}},
                "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [], "top_p": None,
                "truncation": "disabled", "usage": None, "user": None, "metadata": {}, **fields}

    def start(self) -> bytes:
        return (self.event("response.created", response=self.response("in_progress"))
                + self.event("response.in_progress", response=self.response("in_progress")))

    def _open(self, kind: str) -> bytes:
        """Make sure an item of ``kind`` is being streamed: close another, add one."""
        if self.item is not None and self.item["type"] == kind:
            return b""
        out = self.close()
        index = len(self.output)
        if kind == "message":
            self.item = {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "status": "in_progress",
                         "role": "assistant", "content": []}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            return out + self.event("response.output_item.added", output_index=index, item=self.item) \
                + self.event("response.content_part.added", item_id=self.item["id"], output_index=index,
                             content_index=0, part=part)
        self.item = {"id": "rs_" + uuid.uuid4().hex[:24], "type": "reasoning", "summary": []}
        return out + self.event("response.output_item.added", output_index=index, item=self.item) \
            + self.event("response.reasoning_summary_part.added", item_id=self.item["id"], output_index=index,
                         summary_index=0, part={"type": "summary_text", "text": ""})

    def close(self) -> bytes:
        """The item being streamed is done."""
        item, self.item = self.item, None
        if item is None:
            return b""
        index = len(self.output)
        text = "".join(item.pop("_text", []))
        out = b""
        if item["type"] == "message":
            annotations = item.pop("_annotations", [])
            part = {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}
            out += self.event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                              text=text, logprobs=[])
            out += self.event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                              part=part)
            item = {**item, "status": "completed", "content": [part]}
        elif item["type"] == "reasoning":
            summary = {"type": "summary_text", "text": text}
            out += self.event("response.reasoning_summary_text.done", item_id=item["id"], output_index=index,
                              summary_index=0, text=text)
            out += self.event("response.reasoning_summary_part.done", item_id=item["id"], output_index=index,
                              summary_index=0, part=summary)
            item = {**item, "summary": [summary]}
        else:  # a function call
            out += self.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                              arguments=item["arguments"])
            item = {**item, "status": "completed"}
        self.output.append(item)
        return out + self.event("response.output_item.done", output_index=index, item=item)

    def reasoning(self, piece: str) -> bytes:
        out = self._open("reasoning")
        assert self.item is not None
        self.item.setdefault("_text", []).append(piece)
        return out + self.event("response.reasoning_summary_text.delta", item_id=self.item["id"],
                                output_index=len(self.output), summary_index=0, delta=piece)

    def text(self, piece: str, index: int) -> bytes:
        if index:
            return b""  # one answer: the Responses API has no n
        out = self._open("message")
        assert self.item is not None
        self.item.setdefault("_text", []).append(piece)
        return out + self.event("response.output_text.delta", item_id=self.item["id"], output_index=len(self.output),
                                content_index=0, delta=piece, logprobs=[])

    def cite(self, citations: list[dict[str, str]]) -> bytes:
        out = b""
        for number, citation in enumerate(citations):
            out += self._open("message")
            assert self.item is not None
            length = len("".join(self.item.get("_text", [])))
            annotation = {"type": "url_citation", "url": citation["url"], "title": citation.get("title", ""),
                          "start_index": 0, "end_index": length}
            self.item.setdefault("_annotations", []).append(annotation)
            out += self.event("response.output_text.annotation.added", item_id=self.item["id"],
                              output_index=len(self.output), content_index=0, annotation_index=number,
                              annotation=annotation)
        return out

    def call_start(self, index: int, call_id: str, name: str) -> bytes:
        out = self.close()
        self.item = {"id": "fc_" + uuid.uuid4().hex[:24], "type": "function_call", "status": "in_progress",
                     "call_id": call_id, "name": name, "arguments": ""}
        return out + self.event("response.output_item.added", output_index=len(self.output), item=self.item)

    def call_arguments(self, index: int, piece: str) -> bytes:
        assert self.item is not None
        self.item["arguments"] += piece
        return self.event("response.function_call_arguments.delta", item_id=self.item["id"],
                          output_index=len(self.output), delta=piece)

    def call_done(self) -> bytes:
        return self.close()

    def failed(self) -> bytes:
        error = {"code": "server_error", "message": "stand-in failure"}
        return self.close() + self.event("response.failed", response=self.response("failed", error=error))

    def finish(self, reason: str, completion_tokens: int) -> bytes:
        """The response's end: ``response.completed``, or ``response.incomplete`` for ``length`` and
        ``content_filter``, with its usage."""
        out = self.close()
        prompt = _prompt_tokens(self.messages)
        reasoning = len(split_reply(self.script.reasoning, None)) if self.script.reasoning else 0
        self.billed = prompt + completion_tokens + reasoning
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": completion_tokens + reasoning, "output_tokens_details": {"reasoning_tokens": reasoning},
                 "total_tokens": prompt + completion_tokens + reasoning, **(self.script.usage_extra or {})}
        if reason in ("length", "content_filter"):
            details = {"reason": "max_output_tokens" if reason == "length" else "content_filter"}
            return out + self.event("response.incomplete",
                                    response=self.response("incomplete", incomplete_details=details, usage=usage))
        return out + self.event("response.completed", response=self.response("completed", usage=usage))


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A Responses API request's ``instructions`` and ``input`` as chat messages, for the script."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": item.get("call_id"), "type": "function",
                 "function": {"name": item.get("name"), "arguments": item.get("arguments")}}]})
        elif item.get("type") == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")})
        elif "role" in item:
            content = item.get("content")
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            messages.append({"role": item["role"], "content": content})
    return messages


def compressor(encoding: str | None) -> Callable[[bytes | None], bytes]:
    """What to send for each piece of the body (None: the end), compressed with ``encoding``."""
    if encoding is None:
        return lambda data: data or b""
    if encoding == "br":
        import brotli  # type: ignore[import-untyped]

        brotli_compressor = brotli.Compressor()
        return lambda data: brotli_compressor.finish() if data is None else \
            brotli_compressor.process(data) + brotli_compressor.flush()
    if encoding not in ("gzip", "deflate"):
        raise ValueError(f"content_encoding {encoding!r}: gzip, deflate or br")
    zlib_compressor = zlib.compressobj(wbits=31 if encoding == "gzip" else 15)
    return lambda data: zlib_compressor.flush() if data is None else \
        zlib_compressor.compress(data) + zlib_compressor.flush(zlib.Z_SYNC_FLUSH)
