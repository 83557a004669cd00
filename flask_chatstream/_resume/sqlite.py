"""One machine, several workers: what gunicorn's workers share with no server to run.

gunicorn hands each connection to whichever worker accepts it first, so a stop, a resume or a second
stream of the same client lands on any worker. Without Redis they meet here: a SQLite database in WAL
mode in the app's instance folder (``instance/chatstream.sqlite3``; ``state_path`` moves it)::

    streams(id, scope, owner, chat_id, pid, state, first, reader_until, ended_at)
                                     a resumable stream's record, kept resume_ttl after it ends
    events(stream_id, seq, data)     a resumable stream's events, numbered as the client saw them
    stops(stream_id, owner, taken)   a stop asked for on one worker, until the stream's worker takes it
    slots(member, scope, owner, pid, app)
                                     the open streams counted by max_streams_per_client

Why SQLite: it is in the standard library, nothing has to be started or supervised (a hub run by the
first worker would die with it), a killed worker's records outlive it (a reader is told
``stream_lost`` instead of waiting), and WAL lets readers read while a writer writes. Every worker
runs on the same host, so a dead one is found by its pid.

The live path never waits on SQLite, and a stream that is not resumable writes nothing at all: a
stop that does not find its stream in the worker it lands on leaves a row in ``stops``, which every
worker's watcher reads every ``POLL`` seconds (an empty table, almost always), and the worker that runs
the stream takes (the stop answers 204) or nobody does (404, after ``STOP_WAIT``). A resumable stream's
events only queue; one native thread per worker (not a greenlet: SQLite's calls block the thread they
run in) writes what is queued every few milliseconds in one transaction. Queries a request must wait
for (a stop, a slot, a resume's reads) run in a native thread too, while the greenlet waits
cooperatively, with a short busy timeout. The watcher also asks whether anyone reads the streams
whose clients left.

Faults: a folder that cannot be written, or a broken database, gives one warning at startup and the
per-worker behaviour (``None`` from ``open_store``). A write that fails later (a full disk) is
logged once; the streams go on, and their records are marked broken, never served with a gap.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .. import _gevent
from .._errors import TooManyStreams
from .._stream.limits import StreamLimit, nothing, once
from .._stream.registry import STREAMS
from .journal import Batch, Found, Journal, Recording, Unavailable

log = logging.getLogger("flask_chatstream")

FLUSH = 0.05
"""How long the writer sleeps between rounds: what is queued meanwhile goes in one transaction."""
POLL = 0.1
"""How often a worker asks for stops addressed to its streams."""
STOP_WAIT = 1.0
"""How long a stop waits for some worker to take it before it answers 404."""
READ_POLL = 0.05
"""How often a resume reading a live stream asks for new events."""
LOOK_AGAIN = 2 * FLUSH
"""A stream another worker may have begun a moment ago is looked for once more after two writer rounds."""
ATTACH = 5.0
"""How long one resume read counts as someone reading."""
BUSY_MS = 200
"""Longest a query waits for another worker's write lock; past it the store counts as unavailable."""
EXPIRE_EVERY = 10.0

SCHEMA_VERSION = 3
"""The state is short-lived: a file of another version is started afresh."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY, scope TEXT NOT NULL, owner TEXT NOT NULL, chat_id TEXT, pid INTEGER NOT NULL,
    state TEXT NOT NULL, first INTEGER NOT NULL DEFAULT 1, reader_until REAL NOT NULL DEFAULT 0, ended_at REAL);
CREATE INDEX IF NOT EXISTS streams_by_pid ON streams (pid, state);
CREATE INDEX IF NOT EXISTS streams_by_chat ON streams (chat_id, state);
CREATE TABLE IF NOT EXISTS events (
    stream_id TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (stream_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stops (
    stream_id TEXT NOT NULL, owner TEXT, taken INTEGER NOT NULL DEFAULT 0, asked REAL NOT NULL);
CREATE TABLE IF NOT EXISTS slots (
    member TEXT PRIMARY KEY, scope TEXT NOT NULL, owner TEXT NOT NULL, pid INTEGER NOT NULL, app TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS slots_by_owner ON slots (scope, owner);
"""

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], object]


