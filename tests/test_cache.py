"""The latest-book cache against a real Redis: newest-wins writes, readers (sync, async, native ids),
staleness, and the ``cache`` / ``latest`` commands (the worker also as a real subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Iterable

import pytest
import redis
import redis.asyncio as aioredis
from click.testing import CliRunner

from cli import main
from common.codec import encode
from common.markets import MarketInfo
from common.model import OrderbookSnapshot, ms_to_datetime
from common.redis_client import async_client
from common.streams import PAYLOAD_FIELD, StreamKeys, shard_tag
from consumers.cache import AsyncLatestBooks, LatestBookCache, LatestBooks
from consumers.runner import ConsumerRunner, Worker
from emulator.redis_server import RedisClusterServer
from producer.publisher import RedisPublisher
from tests.waiting import wait_until  # noqa: F401 - also used by the archiver and monitor tests

KEYS = StreamKeys()
DEADLINE = 15.0


def book(exchange: str, symbol: str, bid: float, ask: float, *, seq: int, age: float = 0.0,
         market_type: str = "swap", depth: int = 3) -> OrderbookSnapshot:
    """A book with ``depth`` levels per side around ``bid``/``ask``, received ``age`` seconds ago."""
    recv_ns = time.time_ns() - int(age * 1e9)
    return OrderbookSnapshot(
        symbol=symbol, timestamp=ms_to_datetime(recv_ns // 1_000_000), exchange=exchange, market_type=market_type,
        bids=[[bid - i, 1.0 + i] for i in range(depth)], asks=[[ask + i, 2.0 + i] for i in range(depth)],
        receive_ts_ns=recv_ns, exchange_seq=1000 + seq, seq=seq,
    )


async def publish(redis_url: str, snapshots: Iterable[OrderbookSnapshot], markets: Iterable[MarketInfo] = ()) -> None:
    """Publish through the real RedisPublisher, one shard per exchange, and wait until all is in Redis."""
    client = async_client(redis_url)
    publishers: dict[str, RedisPublisher] = {}
    try:
        for snapshot in snapshots:
            if snapshot.exchange not in publishers:
                publishers[snapshot.exchange] = RedisPublisher(client, shard_tag(snapshot.exchange))
            publishers[snapshot.exchange].publish(snapshot)
        tasks = [asyncio.create_task(p.run()) for p in publishers.values()]
        for p in publishers.values():
            p.close()
        await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE)
        if markets:
            await RedisPublisher(client, "registry").register_markets(markets)
    finally:
        await client.aclose()


@asynccontextmanager
async def running(redis_url: str, worker: Worker, consumer: str = "test") -> AsyncIterator[ConsumerRunner]:
    """An in-process ConsumerRunner for ``worker`` with short poll intervals; stopped and awaited on exit."""
    client = async_client(redis_url)
    runner = ConsumerRunner(client, worker, consumer=consumer, block_ms=50, discover_interval=0.1, flush_interval=0.1)
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stop()
        await asyncio.wait_for(task, DEADLINE)
        await client.aclose()


def history() -> list[OrderbookSnapshot]:
    """Five updates each of five books on two exchanges, oldest first."""
    symbols = {"deribit": ["BTC/USD:BTC", "ETH/USD:ETH", "BTC/USD:BTC-261225"], "okx": ["BTC/USD:BTC", "BTC/USDT:USDT"]}
    return [
        book(exchange, symbol, 100.0 * (n + 1) + seq, 100.0 * (n + 1) + seq + 0.5, seq=seq)
        for seq in range(1, 6)
        for exchange, names in symbols.items()
        for n, symbol in enumerate(names)
    ]


def last_of_each(snapshots: list[OrderbookSnapshot]) -> dict[tuple[str, str], OrderbookSnapshot]:
    return {(s.exchange, s.symbol): s for s in snapshots}


async def test_cache_holds_the_last_published_book_of_every_symbol(redis_url):
    snapshots = history()
    markets = [MarketInfo("deribit", "BTC/USD:BTC", "BTC-PERPETUAL", "swap", "BTC", "USD", "BTC")]
    await publish(redis_url, snapshots, markets)
    worker = LatestBookCache()
    async with running(redis_url, worker) as runner:
        await wait_until(lambda: runner.stats.acked == len(snapshots))
    expected = last_of_each(snapshots)
    assert worker.written <= len(snapshots)

    with LatestBooks(redis_url) as books:
        for (exchange, symbol), snapshot in expected.items():
            assert books.get(exchange, symbol) == snapshot
        assert books.all() == expected
        assert books.all("okx") == {k: v for k, v in expected.items() if k[0] == "okx"}
        assert books.get("deribit", "BTC-PERPETUAL") == expected[("deribit", "BTC/USD:BTC")]  # native id
        assert books.get("deribit", "NOPE-PERPETUAL") is None
        assert books.get("kraken", "BTC/USD:BTC") is None
        raw = books.redis.hget(KEYS.latest("okx"), "BTC/USDT:USDT")
        assert raw == encode(expected[("okx", "BTC/USDT:USDT")])  # the wire payload, byte for byte
    async with AsyncLatestBooks(redis_url) as abooks:
        assert await abooks.get("okx", "BTC/USD:BTC") == expected[("okx", "BTC/USD:BTC")]
        assert await abooks.all() == expected


async def test_cache_on_redis_cluster(tmp_path):
    """The script's two keys share a slot; readers find every exchange without a cluster-wide SCAN."""
    cluster = RedisClusterServer(tmp_path / "cluster").start()
    try:
        snapshots = history()
        await publish(cluster.url, snapshots)
        async with running(cluster.url, LatestBookCache()) as runner:
            await wait_until(lambda: runner.stats.acked == len(snapshots))
        with LatestBooks(cluster.url) as books:
            assert books.all() == last_of_each(snapshots)
        async with AsyncLatestBooks(cluster.url) as abooks:
            assert await abooks.get("okx", "BTC/USDT:USDT") == last_of_each(snapshots)[("okx", "BTC/USDT:USDT")]
        assert cluster.node_of(KEYS.latest("okx")) == cluster.node_of(KEYS.latest_order("okx"))
    finally:
        cluster.stop()


