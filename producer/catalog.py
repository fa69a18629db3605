"""Market discovery over ccxt's loaded markets: symbol resolution and futures/options filters."""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Optional

from common.markets import MarketInfo, expiry_matcher, parse_option_type
from producer.errors import MarketTypeError, UnknownSymbolError

FUTURE_TYPES = ("future", "swap")  # the guide's "futures" include perpetual swaps
OPTION_TYPES = ("option",)


class MarketCatalog:
    """Read-only view of one exchange's markets (``exchange.markets`` after ``load_markets``).

    Books are keyed by ccxt unified symbol; every lookup also accepts the exchange-native id
    (``BTC-PERPETUAL``) and is case-insensitive as a last resort.
    """

    def __init__(self, exchange_id: str, markets: dict[str, dict[str, Any]]) -> None:
        self.exchange_id = exchange_id
        self._markets = markets
        self._by_alias: dict[str, str] = {}
        for symbol, market in markets.items():
            self._by_alias.setdefault(str(market.get("id")), symbol)
        for alias, symbol in list(self._by_alias.items()) + [(s, s) for s in markets]:
            self._by_alias.setdefault(alias.upper(), symbol)
        self._info: dict[str, MarketInfo] = {}

    def find(self, symbol: str) -> Optional[str]:
        """The unified symbol for ``symbol`` (unified or native id), or None."""
        if symbol in self._markets:
            return symbol
        found = self._by_alias.get(symbol)
        if found is None and isinstance(symbol, str):
            found = self._by_alias.get(symbol.strip().upper())
        return found

    def resolve(self, symbol: str) -> str:
        """Like :meth:`find` but raises :class:`UnknownSymbolError` naming close matches."""
        found = self.find(symbol)
        if found is not None:
            return found
        candidates = list(self._markets) + [str(m.get("id")) for m in self._markets.values()]
        close = difflib.get_close_matches(str(symbol), candidates, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownSymbolError(f"{self.exchange_id}: unknown symbol {symbol!r}{hint}")

    def market(self, symbol: str) -> dict[str, Any]:
        return self._markets[self.resolve(symbol)]

    def market_type(self, symbol: str) -> str:
        return self._markets[symbol].get("type") or "spot"

    def info(self, symbol: str) -> MarketInfo:
        """:class:`MarketInfo` of a unified symbol (cached)."""
        info = self._info.get(symbol)
        if info is None:
            info = self._info[symbol] = MarketInfo.from_ccxt(self.exchange_id, self._markets[symbol])
        return info

    def resolve_kind(self, symbols: Iterable[str], kinds: tuple[str, ...], method: str) -> list[str]:
        """Resolve every symbol (all-or-nothing) and check it is one of ``kinds``."""
        resolved = []
        for symbol in symbols:
            unified = self.resolve(symbol)
            kind = self.market_type(unified)
            if kind not in kinds:
                other = "subscribe_options" if kind in OPTION_TYPES else "subscribe_futures"
                raise MarketTypeError(
                    f"{self.exchange_id}: {symbol!r} is a {kind} market, not {'/'.join(kinds)}; use {other}()"
                )
            resolved.append(unified)
        return list(dict.fromkeys(resolved))

    def futures(self, base_currency: Optional[str] = None) -> list[str]:
        """Active futures and perpetual swaps, sorted by base, perpetuals first, then by expiry."""
        rows = [info for info in self._active(FUTURE_TYPES) if _base_matches(info, base_currency)]
        rows.sort(key=lambda i: (i.base, i.type != "swap", i.expiry or 0, i.symbol))
        return [info.symbol for info in rows]

    def options(
        self,
        base_currency: Optional[str] = None,
        option_type: Optional[str] = None,
        expiry: Optional[str] = None,
        min_strike: Optional[float] = None,
        max_strike: Optional[float] = None,
    ) -> list[str]:
        """Active options matching every given filter, sorted by base, expiry, strike, call before put.

        ``option_type``: C/P/call/put; ``expiry``: DEC26 (month), 25DEC26 (day), 2026-12-25 or 261225;
        ``min_strike``/``max_strike``: inclusive strike range.
        """
        wanted_type = parse_option_type(option_type) if option_type is not None else None
        on_expiry = expiry_matcher(expiry) if expiry is not None else None
        rows = [
            info
            for info in self._active(OPTION_TYPES)
            if _base_matches(info, base_currency)
            and (wanted_type is None or info.option_type == wanted_type)
            and (on_expiry is None or on_expiry(info.expiry_date))
            and (min_strike is None or (info.strike is not None and info.strike >= min_strike))
            and (max_strike is None or (info.strike is not None and info.strike <= max_strike))
        ]
        rows.sort(key=lambda i: (i.base, i.expiry or 0, i.strike or 0.0, i.option_type or "", i.symbol))
        return [info.symbol for info in rows]

    def _active(self, kinds: tuple[str, ...]) -> list[MarketInfo]:
        return [
            self.info(symbol)
            for symbol, market in self._markets.items()
            if market.get("type") in kinds and market.get("active") is not False
        ]


def _base_matches(info: MarketInfo, base_currency: Optional[str]) -> bool:
    return base_currency is None or info.base.upper() == str(base_currency).strip().upper()
