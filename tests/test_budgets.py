"""Budgets per client (``token_budget``, ``@bp.token_budget``): refused before the upstream once spent,
never more than one answer past them however many requests come at once, across workers and
instances; what is left in the RateLimit fields. The stores' rule is ``_resume.ledger``'s."""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from flask_chatstream import ChatResult, create_blueprint
from flask_chatstream._budget import Budget, parse_budget
from flask_chatstream._resume.ledger import BUSY, IN, OUT, Ledger, MemoryLedger
from flask_chatstream._resume.machine import HostLedger
from flask_chatstream._resume.sqlite import open_store
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, eventually
from .servers import Gunicorn, RedisServer, stand_in_env

APP = "tests.budget_app:app"
REPLY = " ".join(f"w{i}" for i in range(20))
"""An answer of 20 words: the stand-in bills its words as tokens, 20 for the answer and 2 for the prompt."""
ANSWER = 22
BUDGET = 1000
"""Tokens a day, about 45 answers: 30 clients at once reach it within two rounds."""
PRICES = json.dumps({"gpt-4o-mini": {"input": 1.0, "output": 1.0}})
"""A dollar per million tokens either way: a budget of $0.001 is 1,000 tokens."""


# -- the ledger's rule, in each store --------------------------------------------------------------


def ledgers(tmp_path: Path) -> Iterator[Ledger]:
    yield MemoryLedger()
    store = open_store(tmp_path / "state.sqlite3", "api")
    assert store is not None
    yield HostLedger(store)


def test_the_rule_lets_in_while_spent_and_held_are_under_the_budget(tmp_path: Path) -> None:
    budget = Budget(100, False, 3600, "100/hour")
    now = 7200.5
    for ledger in ledgers(tmp_path):
        first = ledger.take("alice", budget, 60, now)
        second = ledger.take("alice", budget, 60, now)  # 60 held < 100: in, though both may reach 120
        assert (first.verdict, second.verdict) == (IN, IN)
        assert ledger.take("alice", budget, 60, now).verdict == BUSY  # 120 held: wait for them
        assert ledger.take("bob", budget, 60, now).verdict == IN  # another client's own
        ledger.settle("alice", budget, first, 30)
        third = ledger.take("alice", budget, 60, now)  # 30 spent + 60 held
        assert (third.verdict, third.spent) == (IN, 30)
        assert ledger.take("alice", budget, 60, now).verdict == BUSY  # 30 spent + 120 held
        ledger.settle("alice", budget, second, 75)
        out = ledger.take("alice", budget, 60, now)
        assert (out.verdict, out.spent) == (OUT, 105)  # spent: refused until the next window
        ledger.settle("alice", budget, third, 0)
        assert ledger.take("alice", budget, 60, now + 3600).verdict == IN


def test_a_dead_workers_lease_is_dropped(tmp_path: Path) -> None:
    """A worker killed mid-answer leaves its lease in the state file; the next worker to ask drops it."""
    store = open_store(tmp_path / "state.sqlite3", "api")
    assert store is not None
    other = open_store(tmp_path / "state.sqlite3", "api")  # as another worker opens it
    assert other is not None
    budget = Budget(100, False, 3600, "100/hour")
    assert HostLedger(store).take("alice", budget, 150, 10.0).verdict == IN
    assert HostLedger(other).take("alice", budget, 50, 10.0).verdict == BUSY  # the other one holds 150
    store.query(lambda c: c.execute("UPDATE leases SET pid = 2147480000"))  # no such process
    assert HostLedger(other).take("alice", budget, 50, 10.0).verdict == IN


def test_a_lease_lets_a_worker_in_without_the_store_and_gives_back_what_it_does_not_use(tmp_path: Path) -> None:
    """Far from its budget a client's worker takes room for more answers at once; what they cost reaches
    the store in the writer's rounds, and the room left goes back once the worker is idle."""
    from flask_chatstream._resume import machine

    store = open_store(tmp_path / "state.sqlite3", "api")
    assert store is not None
    budget, now = Budget(10_000, False, 3600, "10000/hour"), time.time()
    ledger = HostLedger(store)
    first = ledger.take("alice", budget, 100, now)
    writes = store.query(lambda c: c.execute("SELECT amount FROM leases").fetchall())
    assert first.verdict == IN and writes == [(100 * (1 + machine.ROOM),)]
    for _ in range(machine.ROOM):  # in, from the lease: the store is not asked
        taken = ledger.take("alice", budget, 100, now)
        assert taken.verdict == IN
        ledger.settle("alice", budget, taken, 40)
    ledger.settle("alice", budget, first, 40)
    spent = eventually(lambda: store.query(lambda c: c.execute("SELECT amount FROM spent").fetchall()),
                       lambda rows: rows == [(160.0,)])
    assert spent == [(160.0,)]
    eventually(lambda: store.query(lambda c: c.execute("SELECT amount FROM leases").fetchall()),
               lambda rows: rows == [(0.0,)], timeout=10)  # idle: given back


