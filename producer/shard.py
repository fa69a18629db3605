"""The producer process: one shard (an exchange plus a symbol selection) streamed into Redis Streams.

It streams books with :class:`~producer.collector.CCXTProCollector`, publishes every snapshot through
:class:`~producer.publisher.RedisPublisher`, registers market metadata for consumers, refreshes the
market list periodically (subscribes new instruments that match the selection, retires expired ones)
and keeps a heartbeat/status hash alive in Redis for ``status`` tools. ``run()`` returns after a stop
request with everything buffered flushed.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import socket
import time
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import redis.asyncio as aioredis

from common.config import ConfigError, StreamConfig, check_exchange_id
from common.streams import StreamKeys, shard_tag
from common.redis_client import async_client, check_url, redact
from common.runtime import tune_gc
from producer.collector import CCXTProCollector
from producer.lease import SymbolLeases
from producer.publisher import RedisPublisher
from producer.spool import DiskSpool

log = logging.getLogger(__name__)


@dataclass
class ShardConfig:
    """Everything one producer process needs; loadable from YAML (``produce --config shard.yaml``)."""

    exchange: str = "deribit"
    shard: Optional[str] = None
    futures: list[str] = field(default_factory=list)  # base currencies: all their futures + perpetuals
    options: list[str] = field(default_factory=list)  # base currencies: their option chains
    symbols: list[str] = field(default_factory=list)  # explicit symbols (unified or native ids)
    expiry: Optional[str | list[str]] = None  # options expiry filter(s): DEC26, 25DEC26, 2026-12-25
    option_type: Optional[str] = None  # C / P / call / put
    min_strike: Optional[float] = None  # options strike range, inclusive
    max_strike: Optional[float] = None
    limit: int = 20
    exchange_config: dict[str, Any] = field(default_factory=dict, repr=False)
    api_key: Optional[str] = field(default=None, repr=False)  # env:NAME or file:PATH (see StreamConfig)
    api_secret: Optional[str] = field(default=None, repr=False)
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    key_prefix: str = "ccxt"
    maxlen: int = 100_000  # entries kept per symbol stream (approximate MAXLEN)
    market_refresh: float = 300.0  # seconds between market reloads (0 disables)
    heartbeat: float = 1.0  # seconds between status updates
    lease_ttl: int = 15  # seconds a crashed producer's symbol leases outlive it
    spool_dir: Optional[str] = None  # on-disk journal while Redis is unreachable (None: memory only)
    spool_max_bytes: int = 1 << 30
    stall_timeout: float = 30.0
    reconnect_delay: float = 1.0
    max_reconnect_attempts: int = 10

    def __post_init__(self) -> None:
        check_exchange_id(self.exchange)
        for name in ("futures", "options", "symbols"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must be a list of strings, got {value!r}")
            setattr(self, name, [v.strip() for v in value])
        if isinstance(self.expiry, str):
            self.expiry = [e for e in self.expiry.split(",") if e.strip()]
        if self.expiry is not None and (not isinstance(self.expiry, list) or not all(isinstance(e, str) for e in self.expiry)):
            raise ConfigError(f"expiry must be a string or a list of strings, got {self.expiry!r}")
        if not (self.futures or self.options or self.symbols):
            raise ConfigError("nothing to stream: give --futures, --options and/or --symbols")
        for name in ("limit", "maxlen", "lease_ttl", "spool_max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("heartbeat", "stall_timeout", "reconnect_delay"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        check_url(self.redis_url)
        if not self.shard:
            self.shard = "-".join(sorted({c.lower() for c in self.futures + self.options})) or "main"

    @property
    def tag(self) -> str:
        return shard_tag(self.exchange, self.shard)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], **overrides: Any) -> "ShardConfig":
        """Build from a YAML/JSON mapping; ``overrides`` (CLI flags that were given) win."""
        known = {f.name for f in fields(cls)}
        unknown = [key for key in data if key.replace("-", "_") not in known]
        if unknown:
            hints = [
                f"{key!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(key, known, 1)) else "")
                for key in unknown
            ]
            raise ConfigError(f"unknown shard config key(s): {', '.join(hints)}")
        merged = {key.replace("-", "_"): value for key, value in data.items()}
        merged.update({k: v for k, v in overrides.items() if v not in (None, (), [], {})})
        return cls(**merged)

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            exchange_id=self.exchange,
            api_key=self.api_key,
            api_secret=self.api_secret,
            orderbook_limit=self.limit,
            exchange_config=self.exchange_config,
            store_snapshots=False,
            stall_timeout=self.stall_timeout,
            reconnect_delay=self.reconnect_delay,
            max_reconnect_attempts=self.max_reconnect_attempts,
        )


class ProducerProcess:
    """Runs one shard until stopped."""

    def __init__(self, config: ShardConfig, redis: Optional[aioredis.Redis] = None) -> None:
        self.config = config
        self.keys = StreamKeys(config.key_prefix)
        self.redis = redis or async_client(config.redis_url, socket_timeout=30)
        self.collector = CCXTProCollector(config.stream_config())
        # seq continues across restarts (it starts at the start time in µs), so (exchange, symbol, seq)
        # identifies a snapshot for good and consumers can dedupe replays
        self.collector.seq_origin = time.time_ns() // 1000
        spool = DiskSpool(config.spool_dir, config.spool_max_bytes) if config.spool_dir else None
        self.publisher = RedisPublisher(self.redis, config.tag, keys=self.keys, maxlen=config.maxlen, spool=spool)
        self.leases = SymbolLeases(self.redis, self.keys, config.exchange, config.tag, ttl=config.lease_ttl)
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self._last_rate = (time.monotonic(), 0)

    # ------------------------------------------------------------------------------------- lifecycle
    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Start streaming and publishing; on :meth:`stop`, unsubscribe, flush and return."""
        self.collector.add_listener(self.publisher.publish_packed, packed=True)
        publisher_task = asyncio.create_task(self.publisher.run(), name="publisher")
        await self.collector.start()
        try:
            await self.sync_subscriptions()
            tune_gc()  # start-up objects (markets, ccxt's tables) leave the collector's view; collect less often
            log.info("%s: streaming %d symbols into Redis at %s", self.config.tag, len(self.subscribed()),
                     redact(self.config.redis_url))
            tasks = [asyncio.create_task(self._heartbeat_loop(), name="heartbeat")]
            if self.config.market_refresh > 0:
                tasks.append(asyncio.create_task(self._refresh_loop(), name="market-refresh"))
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=10)
            if stuck:  # shutdown must not hang on a background task (e.g. a refresh caught mid-subscribe)
                log.warning("%s: %d background task(s) did not stop within 10 s: %s", self.config.tag, len(stuck),
                            ", ".join(t.get_name() for t in stuck))
        finally:
            await self.collector.stop()
            self.publisher.close()
            try:
                await asyncio.wait_for(publisher_task, timeout=60)
            except asyncio.TimeoutError:
                log.error("%s: %d snapshots could not be flushed to Redis", self.config.tag, self.publisher.buffered)
                publisher_task.cancel()
            await self._quietly(self.leases.release())
            await self._quietly(self._write_status(alive=False))
            log.info("%s: stopped; published %d snapshots", self.config.tag, self.publisher.stats.published)

    # ------------------------------------------------------------------------------------- selection
    def subscribed(self) -> set[str]:
        return set(self.collector.subscribed_symbols())

    def wanted(self) -> tuple[list[str], list[str]]:
        """(futures, options) the shard's selection names right now (after the latest market load)."""
        cfg, col = self.config, self.collector
        futures = [s for base in cfg.futures for s in col.get_available_futures(base_currency=base)]
        options = [
            s
            for base in cfg.options
            for expiry in (cfg.expiry or [None])
            for s in col.get_available_options(base_currency=base, option_type=cfg.option_type, expiry=expiry,
                                               min_strike=cfg.min_strike, max_strike=cfg.max_strike)
        ]
        for symbol in cfg.symbols:
            market = col.get_market(symbol)
            (options if market.type == "option" else futures).append(market.symbol)
        return sorted(set(futures)), sorted(set(options))

    async def sync_subscriptions(self) -> None:
        """Subscribe what the selection names and is not streamed yet; retire what it no longer names."""
        futures, options = self.wanted()
        current = self.subscribed()
        wanted = set(futures) | set(options)
        new_futures = [s for s in futures if s not in current]
        new_options = [s for s in options if s not in current]
        await self.leases.acquire(new_futures + new_options)
        await self.publisher.register_markets(self.collector.get_market(s) for s in sorted(wanted))
        if new_futures:
            await self.collector.subscribe_futures(new_futures)
        if new_options:
            await self.collector.subscribe_options(new_options)
        for symbol in sorted(current - wanted):
            log.info("%s: retiring %s (expired or delisted)", self.config.tag, symbol)
            await self.collector.unsubscribe(symbol)
            await self.leases.release([symbol])
        if new_futures or new_options:
            log.info("%s: subscribed %d new symbols", self.config.tag, len(new_futures) + len(new_options))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.market_refresh)
            try:
                await self.collector.refresh_markets()
                await self.sync_subscriptions()
            except Exception as exc:  # a failed refresh must never stop streaming
                log.warning("%s: market refresh failed: %r", self.config.tag, exc)

    # ------------------------------------------------------------------------------------- status
    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self._write_status(alive=True)
                await self.leases.renew()
            except Exception as exc:  # Redis down: the publisher reports it; keep streaming
                log.debug("heartbeat failed: %r", exc)
            await asyncio.sleep(self.config.heartbeat)

    async def ready(self) -> Optional[str]:
        """Readiness for /readyz: None once at least one symbol streams, else the reason."""
        states = [s.get("state") for s in self.collector.get_status().values()]
        if not states:
            return "no symbol subscribed yet"
        return None if "streaming" in states else f"none of {len(states)} symbols is streaming yet"

    def status(self) -> dict[str, Any]:
        """The producer's status as published in Redis (``ccxt:{<shard>}:status``)."""
        per_symbol = self.collector.get_status()
        updates = sum(s.get("updates", 0) for s in per_symbol.values())
        now = time.monotonic()
        then, previous = self._last_rate
        rate = (updates - previous) / (now - then) if now > then else 0.0
        self._last_rate = (now, updates)
        errors = [s["last_error"] for s in per_symbol.values() if s.get("last_error")]
        stats = self.publisher.stats
        return {
            "exchange": self.config.exchange,
            "shard": self.config.tag,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": round(self.started_at, 3),
            "updated_at": round(time.time(), 3),
            "symbols": len(per_symbol),
            "streaming": sum(1 for s in per_symbol.values() if s.get("state") == "streaming"),
            "failed": sum(1 for s in per_symbol.values() if s.get("state") == "failed"),
            "updates": updates,
            "updates_per_s": round(rate, 1),
            "reconnects": sum(s.get("reconnects", 0) for s in per_symbol.values()),
            "resyncs": sum(s.get("resyncs", 0) for s in per_symbol.values()),
            "published": stats.published,
            "buffered": self.publisher.buffered,
            "dropped": stats.dropped,
            "redis_errors": stats.errors,
            "last_error": (stats.last_error or (errors[-1] if errors else "")) or "",
        }

    @staticmethod
    async def _quietly(awaitable) -> None:
        """Best-effort shutdown step: Redis may be down, which must not hide the real outcome."""
        try:
            await asyncio.wait_for(awaitable, timeout=5)
        except Exception as exc:
            log.warning("shutdown step failed: %r", exc)

    async def _write_status(self, alive: bool) -> None:
        status = {key: str(value) for key, value in self.status().items()}
        status["alive"] = "1" if alive else "0"
        key = self.keys.status(self.config.tag)
        ttl = max(5, int(self.config.heartbeat * 5))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=status)
            pipe.expire(key, ttl)
            await pipe.execute()
