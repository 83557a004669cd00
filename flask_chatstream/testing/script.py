"""What the stand-in does: a ``Script`` (how it answers, and how it misbehaves), and the counters it
keeps (``Stats``)."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .faults import Cut, Fail, Fault, Hold, Malformed, Stall

Reply = str | Callable[[Sequence[dict[str, Any]]], str]


@dataclass
class Script:
    """How the stand-in answers. Chunk counts below are content chunks."""

    reply: Reply = "Hello! This answer comes from the flask_chatstream stand-in model."
    chunks: int | None = None
    """Split the reply into this many pieces; by default one piece per word."""
    first_delay: float = 0.0
    """Seconds before the first content chunk (time to first token)."""
    delay: float = 0.0
    """Seconds between content chunks."""
    header_delay: float | Callable[[Sequence[dict[str, Any]]], float] = 0.0
    """Seconds before the response headers, so a caller times out before the stream starts (a
    gateway that holds the head until the first token); or a function of the messages that says."""
    status: int = 200
    """Answer with this status and an OpenAI-style error body instead of a stream."""
    retry_after: str | None = None
    cut_after: int | None = None
    """Drop the connection after this many chunks: no finish, no [DONE], no chunked terminator."""
    stall_after: int | None = None
    """After this many chunks, send nothing for ``stall`` seconds, then carry on."""
    stall: float = 3600.0
    malformed_after: int | None = None
    """After this many chunks, send a data line that is not JSON, then carry on."""
    error_after: int | None = None
    """After this many chunks, send an in-stream ``{"error": ...}`` event and end."""
    write_size: int | None = None
    """Write the body in pieces of this many bytes, splitting lines and UTF-8 characters."""
    finish_reason: str = "stop"
    hold_after: int | None = None
    """After this many chunks, wait until ``StandInServer.release()`` (a gate the test opens)."""
    hold_until_open: int | None = None
    """Before the first content chunk, wait until this many streams are open at once (a barrier).
    Streams still waiting after ``barrier_timeout`` seconds are cut, so a server that cannot hold
    them all open fails its test instead of hanging it."""
    barrier_timeout: float = 60.0
    comment_every: float | None = None
    """While waiting (first_delay, delay, stall, hold), send an SSE comment this often."""
    comment: str = ": OPENROUTER PROCESSING"
    after_done: str | None = None
    """``"hold"``: after ``[DONE]`` keep the connection open, no terminator; ``"data"``: keep sending
    chunks after ``[DONE]``. Either way until the caller hangs up."""
    content_type: str = "text/event-stream; charset=utf-8"
    body: str | None = None
    """Send exactly this as the (chunked) body of a 200 instead of a stream: an HTML page, JSON."""
    giant_line: int | None = None
    """After the first chunk, send a ``data:`` line of this many bytes that never ends."""
    choices: int = 1
    """Send each piece for this many choices (``n``), interleaved; choice k > 0 gets ``[k]`` before it."""
    usage_extra: dict[str, Any] | None = None
    """Fields a provider adds to ``usage`` (LiteLLM's ``cost``, say)."""
    tool_calls: list[dict[str, Any]] | Callable[[Sequence[dict[str, Any]]], list[dict[str, Any]] | None] | None = None
    """Call tools instead of answering: ``[{"name": ..., "arguments": {...}}, ...]`` (several are
    parallel calls in one turn); once the conversation ends with the tools' results (``tool``
    messages), it answers with ``reply`` instead, which may read them from the messages. Or a
    function of the messages that returns such a list, or ``None`` to answer."""
    tool_fragments: int = 3
    """Stream each call's arguments in this many pieces, as models do."""
    reasoning: str | None = None
    """Think out loud first: stream this, a word at a time, as ``reasoning_content`` deltas (vLLM,
    DeepSeek, Ollama, LM Studio)."""
    content_encoding: str | None = None
    """Compress the stream with ``"gzip"``, ``"deflate"`` or ``"br"`` (brotli), whatever the caller
    asked for, as some gateways do; each write is flushed, so every event arrives whole."""
    citations: list[dict[str, str]] | None = None
    """After the text, cite these (``{"url": ..., "title": ...}``) as ``url_citation`` annotations (in
    a chat completions delta, as web search models send them; in the Responses API's text part)."""
    apis: tuple[str, ...] = ("chat", "responses")
    """The APIs served; a request for another is a 404, as from a server that has only chat completions."""
    faults: Sequence[Fault] = ()
    """More faults (``faults``), played after those of the ``*_after`` fields, in the order given."""

    def all_faults(self) -> list[Fault]:
        """The faults of the ``*_after`` fields, in the order they have always been played, then ``faults``."""
        fields: list[tuple[int | None, Callable[[int], Fault]]] = [
            (self.cut_after, lambda at: Cut(at)), (self.hold_after, lambda at: Hold(at)),
            (self.stall_after, lambda at: Stall(at, self.stall)), (self.malformed_after, lambda at: Malformed(at)),
            (self.error_after, lambda at: Fail(at))]
        return [make(at) for at, make in fields if at is not None] + list(self.faults)


@dataclass
class Stats:
    connections: int = 0
    """TCP connections accepted: fewer than requests when callers reuse them."""
    requests: int = 0
    opened: int = 0
    open: int = 0
    peak_open: int = 0
    """The most streams that were open at one time."""
    finished: int = 0
    cut: int = 0
    cancelled: int = 0
    waiting: int = 0
    """Requests held before their response head (``header_delay``) right now."""
    left_waiting: int = 0
    """Callers that hung up while their response head was held."""
    spent: dict[str, int] = field(default_factory=dict)
    """Tokens of the answers it finished (its usage: prompt and completion), by the request's ``user``
    (``""`` without one): what each client of a relay was billed."""
    bodies: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100), repr=False)
    """The last request bodies, newest last (not in the repr: a failed ``wait_for`` says the counts)."""


def split_reply(reply: str, chunks: int | None) -> list[str]:
    if chunks is None:
        return re.findall(r"\s*\S+", reply) or [reply]
    size = max(1, -(-len(reply) // chunks))
    return [reply[i : i + size] for i in range(0, len(reply), size)] or [reply]
