"""StreamingDataRecorder: a collector callback that writes every snapshot it is given to disk."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Sequence

from common.model import OrderbookSnapshot
from common.storage.naming import FORMATS, file_stem
from common.storage.store import OrderbookDataStore

log = logging.getLogger(__name__)

RECORDER_FORMATS: dict[str, tuple[str, ...]] = {
    "jsonl": ("jsonl",),
    "csv": ("csv",),
    "parquet": ("parquet",),
    "both": ("jsonl", "parquet"),
}


def _formats_of(format: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(format, str):
        if format not in RECORDER_FORMATS:
            raise ValueError(f"unknown recording format {format!r}; expected one of {', '.join(RECORDER_FORMATS)}"
                             f" or a list of {', '.join(FORMATS)}")
        return RECORDER_FORMATS[format]
    formats = tuple(dict.fromkeys(format))
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"recording formats must be a non-empty list of {', '.join(FORMATS)}; got {list(format)!r}")
    return formats


class StreamingDataRecorder:
    """Records snapshots into an :class:`OrderbookDataStore`; use ``record_snapshot`` as ``on_orderbook_update``.

    ``format`` is ``'jsonl'``, ``'csv'``, ``'parquet'``, ``'both'`` or a list such as ``['jsonl', 'csv']``.
    ``'both'`` means JSONL + Parquet: the append-only line log (durable up to the last flush, even after a
    crash) plus the compact columnar copy for analysis. ``flush_interval`` (seconds) bounds how long
    written lines stay in memory buffers: it is applied on writes and, inside an event loop, by a timer
    when the stream goes quiet. Other keyword arguments go to the store (``max_open_files``,
    ``parquet_part_seconds``, ...).

    ``record_snapshot`` is a plain, fast, synchronous method and never raises: a write error (disk full,
    permission) is counted in ``get_stats()['errors']``, logged once per format and symbol, and the
    recorder keeps going. ``flush()`` and ``close()`` behave the same way.
    """

    def __init__(self, base_path: str | os.PathLike[str] = "data/raw/orderbooks",
                 format: str | Sequence[str] = "jsonl", flush_interval: float = 1.0, **store_options: Any) -> None:
        self._format = format if isinstance(format, str) else list(format)
        self._formats = _formats_of(format)
        self._flush_interval = flush_interval
        self.store = OrderbookDataStore(base_path, flush_interval=flush_interval, **store_options)
        save_methods: dict[str, Callable[[OrderbookSnapshot], None]] = {
            "jsonl": self.store.save_snapshot_jsonl,
            "csv": self.store.save_snapshot_csv,
            "parquet": self.store.save_snapshot_parquet,
        }
        self._savers = [(fmt, save_methods[fmt]) for fmt in self._formats]
        self._started_at = datetime.now(timezone.utc)
        self._total = 0
        self._per_symbol: Counter[str] = Counter()
        self._stems: set[str] = set()
        self._errors = 0
        self._reported: set[tuple[str, str]] = set()
        self._timer: Optional[asyncio.TimerHandle] = None
        self._closed = False

    def record_snapshot(self, orderbook: OrderbookSnapshot) -> None:
        """Save one snapshot in every configured format (sync; safe as a collector callback)."""
        recorded = True
        for fmt, save in self._savers:
            try:
                save(orderbook)
            except Exception as exc:  # a recording failure must never reach the streaming loop
                recorded = False
                self._count_error(fmt, str(getattr(orderbook, "symbol", "?")), exc)
        if recorded:
            self._total += 1
            self._per_symbol[orderbook.symbol] += 1
            self._stems.add(file_stem(orderbook.symbol, orderbook.timestamp))
        self._schedule_idle_flush()

    def _count_error(self, what: str, symbol: str, exc: Exception) -> None:
        self._errors += 1
        notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
        if (what, symbol) in self._reported:
            log.debug("recording %s of %s failed again: %s%s", what, symbol, exc, notes)
            return
        self._reported.add((what, symbol))
        log.error("recording %s of %s failed (repeats are only counted): %s: %s%s",
                  what, symbol, type(exc).__name__, exc, notes)

    def _schedule_idle_flush(self) -> None:
        """Inside an event loop, flush once more ``flush_interval`` after writing, even if no snapshot follows."""
        if self._timer is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self._flush_interval, self._flush_on_timer)

    def _flush_on_timer(self) -> None:
        self._timer = None
        self._guarded("periodic flush", self.store.flush_buffers)

    def _guarded(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            self._count_error(what, "*", exc)

    def get_stats(self) -> dict[str, Any]:
        """Counts since construction: snapshots recorded in every format, per symbol, files, errors."""
        return {
            "total_snapshots": self._total,
            "symbols": sorted(self._per_symbol),
            "per_symbol": dict(self._per_symbol),
            "files": sorted(f"{fmt}/{stem}.{fmt}" for stem in self._stems for fmt in self._formats),
            "errors": self._errors,
            "started_at": self._started_at,
            "format": self._format,
            "base_path": str(self.store.base_path),
        }

    def flush(self) -> None:
        """Make everything recorded so far readable on disk (Parquet: publishes a part per file)."""
        self._guarded("flush", self.store.flush)

    def close(self) -> None:
        """Flush and close all files (idempotent); later snapshots are counted as errors."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = True
        self._guarded("close", self.store.close)

    def __enter__(self) -> "StreamingDataRecorder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> "StreamingDataRecorder":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
