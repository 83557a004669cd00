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
    spent(scope, owner, since, amount, until)
                                     what each client spent in a budget's window (token_budget)
    leases(scope, owner, since, pid, app, amount, until)
                                     what each worker may spend for a client in a window (machine.HostLedger)

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

One job, and over 400 lines because its faults (a full disk, a deleted or damaged file) are handled here: the state file's store, with this worker's writer and watcher (``machine`` builds the shared state on it; ``statefile`` makes and repairs the file).
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
from typing import Protocol, TypeVar

from .. import _gevent
from .._stream.registry import STREAMS, worker_number, worker_of
from .journal import Unavailable
from .statefile import BUSY_MS, alive, connect, disk_full, file_inode, is_damage, open_writer, recreate

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
EXPIRE_EVERY = 10.0
CHECK_EVERY = 1.0
"""How often a worker's writer makes sure the file it writes is still the one at the path."""
BEAT = 1.0
"""How often a worker's writer marks its live streams as still being written."""
LOST_AFTER = 10.0
"""A live stream that has not beaten for this long is lost: its resume ends with ``stream_lost``."""

SAY_AGAIN = 60.0
"""A writer that fails again within this long after it said so says nothing more."""
T = TypeVar("T")


class Kept(Protocol):
    """A resumable stream's record as the writer and the watcher see it (``machine``'s recording)."""

    id: str
    readers_seen: bool
    """Does someone read it (a resume within ``ATTACH``)? The watcher says, for a stream whose client left."""

    def broke(self) -> None:
        """Some of its events could not be written."""
Write = Callable[[sqlite3.Connection], object]


def open_store(path: Path, scope: str) -> HostStore | None:
    """The store at ``path``, or None, with one warning, where it cannot be had."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        recreate(path)  # a file that is not a database (any more) is moved aside, and made again
    except (OSError, sqlite3.Error) as exc:
        if isinstance(exc, sqlite3.OperationalError) and path.exists() and disk_full(path):
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
        self.rows: deque[tuple[str, int, bytes]] = deque()
        """Events to write, (stream id, seq, JSON): the one write of every chunk, kept cheap."""
        self.recordings: dict[str, Kept] = {}
        self._failed = False
        self._idle: deque[sqlite3.Connection] = deque()
        """Connections for queries: as many as ever ran at once, whichever OS thread runs the next."""
        self.tickers: list[Callable[[], None]] = []  # run by the writer each round; they may queue writes
        self.direct: tuple[int, sqlite3.Connection] | None = None
        """This worker's connection for ``at_once``, which never waits for a lock, with its generation."""
        self.watched: dict[str, Kept] = {}
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
            self._queue, self.rows, self._idle, self.watched = deque(), deque(), deque(), {}
            self.direct = None  # (a forked worker's own)
            self.recordings = {}
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
                connection = connect(self.path)
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

        if self._failed or disk_full(self.path):
            return False
        try:
            _gevent.offload(look)
        except sqlite3.Error:
            return False
        return True

    def _write_loop(self) -> None:
        connection, inode = open_writer(self.path), file_inode(self.path)
        now = time.monotonic()
        next_expiry, next_check, next_beat = now + EXPIRE_EVERY, now + CHECK_EVERY, now + BEAT
        sleep = _gevent.native_sleep()
        while True:
            sleep(FLUSH)
            for tick in self.tickers:
                tick()
            now = time.monotonic()
            retry = False
            if now >= next_check:
                next_check = now + CHECK_EVERY
                if file_inode(self.path) != inode:  # deleted, or replaced by another file
                    connection, inode = self._start_afresh(connection, "deleted or replaced")
                # A writer that failed finds out whether it can write again with nothing of its own to
                # write, so that readyz recovers without waiting for the next stream.
                retry = self._failed
            beat = bool(self.recordings) and now >= next_beat
            if not (self._queue or self.rows or beat or retry):
                continue
            writes, rows = [], []
            while self._queue:
                writes.append(self._queue.popleft())
            while self.rows:  # after the writes: a stream's end is never written before its events
                rows.append(self.rows.popleft())
            try:
                connection.execute("BEGIN IMMEDIATE")
                for write in writes:
                    write(connection)
                connection.executemany("INSERT OR REPLACE INTO events (stream_id, seq, data) VALUES (?, ?, ?)", rows)
                if beat:
                    next_beat = now + BEAT
                    _beat(connection, list(self.recordings))
                if retry:
                    connection.execute("INSERT OR REPLACE INTO workers (pid, scope) VALUES (?, ?)",
                                       (os.getpid(), self.scope))
                if now >= next_expiry:
                    next_expiry = now + EXPIRE_EVERY
                    _expire(connection, self.ttl)
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
                if is_damage(exc):
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
            recording = self.recordings.get(stream_id)
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
        for recording in list(self.recordings.values()):
            recording.broke()
        try:
            recreate(self.path, damaged)
        except (OSError, sqlite3.Error) as exc:
            if self._say_again():  # it is tried again every round
                log.warning("shared state in %s was %s, and cannot be made again (%s: %s): streams go on; stops, "
                            "resumes and caps work again once it can", self.path, why, type(exc).__name__, exc)
        else:
            log.warning("shared state in %s was %s: started it afresh (the records of %d running streams are "
                        "lost; the streams go on)", self.path, why, len(self.recordings))
        return open_writer(self.path), file_inode(self.path)

    def _watch_loop(self) -> None:
        """Stops for this worker's streams, asked for on any worker; readers of streams whose clients left."""
        while True:
            time.sleep(POLL)
            try:
                stops, readers = self.query(lambda c: _watch(c, list(self.watched)))
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
            for recording in list(self.watched.values()):
                recording.readers_seen = readers.get(recording.id, 0.0) > time.time()

    # -- streams ---------------------------------------------------------------------------------

    def register(self, recording: Kept, owner: str, chat_id: str | None) -> None:
        """A resumable stream starts. Written in the writer's next round, FLUSH later: long before its
        client can have dropped its connection and come back with the id (``find`` looks twice). Not
        on the request's path: written there, through a native thread, it cost 11% more CPU per
        resumable request (bench.compare, 5 runs). A worker starved of CPU can lag further; a reader
        that comes back within that lag gets 404 and may ask again."""
        self.start()
        self.recordings[recording.id] = recording
        row = (recording.id, self.scope, owner, chat_id, self._pid, time.time())
        self.queue(lambda c: c.execute("INSERT OR REPLACE INTO streams (id, scope, owner, chat_id, pid, state, beat) "
                                       "VALUES (?, ?, ?, ?, ?, 'live', ?)", row))

    def ended(self, stream_id: str) -> None:
        self.recordings.pop(stream_id, None)
        stamp = time.time()
        self.queue(lambda c: c.execute("UPDATE streams SET state = 'ended', ended_at = ? WHERE id = ? "
                                       "AND state = 'live'", (stamp, stream_id)))


