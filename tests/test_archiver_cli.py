"""``ccxt-collector archive`` as real processes (sharing the work, SIGKILL and takeover, SIGTERM) and
``ccxt-collector read`` in every format, plus ``read_books`` filters."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pandas as pd
import pyarrow.dataset as ds
import pytest
import redis.asyncio as aioredis
from click.testing import CliRunner
from redis.exceptions import ResponseError

from cli import main
from common.codec import decode_fields, encode
from common.model import OrderbookSnapshot
from consumers.archiver import ParquetArchiver
from consumers.reader import iter_snapshots, read_books
from consumers.runner import StreamEntry
from tests.redis_server import free_port
from tests.test_archiver import KEYS, MIDNIGHT_MS, assert_archived_once, history
from tests.test_cache import publish, wait_until

DEADLINE = 30.0


def start_archiver(redis_url: str, out: Path, consumer: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "archive", "--out", str(out), "--redis-url", redis_url, "--consumer", consumer,
         "--max-file-age", "0.5", "--rows-per-file", "150", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=DEADLINE)
    return proc.returncode, output.decode()


async def group_settled(client: aioredis.Redis, expected_streams: int) -> bool:
    """Every book stream's archiver group has read everything and has nothing pending."""
    streams = [s for tag in ("deribit", "binance") for s in await client.smembers(KEYS.shard_streams(tag))]
    if len(streams) < expected_streams:
        return False
    for stream in streams:
        groups = {g["name"]: g for g in await client.xinfo_groups(stream)}
        group = groups.get(b"archiver")
        if group is None or group["pending"] or group["lag"]:
            return False
    return True