async def test_older_entries_never_overwrite_newer_ones(redis_url):
    newest = book("deribit", "BTC/USD:BTC", 100.0, 101.0, seq=7)
    older = book("deribit", "BTC/USD:BTC", 90.0, 91.0, seq=6, age=1.0)
    await publish(redis_url, [newest])
    worker = LatestBookCache()
    async with running(redis_url, worker) as runner:
        await wait_until(lambda: runner.stats.acked == 1)
        # a redelivered (or late second-producer) entry that is older arrives after the newer one
        client = redis.Redis.from_url(redis_url)
        stream = KEYS.book_stream(shard_tag("deribit"), "BTC/USD:BTC")
        client.xadd(stream, {PAYLOAD_FIELD: encode(older)})
        await wait_until(lambda: runner.stats.acked == 2)
        assert LatestBooks(client).get("deribit", "BTC/USD:BTC") == newest
        # a producer restart: seq starts again, but the book is received later, so it wins
        restarted = book("deribit", "BTC/USD:BTC", 110.0, 111.0, seq=1)
        client.xadd(stream, {PAYLOAD_FIELD: encode(restarted)})
        await wait_until(lambda: runner.stats.acked == 3)
        assert LatestBooks(client).get("deribit", "BTC/USD:BTC") == restarted
        client.close()


