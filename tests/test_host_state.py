"""One machine, many workers, no Redis: gunicorn with three gevent workers shares stops, resumes and
stream caps through the host's SQLite state (``_host``). Every request goes on a new connection, so
gunicorn hands it to whichever worker accepts it first. That is often the same worker when the
machine is quiet, so each case is also run across two instances on one state file, where the stream
runs in one process and its stop, resume or second stream always comes to another."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_chatstream import create_blueprint
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, eventually
from .servers import Gunicorn
from .streams import answer_of, check_event_stream, ndjson_events, post_chat, read_until

pytestmark = pytest.mark.server

REPLY = "one two three four five six seven eight"
APP = "tests.resume_app:app"
WORKERS = 3
N = 9


def settings(standin: StandInServer, **values: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": standin.url, "CHATSTREAM_MAX_RETRIES": "0",
            **{f"CHATSTREAM_{k.upper()}": v for k, v in values.items()}}


@pytest.fixture(params=["finish", "stop"])
def leave(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def start_held(port: int, user: str = "ada") -> tuple[http.client.HTTPConnection, http.client.HTTPResponse,
                                                     str, bytes]:
    """A chat held at the stand-in's gate after one word: its connection, response, id and first bytes."""
    conn, response = post_chat(port, "ndjson", {"content": "hi"}, timeout=30, headers={"X-User": user})
    assert response.status == 200, response.read()
    received = read_until(response, b'"delta"')
    return conn, response, response.getheader("X-Chat-Stream-Id") or "", received


def request(port: int, method: str, path: str, user: str = "ada") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, headers={"X-User": user})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_stops_on_new_connections_reach_their_streams_on_any_worker(upstream: StandInServer, leave: str) -> None:
    upstream.script = Script(reply=REPLY, hold_after=1)
    with Gunicorn(APP, env=settings(upstream, on_client_leave=leave), workers=WORKERS) as server:
        held = [start_held(server.port) for _ in range(N)]
        assert upstream.stats.open == N
        statuses = [request(server.port, "POST", f"/api/chat/{stream_id}/stop")[0] for _, _, stream_id, _ in held]
        assert statuses == [204] * N
        # Held at the gate, with their clients still connected: only the stops can close them.
        stats = upstream.wait_for(lambda s: s.open == 0)
        assert (stats.cancelled, stats.finished) == (N, 0)
        for conn, response, _, _ in held:
            with pytest.raises(http.client.IncompleteRead):
                response.read()  # each ends cut, never with a terminator, as when a client leaves
            conn.close()
        log = eventually(server.log, lambda text: text.count("after_stream id=") >= N)
    outcomes = re.findall(r"after_stream id=\S+ outcome=(\S+)", log)
    assert outcomes == ["stopped"] * N  # stopped on the client's word, not read on for after_stream
    upstream.release()


@pytest.fixture
def two_instances(upstream: StandInServer, tmp_path: Path, request: pytest.FixtureRequest
                  ) -> Iterator[tuple[Gunicorn, Gunicorn]]:
    """Two instances of the app on this machine, sharing one state file (as a blue/green pair would)."""
    values = getattr(request, "param", {})
    env = {**settings(upstream, **values), "CHATSTREAM_STATE_PATH": str(tmp_path / "state.sqlite3")}
    with Gunicorn(APP, env=env, workers=2) as a, Gunicorn(APP, env=env, workers=2) as b:
        yield a, b


@pytest.mark.parametrize("two_instances", [{"on_client_leave": "finish"}, {"on_client_leave": "stop"}],
                         indirect=True, ids=["finish", "stop"])
def test_a_stop_on_another_process_reaches_the_stream(upstream: StandInServer,
                                                      two_instances: tuple[Gunicorn, Gunicorn]) -> None:
    a, b = two_instances
    upstream.script = Script(reply=REPLY, hold_after=1)
    held = [start_held(a.port) for _ in range(N)]
    assert [request(b.port, "POST", f"/api/chat/{stream_id}/stop")[0] for _, _, stream_id, _ in held] == [204] * N
    stats = upstream.wait_for(lambda s: s.open == 0)
    assert (stats.cancelled, stats.finished) == (N, 0)
    for conn, _, _, _ in held:
        conn.close()
    upstream.release()


