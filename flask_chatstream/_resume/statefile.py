"""The state file itself: its schema, and making, opening and repairing it. ``sqlite`` writes it,
``machine`` reads it for the requests; see ``sqlite``'s docstring for what it holds and why SQLite."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

BUSY_MS = 200
"""Longest a query waits for another worker's write lock; past it the store counts as unavailable."""
FULL_BELOW = 256 * 1024
"""Free bytes on the file's disk below which ``ready`` says no."""

SCHEMA_VERSION = 6
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
CREATE TABLE IF NOT EXISTS spent (
    scope TEXT NOT NULL, owner TEXT NOT NULL, since REAL NOT NULL, amount REAL NOT NULL, until REAL NOT NULL,
    PRIMARY KEY (scope, owner, since)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    scope TEXT NOT NULL, owner TEXT NOT NULL, since REAL NOT NULL, pid INTEGER NOT NULL, app TEXT NOT NULL,
    amount REAL NOT NULL, until REAL NOT NULL, PRIMARY KEY (scope, owner, since, pid, app)) WITHOUT ROWID;
"""


def alive(pid: int) -> bool:
    """Is the process still there? Every worker runs on this host, so its pid tells."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def create(path: Path) -> None:
    """Make the file's tables, afresh where they are of another version. A file already of this version is
    left as it is, with nothing written: a worker that starts while the disk is full still opens it."""
    connection = connect(path)
    try:
        connection.execute("BEGIN IMMEDIATE")
        if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            connection.execute("COMMIT")
            return
        for table in ("streams", "events", "stops", "slots", "workers", "spent", "holds", "leases"):
            connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute("COMMIT")
        connection.executescript(SCHEMA)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        connection.close()


def recreate(path: Path, damaged: int | None = None) -> None:
    """Start the file afresh after it was deleted or damaged; one that is not a database any more (or
    still the file of inode ``damaged``, found so by a write) is moved aside (``<name>.broken``), unless
    another worker has made it good meanwhile."""
    if damaged is None or file_inode(path) != damaged:
        try:
            create(path)
            return
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise  # busy, or its disk full: the file is the store, and is kept
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    try:
        os.replace(path, path.with_name(path.name + ".broken"))
    except FileNotFoundError:
        pass
    create(path)


def is_damage(error: sqlite3.Error) -> bool:
    """Does the error say that the file is not (or no longer) the store, rather than that it is busy or full?"""
    text = str(error).lower()
    return any(sign in text for sign in ("not a database", "malformed", "no such table", "no such column"))


def disk_full(path: Path) -> bool:
    """Is the file's disk (all but) full? Then its writes fail, on whichever worker has something to write."""
    try:
        disk = os.statvfs(path.parent)
    except OSError:
        return False
    return disk.f_bavail * disk.f_frsize < FULL_BELOW


def open_writer(path: Path) -> sqlite3.Connection:
    """The writer's connection, even where the file cannot be set up now (a full disk): its writes
    fail, and what they fail with decides what is done next."""
    try:
        return connect(path)
    except sqlite3.Error:
        return sqlite3.connect(path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)


def file_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def connect(path: Path, busy_ms: int = BUSY_MS) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    # No fsync, ever: the state lives for minutes and a machine that crashes loses its streams anyway.
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute(f"PRAGMA busy_timeout={busy_ms}")
    return connection
