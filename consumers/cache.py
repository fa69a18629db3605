"""The latest-book cache: the newest order book of every (exchange, symbol), readable straight from Redis.

Layout (plain Redis types, so any language can read it)::

    ccxt:latest:<exchange>          HASH  unified symbol -> the snapshot's msgpack wire payload, byte for byte
                                          as published (format: ``common.codec``)
    {ccxt:latest:<exchange>}:order  HASH  unified symbol -> order key of the cached payload:
                                          20-digit recv_ns followed by 20-digit seq

A payload replaces the cached one only if its order key is greater. The comparison runs inside Redis (a Lua
script), so redelivered old entries and several cache processes never move a book backwards. The receive
time leads and the per-symbol ``seq`` breaks ties, because ``seq`` starts again when a producer restarts.
The order hash is hash-tagged with the book hash's full name, so both live in one Redis Cluster slot.

The age of a book is ``now - recv_ns`` (the local receive time in the payload; the exchange ``ts`` when the
producer did not record one). A book with no update for ``stale_after`` seconds is *stale*: readers mark it
(``snapshot.extra["stale"]``) rather than hide it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator
from typing import Any, Iterable, Optional

import redis.asyncio as aioredis

from common.codec import decode
from common.model import OrderbookSnapshot, datetime_to_ms
from common.redis_client import async_client, sync_client
from common.streams import StreamKeys
from consumers.runner import StreamEntry, Worker, decode_entries

log = logging.getLogger(__name__)

#: KEYS: book hash, order hash. ARGV: (symbol, order key, payload) triples, one per symbol.
#: Order keys are fixed-width digit strings, compared in 10-digit numeric chunks (locale-proof).
_STORE_NEWER = """
local function newer(a, b)
  for i = 1, 40, 10 do
    local x, y = tonumber(string.sub(a, i, i + 9)), tonumber(string.sub(b, i, i + 9))
    if x ~= y then return x > y end
  end
  return false
end
local written = 0
for i = 1, #ARGV, 3 do
  local current = redis.call('HGET', KEYS[2], ARGV[i])
  if not current or newer(ARGV[i + 1], current) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    written = written + 1
  end
end
return written
"""


def order_key(recv_ns: int, seq: int) -> str:
    """The cache's ordering of two snapshots of one symbol: receive time, then seq (fixed-width digits)."""
    return f"{max(recv_ns, 0):020d}{max(seq, 0):020d}"


def received_at(recv_ns: int, ts_ms: int) -> float:
    """When a book was received, in seconds since the epoch (its exchange time if no receive time was recorded)."""
    return recv_ns / 1e9 if recv_ns else ts_ms / 1e3


