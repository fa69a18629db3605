"""Shard planning: split an exchange's selection into producer shards of at most N symbols.

Shards stay meaningful to people and stable under market refresh: futures + perpetuals of a currency
form one shard; a currency's options are split by whole expiries (first-fit decreasing), so a shard
config names currencies and expiries, never a frozen symbol list, and newly listed strikes of those
expiries land in the right shard by themselves. An expiry larger than N on its own is split into
calls and puts, and those, if still too large, into contiguous open-ended strike ranges.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any, Iterable

from common.markets import MarketInfo

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def day_code(day: date) -> str:
    """2026-12-25 -> 25DEC26 (the expiry filter syntax of the collector)."""
    return f"{day.day}{_MONTHS[day.month - 1]}{day.year % 100:02d}"


def plan_shards(
    exchange: str,
    markets: Iterable[MarketInfo],
    futures: Iterable[str],
    options: Iterable[str],
    max_symbols: int,
) -> list[dict[str, Any]]:
    """Shard configs (``produce --config`` mappings) covering the selection, each with a ``symbols_count``."""
    if max_symbols <= 0:
        raise ValueError("max_symbols must be positive")
    markets = [m for m in markets if m.active]
    shards: list[dict[str, Any]] = []
    for base in dict.fromkeys(b.upper() for b in futures):
        count = sum(1 for m in markets if m.base.upper() == base and m.type in ("future", "swap"))
        if count:
            shards.append({"exchange": exchange, "shard": f"{base.lower()}-fut", "futures": [base], "symbols_count": count})
    for base in dict.fromkeys(b.upper() for b in options):
        strikes: dict[tuple[date, str], list[float]] = defaultdict(list)
        for m in markets:
            if m.base.upper() == base and m.type == "option" and m.expiry_date and m.option_type and m.strike is not None:
                strikes[(m.expiry_date, m.option_type)].append(m.strike)
        pieces: list[tuple[int, date, Any, Any]] = []  # (size, expiry, option type, strike range)
        for expiry in sorted({e for e, _ in strikes}):
            total = len(strikes[(expiry, "call")]) + len(strikes[(expiry, "put")])
            if total <= max_symbols:
                pieces.append((total, expiry, None, None))
                continue
            for kind in ("call", "put"):
                pieces += [(n, expiry, kind, rng) for n, rng in _strike_ranges(sorted(strikes[(expiry, kind)]), max_symbols)]
        bins: list[dict[str, Any]] = []
        for size, expiry, kind, rng in sorted(pieces, key=lambda p: (-p[0], p[1], p[2] or "")):
            target = None if rng else next(
                (b for b in bins if b["kind"] == kind and not b["range"] and b["symbols_count"] + size <= max_symbols), None)
            if target is None:
                target = {"kind": kind, "range": rng, "expiries": [], "symbols_count": 0}
                bins.append(target)
            target["expiries"].append(expiry)
            target["symbols_count"] += size
        for index, b in enumerate(sorted(bins, key=lambda b: (min(b["expiries"]), b["kind"] or "")), start=1):
            shard = {
                "exchange": exchange,
                "shard": f"{base.lower()}-opt{index}",
                "options": [base],
                "expiry": [day_code(e) for e in sorted(b["expiries"])],
                "symbols_count": b["symbols_count"],
            }
            if b["kind"]:
                shard["option_type"] = b["kind"]
            if b["range"]:
                low, high = b["range"]
                shard.update({k: v for k, v in (("min_strike", low), ("max_strike", high)) if v is not None})
            shards.append(shard)
    return shards


def _strike_ranges(strikes: list[float], max_symbols: int) -> list[tuple[int, tuple]]:
    """Cut sorted strikes into chunks of at most ``max_symbols``: (count, (min_strike, max_strike)), the
    first range open below, the last open above, neighbours touching, so every future strike has a home."""
    if len(strikes) <= max_symbols:
        return [(len(strikes), None)] if strikes else []
    starts = list(range(0, len(strikes), max_symbols))
    out = []
    for i, start in enumerate(starts):
        chunk = strikes[start : start + max_symbols]
        low = None if i == 0 else chunk[0]
        high = None if i == len(starts) - 1 else strikes[starts[i + 1]] - 1e-9
        out.append((len(chunk), (low, high)))
    return out
