"""What an attacker can send over a raw socket: request bodies that never finish, broken chunked
bodies, bodies shorter than they claim, odd methods. Against gunicorn + gevent; each answer is a
JSON error with the right status, and the log holds no traceback."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from flask_chatstream.testing import StandInServer

from .servers import Gunicorn, read_message, stand_in_env
from .streams import post_chat

pytestmark = pytest.mark.server

BODY = b'{"content": "hi"}'


@pytest.fixture(scope="module")
def server(_standin: StandInServer) -> Iterator[Gunicorn]:
    env = {**stand_in_env(_standin.url, body_timeout="1"), "WORKER_CONNECTIONS": "30"}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


def connect(server: Gunicorn) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(30)
    return sock


def head(method: str = "POST", **headers: str) -> bytes:
    lines = [f"{method} /api/chat HTTP/1.1", "Host: x", *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response_of(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response until the server closes the connection or its Content-Length is in."""
    head_bytes, body, _ = read_message(sock)
    assert head_bytes is not None, "the server closed the connection without a response"
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_body_that_never_finishes_is_408_and_closed(server: Gunicorn, upstream: StandInServer) -> None:
    sock = connect(server)
    sock.sendall(head(Content_Type="application/json", Content_Length="100") + b"{")
    status, _, body = response_of(sock)
    assert (status, json.loads(body)["error"]["code"]) == (408, "request_timeout")
    assert closed_by_server(sock)
    assert upstream.stats.requests == 0


def test_a_trickling_body_is_timed_out_as_a_whole(server: Gunicorn) -> None:
    """One byte every 0.3 s never trips a per-read timeout; the deadline is for the whole body."""
    sock = connect(server)
    sock.sendall(head(Content_Type="application/json", Content_Length="1000"))
    status = None
    for _ in range(200):  # 60 s of trickling at most: the deadline (1 s) ends it long before
        try:
            sock.sendall(b" ")
        except OSError:
            break
        time.sleep(0.3)
        sock.setblocking(False)
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(True)
    status, _, _ = response_of(sock)
    assert status == 408


def test_slow_bodies_do_not_shut_out_real_clients(server: Gunicorn, upstream: StandInServer) -> None:
    # As many slow connections as the worker takes (WORKER_CONNECTIONS=30): each is cut at the body
    # timeout, after which a real client gets through.
    slow = [connect(server) for _ in range(30)]
    for sock in slow:
        sock.sendall(head(Content_Type="application/json", Content_Length="100") + b"{")
    conn, response = post_chat(server.port, "text", timeout=60)
    assert response.status == 200 and response.read()
    conn.close()
    assert [response_of(sock)[0] for sock in slow] == [408] * 30


@pytest.mark.parametrize("chunked", [b"zz\r\nnot hex\r\n0\r\n\r\n", b"5\r\nab"], ids=["malformed", "abandoned"])
def test_a_broken_chunked_body_is_400_without_a_traceback(server: Gunicorn, chunked: bytes) -> None:
    sock = connect(server)
    sock.sendall(head(Content_Type="application/json", Transfer_Encoding="chunked") + chunked)
    sock.shutdown(socket.SHUT_WR)
    status, _, body = response_of(sock)
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_body"


def test_a_chunked_body_over_the_limit_is_413_as_soon_as_it_passes_it(server: Gunicorn,
                                                                      upstream: StandInServer) -> None:
    """No Content-Length to check first: the body is read to one byte past max_body_bytes (64 KiB) and
    refused there, while the client is still sending, never cut at the limit and parsed."""
    sock = connect(server)
    sock.sendall(head(Content_Type="application/json", Transfer_Encoding="chunked"))
    piece = b'{"content": "' + b"x" * 70_000
    sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")  # past the limit; the body goes on
    status, _, body = response_of(sock)
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    assert upstream.stats.requests == 0


def test_a_body_shorter_than_its_length_is_400(server: Gunicorn, upstream: StandInServer) -> None:
    sock = connect(server)
    sock.sendall(head(Content_Type="application/json", Content_Length=str(len(BODY) + 20)) + BODY)
    sock.shutdown(socket.SHUT_WR)  # a half-closed client: the rest is never coming
    status, _, body = response_of(sock)
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_body"
    assert upstream.stats.requests == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "TRACE", "PROPFIND", "BREW"])
def test_every_method_but_post_is_a_json_405_with_an_accurate_allow(server: Gunicorn, method: str) -> None:
    sock = connect(server)
    sock.sendall(head(method, Content_Length="0"))
    status, headers, body = response_of(sock)
    assert (status, headers["allow"], headers["content-type"]) == (405, "OPTIONS, POST", "application/json")
    assert json.loads(body)["error"]["code"] == "method_not_allowed"


def test_options_says_what_the_endpoint_takes(server: Gunicorn) -> None:
    sock = connect(server)
    sock.sendall(head("OPTIONS"))
    status, headers, _ = response_of(sock)
    assert (status, headers["allow"]) == (204, "OPTIONS, POST")
