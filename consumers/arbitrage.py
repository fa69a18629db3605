"""Cross-exchange comparison and crossed-market detection: pure logic, no I/O.

A *crossed market* inside a comparison group: the best bid on exchange A is above the best ask on
exchange B, so buying on B and selling on A at the touch earns ``edge_bps = (bid_A - ask_B) / ask_B``
(in basis points) before fees, and ``net_bps = edge_bps - taker_fee_B - taker_fee_A`` after them.
:class:`OpportunityTracker` turns the stream of edges into de-duplicated ``open``/``close`` alerts with
hysteresis; :class:`ArbitrageEngine` keeps the newest quote of every instrument and ties it together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from common.model import OrderbookSnapshot, datetime_to_ms
from consumers.cache import received_at
from consumers.grouping import Grouper

log = logging.getLogger(__name__)

DEFAULT_FEE_BPS = 5.0


@dataclass(frozen=True, slots=True)
class Quote:
    """The top of one instrument's book: what comparison needs of a snapshot."""

    exchange: str
    symbol: str
    bid: Optional[float]
    ask: Optional[float]
    received_at: float  # seconds since the epoch
    seq: int = 0

    @property
    def mid(self) -> Optional[float]:
        return None if self.bid is None or self.ask is None else (self.bid + self.ask) / 2

    @property
    def spread(self) -> Optional[float]:
        return None if self.bid is None or self.ask is None else self.ask - self.bid

    def newer_than(self, other: "Quote") -> bool:
        return (self.received_at, self.seq) > (other.received_at, other.seq)

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> "Quote":
        """From :func:`common.codec.decode_fields` output (levels as (n, 2) arrays)."""
        bids, asks = fields["bids"], fields["asks"]
        return cls(
            exchange=fields["exchange"], symbol=fields["symbol"],
            bid=float(bids[0, 0]) if len(bids) else None, ask=float(asks[0, 0]) if len(asks) else None,
            received_at=received_at(fields["recv_ns"], fields["ts"]), seq=fields["seq"],
        )

    @classmethod
    def from_snapshot(cls, snapshot: OrderbookSnapshot) -> "Quote":
        return cls(
            exchange=snapshot.exchange, symbol=snapshot.symbol, bid=snapshot.best_bid, ask=snapshot.best_ask,
            received_at=received_at(snapshot.receive_ts_ns, datetime_to_ms(snapshot.timestamp)), seq=snapshot.seq,
        )


def parse_fees(items: Iterable[str]) -> dict[str, float]:
    """``["deribit=5", "okx=8"]`` -> ``{"deribit": 5.0, "okx": 8.0}``; ValueError with the bad item otherwise."""
    fees: dict[str, float] = {}
    for item in items:
        exchange, sep, value = str(item).partition("=")
        try:
            bps = float(value)
        except ValueError:
            bps = -1.0
        if not sep or not exchange.strip() or not 0 <= bps < 10_000:
            raise ValueError(f"fee must look like EXCHANGE=BPS with 0 <= BPS < 10000 (e.g. okx=8), got {item!r}")
        fees[exchange.strip()] = bps
    return fees


@dataclass(frozen=True)
class FeeSchedule:
    """Taker fee per exchange in bps (``default_bps`` for the others)."""

    taker_bps: Mapping[str, float] = field(default_factory=dict)
    default_bps: float = DEFAULT_FEE_BPS

    def taker(self, exchange: str) -> float:
        return self.taker_bps.get(exchange, self.default_bps)


@dataclass(frozen=True)
class Edge:
    """Buy at ``buy.ask``, sell at ``sell.bid``: the gross and net (after both taker fees) edge in bps."""

    group: str
    buy: Quote
    sell: Quote
    edge_bps: float
    net_bps: float

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.group, self.buy.exchange, self.buy.symbol, self.sell.exchange, self.sell.symbol)