async def wait_settled(client: aioredis.Redis, expected_streams: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await group_settled(client, expected_streams):
        assert time.monotonic() < deadline, "the archiver group did not catch up in time"
        await asyncio.sleep(0.1)


async def wait_joined(client: aioredis.Redis, *consumers: str) -> None:
    """Wait until the consumers read from the group (their signal handlers are installed by then)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        joined: set[str] = set()
        for stream in await all_streams(client):
            try:
                joined |= {c["name"].decode() for c in await client.xinfo_consumers(stream, "archiver")}
            except ResponseError:  # no group on this stream yet
                pass
        if set(consumers) <= joined:
            return
        assert time.monotonic() < deadline, f"{consumers} did not join the group in time"
        await asyncio.sleep(0.05)


async def publish_paced(redis_url: str, books: list[OrderbookSnapshot], chunk: int = 150) -> None:
    """Publish in chunks over a few seconds, so that several running archivers each get a share and still receive
    entries once both have written files (publishing done by then leaves nothing pending to kill)."""
    for begin in range(0, len(books), chunk):
        await publish(redis_url, books[begin:begin + chunk])
        await asyncio.sleep(0.3)


async def wait_pending(client: aioredis.Redis, consumer: str) -> None:
    """Wait until ``consumer`` holds delivered but unacknowledged entries."""
    deadline = time.monotonic() + DEADLINE
    while True:
        summaries = [await client.xpending(s, "archiver") for s in await all_streams(client)]
        if any(c["name"].decode() == consumer and c["pending"] for summary in summaries for c in summary["consumers"]):
            return
        assert time.monotonic() < deadline, f"{consumer} never held pending entries"
        await asyncio.sleep(0.02)


def writers(out: Path) -> set[str]:
    return {p.name.split("-")[1] for p in out.rglob("part-*.parquet")}


async def test_two_processes_share_the_work_and_a_third_takes_over_a_killed_one(redis_url, tmp_path):
    out = tmp_path / "archive"
    books = history(per_symbol=300)
    client = aioredis.Redis.from_url(redis_url)
    await publish(redis_url, books[:5])  # creates the five streams
    procs = {name: start_archiver(redis_url, out, name, "--claim-idle", "2") for name in ("one", "two")}
    try:
        await wait_joined(client, "one", "two")
        publishing = asyncio.create_task(publish_paced(redis_url, books[5:]))
        await wait_until(lambda: writers(out) == {"one", "two"}, DEADLINE)  # both took a share
        await wait_pending(client, "one")
        procs["one"].kill()  # mid-stream: it holds buffered, unacked entries
        procs["one"].wait(timeout=DEADLINE)
        procs["three"] = start_archiver(redis_url, out, "three", "--claim-idle", "2")
        await wait_joined(client, "three")
        await publishing
        await wait_settled(client, expected_streams=5)
        assert not [f for f in ds.dataset(out, partitioning="hive").files if Path(f).name.startswith((".", "_"))]
        for stream in await all_streams(client):  # its entries were taken over: forget it, to see it rejoin
            await client.xgroup_delconsumer(stream, "archiver", "one")
        procs["one"] = start_archiver(redis_url, out, "one", "--claim-idle", "2")  # removes what it left behind
        await wait_joined(client, "one")
        outputs = {}
        for name in ("one", "two", "three"):
            code, outputs[name] = stop(procs[name])
            assert code == 0, outputs[name]
            assert "archived" in outputs[name]  # the progress line
        assert "reclaimed" in outputs["two"] + outputs["three"]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=DEADLINE)
        await client.aclose()
    assert_archived_once(out, books)


async def test_sigterm_writes_the_buffers_and_exits_zero(redis_url, tmp_path):
    out = tmp_path / "archive"
    books = history(per_symbol=10)
    await publish(redis_url, books)
    proc = start_archiver(redis_url, out, "solo", "--max-file-age", "3600", "--rows-per-file", "100000",
                          "--claim-idle", "7200")
    client = aioredis.Redis.from_url(redis_url)
    try:
        await wait_joined(client, "solo")
        # everything is read (delivered) but sits in the buffers: nothing acked yet
        deadline = time.monotonic() + DEADLINE
        while sum([(await client.xpending(s, "archiver"))["pending"] for s in await all_streams(client)]) < len(books):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert not list(out.rglob("*.parquet"))
        code, output = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE)
    assert code == 0, output
    assert_archived_once(out, books)
    assert await group_settled(client, expected_streams=5)
    await client.aclose()


async def all_streams(client: aioredis.Redis) -> list[bytes]:
    return [s for tag in ("deribit", "binance") for s in await client.smembers(KEYS.shard_streams(tag))]


def test_archive_reports_bad_setups_in_one_line(tmp_path):
    cli = CliRunner()
    blocker = tmp_path / "file"
    blocker.write_text("")
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    cases = [
        (["--out", str(blocker / "sub")], "is not writable"),
        (["--out", str(tmp_path / "ok")], "cannot reach Redis at"),
        (["--out", str(tmp_path / "ok"), "--max-file-age", "10", "--claim-idle", "5"], "--claim-idle (5) must exceed"),
    ]
    for args, message in cases:
        started = time.monotonic()
        result = cli.invoke(main, ["archive", "--redis-url", unreachable, *args])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
        assert time.monotonic() - started < DEADLINE


# ----------------------------------------------------------------------------------------------- read
@pytest.fixture
def archive(tmp_path) -> tuple[Path, list[OrderbookSnapshot]]:
    """An archive written by the archiver itself (no Redis needed to write files)."""
    books = history(per_symbol=12)
    out = tmp_path / "archive"
    archiver = ParquetArchiver(out, consumer="fixture", rows_per_file=25)

    async def write() -> None:
        entries = [StreamEntry(KEYS.book_stream(b.exchange, b.symbol), f"{n + 1}-0".encode(), decode_fields(encode(b)),
                               b"") for n, b in enumerate(books)]
        await archiver.handle(entries)
        await archiver.drain()

    asyncio.run(write())
    return out, books


def invoke(*args: str):
    return CliRunner().invoke(main, ["read", *args])


def test_read_jsonl_is_exactly_the_snapshots(archive):
    out, books = archive
    result = invoke("--archive", str(out), "--exchange", "deribit", "--symbol", "BTC/USD:BTC", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    expected = [b for b in books if b.symbol == "BTC/USD:BTC"]
    for book in expected:  # the archive keeps 20 levels per side
        book.bids, book.asks = book.bids[:20], book.asks[:20]
    assert lines == [b.to_dict() for b in expected]
    assert all(list(line) == list(expected[0].to_dict()) for line in lines)


def test_read_csv_table_parquet_and_limit(archive, tmp_path):
    out, books = archive
    common = ["--archive", str(out), "--exchange", "binance", "--symbol", "ETH/USDT:USDT"]
    mine = [b for b in books if b.symbol == "ETH/USDT:USDT"]

    result = invoke(*common, "--format", "csv", "--limit", "5")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert frame["seq"].tolist() == [b.seq for b in mine[:5]] and "bid_px_19" in frame.columns

    result = invoke(*common)  # table is the default
    assert result.exit_code == 0, result.output
    assert "binance ETH/USDT:USDT" in result.stdout and "resync" in result.stdout
    first = mine[0]
    assert f"{first.best_bid:g}" in result.stdout and f"{first.spread:g}" in result.stdout

    result = invoke(*common, "--format", "parquet")
    assert result.exit_code == 2 and "--output" in result.stderr
    target = tmp_path / "eth.parquet"
    result = invoke(*common, "--format", "parquet", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(target)["seq"].tolist() == [b.seq for b in mine]

    target = tmp_path / "eth.jsonl"
    result = invoke(*common, "--format", "jsonl", "--output", str(target), "--limit", "2")
    assert result.exit_code == 0 and result.stdout == ""
    assert len(target.read_text().splitlines()) == 2


def test_read_reports_empty_results_and_bad_input(archive, tmp_path):
    out, _ = archive
    result = invoke("--archive", str(out), "--exchange", "okx")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no archived snapshots for okx" in result.stderr
    for args, message in [
        (["--archive", str(out), "--start", "yesterday"], "not an ISO 8601"),
        (["--archive", str(out), "--start", "2024-11-16", "--end", "2024-11-15"], "must be after start"),
        (["--archive", str(tmp_path / "missing")], "archive directory not found"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_read_books_filters_by_time_across_date_partitions(archive):
    out, books = archive
    start, end = MIDNIGHT_MS - 2000, MIDNIGHT_MS + 3000  # 23:59:58 .. 00:00:03, end exclusive
    frame = read_books(out, exchange="deribit", symbol="ETH/USD:ETH", start="2024-11-15T23:59:58Z",
                       end="2024-11-16T00:00:03+00:00")
    expected = [b.seq for b in books if b.symbol == "ETH/USD:ETH" and start <= b.timestamp_ms < end]
    assert frame["seq"].tolist() == expected and len(expected) == 5
    assert read_books(out, start="2024-11-16").shape[0] == sum(b.timestamp_ms >= MIDNIGHT_MS for b in books)
    assert list(read_books(out, columns=["seq"]).columns) == ["exchange", "symbol", "seq"]
    snapshots = list(iter_snapshots(out, exchange="binance", symbol="BTC/USDT:USDT"))
    assert [s.seq for s in snapshots] == [b.seq for b in books if b.symbol == "BTC/USDT:USDT"]
    assert Counter(len(s.bids) for s in snapshots) == Counter(min(len(b.bids), 20) for b in books
                                                             if b.symbol == "BTC/USDT:USDT")
    with pytest.raises(ValueError, match="unknown column"):
        read_books(out, columns=["nope"])


def test_read_books_drops_a_row_archived_twice(archive):
    out, books = archive
    for path in list(out.rglob("*.parquet"))[:1]:
        (path.parent / f"copy-{path.name}").write_bytes(path.read_bytes())
    assert ds.dataset(out, partitioning="hive").count_rows() > len(books)
    assert len(read_books(out)) == len(books)
