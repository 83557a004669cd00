"""The in-memory journal of resumable streams, the numbering every journal shares, and the machine's
shared state in process. (Redis is tested end to end, with a real redis-server, in test_resume.py; the
shared state across gunicorn workers in test_host_state.py.)"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from flask_chatstream._resume.journal import Found, MemoryJournal
from flask_chatstream._errors import TooManyStreams
from flask_chatstream._resume import machine
from flask_chatstream._resume.machine import HostJournal, HostLimit
from flask_chatstream._resume.sqlite import open_store

from .conftest import eventually


def delta(text: str) -> dict[str, object]:
    return {"type": "delta", "content": text}


def test_events_are_numbered_in_place_from_one_and_kept_in_order() -> None:
    journal = MemoryJournal(ttl=60, max_events=100)
    recording = journal.begin("s", "alice", None)
    live = [{"type": "start", "id": "c", "model": "m", "stream_id": "s"}, delta("a")]
    recording.add(live)
    recording.add([delta("b")])
    assert [e["seq"] for e in live] == [1, 2]  # the live client sees the same numbers
    kept = [orjson.loads(e) for e in journal.read("s", 0, wait=0).events]
    assert [(e["seq"], e["type"]) for e in kept] == [(1, "start"), (2, "delta"), (3, "delta")]
    assert [e["seq"] for e in (orjson.loads(e) for e in journal.read("s", 2, wait=0).events)] == [3]
    assert journal.find("s") == Found("alice", 1, live=True)


def test_the_first_terminal_event_ends_the_record_and_nothing_follows_it() -> None:
    journal = MemoryJournal(ttl=60, max_events=100)
    recording = journal.begin("s", "alice", None)
    recording.add([delta("a"), {"type": "done", "finish_reason": "stop", "usage": None}])
    recording.end({"type": "error", "error": {"code": "stopped", "message": "x"}})  # too late: ignored
    recording.add([delta("late")])
    kept = [orjson.loads(e)["type"] for e in journal.read("s", 0, wait=0).events]
    assert kept == ["delta", "done"]
    assert journal.find("s") == Found("alice", 1, live=False)


def test_end_closes_a_record_that_has_no_terminal_event_yet() -> None:
    journal = MemoryJournal(ttl=60, max_events=100)
    recording = journal.begin("s", "alice", None)
    recording.add([delta("a")])
    recording.end({"type": "error", "error": {"code": "client_left", "message": "x"}})
    kept = [orjson.loads(e) for e in journal.read("s", 1, wait=0).events]
    assert kept == [{"type": "error", "error": {"code": "client_left", "message": "x"}, "seq": 2}]


def test_past_max_events_the_oldest_are_dropped_and_first_says_from_where() -> None:
    journal = MemoryJournal(ttl=60, max_events=3)
    recording = journal.begin("s", "alice", None)
    recording.add([delta(str(i)) for i in range(5)])
    found = journal.find("s")
    assert found is not None and found.first == 3
    assert [orjson.loads(e)["seq"] for e in journal.read("s", 2, wait=0).events] == [3, 4, 5]
    assert [orjson.loads(e)["seq"] for e in journal.read("s", 4, wait=0).events] == [5]


def test_a_read_waits_for_the_next_event() -> None:
    journal = MemoryJournal(ttl=60, max_events=100)
    recording = journal.begin("s", "alice", None)
    recording.add([delta("a")])
    reading = threading.Event()
    got: list[list[bytes]] = []

    def reader() -> None:
        reading.set()
        got.append(journal.read("s", 1, wait=30).events)

    thread = threading.Thread(target=reader)
    thread.start()
    reading.wait()
    recording.add([delta("b")])  # wakes the reader, wherever it is in its wait
    thread.join(timeout=30)
    assert [orjson.loads(e)["content"] for e in got[0]] == ["b"]


def test_ended_streams_expire_after_the_ttl_and_unknown_ones_are_not_found() -> None:
    journal = MemoryJournal(ttl=0, max_events=100)
    recording = journal.begin("s", "alice", "chat-1")
    assert journal.active("chat-1", "alice") == "s"
    assert journal.active("chat-1", "mallory") is None  # chat ids are the client's: per client
    recording.add([delta("a")])
    assert journal.find("s") is not None  # live streams never expire
    recording.end({"type": "done", "finish_reason": "stop", "usage": None})
    assert journal.active("chat-1", "alice") is None  # the chat has no running answer any more
    assert journal.find("s") is None
    assert journal.find("never") is None
    assert journal.read("never", 0, wait=0).lost


def test_attach_counts_readers_while_they_read() -> None:
    journal = MemoryJournal(ttl=60, max_events=100)
    recording = journal.begin("s", "alice", None)
    assert not recording.attached
    with journal.attach("s"):
        with journal.attach("s"):
            assert recording.attached
        assert recording.attached
    assert not recording.attached


def test_a_resume_on_the_streams_own_worker_waits_for_its_record_however_late(tmp_path: Path) -> None:
    """Regression: under CPU load the writer lagged past the two looks an unknown stream gets, and a
    resume on the very worker running the stream was 404 (stream_not_found). Its row is queued in this
    process, so find() waits for it."""
    store = open_store(tmp_path / "state.sqlite3", "test")
    assert store is not None
    journal = HostJournal(store, ttl=60, max_events=100)
    writer_free = threading.Event()
    store.start()
    store.queue(lambda connection: writer_free.wait(30))  # the writer, starved: stuck in a round
    journal.begin("s", "alice", None)  # its registration queued behind
    looks = []
    query = store.query

    def counted(read: Callable[[sqlite3.Connection], Any]) -> Any:
        looks.append(read)
        return query(read)

    store.query = counted  # type: ignore[method-assign]
    found: list[Found | None] = []
    finder = threading.Thread(target=lambda: found.append(journal.find("s")))
    finder.start()
    eventually(lambda: len(looks), lambda n: n >= 3)  # past the two looks that answer an unknown id
    assert not found
    writer_free.set()
    finder.join(30)
    assert found == [Found("alice", 1, live=True)]
    assert journal.find("unknown") is None  # an id this process does not hold: two looks, then no


def test_a_stream_cap_counts_a_busy_key_per_worker_not_per_slot(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One key can hold thousands of slots (the default key is the remote address: every user behind one
    proxy). Taking one more asks after each worker that holds them once, not each slot: per slot, every
    new stream cost what all that key's open ones did, and 1,500 streams arriving in 3 s waited 4 s."""
    store = open_store(tmp_path / "state.sqlite3", "test")
    assert store is not None
    limit = HostLimit(store, 10_000)
    releases = [limit.acquire("everyone behind the proxy") for _ in range(200)]
    asked: list[int] = []
    real = machine.alive
    monkeypatch.setattr(machine, "alive", lambda pid: asked.append(pid) or real(pid))
    releases.append(limit.acquire("everyone behind the proxy"))
    assert asked == [os.getpid()]  # 201 slots, one worker: asked once
    for release in releases:
        release()
    with pytest.raises(TooManyStreams):  # and the count is still right
        two = HostLimit(store, 2)
        held = [two.acquire("k"), two.acquire("k")]
        two.acquire("k")
    for release in held:
        release()