def alive(pid: int) -> bool:
    """Is the process still there? Every worker runs on this host, so its pid tells."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_store(path: Path, scope: str) -> HostStore | None:
    """The store at ``path``, or None, with one warning, where it cannot be had."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = _connect(path)
        try:
            connection.execute("BEGIN IMMEDIATE")
            if connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                for table in ("streams", "events", "stops", "slots"):
                    connection.execute(f"DROP TABLE IF EXISTS {table}")
            connection.execute("COMMIT")
            connection.executescript(SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            connection.close()
    except (OSError, sqlite3.Error) as exc:
        log.warning("flask_chatstream cannot keep shared state in %s (%s: %s): stops, resumes and "
                    "max_streams_per_client work per worker only. Give the app a writable instance folder, "
                    "or set state_path.", path, type(exc).__name__, exc)
        return None
    return HostStore(path, scope)


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    # No fsync, ever: the state lives for minutes and a machine that crashes loses its streams anyway.
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    return connection


class HostStore:
    """The database of one app's blueprint registration, and this worker's writer and watcher."""

    def __init__(self, path: Path, scope: str) -> None:
        self.path = path
        self.scope = scope
        self.app = uuid.uuid4().hex
        """This registration, apart from others in the same process (tests, several app objects):
        within one process only its own slots count; in other processes, all of the scope's."""
        self._pid = -1
        self._start_lock = threading.Lock()
        self._queue: deque[Write] = deque()
        self._rows: deque[tuple[str, int, bytes]] = deque()
        """Events to write, (stream id, seq, JSON): the one write of every chunk, kept cheap."""
        self._recordings: dict[str, _HostRecording] = {}
        self._failed = False
        self._idle: deque[sqlite3.Connection] = deque()
        """Connections for queries: as many as ever ran at once, whichever OS thread runs the next."""
        self._watched: dict[str, _HostRecording] = {}
        self.ttl = 600.0

    # -- this process's writer and watcher -------------------------------------------------------

    def start(self) -> None:
        """Start the writer and the watcher, once per process (safe with forking servers)."""
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._queue, self._rows, self._idle, self._watched = deque(), deque(), deque(), {}
            self._recordings = {}
            pid = os.getpid()
            # A new worker that got the pid of one that died before it: that one's streams are gone.
            # Before this worker's own streams are written, so as never to take them for those.
            try:
                self._pid = pid  # query() must not start again
                self.query(lambda c: c.execute(
                    "UPDATE streams SET state = 'lost', ended_at = ? WHERE pid = ? AND state = 'live'",
                    (time.time(), pid)))
            except Unavailable:
                pass  # the writer reports what keeps failing
            _gevent.native_thread(self._write_loop, "chatstream-host-writer")
            threading.Thread(target=self._watch_loop, name="chatstream-host-watcher", daemon=True).start()

    def queue(self, write: Write) -> None:
        """Write later, in the writer's next round: never waits."""
        self._queue.append(write)

    def query(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``read`` on a connection in a native thread, or raise ``Unavailable``."""
        self.start()

        def run() -> T:
            try:
                connection = self._idle.pop()
            except IndexError:
                connection = _connect(self.path)
            try:
                return read(connection)
            except BaseException:
                if connection.in_transaction:
                    connection.rollback()
                raise
            finally:
                self._idle.append(connection)

        try:
            return _gevent.offload(run)
        except sqlite3.Error as exc:
            log.debug("shared state query failed: %s", type(exc).__name__)
            raise Unavailable() from None

    def _write_loop(self) -> None:
        connection = _connect(self.path)
        next_expiry = time.monotonic() + EXPIRE_EVERY
        sleep = _gevent.native_sleep()
        while True:
            sleep(FLUSH)
            if not (self._queue or self._rows):
                continue
            writes, rows = [], []
            while self._queue:
                writes.append(self._queue.popleft())
            while self._rows:  # after the writes: a stream's end is never written before its events
                rows.append(self._rows.popleft())
            try:
                connection.execute("BEGIN IMMEDIATE")
                for write in writes:
                    write(connection)
                connection.executemany("INSERT OR REPLACE INTO events (stream_id, seq, data) VALUES (?, ?, ?)", rows)
                if time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + EXPIRE_EVERY
                    self._expire(connection)
                connection.execute("COMMIT")
                if self._failed:
                    self._failed = False
                    log.warning("shared state in %s is written again", self.path)
            except sqlite3.Error as exc:
                if connection.in_transaction:
                    connection.rollback()
                if not self._failed:
                    self._failed = True
                    log.warning("shared state in %s cannot be written (%s): streams go on, but their records "
                                "are incomplete until it can", self.path, type(exc).__name__)
                for stream_id in {row[0] for row in rows}:
                    recording = self._recordings.get(stream_id)
                    if recording is not None:
                        recording.broke()
            except Exception:  # pragma: no cover - the loop must outlive a bug
                log.exception("the shared state writer failed; it goes on")

    def _expire(self, connection: sqlite3.Connection) -> None:
        """Forget what has outlived resume_ttl, and mark the streams of workers that died as lost."""
        now = time.time()
        for (pid,) in connection.execute("SELECT DISTINCT pid FROM streams WHERE state = 'live'").fetchall():
            if not alive(pid):
                connection.execute("UPDATE streams SET state = 'lost', ended_at = ? WHERE pid = ? AND state = 'live'",
                                   (now, pid))
                connection.execute("DELETE FROM slots WHERE pid = ?", (pid,))
        before = now - self.ttl
        connection.execute("DELETE FROM events WHERE stream_id IN (SELECT id FROM streams WHERE state != 'live' "
                           "AND ended_at < ?)", (before,))
        connection.execute("DELETE FROM streams WHERE state != 'live' AND ended_at < ?", (before,))
        connection.execute("DELETE FROM stops WHERE asked < ?", (now - 10 * STOP_WAIT,))  # their askers died

    def _watch_loop(self) -> None:
        """Stops for this worker's streams, asked for on any worker; readers of streams whose clients left."""
        while True:
            time.sleep(POLL)
            try:
                stops, readers = self.query(self._watch)
            except Unavailable:
                continue
            except Exception:  # pragma: no cover - the loop must outlive a bug
                log.exception("the shared state watcher failed; it goes on")
                continue
            taken = [rowid for rowid, stream_id, owner in stops if STREAMS.stop_if_here(stream_id, owner)]
            if taken:
                self.queue(_mark_taken(taken))
            for recording in list(self._watched.values()):
                recording.readers_seen = readers.get(recording.id, 0.0) > time.time()

    def _watch(self, connection: sqlite3.Connection) -> tuple[list[tuple[int, str, str | None]], dict[str, float]]:
        stops = connection.execute("SELECT rowid, stream_id, owner FROM stops WHERE taken = 0").fetchall()
        watched = list(self._watched)
        readers: dict[str, float] = {}
        for index in range(0, len(watched), 500):
            part = watched[index:index + 500]
            marks = ",".join("?" * len(part))
            readers.update(connection.execute(f"SELECT id, reader_until FROM streams WHERE id IN ({marks})", part))
        return stops, readers

    # -- streams ---------------------------------------------------------------------------------

    def register(self, recording: _HostRecording, owner: str, chat_id: str | None) -> None:
        """A resumable stream starts. Written in the writer's next round, FLUSH later: long before its
        client can have dropped its connection and come back with the id (``find`` looks twice). Not
        on the request's path: written there, through a native thread, it cost 11% more CPU per
        resumable request (bench.compare, 5 runs). A worker starved of CPU can lag further; a reader
        that comes back within that lag gets 404 and may ask again."""
        self.start()
        self._recordings[recording.id] = recording
        row = (recording.id, self.scope, owner, chat_id, self._pid)
        self.queue(lambda c: c.execute("INSERT OR REPLACE INTO streams (id, scope, owner, chat_id, pid, state) "
                                       "VALUES (?, ?, ?, ?, ?, 'live')", row))

    def ended(self, stream_id: str) -> None:
        self._recordings.pop(stream_id, None)
        stamp = time.time()
        self.queue(lambda c: c.execute("UPDATE streams SET state = 'ended', ended_at = ? WHERE id = ? "
                                       "AND state = 'live'", (stamp, stream_id)))

    def stop(self, stream_id: str, owner: str | None) -> bool:
        """Ask whichever worker runs the stream to stop it (``owner``: only if this client started it).
        True once that worker has taken the stop; False if none has within ``STOP_WAIT``."""
        asked = self.query(lambda c: c.execute("INSERT INTO stops (stream_id, owner, asked) VALUES (?, ?, ?)",
                                               (stream_id, owner, time.time())).lastrowid)
        deadline = time.monotonic() + STOP_WAIT
        taken = False
        while not taken and time.monotonic() < deadline:
            time.sleep(POLL / 2)
            taken = bool(self.query(lambda c: c.execute("SELECT taken FROM stops WHERE rowid = ?",
                                                        (asked,)).fetchone()[0]))
        self.queue(lambda c: c.execute("DELETE FROM stops WHERE rowid = ?", (asked,)))
        return taken


def _mark_taken(rowids: list[int]) -> Write:
    rows = [(rowid,) for rowid in rowids]
    return lambda c: c.executemany("UPDATE stops SET taken = 1 WHERE rowid = ?", rows)


class _HostRecording(Recording):
    def __init__(self, store: HostStore, journal: HostJournal, stream_id: str) -> None:
        super().__init__()
        self._store = store
        self._journal = journal
        self.id = stream_id
        self._broken = False

    def watch_readers(self) -> None:
        self._store._watched[self.id] = self

    def _keep(self, data: list[bytes], ended: bool) -> None:
        if self._broken:
            return
        stream_id, seq = self.id, self.seq - len(data)
        self._store._rows.extend((stream_id, seq + i, event) for i, event in enumerate(data, 1))
        if self.seq > self._journal.max_events:  # the oldest go: a resume from before them is 410
            first = self.seq - self._journal.max_events + 1
            self._store.queue(lambda c: (
                c.execute("DELETE FROM events WHERE stream_id = ? AND seq < ?", (stream_id, first)),
                c.execute("UPDATE streams SET first = ? WHERE id = ?", (first, stream_id))))
        if ended:
            self._store._watched.pop(self.id, None)
            self._store.ended(self.id)

    def broke(self) -> None:
        """Some events could not be written: the record cannot be replayed whole."""
        if not self._broken:
            self._broken = True
            stream_id = self.id
            self._store.queue(lambda c: c.execute("UPDATE streams SET state = 'broken', ended_at = ? WHERE id = ?",
                                                  (time.time(), stream_id)))


class HostJournal(Journal):
    """Resumable streams in the host's database: a resume works on every worker of this machine."""

    def __init__(self, store: HostStore, ttl: float, max_events: int) -> None:
        self.store = store
        store.ttl = ttl
        self.max_events = max_events

    def begin(self, stream_id: str, owner: str, chat_id: str | None) -> Recording | None:
        recording = _HostRecording(self.store, self, stream_id)
        self.store.register(recording, owner, chat_id)
        return recording

    def find(self, stream_id: str) -> Found | None:
        def look(c: sqlite3.Connection) -> Any:
            return c.execute("SELECT owner, first, state FROM streams WHERE id = ?", (stream_id,)).fetchone()

        if stream_id in self.store._recordings:
            # Begun in this process: its row is queued here, so it is coming however starved the
            # writer is. Wait for it rather than answer 404 to a resume on the stream's own worker.
            row = _look(look, self.store, times=int(ATTACH / FLUSH), every=FLUSH)
        else:
            row = _look(look, self.store, times=2, every=LOOK_AGAIN)
        if row is None:
            return None
        owner, first, state = row
        return Found(owner, first, state == "live")

    def read(self, stream_id: str, after: int, wait: float) -> Batch:
        deadline = time.monotonic() + wait
        until = time.time() + ATTACH
        self.store.queue(lambda c: c.execute("UPDATE streams SET reader_until = ? WHERE id = ?", (until, stream_id)))
        while True:
            events, state, pid = self.store.query(lambda c: _events_after(c, stream_id, after))
            if events:
                return Batch(events)
            if state != "live" or not alive(pid):
                # Ended with its terminal event already read (a reader never asks past it), broken,
                # expired, or its worker died: nothing more will come.
                return Batch([], lost=True)
            if time.monotonic() >= deadline:
                return Batch([])
            time.sleep(READ_POLL)

    def active(self, chat_id: str) -> str | None:
        row = _look(lambda c: c.execute(
            "SELECT id FROM streams WHERE chat_id = ? AND state = 'live' ORDER BY rowid DESC LIMIT 1",
            (chat_id,)).fetchone(), self.store, times=2, every=LOOK_AGAIN)
        return None if row is None else str(row[0])

    def stop(self, stream_id: str) -> None:
        STREAMS.stop_here(stream_id)
        self.store.stop(stream_id, None)


def _look(look: Callable[[sqlite3.Connection], Any], store: HostStore, *, times: int, every: float) -> Any:
    """A stream's row, looked for up to ``times`` times, ``every`` seconds apart, while it is not there:
    it may have begun a moment ago, its registration still queued in its worker's writer. From another
    worker, look once more after two writer rounds (a reload of useChat's page, say)."""
    row = store.query(look)
    for _ in range(times - 1):
        if row is not None:
            break
        time.sleep(every)
        row = store.query(look)
    return row


def _events_after(connection: sqlite3.Connection, stream_id: str, after: int) -> tuple[list[bytes], Any, int]:
    events = [row[0] for row in connection.execute(
        "SELECT data FROM events WHERE stream_id = ? AND seq > ? ORDER BY seq LIMIT 1000", (stream_id, after))]
    row = connection.execute("SELECT state, pid FROM streams WHERE id = ?", (stream_id,)).fetchone()
    state, pid = row if row is not None else (None, 0)
    return events, state, pid


class HostLimit(StreamLimit):
    """``max_streams_per_client`` across the workers of this machine. A dead worker's slots are
    dropped when they are counted. While the database cannot be had, the count is this worker's."""

    def __init__(self, store: HostStore, limit: int) -> None:
        super().__init__(limit)
        self.store = store

    def sibling(self, limit: int) -> StreamLimit:
        return HostLimit(self.store, limit)

    def acquire(self, key: str, error: type[TooManyStreams] = TooManyStreams) -> Callable[[], None]:
        if not self.limit:
            return nothing
        store = self.store
        member = uuid.uuid4().hex
        try:
            taken = store.query(lambda c: self._take(c, key, member))
        except Unavailable:
            return super().acquire(key, error)
        if not taken:
            raise error()

        def release() -> None:
            try:
                store.query(lambda c: c.execute("DELETE FROM slots WHERE member = ?", (member,)))
            except Unavailable:
                store.queue(lambda c: c.execute("DELETE FROM slots WHERE member = ?", (member,)))

        return once(release)

    def _take(self, connection: sqlite3.Connection, key: str, member: str) -> bool:
        connection.execute("BEGIN IMMEDIATE")
        held = connection.execute("SELECT member, pid, app FROM slots WHERE scope = ? AND owner = ?",
                                  (self.store.scope, key)).fetchall()
        dead = [(m,) for m, pid, _ in held if not alive(pid)]
        if dead:
            connection.executemany("DELETE FROM slots WHERE member = ?", dead)
        me = os.getpid()
        count = sum(1 for _, pid, app in held if (pid != me or app == self.store.app) and alive(pid))
        if count >= self.limit:
            connection.execute("COMMIT")
            return False
        connection.execute("INSERT INTO slots (member, scope, owner, pid, app) VALUES (?, ?, ?, ?, ?)",
                           (member, self.store.scope, key, me, self.store.app))
        connection.execute("COMMIT")
        return True
