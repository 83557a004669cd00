"""The stream itself, read chunk by chunk through Flask's test client (buffered=False)."""

from __future__ import annotations

import inspect
import sys
import threading
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from flask_chatstream._errors import StreamAborted
from flask_chatstream.testing import Script, StandInServer, split_reply

from .conftest import AppFactory
from .streams import answer_of, check_event_stream, events_of, streams_while_held

REPLY = "Streaming means the answer shows up word by word, as the model writes it."
UNICODE_REPLY = "Grüße aus Köln — 日本語のテキスト, emoji 🎉🚀 and ünïcödé."
EVENT_FORMATS = ["ndjson", "sse"]


def word_aligned(pieces: list[str], reply: str) -> bool:
    """Each piece is whole words of the reply: what one upstream read brought, never a split word.
    (How many reads there are is up to the network and the scheduler; tests do not count them.)"""
    words = split_reply(reply, None)
    ends = {len("".join(words[: i + 1])) for i in range(len(words))}
    position = 0
    for piece in pieces:
        position += len(piece)
        if position not in ends:
            return False
    return position == len(reply)


def test_text_arrives_whole_and_in_order(client: FlaskClient, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, delay=0.01)
    response = client.post("/api/chat?format=text", json={"content": "hi"}, buffered=False)
    pieces = [piece.decode() for piece in response.response if piece]
    assert "".join(pieces) == REPLY and word_aligned(pieces, REPLY)
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("fmt", EVENT_FORMATS)
def test_events_arrive_whole_and_in_order(client: FlaskClient, upstream: StandInServer, fmt: str) -> None:
    upstream.script = Script(reply=REPLY, delay=0.01)
    response = client.post(f"/api/chat?format={fmt}", json={"content": "hi there"}, buffered=False)
    events = events_of(fmt, b"".join(response.response))
    done = check_event_stream(events)
    assert answer_of(events) == REPLY
    assert word_aligned([e["content"] for e in events if e["type"] == "delta"], REPLY)
    assert done == {"type": "done", "finish_reason": "stop",
                    "usage": {"prompt_tokens": 2, "completion_tokens": 14, "total_tokens": 16}}
    assert events[0]["model"] == "gpt-4o-mini" and events[0]["id"].startswith("chatcmpl-")


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_streaming_headers(client: FlaskClient, fmt: str) -> None:
    response = client.post(f"/api/chat?format={fmt}", json={"content": "hi"}, buffered=False)
    assert response.headers["Cache-Control"] == "no-cache, no-transform"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in response.headers and "Content-Length" not in response.headers
    response.close()


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_first_delta_arrives_while_upstream_is_still_sending(
    client: FlaskClient, upstream: StandInServer, fmt: str
) -> None:
    # The upstream holds after three words until the test opens the gate: no clock involved.
    streams_while_held(client, upstream, fmt)
    assert upstream.wait_for(lambda s: s.finished == 1)


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_multibyte_characters_split_across_upstream_writes(
    client: FlaskClient, upstream: StandInServer, fmt: str
) -> None:
    # 5-byte network writes cut through 2-, 3- and 4-byte UTF-8 sequences and JSON alike.
    upstream.script = Script(reply=UNICODE_REPLY, write_size=5)
    response = client.post(f"/api/chat?format={fmt}", json={"content": "hi"}, buffered=False)
    pieces = list(response.response)
    for piece in pieces:
        piece.decode()  # every write is whole UTF-8 on its own
    body = b"".join(pieces)
    text = body.decode() if fmt == "text" else answer_of(events_of(fmt, body))
    assert text == UNICODE_REPLY


FAULTS = [
    (Script(reply=REPLY, cut_after=3), "upstream_interrupted"),
    (Script(reply=REPLY, malformed_after=3), "upstream_malformed"),
    (Script(reply=REPLY, error_after=3), "upstream_error"),
    (Script(reply=REPLY, stall_after=3, stall=30), "upstream_timeout"),
]


@pytest.mark.parametrize("fmt", EVENT_FORMATS)
@pytest.mark.parametrize(("script", "code"), FAULTS, ids=[code for _, code in FAULTS])
def test_fault_after_first_byte_ends_events_with_one_error(
    make_app: AppFactory, upstream: StandInServer, fmt: str, script: Script, code: str
) -> None:
    upstream.script = script
    client = make_app(read_timeout=0.5 if code == "upstream_timeout" else 30).test_client()
    response = client.post(f"/api/chat?format={fmt}", json={"content": "hi"}, buffered=False)
    assert response.status_code == 200
    events = events_of(fmt, b"".join(response.response))
    error = check_event_stream(events)
    assert error["type"] == "error" and error["error"]["code"] == code and error["error"]["message"]
    assert answer_of(events) == "".join(split_reply(REPLY, None)[:3])
    upstream.wait_for(lambda s: s.open == 0)


@pytest.mark.parametrize(("script", "code"), FAULTS, ids=[code for _, code in FAULTS])
def test_fault_after_first_byte_cuts_text(make_app: AppFactory, upstream: StandInServer, script: Script,
                                         code: str) -> None:
    upstream.script = script
    client = make_app(read_timeout=0.5 if code == "upstream_timeout" else 30).test_client()
    response = client.post("/api/chat?format=text", json={"content": "hi"}, buffered=False)
    received = b""
    with pytest.raises(StreamAborted) as info:
        for piece in response.response:
            received += piece
    assert info.value.reason.code == code
    assert received.decode() == "".join(split_reply(REPLY, None)[:3])
    upstream.wait_for(lambda s: s.open == 0)


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_client_leaving_closes_the_upstream(client: FlaskClient, upstream: StandInServer, fmt: str) -> None:
    upstream.script = Script(reply=REPLY, hold_after=1)
    response = client.post(f"/api/chat?format={fmt}", json={"content": "hi"}, buffered=False)
    next(iter(response.response))
    assert upstream.stats.open == 1
    response.close()  # what the server does when the browser goes away
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)


def test_a_stream_waiting_on_the_model_holds_one_generator_of_ours(client: FlaskClient, upstream: StandInServer) -> None:
    """Between two chunks, a stream waits in the upstream socket's read with one generator of ours on
    its stack (the body the server iterates): the reads under it are plain calls. A generator more is
    a frame and a deeper saved greenlet stack held by every open stream (bench.profile --memory)."""
    upstream.script = Script(reply=REPLY, hold_after=1)
    response = client.post("/api/chat?format=text", json={"content": "hi"}, buffered=False)
    chunks = iter(response.response)
    assert next(chunks)  # the first word; the rest is held at the stand-in's gate
    reader = threading.Thread(target=lambda: b"".join(chunks), daemon=True)
    reader.start()
    package = str(Path(__file__).resolve().parent.parent / "flask_chatstream")
    deadline = time.monotonic() + 30
    while True:  # until the reader waits in the socket read (a barrier, with a bound for a broken build)
        frame = sys._current_frames().get(reader.ident or 0)
        if frame is not None and frame.f_code.co_filename.endswith(("_upstream/transport.py", "_upstream\\transport.py")):
            break
        assert time.monotonic() < deadline, "the reader never waited in the upstream's read"
        time.sleep(0.01)
    ours = []
    while frame is not None:
        if frame.f_code.co_filename.startswith(package):
            ours.append((frame.f_code.co_name, bool(frame.f_code.co_flags & inspect.CO_GENERATOR)))
        frame = frame.f_back
    assert [name for name, generator in ours if generator] == ["_run"], ours
    upstream.release()
    reader.join(30)
    assert not reader.is_alive()
    response.close()
