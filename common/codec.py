"""Versioned msgpack wire format of an order-book snapshot.

One snapshot is one msgpack map (schema version ``SCHEMA_VERSION``)::

    v        int     schema version (1)
    exchange str     ccxt exchange id, e.g. "deribit"
    symbol   str     ccxt unified symbol, e.g. "BTC/USD:BTC"
    type     str     "future" | "swap" | "option" | "spot"
    ts       int     exchange timestamp, milliseconds since the epoch (UTC)
    recv_ns  int     local receive time, nanoseconds since the epoch
    xseq     int|nil exchange sequence / nonce (deribit change_id, binance u, okx seqId)
    seq      int     collector's per-symbol sequence number (+1 per published snapshot)
    resync   bool    first snapshot after a (re)subscription: not continuous with the previous one
    bids     bin     little-endian IEEE-754 float64 values, price,size interleaved, best first
    asks     bin     same layout as bids

Levels are packed as one float64 block because decoding it is ~10x cheaper than nested lists
(see ``shared/notes/measured-limits.md``); any language reads it as a little-endian double array.
Decoders ignore keys they do not know (forward compatible); anything that is not a valid snapshot
raises :class:`CodecError` and nothing else.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from itertools import chain
from typing import Any, Iterable, Optional, Sequence

import msgpack
import numpy as np

from common.model import OrderbookSnapshot, PackedSnapshot, datetime_to_ms, ms_to_datetime

SCHEMA_VERSION = 1
_REQUIRED = ("exchange", "symbol", "ts", "seq", "bids", "asks")
_FLOAT64 = np.dtype("<f8")
_PAIRS: dict[int, struct.Struct] = {}  # level count -> its little-endian float64 layout
_PACKERS = threading.local()  # one reusable msgpack.Packer per thread (packb allocates a new one per call)


class CodecError(ValueError):
    """Raised for any input that is not a decodable snapshot (garbage, wrong types, missing fields)."""


def pack_levels(levels: Iterable[Sequence[float]]) -> bytes:
    """[[price, size], ...] -> little-endian float64 bytes (price,size interleaved); elements after the size
    (ccxt's order counts or ids) are left out. One ``struct.pack`` of the flattened levels (the producer's hot
    path: 20 levels of ccxt's book in 1.3-2 µs, a third to a half of an ``array`` built from a generator)."""
    top = levels if type(levels) is list else list(levels)
    pairs = _PAIRS.get(len(top))
    if pairs is None:
        pairs = _PAIRS[len(top)] = struct.Struct(f"<{2 * len(top)}d")
    if top and len(top[0]) == 2:
        try:
            return pairs.pack(*chain.from_iterable(top))
        except struct.error:  # a level of another length further down: take price and size of each
            pass
    return pairs.pack(*[value for level in top for value in (level[0], level[1])])


def unpack_levels(block: bytes) -> np.ndarray:
    """Float64 block -> read-only ndarray of shape (n, 2)."""
    if len(block) % 16:
        raise CodecError(f"level block of {len(block)} bytes is not a whole number of [price, size] pairs")
    return np.frombuffer(block, dtype=_FLOAT64).reshape(-1, 2)


def encode_fields(
    *,
    exchange: str,
    symbol: str,
    market_type: str,
    ts_ms: int,
    recv_ns: int,
    exchange_seq: Optional[int],
    seq: int,
    resync: bool,
    bids: Iterable[Sequence[float]],
    asks: Iterable[Sequence[float]],
) -> bytes:
    """Encode one snapshot from plain values (no dataclass needed)."""
    return encode_packed(PackedSnapshot(symbol, exchange, market_type, ts_ms, recv_ns, exchange_seq, seq, resync,
                                        pack_levels(bids), pack_levels(asks)))


def encode_packed(packed: PackedSnapshot) -> bytes:
    """Encode a :class:`PackedSnapshot` (the producer's hot path: its level blocks already are the wire's)."""
    packer = getattr(_PACKERS, "packer", None)
    if packer is None:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack({
        "v": SCHEMA_VERSION,
        "exchange": packed.exchange,
        "symbol": packed.symbol,
        "type": packed.market_type,
        "ts": int(packed.timestamp_ms),
        "recv_ns": int(packed.receive_ts_ns),
        "xseq": None if packed.exchange_seq is None else int(packed.exchange_seq),
        "seq": int(packed.seq),
        "resync": bool(packed.resync),
        "bids": packed.bids_block,
        "asks": packed.asks_block,
    })


def pack_snapshot(snapshot: OrderbookSnapshot) -> PackedSnapshot:
    """The :class:`PackedSnapshot` of an :class:`OrderbookSnapshot` (levels packed as the wire's blocks)."""
    return PackedSnapshot(
        snapshot.symbol, snapshot.exchange, snapshot.market_type, datetime_to_ms(snapshot.timestamp),
        snapshot.receive_ts_ns, snapshot.exchange_seq, snapshot.seq, snapshot.resync,
        pack_levels(snapshot.bids), pack_levels(snapshot.asks),
    )


def encode(snapshot: OrderbookSnapshot) -> bytes:
    """Encode an :class:`OrderbookSnapshot` to the wire format."""
    return encode_packed(pack_snapshot(snapshot))


def decode_fields(data: bytes) -> dict[str, Any]:
    """Decode to a dict of wire fields with ``bids``/``asks`` as (n, 2) float64 arrays.

    This is the consumers' fast path (no per-level Python objects). Unknown keys are kept out.
    """
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise CodecError(f"not msgpack: {exc}") from None
    if not isinstance(obj, dict):
        raise CodecError(f"expected a msgpack map, got {type(obj).__name__}")
    well_formed = _well_formed_fields(obj)
    if well_formed is not None:
        return well_formed
    missing = [key for key in _REQUIRED if key not in obj]
    if missing:
        raise CodecError(f"missing field(s): {', '.join(missing)}")
    try:
        out = {
            "v": int(obj.get("v", SCHEMA_VERSION)),
            "exchange": _text(obj, "exchange"),
            "symbol": _text(obj, "symbol"),
            "type": _text(obj, "type", "future"),
            "ts": _int(obj, "ts"),
            "recv_ns": _int(obj, "recv_ns", 0),
            "xseq": None if obj.get("xseq") is None else _int(obj, "xseq"),
            "seq": _int(obj, "seq"),
            "resync": bool(obj.get("resync", False)),
            "bids": unpack_levels(_bytes(obj, "bids")),
            "asks": unpack_levels(_bytes(obj, "asks")),
        }
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"bad field value: {exc}") from None
    return out


