"""File naming of stored snapshots: safe symbol names, daily file stems, Parquet part names, path confinement."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Optional

FORMATS = ("jsonl", "csv", "parquet")

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MAX_SYMBOL_CHARS = 120
_STEM_DATE = re.compile(r"_(\d{8})$")
_PART_NAME = re.compile(r"^(?P<stem>.+)\.part-(?P<number>\d+)\.parquet$")


@functools.lru_cache(maxsize=4096)
def safe_symbol(symbol: str) -> str:
    """``'BTC/USD:BTC'`` -> ``'BTC_USD_BTC'``: every character but ``[A-Za-z0-9_-]`` becomes ``_``.

    The result never contains a path separator, a dot, NUL or anything else that could leave the
    target directory; over-long symbols are cut and suffixed with a hash so names stay unique and short.
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"cannot store a snapshot without a symbol (got {symbol!r})")
    safe = _UNSAFE_CHARS.sub("_", symbol)
    if len(safe) > _MAX_SYMBOL_CHARS:
        digest = hashlib.sha1(symbol.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        safe = f"{safe[:_MAX_SYMBOL_CHARS - 13]}-{digest}"
    return safe


def utc_day(timestamp: datetime) -> str:
    """``YYYYMMDD`` of a timestamp in UTC (a naive timestamp is taken as UTC, like the model does)."""
    if timestamp.tzinfo is not None:
        timestamp = timestamp.astimezone(timezone.utc)
    return f"{timestamp.year:04d}{timestamp.month:02d}{timestamp.day:02d}"


def file_stem(symbol: str, timestamp: datetime) -> str:
    """The per-symbol, per-UTC-day name shared by all formats: ``BTC_USD_BTC_20241116``."""
    return f"{safe_symbol(symbol)}_{utc_day(timestamp)}"


def stem_date(stem: str) -> Optional[date]:
    """The day encoded at the end of a file stem, or None if the name carries none."""
    match = _STEM_DATE.search(stem)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def part_name(stem: str, number: int) -> str:
    """Name of the ``number``-th published part of a logical Parquet file."""
    return f"{stem}.part-{number:05d}.parquet"


def parse_part_name(filename: str) -> Optional[tuple[str, int]]:
    """``'X.part-00003.parquet'`` -> ``('X', 3)``; None for any other name."""
    match = _PART_NAME.match(filename)
    return None if match is None else (match.group("stem"), int(match.group("number")))


def confine(directory: Path, filename: str | os.PathLike[str]) -> Path:
    """Resolve ``filename`` inside ``directory``; ValueError if it would point anywhere else."""
    name = os.fspath(filename)
    if not name or "\x00" in name:
        raise ValueError(f"invalid file name {name!r}")
    root = directory.resolve()
    candidate = (root / name).resolve()
    if candidate == root or not candidate.is_relative_to(root):
        raise ValueError(f"file name {name!r} points outside {root}")
    return candidate
