"""Who may touch a stream (the third attack round): a chat id names a stream per client, since clients
pick their own chat ids; a stream id belongs to the blueprint that made it, since an app may mount two,
each with its own hooks and ``may_resume``."""

from __future__ import annotations

import asyncio
import http.client
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from flask import Flask, request

from flask_chatstream import create_blueprint
from flask_chatstream._stream.registry import stream_tag, worker_number
from flask_chatstream._resume import machine
from flask_chatstream._errors import StreamAborted
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, AppFactory
from .servers import Gunicorn, RedisServer
from .streams import read_until
from .test_resume import APP, env, start

REPLY = "one two three four five six"


@pytest.fixture
def held(upstream: StandInServer) -> StandInServer:
    upstream.scripts["held"] = Script(reply=REPLY, hold_after=2)
    return upstream


@pytest.fixture(params=["sqlite", "redis"])
def server(request: pytest.FixtureRequest, _standin: StandInServer, tmp_path: Path) -> Iterator[Gunicorn]:
    """The resume app on two gevent workers sharing the machine's state file, or on Redis."""
    if request.param == "sqlite":
        with Gunicorn(APP, env=env(_standin), workers=2) as gunicorn:
            yield gunicorn
        return
    with RedisServer(tmp_path) as redis_server, Gunicorn(APP, env=env(_standin, redis_server.url)) as gunicorn:
        yield gunicorn


def chat_body(chat_id: str) -> dict[str, object]:
    return {"id": chat_id, "model": "held", "trigger": "submit-message",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}


