"""The Parquet archiver: every book stream of the selected shards into a Hive-partitioned Parquet dataset.

Layout (readable as is by ``pyarrow.dataset`` with ``partitioning="hive"``, DuckDB ``read_parquet(...,
hive_partitioning=true)`` and polars ``scan_parquet(..., hive_partitioning=True)``)::

    <out>/exchange=<exchange>/date=<YYYY-MM-DD>/part-<consumer>-<UTC time>-<counter>.parquet
    <out>/exchange=<exchange>/date=<YYYY-MM-DD>/.tmp-part-...    a file being written (hidden, no suffix)
    <out>/_pending/<file name>.json                             commit marker (see below; readers skip "_")

``date`` is the UTC day of the exchange timestamp. ``exchange`` and ``date`` live in the path only (the
Hive convention, as ``pyarrow.dataset.write_dataset`` does; polars duplicates a column found in both).
Columns: ``symbol``, ``market_type`` (string), ``timestamp`` (timestamp[ms, UTC], the exchange time),
``receive_ts_ns`` (int64), ``exchange_seq`` (int64, null when the exchange has none), ``seq`` (int64),
``resync`` (bool), ``stream_id`` (string, the Redis entry id) and the book as flat float64 columns
``bid_px_0..bid_px_{depth-1}``, ``bid_sz_*``, ``ask_px_*``, ``ask_sz_*`` (level 0 is the best; deeper levels
are cut, missing ones are null). One zstd file holds one row group.

Files: one buffer per (exchange, date); it becomes a file when it holds ``rows_per_file`` rows, when it is
``max_file_age`` seconds old, and at shutdown. So the file count is bounded by time and volume, never by
messages or symbols.

Buffers that reach ``rows_per_file`` are written in the background (one write at a time) while the next
batches are buffered; their entries are returned as durable by a later ``handle``/``flush``/``drain`` call.

Exactly once in the dataset. A file is written as ``.tmp-...`` and fsync'd; then its commit marker (the
Redis entry ids it holds, per stream) is written and fsync'd; then the file is renamed into place and the
directory fsync'd. Only then are its entries returned as durable (the runner XACKs them); the marker is
deleted once the XACK succeeded. A crash can leave entries that are in the dataset but still pending in
the group. They come back *redelivered* (pending entries at restart, or reclaimed by another archiver of
the group after ``claim_idle``), and an entry listed by a marker whose file exists is acked without being
written again. A marker without its file (crash before the rename) does not count: its entries are
written anew. Markers whose entries are no longer pending are swept. Hence no row is lost and, after any
crash, none is duplicated — with one proviso that no stream consumer can remove: an archiver that stalls
for longer than ``claim_idle`` while others reclaim its entries. ``claim_idle`` must therefore exceed
``max_file_age`` (entries wait that long in a buffer), and ``consumers.reader.read_books`` drops repeated
``(exchange, symbol, stream_id)`` rows as a last line of defence.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from common.codec import SnapshotColumns
from common.runtime import tune_gc
from consumers.runner import StreamEntry, Worker, decode_entries

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: exchange timestamps outside [1970, 10000) cannot name a date partition
MAX_TS_MS = 253_402_300_800_000
TMP_PREFIX = ".tmp-"
PENDING_DIR = "_pending"
#: a ``.tmp-`` file lives for one write (well under a second); older ones are left by a crash
STALE_TMP_SECONDS = 60.0
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
SIDES = ("bid_px", "bid_sz", "ask_px", "ask_sz")


def level_columns(depth: int) -> list[str]:
    """The flat level column names in file order: bid_px_0.., bid_sz_0.., ask_px_0.., ask_sz_0.."""
    return [f"{side}_{level}" for side in SIDES for level in range(depth)]


def archive_schema(depth: int) -> pa.Schema:
    """The schema of every file (``exchange`` and ``date`` come from the path)."""
    return pa.schema(
        [
            ("symbol", pa.string()),
            ("market_type", pa.string()),
            ("timestamp", pa.timestamp("ms", tz="UTC")),
            ("receive_ts_ns", pa.int64()),
            ("exchange_seq", pa.int64()),
            ("seq", pa.int64()),
            ("resync", pa.bool_()),
            ("stream_id", pa.string()),
            *((name, pa.float64()) for name in level_columns(depth)),
        ]
    )


def _levels(sides: list[bytes], depth: int) -> np.ndarray:
    """Float64 level blocks of n books -> (2, depth, n): prices and sizes per level, NaN where absent."""
    n = len(sides)
    counts = np.fromiter(map(len, sides), dtype=np.intp, count=n) // 16
    flat = np.frombuffer(b"".join(sides), dtype="<f8").reshape(-1, 2)
    if n and (counts == depth).all():  # the usual case: every book exactly ``depth`` deep
        return flat.reshape(n, depth, 2).transpose(2, 1, 0)
    out = np.full((n, depth, 2), np.nan)
    total = len(flat)
    if total:
        level = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        keep = level < depth
        out[np.repeat(np.arange(n), counts)[keep], level[keep]] = flat[keep]
    return out.transpose(2, 1, 0)


@dataclass(slots=True)
class _Block:
    """Rows of one partition from one batch: as an Arrow record batch of the file schema, and the entries."""

    batch: pa.RecordBatch
    entries: list[StreamEntry]  # released (stream + id only): what acking and markers need

    @classmethod
    def build(cls, entries: list[StreamEntry], columns: SnapshotColumns, rows: list[int], schema: pa.Schema,
              depth: int) -> "_Block":
        """Convert the given rows of ``entries`` (decoded: ``columns``); raises ValueError/OverflowError on a value
        the schema cannot hold."""
        if len(rows) < len(entries):
            entries, columns = [entries[row] for row in rows], columns.take(rows)
        n = len(columns)
        levels = np.concatenate([_levels(columns.bids, depth).reshape(2 * depth, n),
                                 _levels(columns.asks, depth).reshape(2 * depth, n)])
        arrays = [
            pa.array(columns.symbol, pa.string()),
            pa.array(columns.market_type, pa.string()),
            pa.array(columns.ts, pa.timestamp("ms", tz="UTC")),
            pa.array(columns.recv_ns, pa.int64()),
            pa.array(columns.xseq, pa.int64()),
            pa.array(columns.seq, pa.int64()),
            pa.array(columns.resync, pa.bool_()),
            pa.array([entry.id for entry in entries], pa.string()),
            *(pa.array(row, pa.float64(), from_pandas=True) for row in levels),  # NaN (absent level) -> null
        ]
        return cls(pa.RecordBatch.from_arrays(arrays, schema=schema), entries)


@dataclass
class _Partition:
    """The open buffer of one (exchange, date)."""

    exchange: str
    date: str
    opened: float = field(default_factory=time.monotonic)
    blocks: list[_Block] = field(default_factory=list)
    rows: int = 0

    @property
    def entries(self) -> list[StreamEntry]:
        return [entry for block in self.blocks for entry in block.entries]


@dataclass
class _Marker:
    """A commit marker: the data file (relative to the archive root) and the entry ids it holds."""

    path: Path
    file: str
    ids: dict[str, set[str]]

    def holds(self, entry: StreamEntry) -> bool:
        return entry.id.decode() in self.ids.get(entry.stream, ())


@dataclass
class ArchiverStats:
    """Counters of one archiver (logged as progress; exported as metrics by the process)."""

    rows_written: int = 0
    files_written: int = 0
    bytes_written: int = 0
    rows_buffered: int = 0
    partitions_buffered: int = 0
    redelivered_skipped: int = 0
    write_errors: int = 0
    last_file: Optional[str] = None
    last_error: Optional[str] = None


class ParquetArchiver(Worker):
    """Archives book streams to Parquet (layout and guarantees: see the module docstring)."""

    group = "archiver"
    decodes_batches = True

    def metric_sources(self) -> list:
        from common.metrics import ArchiverMetrics

        return [ArchiverMetrics(self)]

    def __init__(
        self,
        out: str | os.PathLike,
        *,
        consumer: str = "archiver",
        rows_per_file: int = 100_000,
        max_file_age: float = 60.0,
        depth: int = 20,
        progress_interval: float = 5.0,
        marker_sweep_interval: float = 30.0,
    ) -> None:
        if rows_per_file <= 0 or max_file_age <= 0 or depth <= 0:
            raise ValueError("rows_per_file, max_file_age and depth must be positive")
        self.out = Path(out)
        self.consumer = _NAME_UNSAFE.sub("_", consumer)
        self.rows_per_file = rows_per_file
        self.max_file_age = max_file_age
        self.depth = depth
        self.progress_interval = progress_interval
        self.marker_sweep_interval = marker_sweep_interval
        self.schema = archive_schema(depth)
        self.stats = ArchiverStats()
        self.redis: Optional[aioredis.Redis] = None
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._dates: dict[int, str] = {}
        self._safe_exchanges: set[str] = set()
        self._counter = 0
        self._unacked: list[tuple[Path, list[StreamEntry]]] = []  # own files' markers and entries, not yet XACKed
        self._writing: Optional[asyncio.Future] = None  # the background write of full buffers (its durable entries)
        self._in_flight: list[_Partition] = []  # buffers being written
        self._markers_seen: dict[str, _Marker] = {}  # marker file name -> marker (read on redelivery)
        self._last_sweep = 0.0
        self._progress = (time.monotonic(), 0)

    @property
    def pending_dir(self) -> Path:
        return self.out / PENDING_DIR

    # ----------------------------------------------------------------------------------- lifecycle
    async def start(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        tune_gc()
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        removed = self._remove_stale_tmp()
        if removed:
            log.info("removed %d stale temporary file(s) under %s", removed, self.out)
        await self._sweep_markers()

    async def handle(self, entries: list[StreamEntry]) -> list[StreamEntry]:
        """Buffer the batch (decoded here in bulk, see ``decodes_batches``); return the entries now durable."""
        durable: list[StreamEntry] = []
        if any(entry.redelivered for entry in entries):
            entries, already = self._split_redelivered(entries)
            durable.extend(already)
        columns = decode_entries(entries)
        grouped = self._group(columns)
        blocks = [(key, _Block.build(entries, columns, rows, self.schema, self.depth))  # may raise: nothing changed yet
                  for key, rows in grouped.items()]
        for entry in entries:  # buffered until acked: only stream and id are needed from here on
            entry.release()
        for key, block in blocks:
            partition = self._partitions.get(key)
            if partition is None:
                partition = self._partitions[key] = _Partition(key[0], self._date(key[1]))
            partition.blocks.append(block)
            partition.rows += len(block.entries)
        durable.extend(await self._written(wait=False))
        full = [key for key, partition in self._partitions.items() if partition.rows >= self.rows_per_file]
        if full:  # written in the background while the next batches come in; one write at a time
            durable.extend(await self._written(wait=True))
            self._writing = asyncio.ensure_future(self._write(self._seal(full)))
        return durable

    async def flush(self) -> list[StreamEntry]:
        now = time.monotonic()
        durable = await self._written(wait=True)
        aged = [key for key, p in self._partitions.items() if now - p.opened >= self.max_file_age]
        durable.extend(await self._write(self._seal(aged)))
        if now - self._last_sweep >= self.marker_sweep_interval:
            await self._sweep_markers()
        self._log_progress(now)
        return durable

    async def drain(self) -> list[StreamEntry]:
        durable = await self._written(wait=True)
        return durable + await self._write(self._seal(list(self._partitions)))

    def acked(self, entries: list[StreamEntry]) -> None:
        """The XACK of our files' entries succeeded: their markers are no longer needed."""
        if not self._unacked:
            return
        acked = set(map(id, entries))  # the very objects handle/flush/drain returned
        still: list[tuple[Path, list[StreamEntry]]] = []
        for marker, file_entries in self._unacked:
            if all(id(entry) in acked for entry in file_entries):
                marker.unlink(missing_ok=True)
            else:
                still.append((marker, file_entries))
        self._unacked = still

    async def close(self) -> None:
        self._log_progress(time.monotonic(), force=True)

    # ----------------------------------------------------------------------------------- batching
    def _group(self, columns: SnapshotColumns) -> dict[tuple[str, int], list[int]]:
        """Rows by (exchange, UTC day number); raises ValueError for a timestamp no date can hold or an exchange id
        that cannot name a directory."""
        ts, exchanges = columns.ts, columns.exchange
        if not ts:
            return {}
        first, last = min(ts), max(ts)
        for value in (first, last):
            if not 0 <= value < MAX_TS_MS:
                raise ValueError(f"exchange timestamp {value} ms is outside the years 1970-9999")
        names = set(exchanges)
        for exchange in names - self._safe_exchanges:
            if _NAME_UNSAFE.search(exchange) or exchange.startswith((".", "_")):
                raise ValueError(f"exchange id {exchange!r} cannot name a directory")
            self._safe_exchanges.add(exchange)
        if len(names) == 1 and first // DAY_MS == last // DAY_MS:  # the usual batch: one partition
            return {(exchanges[0], first // DAY_MS): list(range(len(ts)))}
        grouped: dict[tuple[str, int], list[int]] = {}
        for row, key in enumerate(zip(exchanges, (value // DAY_MS for value in ts))):
            grouped.setdefault(key, []).append(row)
        return grouped

    def _date(self, day: int) -> str:
        date = self._dates.get(day)
        if date is None:
            date = self._dates[day] = datetime.fromtimestamp(day * 86_400, tz=timezone.utc).strftime("%Y-%m-%d")
        return date

    # ----------------------------------------------------------------------------------- writing
    def _seal(self, keys: list[tuple[str, int]]) -> list[tuple[tuple[str, int], _Partition]]:
        """Take the given partitions' buffers out for writing (new rows of their keys start new buffers)."""
        sealed = [(key, self._partitions.pop(key)) for key in keys]
        self._in_flight.extend(partition for _, partition in sealed)
        return sealed

    async def _write(self, sealed: list[tuple[tuple[str, int], _Partition]]) -> list[StreamEntry]:
        """Write sealed buffers to files (in a worker thread); return the entries now durable.

        A failed write puts the buffer back (retried at the next flush) and is never raised: the runner would
        otherwise retry the batch entry by entry and buffer its rows twice.
        """
        durable: list[StreamEntry] = []
        for key, partition in sealed:
            try:
                marker, entries = await asyncio.to_thread(self._write_file, partition)
            except Exception as exc:  # disk full, permissions, ...: keep the rows, try again later
                self.stats.write_errors += 1
                self.stats.last_error = f"writing {partition.exchange} {partition.date}: {exc!r}"
                log.error("%s (kept %d rows buffered, will retry)", self.stats.last_error, partition.rows)
                self._unseal(key, partition)
            else:
                self._unacked.append((marker, entries))
                durable.extend(entries)
            finally:
                self._in_flight = [p for p in self._in_flight if p is not partition]
        buffers = [*self._partitions.values(), *self._in_flight]
        self.stats.partitions_buffered = len(buffers)
        self.stats.rows_buffered = sum(p.rows for p in buffers)
        return durable

    def _unseal(self, key: tuple[str, int], partition: _Partition) -> None:
        """Put a buffer whose write failed back, ahead of rows of its key buffered since."""
        current = self._partitions.get(key)
        if current is None:
            self._partitions[key] = partition
        else:
            current.blocks[:0] = partition.blocks
            current.rows += partition.rows
            current.opened = min(current.opened, partition.opened)

    async def _written(self, *, wait: bool) -> list[StreamEntry]:
        """The entries the background write made durable, once it is done (``wait``: wait for it)."""
        if self._writing is None or not (wait or self._writing.done()):
            return []
        writing, self._writing = self._writing, None
        return await writing

    def _write_file(self, partition: _Partition) -> tuple[Path, list[StreamEntry]]:
        """tmp file + fsync -> marker + fsync -> rename + directory fsync (runs in a worker thread)."""
        directory = self.out / f"exchange={partition.exchange}" / f"date={partition.date}"
        _make_dirs(directory)
        _make_dirs(self.pending_dir)
        name = self._file_name(directory)
        tmp, final = directory / f"{TMP_PREFIX}{name}", directory / f"{name}.parquet"
        table = self._table(partition.blocks)
        entries = partition.entries
        marker = self.pending_dir / f"{name}.parquet.json"
        try:
            pq.write_table(table, tmp, compression="zstd", row_group_size=table.num_rows,
                           use_dictionary=["symbol", "market_type"])
            _fsync_path(tmp)
            self._write_marker(marker, final.relative_to(self.out).as_posix(), entries)
            os.rename(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
            raise
        try:  # the file is committed: from here on nothing may fail the write (its rows would be written twice)
            _fsync_path(directory)
        except OSError as exc:
            log.warning("fsync of %s failed after writing %s: %s", directory, final.name, exc)
        size = os.stat(final).st_size
        self.stats.rows_written += table.num_rows
        self.stats.files_written += 1
        self.stats.bytes_written += size
        self.stats.last_file = str(final)
        log.debug("wrote %s (%d rows, %d bytes)", final, table.num_rows, size)
        return marker, entries

    def _file_name(self, directory: Path) -> str:
        while True:
            self._counter += 1
            now = datetime.now(timezone.utc)
            name = f"part-{self.consumer}-{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{self._counter:06d}"
            if not (directory / f"{name}.parquet").exists():
                return name

    def _table(self, blocks: list[_Block]) -> pa.Table:
        return pa.Table.from_batches([block.batch for block in blocks], schema=self.schema)

    # ----------------------------------------------------------------------------------- markers
    def _write_marker(self, path: Path, file: str, entries: list[StreamEntry]) -> None:
        """Write the marker ``path``: {"file": data file, "consumer": ..., "ids": {stream: [entry id, ...]}}."""
        ids: dict[str, list[str]] = {}
        for entry in entries:
            ids.setdefault(entry.stream, []).append(entry.id.decode())
        tmp = path.with_name(TMP_PREFIX + path.name)
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps({"file": file, "consumer": self.consumer, "ids": ids}))
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
        _fsync_path(self.pending_dir)

    def _read_markers(self) -> list[_Marker]:
        """Every commit marker on disk (cached by name; corrupt ones are deleted)."""
        seen: dict[str, _Marker] = {}
        for path in self.pending_dir.glob("*.json"):
            if path.name.startswith(TMP_PREFIX):  # being written
                continue
            marker = self._markers_seen.get(path.name)
            if marker is None:
                try:
                    data = orjson.loads(path.read_bytes())
                    marker = _Marker(path, data["file"], {s: set(ids) for s, ids in data["ids"].items()})
                except FileNotFoundError:
                    continue
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    log.warning("deleting unreadable commit marker %s: %s", path, exc)
                    path.unlink(missing_ok=True)
                    continue
            seen[path.name] = marker
        self._markers_seen = seen
        return list(seen.values())

    def _split_redelivered(self, entries: list[StreamEntry]) -> tuple[list[StreamEntry], list[StreamEntry]]:
        """(entries to write, entries already durable). Redelivered entries still in a buffer are dropped:
        the buffer acks them when it is written."""
        committed = [m for m in self._read_markers() if (self.out / m.file).exists()]
        buffered = {(e.stream, e.id) for p in [*self._partitions.values(), *self._in_flight] for e in p.entries}
        fresh: list[StreamEntry] = []
        already: list[StreamEntry] = []
        for entry in entries:
            if not entry.redelivered:
                fresh.append(entry)
            elif any(marker.holds(entry) for marker in committed):
                already.append(entry)
            elif (entry.stream, entry.id) not in buffered:
                fresh.append(entry)
        skipped = len(entries) - len(fresh)
        if skipped:
            self.stats.redelivered_skipped += skipped
            log.info("%d redelivered entries are already archived or buffered: not written again", skipped)
        return fresh, already

    async def _sweep_markers(self) -> None:
        """Delete markers none of whose entries is still pending in the group (they can no longer come back)."""
        self._last_sweep = time.monotonic()
        if self.redis is None:
            return
        for marker in self._read_markers():
            try:
                if not await self._any_pending(marker):
                    marker.path.unlink(missing_ok=True)
                    self._markers_seen.pop(marker.path.name, None)
            except RedisError as exc:
                log.warning("commit marker sweep postponed: %s", exc)
                break
        self._unacked = [(marker, entries) for marker, entries in self._unacked if marker.exists()]

    async def _any_pending(self, marker: _Marker) -> bool:
        for stream, ids in marker.ids.items():
            start, end = min(ids, key=_id_key), max(ids, key=_id_key)
            while True:
                try:
                    rows = await self.redis.xpending_range(stream, self.group, min=start, max=end, count=1000)
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        break
                    raise
                if any(_text(row["message_id"]) in ids for row in rows):
                    return True
                if len(rows) < 1000:
                    break
                start = "(" + _text(rows[-1]["message_id"])
        return False

    def _remove_stale_tmp(self) -> int:
        """Delete ``.tmp-`` files this consumer left (it is starting, so none is in flight) or that are old."""
        removed = 0
        cutoff = time.time() - STALE_TMP_SECONDS
        for path in self.out.rglob(f"{TMP_PREFIX}*"):
            try:
                if _tmp_owner(path.name) == self.consumer or path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    # ----------------------------------------------------------------------------------- progress
    def _log_progress(self, now: float, *, force: bool = False) -> None:
        since, rows_before = self._progress
        if not force and (self.progress_interval <= 0 or now - since < self.progress_interval):
            return
        rate = (self.stats.rows_written - rows_before) / max(now - since, 1e-9)
        log.info(
            "archived %d rows (%.0f rows/s) in %d files (%.1f MB); buffered %d rows in %d partitions",
            self.stats.rows_written, rate, self.stats.files_written, self.stats.bytes_written / 1e6,
            self.stats.rows_buffered, self.stats.partitions_buffered,
        )
        self._progress = (now, self.stats.rows_written)


def _tmp_owner(name: str) -> Optional[str]:
    """The consumer in ``.tmp-part-<consumer>-<time>-<counter>`` (``.parquet.json`` for markers), else None."""
    stem = name[len(TMP_PREFIX + "part-"):].removesuffix(".parquet.json")
    parts = stem.rsplit("-", 2)
    return parts[0] if name.startswith(TMP_PREFIX + "part-") and len(parts) == 3 else None


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(directory: Path) -> None:
    """mkdir -p, fsyncing the parent of every directory created (so the new entries survive a crash)."""
    if directory.is_dir():
        return
    _make_dirs(directory.parent)
    try:
        directory.mkdir()
    except FileExistsError:
        return
    _fsync_path(directory.parent)
