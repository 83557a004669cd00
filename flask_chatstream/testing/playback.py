"""One answer of the stand-in, played onto its connection: the head, the script's pieces and faults in
order, and waits that notice at once when the caller hangs up."""

from __future__ import annotations

import json
import select
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .faults import Dropped
from .script import Script, split_reply
from .wire import ChatWire, ResponsesWire, compressor

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

    from .server import StandInServer

# The caller closed its side (POLLRDHUP, Linux): seen even with unread bytes (a TLS close_notify) pending.
_HANG_UP = getattr(select, "POLLRDHUP", 0)


class ClientGone(Exception):
    """The caller hung up (or the server stops)."""


class Playback:
    """Plays ``script`` onto the handler's connection."""

    def __init__(self, handler: BaseHTTPRequestHandler, standin: StandInServer, script: Script) -> None:
        self.handler = handler
        self.standin = standin
        self.script = script
        self.connection: socket.socket = handler.connection
        self.wfile = handler.wfile
        self._compress = compressor(None)
        self._head_sent = False

    def stream(self, wire: ChatWire | ResponsesWire, messages: list[Any]) -> None:
        script, handler = self.script, self.handler
        handler.send_response(200)
        handler.send_header("Content-Type", script.content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Cache-Control", "no-cache")
        self._compress = compressor(script.content_encoding)
        if script.content_encoding:
            handler.send_header("Content-Encoding", script.content_encoding)
        handler.end_headers()
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
            return self.wait(3600)
        if script.hold_until_open is not None:
            self._barrier(script.hold_until_open, script.barrier_timeout)
        self.wait(script.first_delay)
        faults = script.all_faults()
        for sent, piece in enumerate(pieces):
            if sent:
                self.wait(script.delay)
            for fault in faults:
                if fault.after == sent and fault.play(self, wire, send):
                    return self._end()
            send(b"".join(wire.text(piece if k == 0 else f"[{k}]{piece}", k) for k in range(script.choices)))
        for fault in faults:
            if fault.at_end and fault.after >= len(pieces) and fault.play(self, wire, send):
                return self._end()
        send(wire.cite(script.citations or []))
        send(wire.finish(script.finish_reason, len(pieces)))
        if script.after_done == "hold":
            self.wait(3600)
        elif script.after_done == "data":
            while True:
                send(wire.text(" and more", 0))
                self.wait(0.02)
        self._end()

    @staticmethod
    def _tool_calls(script: Script, messages: list[Any]) -> list[dict[str, Any]] | None:
        if callable(script.tool_calls):
            return script.tool_calls(messages)  # it decides, from the messages
        if script.tool_calls is None or messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
            return None  # no tools, or the results are in: answer
        return script.tool_calls

    def _call_tools(self, calls: list[dict[str, Any]], script: Script, wire: ChatWire | ResponsesWire,
                    send: Callable[[bytes], None]) -> None:
        """Stream tool calls as OpenAI does: per call, its id and name, then its arguments in pieces."""
        for index, call in enumerate(calls):
            arguments = call.get("arguments", {})
            text = arguments if isinstance(arguments, str) else json.dumps(arguments)
            call_id = call.get("id") or f"call_{uuid.uuid4().hex[:12]}"
            self.wait(script.first_delay if index == 0 else script.delay)
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
                    self.wait(0.002)  # separate network reads downstream
                self.wfile.write(b"%X\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()

        return send

    def _end(self) -> None:
        rest = self._compress(None)
        if rest:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(rest), rest))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def hold(self) -> None:
        """Wait at the gate until the test opens it."""
        gate = self.standin._gate
        while not gate.is_set():
            self.wait(0.05)

    def _barrier(self, count: int, timeout: float) -> None:
        """Wait until ``count`` streams have been open at once (since the last reset); cut this one if
        that never happens."""
        standin = self.standin
        deadline = time.monotonic() + timeout
        while standin.stats.peak_open < count:
            if time.monotonic() > deadline:
                raise Dropped()
            self.wait(0.01)

    def wait(self, seconds: float) -> None:
        """Sleep, but notice at once if the caller hangs up (or the server stops), and send the
        script's keep-alive comments meanwhile.

        A caller that only shut its sending side (nginx does, at times) is still listening: once the
        response has started, a comment is the probe, and only a caller that resets the connection
        after it, or is gone by the next look, counts as gone. Before the response starts there is
        nothing to probe with."""
        deadline = time.monotonic() + seconds
        every = self.script.comment_every
        next_comment = time.monotonic() + every if every else float("inf")
        poller = select.poll()  # not select(): thousands of connections outgrow its 1024 descriptors
        poller.register(self.connection, _HANG_UP or select.POLLIN)
        probed = False
        while True:
            now = time.monotonic()
            if now >= next_comment and every:
                self._comment(self.script.comment.encode())
                next_comment = now + every
            left = deadline - now
            ready = poller.poll(max(0.0, min(left, next_comment - now, 0.5)) * 1000)
            events = ready[0][1] if ready else 0
            if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                raise ClientGone()
            if events and not _HANG_UP and not self.connection.recv(1, socket.MSG_PEEK):
                raise ClientGone()
            if events & _HANG_UP:
                if not self._head_sent:
                    raise ClientGone()
                if probed:
                    poller.modify(self.connection, 0)  # still listening: from now on only resets count
                else:
                    self._comment(b": still there?")  # to a caller that is gone this draws a reset
                    probed = True
                    time.sleep(0.01)
            if self.standin._stopping.is_set():
                raise ClientGone()
            if left <= 0:
                return

    def _comment(self, comment: bytes) -> None:
        comment = self._compress(comment + b"\n\n")
        try:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(comment), comment))
            self.wfile.flush()
        except OSError:
            raise ClientGone() from None
