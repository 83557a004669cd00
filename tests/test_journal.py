"""The in-memory journal of resumable streams, and the numbering every journal shares. (Redis is
tested end to end, with a real redis-server, in test_resume.py.)"""

from __future__ import annotations

import threading

import orjson

from flask_chatstream._resume.journal import Found, MemoryJournal


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
    assert journal.active("chat-1") == "s"
    recording.add([delta("a")])
    assert journal.find("s") is not None  # live streams never expire
    recording.end({"type": "done", "finish_reason": "stop", "usage": None})
    assert journal.active("chat-1") is None  # the chat has no running answer any more
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
