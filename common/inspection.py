"""Reads the pipeline's state out of Redis: producer heartbeats, shard streams, consumer groups (pending,
lag), latest-book ages, dead letters and alerts. It is the data behind ``ccxt-collector status`` and the
consumer-lag metrics.

Every per-stream query is pipelined in chunks of :data:`PIPELINE_CHUNK` commands, so thousands of
streams cost a handful of round trips, never one per stream.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from common.codec import CodecError, decode_fields
from common.logs import redact
from common.streams import StreamKeys

PIPELINE_CHUNK = 1000
#: a heartbeat older than this (seconds) marks its producer "late" (the default heartbeat is 1 s)
LATE_AFTER = 5.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _items(reply: Any) -> Any:
    """A pipelined reply that is a collection, or an empty one if the command failed (the key vanished)."""
    return () if isinstance(reply, Exception) else reply


async def pipelined(redis: aioredis.Redis, calls: Sequence[Callable[[Pipeline], Any]]) -> list[Any]:
    """Run ``calls`` (each queues one command on a pipeline) in chunked pipelines; replies in order.
    A command that fails (a key that vanished) yields its exception instead of aborting the rest."""
    replies: list[Any] = []
    for start in range(0, len(calls), PIPELINE_CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for call in calls[start : start + PIPELINE_CHUNK]:
                call(pipe)
            replies.extend(await pipe.execute(raise_on_error=False))
    return replies


# ------------------------------------------------------------------------------------------------ data
@dataclass
class ProducerView:
    """One producer's heartbeat hash (``ccxt:{<shard>}:status``), parsed."""

    shard: str
    state: str  # "up" | "late" (heartbeat older than LATE_AFTER) | "stopped" (shut down cleanly)
    age_s: Optional[float]
    exchange: str = ""
    host: str = ""
    pid: int = 0
    symbols: int = 0
    streaming: int = 0
    failed: int = 0
    updates: int = 0
    updates_per_s: float = 0.0
    reconnects: int = 0
    resyncs: int = 0
    published: int = 0
    buffered: int = 0
    dropped: int = 0
    redis_errors: int = 0
    last_error: str = ""

    @classmethod
    def from_hash(cls, shard: str, raw: dict[bytes, bytes], now: float) -> "ProducerView":
        fields = {_text(k): _text(v) for k, v in raw.items()}
        updated_at = _parse(fields.get("updated_at"), float)
        age = None if updated_at is None else round(max(0.0, now - updated_at), 3)
        if fields.get("alive") == "0":
            state = "stopped"
        else:
            state = "up" if age is not None and age <= LATE_AFTER else "late"
        view = cls(shard=shard, state=state, age_s=age, last_error=redact(fields.get("last_error", "")))
        for name in _HEARTBEAT_FIELDS:
            value = _parse(fields.get(name), type(getattr(view, name)))
            if value is not None:
                setattr(view, name, value)
        return view


#: heartbeat fields copied as they are (converted to the type of the field's default)
_HEARTBEAT_FIELDS = ("exchange", "host", "pid", "symbols", "streaming", "failed", "updates", "updates_per_s",
                     "reconnects", "resyncs", "published", "buffered", "dropped", "redis_errors")


def _parse(text: Optional[str], kind: type) -> Any:
    """A heartbeat field as ``kind`` (str, int or float); None if absent or not a number."""
    if text is None or kind is str:
        return text
    try:
        return kind(float(text))
    except ValueError:
        return None


@dataclass
class GroupStats:
    """One consumer group over a set of streams (summed XINFO GROUPS entries)."""

    group: str
    streams: int = 0
    consumers: set[str] = field(default_factory=set)
    pending: int = 0
    lag: int = 0
    lag_unknown: int = 0  # streams where Redis cannot tell the lag (entries deleted mid-stream)

    def add(self, info: dict[str, Any]) -> None:
        self.streams += 1
        self.pending += int(info.get("pending") or 0)
        if info.get("lag") is None:
            self.lag_unknown += 1
        else:
            self.lag += int(info["lag"])

    def merge(self, other: "GroupStats") -> None:
        self.streams += other.streams
        self.consumers |= other.consumers
        self.pending += other.pending
        self.lag += other.lag
        self.lag_unknown += other.lag_unknown

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "streams": self.streams, "consumers": sorted(self.consumers),
                "pending": self.pending, "lag": self.lag, "lag_unknown": self.lag_unknown}


