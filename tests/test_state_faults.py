"""The machine's state file breaks while streams run (the third attack round): deleted, overwritten with
garbage, cut short, or its disk full. Under gunicorn with two gevent workers and resumable streams:
the streams go on, new chats work, each worker logs a few lines and no traceback, the file is started
afresh by itself, ``readyz`` says when it cannot be had, and every resume ends."""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import subprocess
from contextlib import closing
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_chatstream._resume.sqlite import open_store
from flask_chatstream.testing import Script, StandInServer

from .conftest import API_KEY, eventually
from .servers import Gunicorn
from .streams import answer_of, events_of, post_chat, read_until

pytestmark = pytest.mark.server

REPLY = "one two three four five six"
WORKERS = 2


def serve(upstream: StandInServer, state: Path) -> Gunicorn:
    env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": upstream.url, "CHATSTREAM_RESUMABLE": "1",
           "CHATSTREAM_STATE_PATH": str(state), "CHATSTREAM_ALLOWED_MODELS": "held",
           "CHATSTREAM_HEARTBEAT": "0.5", "CHATSTREAM_ON_CLIENT_LEAVE": "stop"}
    return Gunicorn("tests.resume_app:app", env=env, workers=WORKERS)


def held_streams(server: Gunicorn, count: int) -> list[tuple[http.client.HTTPConnection, http.client.HTTPResponse]]:
    started = []
    for i in range(count):
        conn, response = post_chat(server.port, "ndjson", {"content": "hi", "model": "held"}, timeout=60,
                                   headers={"X-User": f"user{i}"})
        assert response.status == 200
        read_until(response, b"two")
        started.append((conn, response))
    return started


