"""Row shapes of stored snapshots: CSV lines, Parquet column batches, and the DataFrame both loaders return.

CSV and the loaded DataFrames use the columns of ``OrderbookSnapshot.to_dict()`` in its order; the
levels (``bids``/``asks``) are JSON strings in CSV and ``[[price, size], ...]`` lists in DataFrames.
Parquet stores typed columns, the levels as four ``list<double>`` columns (bid/ask price/size), which
compress well and query fast (``bid_price[1]`` is the best bid).
"""

from __future__ import annotations

import csv
import io
from array import array
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from common.model import OrderbookSnapshot

CSV_COLUMNS = (
    "exchange", "symbol", "market_type", "timestamp", "timestamp_ms", "receive_ts_ns", "exchange_seq",
    "seq", "resync", "bids", "asks", "best_bid", "best_ask", "mid_price", "spread",
)

FRAME_DTYPES = {
    "exchange": "str",
    "symbol": "str",
    "market_type": "str",
    "timestamp": "datetime64[us, UTC]",
    "timestamp_ms": "int64",
    "receive_ts_ns": "int64",
    "exchange_seq": "Int64",
    "seq": "int64",
    "resync": "bool",
    "bids": "object",
    "asks": "object",
    "best_bid": "float64",
    "best_ask": "float64",
    "mid_price": "float64",
    "spread": "float64",
}

_LEVELS = pa.list_(pa.float64())
_SCALAR_FIELDS = [
    pa.field("exchange", pa.string()),
    pa.field("symbol", pa.string()),
    pa.field("market_type", pa.string()),
    pa.field("timestamp", pa.timestamp("us", tz="UTC")),
    pa.field("timestamp_ms", pa.int64()),
    pa.field("receive_ts_ns", pa.int64()),
    pa.field("exchange_seq", pa.int64()),
    pa.field("seq", pa.int64()),
    pa.field("resync", pa.bool_()),
    pa.field("best_bid", pa.float64()),
    pa.field("best_ask", pa.float64()),
    pa.field("mid_price", pa.float64()),
    pa.field("spread", pa.float64()),
]
_LEVEL_COLUMNS = ("bid_price", "bid_size", "ask_price", "ask_size")
_NULLABLE_INT64 = {pa.int64(): pd.Int64Dtype()}  # exact ints even with nulls (no float64 detour)
PARQUET_SCHEMA = pa.schema(_SCALAR_FIELDS + [pa.field(name, _LEVELS) for name in _LEVEL_COLUMNS])


def frame(columns: dict[str, Any]) -> pd.DataFrame:
    """The loaders' common result: ``CSV_COLUMNS`` in order with the dtypes of ``FRAME_DTYPES``."""
    return pd.DataFrame({name: columns[name] for name in CSV_COLUMNS}).astype(FRAME_DTYPES)


class CsvLineEncoder:
    """Encodes a snapshot as one CSV line (``CSV_COLUMNS``; levels as JSON; None as an empty field)."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")

    def _line(self, values: Iterable[Any]) -> bytes:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(values)
        return self._buffer.getvalue().encode("utf-8")

    def header(self) -> bytes:
        return self._line(CSV_COLUMNS)

    def encode(self, snapshot: OrderbookSnapshot) -> bytes:
        row = snapshot.to_dict()
        row["bids"] = orjson.dumps(row["bids"]).decode()
        row["asks"] = orjson.dumps(row["asks"]).decode()
        return self._line(row[name] for name in CSV_COLUMNS)


def _optional_float(text: str) -> float:
    return float(text) if text else float("nan")


def parse_csv(text: str, source: Path) -> pd.DataFrame:
    """Parse the text of a snapshot CSV file (header included) into the loaders' DataFrame."""
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None:
        return frame({name: [] for name in CSV_COLUMNS})
    if tuple(header) != CSV_COLUMNS:
        raise ValueError(f"{source} is not a snapshot CSV file: unexpected header {header!r}")
    columns: dict[str, list[Any]] = {name: [] for name in CSV_COLUMNS}
    for line_number, row in enumerate(rows, start=2):
        if len(row) != len(CSV_COLUMNS):
            raise ValueError(f"{source}:{line_number}: expected {len(CSV_COLUMNS)} fields, got {len(row)}")
        record = dict(zip(CSV_COLUMNS, row))
        try:
            for name in ("exchange", "symbol", "market_type", "timestamp"):
                columns[name].append(record[name])
            for name in ("timestamp_ms", "receive_ts_ns", "seq"):
                columns[name].append(int(record[name]))
            columns["exchange_seq"].append(int(record["exchange_seq"]) if record["exchange_seq"] else None)
            columns["resync"].append(record["resync"] == "True")
            for name in ("bids", "asks"):
                columns[name].append(orjson.loads(record[name]))
            for name in ("best_bid", "best_ask", "mid_price", "spread"):
                columns[name].append(_optional_float(record[name]))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"{source}:{line_number}: malformed snapshot row: {exc}") from exc
    columns["timestamp"] = pd.to_datetime(pd.Series(columns["timestamp"], dtype="str"), utc=True, format="ISO8601")
    columns["exchange_seq"] = pd.array(columns["exchange_seq"], dtype="Int64")
    return frame(columns)


