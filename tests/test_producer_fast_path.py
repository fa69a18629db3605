"""The producer's fast path: packed snapshots (compact history, lazily unpacked latest books, the packed
listener), the publisher's one-script batches (NOSCRIPT recovery, MAXLEN) and the bounded unsubscribe."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
import redis.asyncio as aioredis

from common import StreamConfig
from common.codec import decode_fields, encode, encode_packed, pack_snapshot
from common.model import OrderbookSnapshot, PackedSnapshot, ms_to_datetime
from common.streams import PAYLOAD_FIELD, StreamKeys
from producer import CCXTProCollector
from producer.adapters import base as adapter_base
from producer.adapters.base import ExchangeAdapter
from producer.publisher import RedisPublisher

from tests.waiting import wait_until

KEYS = StreamKeys()
TAG = "deribit.fast"
SYMBOLS = [f"BTC/USD:BTC-2612{d:02d}" for d in range(10, 13)]


def snapshot(symbol: str, seq: int, levels: int = 20) -> OrderbookSnapshot:
    return OrderbookSnapshot(symbol, ms_to_datetime(1_790_000_000_000 + seq),
                             [[100.0 - i - seq % 7, 1.0 + i] for i in range(levels)],
                             [[101.0 + i + seq % 5, 2.0 + i] for i in range(levels)],
                             "deribit", "future", time.time_ns(), seq * 10, seq)


async def stream_seqs(client: aioredis.Redis, symbol: str) -> list[int]:
    entries = await client.xrange(KEYS.book_stream(TAG, symbol))
    return [decode_fields(fields[PAYLOAD_FIELD])["seq"] for _, fields in entries]


def test_packed_snapshot_unpacks_exactly_and_encodes_to_the_same_bytes():
    snap = snapshot(SYMBOLS[0], 3)
    snap.resync = True
    packed = pack_snapshot(snap)
    assert packed.unpack() == snap
    assert packed.bids == snap.bids and packed.asks == snap.asks
    assert encode_packed(packed) == encode(snap)
    assert len(packed.bids_block) == len(packed.asks_block) == 20 * 16
    assert "seq=3" in repr(packed) and "levels=20/20" in repr(packed)


def test_levels_with_a_third_element_are_packed_as_price_and_size():
    counted = snapshot(SYMBOLS[0], 1, levels=3)
    counted.bids = [[price, size, 1] for price, size in counted.bids]  # ccxt's counted books
    assert pack_snapshot(counted).bids == [level[:2] for level in counted.bids]


async def test_publisher_survives_a_flushed_script_cache(redis_url):
    """SCRIPT FLUSH (as after a Redis restart) between batches: the next batch goes through EVAL, nothing is
    lost or written twice, and the registry holds every stream."""
    client = aioredis.from_url(redis_url)
    publisher = RedisPublisher(client, TAG, batch_size=50)
    runner = asyncio.create_task(publisher.run())
    for seq in range(1, 101):
        for symbol in SYMBOLS:
            publisher.publish(snapshot(symbol, seq))
    assert await publisher.flush(timeout=20)
    await client.script_flush()
    for seq in range(101, 201):
        for symbol in SYMBOLS:
            publisher.publish(snapshot(symbol, seq))
    assert await publisher.flush(timeout=20)
    publisher.close()
    await asyncio.wait_for(runner, 10)
    assert publisher.stats.errors == 0 and publisher.stats.published == 600
    for symbol in SYMBOLS:
        assert await stream_seqs(client, symbol) == list(range(1, 201))
    assert {s.decode() for s in await client.smembers(KEYS.shard_streams(TAG))} == {
        KEYS.book_stream(TAG, s) for s in SYMBOLS}
    assert {s.decode() for s in await client.smembers(KEYS.shards)} == {TAG}
    await client.aclose()


async def test_publisher_trims_streams_to_about_maxlen(redis_url):
    client = aioredis.from_url(redis_url)
    publisher = RedisPublisher(client, TAG, maxlen=10, batch_size=500)
    runner = asyncio.create_task(publisher.run())
    for seq in range(1, 2001):
        publisher.publish_packed(pack_snapshot(snapshot(SYMBOLS[0], seq, levels=1)))
    assert await publisher.flush(timeout=20)
    publisher.close()
    await asyncio.wait_for(runner, 10)
    seqs = await stream_seqs(client, SYMBOLS[0])
    assert 10 <= len(seqs) < 500 and seqs[-1] == 2000  # approximate trimming: whole macro nodes go
    await client.aclose()


async def test_collector_history_is_packed_and_latest_books_unpack_once(emulator):
    config = StreamConfig(exchange_id="deribit", exchange_config=emulator.ccxt_config("deribit"), orderbook_limit=20)
    packed_seen: list[PackedSnapshot] = []
    async with CCXTProCollector(config) as collector:
        collector.add_listener(packed_seen.append, packed=True)
        await collector.subscribe_futures(["BTC-PERPETUAL"])
        await wait_until(lambda: collector.get_status()["BTC/USD:BTC"]["updates"] >= 5, what="five updates")
        emulator.pause()
        try:
            collector.remove_listener(packed_seen.append)
            history = collector.snapshot_history["BTC/USD:BTC"]
            assert all(type(entry) is PackedSnapshot for entry in history)
            assert [(p.seq, p.bids_block) for p in packed_seen] == [(p.seq, p.bids_block) for p in history]
            unpacked = collector.get_snapshot_history("BTC/USD:BTC")
            assert [s.seq for s in unpacked] == [entry.seq for entry in history]
            assert all(type(s) is OrderbookSnapshot and len(s.bids) == 20 and s.mid_price for s in unpacked)
            latest = collector.get_latest_orderbook("BTC-PERPETUAL")
            assert latest == unpacked[-1] and latest is collector.orderbooks["BTC/USD:BTC"]
            seen = len(packed_seen)
        finally:
            emulator.resume()
        await wait_until(lambda: collector.get_latest_orderbook("BTC/USD:BTC").seq > latest.seq, what="a newer book")
        assert len(packed_seen) == seen  # a removed listener is no longer called
        await collector.unsubscribe("BTC/USD:BTC")
        assert "BTC/USD:BTC" not in collector.orderbooks and collector.get_all_orderbooks() == {}


async def test_unsubscribe_gives_up_on_an_unconfirmed_un_watch(monkeypatch):
    """A stalled server never confirms the unsubscribe: the adapter stops waiting and still forgets the book."""
    monkeypatch.setattr(adapter_base, "UNSUBSCRIBE_TIMEOUT", 0.1)

    async def never_confirmed(symbol: str) -> None:
        await asyncio.Event().wait()

    exchange = SimpleNamespace(has={"unWatchOrderBook": True}, un_watch_order_book=never_confirmed,
                               orderbooks={"BTC/USD:BTC": {}})
    await asyncio.wait_for(ExchangeAdapter("deribit").unsubscribe(exchange, "BTC/USD:BTC"), 5)
    assert exchange.orderbooks == {}


@pytest.mark.parametrize("has_forget", [True, False])
def test_forget_book_uses_the_subclass_forget_where_there_is_one(has_forget):
    forgotten: list[str] = []
    exchange = SimpleNamespace(orderbooks={"X": {}})
    if has_forget:
        exchange.forget = forgotten.append
    ExchangeAdapter("deribit").forget_book(exchange, "X")
    assert (forgotten, exchange.orderbooks) == ((["X"], {"X": {}}) if has_forget else ([], {}))
