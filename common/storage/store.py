"""OrderbookDataStore: snapshots kept as JSONL, CSV or Parquet files, one file per symbol and UTC day."""

from __future__ import annotations

import atexit
import logging
import os
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from common.model import OrderbookSnapshot
from common.storage.naming import FORMATS, confine, file_stem, parse_part_name, stem_date
from common.storage.tables import CsvLineEncoder, frame_from_parquet, parse_csv
from common.storage.parquet_parts import ParquetFiles
from common.storage.writers import LineLog, OpenFiles, run_all

log = logging.getLogger(__name__)

_LIVE_STORES: set["OrderbookDataStore"] = set()  # strong references: an unclosed store is still closed at exit


@atexit.register
def _close_live_stores() -> None:
    """Flush stores nobody closed (the guide's examples never do) so no buffered snapshot is lost at exit."""
    for store in list(_LIVE_STORES):
        try:
            store.close()
        except Exception as exc:
            log.error("closing %r at exit failed: %s", store, exc)


def _prepare_directory(path: Path) -> None:
    """Create ``path`` and prove it is writable now, rather than on the first snapshot."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"storage path {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise OSError(exc.errno, f"storage path {path} is not writable: {exc.strerror or exc}") from exc


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown storage format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def _complete_lines(path: Path) -> bytes:
    """The complete lines of a line file; an unterminated last line (a crashed writer's) is left out."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("ignoring an incomplete last line (%d bytes) of %s", len(data) - end, path)
    return data[:end]


class OrderbookDataStore:
    """Saves and loads order-book snapshots under ``base_path/<format>/``.

    Files are named by symbol and the UTC day of the snapshot's exchange timestamp, as in the guide:
    ``base_path/jsonl/BTC_USD_BTC_20241116.jsonl``, ``.../csv/BTC_USD_BTC_20241116.csv`` and, for
    Parquet, the logical file ``.../parquet/BTC_USD_BTC_20241116.parquet`` stored as complete part files
    ``BTC_USD_BTC_20241116.part-00001.parquet`` (one per flush; loading the logical name reads all parts).
    Symbols are sanitized (``[^A-Za-z0-9_-]`` -> ``_``), so no snapshot lands outside ``base_path``.
    The exchange is deliberately not part of the name (guide compatibility): the same symbol of two
    exchanges shares a file, and every row carries its ``exchange`` column to tell them apart.

    Writing never rewrites a file: JSONL/CSV lines are appended through buffered handles (at most
    ``max_open_files`` open, least recently used closed first; size it to the number of symbols times
    line formats being recorded, or files get reopened often) flushed every
    ``flush_interval`` seconds (checked on writes) and on ``flush()``/``close()``. Parquet rows are
    buffered per file (``parquet_max_buffered_rows`` in all) and written as row groups of
    ``parquet_buffer_rows`` rows into a hidden temporary part (at most ``max_open_files`` open), which
    is published on ``flush()``/``close()``, at ``parquet_part_rows`` rows, or once its oldest row is
    ``parquet_part_seconds`` old. Unpublished Parquet rows are lost if the process dies; stores that
    were not closed are closed at interpreter exit.

    Not thread-safe: use one store per thread (or event loop).
    """

    def __init__(self, base_path: str | os.PathLike[str] = "data/raw/orderbooks", *, max_open_files: int = 64,
                 flush_interval: float = 1.0, parquet_buffer_rows: int = 1000,
                 parquet_max_buffered_rows: int = 100_000, parquet_part_rows: int = 100_000,
                 parquet_part_seconds: float = 600.0, parquet_compression: str = "zstd") -> None:
        for name, value in (("flush_interval", flush_interval), ("parquet_buffer_rows", parquet_buffer_rows),
                            ("parquet_max_buffered_rows", parquet_max_buffered_rows),
                            ("parquet_part_rows", parquet_part_rows), ("parquet_part_seconds", parquet_part_seconds)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self.base_path = Path(base_path)
        _prepare_directory(self.base_path)
        self._lines: OpenFiles[LineLog] = OpenFiles(max_open_files)
        self._parquet = ParquetFiles(
            self.base_path / "parquet", max_open=max_open_files, buffer_rows=parquet_buffer_rows,
            max_buffered_rows=parquet_max_buffered_rows, part_rows=parquet_part_rows,
            part_seconds=parquet_part_seconds, compression=parquet_compression)
        self._flush_interval = flush_interval
        self._next_flush = time.monotonic() + flush_interval
        self._csv = CsvLineEncoder()
        self._csv_header = self._csv.header()
        self._closed = False
        _LIVE_STORES.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._lines) + len(self._parquet)} open files"
        return f"OrderbookDataStore({str(self.base_path)!r}, {state})"

    # -- saving ---------------------------------------------------------------------------------------

    def save_snapshot_jsonl(self, orderbook: OrderbookSnapshot) -> None:
        """Append one line of ``orderbook.to_dict()`` to ``jsonl/<SYMBOL>_<YYYYMMDD>.jsonl``."""
        self._save("jsonl", orderbook)

    def save_snapshot_csv(self, orderbook: OrderbookSnapshot) -> None:
        """Append one row (levels as JSON strings) to ``csv/<SYMBOL>_<YYYYMMDD>.csv``."""
        self._save("csv", orderbook)

    def save_snapshot_parquet(self, orderbook: OrderbookSnapshot) -> None:
        """Buffer one row for ``parquet/<SYMBOL>_<YYYYMMDD>.parquet`` (readable after ``flush()``)."""
        self._save("parquet", orderbook)

    def _save(self, fmt: str, orderbook: OrderbookSnapshot) -> None:
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        stem = file_stem(orderbook.symbol, orderbook.timestamp)
        if fmt == "parquet":
            self._parquet.write(stem, orderbook)
        else:
            self._append_line(fmt, stem, orderbook)
        now = time.monotonic()
        if now >= self._next_flush:
            self._next_flush = now + self._flush_interval
            self.flush_buffers()

    def _append_line(self, fmt: str, stem: str, orderbook: OrderbookSnapshot) -> None:
        line_log = self._lines.get((fmt, stem), lambda: self._open_line_log(fmt, stem))
        try:
            line_log.write(orderbook)
        except OSError as exc:  # the file is in an unknown state: drop it, the next snapshot reopens it
            self._lines.discard((fmt, stem))
            exc.add_note(f"while writing {line_log.path}")
            raise

    def _open_line_log(self, fmt: str, stem: str) -> LineLog:
        path = self.base_path / fmt / f"{stem}.{fmt}"
        if fmt == "csv":
            return LineLog(path, self._csv.encode, header=self._csv_header)
        return LineLog(path, _encode_jsonl)

    def flush_buffers(self) -> None:
        """The periodic flush: buffered lines to the OS, Parquet parts older than ``parquet_part_seconds``
        published. Runs automatically every ``flush_interval`` seconds of writing."""
        now = time.monotonic()
        run_all([lambda: self._lines.apply(LineLog.flush), lambda: self._parquet.flush_if_due(now)])

    def flush(self) -> None:
        """Make everything saved so far readable: lines flushed, pending Parquet rows published as a part."""
        run_all([lambda: self._lines.apply(LineLog.flush), self._parquet.flush])

    def close(self) -> None:
        """Flush and close every file (idempotent). The first error is raised after all files were tried."""
        if self._closed:
            return
        self._closed = True
        _LIVE_STORES.discard(self)
        run_all([self._lines.close_all, self._parquet.flush])

    def __enter__(self) -> "OrderbookDataStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- loading --------------------------------------------------------------------------------------

    def load_snapshots_jsonl(self, filename: str | os.PathLike[str]) -> list[OrderbookSnapshot]:
        """All snapshots of a JSONL file (a name from ``list_files('jsonl')``), in file order."""
        path = self._files_for_loading("jsonl", filename)[0]
        snapshots = []
        for line_number, line in enumerate(_complete_lines(path).split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                snapshots.append(OrderbookSnapshot.from_dict(orjson.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{line_number}: malformed snapshot line: {exc}") from exc
        return snapshots

    def load_snapshots_csv(self, filename: str | os.PathLike[str]) -> pd.DataFrame:
        """A CSV file as a DataFrame: ``to_dict()`` columns, levels as ``[[price, size], ...]`` lists."""
        path = self._files_for_loading("csv", filename)[0]
        return parse_csv(_complete_lines(path).decode("utf-8"), path)

    def load_snapshots_parquet(self, filename: str | os.PathLike[str]) -> pd.DataFrame:
        """A logical Parquet file (all its parts, in order) as the same DataFrame as ``load_snapshots_csv``."""
        paths = self._files_for_loading("parquet", filename)
        return frame_from_parquet(pa.concat_tables(pq.read_table(path) for path in paths), paths[0])

    def _files_for_loading(self, fmt: str, filename: str | os.PathLike[str]) -> list[Path]:
        """The files behind ``filename``, after publishing what this store still buffers for them."""
        path = confine(self.base_path / fmt, filename)
        stem = path.name.removesuffix(f".{fmt}")
        if fmt == "parquet":
            self._parquet.publish(stem)
        else:
            self._lines.close((fmt, stem))
        paths = self._files_of(fmt, path)
        if not paths:
            raise FileNotFoundError(f"no {fmt} snapshot file {os.fspath(filename)!r} under {self.base_path / fmt}")
        return paths

    @staticmethod
    def _files_of(fmt: str, path: Path) -> list[Path]:
        """Existing files of a (logical) file: itself, plus its published parts for Parquet, in order."""
        files = [path] if path.is_file() else []
        if fmt == "parquet" and parse_part_name(path.name) is None and path.parent.is_dir():
            stem = path.name.removesuffix(".parquet")
            parts = sorted(
                (parsed[1], entry.path) for entry in os.scandir(path.parent)
                if (parsed := parse_part_name(entry.name)) and parsed[0] == stem
            )
            files += [Path(part_path) for _, part_path in parts]
        return files

    # -- file management ------------------------------------------------------------------------------

    def list_files(self, fmt: str) -> list[str]:
        """Sorted names of the files of one format (Parquet: logical names, one per symbol and day)."""
        directory = self.base_path / _check_format(fmt)
        if not directory.is_dir():
            return []
        names = {entry.name for entry in os.scandir(directory)
                 if entry.is_file() and not entry.name.startswith(".") and entry.name.endswith(f".{fmt}")}
        if fmt == "parquet":
            names = {f"{parsed[0]}.parquet" if (parsed := parse_part_name(name)) else name for name in names}
        return sorted(names)

    def list_all_files(self) -> dict[str, list[str]]:
        """``{'jsonl': [...], 'csv': [...], 'parquet': [...]}``."""
        return {fmt: self.list_files(fmt) for fmt in FORMATS}

    def delete_files(self, older_than_days: int, fmt: Optional[str] = None) -> list[str]:
        """Delete files whose day (from the name) is more than ``older_than_days`` days before today (UTC).

        Only one format if ``fmt`` is given. Returns the deleted names as ``'<format>/<name>'``.
        """
        if older_than_days < 0:
            raise ValueError(f"older_than_days must be >= 0, got {older_than_days!r}")
        cutoff = datetime.now(timezone.utc).date() - timedelta(days=older_than_days)
        deleted = []
        for current in (_check_format(fmt),) if fmt else FORMATS:
            for name in self.list_files(current):
                stem = name.removesuffix(f".{current}")
                day = stem_date(stem)
                if day is None or day >= cutoff:
                    continue
                if current == "parquet":
                    self._parquet.discard(stem)
                else:
                    self._lines.discard((current, stem))
                for path in self._files_of(current, self.base_path / current / name):
                    path.unlink(missing_ok=True)
                deleted.append(f"{current}/{name}")
        return deleted


def _encode_jsonl(orderbook: OrderbookSnapshot) -> bytes:
    return orjson.dumps(orderbook.to_dict(), option=orjson.OPT_APPEND_NEWLINE)
