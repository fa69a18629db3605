"""The Parquet archiver against a real Redis and real Parquet files: every published snapshot lands in the
archive exactly once with its levels, across files, partitions, dead letters and crash recovery."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Iterable

import pandas as pd
import pyarrow.dataset as ds
import pytest
import redis.asyncio as aioredis

from common.codec import decode_fields, encode
from common.model import OrderbookSnapshot, ms_to_datetime
from common.streams import PAYLOAD_FIELD, StreamKeys
from consumers.archiver import ParquetArchiver
from consumers.reader import read_books
from consumers.runner import ConsumerRunner, StreamEntry
from tests.test_cache import publish, wait_until

KEYS = StreamKeys()
MIDNIGHT_MS = 1_731_715_200_000  # 2024-11-16T00:00:00Z
DEPTH = 20


def snapshot(exchange: str, symbol: str, seq: int, *, ts_ms: int, depth: int = 25) -> OrderbookSnapshot:
    """A book of ``depth`` levels per side whose prices encode (symbol, seq), so any mix-up shows."""
    base = 1000.0 * (1 + hash(symbol) % 7) + seq
    return OrderbookSnapshot(
        symbol=symbol, timestamp=ms_to_datetime(ts_ms), exchange=exchange, market_type="swap",
        bids=[[base - i * 0.5, 1.0 + i + seq / 1000] for i in range(depth)],
        asks=[[base + 1 + i * 0.5, 2.0 + i] for i in range(depth)],
        receive_ts_ns=ts_ms * 1_000_000 + 5, exchange_seq=None if seq % 5 == 0 else 10_000 + seq, seq=seq,
        resync=seq == 1,
    )


def history(per_symbol: int = 60) -> list[OrderbookSnapshot]:
    """Two exchanges, five symbols, books from 25 levels down to none; timestamps cross midnight."""
    symbols = {"deribit": ["BTC/USD:BTC", "ETH/USD:ETH", "BTC-27DEC24"], "binance": ["BTC/USDT:USDT", "ETH/USDT:USDT"]}
    books = []
    for seq in range(1, per_symbol + 1):
        for exchange, names in symbols.items():
            for symbol in names:
                depth = (25, 20, 3, 0)[seq % 4]
                books.append(snapshot(exchange, symbol, seq, ts_ms=MIDNIGHT_MS + (seq - per_symbol // 2) * 1000,
                                      depth=depth))
    return books


def archived_rows(out: Path) -> list[dict]:
    """Every row of the archive as pyarrow.dataset reads it (no dedupe: duplicates would show)."""
    return ds.dataset(out, format="parquet", partitioning="hive").to_table().to_pylist()


def assert_archived_once(out: Path, published: Iterable[OrderbookSnapshot]) -> None:
    published = list(published)
    rows = archived_rows(out)
    counts = Counter((row["exchange"], row["symbol"], row["seq"]) for row in rows)
    assert counts == Counter((s.exchange, s.symbol, s.seq) for s in published)
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]


def expected_levels(book: OrderbookSnapshot) -> dict[str, float | None]:
    flat: dict[str, float | None] = {}
    for side, levels in (("bid", book.bids), ("ask", book.asks)):
        for i in range(DEPTH):
            flat[f"{side}_px_{i}"], flat[f"{side}_sz_{i}"] = levels[i] if i < len(levels) else (None, None)
    return flat


@asynccontextmanager
async def running(redis_url: str, worker: ParquetArchiver, consumer: str, **options) -> AsyncIterator[ConsumerRunner]:
    client = aioredis.Redis.from_url(redis_url)
    runner = ConsumerRunner(client, worker, consumer=consumer, block_ms=50, discover_interval=0.1,
                            flush_interval=0.1, **options)
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stop()
        await asyncio.wait_for(task, 30)
        await client.aclose()


async def test_every_snapshot_is_archived_once_with_its_levels(redis_url, tmp_path):
    books = history()
    await publish(redis_url, books)
    out = tmp_path / "archive"
    archiver = ParquetArchiver(out, consumer="one", rows_per_file=100, max_file_age=3600, depth=DEPTH)
    async with running(redis_url, archiver, "one") as runner:
        await wait_until(lambda: runner.stats.read == len(books))
    assert runner.stats.acked == len(books) and runner.stats.dead_letters == 0

    assert_archived_once(out, books)
    partitions = {p.relative_to(out).as_posix() for p in out.glob("exchange=*/date=*")}
    assert partitions == {f"exchange={e}/date={d}" for e in ("deribit", "binance") for d in ("2024-11-15", "2024-11-16")}
    files = list(out.rglob("*.parquet"))
    assert len(files) == archiver.stats.files_written <= math.ceil(len(books) / 100) + len(partitions)
    assert archiver.stats.rows_written == len(books) and not list((out / "_pending").iterdir())

    by_key = {(row["exchange"], row["symbol"], row["seq"]): row for row in archived_rows(out)}
    for book in books:
        row = by_key[(book.exchange, book.symbol, book.seq)]
        assert {name: row[name] for name in expected_levels(book)} == expected_levels(book)
        assert row["timestamp"] == book.timestamp and row["receive_ts_ns"] == book.receive_ts_ns
        assert (row["exchange_seq"], row["resync"], row["market_type"]) == (book.exchange_seq, book.resync, "swap")
        assert row["stream_id"].count("-") == 1


async def test_read_books_matches_the_published_snapshots(redis_url, tmp_path):
    books = history(per_symbol=20)
    await publish(redis_url, books)
    out = tmp_path / "archive"
    async with running(redis_url, ParquetArchiver(out, consumer="one", depth=DEPTH), "one") as runner:
        await wait_until(lambda: runner.stats.read == len(books))
    frame = read_books(out, exchange="deribit", symbol="ETH/USD:ETH")
    mine = [b for b in books if b.symbol == "ETH/USD:ETH"]
    assert frame["seq"].tolist() == [b.seq for b in mine]
    assert list(frame.columns[:9]) == ["exchange", "symbol", "market_type", "timestamp", "receive_ts_ns",
                                       "exchange_seq", "seq", "resync", "stream_id"]
    assert [None if pd.isna(x) else x for x in frame["exchange_seq"]] == [b.exchange_seq for b in mine]


async def test_malformed_and_foreign_entries_go_to_the_dead_letter_stream(redis_url, tmp_path):
    books = history(per_symbol=4)
    await publish(redis_url, books)
    client = aioredis.Redis.from_url(redis_url)
    stream = KEYS.book_stream("deribit", "BTC/USD:BTC")
    await client.xadd(stream, {PAYLOAD_FIELD: b"garbage"})
    await client.xadd(stream, {b"book": b"from another app"})
    late = snapshot("deribit", "BTC/USD:BTC", 99, ts_ms=MIDNIGHT_MS)
    await publish(redis_url, [late])
    out = tmp_path / "archive"
    async with running(redis_url, ParquetArchiver(out, consumer="one"), "one") as runner:
        await wait_until(lambda: runner.stats.read == len(books) + 3)
    letters = await client.xrange(KEYS.deadletter)
    reasons = sorted(fields[b"reason"].decode() for _, fields in letters)
    assert len(reasons) == 2 and reasons[0].startswith("no 'd' field") and reasons[1].startswith("undecodable")
    assert all(fields[b"stream"].decode() == stream and fields[b"group"] == b"archiver" for _, fields in letters)
    assert_archived_once(out, [*books, late])
    assert (await client.xpending(stream, "archiver"))["pending"] == 0
    await client.aclose()


async def test_entries_the_archive_cannot_hold_are_dead_lettered_alone(redis_url, tmp_path):
    books = history(per_symbol=3)
    escaping = snapshot("deribit", "BTC/USD:BTC", 51, ts_ms=MIDNIGHT_MS)
    escaping.exchange = "../escape"  # would name a directory outside the archive
    ancient = snapshot("deribit", "BTC/USD:BTC", 52, ts_ms=-86_400_000)  # no date partition before 1970
    client = aioredis.Redis.from_url(redis_url)
    stream = KEYS.book_stream("deribit", "BTC/USD:BTC")
    await publish(redis_url, books[:5])
    for bad in (escaping, ancient):
        await client.xadd(stream, {PAYLOAD_FIELD: encode(bad)})
    await publish(redis_url, books[5:])
    out = tmp_path / "archive"
    async with running(redis_url, ParquetArchiver(out, consumer="one"), "one") as runner:
        await wait_until(lambda: runner.stats.read == len(books) + 2)
    reasons = sorted(fields[b"reason"].decode() for _, fields in await client.xrange(KEYS.deadletter))
    assert len(reasons) == 2
    assert "cannot name a directory" in reasons[0] + reasons[1] and "outside the years" in reasons[0] + reasons[1]
    assert_archived_once(out, books)
    assert not (tmp_path / "escape").exists()
    await client.aclose()


async def read_as(client: aioredis.Redis, consumer: str, streams: list[str]) -> list[StreamEntry]:
    reply = await client.xreadgroup("archiver", consumer, {s: ">" for s in streams}, count=10_000)
    return [StreamEntry(stream.decode(), entry_id, decode_fields(data[PAYLOAD_FIELD]), data[PAYLOAD_FIELD])
            for stream, items in reply for entry_id, data in items]


@pytest.mark.parametrize("successor", ["crashed", "other"])
async def test_files_written_but_not_acked_before_a_crash_are_not_written_again(redis_url, tmp_path, successor):
    """The crash window between the rename and the XACK: the successor (the same consumer restarting, or
    another one reclaiming) finds the commit markers and acks instead of writing the rows a second time."""
    books = history(per_symbol=60)
    await publish(redis_url, books)
    client = aioredis.Redis.from_url(redis_url)
    streams = sorted([s.decode() for s in await client.smembers(KEYS.shard_streams("deribit"))]
                     + [s.decode() for s in await client.smembers(KEYS.shard_streams("binance"))])
    for stream in streams:
        await client.xgroup_create(stream, "archiver", id="0")
    out = tmp_path / "archive"
    crashed = ParquetArchiver(out, consumer="crashed", rows_per_file=70)
    await crashed.start(client)
    entries = await read_as(client, "crashed", streams)
    written = [*await crashed.handle(entries[:200]), *await crashed.drain()]  # ... and no XACK: "crash"
    assert len(written) == 200 and len(list((out / "_pending").glob("*.json"))) == crashed.stats.files_written
    assert (await client.xpending(streams[0], "archiver"))["pending"] > 0

    successor_archiver = ParquetArchiver(out, consumer=successor, max_file_age=0.2, marker_sweep_interval=0.1)
    async with running(redis_url, successor_archiver, successor, claim_idle_ms=500) as runner:
        await wait_until(lambda: runner.stats.acked == len(books))
        await wait_until(lambda: not list((out / "_pending").glob("*.json")))
    assert successor_archiver.stats.redelivered_skipped == 200
    assert successor_archiver.stats.rows_written == len(books) - 200
    assert_archived_once(out, books)
    assert [(await client.xpending(s, "archiver"))["pending"] for s in streams] == [0] * len(streams)
    await client.aclose()


async def test_a_failed_write_keeps_the_rows_and_writes_them_once_later(redis_url, tmp_path, monkeypatch):
    books = history(per_symbol=10)
    await publish(redis_url, books)
    out = tmp_path / "archive"
    import consumers.archiver as module

    real_rename, failures = module.os.rename, []

    def flaky_rename(src, dst):
        if str(dst).endswith(".parquet") and not failures:
            failures.append(dst)
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(module.os, "rename", flaky_rename)
    archiver = ParquetArchiver(out, consumer="one", rows_per_file=40, max_file_age=0.2)
    async with running(redis_url, archiver, "one") as runner:
        await wait_until(lambda: runner.stats.acked == len(books))
    assert failures and archiver.stats.write_errors == 1 and "No space left" in archiver.stats.last_error
    assert_archived_once(out, books)
    assert not list((out / "_pending").iterdir())


async def test_files_rotate_by_age_without_a_shutdown(redis_url, tmp_path):
    books = history(per_symbol=5)
    await publish(redis_url, books)
    out = tmp_path / "archive"
    archiver = ParquetArchiver(out, consumer="one", max_file_age=0.2)
    async with running(redis_url, archiver, "one") as runner:
        await wait_until(lambda: runner.stats.acked == len(books))
        assert archiver.stats.rows_written == len(books) and archiver.stats.partitions_buffered == 0
    assert archiver.stats.files_written == 4  # one per (exchange, date)


def test_archiver_rejects_nonsense_settings(tmp_path):
    for bad in ({"rows_per_file": 0}, {"max_file_age": 0}, {"depth": 0}):
        with pytest.raises(ValueError):
            ParquetArchiver(tmp_path, **bad)


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
async def test_other_engines_read_the_archive(redis_url, tmp_path, engine):
    module = pytest.importorskip(engine)
    books = history(per_symbol=5)
    await publish(redis_url, books)
    out = tmp_path / "archive"
    async with running(redis_url, ParquetArchiver(out, consumer="one"), "one") as runner:
        await wait_until(lambda: runner.stats.read == len(books))
    pattern = str(out / "**" / "*.parquet")
    if engine == "duckdb":
        count = module.sql(f"select count(*) from read_parquet('{pattern}', hive_partitioning=true) "
                           "where exchange = 'deribit'").fetchone()[0]
    else:
        count = module.scan_parquet(pattern, hive_partitioning=True).filter(
            module.col("exchange") == "deribit").collect().height
    assert count == sum(b.exchange == "deribit" for b in books)