@dataclass
class ShardView:
    """A shard's book streams: how many, how long, how much written, and each group's progress on them."""

    shard: str
    streams: int = 0
    missing: int = 0  # listed in the shard's stream set but gone from Redis
    length: int = 0
    entries_added: int = 0  # ever written (XINFO STREAM entries-added): the write-rate counter
    last_write_age_s: Optional[float] = None
    write_rate: Optional[float] = None  # entries/s between two samples (``fill_write_rates``)
    groups: dict[str, GroupStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "groups"}
        out["groups"] = [g.to_dict() for g in self.groups.values()]
        return out


@dataclass
class BookAges:
    """Ages of one exchange's latest-book cache entries (now - receive time)."""

    exchange: str
    books: int = 0
    median_age_s: Optional[float] = None
    max_age_s: Optional[float] = None
    stale: int = 0
    undecodable: int = 0


@dataclass
class PipelineState:
    """Everything ``status`` shows, taken at ``taken_at`` (epoch seconds)."""

    taken_at: float
    producers: list[ProducerView]
    shards: list[ShardView]
    groups: list[GroupStats]
    books: list[BookAges]
    dead_letters: int
    alerts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "taken_at": round(self.taken_at, 3),
            "producers": [vars(p) for p in self.producers],
            "shards": [s.to_dict() for s in self.shards],
            "groups": [g.to_dict() for g in self.groups],
            "books": [vars(b) for b in self.books],
            "dead_letters": self.dead_letters,
            "alerts": self.alerts,
        }


# ------------------------------------------------------------------------------------------------ reading
async def shard_streams(
    redis: aioredis.Redis, keys: StreamKeys = StreamKeys(), shards: Optional[Iterable[str]] = None
) -> dict[str, list[str]]:
    """Shard tag -> its book stream keys (from ``ccxt:shards`` and each ``ccxt:{<tag>}:streams``)."""
    tags = sorted(_text(t) for t in await redis.smembers(keys.shards))
    if shards is not None:
        wanted = set(shards)
        tags = [t for t in tags if t in wanted]
    members = await pipelined(redis, [lambda p, t=t: p.smembers(keys.shard_streams(t)) for t in tags])
    return {tag: sorted(_text(m) for m in found) for tag, found in zip(tags, members)}


async def group_lag_by_shard(
    redis: aioredis.Redis, group: str, *, keys: StreamKeys = StreamKeys(), shards: Optional[Iterable[str]] = None
) -> dict[str, GroupStats]:
    """Shard tag -> pending and lag of consumer ``group`` over the shard's streams."""
    by_shard: dict[str, GroupStats] = {}
    streams = await shard_streams(redis, keys, shards)
    flat = [(tag, stream) for tag, members in streams.items() for stream in members]
    replies = await pipelined(redis, [lambda p, s=stream: p.xinfo_groups(s) for _, stream in flat])
    for (tag, _), infos in zip(flat, replies):
        for info in _items(infos):
            if _text(info["name"]) == group:
                by_shard.setdefault(tag, GroupStats(group)).add(info)
    return by_shard


async def read_pipeline_state(
    redis: aioredis.Redis, *, keys: StreamKeys = StreamKeys(), stale_after: float = 10.0
) -> PipelineState:
    """Read everything ``status`` shows in a constant number of (chunked) pipelined round trips."""
    now = time.time()
    status_keys, latest_keys = await _find_hashes(redis, keys)
    streams = await shard_streams(redis, keys)
    producers = await _read_producers(redis, status_keys, now)
    shards = await _read_shards(redis, streams, now)
    books = await _read_books(redis, latest_keys, now, stale_after)
    dead_letters, alerts = await pipelined(redis, [lambda p: p.xlen(keys.deadletter), lambda p: p.xlen(keys.alerts)])
    groups: dict[str, GroupStats] = {}
    for shard in shards:
        for name, stats in shard.groups.items():
            groups.setdefault(name, GroupStats(name)).merge(stats)
    return PipelineState(now, producers, shards, [groups[g] for g in sorted(groups)], books, dead_letters, alerts)


def fill_write_rates(current: PipelineState, previous: PipelineState) -> None:
    """Set each shard's ``write_rate`` (entries/s) from the ``entries_added`` growth since ``previous``."""
    elapsed = current.taken_at - previous.taken_at
    before = {s.shard: s.entries_added for s in previous.shards}
    for shard in current.shards:
        if elapsed > 0 and shard.shard in before:
            shard.write_rate = round(max(0, shard.entries_added - before[shard.shard]) / elapsed, 1)


