"""A client's budget, at the chat view: whether its request may go to the model, and what its answer
then cost. The rule and the stores are the ledger's (``_resume.ledger``); this picks the budget (the
hook's, else the setting), sizes the request's hold, waits while answers in progress may use up what is
left, and says what is left in the ``RateLimit`` fields (the IETF httpapi draft).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .._budget import Budget, input_tokens, output_tokens, parse_budget, price_of
from .._chat import ChatRequest, ChatResult
from .._config import Settings
from .._errors import BudgetExceeded, BudgetUnavailable
from .._hooks import TokenBudget
from .._resume.journal import Unavailable
from .._resume.ledger import IN, OUT, Ledger, Taken
from .._usage import reservation

log = logging.getLogger("flask_chatstream")

BUDGET_WAIT = 30.0
"""Longest a request waits for its client's answers in progress to settle, when they may use up what is
left; then it is refused, with a short ``Retry-After``."""
POLICY = "budget"
"""The policy's name in the ``RateLimit`` fields."""


@dataclass
class Spending:
    """One request's place in its client's budget."""

    ledger: Ledger
    key: str
    budget: Budget
    taken: Taken | None
    """None where the ledger could not be asked (the request went through uncounted)."""
    fields: dict[str, str] = field(default_factory=dict)
    handed: bool = False
    """Its answer began: it settles as that ends (``after_stream``'s path), whatever happens."""
    _settled: bool = False

    def settle(self, result: ChatResult | None) -> None:
        """The answer is over (``result``; None where the model was never asked): its cost counts, once."""
        if self._settled or self.taken is None:
            return
        self._settled = True
        cost = 0.0 if result is None else spent(self.budget, result)
        try:
            self.ledger.settle(self.key, self.budget, self.taken, cost)
        except Unavailable:
            log.debug("budget: the shared state did not take what an answer cost")


@contextmanager
def unspent(spending: Spending | None) -> Iterator[None]:
    """What fails in the block, before the answer began, gives the request's hold back (the model was not
    asked); an answer that began settles as it ends (``settling``)."""
    try:
        yield
    except BaseException:
        if spending is not None and not spending.handed:
            spending.settle(None)
        raise


def settling(spending: Spending, after: Callable[[ChatResult], None]) -> Callable[[ChatResult], None]:
    """``after``, with the answer's cost counted against its client's budget first."""
    spending.handed = True

    def ended(result: ChatResult) -> None:
        spending.settle(result)
        after(result)

    return ended


def spent(budget: Budget, result: ChatResult) -> float:
    """What an answer cost against ``budget``: its tokens, or its dollars."""
    if budget.usd:
        return result.cost or 0.0
    usage = result.usage or {}
    return float(input_tokens(usage) + output_tokens(usage))


_warned_down = False


def spend(decide: TokenBudget | None, settings: Settings, ledger: Ledger, key: str, chat: ChatRequest
          ) -> Spending | None:
    """Let the request in against its client's budget (``decide``, the host's hook, else the setting;
    None: it has none), or raise ``BudgetExceeded``."""
    budget = budget_for(decide, settings, chat)
    if budget is None:
        return None
    prompt, most = reservation(chat)
    if budget.usd:
        price = price_of(settings.prices, chat.model)
        hold = price.most(prompt, most) if price is not None else 0.0
    else:
        hold = float(prompt + most)
    deadline, pause = time.monotonic() + BUDGET_WAIT, 0.02
    while True:
        now = time.time()
        try:
            taken = ledger.take(key, budget, hold, now)
        except Unavailable:
            return _uncounted(ledger, key, budget, settings)
        end = budget.bounds(now)[1]
        fields = rate_limit_fields(budget, taken.spent, end - now)
        if taken.verdict == IN:
            return Spending(ledger, key, budget, taken, fields)
        if taken.verdict == OUT:
            raise BudgetExceeded(f"This client has used up its budget ({budget}); it renews in "
                                 f"{_duration(end - now)}.", retry_after=math.ceil(end - now), fields=fields)
        if time.monotonic() + pause > deadline:
            raise BudgetExceeded("This client's answers in progress may use up what is left of its budget "
                                 f"({budget}). Try again when they are done.", retry_after=1, fields=fields)
        time.sleep(pause)  # (a gevent worker's other requests go on)
        pause = min(pause * 2, 0.25)


def _uncounted(ledger: Ledger, key: str, budget: Budget, settings: Settings) -> Spending:
    global _warned_down
    if settings.budget_fail_closed:
        raise BudgetUnavailable()
    if not _warned_down:
        _warned_down = True
        log.warning("budget: the shared state cannot be asked, so requests go through uncounted until it can "
                    "(budget_fail_closed=True refuses them instead)")
    return Spending(ledger, key, budget, None)


def budget_for(decide: TokenBudget | None, settings: Settings, chat: ChatRequest) -> Budget | None:
    if decide is None:
        return settings.token_budget
    chosen = decide(chat)
    try:
        budget = parse_budget(chosen)
    except ValueError as exc:
        raise TypeError(f"The token_budget hook returned {chosen!r}, which is not a budget: it must be {exc}, "
                        "or None for no limit.") from None
    if budget is not None and budget.usd and not settings.prices:
        raise TypeError(f"The token_budget hook returned {chosen!r}, in USD, but no prices are set (CHATSTREAM_PRICES).")
    return budget


def rate_limit_fields(budget: Budget, spent: float, reset: float) -> dict[str, str]:
    """``RateLimit-Policy`` (the budget) and ``RateLimit`` (what is left, and seconds until the window
    renews); dollars in millionths, since the fields carry whole numbers."""
    scale = 1_000_000 if budget.usd else 1
    left = max(0, int((budget.amount - spent) * scale))
    return {"RateLimit-Policy": _policy(budget), "RateLimit": f'"{POLICY}";r={left};t={max(0, math.ceil(reset))}'}


@functools.lru_cache(maxsize=64)
def _policy(budget: Budget) -> str:
    scale, unit = (1_000_000, "usd-micros") if budget.usd else (1, "tokens")
    return f'"{POLICY}";q={int(budget.amount * scale)};w={budget.window};qu="{unit}"'


def _duration(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    for name, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {name}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