def edges(group: str, quotes: Iterable[tuple[Quote, str]], fees: FeeSchedule) -> list[Edge]:
    """Every cross-exchange (buy, sell) pair of two-sided quotes with the same price unit.

    ``quotes`` are (quote, price unit) pairs; negative edges are included (they close opportunities).
    """
    books = [(q, unit) for q, unit in quotes if q.bid is not None and q.ask is not None and q.ask > 0]
    found = []
    for buy, buy_unit in books:
        for sell, sell_unit in books:
            if buy.exchange == sell.exchange or buy_unit != sell_unit:
                continue
            edge_bps = (sell.bid - buy.ask) / buy.ask * 1e4
            net_bps = edge_bps - fees.taker(buy.exchange) - fees.taker(sell.exchange)
            found.append(Edge(group, buy, sell, edge_bps, net_bps))
    return found


@dataclass(frozen=True)
class Alert:
    """An opportunity opened or closed. ``reason``: ``crossed`` (open), ``narrowed`` (net edge fell below
    threshold - margin) or ``unavailable`` (a book went stale, lost a side or vanished)."""

    event: str  # open | close
    edge: Edge
    ts_ms: int
    reason: str

    def fields(self) -> dict[str, Any]:
        """The alert stream entry (``ccxt:alerts``)."""
        e = self.edge
        return {
            "event": self.event, "group": e.group,
            "buy_exchange": e.buy.exchange, "buy_symbol": e.buy.symbol, "ask": e.buy.ask,
            "sell_exchange": e.sell.exchange, "sell_symbol": e.sell.symbol, "bid": e.sell.bid,
            "edge_bps": round(e.edge_bps, 3), "net_bps": round(e.net_bps, 3), "ts": self.ts_ms,
            "reason": self.reason,
        }

    def describe(self) -> str:
        e = self.edge
        return (f"arbitrage {self.event} ({self.reason}) {e.group}: buy {e.buy.exchange} {e.buy.symbol} @ {e.buy.ask:g}, "
                f"sell {e.sell.exchange} {e.sell.symbol} @ {e.sell.bid:g}: edge {e.edge_bps:.2f} bps, net {e.net_bps:.2f} bps")


class OpportunityTracker:
    """Open/close state machine with hysteresis: one ``open`` alert when a pair's net edge reaches
    ``threshold_bps``, one ``close`` when it falls below ``threshold_bps - close_margin_bps`` or the pair
    is no longer available; nothing in between, however many ticks."""

    def __init__(self, threshold_bps: float, close_margin_bps: float = 1.0) -> None:
        if close_margin_bps < 0:
            raise ValueError(f"close margin must be >= 0, got {close_margin_bps}")
        self.threshold_bps = threshold_bps
        self.close_below_bps = threshold_bps - close_margin_bps
        self._open: dict[str, dict[tuple, Edge]] = {}  # group -> pair key -> latest edge

    @property
    def open_groups(self) -> list[str]:
        return [group for group, pairs in self._open.items() if pairs]

    def is_open(self, edge: Edge) -> bool:
        return edge.key in self._open.get(edge.group, {})

    def update(self, group: str, current: Iterable[Edge], ts_ms: int) -> list[Alert]:
        """Feed every currently available edge of ``group``; returns the alerts this changes."""
        opened = self._open.setdefault(group, {})
        alerts: list[Alert] = []
        seen = set()
        for edge in current:
            seen.add(edge.key)
            if edge.key in opened:
                if edge.net_bps < self.close_below_bps:
                    del opened[edge.key]
                    alerts.append(Alert("close", edge, ts_ms, "narrowed"))
                else:
                    opened[edge.key] = edge
            elif edge.net_bps >= self.threshold_bps:
                opened[edge.key] = edge
                alerts.append(Alert("open", edge, ts_ms, "crossed"))
        for key in [k for k in opened if k not in seen]:
            alerts.append(Alert("close", opened.pop(key), ts_ms, "unavailable"))
        return alerts


