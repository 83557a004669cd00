"""The default client's HTTP/1.1 transport against upstreams that break the rules: response framing
that could be read two ways (RFC 9112), heads that never finish, bodies compressed although nobody
asked. Each upstream here is a bare socket (``RawUpstream``) or the stand-in; the client is the real
openai one under the blueprint."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time

import pytest
from flask import Flask

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, AppFactory, eventually
from .servers import RawUpstream
from .streams import answer_of, check_event_stream, events_of, streams_while_held

REPLY = "framed right"


def sse(reply: str = REPLY) -> bytes:
    """A whole chat completion stream, as OpenAI sends it."""
    def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
        event = {"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 0, "model": "m",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(event).encode() + b"\n\n"

    return (chunk({"role": "assistant", "content": ""}) + chunk({"content": reply}) + chunk({}, "stop")
            + b"data: [DONE]\n\n")


def chunked(body: bytes) -> bytes:
    return b"%X\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def head(*fields: str, status: str = "HTTP/1.1 200 OK") -> bytes:
    return ("\r\n".join([status, "Content-Type: text/event-stream", *fields]) + "\r\n\r\n").encode()


def app_for(make_app: AppFactory, raw: RawUpstream, **options: object) -> Flask:
    return make_app(base_url=raw.url, **options)


def chat(app: Flask) -> tuple[int, dict[str, object]]:
    """One NDJSON chat: its status, and its error (a status) or its last event (a 200)."""
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=False)
    data = b"".join(response.response)
    response.close()  # as a server does: the relay lets go of the upstream connection
    assert API_KEY.encode() not in data
    if response.status_code != 200:
        return response.status_code, json.loads(data)["error"]
    events = events_of("ndjson", data)
    assert answer_of(events) == REPLY
    return 200, check_event_stream(events)


def test_a_clean_response_leaves_its_connection_for_the_next_request(make_app: AppFactory) -> None:
    """The control for the cases below: what they count is what a well-framed answer keeps."""
    with RawUpstream(lambda sock, n: sock.sendall(head("Transfer-Encoding: chunked") + chunked(sse())) is None) as raw:
        app = app_for(make_app, raw)
        assert chat(app)[0] == 200 and chat(app)[0] == 200
        assert (raw.requests, raw.connections) == (2, 1)


LENGTH = len(sse())
# (the head's framing fields, the body) -> the connection must not be used again
READ_ONE_WAY_BUT_NOT_REUSED = {
    "Content-Length and chunked": ([f"Content-Length: {LENGTH + 7}", "Transfer-Encoding: chunked"], chunked(sse())),
    "chunked and Content-Length": (["Transfer-Encoding: chunked", f"Content-Length: {LENGTH}"], chunked(sse())),
    "HTTP/1.0 with a length": ([f"Content-Length: {LENGTH}"], sse()),
    "Connection: keep-alive, close": (["Connection: keep-alive, close", f"Content-Length: {LENGTH}"], sse()),
}


@pytest.mark.parametrize("case", list(READ_ONE_WAY_BUT_NOT_REUSED))
def test_framing_that_is_suspect_is_read_once_and_never_reused(make_app: AppFactory, case: str) -> None:
    fields, body = READ_ONE_WAY_BUT_NOT_REUSED[case]
    status = "HTTP/1.0 200 OK" if "HTTP/1.0" in case else "HTTP/1.1 200 OK"
    with RawUpstream(lambda sock, n: sock.sendall(head(*fields, status=status) + body) is None) as raw:
        app = app_for(make_app, raw)
        assert chat(app)[0] == 200 and chat(app)[0] == 200
        assert (raw.requests, raw.connections) == (2, 2)


def test_the_same_length_twice_is_one_length(make_app: AppFactory) -> None:
    fields = [f"Content-Length: {LENGTH}", f"Content-Length: {LENGTH}, {LENGTH}"]
    with RawUpstream(lambda sock, n: sock.sendall(head(*fields) + sse()) is None) as raw:
        app = app_for(make_app, raw)
        assert chat(app)[0] == 200 and chat(app)[0] == 200
        assert (raw.requests, raw.connections) == (2, 1)


# the head's fields -> refused before the first byte, on a connection that is dropped
AMBIGUOUS = {
    "two lengths": [f"Content-Length: {LENGTH}", f"Content-Length: {LENGTH + 10}"],
    "two lengths in one field": [f"Content-Length: {LENGTH}, {LENGTH + 10}"],
    "a signed length": [f"Content-Length: +{LENGTH}"],
    "chunked as a substring": ["Transfer-Encoding: xchunked"],
    "chunked not last": ["Transfer-Encoding: chunked, gzip"],
    "chunked twice": ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
    "a folded header": ["Transfer-Encoding:", " chunked"],
    "a space before the colon": ["Transfer-Encoding : chunked"],
    "a bare LF in a value": ["X-Note: a\nTransfer-Encoding: chunked"],
}


@pytest.mark.parametrize("case", list(AMBIGUOUS))
def test_framing_that_could_be_read_two_ways_is_an_error(make_app: AppFactory, case: str) -> None:
    body = sse() if "length" in case else chunked(sse())
    with RawUpstream(lambda sock, n: sock.sendall(head(*AMBIGUOUS[case]) + body) is None) as raw:
        app = app_for(make_app, raw)
        status, error = chat(app)
        assert (status, error["code"]) == (502, "upstream_unavailable")
        status, error = chat(app)
        assert (status, error["code"]) == (502, "upstream_unavailable")
        assert (raw.requests, raw.connections) == (2, 2)


def drip_a_head(sock: socket.socket, n: int) -> bool:
    """A status line, then a header byte every 0.2 s, for as long as the caller listens."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while True:
        time.sleep(0.2)
        sock.sendall(b"x")