class LatestBookCache(Worker):
    """Consumer worker (group ``cache``) that keeps the newest book per (exchange, symbol) in Redis.

    One pipelined round trip per batch: one script call per exchange carrying the batch's newest entry of
    each of its symbols. Entries are acked once written (or once found older than the cached book).
    """

    group = "cache"
    report_trimmed = False  # only the newest book matters here
    decodes_batches = True

    def __init__(self, keys: StreamKeys = StreamKeys()) -> None:
        self.keys = keys
        self.written = 0  # books replaced (older or equal entries are skipped, not counted)
        self._redis: Optional[aioredis.Redis] = None

    async def start(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def handle(self, entries: list[StreamEntry]) -> Iterable[StreamEntry]:
        columns = decode_entries(entries)
        newest: dict[tuple[str, str], tuple[str, StreamEntry]] = {}
        for entry, exchange, symbol, recv_ns, seq in zip(entries, columns.exchange, columns.symbol, columns.recv_ns,
                                                         columns.seq):
            key = (exchange, symbol)
            order = order_key(recv_ns, seq)
            if key not in newest or order > newest[key][0]:
                newest[key] = (order, entry)
        args_by_exchange: dict[str, list[Any]] = {}
        for (exchange, symbol), (order, entry) in newest.items():
            args_by_exchange.setdefault(exchange, []).extend((symbol, order, entry.payload))
        assert self._redis is not None, "start() was not called"
        async with self._redis.pipeline(transaction=False) as pipe:
            for exchange, args in args_by_exchange.items():
                pipe.eval(_STORE_NEWER, 2, self.keys.latest(exchange), self.keys.latest_order(exchange), *args)
            self.written += sum(await pipe.execute())
        return entries


Query = Generator[tuple, Any, Any]
"""A read written once for both clients: it yields Redis calls ``(method, *args)`` and receives their replies."""


class _BookReader:
    """What :class:`LatestBooks` and :class:`AsyncLatestBooks` share: queries, decoding, staleness."""

    #: opens a client from a URL (common.redis_client: single node or redis+cluster://), set by each reader
    connect: Callable[[str], Any]

    def __init__(self, redis_url_or_client: Any, stale_after: float = 10.0, *, keys: StreamKeys = StreamKeys()) -> None:
        """``redis_url_or_client``: a Redis URL (the reader opens and closes its client) or a client of the kind."""
        if stale_after <= 0:
            raise ValueError(f"stale_after must be positive, got {stale_after}")
        self.stale_after = stale_after
        self.keys = keys
        self._owned = isinstance(redis_url_or_client, str)
        self.redis = type(self).connect(redis_url_or_client) if self._owned else redis_url_or_client
        self._unified: dict[tuple[str, str], str] = {}  # (exchange, native id) -> unified symbol

    def age(self, snapshot: OrderbookSnapshot, now: Optional[float] = None) -> float:
        """Seconds since ``snapshot`` was received (``now`` defaults to the current time)."""
        now = time.time() if now is None else now
        return now - received_at(snapshot.receive_ts_ns, datetime_to_ms(snapshot.timestamp))

    def is_stale(self, snapshot: OrderbookSnapshot, now: Optional[float] = None) -> bool:
        """True if ``snapshot`` is older than ``stale_after`` seconds."""
        return self.age(snapshot, now) > self.stale_after

    def _decode(self, payload: bytes, now: float) -> OrderbookSnapshot:
        snapshot = decode(payload)
        snapshot.extra["age"] = self.age(snapshot, now)
        snapshot.extra["stale"] = snapshot.extra["age"] > self.stale_after
        return snapshot

    def _get(self, exchange: str, symbol: str) -> Query:
        book_key = self.keys.latest(exchange)
        unified = self._unified.get((exchange, symbol), symbol)
        payload = yield ("hget", book_key, unified)
        if payload is None and unified == symbol and "/" not in symbol:  # a native id: ask the registry
            registry = yield ("hgetall", self.keys.markets(exchange))
            unified = _symbol_of_id(registry, symbol)
            if unified is not None:
                self._unified[(exchange, symbol)] = unified
                payload = yield ("hget", book_key, unified)
        return None if payload is None else self._decode(payload, time.time())

    def _all(self, exchange: Optional[str]) -> Query:
        if exchange is not None:
            exchanges = [exchange]
        else:  # every cached book came from a shard's stream; a shard tag starts with its exchange id
            tags = yield ("smembers", self.keys.shards)
            exchanges = sorted({tag.decode().split(".", 1)[0] for tag in tags})
        books: dict[tuple[str, str], OrderbookSnapshot] = {}
        now = time.time()
        for name in exchanges:
            for payload in (yield ("hvals", self.keys.latest(name))):
                snapshot = self._decode(payload, now)
                books[(snapshot.exchange, snapshot.symbol)] = snapshot
        return books


def _symbol_of_id(registry: dict[bytes, bytes], native_id: str) -> Optional[str]:
    """The unified symbol whose registry entry (``MarketInfo`` JSON) has ``id == native_id``."""
    for symbol, raw in registry.items():
        try:
            if json.loads(raw).get("id") == native_id:
                return symbol.decode()
        except (ValueError, AttributeError):
            log.warning("unreadable market registry entry for %r", symbol)
    return None


class LatestBooks(_BookReader):
    """Synchronous reader of the latest-book cache (redis-py).

    ``get`` accepts a unified symbol or, when the market registry knows it, the exchange's native id
    (``BTC-PERPETUAL``; anything without a ``/``, looked up once and remembered). Every
    returned snapshot carries ``extra["age"]`` (seconds) and ``extra["stale"]``.
    """

    connect = staticmethod(sync_client)

    def _run(self, query: Query) -> Any:
        reply = None
        try:
            while True:
                method, *args = query.send(reply)
                reply = getattr(self.redis, method)(*args)
        except StopIteration as done:
            return done.value

    def get(self, exchange: str, symbol: str) -> Optional[OrderbookSnapshot]:
        """The cached book of ``symbol`` on ``exchange``, or None if there is none."""
        return self._run(self._get(exchange, symbol))

    def all(self, exchange: Optional[str] = None) -> dict[tuple[str, str], OrderbookSnapshot]:
        """Every cached book (of one exchange, or of all), keyed by (exchange, symbol)."""
        return self._run(self._all(exchange))

    def close(self) -> None:
        """Close the connection if this reader opened it (from a URL)."""
        if self._owned:
            self.redis.close()

    def __enter__(self) -> "LatestBooks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncLatestBooks(_BookReader):
    """The asyncio twin of :class:`LatestBooks` (redis.asyncio); same queries, awaited."""

    connect = staticmethod(async_client)

    async def _run(self, query: Query) -> Any:
        reply = None
        try:
            while True:
                method, *args = query.send(reply)
                reply = await getattr(self.redis, method)(*args)
        except StopIteration as done:
            return done.value

    async def get(self, exchange: str, symbol: str) -> Optional[OrderbookSnapshot]:
        """The cached book of ``symbol`` on ``exchange``, or None if there is none."""
        return await self._run(self._get(exchange, symbol))

    async def all(self, exchange: Optional[str] = None) -> dict[tuple[str, str], OrderbookSnapshot]:
        """Every cached book (of one exchange, or of all), keyed by (exchange, symbol)."""
        return await self._run(self._all(exchange))

    async def close(self) -> None:
        """Close the connection if this reader opened it (from a URL)."""
        if self._owned:
            await self.redis.aclose()

    async def __aenter__(self) -> "AsyncLatestBooks":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
