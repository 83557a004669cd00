"""One machine, several workers: what gunicorn's workers share with no server to run.

gunicorn hands each connection to whichever worker accepts it first, so a stop, a resume or a second
stream of the same client lands on any worker. Without Redis they meet here: a SQLite database in WAL
mode in the app's instance folder (``instance/chatstream.sqlite3``; ``state_path`` moves it)::

    streams(id, scope, owner, chat_id, pid, state, first, reader_until, ended_at, beat)
                                     a resumable stream's record, kept resume_ttl after it ends
    events(stream_id, seq, data)     a resumable stream's events, numbered as the client saw them
    stops(stream_id, owner, taken)   a stop asked for on one worker, until the stream's worker takes it
    slots(member, scope, owner, pid, app)
                                     the open streams counted by max_streams_per_client
    workers(pid, scope)              the workers that serve the blueprint, for stops

Why SQLite: it is in the standard library, nothing has to be started or supervised (a hub run by the
first worker would die with it), a killed worker's records outlive it (a reader is told
``stream_lost`` instead of waiting), and WAL lets readers read while a writer writes. Every worker
runs on the same host, so a dead one is found by its pid.

The live path never waits on SQLite, and a stream that is not resumable writes nothing at all: a
stop that does not find its stream in the worker it lands on leaves a row in ``stops``, which every
worker's watcher reads every ``POLL`` seconds (an empty table, almost always), and the worker that runs
the stream (its id names it) takes it (the stop answers 204) or says it is not there (404); an id that
no worker of the blueprint runs is a 404 at once, and ``STOP_WAIT`` bounds a worker that never answers. A resumable stream's
events only queue; one native thread per worker (not a greenlet: SQLite's calls block the thread they
run in) writes what is queued every few milliseconds in one transaction. Queries a request must wait
for (a stop, a slot, a resume's reads) run in a native thread too, while the greenlet waits
cooperatively, with a short busy timeout. The watcher also asks whether anyone reads the streams
whose clients left.

Faults: a folder that cannot be written gives one warning at startup and the per-worker behaviour
(``None`` from ``open_store``); a file there that is not a database is moved aside (``<name>.broken``)
and made again. Later, while streams run:

- A write that fails (a full disk) is logged once per worker, and once more when writing works again;
  the streams go on, and their records are marked broken, never served with a gap.
- A file that is deleted, overwritten or cut short is found by each worker's writer within a round or
  a ``CHECK_EVERY``, logged once, and started afresh (a file that is not a database is moved aside to
  ``<name>.broken``): the records in it are lost, their streams go on, and new ones are kept again.
- Each worker's writer beats for its live streams every ``BEAT`` seconds: a resume whose stream has
  not beaten for ``LOST_AFTER`` (its writer cannot write, or its worker hangs) ends with
  ``stream_lost`` rather than waiting for an end that cannot be written.
- A query that fails is ``Unavailable`` (a debug line, never a traceback); ``ready()`` says so to
  ``readyz`` while the file cannot be read or written.
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
from .._stream.registry import STREAMS, worker_number, worker_of
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
CHECK_EVERY = 1.0
"""How often a worker's writer makes sure the file it writes is still the one at the path."""
BEAT = 1.0
"""How often a worker's writer marks its live streams as still being written."""
LOST_AFTER = 10.0
"""A live stream that has not beaten for this long is lost: its resume ends with ``stream_lost``."""

SAY_AGAIN = 60.0
"""A writer that fails again within this long after it said so says nothing more."""
FULL_BELOW = 256 * 1024
"""Free bytes on the file's disk below which ``ready`` says no."""

