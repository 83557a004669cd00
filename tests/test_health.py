"""``healthz`` and ``readyz``: the process is up; the upstream and Redis (when configured) answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from flask_chatstream import _health
from flask_chatstream.testing import Script, StandInServer

from .conftest import AppFactory, eventually
from .servers import RedisServer, free_port


def test_healthz_says_the_process_is_up(make_app: AppFactory, upstream: StandInServer) -> None:
    upstream.script = Script(status=401)  # nothing but the process counts
    response = make_app().test_client().get("/api/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_asks_the_upstream_and_keeps_the_answer(make_app: AppFactory, upstream: StandInServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_app().test_client()
    response = client.get("/api/readyz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ready", "checks": {"upstream": "ok",
                                                                                              "state": "ok"}})
    upstream.script = Script(status=401)
    assert client.get("/api/readyz").status_code == 200  # the answer is kept a few seconds
    monkeypatch.setattr(_health, "CACHE", 0.0)
    response = client.get("/api/readyz")
    assert (response.status_code, response.get_json()) == (503, {"status": "not_ready",
                                                                 "checks": {"upstream": "upstream_auth", "state": "ok"}})
    upstream.script = Script(status=429)  # busy, but there: chats would be retried or refused one by one
    assert client.get("/api/readyz").status_code == 200


def test_readyz_with_an_upstream_nobody_listens_on(make_app: AppFactory) -> None:
    client = make_app(base_url=f"http://127.0.0.1:{free_port()}/v1").test_client()
    response = client.get("/api/readyz")
    assert (response.status_code, response.get_json()["checks"]) == (503, {"upstream": "upstream_unavailable",
                                                                           "state": "ok"})


@pytest.mark.redis
def test_readyz_pings_redis_when_configured(make_app: AppFactory, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_health, "CACHE", 0.0)
    with RedisServer(tmp_path) as redis:
        client = make_app(redis_url=redis.url).test_client()
        assert client.get("/api/readyz").get_json()["checks"] == {"upstream": "ok", "redis": "ok"}
        redis.stop()
        response = client.get("/api/readyz")
        assert (response.status_code, response.get_json()["checks"]) == (503, {"upstream": "ok", "redis": "unavailable"})


def test_readyz_says_when_the_state_file_cannot_be_read(make_app: AppFactory, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's state file (stops, resumes and caps across workers) counts: garbage in it is not
    ready, with one warning and no traceback, until the writer has started it afresh."""
    monkeypatch.setattr(_health, "CACHE", 0.0)
    path = tmp_path / "state.sqlite3"
    client = make_app(state_path=str(path)).test_client()
    assert client.get("/api/readyz").get_json()["checks"] == {"upstream": "ok", "state": "ok"}
    client.get("/api/readyz")
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    path.write_bytes(b"this is not a database" * 1000)
    response = client.get("/api/readyz")
    assert (response.status_code, response.get_json()["checks"]) == (503, {"upstream": "ok", "state": "unavailable"})
    # A resumable chat writes (this worker's writer starts): the writer finds the file damaged and makes
    # it again, and the state is ready again.
    resumable = make_app(state_path=str(path), resumable=True).test_client()
    assert resumable.post("/api/chat", json={"content": "hi"}).status_code == 200
    eventually(lambda: client.get("/api/readyz").get_json()["checks"], lambda c: c == {"upstream": "ok", "state": "ok"})
    assert path.with_name(path.name + ".broken").read_bytes().startswith(b"this is not a database")
