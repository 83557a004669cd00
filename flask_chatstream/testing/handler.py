"""The stand-in's HTTP side, on the standard library's threaded server (one thread per connection, so it
works unchanged under gevent's monkey-patching)."""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .faults import Dropped
from .playback import ClientGone, Playback
from .script import Script
from .wire import ChatWire, ResponsesWire, chat_messages

if TYPE_CHECKING:
    from .server import StandInServer


class Server(ThreadingHTTPServer):
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


class Handler(BaseHTTPRequestHandler):
    """The stand-in's HTTP side: the control API under ``/_standin/``, ``/models``, and the two APIs
    (each answer played by a ``Playback``)."""

    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.standin._count(connections=1)

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
        playback = Playback(self, standin, script)
        messages = body.get("messages") or [] if api == "chat" else chat_messages(body)
        delay = script.header_delay(messages) if callable(script.header_delay) else script.header_delay
        if delay:
            standin._count(waiting=1)
            try:
                playback.wait(delay)
            except ClientGone:
                standin._count(left_waiting=1)
                self.close_connection = True
                return
            finally:
                standin._count(waiting=-1)
        if script.status != 200:
            return self._refuse(script)
        standin._count(opened=1, open=1)
        wire = ChatWire(body, script) if api == "chat" else ResponsesWire(body, script, messages)
        try:
            playback.stream(wire, messages)
            standin._count(finished=1)
            standin._spend(str(body.get("user") or ""), wire.billed)
        except Dropped:
            standin._count(cut=1)
            self.close_connection = True
        except (ClientGone, OSError):
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