SCHEMA_VERSION = 4
"""The state is short-lived: a file of another version is started afresh."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY, scope TEXT NOT NULL, owner TEXT NOT NULL, chat_id TEXT, pid INTEGER NOT NULL,
    state TEXT NOT NULL, first INTEGER NOT NULL DEFAULT 1, reader_until REAL NOT NULL DEFAULT 0, ended_at REAL,
    beat REAL NOT NULL DEFAULT 0);
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
CREATE TABLE IF NOT EXISTS workers (pid INTEGER NOT NULL, scope TEXT NOT NULL, PRIMARY KEY (pid, scope));
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
        _recreate(path)  # a file that is not a database (any more) is moved aside, and made again
    except (OSError, sqlite3.Error) as exc:
        if isinstance(exc, sqlite3.OperationalError) and path.exists() and _disk_full(path):
            # A worker (re)started while the disk is full: the store is there, and is written again,
            # by this worker too, once there is room.
            store = HostStore(path, scope)
            store._fail(exc)
            return store
        log.warning("flask_chatstream cannot keep shared state in %s (%s: %s): stops, resumes and "
                    "max_streams_per_client work per worker only. Give the app a writable instance folder, "
                    "or set state_path.", path, type(exc).__name__, exc)
        return None
    return HostStore(path, scope)


def _create(path: Path) -> None:
    """Make the file's tables, afresh where they are of another version. A file already of this version is
    left as it is, with nothing written: a worker that starts while the disk is full still opens it."""
    connection = _connect(path)
    try:
        connection.execute("BEGIN IMMEDIATE")
        if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            connection.execute("COMMIT")
            return
        for table in ("streams", "events", "stops", "slots", "workers"):
            connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute("COMMIT")
        connection.executescript(SCHEMA)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        connection.close()


def _recreate(path: Path, damaged: int | None = None) -> None:
    """Start the file afresh after it was deleted or damaged; one that is not a database any more (or
    still the file of inode ``damaged``, found so by a write) is moved aside (``<name>.broken``), unless
    another worker has made it good meanwhile."""
    if damaged is None or _inode(path) != damaged:
        try:
            _create(path)
            return
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise  # busy, or its disk full: the file is the store, and is kept
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    try:
        os.replace(path, path.with_name(path.name + ".broken"))
    except FileNotFoundError:
        pass
    _create(path)


def _damaged(error: sqlite3.Error) -> bool:
    """Does the error say that the file is not (or no longer) the store, rather than that it is busy or full?"""
    text = str(error).lower()
    return any(sign in text for sign in ("not a database", "malformed", "no such table", "no such column"))


def _disk_full(path: Path) -> bool:
    """Is the file's disk (all but) full? Then its writes fail, on whichever worker has something to write."""
    try:
        disk = os.statvfs(path.parent)
    except OSError:
        return False
    return disk.f_bavail * disk.f_frsize < FULL_BELOW