# -- the view, in one process ----------------------------------------------------------------------


def budget_app(upstream: StandInServer, **options: Any) -> tuple[Flask, list[ChatResult]]:
    app = Flask(__name__)
    blueprint = create_blueprint(api_key=API_KEY, base_url=upstream.url, max_retries=0, state_path=":memory:",
                                 client_key=lambda: request.headers.get("X-User", "anonymous"), **options)
    results: list[ChatResult] = []
    blueprint.after_stream(results.append)
    app.register_blueprint(blueprint, url_prefix="/api")
    return app, results


def chat(client: Any, user: str = "alice", **headers: str) -> Any:
    with client.post("/api/chat?format=ndjson", json={"content": "hello there"},
                     headers={"X-User": user, **headers}) as response:
        response.get_data()
    return response


def test_a_client_past_its_budget_is_refused_before_the_model_is_asked(upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY)
    app, results = budget_app(upstream, token_budget="100/day", max_tokens=40)
    client = app.test_client()
    statuses = [chat(client).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 200, 200, 429]  # 5 x 22 = 110: the fifth crossed it and was finished
    asked = upstream.stats.requests
    refused = chat(client)
    assert upstream.stats.requests == asked  # the upstream never saw it
    body = refused.get_json()
    assert refused.status_code == 429 and body["error"]["code"] == "budget_exceeded"
    assert "100/day" in body["error"]["message"]
    window_end = math.floor(time.time() / 86400) * 86400 + 86400
    assert 1 <= int(refused.headers["Retry-After"]) <= math.ceil(window_end - time.time()) + 1
    assert refused.headers["RateLimit-Policy"] == '"budget";q=100;w=86400;qu="tokens"'
    assert refused.headers["RateLimit"].startswith('"budget";r=0;t=')
    assert chat(client, "bob").status_code == 200  # another client is unaffected
    assert all(result.outcome == "done" for result in results)
    assert sum(r.usage["total_tokens"] for r in results if r.usage) == 6 * ANSWER


def test_every_chat_response_says_what_is_left(upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY)
    app, _ = budget_app(upstream, token_budget="1000/hour")
    client = app.test_client()
    first, second = chat(client), chat(client)
    assert first.headers["RateLimit-Policy"] == '"budget";q=1000;w=3600;qu="tokens"'
    left = [int(r.headers["RateLimit"].split("r=")[1].split(";")[0]) for r in (first, second)]
    assert left == [1000, 1000 - ANSWER]


def test_the_hook_gives_each_plan_its_budget(upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY)
    app, _ = budget_app(upstream, token_budget="30/day")
    blueprint = app.blueprints["chatstream"]

    @blueprint.token_budget  # type: ignore[attr-defined]
    def by_plan(chat_request: Any) -> str | None:
        assert chat_request.messages[-1]["content"] == "hello there"  # the request about to be sent
        return {"pro": None, "free": "10/day"}.get(request.headers.get("X-Plan", ""), "30/day")

    client = app.test_client()
    assert [chat(client, "pat", **{"X-Plan": "pro"}).status_code for _ in range(5)] == [200] * 5  # no limit
    assert [chat(client, "fay", **{"X-Plan": "free"}).status_code for _ in range(2)] == [200, 429]
    assert [chat(client, "sam").status_code for _ in range(3)] == [200, 200, 429]  # the setting


