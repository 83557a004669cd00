"""A stand-in for OpenAI's chat completions and Responses APIs, for tests and offline demos.

It streams ``chat.completion.chunk`` events in OpenAI's exact SSE shape, ending
with ``data: [DONE]`` (``POST /v1/chat/completions``), or the Responses API's
events, numbered (``POST /v1/responses``), and can misbehave on request: an error status, a cut
mid-stream, a stall, malformed data, an in-stream error. It counts streams:
opened, open, finished, cut, and cancelled by the caller, which is how tests
prove that a relay stopped paying for tokens when its user left.

    with StandInServer(Script(reply="Hi there", delay=0.02)) as upstream:
        client = openai.OpenAI(api_key="sk-test", base_url=upstream.url)
        ...
        upstream.wait_for(lambda s: s.open == 0)

It is built on the standard library's threaded HTTP server with one thread per
connection, so it works unchanged under gevent's monkey-patching (the example
app runs it inside a gevent worker). ``python -m flask_chatstream.testing``
runs it on its own, with a small control API under ``/_standin/`` (``stats``, ``bodies``,
``messages``: each request's conversation as chat messages, whichever API it asked).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import select
import socket
import ssl
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from flask import Flask

STAND_IN_KEY = "sk-stand-in"
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
    bodies: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100), repr=False)
    """The last request bodies, newest last (not in the repr: a failed ``wait_for`` says the counts)."""


class _ClientGone(Exception):
    pass


# The caller closed its side (POLLRDHUP, Linux): seen even with unread bytes (a TLS close_notify) pending.
_HANG_UP = getattr(select, "POLLRDHUP", 0)


def split_reply(reply: str, chunks: int | None) -> list[str]:
    if chunks is None:
        return re.findall(r"\s*\S+", reply) or [reply]
    size = max(1, -(-len(reply) // chunks))
    return [reply[i : i + size] for i in range(0, len(reply), size)] or [reply]


class StandInServer:
    """The stand-in upstream, on 127.0.0.1 in a background thread."""

    def __init__(self, script: Script | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.script = script or Script()
        self.scripts: dict[str, Script] = {}
        """Scripts chosen by the request's ``model``, before ``script``."""
        self._stats = Stats()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._gate = threading.Event()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.standin = self
        self._tls = tls
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give the openai client."""
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}/v1"

    @property
    def config(self) -> dict[str, str]:
        """``CHATSTREAM_*`` keys for a test app's config, so its blueprints register without a real
        key and talk to this server. Per-blueprint keys still win over these: ``attach`` the app too."""
        return {"CHATSTREAM_API_KEY": STAND_IN_KEY, "CHATSTREAM_BASE_URL": self.url}

    def attach(self, app: Flask) -> Flask:
        """Point every chat blueprint registered on ``app`` at this server, whatever the app's config,
        its per-blueprint keys or the environment (``OPENAI_API_KEY``) say: a test of the host app can
        never reach a real provider, or spend a real key. A blueprint built with ``client=`` gets a
        copy of that client with this base URL. Call it after the blueprints are registered."""
        from ._blueprint import EXTENSION_KEY, build_state

        states = app.extensions.get(EXTENSION_KEY)
        if not states:
            raise RuntimeError("attach() found no chatstream blueprint on this app. Did you call it before "
                               "app.register_blueprint(create_blueprint(...))?")
        for name, state in states.items():
            settings = dataclasses.replace(state.settings, base_url=self.url, api_key=STAND_IN_KEY)
            client = state.upstream.client.copy(base_url=self.url, api_key=STAND_IN_KEY) \
                if state.upstream.custom_client else None
            states[name] = build_state(settings, client, state.client_key, state.blueprint, state.shared, state.scope)
        return app

    def release(self) -> None:
        """Let streams held by ``Script.hold_after`` go on (and any that get there later)."""
        self._gate.set()

    def start(self) -> StandInServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        with self._lock:
            return dataclasses.replace(self._stats, bodies=deque(self._stats.bodies, maxlen=100))

    def reset(self) -> None:
        """Zero the counters (but for the streams open now) and close the gate again."""
        with self._lock:
            self._stats = Stats(open=self._stats.open)
        self._gate.clear()

    def wait_for(self, condition: Callable[[Stats], bool], timeout: float = 30.0) -> Stats:
        """Poll the counters until ``condition`` holds; raise ``TimeoutError`` with them if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats
            if condition(stats):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"stand-in condition not met within {timeout}s: {stats}")
            time.sleep(0.01)

    def _count(self, **changes: int) -> None:
        with self._lock:
            for name, change in changes.items():
                setattr(self._stats, name, getattr(self._stats, name) + change)
            self._stats.peak_open = max(self._stats.peak_open, self._stats.open)

    def _record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._stats.requests += 1
            self._stats.bodies.append(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    standin: StandInServer

    def finish_request(self, request: Any, client_address: Any) -> None:
        tls = self.standin._tls
        if tls is not None:  # the handshake in the connection's own thread, not the accept loop
            request.settimeout(10)
            try:
                request = tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
            request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a caller hanging up is normal
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.standin._count(connections=1)
        self._compress = _compressor(None)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/_standin/stats":
            stats = self.server.standin.stats
            self._json(200, {k: v for k, v in dataclasses.asdict(stats).items() if k != "bodies"})
        elif path == "/_standin/bodies":
            self._json(200, list(self.server.standin.stats.bodies))
        elif path == "/_standin/messages":  # the same, as chat messages whichever API was asked
            self._json(200, [body["messages"] if "messages" in body else chat_messages(body)
                             for body in self.server.standin.stats.bodies])
        elif path.endswith("/models"):
            script = self.server.standin.script
            if script.status != 200:  # a refused key or a rate limit holds for every endpoint
                return self._refuse(script)
            self._json(200, {"object": "list", "data": [{"id": "stand-in", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_PUT(self) -> None:
        if urlsplit(self.path).path != "/_standin/script":
            return self._json(404, {"error": {"message": "not found"}})
        try:
            self.server.standin.script = Script(**self._read_json())
        except TypeError as exc:
            return self._json(400, {"error": {"message": str(exc)}})
        self._json(200, {"ok": True})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        standin = self.server.standin
        if path == "/_standin/reset":
            standin.reset()
            return self._json(200, {"ok": True})
        if path == "/_standin/release":
            standin.release()
            return self._json(200, {"ok": True})
        api = "chat" if path.endswith("/chat/completions") else "responses" if path.endswith("/responses") else None
        if api is None:
            return self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        try:
            body = self._read_json()
        except ValueError:
            return self._json(400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
        standin._record(body)
        script = standin.scripts.get(str(body.get("model")), standin.script)
        if api not in script.apis:
            return self._json(404, {"error": {"message": f"Invalid URL (POST {path})", "type": "invalid_request_error"}})
        self._script = script
        messages = body.get("messages") or [] if api == "chat" else chat_messages(body)
        delay = script.header_delay(messages) if callable(script.header_delay) else script.header_delay
        if delay:
            standin._count(waiting=1)
            try:
                self._wait(delay)
            except _ClientGone:
                standin._count(left_waiting=1)
                self.close_connection = True
                return
            finally:
                standin._count(waiting=-1)
        if script.status != 200:
            return self._refuse(script)
        standin._count(opened=1, open=1)
        try:
            wire = _ChatWire(body, script) if api == "chat" else _ResponsesWire(body, script, messages)
            self._stream(script, wire, messages)
            standin._count(finished=1)
        except _Cut:
            standin._count(cut=1)
            self.close_connection = True
        except (_ClientGone, OSError):
            standin._count(cancelled=1)
            self.close_connection = True
        finally:
            standin._count(open=-1)

    def _refuse(self, script: Script) -> None:
        # Like OpenAI, quote (part of) the key back: relays must never pass this text on.
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        message = f"Stand-in refused the request with {script.status}. Incorrect API key provided: {key}."
        headers = {"Retry-After": script.retry_after} if script.retry_after else {}
        self._json(script.status, {"error": {"message": message, "type": "stand_in_error", "code": None}}, headers)

    def _stream(self, script: Script, wire: _ChatWire | _ResponsesWire, messages: list[Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", script.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self._compress = _compressor(script.content_encoding)
        if script.content_encoding:
            self.send_header("Content-Encoding", script.content_encoding)
        self.end_headers()
        self.wfile.flush()
        self._head_sent = True
        send = self._sender(script.write_size)
        if script.body is not None:
            send(script.body.encode())
            return self._end()

        send(wire.start())
        calls = self._tool_calls(script, messages)
        if calls:
            return self._call_tools(calls, script, wire, send)
        reply = script.reply(messages) if callable(script.reply) else script.reply
        pieces = split_reply(reply, script.chunks)
        for thought in split_reply(script.reasoning, None) if script.reasoning else ():
            send(wire.reasoning(thought))
        if script.giant_line is not None:
            send(b"data: ")
            for start in range(0, script.giant_line, 65536):
                send(b"x" * min(65536, script.giant_line - start))
            return self._wait(3600)
        if script.hold_until_open is not None:
            self._barrier(script.hold_until_open, script.barrier_timeout)
        self._wait(script.first_delay)
        for sent, piece in enumerate(pieces):
            if sent:
                self._wait(script.delay)
            if sent == script.cut_after:
                raise _Cut()
            if sent == script.hold_after:
                self._hold()
            if sent == script.stall_after:
                self._wait(script.stall)
            if sent == script.malformed_after:
                send(b"data: {not json\n\n")
            if sent == script.error_after:
                send(wire.failed())
                return self._end()
            send(b"".join(wire.text(piece if k == 0 else f"[{k}]{piece}", k) for k in range(script.choices)))
        if script.cut_after is not None and script.cut_after >= len(pieces):
            raise _Cut()
        if script.hold_after is not None and script.hold_after >= len(pieces):
            self._hold()
        send(wire.cite(script.citations or []))
        send(wire.finish(script.finish_reason, len(pieces)))
        if script.after_done == "hold":
            self._wait(3600)
        elif script.after_done == "data":
            while True:
                send(wire.text(" and more", 0))
                self._wait(0.02)
        self._end()

    @staticmethod
    def _tool_calls(script: Script, messages: list[Any]) -> list[dict[str, Any]] | None:
        if callable(script.tool_calls):
            return script.tool_calls(messages)  # it decides, from the messages
        if script.tool_calls is None or messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
            return None  # no tools, or the results are in: answer
        return script.tool_calls

    def _call_tools(self, calls: list[dict[str, Any]], script: Script, wire: _ChatWire | _ResponsesWire,
                    send: Callable[[bytes], None]) -> None:
        """Stream tool calls as OpenAI does: per call, its id and name, then its arguments in pieces."""
        for index, call in enumerate(calls):
            arguments = call.get("arguments", {})
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            call_id = call.get("id") or f"call_{uuid.uuid4().hex[:12]}"
            self._wait(script.first_delay if index == 0 else script.delay)
            send(wire.call_start(index, call_id, call["name"]))
            size = max(1, -(-len(text) // max(1, script.tool_fragments)))
            for start in range(0, len(text), size):
                send(wire.call_arguments(index, text[start:start + size]))
            send(wire.call_done())
        send(wire.finish("tool_calls", len(calls)))
        self._end()

    def _sender(self, write_size: int | None) -> Callable[[bytes], None]:
        def send(data: bytes) -> None:
            if not data:
                return  # an empty chunk would be the body's end
            data = self._compress(data)
            pieces = [data] if not write_size else [data[i : i + write_size] for i in range(0, len(data), write_size)]
            for i, piece in enumerate(pieces):
                if i:
                    self._wait(0.002)  # separate network reads downstream
                self.wfile.write(b"%X\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()

        return send

    def _end(self) -> None:
        rest = self._compress(None)
        if rest:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(rest), rest))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _hold(self) -> None:
        """Wait at the gate until the test opens it."""
        gate = self.server.standin._gate
        while not gate.is_set():
            self._wait(0.05)

    def _barrier(self, count: int, timeout: float) -> None:
        """Wait until ``count`` streams have been open at once (since the last reset); cut this one if
        that never happens."""
        standin = self.server.standin
        deadline = time.monotonic() + timeout
        while standin.stats.peak_open < count:
            if time.monotonic() > deadline:
                raise _Cut()
            self._wait(0.01)

    def _wait(self, seconds: float) -> None:
        """Sleep, but notice at once if the caller hangs up (or the server stops), and send the
        script's keep-alive comments meanwhile.

        A caller that only shut its sending side (nginx does, at times) is still listening: once the
        response has started, a comment is the probe, and only a caller that resets the connection
        after it, or is gone by the next look, counts as gone. Before the response starts there is
        nothing to probe with."""
        deadline = time.monotonic() + seconds
        every = self._script.comment_every if hasattr(self, "_script") else None
        next_comment = time.monotonic() + every if every else float("inf")
        poller = select.poll()  # not select(): thousands of connections outgrow its 1024 descriptors
        poller.register(self.connection, _HANG_UP or select.POLLIN)
        probed = False
        while True:
            now = time.monotonic()
            if now >= next_comment and every:
                self._comment(self._script.comment.encode())
                next_comment = now + every
            left = deadline - now
            ready = poller.poll(max(0.0, min(left, next_comment - now, 0.5)) * 1000)
            events = ready[0][1] if ready else 0
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                raise _ClientGone()
            if events and not _HANG_UP and not self.connection.recv(1, socket.MSG_PEEK):
                raise _ClientGone()
            if events & _HANG_UP:
                if not getattr(self, "_head_sent", False):
                    raise _ClientGone()
                if probed:
                    poller.modify(self.connection, 0)  # still listening: from now on only resets count
                else:
                    self._comment(b": still there?")  # to a caller that is gone this draws a reset
                    probed = True
                    time.sleep(0.01)
            if self.server.standin._stopping.is_set():
                raise _ClientGone()
            if left <= 0:
                return

    def _comment(self, comment: bytes) -> None:
        comment = self._compress(comment + b"\n\n")
        try:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(comment), comment))
            self.wfile.flush()
        except OSError:
            raise _ClientGone() from None

    def _read_json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        data = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


class _Cut(Exception):
    pass


def _sse_data(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _prompt_tokens(messages: list[Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))


class _ChatWire:
    """Chat completions' chunks."""

    def __init__(self, body: dict[str, Any], script: Script) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
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
        if self.usage:
            prompt = _prompt_tokens(self.messages)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                     "total_tokens": prompt + completion_tokens, **(self.script.usage_extra or {})}
            out += _sse_data({"id": "chatcmpl-usage", "object": "chat.completion.chunk", "created": int(time.time()),
                              "model": self.model, "choices": [], "usage": usage})
        return out + b"data: [DONE]\n\n"


class _ResponsesWire:
    """The Responses API's events: items added, their deltas, the items done, and the response's end."""

    def __init__(self, body: dict[str, Any], script: Script, messages: list[Any]) -> None:
        self.id = "resp_" + uuid.uuid4().hex[:24]
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


def _compressor(encoding: str | None) -> Callable[[bytes | None], bytes]:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the OpenAI-compatible stand-in on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--reply", default=Script.reply)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--first-delay", type=float, default=0.2)
    args = parser.parse_args(argv)
    server = StandInServer(Script(reply=args.reply, delay=args.delay, first_delay=args.first_delay), port=args.port)
    print(f"stand-in OpenAI API on {server.url}", flush=True)
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
