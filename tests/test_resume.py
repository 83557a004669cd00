"""Resumable streams and a fleet on one Redis: two gunicorn instances (gevent workers) share a real
redis-server, started here, in front of the stand-in model. A client drops its connection and reads
the rest on the other instance; stops and stream caps reach across instances; Redis failing never
breaks a live stream."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, eventually
from .servers import ROOT, CuttingProxy, Gunicorn, RedisServer
from .streams import answer_of, check_event_stream, events_of, post_chat, read_until

pytestmark = [pytest.mark.redis, pytest.mark.server, pytest.mark.node, pytest.mark.browser]

REPLY = "one two three four five six"
APP = "tests.resume_app:app"


def env(standin: StandInServer, redis_url: str | None = None, **settings: str) -> dict[str, str]:
    values = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": standin.url, "CHATSTREAM_RESUMABLE": "1",
              "CHATSTREAM_ALLOWED_MODELS": "held", "CHATSTREAM_HEARTBEAT": "0.5"}
    if redis_url is not None:
        values["CHATSTREAM_REDIS_URL"] = redis_url
    return values | {f"CHATSTREAM_{k.upper()}": v for k, v in settings.items()}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def fleet(_standin: StandInServer, redis_server: RedisServer) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    """Two instances sharing one Redis; one stream per client across both."""
    settings = env(_standin, redis_server.url, max_streams_per_client="1", slot_ttl="1.5")
    with Gunicorn(APP, env=settings) as a, Gunicorn(APP, env=settings) as b:
        yield a, b


@pytest.fixture
def held(upstream: StandInServer) -> StandInServer:
    """Requests for the model "held" stop after "one two" until ``upstream.release()``."""
    upstream.scripts["held"] = Script(reply=REPLY, hold_after=2)
    upstream.script = Script(reply=REPLY)
    return upstream


HELD = {"content": "hi", "model": "held"}


def start(port: int, fmt: str, user: str, body: object = None) -> tuple[http.client.HTTPConnection,
                                                                        http.client.HTTPResponse]:
    conn, response = post_chat(port, fmt, HELD if body is None else body, timeout=30, headers={"X-User": user})
    assert response.status == 200, response.read()
    return conn, response


def replay(port: int, stream_id: str, fmt: str, user: str, *, after: int | None = None,
           last_event_id: int | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"X-User": user}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    query = f"?format={fmt}" + (f"&after={after}" if after is not None else "")
    conn.request("GET", f"/api/chat/{stream_id}{query}", headers=headers)
    return conn, conn.getresponse()


def stop(port: int, stream_id: str, user: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", f"/api/chat/{stream_id}/stop", headers={"X-User": user})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def visible(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] != "ping"]


def whole_events(fmt: str, data: bytes) -> list[dict[str, Any]]:
    """The events that arrived whole in ``data`` (a read can end inside one)."""
    separator = b"\n" if fmt == "ndjson" else b"\n\n"
    return visible(events_of(fmt, data[:data.rfind(separator) + len(separator)]))


def read_all(response: http.client.HTTPResponse) -> bytes:
    """The body, or what came of it before the connection was cut."""
    try:
        return response.read()
    except http.client.IncompleteRead as cut:
        return cut.partial


def check_numbered(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), [e.get("seq") for e in events]


# -- resume ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ndjson", "sse"])
def test_a_dropped_stream_resumes_on_another_instance_whole_and_once(fleet: tuple[Gunicorn, Gunicorn],
                                                                     held: StandInServer, fmt: str) -> None:
    a, b = fleet
    user = f"drop-{fmt}"
    conn, response = start(a.port, fmt, user)
    stream_id = response.getheader("X-Chat-Stream-Id")
    seen = whole_events(fmt, read_until(response, b"two"))
    conn.close()  # the phone switches networks
    assert seen[0]["type"] == "start" and seen[0]["stream_id"] == stream_id and answer_of(seen) == "one two"
    # Back on the other instance: SSE says where it was as EventSource would, NDJSON with ?after.
    where = {"last_event_id": seen[-1]["seq"]} if fmt == "sse" else {"after": seen[-1]["seq"]}
    conn, rest = replay(b.port, stream_id, fmt, user, **where)
    assert rest.status == 200 and rest.getheader("X-Chat-Stream-Id") == stream_id
    # The model is still held: the answer goes on only now, and reaches the new connection live.
    held.release()
    events = seen + visible(events_of(fmt, rest.read()))
    conn.close()
    check_numbered(events)
    assert answer_of(events) == REPLY and check_event_stream(events)["type"] == "done"
    a.wait_for_log(f"after_stream id={stream_id} outcome=done")


# The browser: chatstream.js with {resume: true} in real Chromium, through a proxy that drops the connection.
START_IN_PAGE = """async ([format, user]) => {
  const { streamChat } = await import("/api/chatstream.js");
  window.__events = [];
  window.__result = (async () => {
    try {
      const options = { format, resume: { delay: 100 }, headers: { "X-User": user } };
      for await (const event of streamChat("/api/chat", { content: "hi", model: "held" }, options)) {
        window.__events.push(event);
      }
      return "complete";
    } catch (error) {
      return `${error.name} ${error.code}: ${error.message}`;
    }
  })();
}"""


@pytest.mark.parametrize("fmt", ["ndjson", "sse"])
def test_the_browser_client_resumes_by_itself_on_another_instance(fleet: tuple[Gunicorn, Gunicorn],
                                                                  held: StandInServer, fmt: str) -> None:
    from playwright.sync_api import sync_playwright

    from .browsers import CHROMIUM, CHROMIUM_ARGS

    a, b = fleet
    with CuttingProxy(a.port) as proxy, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{proxy.port}/api/chatstream.js")
            page.evaluate(START_IN_PAGE, [fmt, f"browser-{fmt}"])
            page.wait_for_function(
                "() => window.__events.filter((e) => e.type === 'delta').map((e) => e.content).join('') === 'one two'",
                timeout=30_000)
            last_seen = page.evaluate("() => window.__events.at(-1).seq")  # the model is held: nothing follows
            # The network goes away mid-answer; when it comes back, it leads to the other instance.
            proxy.target = b.port
            proxy.cut()
            eventually(lambda: proxy.requests, lambda rs: any(r.startswith("GET /api/chat/") for r in rs))
            held.release()  # the rest of the answer is made only now: it can reach the page only by the resume
            assert page.evaluate("() => window.__result") == "complete"
            events = page.evaluate("() => window.__events")
        finally:
            browser.close()
    stream_id = events[0]["stream_id"]
    check_numbered(events)
    assert answer_of(events) == REPLY and events[-1]["type"] == "done"
    assert [r for r in proxy.requests if r.split()[1].startswith("/api/chat") and ".js" not in r] == ["POST /api/chat", f"GET /api/chat/{stream_id}?after={last_seen}"]
    assert held.stats.requests == 1  # one model call: the resume read it, it did not ask again
    a.wait_for_log(f"after_stream id={stream_id} outcome=done")


def test_a_finished_stream_replays_from_any_event_in_any_format(fleet: tuple[Gunicorn, Gunicorn],
                                                                 held: StandInServer) -> None:
    a, b = fleet
    user = "replay"
    conn, response = start(a.port, "sse", user, {"content": "hi"})
    stream_id = response.getheader("X-Chat-Stream-Id")
    live = events_of("sse", response.read())
    conn.close()
    check_numbered(live)
    assert answer_of(live) == REPLY
    for server in (a, b):
        conn, again = replay(server.port, stream_id, "sse", user)
        assert events_of("sse", again.read()) == live
        conn.close()
    conn, tail = replay(b.port, stream_id, "ndjson", user, after=2)
    assert events_of("ndjson", tail.read()) == live[2:]
    conn.close()
    conn, text = replay(b.port, stream_id, "text", user)
    assert text.read().decode() == answer_of(live)
    conn.close()
    # Only its own client may read it; an unknown id is the same 404.
    for who, which in (("someone-else", stream_id), (user, "0" * 32)):
        conn, refused = replay(b.port, which, "ndjson", who)
        assert refused.status == 404 and json.loads(refused.read())["error"]["code"] == "stream_not_found"
        conn.close()
    conn, bad = replay(b.port, stream_id, "ndjson", user, after=-1)
    assert bad.status == 400 and json.loads(bad.read())["error"]["code"] == "invalid_after"
    conn.close()


def test_nobody_coming_back_within_the_grace_stops_the_model(held: StandInServer,
                                                             redis_server: RedisServer) -> None:
    with Gunicorn(APP, env=env(held, redis_server.url, resume_grace="1")) as server:
        user = "gone"
        conn, response = start(server.port, "ndjson", user)
        stream_id = response.getheader("X-Chat-Stream-Id")
        read_until(response, b"two")
        conn.close()
        held.wait_for(lambda s: s.cancelled == 1 and s.open == 0)
        server.wait_for_log(f"after_stream id={stream_id} outcome=client_left")
        # What was said before is still there, ending with why it stopped.
        conn, rest = replay(server.port, stream_id, "ndjson", user)
        events = visible(events_of("ndjson", rest.read()))
        conn.close()
        check_numbered(events)
        assert answer_of(events) == "one two" and events[-1]["error"]["code"] == "client_left"


def test_a_reader_on_another_instance_keeps_the_answer_going(held: StandInServer, redis_server: RedisServer) -> None:
    """No clock: a control stream on the same instance, whose client leaves after this one's and which
    nobody reads, is stopped at the end of its grace; by then this one's grace has run out too, on the
    same instance's clock, and only its reader on the other instance can have kept it going (had it been
    stopped, its answer could not end done)."""
    settings = env(held, redis_server.url, resume_grace="1")
    with Gunicorn(APP, env=settings) as a, Gunicorn(APP, env=settings) as b:
        user = "second-tab"
        conn, response = start(a.port, "ndjson", user)
        stream_id = response.getheader("X-Chat-Stream-Id")
        seen = whole_events("ndjson", read_until(response, b"two"))
        other, rest = replay(b.port, stream_id, "ndjson", user, after=seen[-1]["seq"])
        assert rest.status == 200
        conn.close()  # the first tab goes; the second still reads
        control, control_response = start(a.port, "ndjson", "nobody-comes-back")
        read_until(control_response, b"two")
        control.close()
        assert held.wait_for(lambda s: s.cancelled >= 1, timeout=60).cancelled == 1  # the control, at its grace
        held.release()
        events = seen + visible(events_of("ndjson", rest.read()))
        other.close()
        check_numbered(events)
        assert answer_of(events) == REPLY and events[-1]["type"] == "done"


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_without_redis_a_stream_resumes_on_its_own_worker(held: StandInServer, api: str) -> None:
    with Gunicorn(APP, env=env(held, api=api)) as server:
        user = "memory"
        conn, response = start(server.port, "sse", user)
        stream_id = response.getheader("X-Chat-Stream-Id")
        seen = whole_events("sse", read_until(response, b"two"))
        conn.close()
        conn, rest = replay(server.port, stream_id, "sse", user, last_event_id=seen[-1]["seq"])
        held.release()
        events = seen + visible(events_of("sse", rest.read()))
        conn.close()
        check_numbered(events)
        assert answer_of(events) == REPLY and check_event_stream(events)["type"] == "done"
        conn, again = replay(server.port, stream_id, "sse", user)
        assert events_of("sse", again.read()) == events
        conn.close()
        conn, missing = replay(server.port, "f" * 32, "sse", user)
        assert missing.status == 404
        conn.close()


Reader = tuple[http.client.HTTPConnection, http.client.HTTPResponse]


def reader(port: int, stream_id: str, user: str, reads_for: str | None = None) -> Reader:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"X-User": user, **({"X-Reads-For": reads_for} if reads_for else {})}
    conn.request("GET", f"/api/chat/{stream_id}?format=ndjson", headers=headers)
    return conn, conn.getresponse()


def open_readers(port: int, stream_id: str, user: str, count: int, reads_for: str | None = None) -> list[Reader]:
    """``count`` readers of a stream that has just begun: the first once the stream's record is written
    (a writer round after it began: under CPU load that lags), then the others."""
    first = eventually(lambda: _readers(port, stream_id, user, reads_for), lambda got: got is not None)
    assert first is not None
    readers = first + [reader(port, stream_id, user, reads_for) for _ in range(count - 1)]
    for _, response in readers:
        assert response.status == 200
        read_until(response, b"two")  # each is reading the live stream
    return readers


def refused(port: int, stream_id: str, user: str, reads_for: str | None = None) -> str:
    conn, response = reader(port, stream_id, user, reads_for)
    body = json.loads(response.read())
    conn.close()
    assert response.status == 429 and response.getheader("Content-Type") == "application/json"
    return str(body["error"]["code"])


def close_all(readers: list[Reader]) -> None:
    for conn, response in readers:
        response.close()
        conn.close()


def test_readers_count_against_their_clients_cap(held: StandInServer) -> None:
    with Gunicorn(APP, env=env(held, max_streams_per_client="2")) as server:
        conn, response = start(server.port, "ndjson", "boss")
        stream_id = response.getheader("X-Chat-Stream-Id")
        read_until(response, b"two")
        desk = open_readers(server.port, stream_id, "desk", 2, reads_for="boss")  # the desk's two slots
        assert refused(server.port, stream_id, "desk", reads_for="boss") == "too_many_streams"
        started_conn, started = post_chat(server.port, "ndjson", {"content": "hi"}, headers={"X-User": "desk"})
        assert started.status == 429  # the readers hold the desk's slots: no stream of its own either
        started_conn.close()
        close_all(desk[:1])  # a reader that leaves gives its slot back
        desk[:1] = eventually(lambda: _readers(server.port, stream_id, "desk", "boss"), lambda got: got is not None)
        held.release()
        for reader_conn, response_of_reader in desk:
            assert events_of("ndjson", response_of_reader.read())[-1]["type"] == "done"  # each read to the end
            reader_conn.close()
        response.read()
        conn.close()


def test_one_stream_has_a_reader_limit_and_its_own_client_shares_its_slot(held: StandInServer) -> None:
    """The client that started a running stream may read it again (its old connection may still hold
    the slot, dead but unnoticed) with a cap of one; as many readers as the stream's limit, no more."""
    with Gunicorn(APP, env=env(held, max_streams_per_client="1", max_readers_per_stream="4")) as server:
        conn, response = start(server.port, "ndjson", "scraper")
        stream_id = response.getheader("X-Chat-Stream-Id")
        read_until(response, b"two")
        readers = open_readers(server.port, stream_id, "scraper", 4)  # the first connection is still open
        for _ in range(20):
            assert refused(server.port, stream_id, "scraper") == "too_many_readers"
        close_all(readers[:1])
        readers[:1] = eventually(lambda: _readers(server.port, stream_id, "scraper"), lambda got: got is not None)
        held.release()
        for reader_conn, response_of_reader in readers:
            assert events_of("ndjson", response_of_reader.read())[-1]["type"] == "done"
            reader_conn.close()
        response.read()
        conn.close()


