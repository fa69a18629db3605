"""End to end through real parts: emulator -> ccxt.pro -> producer -> real Redis -> archiver + cache.

Every snapshot the producer published is in the Parquet archive exactly once (per symbol, by seq); with
the emulator paused, the latest cached book and the last archived book of each symbol equal the
emulator's own book, level for level.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
import redis.asyncio as aioredis

from consumers.archiver import ParquetArchiver
from consumers.cache import AsyncLatestBooks, LatestBookCache
from consumers.reader import iter_snapshots, read_books
from consumers.runner import ConsumerRunner
from producer.shard import ProducerProcess, ShardConfig
from tests.waiting import wait_until

LIMIT = 10
pytestmark = pytest.mark.timeout(120)


def levels(book: dict | object, side: str) -> list[list[float]]:
    raw = book[side] if isinstance(book, dict) else getattr(book, side)
    return [[float(p), float(s)] for p, s in raw[:LIMIT]]


async def test_emulator_to_archive_and_cache_exactly_once(emulator, redis_url, tmp_path):
    options = [i for i in emulator.instruments("deribit") if i.startswith("BTC-") and i.endswith(("-C", "-P"))][:4]
    config = ShardConfig(exchange="deribit", shard="btc", futures=["BTC"], symbols=options, limit=LIMIT,
                         exchange_config=emulator.ccxt_config("deribit"), redis_url=redis_url, market_refresh=0,
                         heartbeat=0.2, reconnect_delay=0.2)
    producer = ProducerProcess(config)
    published: dict[str, list[int]] = defaultdict(list)
    producer.collector.add_listener(lambda snap: published[snap.symbol].append(snap.seq))
    archive_dir = tmp_path / "archive"
    archiver = ParquetArchiver(archive_dir, rows_per_file=400, max_file_age=0.5)
    runners = [
        ConsumerRunner(aioredis.from_url(redis_url), archiver, block_ms=100, discover_interval=0.2, flush_interval=0.2),
        ConsumerRunner(aioredis.from_url(redis_url), LatestBookCache(), block_ms=100, discover_interval=0.2),
    ]
    producing = asyncio.create_task(producer.run())
    consuming = [asyncio.create_task(r.run()) for r in runners]
    books = AsyncLatestBooks(redis_url)
    try:
        await wait_until(lambda: len(published) >= 6 and all(len(v) >= 10 for v in published.values()), 45,
                    "every symbol to publish 10 snapshots")
        symbols = sorted(published)
        assert {producer.collector.get_market(s).type for s in symbols} >= {"swap", "future", "option"}
        native = {s: producer.collector.get_market(s).id for s in symbols}

        emulator.pause()

        def collector_matches_server() -> bool:
            for symbol in symbols:
                snap = producer.collector.get_latest_orderbook(symbol)
                server = emulator.book("deribit", native[symbol], depth=LIMIT)
                if snap is None or levels(snap, "bids") != levels(server, "bids") or levels(snap, "asks") != levels(server, "asks"):
                    return False
            return True

        await wait_until(collector_matches_server, 20, "the collector's books to equal the paused emulator's")

        async def cache_is_latest() -> bool:
            for symbol in symbols:
                cached = await books.get("deribit", symbol)
                if cached is None or cached.seq != published[symbol][-1]:
                    return False
            return True

        await wait_until(cache_is_latest, 20, "the cache to hold every symbol's last published snapshot")
        for symbol in symbols:
            cached = await books.get("deribit", symbol)
            server = emulator.book("deribit", native[symbol], depth=LIMIT)
            assert levels(cached, "bids") == levels(server, "bids") and levels(cached, "asks") == levels(server, "asks")

        producer.stop()
        await asyncio.wait_for(producing, 30)
        total = sum(len(v) for v in published.values())
        await wait_until(lambda: archiver_rows(archive_dir) >= total, 30, f"{total} rows in the archive")
    finally:
        producer.stop()
        for runner in runners:
            runner.stop()
        await asyncio.gather(*consuming, return_exceptions=True)
        if not producing.done():
            producing.cancel()
        await books.close()

    frame = read_books(archive_dir, exchange="deribit")
    for symbol in symbols:
        archived = frame.loc[frame["symbol"] == symbol, "seq"].tolist()
        assert archived == published[symbol], f"{symbol}: archive differs from what was published"
        last = list(iter_snapshots(archive_dir, exchange="deribit", symbol=symbol))[-1]
        server = emulator.book("deribit", native[symbol], depth=LIMIT)
        assert levels(last, "bids") == levels(server, "bids") and levels(last, "asks") == levels(server, "asks")
    assert not list(archive_dir.rglob(".tmp-*")), "temporary files left visible"


def archiver_rows(archive_dir) -> int:
    if not archive_dir.exists() or not list(archive_dir.rglob("*.parquet")):
        return 0
    return len(read_books(archive_dir, columns=["seq"]))