def at_once(store: HostStore, write: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``write`` here, in the calling greenlet, where no other worker holds the write lock (a few
    dozen microseconds of SQLite, cheaper than a hop to a native thread and back); where one does, as
    ``store.query`` does, waiting cooperatively. Raises ``Unavailable``."""
    store.start()
    if store.direct is None or store.direct[0] != store._generation:
        store.direct = (store._generation, connect(store.path, busy_ms=0))
    connection = store.direct[1]
    try:
        return write(connection)
    except sqlite3.Error as exc:
        if connection.in_transaction:
            connection.rollback()
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            return store.query(write)
        log.debug("shared state write failed: %s", type(exc).__name__)
        raise Unavailable() from None


def _mark_taken(taken: list[int], declined: list[int]) -> Write:
    """Stops taken (1) or declined (-1) by the worker their stream's id names."""
    rows = [(1, rowid) for rowid in taken] + [(-1, rowid) for rowid in declined]
    return lambda c: c.executemany("UPDATE stops SET taken = ? WHERE rowid = ?", rows)


def _beat(connection: sqlite3.Connection, live: list[str]) -> None:
    """This worker's live streams are still being written (a resume of one that stops beating ends)."""
    stamp = time.time()
    for index in range(0, len(live), 500):
        part = live[index:index + 500]
        connection.execute(f"UPDATE streams SET beat = ? WHERE id IN ({','.join('?' * len(part))})",
                           (stamp, *part))


def _expire(connection: sqlite3.Connection, ttl: float) -> None:
    """Forget what has outlived resume_ttl, and mark the streams of workers that died as lost."""
    now = time.time()
    for (pid,) in connection.execute("SELECT DISTINCT pid FROM streams WHERE state = 'live'").fetchall():
        if not alive(pid):
            connection.execute("UPDATE streams SET state = 'lost', ended_at = ? WHERE pid = ? AND state = 'live'",
                               (now, pid))
            connection.execute("DELETE FROM slots WHERE pid = ?", (pid,))
    for (pid,) in connection.execute("SELECT DISTINCT pid FROM leases").fetchall():
        if not alive(pid):
            connection.execute("DELETE FROM leases WHERE pid = ?", (pid,))
    connection.execute("DELETE FROM spent WHERE until < ?", (now,))
    connection.execute("DELETE FROM leases WHERE until < ?", (now,))
    for (pid,) in connection.execute("SELECT pid FROM workers").fetchall():
        if not alive(pid):
            connection.execute("DELETE FROM workers WHERE pid = ?", (pid,))
    # Live by its row, but not beating: its end could not be written (a full disk, say).
    connection.execute("UPDATE streams SET state = 'lost', ended_at = ? WHERE state = 'live' AND beat < ?",
                       (now, now - LOST_AFTER))
    before = now - ttl
    connection.execute("DELETE FROM events WHERE stream_id IN (SELECT id FROM streams WHERE state != 'live' "
                       "AND ended_at < ?)", (before,))
    connection.execute("DELETE FROM streams WHERE state != 'live' AND ended_at < ?", (before,))
    connection.execute("DELETE FROM stops WHERE asked < ?", (now - 10 * STOP_WAIT,))  # their askers died


def _watch(connection: sqlite3.Connection, watched: list[str]) -> tuple[list[tuple[int, str, str | None]], dict[str, float]]:
    stops = connection.execute("SELECT rowid, stream_id, owner FROM stops WHERE taken = 0").fetchall()
    readers: dict[str, float] = {}
    for index in range(0, len(watched), 500):
        part = watched[index:index + 500]
        marks = ",".join("?" * len(part))
        readers.update(connection.execute(f"SELECT id, reader_until FROM streams WHERE id IN ({marks})", part))
    return stops, readers
