"""Smoke test of the benchmark suite: ``python -m bench --quick`` runs every benchmark at a tiny size and prints
a row for each (no timing assertions: the sizes are far too small to measure anything)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench.__main__ import BENCHMARKS
from emulator.blast import change_cycle
from emulator.books import BookSpec, RandomWalkBook

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(150)
def test_quick_run_prints_a_row_per_benchmark() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=140)
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line.split() for line in done.stdout.splitlines()]
    benches = {cells[0] for cells in table if cells}
    assert set(BENCHMARKS) <= benches, done.stdout
    failed = [" ".join(cells) for cells in table if len(cells) > 1 and cells[1] == "error"]
    assert not failed, done.stdout


def test_blast_emulator_chain_is_valid() -> None:
    """Every pre-generated change applies to the book it follows and the cycle returns to the start."""
    book = RandomWalkBook(BookSpec(100.0, 0.5, 1.0), random.Random(7))
    start = {"bids": {book.price(t): a for t, a in book.bids.items()},
             "asks": {book.price(t): a for t, a in book.asks.items()}}
    levels = {side: dict(values) for side, values in start.items()}
    for tail in change_cycle(book, 50):
        message = orjson.loads(b"{" + tail[:-2])
        for side in ("bids", "asks"):
            for action, price, amount in message[side]:
                assert (price in levels[side]) == (action != "new"), (action, price)
                if action == "delete":
                    del levels[side][price]
                else:
                    levels[side][price] = amount
    assert levels == start
