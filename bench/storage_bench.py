"""Write throughput of OrderbookDataStore per format: 100k snapshots of 20 levels, measured in one run.

The formats are measured in turn for ``--rounds`` rounds and the best rate of each is kept, so a
noisy shared machine disturbs the comparison less.

Usage: python bench/storage_bench.py [--rows 100000] [--symbols 10] [--levels 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common.model import OrderbookSnapshot
from common.storage import OrderbookDataStore


def make_snapshots(rows: int, symbols: int, levels: int) -> list[OrderbookSnapshot]:
    start = datetime(2024, 11, 16, tzinfo=timezone.utc)
    snapshots = []
    for n in range(rows):
        mid = 90_000.0 + (n % 997) * 0.5
        snapshots.append(OrderbookSnapshot(
            symbol=f"SYM{n % symbols}/USD:USD", timestamp=start + timedelta(milliseconds=n), exchange="deribit",
            bids=[[mid - 0.5 - i, 1.0 + i * 0.25] for i in range(levels)],
            asks=[[mid + 0.5 + i, 1.5 + i * 0.25] for i in range(levels)],
            receive_ts_ns=time.time_ns(), exchange_seq=n, seq=n // symbols,
        ))
    return snapshots


def measure(fmt: str, snapshots: list[OrderbookSnapshot], directory: Path) -> tuple[float, int]:
    """Rows/s writing every snapshot and closing the store, and the bytes written."""
    store = OrderbookDataStore(directory / fmt)
    save = getattr(store, f"save_snapshot_{fmt}")
    started = time.perf_counter()
    for snapshot in snapshots:
        save(snapshot)
    store.close()
    elapsed = time.perf_counter() - started
    size = sum(path.stat().st_size for path in (directory / fmt).rglob("*") if path.is_file())
    return len(snapshots) / elapsed, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--levels", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    snapshots = make_snapshots(args.rows, args.symbols, args.levels)
    results: dict[str, tuple[float, int]] = {}
    for _ in range(args.rounds):
        for fmt in ("jsonl", "csv", "parquet"):
            directory = Path(tempfile.mkdtemp(prefix="storage-bench-"))
            try:
                rate, size = measure(fmt, snapshots, directory)
            finally:
                shutil.rmtree(directory)
            results[fmt] = max(results.get(fmt, (0.0, 0)), (rate, size))
    print(f"{args.rows} snapshots, {args.symbols} symbols, {args.levels} levels per side, best of {args.rounds}")
    for fmt, (rate, size) in results.items():
        print(f"  {fmt:8s} {rate:>10,.0f} rows/s  {size / args.rows:7.1f} bytes/row")
    print(f"  parquet/jsonl write-rate ratio: {results['parquet'][0] / results['jsonl'][0]:.2f}")


if __name__ == "__main__":
    main()