def frame_from_parquet(table: pa.Table, source: Path) -> pd.DataFrame:
    """Turn a table of ``PARQUET_SCHEMA`` into the loaders' DataFrame (levels back to ``[[p, s], ...]``)."""
    missing = [name for name in PARQUET_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{source} is not a snapshot Parquet file: no column {', '.join(missing)}")
    columns: dict[str, Any] = {
        field.name: table.column(field.name).to_pandas(types_mapper=_NULLABLE_INT64.get) for field in _SCALAR_FIELDS
    }
    for side in ("bid", "ask"):
        prices = table.column(f"{side}_price").to_pylist()
        sizes = table.column(f"{side}_size").to_pylist()
        columns[f"{side}s"] = [[[p, s] for p, s in zip(px, sz)] for px, sz in zip(prices, sizes)]
    return frame(columns)


def _split_levels(levels: list[list[float]]) -> tuple[array, array]:
    """``[[price, size], ...]`` -> (prices, sizes) as float arrays."""
    return array("d", [level[0] for level in levels]), array("d", [level[1] for level in levels])


class ParquetRowBuffer:
    """Rows of snapshots kept compactly (levels as flat float arrays) until they become an Arrow table."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._scalars: list[tuple[Any, ...]] = []
        self._values = {name: array("d") for name in _LEVEL_COLUMNS}
        self._offsets = {"bid": array("i", [0]), "ask": array("i", [0])}

    def __len__(self) -> int:
        return len(self._scalars)

    def append(self, snapshot: OrderbookSnapshot) -> None:
        """Add one row; a snapshot with malformed fields raises before anything is buffered."""
        row = (
            snapshot.exchange, snapshot.symbol, snapshot.market_type, snapshot.timestamp,
            snapshot.timestamp_ms, snapshot.receive_ts_ns, snapshot.exchange_seq, snapshot.seq,
            snapshot.resync, snapshot.best_bid, snapshot.best_ask, snapshot.mid_price, snapshot.spread,
        )
        sides = (("bid", _split_levels(snapshot.bids)), ("ask", _split_levels(snapshot.asks)))
        self._scalars.append(row)
        for side, (prices, sizes) in sides:
            self._values[f"{side}_price"].extend(prices)
            self._values[f"{side}_size"].extend(sizes)
            self._offsets[side].append(len(self._values[f"{side}_price"]))

    def take_table(self) -> pa.Table:
        """All buffered rows as one table; the buffer is empty afterwards."""
        scalar_columns = zip(*self._scalars) if self._scalars else ([] for _ in _SCALAR_FIELDS)
        arrays = [pa.array(list(values), type=field.type) for values, field in zip(scalar_columns, _SCALAR_FIELDS)]
        for name in _LEVEL_COLUMNS:
            offsets = pa.array(np.frombuffer(self._offsets[name.split("_")[0]], dtype=np.int32))
            values = pa.array(np.frombuffer(self._values[name], dtype=np.float64))
            arrays.append(pa.ListArray.from_arrays(offsets, values))
        self._reset()
        return pa.Table.from_arrays(arrays, schema=PARQUET_SCHEMA)