def _readers(port: int, stream_id: str, user: str, reads_for: str | None = None) -> list[Reader] | None:
    """One more reader, or None if it was refused (its slot is not given back yet)."""
    conn, response = reader(port, stream_id, user, reads_for)
    if response.status == 200:
        return [(conn, response)]
    response.read()
    conn.close()
    return None


def test_use_chat_resume_replays_the_chats_running_answer(fleet: tuple[Gunicorn, Gunicorn],
                                                          held: StandInServer) -> None:
    a, b = fleet
    user, chat_id = "ui", "chat-resume-1"
    body = {"id": chat_id, "model": "held", "trigger": "submit-message",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    conn, response = start(a.port, "ui", user, body)
    read_until(response, b"two")
    conn.close()  # the page reloads; useChat({resume: true}) asks for the chat's stream
    conn = http.client.HTTPConnection("127.0.0.1", b.port, timeout=30)
    conn.request("GET", f"/api/chat/{chat_id}/stream", headers={"X-User": user})
    resumed = conn.getresponse()
    assert resumed.status == 200 and resumed.getheader("x-vercel-ai-ui-message-stream") == "v1"
    held.release()
    parts = [json.loads(block[6:]) if block != "data: [DONE]" else "[DONE]"
             for block in resumed.read().decode().split("\n\n") if block.startswith("data: ")]
    conn.close()
    assert parts[0]["type"] == "start" and parts[-1] == "[DONE]" and parts[-2]["type"] == "finish"
    assert "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta") == REPLY
    # Once the answer is over there is nothing to resume: 204, as the AI SDK expects.
    deadline = time.monotonic() + 10
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
        conn.request("GET", f"/api/chat/{chat_id}/stream", headers={"X-User": user})
        status = conn.getresponse().status
        conn.close()
        if status == 204:
            break
        assert status == 200 and time.monotonic() < deadline


