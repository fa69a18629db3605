"""A consumer far behind while MAXLEN trims its streams: the loss is detected, counted and marked, and the
producer's memory does not grow because of it."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from common.streams import StreamKeys
from consumers.runner import ConsumerRunner, StreamEntry, Worker
from producer.publisher import RedisPublisher
from tests.waiting import wait_until
from tests.test_publisher import snapshot

KEYS = StreamKeys()
SYMBOLS = ["BTC/USD:BTC", "ETH/USD:ETH"]


class SlowWorker(Worker):
    group = "archiver"

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {s: [] for s in SYMBOLS}
        self.slow = True

    async def handle(self, entries: list[StreamEntry]):
        for entry in entries:
            self.seen[entry.fields["symbol"]].append(entry.fields["seq"])
        if self.slow:
            await asyncio.sleep(0.05)
        return entries


async def test_trimmed_entries_are_detected_counted_and_marked(redis_url):
    client = aioredis.from_url(redis_url)
    publisher = RedisPublisher(client, "deribit.btc", maxlen=100, batch_size=50, max_buffer=10_000)
    writer = asyncio.create_task(publisher.run())
    for symbol in SYMBOLS:  # the streams exist, so the group starts at their beginning
        publisher.publish(snapshot(symbol, 1))
    assert await publisher.flush(10)
    worker = SlowWorker()
    runner = ConsumerRunner(aioredis.from_url(redis_url), worker, batch_size=5, block_ms=50, discover_interval=0.1,
                            trim_check_interval=0.2)
    consuming = asyncio.create_task(runner.run())
    await wait_until(lambda: runner.stats.streams == 2, 10, "the runner to attach")
    published = 3000
    for seq in range(2, published + 1):
        for symbol in SYMBOLS:
            publisher.publish(snapshot(symbol, seq))
        if seq % 100 == 0:
            assert publisher.buffered <= publisher.max_buffer  # producer memory stays bounded
            await asyncio.sleep(0)
    assert await publisher.flush(30)
    publisher.close()
    await writer
    assert publisher.stats.dropped == 0
    worker.slow = False
    await wait_until(lambda: all(seqs and seqs[-1] == published for seqs in worker.seen.values()), 30, "the consumer to catch up")
    await wait_until(lambda: runner.stats.trimmed == 2 * published - sum(len(v) for v in worker.seen.values()), 20,
                "every trimmed entry to be reported")
    runner.stop()
    await consuming
    assert runner.stats.trimmed > 1000  # the slow consumer really lost entries to MAXLEN
    for symbol, seqs in worker.seen.items():
        assert seqs == sorted(set(seqs))  # what it did get, it got once and in order
    markers = [fields for _, fields in await client.xrange(KEYS.deadletter) if fields[b"reason"].startswith(b"trimmed")]
    assert sum(int(m[b"lost"]) for m in markers) == runner.stats.trimmed
    assert {m[b"stream"].decode() for m in markers} == {KEYS.book_stream("deribit.btc", s) for s in SYMBOLS}
    # a second consumer of the same group does not report the same loss again
    again = ConsumerRunner(aioredis.from_url(redis_url), SlowWorker(), discover_interval=0.1)
    await again.discover()
    await again.check_trimmed()
    assert again.stats.trimmed == 0
    await client.aclose()