def _well_formed_fields(obj: dict) -> Optional[dict[str, Any]]:
    """:func:`decode_fields` for the usual, well-formed map in one pass of exact type checks (a third
    faster than the per-field validation); None for anything else, which the validating path then explains."""
    get = obj.get
    version, exchange, symbol, market_type = get("v", SCHEMA_VERSION), get("exchange"), get("symbol"), get("type", "future")
    ts, recv_ns, xseq, seq, bids, asks = get("ts"), get("recv_ns", 0), get("xseq"), get("seq"), get("bids"), get("asks")
    if not (
        type(version) is int and type(exchange) is str and exchange and type(symbol) is str and symbol
        and type(market_type) is str and market_type and type(ts) is int and type(recv_ns) is int
        and (xseq is None or type(xseq) is int) and type(seq) is int
        and type(bids) is bytes and not len(bids) % 16 and type(asks) is bytes and not len(asks) % 16
    ):
        return None
    return {
        "v": version, "exchange": exchange, "symbol": symbol, "type": market_type, "ts": ts, "recv_ns": recv_ns,
        "xseq": xseq, "seq": seq, "resync": bool(get("resync", False)),
        "bids": np.frombuffer(bids, dtype=_FLOAT64).reshape(-1, 2),
        "asks": np.frombuffer(asks, dtype=_FLOAT64).reshape(-1, 2),
    }