def endless_early_hints(sock: socket.socket, n: int) -> bool:
    """``103 Early Hints`` every 0.2 s, and never a final response."""
    while True:
        sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        time.sleep(0.2)


@pytest.mark.parametrize("respond", [drip_a_head, endless_early_hints], ids=["dripped head", "endless 103"])
def test_a_head_that_never_completes_is_504_within_the_read_timeout(make_app: AppFactory, respond: object) -> None:
    """Every read brings a byte, so a per-read timeout never trips: the head has one deadline. (Without
    it this request never ends, and the test's own timeout fails it.)"""
    with RawUpstream(respond) as raw:  # type: ignore[arg-type]
        app = app_for(make_app, raw, read_timeout=1)
        status, error = chat(app)
        assert (status, error["code"]) == (504, "upstream_timeout")
        eventually(lambda: raw.hung_up, lambda hung_up: hung_up >= 1)  # and the upstream request was closed


ENCODINGS = ["gzip", "deflate", "br"]


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_compressed_stream_is_decoded_as_it_streams(make_app: AppFactory, upstream: StandInServer,
                                                      encoding: str, fmt: str) -> None:
    """We ask for ``identity``; a gateway that compresses anyway is decoded, event by event."""
    streams_while_held(make_app().test_client(), upstream, fmt, content_encoding=encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_the_stand_in_compresses_when_told_whatever_the_caller_asks(upstream: StandInServer, encoding: str) -> None:
    """The control for the test above: the bytes on the wire are compressed."""
    upstream.script = Script(reply=REPLY, content_encoding=encoding)
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "m", "stream": True}),
                 headers={"Accept-Encoding": "identity", "Content-Type": "application/json"})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    assert response.getheader("Content-Encoding") == encoding
    assert b"[DONE]" not in raw
    if encoding == "gzip":
        assert b"[DONE]" in gzip.decompress(raw)


def test_a_whole_gzip_body_with_a_length_is_decoded(make_app: AppFactory) -> None:
    body = gzip.compress(sse())
    fields = ["Content-Encoding: gzip", f"Content-Length: {len(body)}"]
    with RawUpstream(lambda sock, n: sock.sendall(head(*fields) + body) is None) as raw:
        app = app_for(make_app, raw)
        assert chat(app)[0] == 200 and chat(app)[0] == 200
        assert (raw.requests, raw.connections) == (2, 1)


def test_a_corrupt_gzip_body_is_an_interrupted_stream(make_app: AppFactory) -> None:
    good = gzip.compress(sse())
    body = good[:10] + bytes(b ^ 0x5A for b in good[10:])  # a good gzip header, then garbage
    fields = ["Content-Encoding: gzip", "Transfer-Encoding: chunked"]
    with RawUpstream(lambda sock, n: sock.sendall(head(*fields) + chunked(body)) is None) as raw:
        status, error = chat(app_for(make_app, raw))
        assert (status, error["code"]) == (502, "upstream_interrupted")
