"""Benchmark 5, peer comparison: cryptofeed 2.4.1 with its Redis Streams book backend against the full producer,
both consuming the same saturated Deribit feed (50 instruments) into a real Redis.

Reported per client: messages/s consumed and messages per CPU-second of the client process ("per core"), and
what reached Redis. cryptofeed writes every delta (its entries/s is counted with XLEN over the window); the
producer writes coalesced 20-level snapshots (its published count). cryptofeed is not a project dependency:
it runs under ``$BENCH_CRYPTOFEED_PYTHON`` or ``~/.cache/ccxt-collector-bench/cryptofeed-venv/bin/python`` if
either can import it (``python -m venv --system-site-packages <dir> && <dir>/bin/pip install cryptofeed==2.4.1``;
a separate venv keeps its extra packages, e.g. aiodns, out of the project's environment), else this python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import redis

from bench.harness import BlastEmulator, Child, Row, Window, measure_client, measure_window, redis_server

NAME = "peer"
COUNT = 50
DEFAULT_VENV_PYTHON = Path.home() / ".cache/ccxt-collector-bench/cryptofeed-venv/bin/python"


def cryptofeed_python() -> Optional[str]:
    """The first interpreter that can import cryptofeed, or None."""
    candidates = [os.environ.get("BENCH_CRYPTOFEED_PYTHON"), str(DEFAULT_VENV_PYTHON), sys.executable]
    for python in filter(None, candidates):
        if Path(python).exists() and subprocess.run([python, "-c", "import cryptofeed"],
                                                    capture_output=True).returncode == 0:
            return python
    return None


def run(quick: bool = False) -> list[Row]:
    python = cryptofeed_python()
    if python is None:
        return [Row(NAME, "cryptofeed msgs/s per core", "skipped",
                    note="cryptofeed is not importable: pip install cryptofeed==2.4.1 (Python 3.11 gets 2.4.1), "
                         "or point $BENCH_CRYPTOFEED_PYTHON at an interpreter that has it")]
    seconds, warmup = (1.0, 0.5) if quick else (8.0, 2.0)
    count = 5 if quick else COUNT
    with BlastEmulator() as emulator, redis_server() as server:
        client = redis.Redis.from_url(server.url)
        ours, _, final = measure_client(emulator, "producer", count, seconds, warmup, redis_url=server.url)
        client.flushall()
        peer, entries = _measure_cryptofeed(emulator, python, server.url, client, count, seconds, warmup)
        client.close()
    ratio = ours.rate_per_core / peer.rate_per_core
    return [
        Row(NAME, f"{count} symbols msgs/s per core", f"{ours.rate_per_core:,.0f} (ours)",
            f"{peer.rate_per_core:,.0f} (cryptofeed)", ratio,
            note=(f"msgs/s consumed: ours {ours.rate:,.0f} at {ours.cpu_us_per_message:.1f} us CPU each, cryptofeed "
                  f"{peer.rate:,.0f} at {peer.cpu_us_per_message:.1f} us; into Redis: ours {final.get('published', 0):,}"
                  f" coalesced 20-level snapshots in the whole run, cryptofeed {entries / peer.seconds:,.0f} delta "
                  f"entries/s in the window")),
    ]


def _measure_cryptofeed(emulator: BlastEmulator, python: str, redis_url: str, client: redis.Redis, count: int,
                        seconds: float, warmup: float) -> tuple[Window, int]:
    """(window, Redis entries its backend wrote during the window)."""
    child = Child(["-m", "bench.feeds", "cryptofeed", "--url", emulator.url, "--count", str(count),
                   "--redis-url", redis_url], python=python)
    try:
        child.wait_for("ready")
        time.sleep(warmup)
        entries0 = _stream_entries(client)
        window = measure_window(emulator, [child.pid], seconds)
        entries = _stream_entries(client) - entries0
    finally:
        child.stop()
    return window, entries


def _stream_entries(client: redis.Redis) -> int:
    keys = list(client.scan_iter(match="book-*", count=1000))
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.xlen(key)
        return sum(pipe.execute())