def test_a_bad_budget_from_the_hook_is_a_500_that_says_so_in_the_log(upstream: StandInServer,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    app, _ = budget_app(upstream)
    app.blueprints["chatstream"].token_budget(lambda chat_request: "lots")  # type: ignore[attr-defined]
    response = chat(app.test_client())
    assert response.status_code == 500 and response.get_json()["error"]["code"] == "internal_error"
    assert "The token_budget hook returned 'lots'" in caplog.text


def test_a_usd_budget_counts_the_answers_cost(upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY)
    app, results = budget_app(upstream, token_budget="0.0001 USD/day", prices=json.loads(PRICES))
    client = app.test_client()
    statuses = [chat(client).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 200, 200, 429]  # 100 tokens' worth, as above
    assert results[0].cost == pytest.approx(ANSWER / 1_000_000)
    refused = chat(client)
    assert refused.headers["RateLimit-Policy"] == '"budget";q=100;w=86400;qu="usd-micros"'


def test_budgets_fail_open_while_the_state_cannot_be_asked(upstream: StandInServer, caplog: pytest.LogCaptureFixture,
                                                           unused_port: int) -> None:
    upstream.script = Script(reply=REPLY)
    down = f"redis://127.0.0.1:{unused_port}/0"  # nothing listens there
    app, _ = budget_app(upstream, token_budget="10/day", redis_url=down, redis_timeout=0.2)
    client = app.test_client()
    assert [chat(client).status_code for _ in range(3)] == [200, 200, 200]
    assert caplog.text.count("requests go through uncounted") == 1
    closed, _ = budget_app(upstream, token_budget="10/day", redis_url=down, redis_timeout=0.2, budget_fail_closed=True)
    refused = chat(closed.test_client())
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "budget_unavailable"


@pytest.fixture
def unused_port() -> int:
    from .servers import free_port

    return free_port()


# -- many at once, across workers and instances ----------------------------------------------------


@dataclass
class Burst:
    """One client's 30 concurrent chats, each sent again as it ends, until the budget refuses them all."""

    statuses: list[int] = field(default_factory=list)
    first_refusal_spent: int | None = None
    """What the stand-in had billed the client when its first refusal came."""
    retry_after: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def post(port: int, user: str, plan: str | None = None) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/api/chat?format=ndjson", body=json.dumps({"content": "hello there"}),
                     headers={"Content-Type": "application/json", "X-User": user, **({"X-Plan": plan} if plan else {})})
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def burst(ports: list[int], upstream: StandInServer, user: str, clients: int = 30) -> Burst:
    seen = Burst()

    def one(index: int) -> None:
        port = ports[index % len(ports)]
        for _ in range(50):
            status, headers = post(port, user)
            with seen.lock:
                seen.statuses.append(status)
                if status == 429 and seen.first_refusal_spent is None:
                    seen.first_refusal_spent = upstream.stats.spent.get(user, 0)
            if status == 429:
                retry = int(headers["retry-after"])
                with seen.lock:
                    seen.retry_after.append(retry)
                if retry > 1:
                    return  # spent: refused until the window ends
            else:
                assert status == 200, status

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))
    return seen


def servers(kind: str, upstream: StandInServer, tmp_path: Path, **settings: str) -> Iterator[list[Gunicorn]]:
    env = {**stand_in_env(upstream.url, max_tokens="40", **settings), "TRIAL_BUDGET": "40/2 seconds"}
    if kind == "sqlite":
        with Gunicorn(APP, env=env, workers=3) as server:
            yield [server]
        return
    with RedisServer(tmp_path) as redis_server:
        fleet = {**env, "CHATSTREAM_REDIS_URL": redis_server.url}
        with Gunicorn(APP, env=fleet, workers=1) as one, Gunicorn(APP, env=fleet, workers=1) as two:
            yield [one, two]


KINDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]
UNITS = [pytest.param({"token_budget": f"{BUDGET}/day"}, id="tokens"),
         pytest.param({"token_budget": f"{BUDGET / 1_000_000:.6f} USD/day", "prices": PRICES}, id="usd")]


@pytest.mark.server
@pytest.mark.parametrize("settings", UNITS)
@pytest.mark.parametrize("kind", KINDS)
def test_thirty_chats_at_once_overspend_by_one_answer_at_most(kind: str, settings: dict[str, str],
                                                               upstream: StandInServer, tmp_path: Path) -> None:
    """Three gevent workers on one state file, or two instances on one Redis: one client's 30 concurrent
    chats, sent again as each ends, spend the budget and at most one answer more (by the stand-in's own
    bill), get at least half of it before the first refusal, then only refusals with a Retry-After;
    another client is unaffected; and a budget's window, once over, lets its client in again."""
    upstream.script = Script(reply=REPLY, delay=0.01)
    for group in servers(kind, upstream, tmp_path, **settings):
        ports = [server.port for server in group]
        seen = burst(ports, upstream, "alice")
        spent = upstream.stats.spent.get("alice", 0)
        assert BUDGET <= spent <= BUDGET + ANSWER, (spent, seen.statuses.count(200))
        assert seen.first_refusal_spent is not None and seen.first_refusal_spent >= BUDGET / 2
        assert seen.statuses.count(429) >= 30 and all(retry > 1 for retry in seen.retry_after[-30:])
        status, headers = post(ports[0], "alice")
        assert status == 429 and int(headers["retry-after"]) >= 1 and "ratelimit" in headers
        assert upstream.stats.spent.get("alice", 0) == spent  # refused before the upstream
        assert post(ports[-1], "bob")[0] == 200
        # A short window (the trial plan, 40 tokens per 2 seconds) opens again after its Retry-After.
        for _ in range(20):
            status, headers = post(ports[0], "tina", "trial")
            if status == 429:
                break
        assert status == 429, "the trial budget never refused"
        time.sleep(int(headers["retry-after"]))
        assert post(ports[-1], "tina", "trial")[0] == 200
