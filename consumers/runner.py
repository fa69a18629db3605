"""The consumer-group runner every consumer worker runs on.

It discovers the shards' book streams (and picks up new ones without a restart), reads them with
XREADGROUP in batches (one consumer group per worker kind, one consumer name per process, so several
processes of a kind share the load), decodes entries, hands them to the worker, and XACKs only what the
worker says is durable. Entries another consumer left pending (it died) are reclaimed with XAUTOCLAIM
after ``claim_idle_ms``. An entry that cannot be decoded or processed goes to the dead-letter stream
with the reason and is acked, so one poison entry never stalls a stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from common.codec import CodecError, SnapshotColumns, decode_columns, decode_fields
from common.redis_client import async_client, ensure_reachable
from common.runtime import tune_gc
from common.streams import PAYLOAD_FIELD, StreamKeys

log = logging.getLogger(__name__)

#: XREADGROUP lists at most this many stream keys per call (an idle call over 1000 keys costs ~1.35 ms).
MAX_KEYS_PER_READ = 500

#: acks of a stream with at least this many ids go through _ACK_JOINED (fewer: a plain XACK, cheaper for Redis)
JOINED_ACK_MIN_IDS = 64
#: XACK the space-separated entry ids ARGV[2] of stream KEYS[1] for group ARGV[1]: one argument instead of one
#: per id (redis-py packs every argument in Python, ~0.8 µs an id); in slices that fit Lua's unpack()
_ACK_JOINED = """
local ids, acked = {}, 0
for id in string.gmatch(ARGV[2], '%S+') do
  ids[#ids + 1] = id
  if #ids == 4000 then acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids)) ids = {} end
end
if #ids > 0 then acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids)) end
return acked
"""

#: raise the group's recorded loss of a stream to ARGV[2]; return by how much it grew (0: already known),
#: so that each trimmed run is reported once per group, however many consumers notice it
_RECORD_TRIMMED = """
local known = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local total = tonumber(ARGV[2])
if total > known then redis.call('HSET', KEYS[1], ARGV[1], total) return total - known end
return 0
"""


class StreamEntry:
    """One stream entry: its ``payload`` (wire bytes) and ``fields``, the payload's
    :func:`common.codec.decode_fields` output, given or decoded on first use (CodecError if undecodable).

    ``redelivered`` is True when the entry was delivered before (this consumer's pending entries read
    at start, or entries reclaimed from another consumer): a worker may already have made it durable.
    """

    __slots__ = ("stream", "id", "payload", "redelivered", "_fields")

    def __init__(self, stream: str, id: bytes, fields: Optional[dict[str, Any]], payload: bytes,
                 redelivered: bool = False) -> None:
        self.stream = stream
        self.id = id
        self.payload = payload
        self.redelivered = redelivered
        self._fields = fields

    @property
    def fields(self) -> dict[str, Any]:
        if self._fields is None:
            self._fields = decode_fields(self.payload)
        return self._fields

    def release(self) -> None:
        """Drop the payload and fields (a worker that keeps the entry only to acknowledge it later)."""
        self.payload = b""
        self._fields = None

    @property
    def decoded(self) -> bool:
        """True when ``fields`` are at hand without decoding."""
        return self._fields is not None

    def __repr__(self) -> str:
        return f"StreamEntry({self.stream!r}, {self.id!r}, redelivered={self.redelivered})"


class UndecodableEntries(Exception):
    """Raised by :meth:`Worker.handle` of a worker that decodes its batches itself (``decodes_batches``),
    before it changed anything: ``refused`` lists the entries that cannot be decoded, with the reason. The
    runner dead-letters them and hands the rest of the batch to ``handle`` again."""

    def __init__(self, refused: list[tuple[StreamEntry, str]]) -> None:
        super().__init__(f"{len(refused)} undecodable entries")
        self.refused = refused


def decode_entries(entries: list[StreamEntry]) -> SnapshotColumns:
    """The entries' snapshots column-wise, for workers that decode their batches (``Worker.decodes_batches``):
    their fields when every entry has them at hand (a direct caller), else their payloads decoded in bulk.
    Raises UndecodableEntries naming the entries that cannot be decoded."""
    if all(entry.decoded for entry in entries):
        return SnapshotColumns.from_fields([entry.fields for entry in entries])
    columns, refused = decode_columns([entry.payload for entry in entries])
    if refused:
        raise UndecodableEntries([(entries[index], reason) for index, reason in refused])
    return columns


@dataclass
class RunnerStats:
    """Counters of one runner (exported as metrics by the processes)."""

    read: int = 0
    acked: int = 0
    dead_letters: int = 0
    reclaimed: int = 0
    trimmed: int = 0  # entries MAXLEN removed before this group read them (reported by this process)
    batches: int = 0
    errors: int = 0
    streams: int = 0
    last_error: Optional[str] = None


class Worker(ABC):
    """A consumer kind. The runner owns reading and acking; the worker owns making entries durable."""

    #: the consumer group name, one per kind ("archiver", "cache", "monitor")
    group: str = "worker"
    #: report entries MAXLEN removed before this group read them (False for kinds that only need the newest)
    report_trimmed: bool = True
    #: True: ``handle`` gets entries not decoded yet and decodes the whole batch itself (raising
    #: UndecodableEntries for entries it cannot decode); False: the runner decodes every entry's ``fields`` first
    decodes_batches: bool = False

    async def start(self, redis: aioredis.Redis) -> None:
        """Called once before the first batch."""

    @abstractmethod
    async def handle(self, entries: list[StreamEntry]) -> Iterable[StreamEntry]:
        """Process a batch; return the entries (of this or earlier batches) that are now durable.

        Raise to signal the batch failed: the runner retries its entries one by one and dead-letters
        those that still fail.
        """

    async def flush(self) -> Iterable[StreamEntry]:
        """Called every ``flush_interval``; return entries made durable by it."""
        return ()

    async def drain(self) -> Iterable[StreamEntry]:
        """Called once at shutdown: make everything held durable and return it (default: :meth:`flush`)."""
        return await self.flush()

    def acked(self, entries: list[StreamEntry]) -> None:
        """Called right after the entries one handle/flush/drain call returned were XACKed."""

    async def close(self) -> None:
        """Called once at shutdown after the final flush and ack."""

    def metric_sources(self) -> list[Any]:
        """Prometheus collectors of this worker's own stats (served next to the runner's)."""
        return []


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(value: Any) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


def _trimmed_before_read(info: dict, group: Optional[dict]) -> int:
    """Entries of a stream that MAXLEN removed before ``group`` read them, when knowable now (else 0)."""
    if group is None or group.get("lag") is None or info.get("entries-added") is None:
        return 0
    delivered = _stream_id(group["last-delivered-id"])
    if delivered >= _stream_id(info["last-generated-id"]):
        return int(group["lag"])  # caught up: what is still "lagging" was never delivered
    first = info.get("recorded-first-entry-id")
    if first is not None and info["length"] and delivered < _stream_id(first):
        return max(0, int(info["entries-added"]) - int(group["entries-read"] or 0) - int(info["length"]))
    return 0


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _raw_reader(redis: Any) -> Optional[aioredis.Redis]:
    """A client on ``redis``'s connection pool whose XREADGROUP replies stay as Redis sent them (a list of
    [stream, [[id, [field, value, ...]], ...]], a map under RESP3): redis-py reshapes every entry into a tuple
    and a dict, ~1 µs of CPU an entry. None for a cluster client (it reads through ``redis`` itself)."""
    if not isinstance(redis, aioredis.Redis):
        return None
    reader = aioredis.Redis(connection_pool=redis.connection_pool)
    reader.set_response_callback("XREADGROUP", lambda reply, **options: reply)
    return reader


def _by_stream(reply: Any) -> Iterable[tuple[bytes, list]]:
    """(stream, entries) pairs of an XREADGROUP reply: a list of pairs, a map under RESP3, None when empty."""
    return reply.items() if isinstance(reply, dict) else reply or ()


def _entries(reply: Any, count: int) -> tuple[list[tuple[str, bytes, Any]], bool]:
    """(stream, id, fields) of an XREADGROUP reply in any of its shapes (fields: a dict or a flat list), and
    whether some stream returned ``count`` entries (it may have more). Pending entries already trimmed away
    come back with no fields: left out."""
    entries: list[tuple[str, bytes, Any]] = []
    limited = False
    for stream, items in _by_stream(reply):
        limited = limited or len(items) == count
        name = stream.decode()
        entries.extend((name, entry_id, data) for entry_id, data in items if data)
    return entries, limited


def _payload(fields: Any) -> Optional[bytes]:
    """The payload field of an entry's fields (a dict, or Redis's flat [field, value, ...] list), else None."""
    if isinstance(fields, dict):
        return fields.get(PAYLOAD_FIELD)
    if len(fields) == 2 and fields[0] == PAYLOAD_FIELD:  # what producers write
        return fields[1]
    return dict(zip(fields[::2], fields[1::2])).get(PAYLOAD_FIELD)


def _field_names(fields: Any) -> list:
    return list(fields) if isinstance(fields, dict) else fields[::2]


def next_count(count: int, returned: int, limited: bool, budget: int) -> int:
    """The XREADGROUP COUNT (a per-stream limit) for a shard's next call, steering the entries one call returns
    toward ``budget``: a call over many backlogged streams would otherwise return COUNT x streams entries.
    Shrinks after a call that returned more than the budget; grows back while some stream hit the limit
    (``limited``: it has more) and the call returned under half the budget (few busy streams)."""
    if returned > budget:
        return max(1, count * budget // returned)
    if limited and returned * 2 < budget:
        return min(budget, count * 2)
    return count


class ConsumerRunner:
    """Runs one :class:`Worker` over every book stream of the selected shards."""

    def __init__(
        self,
        redis: aioredis.Redis,
        worker: Worker,
        *,
        keys: StreamKeys = StreamKeys(),
        consumer: Optional[str] = None,
        shards: Optional[Iterable[str]] = None,
        batch_size: int = 1000,  # entries per XREADGROUP call (about; see next_count)
        block_ms: int = 500,
        claim_idle_ms: int = 30_000,
        discover_interval: float = 2.0,
        trim_check_interval: float = 10.0,
        flush_interval: float = 1.0,
        start_id: str = "0",
    ) -> None:
        if batch_size <= 0 or block_ms < 0 or claim_idle_ms <= 0:
            raise ValueError("batch_size and claim_idle_ms must be positive, block_ms >= 0")
        self.redis = redis
        self._reader = _raw_reader(redis)
        self.worker = worker
        self.keys = keys
        self.group = worker.group
        self.consumer = consumer or default_consumer_name()
        self.shard_filter = set(shards) if shards else None
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.discover_interval = discover_interval
        self.trim_check_interval = trim_check_interval
        self.flush_interval = flush_interval
        self.start_id = start_id
        self.stats = RunnerStats()
        self._streams: dict[str, list[str]] = {}  # shard tag -> its stream keys with a group
        self._shard_tasks: dict[str, asyncio.Task] = {}
        self._lock = asyncio.Lock()  # serializes worker calls across shard readers
        self._stopping = asyncio.Event()

    # ----------------------------------------------------------------------------------- lifecycle
    async def run(self, stop: Optional[asyncio.Event] = None) -> None:
        """Run until ``stop`` is set (or :meth:`stop` is called); then finish, flush, ack and return."""
        await self.worker.start(self.redis)
        waiters = [asyncio.create_task(self._stopping.wait())]
        if stop is not None:
            waiters.append(asyncio.create_task(stop.wait()))
        background: list[asyncio.Task] = []
        try:
            await self._discover_and_read()
            background = [
                asyncio.create_task(self._every(self.discover_interval, self._discover_and_read)),
                asyncio.create_task(self._every(self.flush_interval, self._flush)),
                asyncio.create_task(self._every(self.claim_idle_ms / 2000, self.reclaim)),
                *([asyncio.create_task(self._every(self.trim_check_interval, self.check_trimmed))]
                  if self.worker.report_trimmed else []),
            ]
            done, _ = await asyncio.wait([*waiters, *background], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task in background and task.exception():
                    raise task.exception()
        finally:
            self._stopping.set()
            for waiter in waiters:
                waiter.cancel()
            # let readers finish the batch in hand (a blocking read returns within block_ms)
            busy = [*self._shard_tasks.values(), *background]
            if busy:
                _, late = await asyncio.wait(busy, timeout=self.block_ms / 1000 + 30)
                for task in late:
                    task.cancel()
                await asyncio.gather(*busy, return_exceptions=True)
            await self._flush(final=True)
            await self.worker.close()

    def stop(self) -> None:
        self._stopping.set()

    async def _every(self, interval: float, func) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await func()
            except RedisError as exc:
                self._note_error(f"{func.__name__}: {exc}")

    # ----------------------------------------------------------------------------------- discovery
    async def discover(self) -> None:
        """Find shards and their streams; create the group on new streams."""
        tags = {t.decode() for t in await self.redis.smembers(self.keys.shards)}
        if self.shard_filter is not None:
            tags &= self.shard_filter
        for tag in sorted(tags):
            known = self._streams.setdefault(tag, [])
            members = sorted(s.decode() for s in await self.redis.smembers(self.keys.shard_streams(tag)))
            new = [s for s in members if s not in known]
            for stream in new:
                try:
                    await self.redis.xgroup_create(stream, self.group, id=self.start_id, mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            known.extend(new)
        self.stats.streams = sum(len(v) for v in self._streams.values())

    async def _discover_and_read(self) -> None:
        """Discover, then make sure every shard with streams has its reader task."""
        await self.discover()
        for tag, streams in self._streams.items():
            if streams and tag not in self._shard_tasks:
                self._shard_tasks[tag] = asyncio.create_task(self._read_shard(tag), name=f"read-{tag}")

    # ----------------------------------------------------------------------------------- reading
    async def _read_shard(self, tag: str) -> None:
        """Read one shard's streams: first this consumer's own pending entries, then new ones. While a backlog is
        read, the next read is in flight while a batch is processed (Redis prepares it on another core); at stop,
        what it returns is processed too."""
        backoff = 0.1
        pending_first = True
        # pending phase: read past what was already handed over (a worker may hold it unacked in a buffer)
        pending_cursor: dict[str, str | bytes] = {}
        # XREADGROUP COUNT (per stream), steered so that a call returns about batch_size entries in total
        count = max(1, self.batch_size // min(len(self._streams[tag]) or 1, MAX_KEYS_PER_READ))
        ahead: Optional[asyncio.Future] = None

        async def read(chunk: list[str], block: Optional[int]) -> list:
            ids = {s: pending_cursor.get(s, "0") for s in chunk} if pending_first else dict.fromkeys(chunk, ">")
            return await (self._reader or self.redis).xreadgroup(self.group, self.consumer, ids, count=count, block=block)

        try:
            while not self._stopping.is_set():
                streams = self._streams[tag]
                chunks = [streams[i : i + MAX_KEYS_PER_READ] for i in range(0, len(streams), MAX_KEYS_PER_READ)]
                try:
                    got_any = False
                    for chunk in chunks:
                        in_flight, ahead = ahead, None
                        block = None if pending_first or len(chunks) > 1 else self.block_ms
                        reply = await (in_flight or read(chunk, block))
                        if pending_first:
                            for stream, items in _by_stream(reply):
                                if items:
                                    got_any = True
                                    pending_cursor[stream.decode()] = items[-1][0]
                        entries, limited = _entries(reply, count)
                        count = next_count(count, len(entries), limited, self.batch_size)
                        backlog = len(entries) * 2 >= self.batch_size  # live traffic: no read ahead, answer first
                        if backlog and not pending_first and len(chunks) == 1 and not self._stopping.is_set():
                            ahead = asyncio.ensure_future(read(chunk, self.block_ms))
                        if entries:
                            got_any = True
                            await self._process(entries, redelivered=pending_first)
                    if pending_first and not got_any:
                        pending_first = False
                    elif not got_any and len(chunks) > 1:
                        await asyncio.sleep(self.block_ms / 1000)
                    backoff = 0.1
                except (RedisError, OSError) as exc:
                    self._note_error(f"read {tag}: {exc}")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            if ahead is not None:  # stopping: the read in flight returns within block_ms
                in_flight, ahead = ahead, None
                entries, _ = _entries(await in_flight, count)
                if entries:
                    await self._process(entries)
        finally:
            if ahead is not None:
                ahead.cancel()

    async def check_trimmed(self) -> None:
        """Detect entries MAXLEN removed before this group read them (a consumer far behind): count them,
        log them and leave a gap marker in the dead-letter stream, instead of losing them silently.

        A group's loss on a stream is known exactly when it has read everything (Redis keeps counting the
        never-delivered entries in ``lag``) or when its position lies before the stream's first entry
        (``entries-added - entries-read - length``); in between, trimming cannot have passed it.
        """
        streams = [stream for members in self._streams.values() for stream in members]
        for start in range(0, len(streams), MAX_KEYS_PER_READ):
            chunk = streams[start : start + MAX_KEYS_PER_READ]
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream in chunk:
                    pipe.xinfo_stream(stream)
                    pipe.xinfo_groups(stream)
                replies = await pipe.execute(raise_on_error=False)
            for i, stream in enumerate(chunk):
                info, groups = replies[2 * i], replies[2 * i + 1]
                if isinstance(info, Exception) or isinstance(groups, Exception):
                    continue
                lost = _trimmed_before_read(info, next((g for g in groups if _text(g["name"]) == self.group), None))
                if lost:
                    await self._report_trimmed(stream, lost)

    async def _report_trimmed(self, stream: str, lost_total: int) -> None:
        new = await self.redis.eval(_RECORD_TRIMMED, 1, self.keys.trimmed(self.group), stream, lost_total)
        if not new:
            return
        self.stats.trimmed += int(new)
        reason = f"trimmed: {new} entries were removed by MAXLEN before group {self.group} read them (a gap)"
        log.error("%s: %s", stream, reason)
        await self.redis.xadd(
            self.keys.deadletter,
            {"stream": stream, "id": b"", "group": self.group, "consumer": self.consumer, "reason": reason,
             "payload": b"", "lost": int(new), "ts_ms": int(time.time() * 1000)},
            maxlen=100_000, approximate=True,
        )

    async def reclaim(self) -> None:
        """Take over entries other consumers left pending longer than ``claim_idle_ms``."""
        for streams in list(self._streams.values()):
            for stream in streams:
                cursor = "0-0"
                while True:
                    reply = await self.redis.xautoclaim(
                        stream, self.group, self.consumer, self.claim_idle_ms, start_id=cursor, count=self.batch_size
                    )
                    cursor, claimed = reply[0], reply[1]
                    entries = [(stream, entry_id, data) for entry_id, data in claimed if data]
                    if entries:
                        self.stats.reclaimed += len(entries)
                        log.info("reclaimed %d pending entries of %s", len(entries), stream)
                        await self._process(entries, redelivered=True)
                    if cursor in (b"0-0", "0-0") or not claimed:
                        break

    # ----------------------------------------------------------------------------------- processing
    async def _process(self, raw: list[tuple[str, bytes, Any]], *, redelivered: bool = False) -> None:
        entries: list[StreamEntry] = []
        poison: list[tuple[str, bytes, bytes, str]] = []
        for stream, entry_id, data in raw:
            payload = _payload(data)
            if payload is None:
                reason = f"no {PAYLOAD_FIELD.decode()!r} field (fields: {_field_names(data)})"
                poison.append((stream, entry_id, b"", reason))
            else:
                entries.append(StreamEntry(stream, entry_id, None, payload, redelivered))
        if not self.worker.decodes_batches:
            entries = self._decode(entries, poison)
        self.stats.read += len(raw)
        self.stats.batches += 1
        async with self._lock:
            if poison:
                await self._dead_letter(poison)
            if entries:
                await self._ack(await self._handle(entries))

    @staticmethod
    def _decode(entries: list[StreamEntry], poison: list[tuple[str, bytes, bytes, str]]) -> list[StreamEntry]:
        """The entries whose fields decode; the others are added to ``poison``."""
        decoded: list[StreamEntry] = []
        for entry in entries:
            try:
                entry.fields
            except CodecError as exc:
                poison.append((entry.stream, entry.id, entry.payload, f"undecodable: {exc}"))
            else:
                decoded.append(entry)
        return decoded

    async def _handle(self, entries: list[StreamEntry]) -> list[StreamEntry]:
        """The worker's handle() of a batch. Entries it reports undecodable are dead-lettered and the rest handed
        over again; a batch that fails otherwise is retried entry by entry, dead-lettering those that still fail."""
        try:
            return list(await self.worker.handle(entries))
        except UndecodableEntries as exc:
            rest = await self._dead_letter_undecodable(entries, exc)
            if len(rest) < len(entries):
                return await self._handle(rest) if rest else []
            failure: Exception = exc
        except Exception as exc:  # a worker bug or poison inside the batch: isolate it
            failure = exc
        self._note_error(f"{self.group} batch failed: {failure!r}")
        durable: list[StreamEntry] = []
        for entry in entries:
            try:
                durable.extend(await self.worker.handle([entry]))
            except UndecodableEntries as exc:
                if await self._dead_letter_undecodable([entry], exc):
                    await self._dead_letter([(entry.stream, entry.id, entry.payload, f"processing failed: {exc!r}")])
            except Exception as exc:
                await self._dead_letter([(entry.stream, entry.id, entry.payload, f"processing failed: {exc!r}")])
        return durable

    async def _dead_letter_undecodable(self, entries: list[StreamEntry], exc: UndecodableEntries) -> list[StreamEntry]:
        """Dead-letter the entries of ``entries`` that ``exc`` names; return the others."""
        reasons = {id(entry): reason for entry, reason in exc.refused}
        refused = [(e.stream, e.id, e.payload, f"undecodable: {reasons[id(e)]}") for e in entries if id(e) in reasons]
        if refused:
            await self._dead_letter(refused)
        return [entry for entry in entries if id(entry) not in reasons]

    async def _flush(self, *, final: bool = False) -> None:
        async with self._lock:
            try:
                await self._ack(list(await (self.worker.drain() if final else self.worker.flush())))
            except RedisError:
                raise
            except Exception as exc:
                self._note_error(f"{self.group} flush failed: {exc!r}")

    async def _ack(self, entries: list[StreamEntry]) -> None:
        if not entries:
            return
        by_stream: dict[str, list[bytes]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                if len(ids) >= JOINED_ACK_MIN_IDS:
                    pipe.eval(_ACK_JOINED, 1, stream, self.group, b" ".join(ids))
                else:  # a few ids (live traffic): a plain XACK costs Redis less than a script call
                    pipe.xack(stream, self.group, *ids)
            await pipe.execute()
        self.stats.acked += len(entries)
        self.worker.acked(entries)

    async def _dead_letter(self, items: list[tuple[str, bytes, bytes, str]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, entry_id, payload, reason in items:
                log.warning("dead letter %s %s: %s", stream, entry_id.decode(), reason)
                pipe.xadd(
                    self.keys.deadletter,
                    {
                        "stream": stream,
                        "id": entry_id,
                        "group": self.group,
                        "consumer": self.consumer,
                        "reason": reason,
                        "payload": payload,
                        "ts_ms": int(time.time() * 1000),
                    },
                    maxlen=100_000,
                    approximate=True,
                )
                pipe.xack(stream, self.group, entry_id)
            await pipe.execute()
        self.stats.dead_letters += len(items)

    def _note_error(self, message: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = message
        log.error("%s", message)


async def serve(
    worker: Worker,
    redis_url: str,
    *,
    shards: Optional[Iterable[str]] = None,
    metrics_port: int = 0,
    metrics_host: str = "127.0.0.1",
    **runner_options: Any,
) -> None:
    """Run ``worker`` over Redis at ``redis_url`` until SIGTERM/SIGINT, then finish cleanly (the CLIs' main loop),
    serving /metrics, /healthz and /readyz on ``metrics_port`` (0 = off).

    Raises OSError with one clear line when Redis is unreachable at start-up.
    """
    from common.health import readiness, redis_ready, serve_metrics
    from common.metrics import ConsumerLagMetrics, RunnerMetrics

    stop = asyncio.Event()  # signals are handled from the start: a SIGTERM during start-up still exits cleanly
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = async_client(redis_url)
    server = None
    try:
        await ensure_reachable(client, redis_url)
        runner = ConsumerRunner(client, worker, shards=shards, **runner_options)
        sources = [RunnerMetrics(runner), ConsumerLagMetrics(client, runner.group, keys=runner.keys,
                                                             shards=runner.shard_filter), *worker.metric_sources()]
        server = await serve_metrics(metrics_port, host=metrics_host, sources=sources, ready=readiness(redis_ready(client)))
        tune_gc()
        log.info("%s worker %s running (shards: %s)", worker.group, runner.consumer, ", ".join(shards or ()) or "all")
        await runner.run(stop)
    finally:
        if server is not None:
            await server.stop()
        await client.aclose()
