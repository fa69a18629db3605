"""Parquet archiver throughput: (a) decode + Arrow + Parquet of the payloads with no Redis, (b) the whole
archiver (ConsumerRunner + ParquetArchiver) draining a prefilled Redis backlog of the same payloads.

Targets: (b) >= 100k rows/s per core and >= 0.7 x (a). Each rate is given per wall-clock second and per
CPU second of this process (all its threads; redis-server not included): on a shared machine the CPU rate
is the steadier one. Books are 20 levels per side, one exchange, one date. Without --redis-url a throwaway
redis-server is started (and stopped) for the run.

Usage: python bench/archiver_bench.py [--rows 200000] [--symbols 100] [--depth 20] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import redis.asyncio as aioredis

from common.codec import encode_fields
from common.streams import PAYLOAD_FIELD, StreamKeys
from consumers.archiver import ParquetArchiver
from common.runtime import tune_gc
from consumers.runner import ConsumerRunner, StreamEntry

SHARD = "bench"
DAY_START_MS = 1_731_715_200_000  # 2024-11-16T00:00:00Z


def make_payloads(rows: int, symbols: int, depth: int) -> list[tuple[str, bytes]]:
    """(symbol, wire payload) per row: distinct prices per row, one date."""
    out = []
    for n in range(rows):
        mid = 90_000.0 + (n % 997) * 0.5
        out.append((f"SYM{n % symbols}/USD:USD", encode_fields(
            exchange="deribit", symbol=f"SYM{n % symbols}/USD:USD", market_type="future", ts_ms=DAY_START_MS + n,
            recv_ns=time.time_ns(), exchange_seq=n, seq=n // symbols, resync=False,
            bids=[(mid - 0.5 - i, 1.0 + i * 0.25) for i in range(depth)],
            asks=[(mid + 0.5 + i, 1.5 + i * 0.25) for i in range(depth)],
        )))
    return out


class Rate:
    """Rows per wall-clock second and per CPU second of this process, from construction to :meth:`stop`."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, rows: int) -> tuple[float, float]:
        return rows / (time.perf_counter() - self.wall), rows / (time.process_time() - self.cpu)


async def baseline(payloads: list[tuple[str, bytes]], out: Path, depth: int, batch: int) -> tuple[float, float]:
    """(a) rows/s of the archiver's own decoding (in bulk, from the payloads), Arrow conversion and Parquet writing,
    no Redis."""
    keys = StreamKeys()
    archiver = ParquetArchiver(out, consumer="baseline", depth=depth)
    rate = Rate()
    for begin in range(0, len(payloads), batch):
        entries = [StreamEntry(keys.book_stream(SHARD, symbol), f"{begin + n + 1}-0".encode(), None, payload)
                   for n, (symbol, payload) in enumerate(payloads[begin:begin + batch])]
        await archiver.handle(entries)
    await archiver.drain()
    return rate.stop(len(payloads))


async def prefill(client: aioredis.Redis, payloads: list[tuple[str, bytes]]) -> None:
    keys = StreamKeys()
    streams = {symbol: keys.book_stream(SHARD, symbol) for symbol, _ in payloads}
    await client.sadd(keys.shards, SHARD)
    await client.sadd(keys.shard_streams(SHARD), *streams.values())
    for begin in range(0, len(payloads), 2000):
        async with client.pipeline(transaction=False) as pipe:
            for symbol, payload in payloads[begin:begin + 2000]:
                pipe.xadd(streams[symbol], {PAYLOAD_FIELD: payload})
            await pipe.execute()


async def through_redis(client: aioredis.Redis, rows: int, out: Path, depth: int, batch: int) -> tuple[float, float]:
    """(b) rows/s of the archiver draining the backlog, from start until its last file is written and acked."""
    archiver = ParquetArchiver(out, consumer="bench", depth=depth, progress_interval=0)
    runner = ConsumerRunner(client, archiver, consumer="bench", batch_size=batch)
    rate = Rate()
    task = asyncio.create_task(runner.run())
    while runner.stats.read < rows and not task.done():
        await asyncio.sleep(0.005)
    runner.stop()
    await task
    result = rate.stop(rows)
    assert runner.stats.acked == rows == archiver.stats.rows_written, (runner.stats, archiver.stats)
    return result


async def run(args: argparse.Namespace) -> None:
    tune_gc()
    print(f"generating {args.rows:,} payloads ({args.symbols} symbols, {args.depth} levels per side) ...")
    payloads = make_payloads(args.rows, args.symbols, args.depth)
    work = Path(tempfile.mkdtemp(prefix="archiver-bench-"))
    server = None
    url: Optional[str] = args.redis_url
    if url is None:
        from emulator.redis_server import RedisServer

        server = RedisServer(work / "redis").start()
        url = server.url
    client = aioredis.Redis.from_url(url)
    try:
        if await client.exists(StreamKeys().shard_streams(SHARD)):
            raise SystemExit(f"{url} already holds shard {SHARD!r}: use an empty Redis")
        started = time.perf_counter()
        await prefill(client, payloads)
        print(f"prefilled {args.rows:,} entries in {time.perf_counter() - started:.1f} s")
        a = await baseline(payloads, work / "baseline", args.depth, args.batch_size)
        print(f"(a) decode + Arrow + Parquet, no Redis : {a[0]:>9,.0f} rows/s wall {a[1]:>9,.0f} rows/CPU-s")
        del payloads
        b = await through_redis(client, args.rows, work / "archive", args.depth, args.batch_size)
        size = sum(p.stat().st_size for p in (work / "archive").rglob("*.parquet"))
        print(f"(b) archiver through Redis             : {b[0]:>9,.0f} rows/s wall {b[1]:>9,.0f} rows/CPU-s"
              f"  ({size / args.rows:.0f} B/row on disk)")
        print(f"ratio b/a: {b[0] / a[0]:.2f} wall, {b[1] / a[1]:.2f} CPU (targets: >= 0.7; b >= 100,000 rows/s per core)")
    finally:
        await client.aclose()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--redis-url", default=None)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
