"""Instrument metadata shared by producers (discovery, registry) and consumers (grouping, archive)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from typing import Any, Optional

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_CODE = re.compile(r"^(\d{1,2})([A-Z]{3})(\d{2})$")  # 25DEC26
_MONTH_CODE = re.compile(r"^([A-Z]{3})(\d{2})$")  # DEC26
_YYMMDD = re.compile(r"^(\d{2})(\d{2})(\d{2})$")  # 261225 (ccxt symbol suffix)


@dataclass(frozen=True)
class MarketInfo:
    """What consumers need to know about one instrument (published to the registry as JSON)."""

    exchange: str
    symbol: str
    id: str
    type: str
    base: str
    quote: str
    settle: Optional[str] = None
    expiry: Optional[int] = None  # ms since the epoch
    strike: Optional[float] = None
    option_type: Optional[str] = None  # "call" | "put"
    contract_size: Optional[float] = None
    tick_size: Optional[float] = None
    active: bool = True

    @property
    def expiry_date(self) -> Optional[date]:
        if self.expiry is None:
            return None
        return datetime.fromtimestamp(self.expiry / 1000, tz=timezone.utc).date()

    @classmethod
    def from_ccxt(cls, exchange: str, market: dict[str, Any]) -> "MarketInfo":
        """Build from one entry of ccxt's ``exchange.markets``. Perpetual swaps get no expiry (ccxt gives
        some, e.g. deribit's, a far-future placeholder such as 3000-01-01)."""
        option_type = market.get("optionType")
        kind = market.get("type") or "spot"
        return cls(
            exchange=exchange,
            symbol=market["symbol"],
            id=str(market.get("id")),
            type=kind,
            base=market.get("base") or "",
            quote=market.get("quote") or "",
            settle=market.get("settle"),
            expiry=int(market["expiry"]) if market.get("expiry") and kind != "swap" else None,
            strike=float(market["strike"]) if market.get("strike") is not None else None,
            option_type=option_type.lower() if isinstance(option_type, str) else None,
            contract_size=_float_or_none(market.get("contractSize")),
            tick_size=_float_or_none((market.get("precision") or {}).get("price")),
            active=market.get("active") is not False,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MarketInfo":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


def parse_option_type(value: str) -> str:
    """``C``/``call`` -> ``call``; ``P``/``put`` -> ``put``; anything else raises ValueError."""
    norm = str(value).strip().lower()
    if norm in ("c", "call"):
        return "call"
    if norm in ("p", "put"):
        return "put"
    raise ValueError(f"option type must be C, P, call or put, got {value!r}")


def expiry_matcher(value: str):
    """Return a predicate ``f(date) -> bool`` for an expiry filter.

    Accepts a month code (``DEC24``: any day of that month), a day code (``25DEC26``), an ISO date
    (``2026-12-25``) or ccxt's ``YYMMDD`` (``261225``). Raises ValueError for anything else.
    """
    text = str(value).strip().upper()
    m = _DAY_CODE.match(text)
    if m and m.group(2) in _MONTHS:
        day = date(2000 + int(m.group(3)), _MONTHS.index(m.group(2)) + 1, int(m.group(1)))
        return lambda d: d == day
    m = _MONTH_CODE.match(text)
    if m and m.group(1) in _MONTHS:
        year, month = 2000 + int(m.group(2)), _MONTHS.index(m.group(1)) + 1
        return lambda d: d is not None and d.year == year and d.month == month
    m = _YYMMDD.match(text)
    if m:
        day = date(2000 + int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return lambda d: d == day
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expiry must look like DEC26 (month), 25DEC26 (day), 2026-12-25 or 261225, got {value!r}"
        ) from None
    return lambda d: d == day


def _float_or_none(value: Any) -> Optional[float]:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
