"""Seeded random-walk order books and the reference prices they are built around.

Every exchange emulator builds its books from the same per-currency reference price (deterministic from the
seed), so equivalent instruments on different emulated exchanges quote close to each other. A book keeps its
levels keyed by integer ticks (no float drift), walks its mid price around an anchor (mean-reverting, so books
of equal instruments never wander apart), and reports every mutation as a change list
``[(side, action, price, amount)]`` with action ``new`` / ``change`` / ``delete``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

Side = Literal["bids", "asks"]
Action = Literal["new", "change", "delete"]
#: one level mutation: (side, action, price, amount); amount is 0 for deletes
Change = tuple[Side, Action, float, float]

#: nominal reference prices (USD) per currency; the seeded reference price lies within +-1% of these
NOMINAL_PRICES: dict[str, float] = {"BTC": 60000.0, "ETH": 3000.0}
#: annualised futures basis (contango) used to price dated futures off the reference price
ANNUAL_BASIS = 0.05
#: implied volatility used to price options
OPTION_VOLATILITY = 0.60
MS_PER_YEAR = 365.0 * 24 * 3600 * 1000


def reference_price(currency: str, seed: int) -> float:
    """The seeded spot reference price of ``currency`` (USD): the same for every exchange at one seed."""
    nominal = NOMINAL_PRICES.get(currency.upper(), 100.0)
    jitter = random.Random(f"reference:{seed}:{currency.upper()}").uniform(-0.01, 0.01)
    return round(nominal * (1.0 + jitter), 2)


def future_price(spot: float, expiry_ms: int, now_ms: int) -> float:
    """Fair price of a future expiring at ``expiry_ms``: spot plus a small basis growing with time to expiry."""
    years = max(expiry_ms - now_ms, 0) / MS_PER_YEAR
    return spot * (1.0 + ANNUAL_BASIS * years)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black_scholes(forward: float, strike: float, years: float, call: bool, vol: float = OPTION_VOLATILITY) -> float:
    """Undiscounted Black-76 option value in quote currency (USD) on a forward price."""
    years = max(years, 1.0 / 365.0)
    spread = vol * math.sqrt(years)
    d1 = (math.log(forward / strike) + 0.5 * spread * spread) / spread
    d2 = d1 - spread
    if call:
        return forward * _normal_cdf(d1) - strike * _normal_cdf(d2)
    return strike * _normal_cdf(-d2) - forward * _normal_cdf(-d1)


@dataclass(frozen=True)
class BookSpec:
    """What a book needs to know about its instrument: where it trades and in which increments."""

    mid: float  # initial fair price (in the instrument's quote unit)
    tick_size: float
    amount_step: float  # the minimum trade amount; every level amount is a multiple of it
    max_amount_steps: int = 500  # largest level amount, in amount steps
    min_levels: int = 30
    max_levels: int = 50


class RandomWalkBook:
    """One instrument's order book that mutates a few levels per :meth:`step`, never crossing."""

    def __init__(self, spec: BookSpec, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng
        self._decimals = max(0, -math.floor(math.log10(spec.tick_size)) + 2)
        self.bids: dict[int, float] = {}  # price in ticks -> amount
        self.asks: dict[int, float] = {}
        # the tick the walk reverts to; shift() moves it
        self._anchor = max(round(spec.mid / spec.tick_size), 2 * spec.max_levels + 2)
        self._build()

    # -- reading ----------------------------------------------------------------------------------------------

    def price(self, ticks: int) -> float:
        """Price of a tick index, rounded to the tick size's precision."""
        return round(ticks * self.spec.tick_size, self._decimals)

    def levels(self, side: Side, depth: int | None = None) -> list[list[float]]:
        """``[[price, amount], ...]`` best first, at most ``depth`` levels."""
        book = self.bids if side == "bids" else self.asks
        ordered = sorted(book, reverse=(side == "bids"))[:depth]
        return [[self.price(t), book[t]] for t in ordered]

    def best_bid(self) -> float:
        return self.price(max(self.bids))

    def best_ask(self) -> float:
        return self.price(min(self.asks))

    # -- building and mutating -------------------------------------------------------------------------------

    def _random_amount(self) -> float:
        steps = max(1, int(self._rng.paretovariate(1.3)) * self._rng.randint(1, 20))
        steps = min(steps, self.spec.max_amount_steps)
        return round(steps * self.spec.amount_step, 8)

    def _build(self) -> None:
        half_spread = self._rng.randint(1, 3)
        count = self._rng.randint(self.spec.min_levels + 5, self.spec.max_levels - 5)
        bid, ask = self._anchor - half_spread, self._anchor + half_spread
        for _ in range(count):
            if bid >= 1:
                self.bids[bid] = self._random_amount()
            self.asks[ask] = self._random_amount()
            bid -= self._rng.randint(1, 3)
            ask += self._rng.randint(1, 3)

    def _side(self, side: Side) -> dict[int, float]:
        return self.bids if side == "bids" else self.asks

    def _set(self, side: Side, ticks: int, amount: float, changes: list[Change]) -> None:
        book = self._side(side)
        action: Action = "change" if ticks in book else "new"
        book[ticks] = amount
        changes.append((side, action, self.price(ticks), amount))

    def _delete(self, side: Side, ticks: int, changes: list[Change]) -> None:
        del self._side(side)[ticks]
        changes.append((side, "delete", self.price(ticks), 0.0))

    def step(self, mutations: int = 3) -> list[Change]:
        """Apply ``mutations`` random mutations (amount changes, level adds/removes, mid moves) and return them."""
        changes: list[Change] = []
        for _ in range(mutations):
            side: Side = self._rng.choice(("bids", "asks"))
            roll = self._rng.random()
            if roll < 0.5:
                self._change_amount(side, changes)
            elif roll < 0.7:
                self._add_level(side, changes)
            elif roll < 0.85:
                self._remove_level(side, changes)
            else:
                self._move_inside(changes)
        return changes

    def _change_amount(self, side: Side, changes: list[Change]) -> None:
        book = self._side(side)
        # changes concentrate near the top of the book, as on a real exchange
        ordered = sorted(book, reverse=(side == "bids"))
        ticks = ordered[min(int(self._rng.expovariate(0.15)), len(ordered) - 1)]
        self._set(side, ticks, self._random_amount(), changes)

    def _add_level(self, side: Side, changes: list[Change]) -> None:
        book = self._side(side)
        if len(book) >= self.spec.max_levels:
            return self._change_amount(side, changes)
        if side == "bids":
            low, high = max(1, min(book) - 3), min(self.asks) - 1
        else:
            low, high = max(self.bids) + 1, max(book) + 3
        free = [t for t in range(low, high + 1) if t not in book]
        if free:
            self._set(side, self._rng.choice(free), self._random_amount(), changes)

    def _remove_level(self, side: Side, changes: list[Change]) -> None:
        book = self._side(side)
        if len(book) <= self.spec.min_levels:
            return self._change_amount(side, changes)
        self._delete(side, self._rng.choice(list(book)), changes)

    def _move_inside(self, changes: list[Change]) -> None:
        """Move the inside of the book one level towards the anchor-biased direction (a trade through a level)."""
        mid = (max(self.bids) + min(self.asks)) / 2
        pull = (self._anchor - mid) / max(10.0, 0.002 * self._anchor)
        up = self._rng.random() < 0.5 + max(-0.4, min(0.4, pull))
        if up:
            # the best ask is consumed; a new bid may appear inside the widened spread
            if len(self.asks) > self.spec.min_levels:
                self._delete("asks", min(self.asks), changes)
            new_bid = max(self.bids) + 1
            if new_bid < min(self.asks):
                self._make_room("bids", changes)
                self._set("bids", new_bid, self._random_amount(), changes)
        else:
            if len(self.bids) > self.spec.min_levels:
                self._delete("bids", max(self.bids), changes)
            new_ask = min(self.asks) - 1
            if new_ask > max(self.bids):
                self._make_room("asks", changes)
                self._set("asks", new_ask, self._random_amount(), changes)

    def _make_room(self, side: Side, changes: list[Change]) -> None:
        """Delete the side's worst level if the side is full."""
        book = self._side(side)
        if len(book) >= self.spec.max_levels:
            self._delete(side, min(book) if side == "bids" else max(book), changes)

    def shift(self, offset: float) -> list[Change]:
        """Move every level (and the walk's anchor) by ``offset`` in price; returns the change list."""
        ticks = round(offset / self.spec.tick_size)
        if ticks == 0:
            return []
        if min(self.bids) + ticks < 1:
            raise ValueError(f"offset {offset} would push bids to a non-positive price")
        changes: list[Change] = []
        for side in ("bids", "asks"):
            old = self._side(side)
            new = {t + ticks: amount for t, amount in old.items()}
            for t in [t for t in old if t not in new]:
                self._delete(side, t, changes)
            for t, amount in new.items():
                if old.get(t) != amount:
                    self._set(side, t, amount, changes)
        self._anchor += ticks
        return changes
