"""Parquet output as complete part files: bounded row buffers per logical file, row groups, atomic publish.

A logical file ``<stem>.parquet`` is stored as parts ``<stem>.part-NNNNN.parquet``. Rows are buffered
per logical file; a full buffer (``buffer_rows``) becomes a row group of that file's open part, a
hidden temporary file. Publishing a part closes it and hard-links it to the next free part name (an
atomic no-clobber step, so a part is either absent or complete and two writers never overwrite each
other's parts). Buffers and open parts are bounded separately, so many symbols never shrink parts
below one row group: when all buffers together exceed ``max_buffered_rows`` the largest is written
out, and at most ``max_open`` parts are open (the least recently used is published).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from common.model import OrderbookSnapshot
from common.storage.naming import parse_part_name, part_name
from common.storage.tables import PARQUET_SCHEMA, ParquetRowBuffer
from common.storage.writers import OpenFiles, run_all


class ParquetPart:
    """One part being written: row groups go to a hidden temporary file until ``close()`` publishes it."""

    def __init__(self, directory: Path, stem: str, part_numbers: dict[str, int], compression: str) -> None:
        self.path = directory / f"{stem}.parquet"
        self.rows = 0
        self._part_numbers = part_numbers  # stem -> next part number to try, shared by a file's parts
        self._directory = directory
        self._stem = stem
        self._temp_path = directory / f".{stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.parquet.tmp"
        self._writer: Optional[pq.ParquetWriter] = pq.ParquetWriter(
            self._temp_path, PARQUET_SCHEMA, compression=compression)

    def write(self, table: pa.Table) -> None:
        assert self._writer is not None
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        """Finish the file and publish it under the first free part number."""
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        number = self._part_numbers[self._stem]
        while True:
            try:
                os.link(self._temp_path, self._directory / part_name(self._stem, number))
                break
            except FileExistsError:
                number += 1
        self._part_numbers[self._stem] = number + 1
        self._temp_path.unlink()

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                pass
            self._writer = None
        self._temp_path.unlink(missing_ok=True)


class ParquetFiles:
    """All logical Parquet files of one directory that a store is writing."""

    def __init__(self, directory: Path, *, max_open: int, buffer_rows: int, max_buffered_rows: int,
                 part_rows: int, part_seconds: float, compression: str) -> None:
        self._directory = directory
        self._buffer_rows = buffer_rows
        self._max_buffered_rows = max_buffered_rows
        self._part_rows = part_rows
        self._part_seconds = part_seconds
        self._compression = compression
        self._buffers: dict[str, ParquetRowBuffer] = {}
        self._buffered_rows = 0
        self._pending_since: dict[str, float] = {}  # stem -> when its oldest unpublished row arrived
        self._part_numbers: dict[str, int] = {}
        self._parts: OpenFiles[ParquetPart] = OpenFiles(max_open)

    def __len__(self) -> int:
        """Number of open part files."""
        return len(self._parts)

    def write(self, stem: str, snapshot: OrderbookSnapshot) -> None:
        buffer = self._buffers.get(stem)
        if buffer is None:
            buffer = self._buffers[stem] = ParquetRowBuffer()
        buffer.append(snapshot)
        self._buffered_rows += 1
        self._pending_since.setdefault(stem, time.monotonic())
        if len(buffer) >= self._buffer_rows:
            self._write_row_group(stem)
        elif self._buffered_rows > self._max_buffered_rows:
            self._write_row_group(max(self._buffers, key=lambda key: len(self._buffers[key])))

    def _write_row_group(self, stem: str) -> None:
        buffer = self._buffers.pop(stem, None)
        if buffer is None:
            return
        self._buffered_rows -= len(buffer)
        table = buffer.take_table()
        part = self._parts.get(stem, functools.partial(self._open_part, stem))
        try:
            part.write(table)
        except OSError as exc:  # the part is in an unknown state: drop it, the next row group opens a new one
            self._parts.discard(stem)
            exc.add_note(f"while writing {part.path}")
            raise
        if part.rows >= self._part_rows:
            self._publish(stem)

    def _open_part(self, stem: str) -> ParquetPart:
        if stem not in self._part_numbers:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._part_numbers[stem] = 1 + max(
                (parsed[1] for parsed in map(parse_part_name, os.listdir(self._directory))
                 if parsed and parsed[0] == stem), default=0)
        return ParquetPart(self._directory, stem, self._part_numbers, self._compression)

    def publish(self, stem: str) -> None:
        """Write out and publish everything buffered for one logical file."""
        self._write_row_group(stem)
        self._publish(stem)

    def _publish(self, stem: str) -> None:
        self._pending_since.pop(stem, None)
        self._parts.close(stem)

    def flush(self) -> None:
        """Publish everything buffered (a new part per logical file with pending rows)."""
        run_all(functools.partial(self._publish_or_discard, stem) for stem in list(self._pending_since))

    def flush_if_due(self, now: float) -> None:
        """Publish the logical files whose oldest unpublished row is ``part_seconds`` old."""
        due = [stem for stem, since in self._pending_since.items() if now - since >= self._part_seconds]
        run_all(functools.partial(self._publish_or_discard, stem) for stem in due)

    def _publish_or_discard(self, stem: str) -> None:
        try:
            self.publish(stem)
        except Exception:
            self.discard(stem)
            raise

    def discard(self, stem: str) -> None:
        """Drop everything unpublished of one logical file, without raising."""
        buffer = self._buffers.pop(stem, None)
        if buffer is not None:
            self._buffered_rows -= len(buffer)
        self._pending_since.pop(stem, None)
        self._parts.discard(stem)