def readiness(server: Gunicorn) -> dict[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/api/readyz")
    checks: dict[str, str] = json.loads(conn.getresponse().read())["checks"]
    conn.close()
    return checks


def resume(server: Gunicorn, stream_id: str, user: str) -> list[dict[str, object]]:
    """The whole replay of a stream: it must end (the read is bounded only so a broken build fails). A
    resume on another worker within its writer's lag is a 404, and asks again, as chatstream.js does; so
    is a 503 from a worker that has not yet found the damaged file (its next round or check starts it
    afresh: the readiness check that passed was another worker's)."""

    def replay() -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", f"/api/chat/{stream_id}?format=ndjson", headers={"X-User": user})
        response = conn.getresponse()
        status, body = response.status, response.read()
        conn.close()
        return status, body

    status, body = eventually(replay, lambda answer: answer[0] not in (404, 503))
    assert status == 200, body
    return [e for e in events_of("ndjson", body) if e["type"] != "ping"]


def a_new_chat_works(server: Gunicorn, user: str) -> str:
    conn, response = post_chat(server.port, "ndjson", {"content": "hi"}, timeout=60, headers={"X-User": user})
    events = events_of("ndjson", response.read())
    conn.close()
    assert response.status == 200 and answer_of(events) == REPLY and events[-1]["type"] == "done"
    return str(events[0]["stream_id"])


def quiet(log: str) -> None:
    """No traceback, and a few lines about the state per worker, not a flood."""
    assert "Traceback" not in log and "failed with" not in log, log[-4000:]
    about_state = [line for line in log.splitlines() if "shared state" in line]
    assert len(about_state) <= 3 * WORKERS, "\n".join(about_state)


def damage(path: Path, fault: str) -> None:
    if fault == "delete":
        for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            each.unlink(missing_ok=True)
    elif fault == "garbage":
        path.write_bytes(os.urandom(64 * 1024))
    else:  # truncate: cut short past its header
        with path.open("r+b") as file:
            file.truncate(2048)


@pytest.mark.parametrize("fault", ["delete", "garbage", "truncate"])
def test_a_state_file_that_breaks_is_started_afresh(upstream: StandInServer, tmp_path: Path, fault: str) -> None:
    upstream.scripts["held"] = Script(reply=REPLY, hold_after=2)
    upstream.script = Script(reply=REPLY)
    state = tmp_path / "state.sqlite3"
    with serve(upstream, state) as server:
        running = held_streams(server, 4)
        a_new_chat_works(server, "before")
        damage(state, fault)
        # The workers find it within a round or a check, start it afresh, and the state is ready again.
        eventually(lambda: readiness(server), lambda checks: checks.get("state") == "ok" and state.exists()
                   and state.read_bytes().startswith(b"SQLite format 3"))
        upstream.release()
        for conn, response in running:  # the streams that ran through it went on, to their end
            assert events_of("ndjson", response.read())[-1]["type"] == "done"
            conn.close()
        stream_id = a_new_chat_works(server, "after")
        again = resume(server, stream_id, "after")  # kept again, whole, on whichever worker
        assert answer_of(again) == REPLY and again[-1]["type"] == "done"
        quiet(server.log())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs of its own, to fill."""
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def kept(state: Path) -> set[str]:
    """The streams whose records are in the file."""
    with closing(sqlite3.connect(f"{state.as_uri()}?mode=ro", uri=True)) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM streams")}


def fill(disk: Path) -> None:
    with (disk / "filler").open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass


def test_a_writer_that_failed_finds_room_again_with_nothing_to_write(small_disk: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Once its write failed, a worker's store is not ready until it writes again; when the disk has room
    again it must find out by itself, or an idle worker's readyz would say "unavailable" until its next
    stream (as it did in CI: both workers of the full-disk case below had failed, and no stream came)."""
    store = open_store(small_disk / "state.sqlite3", "test")
    assert store is not None and store.ready()
    store.start()
    fill(small_disk)
    big = os.urandom(512 * 1024)
    store.queue(lambda c: c.execute("INSERT INTO events (stream_id, seq, data) VALUES ('s', 1, ?)", (big,)))
    eventually(lambda: caplog.text, lambda said: "cannot be written" in said)  # its write failed
    (small_disk / "filler").unlink()
    eventually(store.ready, bool)  # nothing more was queued


def test_a_worker_that_starts_on_a_full_disk_keeps_the_file(small_disk: Path) -> None:
    """A worker started (or restarted) while the disk is full takes the store as it is: a failed write is
    not a damaged file, so the others' records are not moved aside (as they were, once, in CI), and the
    worker shares the store once there is room, not only after its next restart."""
    state = small_disk / "state.sqlite3"
    assert open_store(state, "test") is not None
    with closing(sqlite3.connect(state, isolation_level=None)) as connection:
        connection.execute("INSERT INTO workers (pid, scope) VALUES (1, 'another worker')")
    fill(small_disk)
    late = open_store(state, "test")
    assert late is not None and not late.ready()
    late.start()
    assert not state.with_name(state.name + ".broken").exists()
    (small_disk / "filler").unlink()
    eventually(late.ready, bool)
    with closing(sqlite3.connect(f"{state.as_uri()}?mode=ro", uri=True)) as connection:
        assert ("another worker",) in connection.execute("SELECT scope FROM workers").fetchall()


def test_a_full_disk_ends_every_resume_and_recovers(upstream: StandInServer, small_disk: Path) -> None:
    """The end of a stream cannot be written: a resume of it still ends (``stream_lost`` once its worker
    has not written for a while), readyz says the state is unavailable, and once there is room again
    streams are kept again."""
    upstream.scripts["held"] = Script(reply=REPLY, hold_after=2)
    upstream.script = Script(reply=REPLY)
    state = small_disk / "state.sqlite3"
    with serve(upstream, state) as server:
        running = held_streams(server, 3)
        ids = [str(response.getheader("X-Chat-Stream-Id")) for _, response in running]
        eventually(lambda: kept(state), lambda found: found >= set(ids))  # their records are written
        fill(small_disk)
        upstream.release()
        for conn, response in running:
            events = events_of("ndjson", response.read())
            assert events[-1]["type"] == "done"  # the client has its whole answer, full disk or not
            conn.close()
        for i, stream_id in enumerate(ids):
            events = resume(server, stream_id, f"user{i}")  # ends: whole, or cut and said so
            last = events[-1]
            assert last["type"] == "done" or last == {"type": "error", "error": {
                "code": "stream_lost", "message": "The server running the stream stopped before the answer was complete."}}
        eventually(lambda: readiness(server), lambda checks: checks.get("state") == "unavailable")
        (small_disk / "filler").unlink()
        eventually(lambda: readiness(server), lambda checks: checks.get("state") == "ok")
        stream_id = a_new_chat_works(server, "after")
        assert resume(server, stream_id, "after")[-1]["type"] == "done"
        quiet(server.log())
