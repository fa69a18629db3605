"""The pipeline on a real 3-master Redis Cluster: two shards' producers, the archiver and the cache.

The shards' streams land on different masters (hash tags), consumers read them unchanged, and the
archive holds every published snapshot exactly once while the cache holds every symbol's last one.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict

import pytest

from common.redis_client import async_client
from common.streams import StreamKeys
from consumers.archiver import ParquetArchiver
from consumers.cache import AsyncLatestBooks, LatestBookCache
from consumers.reader import read_books
from consumers.runner import ConsumerRunner
from emulator.redis_server import RedisClusterServer
from producer.shard import ProducerProcess, ShardConfig
from tests.test_pipeline_e2e import archiver_rows
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def cluster(tmp_path):
    server = RedisClusterServer(tmp_path / "cluster").start()
    yield server
    server.stop()


async def test_two_shards_on_a_cluster(cluster, emulator, tmp_path):
    keys = StreamKeys()
    producers = [
        ProducerProcess(ShardConfig(exchange="deribit", shard=currency.lower(), futures=[currency], limit=5,
                                    exchange_config=emulator.ccxt_config("deribit"), redis_url=cluster.url,
                                    market_refresh=0, heartbeat=0.2))
        for currency in ("BTC", "ETH")
    ]
    published: dict[str, list[int]] = defaultdict(list)
    for producer in producers:
        producer.collector.add_listener(lambda snap: published[snap.symbol].append(snap.seq))
    archive_dir = tmp_path / "archive"
    runners = [
        ConsumerRunner(async_client(cluster.url), ParquetArchiver(archive_dir, max_file_age=0.5), block_ms=100,
                       discover_interval=0.2, flush_interval=0.2),
        ConsumerRunner(async_client(cluster.url), LatestBookCache(), block_ms=100, discover_interval=0.2),
    ]
    producing = [asyncio.create_task(p.run()) for p in producers]
    consuming = [asyncio.create_task(r.run()) for r in runners]
    books = AsyncLatestBooks(cluster.url)
    try:
        await wait_until(lambda: len(published) >= 6 and all(len(v) >= 5 for v in published.values()), 45,
                    "both shards to publish")
        nodes = {tag: cluster.node_of(keys.book_stream(tag, "any")) for tag in ("deribit.btc", "deribit.eth")}
        assert nodes["deribit.btc"] != nodes["deribit.eth"], f"both shards on one master: {nodes}"
        emulator.pause()
        for producer in producers:
            producer.stop()
        await asyncio.wait_for(asyncio.gather(*producing), 30)
        total = sum(len(v) for v in published.values())
        await wait_until(lambda: archiver_rows(archive_dir) >= total, 30, f"{total} archived rows")

        async def cache_complete() -> bool:
            cached = await books.all("deribit")
            return all(cached.get(("deribit", s)) is not None and cached[("deribit", s)].seq == seqs[-1]
                       for s, seqs in published.items())

        await wait_until(cache_complete, 20, "the cache to hold every symbol's last snapshot")
    finally:
        for producer in producers:
            producer.stop()
        for runner in runners:
            runner.stop()
        await asyncio.gather(*consuming, *producing, return_exceptions=True)
        await books.close()
    frame = read_books(archive_dir)
    for symbol, seqs in published.items():
        assert frame.loc[frame["symbol"] == symbol, "seq"].tolist() == seqs, symbol
    status = subprocess.run([sys.executable, "-m", "cli", "status", "--json", "--redis-url", cluster.url],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert {s["shard"] for s in json.loads(status.stdout)["shards"]} == {"deribit.btc", "deribit.eth"}
