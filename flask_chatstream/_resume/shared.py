"""What a blueprint's streams share beyond one stream, behind one protocol, chosen once at registration.

Three backends implement ``SharedState``:

- ``WorkerState`` (here): this worker's own, with ``state_path=":memory:"`` (or a folder that cannot be
  written): the cap counts per worker, a stop or a resume reaches only streams of the worker it lands on.
- ``MachineState`` (``sqlite``): the workers of one machine, through the SQLite state file (the default).
- ``FleetState`` (``redis``): every worker of every instance sharing ``redis_url``.

A view asks it for a stream slot (``limit``), a resumable stream's record (``journal``), a client's
budget (``ledger``), and to stop a stream that runs elsewhere (``stop``); it never asks which backend it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .._config import ConfigError
from .._stream.limits import StreamLimit
from .journal import Journal, MemoryJournal
from .ledger import Ledger, MemoryLedger
from .machine import open_machine

if TYPE_CHECKING:
    from .._config import Settings

HOST_FILE = "chatstream.sqlite3"
"""The state file's name in the app's instance folder, unless ``state_path`` says otherwise."""

Check = tuple[str, Callable[[], bool]]
"""A readiness check, by name: whether the shared state answers."""


class SharedState(Protocol):
    """Stream slots, resumable streams' records, and stops, shared as far as the backend reaches."""

    limit: StreamLimit
    """Counts each client's open streams (``max_streams_per_client``)."""
    journal: Journal | None
    """Where resumable streams are kept; None unless ``resumable``."""
    check: Check | None
    """What ``readyz`` asks, if the backend can be unavailable."""
    ledger: Ledger
    """What each client spent against its ``token_budget``."""

    def started(self) -> None:
        """A stream starts in this worker (the backend starts what it runs per process, once)."""

    def stop(self, stream_id: str, owner: str) -> bool:
        """Stop a stream that ``owner`` started and that is not in this worker's registry: True if it was
        found and told to stop. Raises ``Unavailable`` when the backend cannot be asked."""


class WorkerState:
    """This worker's own: nothing outside it. A resumable stream reading on after its client left is
    still in the journal, and stopped through it."""

    check: Check | None = None

    def __init__(self, limit: StreamLimit, journal: Journal | None) -> None:
        self.limit = limit
        self.journal = journal
        self.ledger: Ledger = MemoryLedger()

    def started(self) -> None:
        pass

    def stop(self, stream_id: str, owner: str) -> bool:
        return self.journal is not None and self.journal.stop_owned(stream_id, owner)


def open_shared(settings: Settings, instance: Path, scope: str) -> SharedState:
    """The backend the settings ask for: Redis with ``redis_url``, else the state file (``state_path``,
    by default in the app's instance folder), else, with ``":memory:"`` or a folder that cannot be
    written, this worker's own."""
    if settings.redis_url is not None:
        try:
            from .redis import open_fleet
        except ImportError:
            raise ConfigError("redis_url needs the redis package: pip install 'flask-chatstream[redis]'.") from None
        return open_fleet(settings, scope)
    path = settings.state_path
    machine = None if path == ":memory:" else open_machine(settings, Path(path) if path else instance / HOST_FILE, scope)
    if machine is not None:
        return machine
    journal = MemoryJournal(settings.resume_ttl, settings.resume_max_events) if settings.resumable else None
    return WorkerState(StreamLimit(settings.max_streams_per_client), journal)
