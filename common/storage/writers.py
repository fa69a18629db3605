"""Open files that snapshots go to: append-only line logs (JSONL/CSV) and a bounded LRU of open files."""

from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Generic, Hashable, Iterable, Protocol, TypeVar

from common.model import OrderbookSnapshot

log = logging.getLogger(__name__)

_TAIL_BLOCK = 1 << 16


class OpenFile(Protocol):
    """What the LRU needs of an open file: its path (for messages), ``close()``, and ``abort()`` (drop
    the file after an error without raising)."""

    path: Path

    def close(self) -> None: ...
    def abort(self) -> None: ...


FileT = TypeVar("FileT", bound=OpenFile)


def run_all(actions: Iterable[Callable[[], None]]) -> None:
    """Run every action even if some fail; the first error is raised at the end, the others logged."""
    first: Exception | None = None
    for action in actions:
        try:
            action()
        except Exception as exc:  # one broken file must not stop the others from being flushed
            if first is None:
                first = exc
            else:
                log.error("storage error: %s %s", exc, " ".join(getattr(exc, "__notes__", ())))
    if first is not None:
        raise first


def drop_partial_tail(path: Path) -> int:
    """Cut an unterminated last line (left by a crash mid-write) off ``path``; returns the bytes removed."""
    with open(path, "rb+") as file:
        end = file.seek(0, os.SEEK_END)
        if end == 0:
            return 0
        file.seek(end - 1)
        if file.read(1) == b"\n":
            return 0
        keep, position = 0, end
        while position > 0:
            start = max(0, position - _TAIL_BLOCK)
            file.seek(start)
            newline = file.read(position - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        file.truncate(keep)
    log.warning("dropped an incomplete last line (%d bytes) from %s", end - keep, path)
    return end - keep


class LineLog:
    """An append-only line file (JSONL or CSV) kept open behind a write buffer.

    A file whose previous writer crashed mid-line gets that partial line cut off before appending, so
    every line stays a complete record. ``header`` (CSV) is written to a new file and checked on an
    existing one: appending rows of another layout would corrupt the file.
    """

    def __init__(self, path: Path, encode: Callable[[OrderbookSnapshot], bytes], header: bytes = b"",
                 buffer_bytes: int = 1 << 16) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            drop_partial_tail(path)
            if header:
                with open(path, "rb") as existing:
                    first_line = existing.readline()
                if first_line and first_line != header:
                    raise ValueError(f"{path} has another column layout; refusing to append to it")
        self.path = path
        self._encode = encode
        self._file = open(path, "ab", buffering=buffer_bytes)
        if header and self._file.tell() == 0:
            self._file.write(header)

    def write(self, snapshot: OrderbookSnapshot) -> None:
        self._file.write(self._encode(snapshot))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def abort(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass


class OpenFiles(Generic[FileT]):
    """At most ``max_open`` open files, least recently used closed first (bounds handles and memory)."""

    def __init__(self, max_open: int) -> None:
        if max_open < 1:
            raise ValueError(f"max_open_files must be at least 1, got {max_open}")
        self._max_open = max_open
        self._files: OrderedDict[Hashable, FileT] = OrderedDict()

    def __len__(self) -> int:
        return len(self._files)

    def get(self, key: Hashable, open_file: Callable[[], FileT]) -> FileT:
        """The open file of ``key``, opened with ``open_file()`` if needed (closing the least recent one)."""
        file = self._files.get(key)
        if file is not None:
            self._files.move_to_end(key)
            return file
        file = self._files[key] = open_file()
        if len(self._files) > self._max_open:
            oldest = next(iter(self._files))
            self.close(oldest)
        return file

    def close(self, key: Hashable) -> None:
        """Close the file of ``key`` if it is open; on failure it is aborted and the error raised."""
        file = self._files.pop(key, None)
        if file is None:
            return
        try:
            file.close()
        except Exception as exc:
            file.abort()
            exc.add_note(f"while closing {file.path}")
            raise

    def discard(self, key: Hashable) -> None:
        """Drop the file of ``key`` (after a failure, or because it is being deleted), without raising."""
        file = self._files.pop(key, None)
        if file is not None:
            file.abort()

    def apply(self, action: Callable[[FileT], None]) -> None:
        """Run ``action`` on every open file; a file whose action fails is discarded (see ``run_all``)."""
        run_all(functools.partial(self._apply_one, key, action) for key in list(self._files))

    def _apply_one(self, key: Hashable, action: Callable[[FileT], None]) -> None:
        file = self._files[key]
        try:
            action(file)
        except Exception as exc:
            self.discard(key)
            exc.add_note(f"while writing {file.path}")
            raise

    def close_all(self) -> None:
        run_all(functools.partial(self.close, key) for key in list(self._files))
