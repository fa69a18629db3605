"""Which instruments on different exchanges are the same economic exposure (comparison groups).

Two instruments are equivalent when they share base currency, market type, expiry date, strike and
option type. The facts come from the market registry (``ccxt:markets:<exchange>``, :class:`MarketInfo`);
without registry metadata they are parsed from the ccxt unified symbol
``BASE/QUOTE[:SETTLE[-YYMMDD[-STRIKE-C|P]]]``. Group keys read like ``BTC-swap``,
``BTC-future-2026-12-25`` and ``BTC-option-2026-12-25-60000-call``. Explicit groups (name -> list of
``exchange:symbol``) override the automatic grouping of their members.

Caveat -- comparable, not identical: USD- and USDT-quoted instruments (and inverse, coin-settled,
vs linear, stablecoin-settled contracts) land in one group. Their prices are all "USD per coin", but
USDT is not exactly USD (it trades a few bps away from par, more in stress), inverse contracts have a
non-linear payoff and are margined in the coin, and funding, contract sizes and fees differ. A price
difference between them is a signal to look at, not a risk-free profit. Options are compared only
when their prices are in the same unit: coin-settled options (deribit, okx) are quoted in the coin,
the others in USD(T), so those two kinds share a group but are never compared with each other.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import date
from typing import Iterable, Mapping, Optional

from common.config import ConfigError
from common.markets import MarketInfo, parse_option_type

_SYMBOL = re.compile(
    r"^(?P<base>[^/]+)/(?P<quote>[^:]+)"
    r"(?::(?P<settle>[^-]+)(?:-(?P<expiry>\d{6})(?:-(?P<strike>\d+(?:\.\d+)?)-(?P<right>[CP]))?)?)?$"
)
_USD_LIKE = {"USD", "USDT", "USDC"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Instrument:
    """The economic identity of a contract: what decides its comparison group."""

    base: str
    type: str  # swap | future | option | spot
    quote: str
    settle: Optional[str] = None
    expiry: Optional[date] = None
    strike: Optional[float] = None
    option_type: Optional[str] = None  # call | put

    @property
    def group(self) -> str:
        """``BTC-swap``, ``BTC-future-2026-12-25``, ``BTC-option-2026-12-25-60000-call``."""
        parts = [self.base.upper(), self.type]
        if self.expiry is not None:
            parts.append(self.expiry.isoformat())
        if self.strike is not None:
            parts.append(f"{self.strike:f}".rstrip("0").rstrip("."))
        if self.option_type is not None:
            parts.append(self.option_type)
        return "-".join(parts)

    @property
    def price_unit(self) -> str:
        """What prices are quoted in: ``USD`` for USD-like quotes, the coin for coin-settled options."""
        if self.type == "option" and self.settle and self.settle.upper() == self.base.upper():
            return self.base.upper()
        return "USD" if self.quote.upper() in _USD_LIKE else self.quote.upper()

    @classmethod
    def from_market(cls, market: MarketInfo) -> "Instrument":
        return cls(
            base=market.base, type=market.type, quote=market.quote, settle=market.settle,
            expiry=market.expiry_date, strike=market.strike, option_type=market.option_type,
        )

    @classmethod
    def from_symbol(cls, symbol: str) -> "Instrument":
        """Parse a ccxt unified symbol; ValueError if it does not look like one."""
        m = _SYMBOL.match(symbol)
        if not m:
            raise ValueError(f"not a ccxt unified symbol (BASE/QUOTE[:SETTLE[-YYMMDD[-STRIKE-C|P]]]): {symbol!r}")
        expiry = m["expiry"]
        kind = "spot" if not m["settle"] else "swap" if not expiry else "future" if not m["strike"] else "option"
        return cls(
            base=m["base"], type=kind, quote=m["quote"], settle=m["settle"],
            expiry=date(2000 + int(expiry[:2]), int(expiry[2:4]), int(expiry[4:])) if expiry else None,
            strike=float(m["strike"]) if m["strike"] else None,
            option_type=parse_option_type(m["right"]) if m["right"] else None,
        )


def parse_member(text: str) -> tuple[str, str]:
    """``"deribit:BTC/USD:BTC"`` -> (``deribit``, ``BTC/USD:BTC``); ValueError otherwise."""
    exchange, sep, symbol = str(text).partition(":")
    if not sep or not exchange or not symbol:
        raise ValueError(f"group member must look like EXCHANGE:SYMBOL (e.g. deribit:BTC/USD:BTC), got {text!r}")
    return exchange.strip(), symbol.strip()


def explicit_groups(mapping: Mapping[str, object]) -> dict[tuple[str, str], str]:
    """Validate ``{group: ["exchange:symbol", ...]}`` into (exchange, symbol) -> group (ConfigError if bad)."""
    members: dict[tuple[str, str], str] = {}
    for name, listed in mapping.items():
        if not isinstance(listed, list) or not listed:
            raise ConfigError(f"groups: {name!r} must map to a non-empty list of EXCHANGE:SYMBOL")
        for text in listed:
            try:
                member = parse_member(text)
            except ValueError as exc:
                raise ConfigError(f"groups: {name!r}: {exc}") from None
            if member in members and members[member] != str(name):
                raise ConfigError(f"groups: {text!r} is in both {members[member]!r} and {name!r}")
            members[member] = str(name)
    return members


@dataclass(frozen=True)
class Membership:
    """An instrument's place in the comparison: its group and the unit its prices are in."""

    group: str
    price_unit: str


class Grouper:
    """Assigns (exchange, symbol) to a comparison group: explicit groups, then the registry, then the symbol."""

    def __init__(self, explicit: Optional[Mapping[str, object]] = None, markets: Iterable[MarketInfo] = ()) -> None:
        self._explicit = explicit_groups(explicit or {})
        self._markets: dict[tuple[str, str], MarketInfo] = {}
        self._memo: dict[tuple[str, str], Optional[Membership]] = {}
        self.add_markets(markets)

    def add_markets(self, markets: Iterable[MarketInfo]) -> None:
        """Learn registry metadata (it wins over symbol parsing from now on)."""
        for market in markets:
            self._markets[(market.exchange, market.symbol)] = market
            self._memo.pop((market.exchange, market.symbol), None)

    def add_registry(self, entries: Iterable[bytes | str]) -> None:
        """Learn from raw market-registry values (MarketInfo JSON); unreadable entries are logged and skipped."""
        markets = []
        for raw in entries:
            try:
                markets.append(MarketInfo.from_dict(json.loads(raw)))
            except (ValueError, TypeError) as exc:
                log.warning("unreadable market registry entry %.80r (%s): its symbol decides its group", raw, exc)
        self.add_markets(markets)

    def membership(self, exchange: str, symbol: str) -> Optional[Membership]:
        """The instrument's group and price unit; None if it has no metadata and its symbol cannot be parsed."""
        key = (exchange, symbol)
        if key not in self._memo:
            self._memo[key] = self._resolve(exchange, symbol)
        return self._memo[key]

    def _resolve(self, exchange: str, symbol: str) -> Optional[Membership]:
        market = self._markets.get((exchange, symbol))
        try:
            instrument = Instrument.from_market(market) if market else Instrument.from_symbol(symbol)
        except ValueError:
            instrument = None
        explicit = self._explicit.get((exchange, symbol))
        if explicit is not None:
            return Membership(explicit, instrument.price_unit if instrument else "?")
        return None if instrument is None else Membership(instrument.group, instrument.price_unit)
