"""Bulk decoding and bounded reads: ``decode_columns`` accepts and refuses exactly what ``decode_fields`` does,
and the runner hands a worker that decodes its own batches bounded batches of a backlog over many streams,
every entry once, undecodable ones dead-lettered."""

from __future__ import annotations

import asyncio

import msgpack
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from common.codec import CodecError, decode_columns, decode_fields, encode
from common.streams import PAYLOAD_FIELD, StreamKeys
from consumers.reader import read_books
from consumers.runner import ConsumerRunner, StreamEntry, Worker, decode_entries, next_count
from tests.test_archiver import MIDNIGHT_MS, snapshot
from tests.test_cache import publish, wait_until

KEYS = StreamKeys()
GOOD = [encode(snapshot("deribit", f"S{n}/USD:USD", n, ts_ms=MIDNIGHT_MS + n, depth=n % 4)) for n in range(1, 6)]

wire_maps = st.dictionaries(
    st.sampled_from(["v", "exchange", "symbol", "type", "ts", "recv_ns", "xseq", "seq", "resync", "bids", "asks", "x"]),
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=5) | st.binary(max_size=40)
    | st.lists(st.integers(0, 9), max_size=2),
)


def expected(payload: bytes):
    """decode_fields' verdict: its fields with the level blocks as bytes, or the CodecError's message."""
    try:
        fields = decode_fields(payload)
    except CodecError as exc:
        return str(exc)
    return {**fields, "bids": fields["bids"].tobytes(), "asks": fields["asks"].tobytes()}


@given(st.lists(st.sampled_from(GOOD) | wire_maps.map(msgpack.packb) | st.binary(max_size=30), max_size=8))
@settings(max_examples=300, deadline=None)
def test_decode_columns_accepts_and_refuses_what_decode_fields_does(payloads):
    columns, refused = decode_columns(payloads)
    verdicts = [expected(p) for p in payloads]
    assert refused == [(i, v) for i, v in enumerate(verdicts) if isinstance(v, str)]
    accepted = [v for v in verdicts if not isinstance(v, str)]
    rows = [dict(zip(("exchange", "symbol", "type", "ts", "recv_ns", "xseq", "seq", "resync", "bids", "asks"), row))
            for row in zip(columns.exchange, columns.symbol, columns.market_type, columns.ts, columns.recv_ns,
                           columns.xseq, columns.seq, columns.resync, columns.bids, columns.asks)]
    assert rows == [{key: value for key, value in v.items() if key != "v"} for v in accepted]
    assert columns.take([len(accepted) - 1 - i for i in range(len(accepted))]).seq == columns.seq[::-1]


def test_next_count_steers_the_call_total_toward_the_budget():
    assert next_count(1000, 100_000, True, 1000) == 10  # 100 backlogged streams: shrink
    assert next_count(10, 1000, True, 1000) == 10  # on budget: keep
    assert next_count(10, 20, True, 1000) == 20  # few busy streams: grow ...
    assert next_count(640, 640, True, 1000) == 640  # ... until the call returns half the budget
    assert next_count(1000, 30, True, 1000) == 1000  # never above the budget
    assert next_count(10, 3, False, 1000) == 10  # nothing more to read: keep
    assert next_count(1, 5000, True, 1000) == 1


class Recorder(Worker):
    """Decodes its batches itself and remembers them."""

    group = "recorder"
    decodes_batches = True

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int]]] = []

    async def handle(self, entries: list[StreamEntry]) -> list[StreamEntry]:
        columns = decode_entries(entries)
        assert not any(entry.decoded for entry in entries)  # the runner left decoding to the worker
        self.batches.append(list(zip(columns.symbol, columns.seq)))
        return entries


async def test_a_backlog_over_many_streams_comes_in_bounded_batches_each_entry_once(redis_url):
    books = [snapshot("deribit", f"S{n}/USD:USD", seq, ts_ms=MIDNIGHT_MS + seq) for seq in range(1, 41) for n in range(30)]
    await publish(redis_url, books)
    client = aioredis.Redis.from_url(redis_url)
    stream = KEYS.book_stream("deribit", "S7/USD:USD")
    await client.xadd(stream, {PAYLOAD_FIELD: b"garbage"})
    await client.xadd(stream, {PAYLOAD_FIELD: msgpack.packb({"exchange": "deribit", "symbol": 7})})
    worker = Recorder()
    runner = ConsumerRunner(aioredis.Redis.from_url(redis_url), worker, batch_size=100, block_ms=50,
                            discover_interval=0.1)
    task = asyncio.create_task(runner.run())
    try:
        await wait_until(lambda: runner.stats.acked + runner.stats.dead_letters == len(books) + 2)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
    handled = [row for batch in worker.batches for row in batch]
    assert sorted(handled) == sorted((b.symbol, b.seq) for b in books)
    assert max(map(len, worker.batches)) <= 100 and len(worker.batches) >= len(books) // 100
    letters = await client.xrange(KEYS.deadletter)
    assert sorted(fields[b"reason"].decode().split(":")[0] for _, fields in letters) == ["undecodable"] * 2
    assert {fields[b"stream"].decode() for _, fields in letters} == {stream}
    assert (await client.xpending(stream, "recorder"))["pending"] == 0
    await client.aclose()


async def test_a_failed_background_write_is_merged_back_ahead_of_newer_rows(tmp_path, monkeypatch):
    """Full buffers are written in the background; when that write fails, its rows go back in front of the rows
    buffered since, and the next write holds them all once, in order."""
    import consumers.archiver as module

    results = iter([OSError(28, "No space left on device")])  # the first file write fails, the next ones succeed
    real_write = module.pq.write_table

    def write_table(*args, **options):
        failure = next(results, None)
        if failure is not None:
            raise failure
        real_write(*args, **options)

    monkeypatch.setattr(module.pq, "write_table", write_table)
    archiver = module.ParquetArchiver(tmp_path, consumer="one", rows_per_file=10, max_file_age=3600)
    books = [snapshot("deribit", "BTC/USD:BTC", seq, ts_ms=MIDNIGHT_MS + seq) for seq in range(1, 26)]
    entries = [StreamEntry(KEYS.book_stream("deribit", b.symbol), f"{n + 1}-0".encode(), None, encode(b))
               for n, b in enumerate(books)]
    durable = [*await archiver.handle(entries[:12])]  # full: its write starts in the background and fails
    durable += await archiver.handle(entries[12:15])  # buffered next to the failed write's rows once they are back
    durable += await archiver.flush()  # waits for the background write
    assert archiver.stats.write_errors == 1 and archiver.stats.rows_buffered == 15
    durable += await archiver.handle(entries[15:])
    durable += await archiver.drain()
    assert sorted(entry.id for entry in durable) == sorted(entry.id for entry in entries)
    frame = read_books(tmp_path, exchange="deribit", symbol="BTC/USD:BTC")
    assert frame["seq"].tolist() == list(range(1, 26))