def _open(path: Path) -> sqlite3.Connection:
    """The writer's connection, even where the file cannot be set up now (a full disk): its writes
    fail, and what they fail with decides what is done next."""
    try:
        return _connect(path)
    except sqlite3.Error:
        return sqlite3.connect(path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


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
        self._said_failed = False
        self._last_said = -SAY_AGAIN
        self._generation = 0
        """Bumped when the file is started afresh: connections to the old one are not used again."""

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
                self.query(lambda c: (
                    c.execute("UPDATE streams SET state = 'lost', ended_at = ? WHERE pid = ? AND state = 'live'",
                              (time.time(), pid)),
                    c.execute("INSERT OR REPLACE INTO workers (pid, scope) VALUES (?, ?)", (pid, self.scope))))
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
            generation = self._generation
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
                if generation == self._generation:
                    self._idle.append(connection)
                else:
                    connection.close()  # of a file that has been started afresh since

        try:
            return _gevent.offload(run)
        except sqlite3.Error as exc:
            log.debug("shared state query failed: %s", type(exc).__name__)
            raise Unavailable() from None

    def ready(self) -> bool:
        """Is the file at the path the store, and is it written? (For ``readyz``: stops, resumes and caps
        across workers depend on it.) A connection of its own: a pooled one may hold a deleted file."""

        def look() -> None:
            connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True, timeout=BUSY_MS / 1000)
            try:
                connection.execute("SELECT 1 FROM stops LIMIT 1").fetchall()
            finally:
                connection.close()

        if self._failed or _disk_full(self.path):
            return False
        try:
            _gevent.offload(look)
        except sqlite3.Error:
            return False
        return True

    def _write_loop(self) -> None:
        connection, inode = _open(self.path), _inode(self.path)
        now = time.monotonic()
        next_expiry, next_check, next_beat = now + EXPIRE_EVERY, now + CHECK_EVERY, now + BEAT
        sleep = _gevent.native_sleep()
        while True:
            sleep(FLUSH)
            now = time.monotonic()
            retry = False
            if now >= next_check:
                next_check = now + CHECK_EVERY
                if _inode(self.path) != inode:  # deleted, or replaced by another file
                    connection, inode = self._start_afresh(connection, "deleted or replaced")
                # A writer that failed finds out whether it can write again with nothing of its own to
                # write, so that readyz recovers without waiting for the next stream.
                retry = self._failed
            beat = bool(self._recordings) and now >= next_beat
            if not (self._queue or self._rows or beat or retry):
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
                if beat:
                    next_beat = now + BEAT
                    self._beat(connection)
                if retry:
                    connection.execute("INSERT OR REPLACE INTO workers (pid, scope) VALUES (?, ?)",
                                       (os.getpid(), self.scope))
                if now >= next_expiry:
                    next_expiry = now + EXPIRE_EVERY
                    self._expire(connection)
                connection.execute("COMMIT")
                if self._failed:
                    self._failed = False
                    if self._said_failed:
                        self._said_failed = False
                        log.warning("shared state in %s is written again", self.path)
            except sqlite3.Error as exc:
                if connection.in_transaction:
                    connection.rollback()
                self._lose(rows)
                if _damaged(exc):
                    connection, inode = self._start_afresh(connection, f"damaged: {exc}", inode)
                else:
                    self._fail(exc)
            except Exception:  # pragma: no cover - the loop must outlive a bug
                log.exception("the shared state writer failed; it goes on")

    def _fail(self, exc: sqlite3.Error) -> None:
        """A write failed on a file that is the store (busy, its disk full): ``ready`` says no until a
        write succeeds, which the writer tries once a ``CHECK_EVERY``."""
        if self._failed:
            return
        self._failed = True
        if self._say_again():  # a disk on the edge flaps
            self._said_failed = True
            log.warning("shared state in %s cannot be written (%s: %s): streams go on, but their records are "
                        "incomplete until it can", self.path, type(exc).__name__, exc)

    def _say_again(self) -> bool:
        """May a line about the file's trouble be logged now? One a minute at most."""
        now = time.monotonic()
        if now - self._last_said < SAY_AGAIN:
            return False
        self._last_said = now
        return True

    def _lose(self, rows: list[tuple[str, int, bytes]]) -> None:
        """Events that could not be written: their streams' records cannot be replayed whole."""
        for stream_id in {row[0] for row in rows}:
            recording = self._recordings.get(stream_id)
            if recording is not None:
                recording.broke()

    def _start_afresh(self, connection: sqlite3.Connection, why: str, damaged: int | None = None
                      ) -> tuple[sqlite3.Connection, int | None]:
        """The file is gone or is not the store any more: make it again, and write there from now on. The
        records that were in it are lost (their streams go on, but are no longer kept); once a worker."""
        connection.close()
        self._generation += 1
        while self._idle:
            self._idle.pop().close()
        for recording in list(self._recordings.values()):
            recording.broke()
        try:
            _recreate(self.path, damaged)
        except (OSError, sqlite3.Error) as exc:
            if self._say_again():  # it is tried again every round
                log.warning("shared state in %s was %s, and cannot be made again (%s: %s): streams go on; stops, "
                            "resumes and caps work again once it can", self.path, why, type(exc).__name__, exc)
        else:
            log.warning("shared state in %s was %s: started it afresh (the records of %d running streams are "
                        "lost; the streams go on)", self.path, why, len(self._recordings))
        return _open(self.path), _inode(self.path)

    def _beat(self, connection: sqlite3.Connection) -> None:
        """This worker's live streams are still being written (a resume of one that stops beating ends)."""
        stamp, live = time.time(), list(self._recordings)
        for index in range(0, len(live), 500):
            part = live[index:index + 500]
            connection.execute(f"UPDATE streams SET beat = ? WHERE id IN ({','.join('?' * len(part))})",
                               (stamp, *part))

    def _expire(self, connection: sqlite3.Connection) -> None:
        """Forget what has outlived resume_ttl, and mark the streams of workers that died as lost."""
        now = time.time()
        for (pid,) in connection.execute("SELECT DISTINCT pid FROM streams WHERE state = 'live'").fetchall():
            if not alive(pid):
                connection.execute("UPDATE streams SET state = 'lost', ended_at = ? WHERE pid = ? AND state = 'live'",
                                   (now, pid))
                connection.execute("DELETE FROM slots WHERE pid = ?", (pid,))
        for (pid,) in connection.execute("SELECT pid FROM workers").fetchall():
            if not alive(pid):
                connection.execute("DELETE FROM workers WHERE pid = ?", (pid,))
        # Live by its row, but not beating: its end could not be written (a full disk, say).
        connection.execute("UPDATE streams SET state = 'lost', ended_at = ? WHERE state = 'live' AND beat < ?",
                           (now, now - LOST_AFTER))
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
            taken, declined = [], []
            for rowid, stream_id, owner in stops:
                if STREAMS.stop_if_here(stream_id, owner):
                    taken.append(rowid)
                elif worker_of(stream_id) == worker_number(self._pid):
                    declined.append(rowid)  # ours by its id, and not running here (or not the asker's)
            if taken or declined:
                self.queue(_mark_taken(taken, declined))
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
        row = (recording.id, self.scope, owner, chat_id, self._pid, time.time())
        self.queue(lambda c: c.execute("INSERT OR REPLACE INTO streams (id, scope, owner, chat_id, pid, state, beat) "
                                       "VALUES (?, ?, ?, ?, ?, 'live', ?)", row))

    def ended(self, stream_id: str) -> None:
        self._recordings.pop(stream_id, None)
        stamp = time.time()
        self.queue(lambda c: c.execute("UPDATE streams SET state = 'ended', ended_at = ? WHERE id = ? "
                                       "AND state = 'live'", (stamp, stream_id)))

    def stop(self, stream_id: str, owner: str | None) -> bool:
        """Ask the worker that runs the stream (its id names it) to stop it (``owner``: only if this client
        started it). True once that worker has taken the stop. False at once for an id that no worker of
        the blueprint runs, and as soon as the worker it names says the stream is not there (or not the
        asker's); ``STOP_WAIT`` only bounds a worker that does not answer."""
        self.start()
        worker = worker_of(stream_id)
        if worker == worker_number(self._pid):
            return False  # it would be in this process's registry, where the caller looked first
        serves = self.query(lambda c: c.execute("SELECT pid FROM workers WHERE scope = ?", (self.scope,)).fetchall())
        if not any(worker_number(pid) == worker and alive(pid) for (pid,) in serves):
            return False
        asked = self.query(lambda c: c.execute("INSERT INTO stops (stream_id, owner, asked) VALUES (?, ?, ?)",
                                               (stream_id, owner, time.time())).lastrowid)
        deadline = time.monotonic() + STOP_WAIT
        answer = 0
        while not answer and time.monotonic() < deadline:
            time.sleep(POLL / 2)
            answer = self.query(lambda c: c.execute("SELECT taken FROM stops WHERE rowid = ?", (asked,)).fetchone()[0])
        self.queue(lambda c: c.execute("DELETE FROM stops WHERE rowid = ?", (asked,)))
        return bool(answer == 1)


