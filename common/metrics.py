"""Prometheus metrics of every process, read from the objects' own stats at scrape time.

Nothing here sits in a hot path: each *source* is a Prometheus collector that reads a live object
(collector status, ``PublisherStats``, ``RunnerStats``, ``ArchiverStats``) when ``/metrics`` is scraped.
Sources that need Redis (consumer lag) also have an async :meth:`refresh`, awaited before each scrape.
Wiring a process is one line (see :func:`common.health.serve_metrics`)::

    await serve_metrics(port, sources=[CollectorMetrics(collector), PublisherMetrics(publisher)])

All metric names start with ``ccxt_collector_``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Iterable, Optional, Protocol, runtime_checkable

import redis.asyncio as aioredis
from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from common.inspection import GroupStats, group_lag_by_shard
from common.streams import StreamKeys

if TYPE_CHECKING:  # only for type hints: common must not import the producer or consumer packages
    from consumers.archiver import ParquetArchiver
    from consumers.runner import ConsumerRunner
    from producer.collector import CCXTProCollector
    from producer.publisher import RedisPublisher

PREFIX = "ccxt_collector"


@runtime_checkable
class RefreshingSource(Protocol):
    """A source whose values come from I/O: ``refresh()`` is awaited before each scrape."""

    async def refresh(self) -> None: ...


def counter(name: str, documentation: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=list(labels))


def gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=list(labels))


class MonotonicSums:
    """Per-label sums of per-item counters that never go down when an item disappears or restarts at 0
    (an expired option is unsubscribed; its counts stay in the total, so Prometheus sees no reset)."""

    def __init__(self) -> None:
        self._retired: dict[tuple, float] = defaultdict(float)
        self._last: dict[tuple, dict[str, float]] = defaultdict(dict)

    def update(self, current: dict[tuple, dict[str, float]]) -> dict[tuple, float]:
        """``current``: labels -> {item: counter value}. Returns labels -> monotonic total."""
        for labels in set(self._last) | set(current):
            now, before = current.get(labels, {}), self._last[labels]
            for item, value in before.items():
                if now.get(item, 0) < value:  # gone or restarted: keep what it had counted
                    self._retired[labels] += value
            self._last[labels] = dict(now)
        return {labels: self._retired[labels] + sum(self._last[labels].values()) for labels in self._last}


class CollectorMetrics(Collector):
    """Streaming health of one exchange collector, from its per-symbol ``get_status()``."""

    #: per-symbol status field -> (metric name, help, labels)
    COUNTERS = {
        "updates": ("updates_total", "Order-book snapshots received from the exchange", ("exchange", "market_type")),
        "reconnects": ("reconnects_total", "Symbol subscriptions re-established after an error", ("exchange",)),
        "resyncs": ("resyncs_total", "Sequence gaps detected, each repaired by a fresh snapshot", ("exchange",)),
    }

    def __init__(self, collector: "CCXTProCollector") -> None:
        self.collector = collector
        self._sums = {name: MonotonicSums() for name in self.COUNTERS}

    def collect(self) -> Iterable[Metric]:
        exchange = self.collector.exchange_id
        per_symbol = self.collector.get_status()
        current: dict[str, dict[tuple, dict[str, float]]] = {name: defaultdict(dict) for name in self.COUNTERS}
        states: dict[str, int] = defaultdict(int)
        for symbol, status in per_symbol.items():
            for name, (_, _, labels) in self.COUNTERS.items():
                label_values = {"exchange": exchange, "market_type": status.get("market_type") or "unknown"}
                current[name][tuple(label_values[label] for label in labels)][symbol] = status.get(name, 0)
            states[status.get("state") or "unknown"] += 1
        for name, (metric_name, documentation, labels) in self.COUNTERS.items():
            family = counter(metric_name, documentation, labels)
            for label_values, total in sorted(self._sums[name].update(current[name]).items()):
                family.add_metric(list(label_values), total)
            yield family
        symbols = gauge("symbols", "Subscribed symbols by streaming state", ("exchange", "state"))
        for state, count in sorted(states.items()):
            symbols.add_metric([exchange, state], count)
        yield symbols


#: batch sizes are bounded by the publisher's batch_size (default 1000)
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PublisherMetrics(Collector):
    """A producer's Redis publisher: published, buffered, spooled, dropped, errors and batch histograms.

    The histograms get one observation per written batch through the publisher's ``batch_listeners``.
    """

    def __init__(self, publisher: "RedisPublisher") -> None:
        self.publisher = publisher
        publisher.batch_listeners.append(self.observe_batch)
        self.batch_size = Histogram(
            f"{PREFIX}_publish_batch_size", "Entries per pipelined XADD batch", buckets=BATCH_SIZE_BUCKETS, registry=None
        )
        self.latency = Histogram(
            f"{PREFIX}_publish_latency_seconds", "Time to write one batch to Redis", buckets=LATENCY_BUCKETS, registry=None
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.latency.observe(seconds)

    def collect(self) -> Iterable[Metric]:
        stats = self.publisher.stats
        spool = self.publisher.spool
        values = [
            (counter("published_total", "Snapshots written to Redis Streams"), stats.published),
            (counter("publish_dropped_total", "Snapshots dropped because memory buffer and spool were full"), stats.dropped),
            (counter("publish_spilled_total", "Snapshots spilled to the on-disk spool while Redis failed"), stats.spilled),
            (counter("publish_replayed_total", "Snapshots re-sent after Redis lost acknowledged writes"), stats.replayed),
            (gauge("publish_buffered", "Snapshots not yet in Redis (memory and spool)"), self.publisher.buffered),
            (gauge("spool_bytes", "Bytes waiting in the on-disk spool"), spool.bytes if spool is not None else 0),
        ]
        for family, value in values:
            family.add_metric([], value)
            yield family
        errors = counter("redis_errors_total", "Failed Redis calls", ("role",))
        errors.add_metric(["publisher"], stats.errors)
        yield errors
        yield from self.batch_size.collect()
        yield from self.latency.collect()


class RunnerMetrics(Collector):
    """A consumer-group runner: entries read, acked, reclaimed, dead-lettered; errors; streams."""

    def __init__(self, runner: "ConsumerRunner") -> None:
        self.runner = runner

    def collect(self) -> Iterable[Metric]:
        stats, group = self.runner.stats, self.runner.group
        values = [
            (counter("consumer_entries_total", "Stream entries read by the group's consumer", ("group",)), stats.read),
            (counter("consumer_acked_total", "Entries acknowledged as durably processed", ("group",)), stats.acked),
            (counter("consumer_reclaimed_total", "Entries reclaimed from dead consumers", ("group",)), stats.reclaimed),
            (counter("dead_letters_total", "Entries moved to the dead-letter stream", ("group",)), stats.dead_letters),
            (counter("consumer_errors_total", "Failed batches, flushes and Redis calls", ("group",)), stats.errors),
            (gauge("consumer_streams", "Book streams the consumer reads", ("group",)), stats.streams),
        ]
        for family, value in values:
            family.add_metric([group], value)
            yield family


class ArchiverMetrics(Collector):
    """The Parquet archiver: rows, files and bytes written, rows buffered, write errors."""

    def __init__(self, archiver: "ParquetArchiver") -> None:
        self.archiver = archiver

    def collect(self) -> Iterable[Metric]:
        stats = self.archiver.stats
        values = [
            (counter("archive_rows_total", "Rows written to Parquet"), stats.rows_written),
            (counter("archive_files_total", "Parquet files committed"), stats.files_written),
            (counter("archive_bytes_total", "Bytes of Parquet committed"), stats.bytes_written),
            (counter("archive_write_errors_total", "Failed Parquet writes (rows kept and retried)"), stats.write_errors),
            (gauge("archive_rows_buffered", "Rows waiting in memory for the next file"), stats.rows_buffered),
        ]
        for family, value in values:
            family.add_metric([], value)
            yield family


class ConsumerLagMetrics(Collector):
    """Pending and lag of one consumer group per shard, read from Redis (XINFO GROUPS) before each scrape."""

    def __init__(
        self,
        redis: aioredis.Redis,
        group: str,
        *,
        keys: StreamKeys = StreamKeys(),
        shards: Optional[Iterable[str]] = None,
    ) -> None:
        self.redis = redis
        self.group = group
        self.keys = keys
        self.shards = set(shards) if shards else None
        self._by_shard: dict[str, GroupStats] = {}

    async def refresh(self) -> None:
        self._by_shard = {}  # a failed refresh exports nothing rather than stale numbers
        self._by_shard = await group_lag_by_shard(self.redis, self.group, keys=self.keys, shards=self.shards)

    def collect(self) -> Iterable[Metric]:
        lag = gauge("consumer_lag", "Entries not yet delivered to the group (XINFO GROUPS lag)", ("group", "shard"))
        pending = gauge("consumer_pending", "Entries delivered but not acknowledged", ("group", "shard"))
        for shard, stats in sorted(self._by_shard.items()):
            lag.add_metric([self.group, shard], stats.lag)
            pending.add_metric([self.group, shard], stats.pending)
        yield lag
        yield pending


class MergedSources(Collector):
    """All sources as one collector: families of the same name (two runners in one process) are merged,
    so the exposition never repeats a metric family."""

    def __init__(self, sources: Iterable[Collector]) -> None:
        self.sources = list(sources)

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for source in self.sources:
            for family in source.collect():
                if family.name in merged:
                    merged[family.name].samples.extend(family.samples)
                else:
                    merged[family.name] = family
        return list(merged.values())


def build_registry(sources: Iterable[Collector]) -> CollectorRegistry:
    """A fresh registry holding ``sources`` (one per process; nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedSources(sources))
    return registry
