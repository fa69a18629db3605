"""A bounded, crash-safe, on-disk FIFO journal of (stream, seq, payload) records.

The publisher spills to it while Redis is unreachable and replays it, oldest first, when Redis is back.
Records are appended to segment files (``seg-<n>.spool``); the read position is persisted in
``position`` (atomically replaced) after every committed batch, so a producer that crashes while
spooled data exists replays it on its next start. Replay is at-least-once: a crash between a write to
Redis and the position update re-sends that batch (consumers dedupe by (exchange, symbol, seq)).

Record layout: ``u32 stream length | stream utf-8 | u64 seq | u32 payload length | payload`` (little endian).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Optional

_HEAD = struct.Struct("<I")
_SEQ_LEN = struct.Struct("<QI")
SEGMENT_BYTES = 64 * 1024 * 1024

Record = tuple[str, int, bytes]


class SpoolFull(Exception):
    """The journal reached its byte bound; the record was not stored."""


class DiskSpool:
    """FIFO of records on disk, bounded by ``max_bytes``."""

    def __init__(self, directory: str | os.PathLike, max_bytes: int = 1 << 30) -> None:
        if max_bytes <= 0:
            raise ValueError("spool max_bytes must be positive")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        probe = self.dir / ".write-test"
        probe.write_bytes(b"")  # fail now, clearly, if the directory is not writable
        probe.unlink()
        self.max_bytes = max_bytes
        self._writer: Optional[BinaryIO] = None
        self._write_seg: Optional[int] = None
        self._read_seg, self._read_off = self._load_position()
        self.bytes = sum(p.stat().st_size for p in self._segments()) - self._read_off
        self.records = self._count_records()

    # ------------------------------------------------------------------------------------ state
    def _segments(self) -> list[Path]:
        return sorted(self.dir.glob("seg-*.spool"))

    @staticmethod
    def _number(path: Path) -> int:
        return int(path.stem.split("-")[1])

    def _load_position(self) -> tuple[int, int]:
        try:
            seg, off = (self.dir / "position").read_text().split()
            return int(seg), int(off)
        except (FileNotFoundError, ValueError):
            segments = self._segments()
            return (self._number(segments[0]) if segments else 1), 0

    def _save_position(self) -> None:
        tmp = self.dir / "position.tmp"
        tmp.write_text(f"{self._read_seg} {self._read_off}")
        os.replace(tmp, self.dir / "position")

    def _count_records(self) -> int:
        return sum(1 for _ in self._iter(limit=None))

    def __len__(self) -> int:
        return self.records

    # ------------------------------------------------------------------------------------ writing
    def append(self, records: list[Record]) -> None:
        """Append records in order; raises :class:`SpoolFull` (storing none of them) past ``max_bytes``."""
        blob = b"".join(
            _HEAD.pack(len(s := stream.encode())) + s + _SEQ_LEN.pack(seq, len(payload)) + payload
            for stream, seq, payload in records
        )
        if self.bytes + len(blob) > self.max_bytes:
            raise SpoolFull(f"spool {self.dir} is full ({self.bytes} of {self.max_bytes} bytes)")
        writer = self._open_writer()
        writer.write(blob)
        writer.flush()
        os.fsync(writer.fileno())
        self.bytes += len(blob)
        self.records += len(records)
        if writer.tell() >= SEGMENT_BYTES:
            self.close()

    def _open_writer(self) -> BinaryIO:
        if self._writer is None:
            segments = self._segments()
            number = self._number(segments[-1]) + 1 if segments else self._read_seg
            self._writer = open(self.dir / f"seg-{number:08d}.spool", "ab")
            self._write_seg = number
        return self._writer

    # ------------------------------------------------------------------------------------ reading
    def peek(self, limit: int) -> list[Record]:
        """Up to ``limit`` oldest records, without removing them."""
        return [record for record, _ in self._iter(limit)]

    def commit(self, count: int) -> None:
        """Remove the ``count`` oldest records (after they were written to Redis)."""
        seg0, off0, consumed, last = self._read_seg, self._read_off, 0, None
        for _, (seg, off) in self._iter(count):
            self.bytes -= off - (off0 if seg == seg0 else 0)
            seg0, off0, last = seg, off, (seg, off)
            consumed += 1
        if last is not None:
            self._advance(*last)
        self.records -= consumed
        self._save_position()

    def _advance(self, seg: int, off: int) -> None:
        """Move the read position to (seg, off); delete segments that are fully read."""
        self._read_seg, self._read_off = seg, off
        for path in self._segments():
            number = self._number(path)
            done = number == seg and off >= path.stat().st_size and number != self._write_seg
            if number < seg or done:
                path.unlink()
                if done:
                    self._read_seg, self._read_off = seg + 1, 0

    def _iter(self, limit: Optional[int]):
        """Yield (record, (segment, offset after it)) from the read position on."""
        count = 0
        for path in self._segments():
            seg = self._number(path)
            if seg < self._read_seg:
                continue
            with open(path, "rb") as handle:
                handle.seek(self._read_off if seg == self._read_seg else 0)
                while limit is None or count < limit:
                    head = handle.read(_HEAD.size)
                    if len(head) < _HEAD.size:
                        break  # end of segment (or a torn tail write: ignored)
                    stream = handle.read(_HEAD.unpack(head)[0])
                    meta = handle.read(_SEQ_LEN.size)
                    if len(meta) < _SEQ_LEN.size:
                        break
                    seq, size = _SEQ_LEN.unpack(meta)
                    payload = handle.read(size)
                    if len(payload) < size:
                        break
                    count += 1
                    yield (stream.decode(), seq, payload), (seg, handle.tell())
            if limit is not None and count >= limit:
                return

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = self._write_seg = None
