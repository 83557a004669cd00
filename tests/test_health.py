"""``healthz`` and ``readyz``: the process is up; the upstream and Redis (when configured) answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from flask_chatstream import _health
from flask_chatstream.testing import Script, StandInServer

from .conftest import AppFactory
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
    assert (response.status_code, response.get_json()) == (200, {"status": "ready", "checks": {"upstream": "ok"}})
    upstream.script = Script(status=401)
    assert client.get("/api/readyz").status_code == 200  # the answer is kept a few seconds
    monkeypatch.setattr(_health, "CACHE", 0.0)
    response = client.get("/api/readyz")
    assert (response.status_code, response.get_json()) == (503, {"status": "not_ready",
                                                                 "checks": {"upstream": "upstream_auth"}})
    upstream.script = Script(status=429)  # busy, but there: chats would be retried or refused one by one
    assert client.get("/api/readyz").status_code == 200


def test_readyz_with_an_upstream_nobody_listens_on(make_app: AppFactory) -> None:
    client = make_app(base_url=f"http://127.0.0.1:{free_port()}/v1").test_client()
    response = client.get("/api/readyz")
    assert (response.status_code, response.get_json()["checks"]) == (503, {"upstream": "upstream_unavailable"})


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
