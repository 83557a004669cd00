"""The networks people run behind: a forward proxy that every request must go through (Debian's
tinyproxy, started here), and TLS from a certificate authority of their own (made here with trustme).
Proxies are taken from the environment as httpx's ``trust_env`` takes them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, SESSION_LOG, AppFactory
from .servers import Gunicorn, Tinyproxy
from .streams import answer_of, check_event_stream, events_of, post_chat, streams_while_held

pytestmark = [pytest.mark.proxy, pytest.mark.server]

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")
REPLY = "through the proxy"


@pytest.fixture(autouse=True)
def _no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the variables it is about, and only those (in both spellings urllib reads)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    with Tinyproxy(tmp_path_factory.mktemp("proxy")) as server:
        yield server


def chats(make_app: AppFactory, count: int, **options: object) -> None:
    client = make_app(**options).test_client()
    for _ in range(count):
        response = client.post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=False)
        events = events_of("ndjson", b"".join(response.response))
        response.close()
        assert answer_of(events) == REPLY and check_event_stream(events)["type"] == "done", events


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_an_http_upstream_goes_through_the_proxy(make_app: AppFactory, upstream: StandInServer, proxy: Tinyproxy,
                                                 monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, proxy.url)
    before = len(proxy.requests())
    upstream.script = Script(reply=REPLY)
    chats(make_app, 3)
    assert proxy.requests()[before:] == [f"POST {upstream.url}/chat/completions"] * 3
    assert upstream.stats.requests == 3  # every request the upstream got came through the proxy
    # Every stream over, before the reset. (Not "finished": after the answer's last event the relay
    # waits FINISH_WAIT for the rest of an SDK response's body, and through a proxy on a loaded
    # machine that can run out, which the stand-in counts as a cancel.)
    upstream.wait_for(lambda s: s.open == 0)
    upstream.reset()
    streams_while_held(make_app().test_client(), upstream, "ndjson")  # and it streams, chunk by chunk
    assert len(proxy.requests()) == before + 4


def test_an_https_upstream_is_tunnelled_through_the_proxy(make_app: AppFactory, tls: StandInServer, proxy: Tinyproxy,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    before = len(proxy.requests())
    tls.script = Script(reply=REPLY)
    chats(make_app, 3, base_url=tls.url)
    tunnels = proxy.requests()[before:]
    assert tunnels and set(tunnels) == {f"CONNECT 127.0.0.1:{tls.port}"}
    stats = tls.wait_for(lambda s: s.open == 0)  # (not "finished": see above)
    assert stats.connections == len(tunnels)  # every connection the upstream accepted was a tunnel


def test_no_proxy_sends_an_upstream_past_the_proxy(make_app: AppFactory, upstream: StandInServer, proxy: Tinyproxy,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    before = len(proxy.requests())
    upstream.script = Script(reply=REPLY)
    chats(make_app, 3)
    assert proxy.requests()[before:] == []
    # our own transport again, which keeps the connection for the next request
    assert upstream.wait_for(lambda s: s.finished == 3).connections == 1


def test_an_https_proxy_variable_leaves_an_http_upstream_alone(make_app: AppFactory, upstream: StandInServer,
                                                               proxy: Tinyproxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    before = len(proxy.requests())
    upstream.script = Script(reply=REPLY)
    chats(make_app, 1)
    assert proxy.requests()[before:] == []


def test_stopping_a_stream_through_the_proxy_stops_the_upstream(make_app: AppFactory, upstream: StandInServer,
                                                                proxy: Tinyproxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    upstream.script = Script(reply="one two three four five six", hold_after=2)
    response = make_app().test_client().post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=False)
    chunks = iter(response.response)
    received = b""
    while b"two" not in received:
        received += next(chunks)
    response.close()  # the client is gone
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)


@pytest.fixture(scope="module")
def guarded_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    with Tinyproxy(tmp_path_factory.mktemp("guarded"), credentials="relay:proxy-secret-4711") as server:
        yield server


def test_proxy_credentials_in_the_url(make_app: AppFactory, upstream: StandInServer, guarded_proxy: Tinyproxy,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", guarded_proxy.url.replace("http://", "http://relay:proxy-secret-4711@"))
    upstream.script = Script(reply=REPLY)
    chats(make_app, 2)
    assert upstream.stats.requests == 2


def test_wrong_proxy_credentials_are_a_clear_error_without_them(make_app: AppFactory, upstream: StandInServer,
                                                                guarded_proxy: Tinyproxy,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", guarded_proxy.url.replace("http://", "http://relay:wrong-secret-0815@"))
    lines = len(SESSION_LOG.lines)
    response = make_app().test_client().post("/api/chat", json={"content": "hi"})
    # tinyproxy says 401 and resets the connection: whether the refusal's body is read first is a race
    assert response.status_code == 502
    assert response.get_json()["error"]["code"] in ("upstream_auth", "upstream_unavailable")
    assert upstream.stats.requests == 0
    assert "wrong-secret" not in response.get_data(as_text=True)
    assert not [line for line in SESSION_LOG.lines[lines:] if "wrong-secret" in line]


def test_a_proxy_under_gunicorn(upstream: StandInServer, proxy: Tinyproxy) -> None:
    before = len(proxy.requests())
    upstream.script = Script(reply=REPLY)
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url, "HTTP_PROXY": proxy.url}
    with Gunicorn(env=env) as server:
        for _ in range(2):
            conn, response = post_chat(server.port, "text", timeout=30)
            assert (response.status, response.read()) == (200, REPLY.encode())
            conn.close()
    assert proxy.requests()[before:] == [f"POST {upstream.url}/chat/completions"] * 2


# -- certificate authorities of one's own ------------------------------------------------------------

def test_ssl_cert_dir_is_trusted(make_app: AppFactory, tls: StandInServer, ca_file: str,
                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A directory of hashed certificates (``openssl rehash``), as corporate images ship them."""
    monkeypatch.delenv("SSL_CERT_FILE")
    shutil.copy(ca_file, tmp_path / "corporate-ca.pem")
    subprocess.run(["openssl", "rehash", str(tmp_path)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    tls.script = Script(reply=REPLY)
    chats(make_app, 2, base_url=tls.url)


def test_an_upstream_no_trusted_authority_signed_is_refused(make_app: AppFactory, tls: StandInServer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")
    response = make_app(base_url=tls.url).test_client().post("/api/chat", json={"content": "hi"})
    assert response.status_code == 502 and response.get_json()["error"]["code"] == "upstream_unavailable"
    assert tls.stats.requests == 0


def test_a_custom_client_verifies_with_its_own_context(make_app: AppFactory, tls: StandInServer, ca_file: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    monkeypatch.delenv("SSL_CERT_FILE")  # only the client's own context knows the authority
    client = openai.OpenAI(api_key=API_KEY, base_url=tls.url, max_retries=0,
                           http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=ca_file)))
    tls.script = Script(reply=REPLY)
    chats(make_app, 2, client=client)


def test_a_tunnel_to_an_upstream_of_ones_own_authority(make_app: AppFactory, tls: StandInServer, ca_file: str,
                                                       proxy: Tinyproxy, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """Proxy and private CA together, as behind a company's TLS inspection."""
    monkeypatch.delenv("SSL_CERT_FILE")
    shutil.copy(ca_file, tmp_path / "corporate-ca.pem")
    subprocess.run(["openssl", "rehash", str(tmp_path)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    before = len(proxy.requests())
    tls.script = Script(reply=REPLY)
    chats(make_app, 2, base_url=tls.url)
    assert set(proxy.requests()[before:]) == {f"CONNECT 127.0.0.1:{tls.port}"}
