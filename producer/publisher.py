"""Publishes snapshots to Redis Streams: one stream per (exchange, symbol), written in batches.

``publish()`` (or ``publish_packed()``, the collector's fast path) is synchronous and never blocks the
streaming loop: it encodes the snapshot and appends it to an in-memory buffer. A background task drains
the buffer, one batch per call of a Lua script that runs every ``XADD ... MAXLEN ~ N`` of the batch (and
registers new streams): one command and one reply instead of a pipeline of up to 1,000 XADDs whose
replies redis-py parses one by one (~30 µs of client CPU per entry). All keys of a shard share its hash
tag, so the script is valid on Redis Cluster too. A server that lost the script (restart, SCRIPT FLUSH)
gets it again through EVAL.

Nothing is lost silently when Redis fails:

* while Redis is unreachable, every failed write moves the buffer, in order, to a bounded on-disk
  :class:`~producer.spool.DiskSpool` (when one is configured; else it stays in memory up to
  ``max_buffer``), which is replayed oldest first (also after a producer restart) before anything newer;
* a Redis that restarts may have lost its last second of acknowledged writes (AOF ``everysec``): the
  publisher keeps what it wrote in the last ``replay_window`` seconds and, on recovery, re-sends the
  entries whose ``seq`` is beyond the last one each stream still holds;
* when memory and spool are both full the oldest entries are dropped, loudly (error log, counter), and
  the next snapshot of every affected symbol is published with ``resync=True``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from common.codec import CodecError, decode_fields, encode_packed, pack_snapshot
from common.markets import MarketInfo
from common.model import OrderbookSnapshot, PackedSnapshot
from common.streams import PAYLOAD_FIELD, StreamKeys
from producer.spool import DiskSpool, Record, SpoolFull

log = logging.getLogger(__name__)

#: KEYS: the shard's stream registry set, then the batch's streams. ARGV: MAXLEN, "1" to add the streams to
#: the registry, the payload field, then per entry: its stream's index in KEYS and its payload.
WRITE_BATCH_SCRIPT = """
local maxlen, field = ARGV[1], ARGV[3]
if ARGV[2] == '1' then
  for first = 2, #KEYS, 1000 do
    redis.call('SADD', KEYS[1], unpack(KEYS, first, math.min(first + 999, #KEYS)))
  end
end
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[tonumber(ARGV[i])], 'MAXLEN', '~', maxlen, '*', field, ARGV[i + 1])
end
return (#ARGV - 3) / 2
"""
WRITE_BATCH_SHA = hashlib.sha1(WRITE_BATCH_SCRIPT.encode()).hexdigest()


@dataclass
class PublisherStats:
    published: int = 0
    batches: int = 0
    dropped: int = 0
    errors: int = 0
    spilled: int = 0
    replayed: int = 0
    last_batch_size: int = 0
    last_batch_seconds: float = 0.0
    last_error: Optional[str] = None


class RedisPublisher:
    """Buffered, pipelined writer of one shard's book streams."""

    def __init__(
        self,
        redis: aioredis.Redis,
        shard: str,
        *,
        keys: StreamKeys = StreamKeys(),
        maxlen: int = 100_000,
        batch_size: int = 1000,
        max_buffer: int = 500_000,
        spool: Optional[DiskSpool] = None,
        replay_window: float = 3.0,
    ) -> None:
        if maxlen <= 0 or batch_size <= 0 or max_buffer <= 0:
            raise ValueError("maxlen, batch_size and max_buffer must be positive")
        self.redis = redis
        self.shard = shard
        self.keys = keys
        self.maxlen = maxlen
        self.batch_size = batch_size
        self.max_buffer = max_buffer
        self.spool = spool
        self.replay_window = replay_window
        self.stats = PublisherStats()
        #: called with (batch size, seconds) after every batch written (metrics histograms)
        self.batch_listeners: list[Callable[[int, float], None]] = []
        self._buffer: deque[Record] = deque()
        self._recent: deque[tuple[float, Record]] = deque()  # written to Redis in the last replay_window s
        self._stream_of: dict[str, str] = {}
        self._registered: set[str] = set()
        self._needs_resync: set[str] = set()
        # the last write failed (or a previous run left a spool): check what Redis already holds first
        self._failing = bool(spool is not None and len(spool))
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def buffered(self) -> int:
        """Entries not yet in Redis (memory and spool)."""
        return len(self._buffer) + (len(self.spool) if self.spool else 0)

    def publish(self, snapshot: OrderbookSnapshot) -> None:
        """Queue one snapshot for publishing (sync, non-blocking; usable as a collector listener)."""
        packed = pack_snapshot(snapshot)
        self.publish_packed(packed)
        snapshot.resync = packed.resync

    def publish_packed(self, packed: PackedSnapshot) -> None:
        """:meth:`publish` for the collector's packed form (``collector.add_listener(..., packed=True)``)."""
        symbol = packed.symbol
        if self._needs_resync and symbol in self._needs_resync:
            self._needs_resync.discard(symbol)
            packed.resync = True  # entries of this symbol were dropped before it: mark the gap
        stream = self._stream_of.get(symbol)
        if stream is None:
            stream = self._stream_of[symbol] = self.keys.book_stream(self.shard, symbol)
        if len(self._buffer) >= self.max_buffer:
            self._drop_oldest()
        self._buffer.append((stream, packed.seq, encode_packed(packed)))
        self._wakeup.set()

    def _drop_oldest(self) -> None:
        stream = self._buffer.popleft()[0]
        self._needs_resync.add(self.keys.parse_book_stream(stream)[1])
        self.stats.dropped += 1
        if self.stats.dropped == 1 or self.stats.dropped % 10_000 == 0:
            log.error(
                "DATA LOSS: publish buffer full (%d entries) and %s; dropped %d snapshots so far "
                "(the next snapshot of each affected symbol is flagged resync)",
                self.max_buffer, "the spool is full" if self.spool else "no spool is configured", self.stats.dropped,
            )

    async def register_markets(self, markets: Iterable[MarketInfo]) -> None:
        """Publish market metadata (type, expiry, strike, ...) so consumers can describe every symbol."""
        by_exchange: dict[str, dict[str, str]] = {}
        for market in markets:
            by_exchange.setdefault(market.exchange, {})[market.symbol] = json.dumps(market.to_dict())
        if not by_exchange:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for exchange, mapping in by_exchange.items():
                pipe.hset(self.keys.markets(exchange), mapping=mapping)
            await pipe.execute()

    async def run(self) -> None:
        """Drain buffer and spool until :meth:`close`; survives Redis outages (retries with backoff)."""
        backoff = 0.05
        while True:
            if not self.buffered:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                if self.spool is not None and len(self.spool):
                    batch = self.spool.peek(self.batch_size)
                    await self._write(await self._recover(batch) if self._failing else batch)
                    self.spool.commit(len(batch))
                else:
                    await self._write_from_buffer()
                if self._failing:
                    log.warning("Redis is back; %d entries still to publish", self.buffered)
                self._failing = False
                backoff = 0.05
            except (RedisError, OSError) as exc:
                self._failing = True
                self.stats.errors += 1
                self.stats.last_error = str(exc)
                log.warning("publish to Redis failed (%s); %d snapshots buffered, retrying", exc, self.buffered)
                self._spill()
                if self._closed and backoff >= 2.0:
                    log.error("giving up at shutdown: %d snapshots unpublished%s", self.buffered,
                              f" (kept in the spool {self.spool.dir})" if self.spool and len(self.spool) else "")
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _spill(self) -> None:
        """Move the whole memory buffer, in order, to the tail of the spool (Redis is failing)."""
        if self.spool is None or not self._buffer:
            return
        try:
            self.spool.append(list(self._buffer))
        except SpoolFull as exc:
            log.error("%s; keeping up to %d entries in memory", exc, self.max_buffer)
            return
        self.stats.spilled += len(self._buffer)
        self._buffer.clear()

    async def _write_from_buffer(self) -> None:
        batch = [self._buffer[i] for i in range(min(self.batch_size, len(self._buffer)))]
        dropped_before = self.stats.dropped
        await self._write(await self._recover(batch) if self._failing else batch)
        # only now is the batch in Redis: remove it from the buffer. publish() may have appended meanwhile,
        # and, with the buffer full, dropped entries from the front (that is, from this batch).
        for _ in range(max(0, len(batch) - (self.stats.dropped - dropped_before))):
            self._buffer.popleft()

    async def _write(self, batch: list[Record]) -> None:
        if not batch:
            return
        started = time.perf_counter()
        streams: dict[str, int] = {}  # stream -> its index in the script's KEYS (1-based, after the registry)
        entries: list = []
        for stream, _, payload in batch:
            index = streams.get(stream)
            if index is None:
                index = streams[stream] = len(streams) + 2
            entries += (index, payload)
        register = not self._registered.issuperset(streams)
        if register:
            await self.redis.sadd(self.keys.shards, self.shard)  # another cluster slot: not in the script
        keys = [self.keys.shard_streams(self.shard), *streams]
        args = [*keys, self.maxlen, 1 if register else 0, PAYLOAD_FIELD, *entries]
        try:
            await self.redis.evalsha(WRITE_BATCH_SHA, len(keys), *args)
        except NoScriptError:  # a restarted or flushed server: EVAL runs it and caches it again
            await self.redis.eval(WRITE_BATCH_SCRIPT, len(keys), *args)
        now = time.monotonic()
        self._registered.update(streams)
        self._recent.extend((now, record) for record in batch)
        while self._recent and (now - self._recent[0][0] > self.replay_window or len(self._recent) > self.max_buffer):
            self._recent.popleft()
        self.stats.published += len(batch)
        self.stats.batches += 1
        self.stats.last_batch_size = len(batch)
        self.stats.last_batch_seconds = time.perf_counter() - started
        for listener in self.batch_listeners:
            listener(len(batch), self.stats.last_batch_seconds)

    async def _recover(self, batch: list[Record]) -> list[Record]:
        """First write after a failure. Redis may have restarted and lost its unsynced tail (AOF
        everysec), or applied part of the failed pipeline. Re-send the recently acknowledged entries it
        no longer has, then return the part of ``batch`` it does not have yet: judged by each stream's
        last ``seq``, so nothing is lost and nothing is written twice."""
        recent = [record for _, record in self._recent]
        last_seq = await self._last_seqs({record[0] for record in recent + batch})
        lost = [record for record in recent if record[1] > last_seq[record[0]]]
        self._registered.clear()  # the registry sets may be gone too: re-add them with the next write
        if lost:
            log.error("Redis lost %d recently acknowledged entries (restart without fsync); re-sending them", len(lost))
            for start in range(0, len(lost), self.batch_size):  # before the spool and the buffer: order kept
                await self._write(lost[start : start + self.batch_size])
            self.stats.replayed += len(lost)
        return [record for record in batch if record[1] > last_seq[record[0]]]

    async def _last_seqs(self, streams: set[str]) -> dict[str, int]:
        """The ``seq`` of the newest entry of each stream (-1: empty, missing or undecodable)."""
        ordered = sorted(streams)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in ordered:
                pipe.xrevrange(stream, count=1)
            replies = await pipe.execute()
        last: dict[str, int] = {}
        for stream, reply in zip(ordered, replies):
            try:
                last[stream] = decode_fields(reply[0][1][PAYLOAD_FIELD])["seq"] if reply else -1
            except (CodecError, KeyError):
                last[stream] = -1
        return last

    async def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything buffered so far is in Redis; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while self.buffered and time.monotonic() < deadline:
            self._wakeup.set()
            await asyncio.sleep(0.005)
        return not self.buffered

    def close(self) -> None:
        """Ask :meth:`run` to return once everything is written (or, with Redis down, spooled)."""
        self._closed = True
        self._wakeup.set()
