"""Behind a real nginx (Debian's package) on loopback, configured with deploy/nginx.conf."""

from __future__ import annotations

import http.client
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import ROOT, Gunicorn, free_port, wait_for_port
from .streams import post_chat, read_until, send_chat_raw

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REPLY = "one two three four five six seven eight"


@pytest.fixture(scope="module")
def proxy(_standin: StandInServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    assert Path(NGINX).exists(), "nginx is required: apt-get install nginx (make test does)"
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "CHATSTREAM_MAX_RETRIES": "0"}
    with Gunicorn(env=env) as app:
        tmp = tmp_path_factory.mktemp("nginx")
        port = free_port()
        site = (ROOT / "deploy" / "nginx.conf").read_text()
        site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{app.port};")
        site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
        (tmp / "site.conf").write_text(site)
        (tmp / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/site.conf;
}}
""")
        process = subprocess.Popen([NGINX, "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "error.log")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, process)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_stream_is_incremental_through_nginx(proxy: int, upstream: StandInServer, fmt: str) -> None:
    upstream.script = Script(reply=REPLY, delay=0.15)
    conn, response = post_chat(proxy, fmt)
    assert response.status == 200 and response.getheader("Server", "").startswith("nginx")
    first = read_until(response, b"one")
    assert (upstream.stats.open, upstream.stats.finished) == (1, 0), "nginx held the answer back"
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
    stats = upstream.wait_for(lambda s: s.open == 0, timeout=3)
    assert stats.cancelled == 1
