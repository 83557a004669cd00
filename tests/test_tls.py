"""Upstreams over TLS: the stand-in with a certificate from a throwaway CA that the clients trust.

A TLS socket that is shut down or closed under a blocked read surfaces in several ways (an EOF, an
SSL error, EBADF, ``ValueError: Read on closed or unwrapped SSL socket``); each must map to the
outcome of why it was stopped, or to ``upstream_interrupted`` when nobody stopped it.
"""

from __future__ import annotations

import socket
import ssl
import threading

import openai
import pytest

from flask_chatstream._chat import ChatRequest
from flask_chatstream._config import Settings
from flask_chatstream._sockets import shutdown
from flask_chatstream._upstream.client import Stopped, Upstream, UpstreamStream
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, AppFactory
from .servers import STOP_ON_LEAVE, Gunicorn
from .streams import answer_of, check_event_stream, events_of, send_chat_raw

CHAT = ChatRequest(messages=[{"role": "user", "content": "hi"}], model="m", max_tokens=10)
REPLY = "one two three four five six"


def custom_client(tls: StandInServer, ca_file: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=API_KEY, base_url=tls.url, max_retries=0,
                         http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca_file)))


@pytest.mark.parametrize("client", ["default", "custom"])
@pytest.mark.parametrize(("script", "code"), [
    (Script(reply=REPLY, delay=0.01), "done"),
    (Script(reply=REPLY, cut_after=2), "upstream_interrupted"),
    (Script(reply=REPLY, stall_after=2, stall=3600), "upstream_timeout"),
], ids=["whole", "cut", "stall"])
def test_stream_over_tls(make_app: AppFactory, tls: StandInServer, ca_file: str, client: str, script: Script,
                         code: str) -> None:
    tls.script = script
    options = {"client": custom_client(tls, ca_file)} if client == "custom" else {"base_url": tls.url}
    app = make_app(read_timeout=0.5 if code == "upstream_timeout" else 30, **options)
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=False)
    events = events_of("ndjson", b"".join(response.response))
    terminal = check_event_stream(events)
    assert (terminal["type"] if code == "done" else terminal["error"]["code"]) == code
    assert answer_of(events) == (REPLY if code == "done" else "one two")
    stats = tls.wait_for(lambda s: s.open == 0)
    assert stats.opened == 1 and (stats.finished == 1) == (code == "done")


def test_the_default_client_reuses_tls_connections(make_app: AppFactory, tls: StandInServer) -> None:
    client = make_app(base_url=tls.url).test_client()
    for _ in range(3):
        response = client.post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=False)
        b"".join(response.response)
        response.close()
    assert (tls.wait_for(lambda s: s.finished == 3).connections) == 1


@pytest.mark.server
@pytest.mark.parametrize("fmt", ["text", "ndjson"])
def test_client_leaving_a_tls_upstream_in_silence(tls: StandInServer, ca_file: str, fmt: str) -> None:
    tls.script = Script(reply="late", first_delay=3600)
    env = {**STOP_ON_LEAVE, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": tls.url, "SSL_CERT_FILE": ca_file,
           "CHATSTREAM_MAX_RETRIES": "0"}
    with Gunicorn(env=env) as server:
        sock = send_chat_raw(server.port, fmt)
        tls.wait_for(lambda s: s.open == 1)
        sock.close()
        stats = tls.wait_for(lambda s: s.open == 0)
        assert (stats.cancelled, stats.finished) == (1, 0)
        log = server.wait_for_log("outcome=client_left")
    assert "Traceback" not in log


def read_until_broken(stream: UpstreamStream, breaker: object, *, during: bool) -> BaseException:
    """Read the stream while ``breaker`` breaks its socket: from another thread during a blocked read,
    or just before the next read (a closed descriptor cannot wake a read already blocked on it)."""
    reads = iter(stream)
    next(reads)  # the role chunk; the stand-in now goes silent
    timer = threading.Timer(0.2, breaker) if during else None  # type: ignore[arg-type]
    if timer is None:
        breaker()  # type: ignore[operator]
    else:
        timer.start()
    try:
        for _ in reads:
            pass
    except BaseException as exc:  # noqa: BLE001 - what surfaced is what the test looks at
        return exc
    finally:
        if timer is not None:
            timer.join()
    raise AssertionError("the read ended quietly")


@pytest.mark.parametrize("how", ["shutdown", "ssl-shutdown", "close"])
@pytest.mark.parametrize("reason", ["client_left", "timeout", None])
def test_every_way_a_broken_tls_read_surfaces_maps_to_its_reason(tls: StandInServer, how: str,
                                                                  reason: str | None) -> None:
    tls.script = Script(reply="never", first_delay=3600)
    settings = Settings(api_key=API_KEY, base_url=tls.url, max_retries=0)
    stream = Upstream(settings).open(CHAT)
    sock = stream._socket

    def breaker() -> None:
        if how == "shutdown":  # the watchdog's way: the descriptor, under the SSL object's feet
            if reason is None:
                shutdown(sock)
            else:
                stream.stop(reason)
            return
        stream.stopped = reason
        if how == "ssl-shutdown":  # SSLSocket.shutdown unwraps first: "Read on closed or unwrapped SSL socket"
            sock.shutdown(socket.SHUT_RDWR)
        else:  # EBADF
            sock.close()

    error = read_until_broken(stream, breaker, during=how != "close")
    stream.close()
    if reason is None:
        assert not isinstance(error, Stopped), error
    else:
        assert isinstance(error, Stopped) and error.reason == reason, repr(error)
    assert tls.wait_for(lambda s: s.open == 0).cancelled == 1
