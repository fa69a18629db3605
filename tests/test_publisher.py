"""RedisPublisher against a real Redis: batching, registry, and nothing lost across a Redis crash."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from common.codec import decode_fields, encode
from common.model import OrderbookSnapshot, ms_to_datetime
from common.streams import PAYLOAD_FIELD, StreamKeys
from producer.publisher import RedisPublisher
from producer.spool import DiskSpool
from tests.redis_server import RedisServer

KEYS = StreamKeys()
SYMBOLS = [f"BTC/USD:BTC-2612{d:02d}" for d in range(10, 15)]


def snapshot(symbol: str, seq: int) -> OrderbookSnapshot:
    return OrderbookSnapshot(symbol, ms_to_datetime(1_790_000_000_000 + seq), [[100.0 - seq % 7, 1.0]] * 20,
                             [[101.0 + seq % 5, 2.0]] * 20, "deribit", "future", time.time_ns(), seq * 10, seq)


async def stream_seqs(client: aioredis.Redis, tag: str) -> dict[str, list[int]]:
    out = {}
    for symbol in SYMBOLS:
        entries = await client.xrange(KEYS.book_stream(tag, symbol))
        out[symbol] = [decode_fields(fields[PAYLOAD_FIELD])["seq"] for _, fields in entries]
    return out


async def test_publishes_batches_and_registers_streams(redis_url):
    client = aioredis.from_url(redis_url)
    publisher = RedisPublisher(client, "deribit.btc", batch_size=100)
    runner = asyncio.create_task(publisher.run())
    for seq in range(1, 501):
        for symbol in SYMBOLS:
            publisher.publish(snapshot(symbol, seq))
    assert await publisher.flush(timeout=20)
    publisher.close()
    await asyncio.wait_for(runner, 10)
    assert publisher.stats.batches >= 25 and publisher.stats.last_batch_size <= 100
    assert {s.decode() for s in await client.smembers(KEYS.shards)} == {"deribit.btc"}
    assert {s.decode() for s in await client.smembers(KEYS.shard_streams("deribit.btc"))} == {
        KEYS.book_stream("deribit.btc", s) for s in SYMBOLS}
    assert all(seqs == list(range(1, 501)) for seqs in (await stream_seqs(client, "deribit.btc")).values())
    await client.aclose()


@pytest.mark.timeout(90)
async def test_redis_sigkill_and_restart_loses_nothing_duplicates_nothing(tmp_path):
    """kill -9 Redis (AOF everysec) mid-stream, keep producing while it is down, restart it: every
    snapshot is in Redis exactly once, in seq order (spool for the outage, replay window for what the
    crash lost)."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    client = aioredis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=2)
    spool = DiskSpool(tmp_path / "spool", max_bytes=256 << 20)
    publisher = RedisPublisher(client, "deribit.btc", spool=spool, batch_size=200)
    runner = asyncio.create_task(publisher.run())
    seq = 0

    async def produce(seconds: float) -> None:
        nonlocal seq
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            seq += 1
            for symbol in SYMBOLS:
                publisher.publish(snapshot(symbol, seq))
            await asyncio.sleep(0.002)

    await produce(1.0)
    server.kill()
    await produce(2.5)  # Redis down: memory, then the spool
    assert publisher.stats.errors > 0 and publisher.stats.spilled > 0
    server.start()
    await produce(1.0)
    assert await publisher.flush(timeout=40), f"{publisher.buffered} entries never reached Redis"
    publisher.close()
    await asyncio.wait_for(runner, 10)
    seqs = await stream_seqs(client, "deribit.btc")
    for symbol in SYMBOLS:
        assert seqs[symbol] == list(range(1, seq + 1)), f"{symbol}: missing or duplicated entries"
    assert publisher.stats.dropped == 0 and len(spool) == 0
    await client.aclose()
    server.stop()


async def test_spool_full_drops_loudly_and_marks_resync(tmp_path, caplog):
    """Memory and spool both full: the oldest entries are dropped with an error log, and the next
    snapshot of each affected symbol carries resync=True."""
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)  # nothing listens there
    publisher = RedisPublisher(client, "deribit.btc", max_buffer=50)
    for seq in range(1, 61):
        publisher.publish(snapshot(SYMBOLS[0], seq))
    assert publisher.stats.dropped == 10 and publisher.buffered == 50
    assert "DATA LOSS" in caplog.text
    marked = snapshot(SYMBOLS[0], 61)
    publisher.publish(marked)
    assert marked.resync is True
    await client.aclose()


async def test_entries_lost_by_a_redis_crash_are_resent_once(tmp_path):
    """A Redis that comes back without its last acknowledged writes (power loss with AOF everysec): the
    publisher re-sends exactly the missing tail of each stream on recovery — judged by seq, no duplicates."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    client = aioredis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=2)
    publisher = RedisPublisher(client, "deribit.btc", replay_window=60)
    runner = asyncio.create_task(publisher.run())
    for seq in range(1, 101):
        for symbol in SYMBOLS:
            publisher.publish(snapshot(symbol, seq))
    assert await publisher.flush(timeout=20)
    admin = aioredis.from_url(server.url)
    for symbol in SYMBOLS:  # the crash "loses" the last 15 entries of every stream
        stream = KEYS.book_stream("deribit.btc", symbol)
        tail = await admin.xrevrange(stream, count=15)
        await admin.xdel(stream, *[entry_id for entry_id, _ in tail])
    await admin.aclose()
    server.kill()
    server.start()
    for symbol in SYMBOLS:
        publisher.publish(snapshot(symbol, 101))
    assert await publisher.flush(timeout=30)
    publisher.close()
    await asyncio.wait_for(runner, 10)
    assert publisher.stats.replayed == 15 * len(SYMBOLS)
    seqs = await stream_seqs(client, "deribit.btc")
    for symbol in SYMBOLS:
        assert seqs[symbol] == list(range(1, 102))
    await client.aclose()
    server.stop()


async def test_spool_left_by_a_crashed_producer_is_replayed_once(redis_url, tmp_path):
    """A producer died with a spool whose head was already written (crash between XADD and the spool
    commit): the next producer replays the spool without writing those entries twice."""
    client = aioredis.from_url(redis_url)
    spool = DiskSpool(tmp_path / "spool")
    records = [(KEYS.book_stream("deribit.btc", SYMBOLS[0]), seq, encode(snapshot(SYMBOLS[0], seq))) for seq in range(1, 11)]
    spool.append(records)
    for stream, _, payload in records[:4]:  # written, but the crash came before spool.commit()
        await client.xadd(stream, {PAYLOAD_FIELD: payload})
    spool.close()
    publisher = RedisPublisher(client, "deribit.btc", spool=DiskSpool(tmp_path / "spool"))
    runner = asyncio.create_task(publisher.run())
    assert await publisher.flush(timeout=20)
    publisher.close()
    await asyncio.wait_for(runner, 10)
    assert (await stream_seqs(client, "deribit.btc"))[SYMBOLS[0]] == list(range(1, 11))
    await client.aclose()
