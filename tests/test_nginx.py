"""Behind a real nginx (Debian's package) on loopback, configured with deploy/nginx.conf."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from flask_chatstream.testing import Script, StandInServer

from .servers import Gunicorn, Nginx, ROOT, STOP_ON_LEAVE, free_port, stand_in_env
from .streams import post_chat, read_until, send_chat_raw

pytestmark = [pytest.mark.nginx, pytest.mark.server]

REPLY = "one two three four five six seven eight"


@pytest.fixture(scope="module")
def proxy(_standin: StandInServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    env = {**STOP_ON_LEAVE, **stand_in_env(_standin.url)}
    with Gunicorn(env=env) as app:
        port = free_port()
        site = (ROOT / "deploy" / "nginx.conf").read_text()
        site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{app.port};")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
        with Nginx(site, tmp_path_factory.mktemp("nginx")) as nginx:
            nginx.wait(port)
            yield port


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_stream_is_incremental_through_nginx(proxy: int, upstream: StandInServer, fmt: str) -> None:
    upstream.script = Script(reply=REPLY, hold_after=3)  # held after three words until released
    conn, response = post_chat(proxy, fmt)
    assert response.status == 200 and response.getheader("Server", "").startswith("nginx")
    first = read_until(response, b"one")
    assert (upstream.stats.open, upstream.stats.finished) == (1, 0), "nginx held the answer back"
    upstream.release()
    body = first + response.read()
    conn.close()
    assert b"eight" in body and b"eight" not in first


def test_truncated_text_stays_detectable_through_nginx(proxy: int, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, cut_after=3)
    conn, response = post_chat(proxy, "text")
    with pytest.raises(http.client.IncompleteRead) as info:
        response.read()
    conn.close()
    assert info.value.partial == b"one two three"


def test_client_leaving_through_nginx_closes_the_upstream(proxy: int, upstream: StandInServer) -> None:
    upstream.script = Script(reply="late", first_delay=3600)
    sock = send_chat_raw(proxy, "ndjson")
    upstream.wait_for(lambda s: s.open == 1)
    sock.close()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert stats.cancelled == 1
