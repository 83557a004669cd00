"""A custom client (``client=``) speaking HTTP/2: streams share one connection, so stopping one must
never shut the socket down under the others. nginx terminates HTTP/2 (h2c) in front of the stand-in."""

from __future__ import annotations

import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import Gunicorn, Nginx, free_port
from .streams import answer_of, check_event_stream, events_of, post_chat, read_until, send_chat_raw

pytestmark = [pytest.mark.nginx, pytest.mark.server]

REPLY = "one two three four five six"
PING = b'{"type":"ping"}\n'


def test_a_client_leaving_stops_only_its_own_stream(_standin: StandInServer, upstream: StandInServer,
                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    site = f"""
server {{
    listen 127.0.0.1:{port} http2;
    location / {{
        proxy_pass http://127.0.0.1:{_standin.port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
    }}
}}"""
    with Nginx(site, tmp_path_factory.mktemp("h2"), access_log="h2") as nginx:
        nginx.wait(port)
        env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
               "CHATSTREAM_FIRST_EVENT_WAIT": "0.1", "CHATSTREAM_HEARTBEAT": "0.2",
               "CHATSTREAM_ADJUST_HTTPCORE": "1"}  # as a host with HTTP/2 under gevent should
        upstream.script = Script(reply=REPLY, hold_after=2)
        with Gunicorn("tests.custom_client_app:app", env={**env, "CUSTOM_HTTP2": "1"}) as server:
            leaving = send_chat_raw(server.port, "ndjson")
            conn, staying = post_chat(server.port, "ndjson", timeout=30)
            head = read_until(staying, b"two")
            upstream.wait_for(lambda s: s.open == 2)
            leaving.close()  # its relay is stopped; the shared connection must not be
            # Pings to the other stream come from the watchdog's ticks, the same loop that sees the
            # departure: two of them after the close mean it has been seen and acted on.
            head += read_until(staying, PING)
            head += read_until(staying, PING)
            upstream.release()
            events = events_of("ndjson", head + staying.read())
            conn.close()
            assert answer_of(events) == REPLY and check_event_stream(events)["type"] == "done"
            upstream.wait_for(lambda s: s.open == 0)
            log = server.wait_for_log("outcome=client_left")
    assert "Traceback" not in log
    assert "its HTTP/2 connections fair locks" in log  # or a stream can starve behind a silent one
    assert "outcome=client_left" in log and "outcome=done" in log
    # Both went over one HTTP/2 connection from the worker to nginx.
    lines = nginx.access_log.read_text().split()
    entries = [tuple(lines[i:i + 3]) for i in range(0, len(lines), 3)]
    assert len(entries) == 2 and len({c for c, _, _ in entries}) == 1 and all(p == "HTTP/2.0" for _, p, _ in entries)