async def test_newest_of_a_batch_wins_whatever_its_position(redis_url):
    """Within one batch (and across two cache processes) only the newest book per symbol is kept."""
    client = aioredis.Redis.from_url(redis_url)
    updates = [book("okx", "BTC/USD:BTC", 100.0 + n, 101.0 + n, seq=n) for n in range(1, 301)]
    shuffled = updates[150:] + updates[:150]  # newest is in the middle of the stream order
    await publish(redis_url, shuffled)
    first, second = LatestBookCache(), LatestBookCache()
    async with running(redis_url, first, "one") as one, running(redis_url, second, "two") as two:
        await wait_until(lambda: one.stats.acked + two.stats.acked == len(updates))
    assert await AsyncLatestBooks(client).get("okx", "BTC/USD:BTC") == updates[-1]
    order = await client.hget(KEYS.latest_order("okx"), "BTC/USD:BTC")
    assert order.decode().endswith(f"{300:020d}")
    await client.aclose()


async def test_books_without_updates_are_marked_stale(redis_url):
    await publish(redis_url, [book("okx", "ETH/USD:ETH", 10.0, 11.0, seq=1, age=30.0),
                              book("okx", "BTC/USD:BTC", 10.0, 11.0, seq=1)])
    async with running(redis_url, LatestBookCache()) as runner:
        await wait_until(lambda: runner.stats.acked == 2)
    with LatestBooks(redis_url, stale_after=10.0) as books:
        old, fresh = books.get("okx", "ETH/USD:ETH"), books.get("okx", "BTC/USD:BTC")
        assert old.extra["stale"] and books.is_stale(old) and books.age(old) >= 30.0
        assert not fresh.extra["stale"] and not books.is_stale(fresh)
    with LatestBooks(redis_url, stale_after=60.0) as books:
        assert not books.get("okx", "ETH/USD:ETH").extra["stale"]
    with pytest.raises(ValueError):
        LatestBooks(redis_url, stale_after=0)


async def test_latest_command_prints_the_book_json_and_table(redis_url):
    snapshots = [book("deribit", "BTC/USD:BTC", 100.0 + n, 100.5 + n, seq=n) for n in range(1, 4)]
    snapshots.append(book("deribit", "ETH/USD:ETH", 10.0, 10.5, seq=1, age=60.0))
    await publish(redis_url, snapshots)
    async with running(redis_url, LatestBookCache()) as runner:
        await wait_until(lambda: runner.stats.acked == len(snapshots))
    cli = CliRunner()

    result = cli.invoke(main, ["latest", "deribit", "BTC/USD:BTC", "--json", "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == snapshots[2].to_dict()

    result = cli.invoke(main, ["latest", "deribit", "BTC/USD:BTC", "--depth", "2", "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    table = result.stdout
    assert all(price in table for price in ("103", "102", "103.5", "104.5")) and "STALE" not in table
    assert "101" not in table and "105.5" not in table  # depth 2

    result = cli.invoke(main, ["latest", "deribit", "ETH/USD:ETH", "--redis-url", redis_url])
    assert result.exit_code == 0 and "STALE" in result.stdout

    result = cli.invoke(main, ["latest", "deribit", "SOL/USD:SOL", "--redis-url", redis_url])
    assert result.exit_code == 1
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert "no cached book for deribit SOL/USD:SOL" in result.stderr


@pytest.mark.parametrize("command, message", [
    (["latest", "deribit", "BTC/USD:BTC"], "error: cannot read the latest-book cache"),
    (["cache"], "error: cannot reach Redis"),
])
def test_unreachable_redis_is_one_line_and_exit_2(command, message):
    from tests.redis_server import free_port

    result = CliRunner().invoke(main, [*command, "--redis-url", f"redis://user:hunter2@127.0.0.1:{free_port()}/0"])
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1
    assert "hunter2" not in result.stderr


async def test_cache_command_runs_as_a_process_until_sigterm(redis_url):
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "cache", "--redis-url", redis_url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        snapshots = history()
        await publish(redis_url, snapshots)
        books = LatestBooks(redis_url)
        expected = last_of_each(snapshots)
        await wait_until(lambda: books.all() == expected)
        books.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, output.decode()
