"""The order-book snapshot: the one data type every part of the pipeline speaks, and its packed form."""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

MARKET_TYPES = ("future", "swap", "option", "spot")
_LITTLE = sys.byteorder == "little"


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch -> timezone-aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)


def datetime_to_ms(value: datetime) -> int:
    """Timezone-aware (or naive, taken as UTC) datetime -> milliseconds since the epoch."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(round(value.timestamp() * 1000))


@dataclass(slots=True)
class OrderbookSnapshot:
    """A point-in-time order book of one instrument on one exchange.

    ``bids`` are sorted best (highest) first, ``asks`` best (lowest) first, each level ``[price, size]``.
    ``timestamp`` is the exchange's time of the book (UTC); ``receive_ts_ns`` is when this process
    received it (``time.time_ns()``). ``exchange_seq`` is the exchange's own sequence/nonce where it
    has one (deribit change_id, binance u, okx seqId). ``seq`` is the collector's per-symbol sequence
    number: it grows by exactly one per published snapshot of a symbol, so consumers can count and
    detect loss. ``resync`` is True on the first snapshot after a (re)subscription: the book before it
    and the book at it are not continuous (a reconnect, a gap that forced a fresh snapshot).

    The computed properties return ``None`` when a side is empty (never an IndexError).
    """

    symbol: str
    timestamp: datetime
    bids: list[list[float]]
    asks: list[list[float]]
    exchange: str
    market_type: str = "future"
    receive_ts_ns: int = 0
    exchange_seq: Optional[int] = None
    seq: int = 0
    resync: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def timestamp_ms(self) -> int:
        """Exchange timestamp in milliseconds since the epoch."""
        return datetime_to_ms(self.timestamp)

    @property
    def best_bid(self) -> Optional[float]:
        """Best (highest) bid price, or None if there are no bids."""
        return self.bids[0][0] if self.bids else None

    @property
    def best_ask(self) -> Optional[float]:
        """Best (lowest) ask price, or None if there are no asks."""
        return self.asks[0][0] if self.asks else None

    @property
    def best_bid_size(self) -> Optional[float]:
        return self.bids[0][1] if self.bids else None

    @property
    def best_ask_size(self) -> Optional[float]:
        return self.asks[0][1] if self.asks else None

    @property
    def mid_price(self) -> Optional[float]:
        """(best_bid + best_ask) / 2, or None if either side is empty."""
        if not self.bids or not self.asks:
            return None
        return (self.bids[0][0] + self.asks[0][0]) / 2.0

    @property
    def spread(self) -> Optional[float]:
        """best_ask - best_bid, or None if either side is empty."""
        if not self.bids or not self.asks:
            return None
        return self.asks[0][0] - self.bids[0][0]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON-able dict: the canonical row shape of JSONL output (``from_dict`` reverses it)."""
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "market_type": self.market_type,
            "timestamp": self.timestamp.isoformat(),
            "timestamp_ms": self.timestamp_ms,
            "receive_ts_ns": self.receive_ts_ns,
            "exchange_seq": self.exchange_seq,
            "seq": self.seq,
            "resync": self.resync,
            "bids": [[float(p), float(s)] for p, s in self.bids],
            "asks": [[float(p), float(s)] for p, s in self.asks],
            "best_bid": self.best_bid,
            "best_ask": self.best_ask,
            "mid_price": self.mid_price,
            "spread": self.spread,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OrderbookSnapshot":
        """Build a snapshot from ``to_dict()`` output (derived keys are ignored)."""
        if "timestamp_ms" in data and data["timestamp_ms"] is not None:
            ts = ms_to_datetime(int(data["timestamp_ms"]))
        else:
            raw = data["timestamp"]
            ts = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=timezone.utc)
        return cls(
            symbol=data["symbol"],
            timestamp=ts,
            bids=[[float(p), float(s)] for p, s in data.get("bids") or []],
            asks=[[float(p), float(s)] for p, s in data.get("asks") or []],
            exchange=data["exchange"],
            market_type=data.get("market_type") or "future",
            receive_ts_ns=int(data.get("receive_ts_ns") or 0),
            exchange_seq=None if data.get("exchange_seq") is None else int(data["exchange_seq"]),
            seq=int(data.get("seq") or 0),
            resync=bool(data.get("resync", False)),
        )


def levels_from_block(block: bytes) -> list[list[float]]:
    """A little-endian float64 block (price,size interleaved, the wire format's layout) -> ``[[price, size], ...]``."""
    values = array("d", block)
    if not _LITTLE:
        values.byteswap()
    flat = iter(values.tolist())
    return [[price, size] for price, size in zip(flat, flat)]


class PackedSnapshot:
    """An :class:`OrderbookSnapshot` with its levels kept as the wire format's float64 blocks.

    The collector's compact form: what its history holds (~1 KB at 20 levels per side instead of ~3.7 KB of
    level lists) and what its packed listeners (the publisher) receive. ``bids``/``asks`` decode the blocks
    anew on every access; :meth:`unpack` builds the full snapshot. Blocks are ``bytes`` (immutable);
    ``resync`` may be set (the publisher marks a gap on it).
    """

    __slots__ = ("symbol", "exchange", "market_type", "timestamp_ms", "receive_ts_ns", "exchange_seq", "seq",
                 "resync", "bids_block", "asks_block")

    def __init__(
        self,
        symbol: str,
        exchange: str,
        market_type: str,
        timestamp_ms: int,
        receive_ts_ns: int,
        exchange_seq: Optional[int],
        seq: int,
        resync: bool,
        bids_block: bytes,
        asks_block: bytes,
    ) -> None:
        self.symbol = symbol
        self.exchange = exchange
        self.market_type = market_type
        self.timestamp_ms = timestamp_ms
        self.receive_ts_ns = receive_ts_ns
        self.exchange_seq = exchange_seq
        self.seq = seq
        self.resync = resync
        self.bids_block = bids_block
        self.asks_block = asks_block

    def __repr__(self) -> str:
        return (f"<PackedSnapshot {self.exchange} {self.symbol} seq={self.seq} "
                f"levels={len(self.bids_block) // 16}/{len(self.asks_block) // 16}>")

    @property
    def bids(self) -> list[list[float]]:
        return levels_from_block(self.bids_block)

    @property
    def asks(self) -> list[list[float]]:
        return levels_from_block(self.asks_block)

    def unpack(self) -> OrderbookSnapshot:
        """The full snapshot (fresh level lists)."""
        return OrderbookSnapshot(
            self.symbol, ms_to_datetime(self.timestamp_ms), self.bids, self.asks, self.exchange, self.market_type,
            self.receive_ts_ns, self.exchange_seq, self.seq, self.resync,
        )
