"""One machine's shared state, on the state file (``sqlite``): resumable streams' records, stream slots
across the workers, and stops that reach the worker that runs a stream. ``MachineState`` is the
``SharedState`` of the default setup (``shared``).

One job, and over 400 lines because each part of it (journal, cap, stops, budgets' leases) answers to
every worker of the machine through one file: the machine's shared state, read and decided on the state
file (``sqlite`` writes it)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._budget import Budget
from .. import _gevent
from .._errors import TooManyStreams
from .._stream.limits import StreamLimit, nothing, once
from .._stream.registry import STREAMS, worker_number, worker_of
from .journal import Batch, Found, Journal, Recording, Unavailable
from .ledger import IN, Ledger, Taken, verdict
from .sqlite import ATTACH, FLUSH, LOOK_AGAIN, LOST_AFTER, POLL, READ_POLL, STOP_WAIT, HostStore, at_once, open_store
from .statefile import alive

if TYPE_CHECKING:
    from .._config import Settings


class MachineState:
    """What the workers of this machine share, through the state file: a stop asked on any worker reaches
    the stream's, a resume reads its events on any worker, and the cap counts them all."""

    def __init__(self, store: HostStore, limit: StreamLimit, journal: Journal | None) -> None:
        self.store = store
        self.limit = limit
        self.journal = journal
        self.ledger: Ledger = HostLedger(store)
        self.check: tuple[str, Callable[[], bool]] | None = ("state", store.ready)

    def started(self) -> None:
        self.store.start()  # this worker's watcher, which takes the stops asked for on other workers

    def stop(self, stream_id: str, owner: str) -> bool:
        return stop_elsewhere(self.store, stream_id, owner)


def open_machine(settings: Settings, path: Path, scope: str) -> MachineState | None:
    """The machine's shared state in the file at ``path``, or None where it cannot be had (one warning)."""
    store = open_store(path, scope)
    if store is None:
        return None
    journal = HostJournal(store, settings.resume_ttl, settings.resume_max_events) if settings.resumable else None
    return MachineState(store, HostLimit(store, settings.max_streams_per_client), journal)


def stop_elsewhere(store: HostStore, stream_id: str, owner: str | None) -> bool:
    """Ask the worker that runs the stream (its id names it) to stop it (``owner``: only if this client
    started it). True once that worker has taken the stop. False at once for an id that no worker of
    the blueprint runs, and as soon as the worker it names says the stream is not there (or not the
    asker's); ``STOP_WAIT`` only bounds a worker that does not answer."""
    store.start()
    worker = worker_of(stream_id)
    if worker == worker_number(os.getpid()):
        return False  # it would be in this process's registry, where the caller looked first
    serves = store.query(lambda c: c.execute("SELECT pid FROM workers WHERE scope = ?", (store.scope,)).fetchall())
    if not any(worker_number(pid) == worker and alive(pid) for (pid,) in serves):
        return False
    asked = store.query(lambda c: c.execute("INSERT INTO stops (stream_id, owner, asked) VALUES (?, ?, ?)",
                                           (stream_id, owner, time.time())).lastrowid)
    deadline = time.monotonic() + STOP_WAIT
    answer = 0
    while not answer and time.monotonic() < deadline:
        time.sleep(POLL / 2)
        answer = store.query(lambda c: c.execute("SELECT taken FROM stops WHERE rowid = ?", (asked,)).fetchone()[0])
    store.queue(lambda c: c.execute("DELETE FROM stops WHERE rowid = ?", (asked,)))
    return bool(answer == 1)


class _HostRecording(Recording):
    def __init__(self, store: HostStore, journal: HostJournal, stream_id: str) -> None:
        super().__init__()
        self._store = store
        self._journal = journal
        self.id = stream_id
        self._broken = False

    def watch_readers(self) -> None:
        self._store.watched[self.id] = self

    def _keep(self, data: list[bytes], ended: bool) -> None:
        if self._broken:
            return
        stream_id, seq = self.id, self.seq - len(data)
        self._store.rows.extend((stream_id, seq + i, event) for i, event in enumerate(data, 1))
        if self.seq > self._journal.max_events:  # the oldest go: a resume from before them is 410
            first = self.seq - self._journal.max_events + 1
            self._store.queue(lambda c: (
                c.execute("DELETE FROM events WHERE stream_id = ? AND seq < ?", (stream_id, first)),
                c.execute("UPDATE streams SET first = ? WHERE id = ?", (first, stream_id))))
        if ended:
            self._store.watched.pop(self.id, None)
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

        if stream_id in self.store.recordings:
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
        stop_elsewhere(self.store, stream_id, None)


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


