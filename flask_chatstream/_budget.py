"""What a client may spend, and what tokens cost: the ``token_budget`` and ``prices`` settings, parsed
once at registration, and the arithmetic on them. Pure: no Flask, no store.

A budget is an amount per window: ``"200000/day"`` (tokens) or ``"5.00 USD/day"`` (dollars, which needs
``prices``). Windows are **fixed**: a day is the UTC day, an hour the clock hour, ``"1000/15 seconds"``
each quarter minute counted from the epoch. Every worker and instance agrees on the window from the
clock alone, so the stores keep one counter per client and window, with no log of past answers to
trim; the cost is that a client may spend its budget at the end of one window and again at the start
of the next (the RateLimit fields tell it when the window ends).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}

_BUDGET = re.compile(
    r"^\s*(?P<amount>\d+(?:\.\d+)?)\s*(?P<usd>USD)?\s*/\s*(?:(?P<count>\d+)\s*)?(?P<period>second|minute|hour|day)s?\s*$",
    re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """An amount a client may spend per fixed window: tokens, or US dollars."""

    amount: float
    usd: bool
    """Dollars (``"5.00 USD/day"``), else tokens."""
    window: int
    """The window's length in seconds."""
    text: str
    """As it was written: for logs and the ``RateLimit-Policy`` field's name."""

    def bounds(self, now: float) -> tuple[float, float]:
        """The window ``now`` falls in: its start and end, in seconds since the epoch."""
        start = math.floor(now / self.window) * self.window
        return start, start + self.window

    def __str__(self) -> str:
        return self.text


def parse_budget(value: Any) -> Budget | None:
    """``"200000/day"``, ``"5.00 USD/day"``, ``"1000/15 seconds"``; None or ``""`` for no budget."""
    if value is None or value == "":
        return None
    if isinstance(value, Budget):
        return value
    match = _BUDGET.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("a budget such as '200000/day' (tokens) or '5.00 USD/day', per second, minute, hour or day")
    amount, count = float(match["amount"]), int(match["count"] or 1)
    if amount <= 0 or count <= 0:
        raise ValueError("a budget above zero, per a period of at least one second")
    if not match["usd"] and amount != int(amount):
        raise ValueError("a whole number of tokens (or an amount in USD: '5.00 USD/day')")
    return Budget(amount, bool(match["usd"]), count * PERIODS[match["period"].lower()], value.strip())


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens of one model."""

    input: float
    output: float
    cached_input: float | None = None
    """Prompt tokens the provider served from its cache; None: billed as ``input``."""

    def cost(self, usage: Mapping[str, Any]) -> float:
        """What an answer's token counts cost, in USD."""
        prompt, completion = input_tokens(usage), output_tokens(usage)
        cached = min(cached_tokens(usage), prompt) if self.cached_input is not None else 0
        cached_price = self.cached_input if self.cached_input is not None else self.input
        return ((prompt - cached) * self.input + cached * cached_price + completion * self.output) / 1_000_000

    def most(self, prompt: int, completion: int) -> float:
        """The most ``prompt`` and ``completion`` tokens can cost (none of the prompt cached)."""
        return (prompt * self.input + completion * self.output) / 1_000_000


def _count(usage: Mapping[str, Any], *names: str) -> int:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def input_tokens(usage: Mapping[str, Any]) -> int:
    return _count(usage, "prompt_tokens", "input_tokens")


def output_tokens(usage: Mapping[str, Any]) -> int:
    return _count(usage, "completion_tokens", "output_tokens")


def cached_tokens(usage: Mapping[str, Any]) -> int:
    for name in ("prompt_tokens_details", "input_tokens_details"):
        details = usage.get(name)
        if isinstance(details, Mapping):
            return _count(details, "cached_tokens")
    return 0


def parse_prices(value: Any) -> dict[str, Price]:
    """``{"gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.60}}``, or the path of a JSON
    file of that shape; None or ``""`` for none."""
    if value is None or value == "":
        return {}
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("prices as JSON, which this is not") from None
    if isinstance(value, (str, Path)):
        try:
            value = json.loads(Path(value).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"a JSON file of prices that can be read ({exc.strerror})") from None
        except ValueError:
            raise ValueError("a JSON file of prices, which this is not") from None
    if not isinstance(value, Mapping):
        raise ValueError('prices by model, as {"gpt-4o-mini": {"input": 0.15, "output": 0.60}} (USD per million tokens)')
    prices = {}
    for model, price in value.items():
        if isinstance(price, Price):
            prices[model] = price
            continue
        if not isinstance(model, str) or not isinstance(price, Mapping) or not {"input", "output"} <= set(price) \
                or not set(price) <= {"input", "output", "cached_input"} \
                or not all(_is_price(p) for p in price.values()):
            raise ValueError(f'for {model!r} the USD per million tokens as {{"input": 0.15, "cached_input": 0.075, '
                             f'"output": 0.60}} (cached_input may be left out)')
        prices[model] = Price(float(price["input"]), float(price["output"]),
                              None if price.get("cached_input") is None else float(price["cached_input"]))
    return prices


def _is_price(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf


def price_of(prices: Mapping[str, Price], *models: str | None) -> Price | None:
    """The price of the first model named that has one: the model asked for, then the one that answered
    (``gpt-4o-mini-2024-07-18``), or its name without the date."""
    if not prices:
        return None
    for model in models:
        if model is None:
            continue
        if model in prices:
            return prices[model]
        undated = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model)
        if undated in prices:
            return prices[undated]
    return None
