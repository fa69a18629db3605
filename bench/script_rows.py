"""Table rows from the standalone benchmark scripts, so ``python -m bench`` runs them too.

* Benchmark 2, archiver throughput (:mod:`bench.archiver_bench`): a Redis stream backlog of 1M 20-level
  snapshots drained by ConsumerRunner + ParquetArchiver, against decode + Arrow + Parquet of the same payloads
  with no Redis. Per core = rows per CPU-second of this process (the archiver; Redis is another process).
  Targets: >= 100k rows/s per core and >= 0.7 x baseline.
* Storage formats (:mod:`bench.storage_bench`): OrderbookDataStore's Parquet write rate against JSONL.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from bench import archiver_bench, storage_bench
from bench.harness import Row, redis_server, scratch_dir
from common.runtime import tune_gc

ROWS_TARGET = 100_000
RATIO_TARGET = 0.7


def run_archiver(quick: bool = False) -> list[Row]:
    rows, symbols, depth, batch = (5_000, 10, 20, 1000) if quick else (1_000_000, 100, 20, 1000)
    return asyncio.run(_archiver(rows, symbols, depth, batch))


async def _archiver(rows: int, symbols: int, depth: int, batch: int) -> list[Row]:
    tune_gc()
    payloads = archiver_bench.make_payloads(rows, symbols, depth)
    with redis_server() as server, scratch_dir("bench-archiver-") as work:
        client = aioredis.Redis.from_url(server.url)
        try:
            await archiver_bench.prefill(client, payloads)
            baseline, baseline_per_core = await archiver_bench.baseline(payloads, work / "baseline", depth, batch)
            del payloads
            measured, per_core = await archiver_bench.through_redis(client, rows, work / "archive", depth, batch)
        finally:
            await client.aclose()
    ratio = measured / baseline
    return [
        Row("archiver", f"{rows:,} rows, rows/s", f"{measured:,.0f}", f"{baseline:,.0f} (no Redis)", ratio,
            f">= {RATIO_TARGET} x", ratio >= RATIO_TARGET),
        Row("archiver", "rows/s per core", f"{per_core:,.0f}", f"{baseline_per_core:,.0f} (no Redis)",
            per_core / baseline_per_core, f">= {ROWS_TARGET // 1000}k", per_core >= ROWS_TARGET,
            note=f"{symbols} streams, {depth} levels per side, XREADGROUP batches of {batch}"),
    ]


def run_storage(quick: bool = False) -> list[Row]:
    rows = 2_000 if quick else 20_000
    snapshots = storage_bench.make_snapshots(rows, 10, 20)
    rates = {}
    with scratch_dir("bench-storage-") as work:
        for fmt in ("jsonl", "parquet"):
            rates[fmt], _ = storage_bench.measure(fmt, snapshots, work)
    return [Row("storage", "parquet write rows/s", f"{rates['parquet']:,.0f}", f"{rates['jsonl']:,.0f} (jsonl)",
                rates["parquet"] / rates["jsonl"], note=f"OrderbookDataStore, {rows:,} snapshots of 20 levels")]
