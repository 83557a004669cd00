"""Helpers that read the three wire formats the way a client would."""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask_chatstream._wire.events import EVENT_TYPES
from flask_chatstream.testing import Script

if TYPE_CHECKING:
    from flask import Response
    from flask.testing import FlaskClient

    from flask_chatstream.testing import StandInServer

HELD_REPLY = "one two three four five six"


def _shape(event_type: type) -> tuple[str, frozenset[str], frozenset[str]]:
    """An event ``TypedDict``'s type name, required keys and allowed keys (read from its annotations,
    which are strings here: ``NotRequired[...]`` marks the optional ones)."""
    notes = {name: str(getattr(note, "__forward_arg__", note)) for name, note in event_type.__annotations__.items()}
    kind = re.fullmatch(r"Literal\[[\"'](\w+)[\"']\]", notes["type"])
    assert kind, notes
    optional = {name for name, note in notes.items() if note.startswith("NotRequired[")}
    return kind[1], frozenset(notes) - optional, frozenset(notes)


EVENT_SHAPES = {kind: (required, allowed) for kind, required, allowed in map(_shape, EVENT_TYPES)}
"""What each event type must and may hold, by the package's own types (flask_chatstream._wire.events)."""


def check_event_shape(event: dict[str, Any]) -> None:
    required, allowed = EVENT_SHAPES[event["type"]]
    assert required <= event.keys() <= allowed, (event, sorted(required), sorted(allowed))


def ndjson_events(body: bytes) -> list[dict[str, Any]]:
    assert body.endswith(b"\n"), body[-80:]
    return [json.loads(line) for line in body.decode().split("\n") if line]


def sse_events(body: bytes) -> list[dict[str, Any]]:
    events = []
    for block in body.decode().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        lines = block.split("\n")
        name, data = lines[-2:]
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        if len(lines) == 3:  # a resumable stream's events carry their seq as the SSE id
            assert lines[0] == f"id: {event['seq']}", block
        else:
            assert len(lines) == 2 and "seq" not in event, block
        events.append(event)
    return events


def events_of(fmt: str, body: bytes) -> list[dict[str, Any]]:
    return ndjson_events(body) if fmt == "ndjson" else sse_events(body)


def ui_parts(body: bytes, *, done: bool = False) -> list[Any]:
    """The ``ui`` format's parts (the AI SDK's UI message stream): one ``data:`` block each, comments
    (heartbeats) left out, and ``[DONE]`` too unless ``done``. Any other block fails the test."""
    blocks = body.decode().split("\n\n")
    assert blocks[-1] == "", body[-200:]
    data = [block for block in blocks[:-1] if not block.startswith(":")]
    assert all(block.startswith("data: ") for block in data), body[:300]
    return [block[6:] if block == "data: [DONE]" else json.loads(block[6:]) for block in data
            if done or block != "data: [DONE]"]


def answer_of(events: Iterable[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "delta")


def check_event_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Start first, exactly one terminal event, and it is last; each event as its type says. Returns
    the terminal event."""
    for event in events:
        check_event_shape(event)
    assert events[0]["type"] == "start", events[:2]
    terminals = [e for e in events if e["type"] in ("done", "error")]
    assert len(terminals) == 1 and events[-1] is terminals[0], events[-3:]
    return terminals[0]


def read_until(response: http.client.HTTPResponse, needle: bytes) -> bytes:
    """Read whatever has arrived, read by read, until ``needle`` shows up."""
    received = response.read1(65536)
    while needle not in received:
        piece = response.read1(65536)
        assert piece, f"the stream ended before {needle!r}"
        received += piece
    return received


def post_chat(port: int, fmt: str, body: object = None, *, timeout: float = 10, headers: dict[str, str] | None = None
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """POST a chat body (``{"content": "hi"}`` by default) to a real server; close the connection after."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", f"/api/chat?format={fmt}", body=json.dumps({"content": "hi"} if body is None else body),
                 headers={"Content-Type": "application/json", **(headers or {})})
    return conn, conn.getresponse()


def send_chat_raw(port: int, fmt: str) -> socket.socket:
    """Send a chat request on a bare socket, which the caller can then drop like a closed tab."""
    sock = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"content": "think"}).encode()
    sock.sendall(b"POST /api/chat?format=%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (fmt.encode(), len(body), body))
    return sock


def streams_while_held(client: FlaskClient, upstream: StandInServer, fmt: str,
                       headers: dict[str, str] | None = None, **script: Any) -> Response:
    """POST a chat held at the stand-in's gate after three words: the first word must arrive while the
    upstream has not finished, chunk by chunk; then the rest. Returns the (consumed) response.
    ``script`` adds to the stand-in's script."""
    upstream.script = Script(reply=HELD_REPLY, hold_after=3, **script)
    response = client.post(f"/api/chat?format={fmt}", json={"content": "hi"}, headers=headers, buffered=False)
    assert response.status_code == 200, response.get_data()
    chunks = iter(response.response)
    received = b""
    while b"one" not in received:
        received += next(chunks)
    stats = upstream.stats
    assert (stats.open, stats.finished) == (1, 0), "the upstream had already finished"
    assert b"four" not in received
    upstream.release()
    received += b"".join(chunks)
    response.close()
    assert b"six" in received
    if fmt != "text":
        assert check_event_stream(events_of(fmt, received))["type"] == "done"
    return response
