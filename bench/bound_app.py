"""The bound: the least any Flask relay of this upstream can do, so the least it can cost.

A Flask view, under the same gunicorn and gevent worker as every side, that asks the same upstream
for the same answer on a kept-alive socket and yields its text as it comes: one request head written
by hand, the chunked body taken apart, each SSE event's JSON parsed (orjson) for its
``delta.content``. Nothing else: no validation, no errors, no retries, no timeouts, no client watch,
no stop, no log line. It is not a relay anyone should run (a broken upstream hangs it); it is what
the floor (bench/floor_app.py, no upstream at all) plus one upstream exchange per request and one
upstream read per chunk costs on this machine, below which no relay's figures can go.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
from flask import Flask, Response, request

UPSTREAM = urlsplit(os.environ["OPENAI_BASE_URL"])
HEAD = (b"POST " + UPSTREAM.path.encode() + b"/chat/completions HTTP/1.1\r\nHost: "
        + UPSTREAM.netloc.encode() + b"\r\nAuthorization: Bearer " + os.environ["OPENAI_API_KEY"].encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n")
_idle: list[socket.socket] = []

app = Flask(__name__)


@app.post("/api/chat")
def chat() -> Response:
    body = orjson.dumps({"model": "gpt-4o-mini", "stream": True,
                         "messages": [{"role": "user", "content": request.get_json()["content"]}]})
    sock = _idle.pop() if _idle else socket.create_connection((UPSTREAM.hostname, UPSTREAM.port))
    sock.sendall(HEAD % len(body) + body)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    data = data.split(b"\r\n\r\n", 1)[1]
    return Response(_text(sock, data), mimetype="text/plain")


def _text(sock: socket.socket, data: bytes) -> Iterator[bytes]:
    """The answer's text, a piece per upstream read: the chunked framing undone, then each event's content."""
    raw = events = b""
    over = False
    while True:
        raw += data
        while not over:  # whole chunks of the chunked body
            line = raw.find(b"\r\n")
            if line < 0 or len(raw) < line + 4 + (size := int(raw[:line], 16)):
                break
            events += raw[line + 2:line + 2 + size]
            raw = raw[line + 4 + size:]
            over = size == 0
        *whole, events = events.split(b"\n\n")
        text = b"".join(_content(event) for event in whole)
        if text:
            yield text
        if over:
            _idle.append(sock)  # the body is over: the connection serves the next request
            return
        data = sock.recv(65536)


def _content(event: bytes) -> bytes:
    if not event.startswith(b"data: {"):
        return b""  # [DONE]
    choices = orjson.loads(event[6:])["choices"]
    return (choices[0]["delta"].get("content") or "").encode() if choices else b""
