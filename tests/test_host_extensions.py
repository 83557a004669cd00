"""The blueprint inside host apps that run the extensions people use: Flask-Compress, Flask-Login,
Flask-WTF, Flask-Limiter, Flask-CORS, Flask-SQLAlchemy, ProxyFix, WSGI middleware, and host hooks that
read the body. The real packages from PyPI; the recipes in examples/recipes are the code under test."""

from __future__ import annotations

import importlib.util
import json
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import openai
import pytest
from flask import Flask, Response, abort, current_app, g, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.middleware.lint import LintMiddleware

from flask_chatstream import create_blueprint
from flask_chatstream._blueprint.responses import StreamResponse
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, hooked_app
from .servers import ROOT, Gunicorn
from .streams import HELD_REPLY, answer_of, check_event_stream, ndjson_events, post_chat, read_until, streams_while_held

RECIPES = ROOT / "examples" / "recipes"
BROWSER_ENCODINGS = "gzip, deflate, br, zstd"


def finish(upstream: StandInServer, responses: list[Response]) -> None:
    """Let held streams end, and read each to its end, as their clients would."""
    upstream.release()
    for response in responses:
        b"".join(response.response)
        response.close()


def recipe(name: str) -> ModuleType:
    """A fresh import of examples/recipes/<name>.py (its module-level blueprint is new each time)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}_{uuid.uuid4().hex}", RECIPES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- Flask-Compress, and whatever else wraps the body ------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_flask_compress_defaults_leave_every_format_streaming(upstream: StandInServer, fmt: str,
                                                              caplog: pytest.LogCaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StreamResponse, "warned_encoding", False)
    app = upstream.attach(recipe("compress").create_app(upstream.config))
    response = streams_while_held(app.test_client(), upstream, fmt,
                                                   {"Accept-Encoding": BROWSER_ENCODINGS})
    assert "Content-Encoding" not in response.headers
    warnings = [r.getMessage() for r in caplog.records if "Content-Encoding" in r.getMessage()]
    if fmt == "text":  # the one of the three in Flask-Compress's default COMPRESS_MIMETYPES
        assert len(warnings) == 1 and "Flask-Compress" in warnings[0] and "COMPRESS_STREAMS" in warnings[0]
    else:
        assert warnings == []
    # Everything else is still compressed: the client script, say.
    script = app.test_client().get("/api/chatstream.js", headers={"Accept-Encoding": BROWSER_ENCODINGS})
    assert script.headers["Content-Encoding"] == "zstd"


def test_flask_compress_told_to_leave_streams_alone_warns_nothing(upstream: StandInServer,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StreamResponse, "warned_encoding", False)
    app = upstream.attach(recipe("compress").create_app({**upstream.config, "COMPRESS_STREAMS": False}))
    streams_while_held(app.test_client(), upstream, "text", {"Accept-Encoding": BROWSER_ENCODINGS})
    assert not [r for r in caplog.records if "Content-Encoding" in r.getMessage()]


@pytest.mark.server
def test_flask_compress_under_gunicorn_streams_text_to_a_browser(upstream: StandInServer) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url, "CHATSTREAM_MAX_RETRIES": "0"}
    upstream.script = Script(reply=HELD_REPLY, hold_after=3)
    with Gunicorn("compress:create_app()", env=env, extra_args=["--pythonpath", str(RECIPES)]) as server:
        conn, response = post_chat(server.port, "text", headers={"Accept-Encoding": BROWSER_ENCODINGS})
        assert response.status == 200 and response.getheader("Content-Encoding") is None
        read_until(response, b"one")
        assert upstream.stats.finished == 0
        upstream.release()
        assert response.read().endswith(b"six")
        conn.close()
        log = server.log()
    assert "Traceback" not in log and "outcome=done" in log and "Flask-Compress" in log


def test_an_after_request_that_wraps_the_body_still_streams_and_closes(upstream: StandInServer) -> None:
    app, _, results = hooked_app(upstream)
    counted: list[int] = []

    @app.after_request
    def count_bytes(response: Response) -> Response:
        if response.is_streamed:
            inner = response.response

            def counting() -> Iterator[bytes]:
                for chunk in inner:  # a plain generator: its close() does not reach what it wraps
                    counted.append(len(chunk))
                    yield chunk

            response.response = counting()
        return response

    streams_while_held(app.test_client(), upstream, "ndjson")
    assert sum(counted) > 0
    # A client that leaves mid-answer: the wrapper is closed, and the relay with it.
    upstream.wait_for(lambda s: s.open == 0)
    upstream.reset()
    upstream.script = Script(reply=HELD_REPLY, hold_after=1)
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"}, buffered=False)
    next(iter(response.response))
    response.close()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)
    assert [r.outcome for r in results] == ["done", "client_left"]


@pytest.mark.parametrize("fmt", ["text", "sse"])
def test_wsgi_middleware_that_wraps_the_iterable_streams(upstream: StandInServer, fmt: str) -> None:
    app, _, _ = hooked_app(upstream)
    app.wsgi_app = LintMiddleware(app.wsgi_app)  # type: ignore[method-assign]  # checks PEP 3333 as it wraps
    streams_while_held(app.test_client(), upstream, fmt)


# ---- the body, read by the host first ------------------------------------------------------------------


def test_a_host_before_request_that_reads_the_body_leaves_the_chat_working(upstream: StandInServer) -> None:
    audited: list[Any] = []
    app = Flask(__name__)

    @app.before_request  # registered before the blueprint: it still runs after the body is read
    def audit_log() -> None:
        audited.append(request.get_json(silent=True))

    app.register_blueprint(create_blueprint(api_key=API_KEY, base_url=upstream.url, max_retries=0),
                           url_prefix="/api")

    @app.before_request  # and one registered after it
    def limiter_key() -> None:
        audited.append(request.get_data(as_text=True))

    upstream.script = Script(reply="read twice, answered once")
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"})
    assert response.status_code == 200
    assert answer_of(ndjson_events(response.data)) == "read twice, answered once"
    assert audited == [{"content": "hi"}, '{"content": "hi"}']
    assert upstream.stats.bodies[-1]["messages"][-1]["content"] == "hi"


def test_a_body_the_host_read_before_the_blueprint_could_is_used_within_the_size_limit(
        upstream: StandInServer) -> None:
    app, _, _ = hooked_app(upstream, max_body_bytes=200)

    def read_first() -> None:
        request.get_json(silent=True)

    app.before_request_funcs[None].insert(0, read_first)  # ahead of the blueprint's own reader
    client = app.test_client()
    assert client.post("/api/chat", json={"content": "hi"}).status_code == 200
    refused = client.post("/api/chat", json={"content": "x" * 300})
    assert refused.status_code == 413 and refused.json["error"]["code"] == "request_too_large"
    assert upstream.stats.requests == 1


def test_the_size_limit_holds_before_the_hosts_hooks_see_the_body(upstream: StandInServer) -> None:
    app, _, _ = hooked_app(upstream, max_body_bytes=200)
    seen: list[Any] = []
    app.before_request(lambda: seen.append(request.get_json(silent=True)))
    refused = app.test_client().post("/api/chat", json={"content": "x" * 300})
    assert refused.status_code == 413 and refused.json["error"]["code"] == "request_too_large"
    assert seen == [] and upstream.stats.requests == 0


@pytest.mark.server
def test_the_body_timeout_holds_when_a_host_hook_reads_the_body(upstream: StandInServer) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url, "CHATSTREAM_BODY_TIMEOUT": "1"}
    with Gunicorn("tests.audit_app:app", env=env) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
        sock.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(body)["error"]["code"] == "request_timeout"
        # A whole body, read by the host's audit hook first, still chats.
        conn, response = post_chat(server.port, "ndjson", {"content": "audited"})
        assert response.status == 200 and check_event_stream(ndjson_events(response.read()))["type"] == "done"
        conn.close()
        assert "audited chat body: {'content': 'audited'}" in server.log()
    assert upstream.stats.requests == 1


# ---- tools inside the Flask context --------------------------------------------------------------------


def test_tools_run_in_the_apps_context_each_with_its_own_g(upstream: StandInServer) -> None:
    app, blueprint, results = hooked_app(upstream)
    app.config["SHOP_NAME"] = "Corner Shop"

    @blueprint.tool
    def whoami(tag: str) -> dict[str, Any]:
        """Where the tool runs."""
        assert not hasattr(g, "tag")  # each call has a g of its own
        g.tag = tag
        return {"shop": current_app.config["SHOP_NAME"], "path": request.path, "tag": g.tag,
                "header": request.headers.get("X-Shop-Token")}

    upstream.script = Script(reply="ok", tool_calls=[{"name": "whoami", "arguments": {"tag": "a"}},
                                                     {"name": "whoami", "arguments": {"tag": "b"}}])
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"},
                                      headers={"X-Shop-Token": "t0k"})
    outputs = [e["output"] for e in ndjson_events(response.data) if e["type"] == "tool_result"]
    response.close()
    assert outputs == [{"shop": "Corner Shop", "path": "/api/chat", "tag": tag, "header": "t0k"} for tag in "ab"]
    assert results[0].outcome == "done"


@pytest.mark.server
def test_a_tool_querying_flask_sqlalchemy_under_gunicorn_with_parallel_calls(upstream: StandInServer,
                                                                             tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url, "CHATSTREAM_MAX_RETRIES": "0"}
    factory = f"tools_sqlalchemy:create_app({{'SQLALCHEMY_DATABASE_URI': 'sqlite:///{database}'}})"
    with Gunicorn(factory, env=env, extra_args=["--pythonpath", str(RECIPES)]) as server:
        conn, response = post_chat(server.port, "text", {"content": "warm"})  # the worker has created the tables
        assert response.status == 200 and response.read()
        conn.close()
        with sqlite3.connect(database) as db:
            db.executemany("INSERT INTO product (name, stock) VALUES (?, ?)", [("tea", 7), ("coffee", 0)])

        def summary(messages: Any) -> str:
            return " | ".join(m["content"] for m in messages if m["role"] == "tool")

        upstream.script = Script(reply=summary, tool_calls=[
            {"name": "stock_of", "arguments": {"product": "tea"}},
            {"name": "stock_of", "arguments": {"product": "coffee"}},
            {"name": "stock_of", "arguments": {"product": "cake"}},
        ])
        conn, response = post_chat(server.port, "ndjson", {"content": "What is in stock?"}, timeout=30)
        events = ndjson_events(response.read())
        conn.close()
        log = server.log()
    assert check_event_stream(events)["type"] == "done"
    results = {e["id"]: e for e in events if e["type"] == "tool_result"}
    assert [r.get("output", r.get("error")) for r in results.values()] == [
        {"product": "tea", "stock": 7}, {"product": "coffee", "stock": 0}, "There is no product called 'cake'."]
    assert '{"product":"tea","stock":7}' in answer_of(events)
    assert "Working outside of application context" not in log and "Traceback" not in log


# ---- errors from the host's extensions, in the blueprint's JSON shape --------------------------------


def test_flask_login_401_is_json_and_the_user_is_the_client(upstream: StandInServer) -> None:
    login = recipe("login")
    app = upstream.attach(login.create_app(upstream.config))
    client = app.test_client()
    refused = client.post("/api/chat", json={"content": "hi"})
    assert (refused.status_code, refused.mimetype) == (401, "application/json")
    assert refused.json["error"]["code"] == "unauthorized"
    assert client.post("/api/chat/abc/stop").status_code == 401  # every route of the blueprint
    assert upstream.stats.requests == 0
    assert client.post("/login", data={"name": "ada"}).status_code == 204
    upstream.script = Script(reply="Hello Ada")
    response = client.post("/api/chat", json={"content": "hi"})
    assert (response.status_code, response.data) == (200, b"Hello Ada")
    response.close()  # the server closes the body after the last byte: then after_stream runs
    assert login.saved == [("ada", "Hello Ada")]
    # The cap counts per user, not per address: a held stream of Ada's and one of Bob's from the same address.
    upstream.script = Script(reply=HELD_REPLY, hold_after=1)
    held = [client.post("/api/chat", json={"content": "hi"}, buffered=False) for _ in range(2)]
    assert client.post("/api/chat", json={"content": "hi"}).status_code == 429
    bob = app.test_client()
    bob.post("/login", data={"name": "bob"})
    other = bob.post("/api/chat", json={"content": "hi"}, buffered=False)
    assert other.status_code == 200
    finish(upstream, [*held, other])


def test_a_www_authenticate_challenge_and_a_custom_response_are_kept(upstream: StandInServer) -> None:
    blueprint = create_blueprint(api_key=API_KEY, base_url=upstream.url)

    @blueprint.before_request
    def token_only() -> None:
        if request.headers.get("Authorization") is None:
            abort(401, www_authenticate=WWWAuthenticate("bearer", {"realm": "chat"}))
        if request.headers["Authorization"] == "Bearer teapot":
            abort(Response("short and stout", status=418))

    app = Flask(__name__)
    app.register_blueprint(blueprint, url_prefix="/api")
    client = app.test_client()
    refused = client.post("/api/chat", json={"content": "hi"})
    assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized"
    assert refused.headers["WWW-Authenticate"].replace('"', '') == "Bearer realm=chat"
    teapot = client.post("/api/chat", json={"content": "hi"}, headers={"Authorization": "Bearer teapot"})
    assert (teapot.status_code, teapot.data) == (418, b"short and stout")


def test_flask_wtf_csrf_400_is_json_and_the_header_token_passes(upstream: StandInServer) -> None:
    csrf = recipe("csrf")
    app = upstream.attach(csrf.create_app(upstream.config))
    client = app.test_client()
    refused = client.post("/api/chat", json={"content": "hi"})
    assert (refused.status_code, refused.mimetype) == (400, "application/json")
    assert refused.json["error"] == {"code": "csrf_error", "message": "The CSRF token is missing."}
    page = client.get("/").get_data(as_text=True)
    token = page.split('content="', 1)[1].split('"', 1)[0]
    upstream.script = Script(reply="protected")
    response = client.post("/api/chat", json={"content": "hi"}, headers={"X-CSRFToken": token})
    assert (response.status_code, response.data) == (200, b"protected")
    assert upstream.stats.requests == 1


def test_csrf_exempt_blueprint(upstream: StandInServer) -> None:
    csrf = recipe("csrf")
    csrf.csrf.exempt(csrf.chat)
    app = upstream.attach(csrf.create_app(upstream.config))
    assert app.test_client().post("/api/chat", json={"content": "hi"}).status_code == 200


def test_flask_limiter_429_is_json_with_retry_after(upstream: StandInServer) -> None:
    app = upstream.attach(recipe("limiter").create_app(upstream.config))
    client = app.test_client()
    assert [client.post("/api/chat", json={"content": "hi"}).status_code for _ in range(3)] == [200] * 3
    refused = client.post("/api/chat", json={"content": "hi"})
    assert (refused.status_code, refused.mimetype) == (429, "application/json")
    assert refused.json["error"] == {"code": "rate_limit_exceeded", "message": "3 per 1 minute"}
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert upstream.stats.requests == 3


def test_cors_responses_expose_the_stream_id_and_preflights_pass(upstream: StandInServer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGE_ORIGIN", "http://127.0.0.1:5173")
    app = upstream.attach(recipe("cors").create_app(upstream.config))
    client = app.test_client()
    origin = {"Origin": "http://127.0.0.1:5173"}
    response = client.post("/api/chat?format=ndjson", json={"content": "hi"}, headers=origin)
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-Chat-Stream-Id" in response.headers["Access-Control-Expose-Headers"].split(", ")
    for path in ("/api/chat", "/api/chat/abc/stop", "/api/chat/abc"):
        preflight = client.options(path, headers={**origin, "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "content-type, x-csrftoken"})
        assert preflight.status_code in (200, 204), (path, preflight.status_code)
        assert preflight.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    # Without a CORS extension, nothing is added.
    plain, _, _ = hooked_app(upstream)
    assert "Access-Control-Expose-Headers" not in plain.test_client().post("/api/chat", json={"content": "hi"},
                                                                          headers=origin).headers


def test_proxy_fix_makes_the_cap_per_real_client(upstream: StandInServer) -> None:
    app = upstream.attach(recipe("proxy_fix").create_app(upstream.config))
    client = app.test_client()
    upstream.script = Script(reply=HELD_REPLY, hold_after=1)
    ada = client.post("/api/chat", json={"content": "hi"}, headers={"X-Forwarded-For": "203.0.113.1"}, buffered=False)
    bob = client.post("/api/chat", json={"content": "hi"}, headers={"X-Forwarded-For": "203.0.113.2"}, buffered=False)
    again = client.post("/api/chat", json={"content": "hi"}, headers={"X-Forwarded-For": "203.0.113.1"})
    assert (ada.status_code, bob.status_code, again.status_code) == (200, 200, 429)
    finish(upstream, [ada, bob])


# ---- configuration in host apps ----------------------------------------------------------------------


def test_an_app_factory_with_prefixed_env_and_per_blueprint_keys(upstream: StandInServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    factory = recipe("factory")
    monkeypatch.setenv("FLASK_CHATSTREAM_MODEL", "from-the-environment")
    monkeypatch.setenv("FLASK_CHATSTREAM_MAX_TOKENS", "64")
    apps = [upstream.attach(factory.create_app({**upstream.config, "CHATSTREAM_SUPPORT_MODEL": f"support-{n}"})) for n in (1, 2)]
    for n, app in enumerate(apps, 1):
        client = app.test_client()
        assert client.post("/api/chat", json={"content": "hi"}).status_code == 200
        assert client.post("/support/chat", json={"content": "hi"}).status_code == 200
        chat, support = list(upstream.stats.bodies)[-2:]
        assert (chat["model"], chat["max_completion_tokens"]) == ("from-the-environment", 64)
        assert (support["model"], support["max_completion_tokens"]) == (f"support-{n}", 64)
        assert support["messages"][0] == {"role": "system", "content": "You answer questions about our product."}


def test_async_openai_is_refused_at_startup_with_the_fix() -> None:
    with pytest.raises(TypeError, match=r"synchronous openai\.OpenAI.*not AsyncOpenAI"):
        create_blueprint(client=openai.AsyncOpenAI(api_key="k"))
    with pytest.raises(TypeError, match="takes an openai.OpenAI, not dict"):
        create_blueprint(client={"api_key": "k"})  # type: ignore[arg-type]