def resumed_id(port: int, chat_id: str, user: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/api/chat/{chat_id}/stream", headers={"X-User": user})
    response = conn.getresponse()
    stream_id = response.getheader("X-Chat-Stream-Id")
    conn.close()
    return response.status, stream_id


@pytest.mark.redis
@pytest.mark.server
def test_a_stranger_with_the_same_chat_id_cannot_hide_a_running_answer(server: Gunicorn, held: StandInServer) -> None:
    """Mallory starts a stream under Ada's chat id, after hers: Ada's resume (useChat's, on reload) still
    finds her own answer, and Mallory's finds Mallory's."""
    ada_conn, ada = start(server.port, "ui", "ada", chat_body("chat-of-ada"))
    read_until(ada, b"two")
    mallory_conn, mallory = start(server.port, "ui", "mallory", chat_body("chat-of-ada"))
    read_until(mallory, b"two")
    assert resumed_id(server.port, "chat-of-ada", "ada") == (200, ada.getheader("X-Chat-Stream-Id"))
    assert resumed_id(server.port, "chat-of-ada", "mallory") == (200, mallory.getheader("X-Chat-Stream-Id"))
    assert resumed_id(server.port, "chat-of-ada", "eve")[0] == 204
    held.release()
    for conn, response in ((ada_conn, ada), (mallory_conn, mallory)):
        response.read()
        conn.close()


def two_blueprints(upstream: StandInServer, instance: Path, state_path: str | None) -> Flask:
    """``/api`` lets only a stream's own client read or stop it; ``/b`` lets anyone read anything."""
    app = Flask(__name__, instance_path=str(instance))
    options = {"api_key": API_KEY, "base_url": upstream.url, "max_retries": 0, "resumable": True,
               "client_key": lambda: request.headers.get("X-User", "anonymous"),
               **({"state_path": state_path} if state_path else {})}
    app.register_blueprint(create_blueprint("api", **options), url_prefix="/api")  # type: ignore[arg-type]
    lax = create_blueprint("b", **options)  # type: ignore[arg-type]
    lax.may_resume(lambda stream_id, owner: True)
    app.register_blueprint(lax, url_prefix="/b")
    return app


@pytest.mark.parametrize("state_path", [None, ":memory:"], ids=["state-file", "in-process"])
def test_a_blueprint_cannot_reach_another_blueprints_streams(upstream: StandInServer, tmp_path: Path,
                                                             state_path: str | None) -> None:
    """A stream of /api is not found at /b, whose hooks would let anyone read or stop it."""
    upstream.script = Script(reply=REPLY, hold_after=2)
    client = two_blueprints(upstream, tmp_path, state_path).test_client()
    headers = {"X-User": "ada"}
    response = client.post("/api/chat?format=ndjson", json={"content": "hi"}, headers=headers, buffered=False)
    stream_id = response.headers["X-Chat-Stream-Id"]
    chunks, received = iter(response.response), b""
    while b"two" not in received:
        received += next(chunks)
    for method, path in (("POST", f"/b/chat/{stream_id}/stop"), ("GET", f"/b/chat/{stream_id}?format=ndjson")):
        refused = client.open(path, method=method, headers=headers)
        assert refused.status_code == 404 and refused.json["error"]["code"] == "stream_not_found", path
    assert upstream.stats.cancelled == 0
    assert client.post(f"/api/chat/{stream_id}/stop", headers=headers).status_code == 204  # its own still can
    with pytest.raises(StreamAborted):  # NDJSON ends a stopped stream cut, so it never looks whole
        b"".join(chunks)
    response.close()
    assert upstream.wait_for(lambda stats: stats.open == 0).cancelled == 1


def test_a_stop_for_a_stream_nobody_runs_is_answered_at_once(make_app: AppFactory, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The id names the worker that would run it: one that names no worker of the blueprint, or this
    worker (whose registry the view looked in), is a 404 without asking anyone. (With STOP_WAIT made an
    hour, a stop that waited to be taken would hang the thread.)"""
    monkeypatch.setattr(machine, "STOP_WAIT", 3600.0)
    client = make_app(state_path=str(tmp_path / "state.sqlite3")).test_client()
    client.post("/api/chat", json={"content": "hi"})  # this worker serves the blueprint now
    tag = stream_tag("chatstream")
    ids = [tag + "fffffe" + "0" * 18, tag + f"{worker_number(os.getpid()):06x}" + "1" * 18, "0" * 32, "not-ours"]
    answers: list[tuple[int, str]] = []

    def stop_each() -> None:
        for stream_id in ids:
            response = client.post(f"/api/chat/{stream_id}/stop")
            answers.append((response.status_code, response.get_json()["error"]["code"]))

    thread = threading.Thread(target=stop_each, daemon=True)
    thread.start()
    thread.join(60)
    assert answers == [(404, "stream_not_found")] * len(ids)


@pytest.mark.server
def test_stops_for_random_ids_are_404_and_a_real_one_still_lands(upstream: StandInServer) -> None:
    """250 stops at once for ids nobody runs, beside a stream on one of two workers: every stop is a
    404, and the real stream's stop, from whichever worker takes it, is a 204 that stops the model."""
    upstream.scripts["held"] = Script(reply=REPLY, hold_after=2)
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url, "CHATSTREAM_ALLOWED_MODELS": "held",
           "CHATSTREAM_ON_CLIENT_LEAVE": "stop", "WORKER_CONNECTIONS": "1000"}
    with Gunicorn("tests.resume_app:app", env=env, workers=2) as server:
        conn, response = start(server.port, "ndjson", "ada", {"content": "hi", "model": "held"})
        read_until(response, b"two")
        stream_id = str(response.getheader("X-Chat-Stream-Id"))
        tag = stream_id[:8]
        strangers = [tag + f"{worker_number(pid):06x}" + uuid.uuid4().hex[:18]
                     for pid in [*server.worker_pids(), 0xFFFFFE] * 50] + [uuid.uuid4().hex for _ in range(100)]

        async def stop_all() -> list[int]:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                async def one(stream: str) -> int:
                    async with session.post(f"{server.url}/api/chat/{stream}/stop", headers={"X-User": "ada"}) as r:
                        return r.status
                return list(await asyncio.gather(*(one(s) for s in strangers)))

        assert asyncio.run(stop_all()) == [404] * len(strangers)
        assert upstream.stats.cancelled == 0
        stop = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        stop.request("POST", f"/api/chat/{stream_id}/stop", headers={"X-User": "ada"})
        assert stop.getresponse().status == 204
        stop.close()
        assert upstream.wait_for(lambda stats: stats.open == 0).cancelled == 1
        conn.close()
