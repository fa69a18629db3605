"""Reading the archive the Parquet archiver writes (layout: :mod:`consumers.archiver`).

``read_books`` returns a flat DataFrame (one row per snapshot, the level columns as written);
``iter_snapshots`` yields :class:`OrderbookSnapshot` objects rebuilt from it. Both prune partitions
by exchange and date, filter by symbol and time, sort by (exchange, symbol, seq) and drop repeated
``(exchange, symbol, stream_id)`` rows (a guard against the one duplicate the archiver cannot exclude).
"""

from __future__ import annotations

import os
import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from common.model import OrderbookSnapshot, ms_to_datetime
from consumers.archiver import SIDES

TimeLike = Union[datetime, date, str, pd.Timestamp]
PARTITIONING = ds.partitioning(pa.schema([("exchange", pa.string()), ("date", pa.string())]), flavor="hive")
#: the DataFrame's leading columns; the level columns follow
BOOK_COLUMNS = ["exchange", "symbol", "market_type", "timestamp", "receive_ts_ns", "exchange_seq", "seq", "resync",
                "stream_id"]
_DEDUPE_KEY = ["exchange", "symbol", "stream_id"]
_SORT_KEY = ["exchange", "symbol", "seq", "stream_id"]
_LEVEL_COLUMN = re.compile(r"^(bid|ask)_(px|sz)_(\d+)$")


def parse_time(value: TimeLike, name: str = "time") -> datetime:
    """ISO 8601 text, date or datetime -> aware UTC datetime (naive values are UTC); ValueError if unparseable."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not an ISO 8601 date or time (e.g. 2024-11-16T12:00:00Z)") from None
    elif isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise ValueError(f"{name}: expected a date or time, got {type(value).__name__}")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def read_books(
    archive_dir: Union[str, os.PathLike],
    exchange: Optional[str] = None,
    symbol: Optional[str] = None,
    start: Optional[TimeLike] = None,
    end: Optional[TimeLike] = None,
    columns: Optional[Sequence[str]] = None,
) -> pd.DataFrame:
    """Snapshots with ``start <= timestamp < end`` (exchange time, UTC) as a DataFrame sorted by
    (exchange, symbol, seq). ``columns`` picks columns (default: all; ``exchange`` and ``symbol`` always)."""
    root = Path(archive_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"archive directory not found: {root}")
    begin = None if start is None else parse_time(start, "start")
    finish = None if end is None else parse_time(end, "end")
    if begin is not None and finish is not None and finish <= begin:
        raise ValueError(f"end ({finish.isoformat()}) must be after start ({begin.isoformat()})")
    dataset = ds.dataset(root, format="parquet", partitioning=PARTITIONING)
    names = ["exchange", *(name for name in dataset.schema.names if name not in ("exchange", "date"))]
    if "stream_id" not in names:  # no file yet
        return pd.DataFrame(columns=BOOK_COLUMNS)
    wanted = names if columns is None else _known_columns(columns, names)
    read = list(dict.fromkeys([*wanted, *_SORT_KEY]))
    table = dataset.to_table(columns=read, filter=_filter(exchange, symbol, begin, finish))
    table = table.sort_by([(name, "ascending") for name in _SORT_KEY])
    frame = table.to_pandas()
    if "exchange_seq" in read:  # nullable ints stay ints (a float64 column would round big sequence numbers)
        frame["exchange_seq"] = table.column("exchange_seq").to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    frame = frame.loc[~frame.duplicated(_DEDUPE_KEY)]
    return frame[wanted].reset_index(drop=True)


def iter_snapshots(
    archive_dir: Union[str, os.PathLike],
    exchange: Optional[str] = None,
    symbol: Optional[str] = None,
    start: Optional[TimeLike] = None,
    end: Optional[TimeLike] = None,
) -> Iterator[OrderbookSnapshot]:
    """Like :func:`read_books`, as :class:`OrderbookSnapshot` objects (null levels dropped)."""
    yield from frame_snapshots(read_books(archive_dir, exchange, symbol, start, end))


def frame_snapshots(frame: pd.DataFrame) -> Iterator[OrderbookSnapshot]:
    """Rebuild snapshots from a :func:`read_books` DataFrame (all columns)."""
    depth = 1 + max((int(m.group(3)) for c in frame.columns if (m := _LEVEL_COLUMN.match(c))), default=-1)
    sides = {side: frame[[f"{side}_{i}" for i in range(depth)]].to_numpy(dtype=np.float64) for side in SIDES}
    ts_ms = frame["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ms]").astype(np.int64)
    xseq = frame["exchange_seq"].tolist()
    for row, (exchange, symbol, market_type, recv_ns, seq, resync) in enumerate(
        zip(frame["exchange"], frame["symbol"], frame["market_type"], frame["receive_ts_ns"], frame["seq"],
            frame["resync"])
    ):
        yield OrderbookSnapshot(
            symbol=symbol,
            timestamp=ms_to_datetime(int(ts_ms[row])),
            bids=_side_levels(sides["bid_px"][row], sides["bid_sz"][row]),
            asks=_side_levels(sides["ask_px"][row], sides["ask_sz"][row]),
            exchange=exchange,
            market_type=market_type,
            receive_ts_ns=int(recv_ns),
            exchange_seq=None if pd.isna(xseq[row]) else int(xseq[row]),
            seq=int(seq),
            resync=bool(resync),
        )


def _side_levels(prices: np.ndarray, sizes: np.ndarray) -> list[list[float]]:
    present = ~(np.isnan(prices) | np.isnan(sizes))
    return np.column_stack((prices[present], sizes[present])).tolist()


def _known_columns(columns: Sequence[str], names: list[str]) -> list[str]:
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise ValueError(f"unknown column(s): {', '.join(unknown)} (available: {', '.join(names[:12])}, ...)")
    return list(dict.fromkeys(["exchange", "symbol", *columns]))


def _filter(
    exchange: Optional[str], symbol: Optional[str], start: Optional[datetime], end: Optional[datetime]
) -> Optional[ds.Expression]:
    """Partition pruning (exchange, date) plus row filters (symbol, timestamp)."""
    terms: list[ds.Expression] = []
    if exchange is not None:
        terms.append(ds.field("exchange") == exchange)
    if symbol is not None:
        terms.append(ds.field("symbol") == symbol)
    stamp = pa.timestamp("ms", tz="UTC")
    if start is not None:
        terms += [ds.field("date") >= start.strftime("%Y-%m-%d"), ds.field("timestamp") >= pa.scalar(start, stamp)]
    if end is not None:
        terms += [ds.field("date") <= end.strftime("%Y-%m-%d"), ds.field("timestamp") < pa.scalar(end, stamp)]
    expression = None
    for term in terms:
        expression = term if expression is None else expression & term
    return expression