LEASE_IDLE = 1.0
"""Seconds a worker keeps what is left of a client's lease after its last answer there ended; then it gives
it back, for the other workers."""
ROOM = 3
"""A lease takes room for this many more answers beside the one asked for, where all of it fits the budget."""
WRITE_EVERY = 0.25
"""Seconds the costs of answers wait to be written, a few rounds' worth in one write (the lease covers them)."""


@dataclass
class _Lease:
    """One worker's share of one client's budget in one window."""

    granted: float = 0.0
    """What its row in ``leases`` will say once its queued writes are in: the most this worker may hold."""
    held: float = 0.0
    """The holds of its answers in progress."""
    spent: float = 0.0
    """What the client had spent, as this worker last saw it, with its own answers since."""
    unwritten: float = 0.0
    """What its answers cost that the writer has not yet written (it is in its row meanwhile)."""
    busy: int = 0
    last: float = 0.0
    """When its last answer ended (``time.monotonic()``)."""


class HostLedger:
    """Budgets across the workers of this machine, in the state file, without a write per request.

    Each worker holds a **lease** of a client's budget (a row in ``leases``): the store counts spent plus
    every lease, and grants a lease only by the ledger's rule (in while spent and held are under the
    budget), so what is spent can exceed the budget by one answer at most, as with a hold per request.
    A request that fits in this worker's lease is let in without the store; one that does not asks the
    store (one transaction) for a lease of what its answers in progress hold plus its own, and room for
    ``ROOM`` more where that all fits under the budget. What answers cost is written by the writer, in its
    next round, with the lease made smaller by as much; a lease left idle for ``LEASE_IDLE`` is given back.
    A dead worker's lease (and what it had not yet written) is dropped as the store counts."""

    def __init__(self, store: HostStore) -> None:
        self.store = store
        self._leases: dict[tuple[str, float], _Lease] = {}
        self._lock = _gevent.native_lock()
        """Taken by greenlets (never across a yield) and by the writer's OS thread (``_tick``)."""
        self._growing = threading.Lock()
        """One grow at a time in this worker, held across the store (which may yield): a second one decides
        with the first one's hold counted, not from a snapshot taken before it."""
        self._writes: list[tuple[str, float, float, float, float]] = []
        """(client, window, until, spent, lease given back): for the writer's next round."""
        self._pid = os.getpid()
        self._since_write = 0.0
        store.tickers.append(self._tick)

    def take(self, key: str, budget: Budget, hold: float, now: float) -> Taken:
        since, until = budget.bounds(now)
        with self._lock:
            if self._pid != os.getpid():  # a forked worker: the leases were its parent's
                self._pid, self._leases, self._writes = os.getpid(), {}, []
        taken = self._from_lease(key, since, hold)
        if taken is not None:
            return taken
        with self._growing:
            taken = self._from_lease(key, since, hold)  # another grow made room meanwhile
            if taken is not None:
                return taken
            with self._lock:
                lease = self._leases[(key, since)]
                granted, held, unwritten = lease.granted, lease.held, lease.unwritten
            found, spent, grown = at_once(
                self.store, lambda c: self._grow(c, key, budget, (since, until), (granted, held, unwritten), hold))
            with self._lock:
                lease = self._leases.setdefault((key, since), _Lease())
                lease.spent = max(lease.spent, spent)
                lease.granted += grown
                if found == IN:
                    lease.held += hold
                    lease.busy += 1
        return Taken(found, spent, since, hold=hold if found == IN else 0.0)

    def _from_lease(self, key: str, since: float, hold: float) -> Taken | None:
        """In, without the store, where this worker's lease has room."""
        with self._lock:
            lease = self._leases.setdefault((key, since), _Lease())
            if lease.held + hold > lease.granted:
                return None
            lease.held += hold
            lease.busy += 1
            return Taken(IN, lease.spent, since, hold=hold)

    def _grow(self, connection: sqlite3.Connection, key: str, budget: Budget, window: tuple[float, float],
              local: tuple[float, float, float], hold: float) -> tuple[str, float, float]:
        """The store's decision, in one transaction: the verdict, what the client spent (as far as this
        worker can tell), and how much this worker's lease grew."""
        (since, until), (granted, held, unwritten) = window, local
        scope, me, app = self.store.scope, os.getpid(), self.store.app
        connection.execute("BEGIN IMMEDIATE")  # (the store rolls back what raises)
        row = connection.execute("SELECT amount FROM spent WHERE scope = ? AND owner = ? AND since = ?",
                                 (scope, key, since)).fetchone()
        spent, others = (row[0] if row else 0.0) + unwritten, 0.0
        for pid, holder, amount in connection.execute(
                "SELECT pid, app, amount FROM leases WHERE scope = ? AND owner = ? AND since = ?",
                (scope, key, since)).fetchall():
            if pid == me and holder == app:
                continue
            if alive(pid):
                others += amount  # their answers in progress, what they have not written yet, their room
            else:
                connection.execute("DELETE FROM leases WHERE pid = ?", (pid,))
        found = verdict(budget, spent, others + held)
        grown = 0.0
        if found == IN:
            room = ROOM * hold if spent + others + held + (1 + ROOM) * hold <= budget.amount else 0.0
            grown = held + hold + room - granted
            connection.execute(
                "INSERT INTO leases (scope, owner, since, pid, app, amount, until) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (scope, owner, since, pid, app) DO UPDATE SET amount = amount + ?",
                (scope, key, since, me, app, unwritten + granted + grown, until, grown))
        connection.execute("COMMIT")
        return found, spent, grown

    def settle(self, key: str, budget: Budget, taken: Taken, spent: float) -> None:
        since, until = taken.window, taken.window + budget.window
        with self._lock:
            lease = self._leases.get((key, since))
            if lease is None:
                return  # (a lease of before a fork)
            lease.held -= taken.hold
            lease.granted -= spent
            lease.unwritten += spent
            lease.spent += spent
            lease.busy -= 1
            lease.last = time.monotonic()
            self._writes.append((key, since, until, spent, spent))

    def _tick(self) -> None:
        """In the writer's OS thread, each round: what answers cost, and idle leases given back, queued."""
        now = time.monotonic()
        with self._lock:
            if not self._leases or now - self._since_write < WRITE_EVERY:
                return
            self._since_write = now
            writes, self._writes = self._writes, []
            for (key, since), lease in list(self._leases.items()):
                idle = lease.busy == 0 and now - lease.last > LEASE_IDLE
                if idle and lease.granted > 0:
                    writes.append((key, since, since, 0.0, lease.granted))
                    lease.granted = 0.0
                if idle and lease.granted <= 0 and lease.unwritten <= 0 and not any(w[:2] == (key, since)
                                                                                   for w in writes):
                    del self._leases[(key, since)]
        if writes:
            self.store.queue(lambda c: self._write(c, writes))

    def _write(self, connection: sqlite3.Connection, writes: list[tuple[str, float, float, float, float]]) -> None:
        scope, me, app = self.store.scope, os.getpid(), self.store.app
        for key, since, until, spent, back in writes:
            if spent:
                connection.execute(
                    "INSERT INTO spent (scope, owner, since, amount, until) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (scope, owner, since) DO UPDATE SET amount = amount + excluded.amount",
                    (scope, key, since, spent, until))
            connection.execute("UPDATE leases SET amount = amount - ? WHERE scope = ? AND owner = ? AND since = ? "
                               "AND pid = ? AND app = ?", (back, scope, key, since, me, app))
        with self._lock:  # written (a failed round loses them: budgets fail open)
            for key, since, _, spent, _ in writes:
                lease = self._leases.get((key, since))
                if lease is not None:
                    lease.unwritten -= spent