@pytest.mark.parametrize("version", ["5", "6"])
def test_the_ai_sdks_own_transport_resumes_the_chat(fleet: tuple[Gunicorn, Gunicorn], held: StandInServer,
                                                    version: str) -> None:
    a, b = fleet
    user, chat_id = f"ai{version}", f"chat-ai{version}"
    body = {"id": chat_id, "model": "held", "trigger": "submit-message",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    conn, response = start(a.port, "ui", user, body)
    read_until(response, b"two")
    conn.close()  # the page reloads mid-answer
    node = shutil.which("node")
    assert node, "node is required: install Node.js 20 or newer"
    result = subprocess.run([node, "tests/js/ai-sdk-resume.mjs", version, f"{b.url}/api/chat", chat_id, user],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PATH": os.environ["PATH"], "STANDIN_CONTROL": held.url.removesuffix("/v1")})
    assert result.returncode == 0, result.stdout + result.stderr
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["role"] == "assistant" and shown["text"] == REPLY
    assert shown["types"][:3] == ["start", "start-step", "text-start"] and shown["types"][-1] == "finish"


# -- stops and limits across the fleet --------------------------------------------------------------


def test_a_stop_on_another_instance_stops_the_stream_at_once(fleet: tuple[Gunicorn, Gunicorn],
                                                             held: StandInServer) -> None:
    a, b = fleet
    user = "stopper"
    conn, response = start(a.port, "ndjson", user)
    stream_id = response.getheader("X-Chat-Stream-Id")
    read_until(response, b"two")
    status, body = stop(b.port, stream_id, "someone-else")
    assert status == 404 and json.loads(body)["error"]["code"] == "stream_not_found"
    assert stop(b.port, stream_id, user)[0] == 204
    held.wait_for(lambda s: s.cancelled == 1 and s.open == 0)
    a.wait_for_log(f"after_stream id={stream_id} outcome=stopped")
    read_all(response)  # the live response is cut, as when a client leaves
    conn.close()
    conn, rest = replay(b.port, stream_id, "ndjson", user)
    events = visible(events_of("ndjson", rest.read()))
    conn.close()
    assert answer_of(events) == "one two" and events[-1]["error"]["code"] == "stopped"
    assert stop(b.port, stream_id, user)[0] == 404  # over: nothing to stop


def test_the_stream_cap_counts_across_instances(fleet: tuple[Gunicorn, Gunicorn], held: StandInServer) -> None:
    a, b = fleet
    user = "capped"
    conn, response = start(a.port, "ndjson", user)
    stream_id = response.getheader("X-Chat-Stream-Id")
    read_until(response, b"two")
    refused_conn, refused = post_chat(b.port, "ndjson", {"content": "hi"}, headers={"X-User": user})
    assert refused.status == 429 and json.loads(refused.read())["error"]["code"] == "too_many_streams"
    refused_conn.close()
    other_conn, other = post_chat(b.port, "ndjson", {"content": "hi"}, headers={"X-User": "someone-else"})
    assert other.status == 200 and check_event_stream(visible(events_of("ndjson", other.read())))
    other_conn.close()
    held.release()
    response.read()
    conn.close()
    a.wait_for_log(f"after_stream id={stream_id} outcome=done")  # its slot was given back before
    again_conn, again = post_chat(b.port, "ndjson", {"content": "hi"}, headers={"X-User": user})
    assert again.status == 200
    again.read()
    again_conn.close()


def test_a_worker_killed_mid_stream_gives_its_slot_back_and_readers_an_end(
        fleet: tuple[Gunicorn, Gunicorn], held: StandInServer, redis_server: RedisServer) -> None:
    a, b = fleet
    user = "killed"
    conn, response = start(a.port, "ndjson", user)
    stream_id = response.getheader("X-Chat-Stream-Id")
    seen = whole_events("ndjson", read_until(response, b"two"))
    assert redis.Redis.from_url(redis_server.url).zcard(f"chatstream:slots:{user}") == 1
    os.kill(a.worker_pids()[0], signal.SIGKILL)
    held.wait_for(lambda s: s.open == 0)
    conn.close()
    # A reader of the dead stream is not left waiting forever.
    reader, rest = replay(b.port, stream_id, "ndjson", user, after=seen[-1]["seq"])
    events = visible(events_of("ndjson", rest.read()))
    reader.close()
    assert [e["type"] for e in events] == ["error"] and events[0]["error"]["code"] == "stream_lost"
    # The dead worker's slot expires (slot_ttl 1.5 s) and the client may stream again.
    deadline = time.monotonic() + 30
    while True:
        retry, answer = post_chat(b.port, "ndjson", {"content": "hi"}, headers={"X-User": user})
        status = answer.status
        answer.read()
        retry.close()
        if status == 200:
            break
        assert status == 429 and time.monotonic() < deadline
        time.sleep(0.2)


# -- Redis failing ----------------------------------------------------------------------------------


def test_streams_go_on_while_redis_is_down_and_resume_says_so(upstream: StandInServer, tmp_path: Path) -> None:
    with RedisServer(tmp_path) as redis_server, Gunicorn(APP, env=env(upstream, redis_server.url,
                                                                      max_streams_per_client="1")) as server:
        redis_server.stop()
        ids = []
        for _ in range(2):
            conn, response = start(server.port, "ndjson", "down", {"content": "hi"})
            ids.append(response.getheader("X-Chat-Stream-Id"))
            events = visible(events_of("ndjson", response.read()))
            conn.close()
            assert check_event_stream(events)["type"] == "done" and "seq" not in events[0]
        conn, refused = replay(server.port, ids[0], "ndjson", "down")
        assert refused.status == 503 and json.loads(refused.read())["error"]["code"] == "resume_unavailable"
        conn.close()
        log = server.log()
        assert log.count("Redis is unavailable") == 1 and "Traceback" not in log
        assert redis_server.url.split("//")[1] not in log  # nor its address, which may carry a password
        # Back: new streams are resumable again.
        redis_server.start()
        deadline = time.monotonic() + 30
        while True:
            conn, response = start(server.port, "ndjson", "down", {"content": "hi"})
            events = visible(events_of("ndjson", response.read()))
            conn.close()
            if "seq" in events[0]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        server.wait_for_log("Redis is back")


@pytest.mark.parametrize("restart", [False, True])
def test_a_stream_finishes_when_redis_dies_under_it(held: StandInServer, tmp_path: Path, restart: bool) -> None:
    with RedisServer(tmp_path) as redis_server, Gunicorn(APP, env=env(held, redis_server.url)) as server:
        conn, response = start(server.port, "ndjson", "unlucky")
        head = read_until(response, b"two")
        redis_server.stop()
        if restart:
            redis_server.start()  # empty: what it held is gone
        held.release()
        events = visible(events_of("ndjson", head + response.read()))
        conn.close()
        check_numbered(events)
        assert answer_of(events) == REPLY and check_event_stream(events)["type"] == "done"
        assert "Traceback" not in server.log()
