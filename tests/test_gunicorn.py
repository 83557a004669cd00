"""The real deployment: gunicorn -c python:flask_chatstream.gunicorn on gevent workers, over loopback HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY
from .servers import Gunicorn, ROOT, STOP_ON_LEAVE, stand_in_env
from .streams import answer_of, check_event_stream, events_of, post_chat, read_until

pytestmark = pytest.mark.server

REPLY = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module", params=["chat", "responses"])
def server(_standin: StandInServer, request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    """The example app under gunicorn + gevent, on each upstream API in turn."""
    env = {**STOP_ON_LEAVE, **stand_in_env(_standin.url, read_timeout="60", api=request.param)}
    with Gunicorn(env=env) as gunicorn:
        yield gunicorn


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_stream_is_incremental_and_whole(server: Gunicorn, upstream: StandInServer, fmt: str) -> None:
    upstream.script = Script(reply=REPLY, hold_after=3)  # held after three words until released
    conn, response = post_chat(server.port, fmt, {"content": "count"})
    assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
    first = read_until(response, b"one")
    assert (upstream.stats.open, upstream.stats.finished) == (1, 0), "upstream finished before the first delta"
    upstream.release()
    body = first + response.read()
    conn.close()
    if fmt == "text":
        assert body.decode() == REPLY
    else:
        events = events_of(fmt, body)
        assert check_event_stream(events)["type"] == "done" and answer_of(events) == REPLY


def test_json_errors_over_http(server: Gunicorn, upstream: StandInServer) -> None:
    conn, response = post_chat(server.port, "ndjson", {"messages": []})
    assert response.status == 400 and json.loads(response.read())["error"]["code"] == "empty_messages"
    conn.close()
    upstream.script = Script(status=429, retry_after="3")
    conn, response = post_chat(server.port, "ndjson", {"content": "hi"})
    assert response.status == 429 and response.getheader("Retry-After") == "3"
    assert API_KEY not in response.read().decode()
    conn.close()


def test_truncated_text_has_no_chunked_terminator(server: Gunicorn, upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, cut_after=3)
    conn, response = post_chat(server.port, "text", {"content": "hi"})
    with pytest.raises(http.client.IncompleteRead) as info:
        response.read()
    assert info.value.partial.decode() == "one two three"
    conn.close()
    # the worker is fine and serves the next request
    upstream.script = Script(reply=REPLY)
    conn, response = post_chat(server.port, "text", {"content": "hi"})
    assert response.read().decode() == REPLY


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse"])
def test_client_leaving_closes_the_upstream(server: Gunicorn, upstream: StandInServer, fmt: str) -> None:
    upstream.script = Script(reply=REPLY * 5, hold_after=2)
    conn, response = post_chat(server.port, fmt, {"content": "hi"})
    response.read1(65536)
    assert upstream.stats.open == 1
    conn.sock.close()  # the browser tab goes away
    conn.close()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)


async def _one_stream(session: aiohttp.ClientSession, url: str) -> tuple[float, float, str]:
    started = time.monotonic()
    first = None
    body = b""
    async with session.post(url, json={"content": "hi"}) as response:
        assert response.status == 200
        async for piece in response.content.iter_any():
            first = first or time.monotonic()
            body += piece
    assert first is not None
    return first - started, time.monotonic() - started, body.decode()


async def _many_streams(url: str, count: int) -> list[tuple[float, float, str]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await asyncio.gather(*[_one_stream(session, url) for _ in range(count)])


def test_200_concurrent_streams_on_one_gevent_worker(server: Gunicorn, upstream: StandInServer) -> None:
    # A barrier, not a clock: each upstream stream holds its first word until all 200 are open at once.
    # A server that blocked on one stream would never get there, and the stand-in would cut them all.
    upstream.script = Script(reply=REPLY, hold_until_open=200)
    url = f"{server.url}/api/chat?format=text"
    started = time.monotonic()
    results = asyncio.run(_many_streams(url, 200))
    wall = time.monotonic() - started
    assert [text for _, _, text in results] == [REPLY] * 200
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.peak_open, stats.finished, stats.cut) == (200, 200, 0)
    ttfb = sorted(t for t, _, _ in results)
    print(f"\n200 streams on one worker: wall {wall:.2f}s, "
          f"TTFB p50 {ttfb[100] * 1000:.0f} ms, p99 {ttfb[197] * 1000:.0f} ms, max {ttfb[-1] * 1000:.0f} ms")


def test_workers_from_environment_and_overrides_from_the_command_line(_standin: StandInServer) -> None:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": _standin.url, "WEB_CONCURRENCY": "2"}
    with Gunicorn(env=env, workers=None) as two:
        deadline = time.monotonic() + 10
        while len(two.worker_pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(two.worker_pids()) == 2
        assert "Using worker: gevent" in two.log()
    with Gunicorn(env=env, workers=1) as one:
        assert len(one.worker_pids()) == 1


def test_a_config_file_of_ones_own_starts_from_the_package_settings(tmp_path: Path) -> None:
    """The manual's own gunicorn.conf.py: the package's settings, with one changed."""
    page = (ROOT / "docs" / "howto" / "deploy.md").read_text()
    snippet = re.search(r"```python\n# gunicorn.conf.py\n(.*?)```", page, re.S)
    assert snippet is not None
    (tmp_path / "gunicorn.conf.py").write_text(snippet.group(1))
    (tmp_path / "app.py").write_text("def app(environ, start_response):\n    return []\n")
    done = subprocess.run([sys.executable, "-m", "gunicorn", "--print-config", "app:app"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    settings = dict(re.findall(r"^(\w+)\s+= (.*)$", done.stdout, re.M))  # gunicorn's own listing
    assert done.returncode == 0, done.stderr
    assert (settings["timeout"], settings["worker_class"], settings["graceful_timeout"]) == ("60", "gevent", "120")
    assert settings["post_worker_init"] == "<post_worker_init()>"  # the package's warm start, not gunicorn's no-op


def test_a_stop_ends_the_stream_and_the_model(server: Gunicorn, upstream: StandInServer) -> None:
    upstream.script = Script(reply="one two three four five", hold_after=2)
    conn, response = post_chat(server.port, "ndjson", {"content": "count"}, timeout=30)
    stream_id = response.getheader("X-Chat-Stream-Id")
    read_until(response, b"two")
    stop = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    stop.request("POST", f"/api/chat/{stream_id}/stop")
    assert stop.getresponse().status == 204
    stop.close()
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (1, 0)
    try:
        rest = response.read()
    except http.client.IncompleteRead as cut:
        rest = cut.partial
    conn.close()
    assert b'"type":"done"' not in rest  # stopped: never ends as if complete
