"""What each client has spent against its budget, per fixed window, and what its answers in progress
may still spend (their holds): the ``Ledger`` of a ``SharedState``.

A request ``take``s a hold of the most its answer may cost (its prompt and ``max_tokens``), and is let in
only while spent plus held is under the budget; its answer ``settle``s what it did cost. However many
requests a client sends at once, across workers and instances, what it spends past its budget is then at
most one answer's hold: the last one let in. A request the budget could still pay for, but that answers
in progress may use up, is neither let in nor refused: it is ``BUSY``, and the caller waits for them.

``MemoryLedger`` is one worker's (``state_path=":memory:"``); ``machine.HostLedger`` shares the state file,
``redis.FleetLedger`` Redis, each with the same rule in one transaction.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Protocol

from .._budget import Budget

IN, BUSY, OUT = "in", "busy", "out"


@dataclass(frozen=True)
class Taken:
    """What ``take`` found: ``IN`` (a hold was taken, ``member`` names it), ``BUSY`` or ``OUT``; and what
    the client had spent in the window, before this answer."""

    verdict: str
    spent: float
    window: float
    """The window's start (seconds since the epoch): the answer settles there, whenever it ends."""
    member: str = ""
    hold: float = 0.0
    """The hold taken (where the store keeps holds by amount, not by name)."""


class Ledger(Protocol):
    def take(self, key: str, budget: Budget, hold: float, now: float) -> Taken:
        """Let a request in with a hold of ``hold`` (tokens, or USD), or say why not. Raises
        ``Unavailable`` when the store cannot be asked."""

    def settle(self, key: str, budget: Budget, taken: Taken, spent: float) -> None:
        """The answer let in by ``taken`` is over and cost ``spent``: its hold goes, its cost counts."""


def verdict(budget: Budget, spent: float, held: float) -> str:
    """The rule, in one place: in while spent and held are under the budget; out once spent alone is not."""
    if spent >= budget.amount:
        return OUT
    return IN if spent + held < budget.amount else BUSY


class MemoryLedger:
    """One worker's: its requests only."""

    def __init__(self) -> None:
        self._spent: dict[tuple[str, float], float] = {}
        self._held: dict[tuple[str, float], dict[str, float]] = {}
        self._lock = threading.Lock()
        self._window = 0.0

    def take(self, key: str, budget: Budget, hold: float, now: float) -> Taken:
        window = budget.bounds(now)[0]
        with self._lock:
            if window != self._window:
                self._window = window
                self._forget_before(window - budget.window)
            spent = self._spent.get((key, window), 0.0)
            holds = self._held.setdefault((key, window), {})
            found = verdict(budget, spent, sum(holds.values()))
            if found != IN:
                return Taken(found, spent, window)
            member = uuid.uuid4().hex
            holds[member] = hold
            return Taken(IN, spent, window, member)

    def settle(self, key: str, budget: Budget, taken: Taken, spent: float) -> None:
        with self._lock:
            self._held.get((key, taken.window), {}).pop(taken.member, None)
            self._spent[(key, taken.window)] = self._spent.get((key, taken.window), 0.0) + spent

    def _forget_before(self, start: float) -> None:
        """Windows long over: nothing will read them again (a settle lands in its own window)."""
        for found in [k for k in self._spent if k[1] < start and not self._held.get(k)]:
            del self._spent[found]
            self._held.pop(found, None)