def _mark_taken(taken: list[int], declined: list[int]) -> Write:
    """Stops taken (1) or declined (-1) by the worker their stream's id names."""
    rows = [(1, rowid) for rowid in taken] + [(-1, rowid) for rowid in declined]
    return lambda c: c.executemany("UPDATE stops SET taken = ? WHERE rowid = ?", rows)


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
            events, state, pid, beat = self.store.query(lambda c: _events_after(c, stream_id, after))
            if events:
                return Batch(events)
            if state != "live" or not alive(pid) or time.time() - beat > LOST_AFTER:
                # Ended with its terminal event already read (a reader never asks past it), broken,
                # expired, its worker died, or its worker cannot write (its end may never be written):
                # nothing more will come.
                return Batch([], lost=True)
            if time.monotonic() >= deadline:
                return Batch([])
            time.sleep(READ_POLL)

    def active(self, chat_id: str, owner: str) -> str | None:
        row = _look(lambda c: c.execute(
            "SELECT id FROM streams WHERE chat_id = ? AND owner = ? AND scope = ? AND state = 'live' "
            "ORDER BY rowid DESC LIMIT 1", (chat_id, owner, self.store.scope)).fetchone(),
            self.store, times=2, every=LOOK_AGAIN)
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


def _events_after(connection: sqlite3.Connection, stream_id: str, after: int
                  ) -> tuple[list[bytes], Any, int, float]:
    events = [row[0] for row in connection.execute(
        "SELECT data FROM events WHERE stream_id = ? AND seq > ? ORDER BY seq LIMIT 1000", (stream_id, after))]
    row = connection.execute("SELECT state, pid, beat FROM streams WHERE id = ?", (stream_id,)).fetchone()
    state, pid, beat = row if row is not None else (None, 0, 0.0)
    return events, state, pid, beat


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
        """Counted per worker, not per slot: one key may hold thousands (the default key is the remote
        address, and every user behind one proxy shares it), and a check of each slot's worker made
        every new stream cost as much as all that key's open ones (1,500 arriving in 3 s waited 4 s)."""
        scope = self.store.scope
        connection.execute("BEGIN IMMEDIATE")
        held = connection.execute("SELECT pid, app, count(*) FROM slots WHERE scope = ? AND owner = ? "
                                  "GROUP BY pid, app", (scope, key)).fetchall()
        me, count, dead = os.getpid(), 0, set()
        for pid, app, slots in held:
            if pid in dead or not alive(pid):
                dead.add(pid)
            elif pid != me or app == self.store.app:
                count += slots
        for pid in dead:
            connection.execute("DELETE FROM slots WHERE scope = ? AND owner = ? AND pid = ?", (scope, key, pid))
        if count >= self.limit:
            connection.execute("COMMIT")
            return False
        connection.execute("INSERT INTO slots (member, scope, owner, pid, app) VALUES (?, ?, ?, ?, ?)",
                           (member, self.store.scope, key, me, self.store.app))
        connection.execute("COMMIT")
        return True