@dataclass(slots=True)
class SnapshotColumns:
    """Many decoded snapshots column by column (see :func:`decode_columns`): one list per wire field, levels
    kept as the wire's float64 blocks (``bytes``, 16 bytes per [price, size] level)."""

    exchange: list[str]
    symbol: list[str]
    market_type: list[str]
    ts: list[int]
    recv_ns: list[int]
    xseq: list[Optional[int]]
    seq: list[int]
    resync: list[bool]
    bids: list[bytes]
    asks: list[bytes]

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, rows: Sequence[int]) -> "SnapshotColumns":
        """The given rows, in the given order."""
        return SnapshotColumns(*([values[i] for i in rows] for values in self._values()))

    def _values(self) -> list[list]:
        return [getattr(self, column.name) for column in dataclass_fields(self)]

    @classmethod
    def from_fields(cls, decoded: Sequence[dict[str, Any]]) -> "SnapshotColumns":
        """Columns of :func:`decode_fields` outputs."""
        return cls(
            *([f[key] for f in decoded] for key in ("exchange", "symbol", "type", "ts", "recv_ns", "xseq", "seq", "resync")),
            [f["bids"].tobytes() for f in decoded], [f["asks"].tobytes() for f in decoded],
        )


def decode_columns(payloads: Sequence[bytes]) -> tuple[SnapshotColumns, list[tuple[int, str]]]:
    """Decode many payloads at once, column-wise: (columns of the decodable ones in order, [(index, reason), ...]
    of the others). Each payload is accepted or refused exactly as :func:`decode_fields` would.

    The bulk consumers' fast path: one msgpack map per payload and no other per-snapshot object; the type checks
    run per column. A batch with anything unusual in it goes through :func:`decode_fields` payload by payload.
    """
    try:
        columns = _well_formed_columns([msgpack.unpackb(data) for data in payloads])
    except Exception:  # garbage, unhashable values, non-maps: the per-payload path below explains
        columns = None
    if columns is not None:
        return columns, []
    decoded: list[dict[str, Any]] = []
    refused: list[tuple[int, str]] = []
    for index, data in enumerate(payloads):
        try:
            decoded.append(decode_fields(data))
        except CodecError as exc:
            refused.append((index, str(exc)))
    return SnapshotColumns.from_fields(decoded), refused


def _types(values: list) -> set[type]:
    return set(map(type, values))


def _well_formed_columns(maps: list[Any]) -> Optional[SnapshotColumns]:
    """Columns when every map passes :func:`_well_formed_fields`' exact type checks, else None (raises for
    values that cannot be checked this way, e.g. unhashable ones)."""
    if _types(maps) - {dict}:
        return None
    version = [m.get("v", SCHEMA_VERSION) for m in maps]
    texts = [[m.get(key) for m in maps] for key in ("exchange", "symbol")] + [[m.get("type", "future") for m in maps]]
    numbers = [[m.get(key) for m in maps] for key in ("ts", "seq")] + [[m.get("recv_ns", 0) for m in maps]]
    xseq = [m.get("xseq") for m in maps]
    resync = [m.get("resync", False) for m in maps]
    sides = [[m.get(key) for m in maps] for key in ("bids", "asks")]
    if (
        _types(version) - {int} or _types(xseq) - {int, type(None)} or _types(resync) - {bool}
        or any(_types(column) - {int} for column in numbers)
        or any(_types(column) - {str} or "" in set(column) for column in texts)
        or any(_types(side) - {bytes} or any(size % 16 for size in set(map(len, side))) for side in sides)
    ):
        return None
    (exchange, symbol, market_type), (ts, seq, recv_ns), (bids, asks) = texts, numbers, sides
    return SnapshotColumns(exchange, symbol, market_type, ts, recv_ns, xseq, seq, resync, bids, asks)


def decode(data: bytes) -> OrderbookSnapshot:
    """Decode wire bytes to an :class:`OrderbookSnapshot`."""
    f = decode_fields(data)
    return OrderbookSnapshot(
        symbol=f["symbol"],
        timestamp=ms_to_datetime(f["ts"]),
        bids=f["bids"].tolist(),
        asks=f["asks"].tolist(),
        exchange=f["exchange"],
        market_type=f["type"],
        receive_ts_ns=f["recv_ns"],
        exchange_seq=f["xseq"],
        seq=f["seq"],
        resync=f["resync"],
    )


def _text(obj: dict, key: str, default: Optional[str] = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or not value:
        raise CodecError(f"field {key!r} must be a non-empty string, got {type(value).__name__}")
    return value


def _int(obj: dict, key: str, default: Optional[int] = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"field {key!r} must be an integer, got {type(value).__name__}")
    return value


def _bytes(obj: dict, key: str) -> bytes:
    value = obj[key]
    if not isinstance(value, (bytes, bytearray)):
        raise CodecError(f"field {key!r} must be binary, got {type(value).__name__}")
    return bytes(value)