class ArbitrageEngine:
    """Keeps the newest quote per instrument, grouped; evaluates groups into alerts.

    Quotes older than ``max_age`` seconds take no part, so a dead feed cannot create (or hold open) an
    opportunity. At DEBUG level every evaluation logs the group's mid differences. Call :meth:`update` with each batch of quotes and :meth:`sweep` periodically (it closes
    opportunities whose books went stale without any new update in their group).
    """

    def __init__(self, grouper: Grouper, fees: FeeSchedule, threshold_bps: float, *,
                 close_margin_bps: float = 1.0, max_age: float = 5.0) -> None:
        if max_age <= 0:
            raise ValueError(f"max age must be positive, got {max_age}")
        self.grouper = grouper
        self.fees = fees
        self.max_age = max_age
        self.tracker = OpportunityTracker(threshold_bps, close_margin_bps)
        self._groups: dict[str, dict[tuple[str, str], tuple[Quote, str]]] = {}  # group -> instrument -> (quote, unit)
        self._unknown: set[tuple[str, str]] = set()

    def update(self, quotes: Iterable[Quote], now: float) -> list[Alert]:
        """Take a batch of quotes (any order) and evaluate the groups they touch, once each."""
        touched = set()
        for quote in quotes:
            membership = self.grouper.membership(quote.exchange, quote.symbol)
            if membership is None:
                if (quote.exchange, quote.symbol) not in self._unknown:
                    self._unknown.add((quote.exchange, quote.symbol))
                    log.warning("cannot group %s %s (no market metadata, unparseable symbol): ignored",
                                quote.exchange, quote.symbol)
                continue
            members = self._groups.setdefault(membership.group, {})
            held = members.get((quote.exchange, quote.symbol))
            if held is None or quote.newer_than(held[0]):
                members[(quote.exchange, quote.symbol)] = (quote, membership.price_unit)
                touched.add(membership.group)
        return [alert for group in sorted(touched) for alert in self._evaluate(group, now)]

    def sweep(self, now: float) -> list[Alert]:
        """Re-evaluate the groups with open opportunities (closes those whose books went stale)."""
        return [alert for group in self.tracker.open_groups for alert in self._evaluate(group, now)]

    def _evaluate(self, group: str, now: float) -> list[Alert]:
        fresh = [(q, unit) for q, unit in self._groups.get(group, {}).values() if now - q.received_at <= self.max_age]
        if log.isEnabledFor(logging.DEBUG):  # the mid differences, for -v
            log.debug("%s: %s", group, "; ".join(
                f"{r.quote.exchange} {r.quote.symbol} mid {r.quote.mid} ({r.diff_bps:+.2f} bps vs best)"
                for r in compare(fresh, now, self.max_age) if r.diff_bps is not None))
        return self.tracker.update(group, edges(group, fresh, self.fees), int(now * 1000))


@dataclass(frozen=True)
class ComparisonRow:
    """One line of the side-by-side comparison of a group."""

    quote: Quote
    age: float
    stale: bool
    diff_bps: Optional[float]  # mid vs the best book's mid; None if not comparable
    best: bool  # this is the reference (best) book of its price unit


def compare(quotes: Iterable[tuple[Quote, str]], now: float, max_age: float) -> list[ComparisonRow]:
    """Rows for a side-by-side table, sorted by exchange, symbol.

    The *best* book of a price unit is its fresh two-sided book with the tightest relative spread; every
    other book's ``diff_bps`` is its mid minus the best mid, in bps of the best mid. Stale or one-sided
    books get no diff.
    """
    rows = sorted(quotes, key=lambda item: (item[0].exchange, item[0].symbol))
    usable = [(q, unit) for q, unit in rows if q.mid and now - q.received_at <= max_age]
    best: dict[str, Quote] = {}
    for quote, unit in sorted(usable, key=lambda item: item[0].spread / item[0].mid):
        best.setdefault(unit, quote)
    out = []
    for quote, unit in rows:
        ref = best.get(unit)
        comparable = ref is not None and (quote, unit) in usable
        diff = (quote.mid - ref.mid) / ref.mid * 1e4 if comparable else None
        age = now - quote.received_at
        out.append(ComparisonRow(quote, age, age > max_age, diff, ref is quote))
    return out