@pytest.mark.parametrize("two_instances", [{"on_client_leave": "finish", "resumable": "1"},
                                           {"on_client_leave": "stop", "resumable": "1"}],
                         indirect=True, ids=["finish", "stop"])
def test_a_resume_on_another_process_follows_the_live_stream(upstream: StandInServer,
                                                             two_instances: tuple[Gunicorn, Gunicorn]) -> None:
    a, b = two_instances
    upstream.script = Script(reply=REPLY, hold_after=1)
    conn, response, stream_id, received = start_held(a.port)
    before = ndjson_events(received[:received.rindex(b"\n") + 1])
    conn.close()
    reader = http.client.HTTPConnection("127.0.0.1", b.port, timeout=30)
    reader.request("GET", f"/api/chat/{stream_id}?format=ndjson&after={before[-1]['seq']}", headers={"X-User": "ada"})
    resumed = reader.getresponse()
    assert resumed.status == 200 and upstream.stats.finished == 0  # following the stream while it is held
    upstream.release()
    events = [e for e in before + ndjson_events(resumed.read()) if e["type"] != "ping"]
    reader.close()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert check_event_stream(events)["type"] == "done" and answer_of(events) == REPLY


@pytest.mark.parametrize("two_instances", [{"resumable": "1"}], indirect=True)
def test_use_chat_resume_on_another_process_replays_the_chats_running_answer(
        upstream: StandInServer, two_instances: tuple[Gunicorn, Gunicorn]) -> None:
    a, b = two_instances
    upstream.script = Script(reply=REPLY, hold_after=1)
    chat_id = "chat-on-one-machine"
    body = {"id": chat_id, "trigger": "submit-message",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    conn, response = post_chat(a.port, "ui", body, timeout=30, headers={"X-User": "ada"})
    read_until(response, b"text-delta")
    conn.close()  # the page reloads; useChat({resume: true}) asks for the chat's stream, elsewhere

    def resume() -> tuple[http.client.HTTPConnection, http.client.HTTPResponse] | None:
        """The chat's running stream, once its record is written (a writer round after it began)."""
        connection = http.client.HTTPConnection("127.0.0.1", b.port, timeout=30)
        connection.request("GET", f"/api/chat/{chat_id}/stream", headers={"X-User": "ada"})
        answer = connection.getresponse()
        if answer.status == 200:
            return connection, answer
        answer.read()
        connection.close()
        return None

    found = eventually(resume, lambda got: got is not None)
    assert found is not None
    reader, resumed = found
    assert resumed.getheader("x-vercel-ai-ui-message-stream") == "v1"
    upstream.release()
    parts = [json.loads(block[6:]) for block in resumed.read().decode().split("\n\n")
             if block.startswith("data: {")]
    reader.close()
    assert parts[0]["type"] == "start" and parts[-1]["type"] == "finish"
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == REPLY
    # Over: nothing to resume, on either instance, once the end is written.
    eventually(lambda: [request(port, "GET", f"/api/chat/{chat_id}/stream")[0] for port in (a.port, b.port)],
               lambda statuses: statuses == [204, 204])


@pytest.mark.parametrize("two_instances", [{"max_streams_per_client": "2"}], indirect=True)
def test_a_cap_counts_the_streams_of_every_process(upstream: StandInServer,
                                                   two_instances: tuple[Gunicorn, Gunicorn]) -> None:
    a, b = two_instances
    upstream.script = Script(reply=REPLY, hold_after=1)
    first = post_chat(a.port, "ndjson", {"content": "hi"}, timeout=30, headers={"X-User": "ada"})
    second = post_chat(b.port, "ndjson", {"content": "hi"}, timeout=30, headers={"X-User": "ada"})
    assert (first[1].status, second[1].status) == (200, 200)
    refused = [post_chat(port, "ndjson", {"content": "hi"}, timeout=30, headers={"X-User": "ada"})[1].status
               for port in (a.port, b.port, a.port, b.port)]
    assert refused == [429] * 4
    upstream.release()
    for conn, response in (first, second):
        response.read()
        conn.close()


def test_a_stop_for_someone_elses_or_an_unknown_stream_is_404(upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, hold_after=1)
    with Gunicorn(APP, env=settings(upstream), workers=WORKERS) as server:
        conn, response, stream_id, _ = start_held(server.port, "ada")
        answers = [request(server.port, "POST", f"/api/chat/{stream_id}/stop", user="bob")[0] for _ in range(N)]
        assert answers == [404] * N
        assert request(server.port, "POST", "/api/chat/no-such-stream/stop")[0] == 404
        upstream.release()
        assert b'"done"' in response.read()
        conn.close()


def resume(port: int, stream_id: str, after: int) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/api/chat/{stream_id}?format=ndjson&after={after}", headers={"X-User": "ada"})
    response = conn.getresponse()
    if response.status == 404:
        response.read()
        conn.close()
    return conn, response


def test_resumes_on_new_connections_return_the_whole_answer_once(upstream: StandInServer, leave: str) -> None:
    upstream.script = Script(reply=REPLY, hold_after=1)
    with Gunicorn(APP, env=settings(upstream, on_client_leave=leave, resumable="1"), workers=WORKERS) as server:
        started = []
        for _ in range(N):
            conn, response, stream_id, received = start_held(server.port)
            before = ndjson_events(received[:received.rindex(b"\n") + 1])
            conn.close()  # the connection drops mid-answer
            started.append((stream_id, before))
        readers = []
        for stream_id, before in started:
            # On another worker, the stream's record is there a writer round after it began (later under
            # CPU load): a resume within that lag is 404, and asks again, as chatstream.js's does.
            conn, response = eventually(lambda: resume(server.port, stream_id, before[-1]["seq"]),
                                        lambda got: got[1].status != 404)
            readers.append((conn, response, before))
        upstream.release()
        for conn, response, before in readers:
            assert response.status == 200
            events = [e for e in before + ndjson_events(response.read()) if e["type"] != "ping"]
            conn.close()
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # each once, none missing
            assert check_event_stream(events)["type"] == "done" and answer_of(events) == REPLY
    assert upstream.stats.finished == N


def test_a_cap_of_two_admits_two_of_six_streams_across_workers(upstream: StandInServer) -> None:
    upstream.script = Script(reply=REPLY, hold_after=1)
    with Gunicorn(APP, env=settings(upstream, max_streams_per_client="2"), workers=WORKERS) as server:
        answers = [post_chat(server.port, "ndjson", {"content": "hi"}, timeout=30, headers={"X-User": "ada"})
                   for _ in range(6)]
        statuses = sorted(response.status for _, response in answers)
        assert statuses == [200, 200, 429, 429, 429, 429]
        other = post_chat(server.port, "ndjson", {"content": "hi"}, timeout=30, headers={"X-User": "bob"})
        assert other[1].status == 200  # another client has caps of its own
        upstream.release()
        for conn, response in [*answers, other]:
            response.read()
            conn.close()
        # Once they ended, the slots are free again, on every worker.
        again = [post_chat(server.port, "ndjson", {"content": "hi"}, timeout=30, headers={"X-User": "ada"})
                 for _ in range(2)]
        assert [response.status for _, response in again] == [200, 200]
        for conn, response in again:
            response.read()
            conn.close()


@pytest.mark.parametrize("two_instances", [{"max_streams_per_client": "1", "resumable": "1", "resume_grace": "60"}],
                         indirect=True)
def test_a_killed_worker_frees_its_slots_and_its_readers_hear_stream_lost(
        upstream: StandInServer, two_instances: tuple[Gunicorn, Gunicorn], tmp_path: Path) -> None:
    a, b = two_instances
    upstream.script = Script(reply=REPLY, hold_after=1)
    conn, response, stream_id, received = start_held(a.port)
    assert post_chat(b.port, "ndjson", {"content": "hi"}, headers={"X-User": "ada"})[1].status == 429
    def recorded() -> list[tuple[int]]:  # written in the producer's writer round after the start
        with sqlite3.connect(tmp_path / "state.sqlite3") as db:
            return db.execute("SELECT pid FROM streams WHERE id = ?", (stream_id,)).fetchall()

    [(pid,)] = eventually(recorded, lambda rows: len(rows) == 1)
    reader = http.client.HTTPConnection("127.0.0.1", b.port, timeout=30)
    reader.request("GET", f"/api/chat/{stream_id}?format=ndjson&after=2", headers={"X-User": "ada"})
    following = reader.getresponse()
    assert following.status == 200
    os.kill(pid, signal.SIGKILL)  # the worker that runs the stream, mid-answer
    conn.close()
    events = ndjson_events(following.read())
    reader.close()
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "stream_lost"
    # Its slot went with it: the client may stream again.
    upstream.release()
    conn, again = post_chat(b.port, "ndjson", {"content": "hi"}, timeout=30, headers={"X-User": "ada"})
    assert again.status == 200 and check_event_stream(ndjson_events(again.read()))["type"] == "done"
    conn.close()


@pytest.mark.parametrize("where", ["/dev/null/chatstream.sqlite3", "/proc/chatstream/state.sqlite3"],
                         ids=["under-a-file", "read-only-filesystem"])
def test_a_state_path_that_cannot_be_written_warns_once_and_each_worker_keeps_its_own(
        upstream: StandInServer, caplog: pytest.LogCaptureFixture, where: str) -> None:
    app = Flask(__name__)
    app.config.update({"CHATSTREAM_STATE_PATH": where, "CHATSTREAM_MAX_STREAMS_PER_CLIENT": "1"})
    app.register_blueprint(create_blueprint(api_key=API_KEY, base_url=upstream.url), url_prefix="/api")
    warnings = [r.getMessage() for r in caplog.records if "cannot keep shared state" in r.getMessage()]
    assert len(warnings) == 1 and where in warnings[0] and "per worker" in warnings[0]
    upstream.script = Script(reply="still streams")
    assert app.test_client().post("/api/chat", json={"content": "hi"}).data == b"still streams"


def test_state_path_memory_keeps_each_worker_to_itself(upstream: StandInServer, tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update({"CHATSTREAM_STATE_PATH": ":memory:"})
    app.register_blueprint(create_blueprint(api_key=API_KEY, base_url=upstream.url), url_prefix="/api")
    assert app.test_client().post("/api/chat", json={"content": "hi"}).status_code == 200
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_default_state_lives_in_the_instance_folder(upstream: StandInServer, tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.register_blueprint(create_blueprint(api_key=API_KEY, base_url=upstream.url, max_streams_per_client=1,
                                            resumable=True), url_prefix="/api")
    response = app.test_client().post("/api/chat?format=ndjson", json={"content": "hi"})
    stream_id = response.headers["X-Chat-Stream-Id"]
    response.close()
    state = tmp_path / "instance" / "chatstream.sqlite3"
    assert state.exists()
    kept = eventually(lambda: _kept(state, stream_id), lambda rows: rows and rows[-1][1] == "done")
    assert [json.loads(data)["seq"] for data, _ in kept] == list(range(1, len(kept) + 1))


def _kept(state: Path, stream_id: str) -> list[tuple[bytes, str]]:
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT data FROM events WHERE stream_id = ? ORDER BY seq", (stream_id,)).fetchall()
    return [(data, json.loads(data)["type"]) for (data,) in rows]

