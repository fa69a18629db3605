"""Fault injection end to end: the archive holds every snapshot the producer emitted, exactly once."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from common.redis_client import async_client
from consumers.archiver import ParquetArchiver
from consumers.reader import read_books
from consumers.runner import ConsumerRunner
from producer.shard import ProducerProcess, ShardConfig
from tests.redis_server import RedisServer
from tests.test_pipeline_e2e import archiver_rows
from tests.waiting import wait_until

OUTAGE_SECONDS = 8


@pytest.mark.timeout(150)
async def test_redis_killed_and_restarted_loses_and_duplicates_nothing(emulator, tmp_path):
    redis_server = RedisServer(tmp_path / "redis", appendonly=True).start()
    config = ShardConfig(exchange="deribit", shard="btc", futures=["BTC"], limit=5, redis_url=redis_server.url,
                         exchange_config=emulator.ccxt_config("deribit"), market_refresh=0, heartbeat=0.2,
                         spool_dir=str(tmp_path / "spool"))
    producer = ProducerProcess(config)
    published: dict[str, list[int]] = defaultdict(list)
    producer.collector.add_listener(lambda snap: published[snap.symbol].append(snap.seq))
    archive_dir = tmp_path / "archive"
    runner = ConsumerRunner(async_client(redis_server.url, socket_timeout=2), ParquetArchiver(archive_dir, max_file_age=0.5),
                            block_ms=100, discover_interval=0.2, flush_interval=0.2, claim_idle_ms=2000)
    producing = asyncio.create_task(producer.run())
    consuming = asyncio.create_task(runner.run())
    try:
        await wait_until(lambda: len(published) >= 4 and all(len(v) >= 5 for v in published.values()), 45, "streaming")
        redis_server.kill()
        before = sum(len(v) for v in published.values())
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself: the producer must keep streaming through it
        during = sum(len(v) for v in published.values()) - before
        assert during > 0, "the producer stopped streaming while Redis was down"
        await wait_until(lambda: producer.publisher.stats.spilled > 0, 10, "the spool to take the outage")
        redis_server.start()
        await wait_until(lambda: producer.publisher.buffered == 0, 60, "the spool to drain into the restarted Redis")
        emulator.pause()
        producer.stop()
        await asyncio.wait_for(producing, 30)
        total = sum(len(v) for v in published.values())
        await wait_until(lambda: archiver_rows(archive_dir) >= total, 60, f"{total} archived rows")
    finally:
        producer.stop()
        runner.stop()
        await asyncio.gather(producing, consuming, return_exceptions=True)
        redis_server.stop()
    frame = read_books(archive_dir)
    for symbol, seqs in published.items():
        archived = frame.loc[frame["symbol"] == symbol, "seq"].tolist()
        assert archived == seqs, f"{symbol}: {len(seqs)} published, {len(archived)} archived"
    assert producer.publisher.stats.dropped == 0
