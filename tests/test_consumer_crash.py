"""The archiver SIGKILLed again and again while data flows: the final dataset holds every published
snapshot exactly once (counted on the raw files, without the reader's dedupe), and readers never see a
half-written file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow.dataset as ds
import pytest
import redis.asyncio as aioredis

from producer.publisher import RedisPublisher
from tests.waiting import wait_until
from tests.test_publisher import snapshot

pytestmark = pytest.mark.timeout(150)
SYMBOLS = [f"BTC/USD:BTC-2612{d:02d}" for d in range(10, 18)]
KILLS = 4


def start_archiver(redis_url: str, out, consumer: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "archive", "--out", str(out), "--max-file-age", "0.3", "--claim-idle", "2",
         "--consumer", consumer, "--batch-size", "50"],
        env={**os.environ, "REDIS_URL": redis_url}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def raw_rows(out) -> list[tuple[str, int]]:
    """(symbol, seq) of every row in every visible file: no dedupe."""
    if not out.exists() or not any(out.rglob("part-*.parquet")):
        return []
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table(columns=["symbol", "seq"])
    return list(zip(table.column("symbol").to_pylist(), table.column("seq").to_pylist()))


class Reader(threading.Thread):
    """Reads the dataset in a loop the whole time: any half-written file would break a read."""

    def __init__(self, out) -> None:
        super().__init__(daemon=True)
        self.out, self.reads, self.errors, self.stop = out, 0, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                raw_rows(self.out)
                self.reads += 1
            except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
                self.errors.append(repr(exc))
            time.sleep(0.02)


async def test_repeated_sigkill_loses_and_duplicates_nothing(redis_url, tmp_path):
    out = tmp_path / "archive"
    client = aioredis.from_url(redis_url)
    publisher = RedisPublisher(client, "deribit.btc", batch_size=200)
    writer = asyncio.create_task(publisher.run())
    published = 0
    stop_producing = asyncio.Event()

    async def produce() -> None:
        nonlocal published
        while not stop_producing.is_set():
            published += 1
            for symbol in SYMBOLS:
                publisher.publish(snapshot(symbol, published))
            await asyncio.sleep(0.002)

    producing = asyncio.create_task(produce())
    reader = Reader(out)
    reader.start()
    archiver = start_archiver(redis_url, out, "arch-0")
    try:
        for kill in range(KILLS):
            seen = len(raw_rows(out))
            await wait_until(lambda: len(raw_rows(out)) > seen + 200, 60, f"progress before kill {kill + 1}")
            archiver.send_signal(signal.SIGKILL)
            archiver.wait(10)
            # alternate: the same consumer name (its pending entries come back to it) and a new one (reclaim)
            archiver = start_archiver(redis_url, out, "arch-0" if kill % 2 else f"arch-{kill + 1}")
        stop_producing.set()
        await producing
        assert await publisher.flush(30)
        total = published * len(SYMBOLS)
        await wait_until(lambda: len(raw_rows(out)) >= total, 60, f"all {total} rows archived")
    finally:
        stop_producing.set()
        archiver.send_signal(signal.SIGTERM)
        _, err = archiver.communicate(timeout=60)
        reader.stop.set()
        reader.join(10)
        publisher.close()
        await asyncio.gather(writer, producing, return_exceptions=True)
        await client.aclose()
    assert archiver.returncode == 0, err
    assert reader.reads > 20 and not reader.errors, reader.errors[:3]
    rows = raw_rows(out)
    assert len(rows) == len(set(rows)), f"{len(rows) - len(set(rows))} duplicated rows"
    assert set(rows) == {(symbol, seq) for symbol in SYMBOLS for seq in range(1, published + 1)}
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-") and p.suffix == ".parquet"]