async def _find_hashes(redis: aioredis.Redis, keys: StreamKeys) -> tuple[dict[str, str], dict[str, str]]:
    """One SCAN over the prefix: (status key -> shard tag, latest-book key -> exchange)."""
    status_keys: dict[str, str] = {}
    latest_keys: dict[str, str] = {}
    status_head, status_tail = keys.status("\0").split("\0")
    latest_head = keys.latest("")
    async for raw in redis.scan_iter(match=f"{keys.prefix}:*", count=1000, _type="HASH"):
        key = _text(raw)
        if key.startswith(status_head) and key.endswith(status_tail):
            tag = key[len(status_head) : -len(status_tail)]
            if keys.status(tag) == key:
                status_keys[key] = tag
        elif key.startswith(latest_head):
            latest_keys[key] = key[len(latest_head) :]
    return status_keys, latest_keys


async def _read_producers(redis: aioredis.Redis, status_keys: dict[str, str], now: float) -> list[ProducerView]:
    names = sorted(status_keys)
    hashes = await pipelined(redis, [lambda p, k=k: p.hgetall(k) for k in names])
    return [
        ProducerView.from_hash(status_keys[key], raw, now)
        for key, raw in zip(names, hashes)
        if _items(raw)
    ]


async def _read_shards(redis: aioredis.Redis, streams: dict[str, list[str]], now: float) -> list[ShardView]:
    flat = [(tag, stream) for tag, members in streams.items() for stream in members]
    replies = await pipelined(
        redis, [call for _, s in flat for call in (lambda p, s=s: p.xinfo_stream(s), lambda p, s=s: p.xinfo_groups(s))]
    )
    views = {tag: ShardView(tag) for tag in streams}
    # Consumer names: a runner reads every stream of its shards, so the stream where a group has the most
    # consumers names them all; one XINFO CONSUMERS per (shard, group) instead of one per stream.
    busiest: dict[tuple[str, str], tuple[int, str]] = {}
    for index, (tag, stream) in enumerate(flat):
        info, groups = replies[2 * index], replies[2 * index + 1]
        view = views[tag]
        if isinstance(info, Exception):
            view.missing += 1
            continue
        view.streams += 1
        view.length += info["length"]
        view.entries_added += info.get("entries-added") or 0
        last_ms = int(_text(info["last-generated-id"]).split("-")[0])
        if last_ms:
            age = round(max(0.0, now - last_ms / 1000), 3)
            view.last_write_age_s = age if view.last_write_age_s is None else min(view.last_write_age_s, age)
        for group_info in _items(groups):
            name = _text(group_info["name"])
            view.groups.setdefault(name, GroupStats(name)).add(group_info)
            consumers = int(group_info.get("consumers") or 0)
            if consumers > busiest.get((tag, name), (0, ""))[0]:
                busiest[(tag, name)] = (consumers, stream)
    queries = sorted(busiest.items())
    replies = await pipelined(redis, [lambda p, s=s, g=g: p.xinfo_consumers(s, g) for (_, g), (_, s) in queries])
    for ((tag, name), _), infos in zip(queries, replies):
        views[tag].groups[name].consumers.update(_text(c["name"]) for c in _items(infos))
    return [views[tag] for tag in sorted(views)]


async def _read_books(
    redis: aioredis.Redis, latest_keys: dict[str, str], now: float, stale_after: float
) -> list[BookAges]:
    names = sorted(latest_keys, key=latest_keys.get)
    hashes = await pipelined(redis, [lambda p, k=k: p.hvals(k) for k in names])
    result = []
    for key, payloads in zip(names, hashes):
        ages = BookAges(latest_keys[key])
        values: list[float] = []
        for payload in _items(payloads):
            try:
                fields = decode_fields(payload)
            except CodecError:
                ages.undecodable += 1
                continue
            received_s = fields["recv_ns"] / 1e9 if fields["recv_ns"] else fields["ts"] / 1e3
            values.append(max(0.0, now - received_s))
        if values:
            ages.books = len(values)
            ages.median_age_s = round(statistics.median(values), 3)
            ages.max_age_s = round(max(values), 3)
            ages.stale = sum(1 for age in values if age > stale_after)
        result.append(ages)
    return result
