"""Benchmark 3, end-to-end latency: emulator frame sent -> book visible in the latest-book cache, and -> row
durable in the Parquet archive, at 1k, 5k and 20k updates/s (50 instruments).

Method. Processes: the blast emulator (paced at the rate), the full producer, the cache worker and the archiver
worker, each in its own process, with one Redis. Every change message carries a unique ``change_id`` and the
emulator keeps the wall-clock time it wrote each one to the socket. The producer's snapshot carries the
``change_id`` of the newest message applied to the book (``xseq``). The cache worker notes the time its
pipelined Lua write returned (from then on every reader sees the book or a newer one); the archiver notes the
time its ``handle``/``flush`` returned an entry as durable (the file fsync'd and renamed). Latency = noted time
- send time of the ``xseq`` message, over every snapshot whose message was sent inside the rate's window.
ccxt coalesces messages that arrive together into one snapshot, so a message's latency is measured at the
snapshot that first includes it, and only snapshots are counted. Same machine, same clock (time.time_ns()).
Target: cache p99 < 5 ms at 5k/s. The archive's latency is set by its ``max_file_age`` (1 s here).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.harness import BlastEmulator, Child, Row, redis_server, scratch_dir

NAME = "latency"
TARGET_MS = 5.0
TARGET_RATE = 5000
COUNT = 50


def run(quick: bool = False) -> list[Row]:
    rates, seconds, settle = ((1000,), 1.5, 0.5) if quick else ((1000, 5000, 20000), 6.0, 1.5)
    rows: list[Row] = []
    with BlastEmulator(rate=rates[0], record_sends=True) as emulator, redis_server() as server, \
            scratch_dir("bench-latency-") as work:
        producer = Child(["-m", "bench.feeds", "producer", "--url", emulator.url, "--count", str(COUNT),
                          "--redis-url", server.url])
        workers = {kind: Child(["-m", "bench.feeds", kind, "--redis-url", server.url, "--out", str(work / kind)])
                   for kind in ("cache", "archive")}
        try:
            producer.wait_for("ready")
            for worker in workers.values():
                worker.wait_for("ready")
            windows = []
            for rate in rates:
                emulator.set_rate(rate)
                time.sleep(settle)
                start = time.time_ns()
                time.sleep(seconds)
                windows.append((rate, start, time.time_ns()))
            time.sleep(2.5)  # let the archive's last files of the window close
        finally:
            producer.stop()
            finals = {kind: worker.stop() for kind, worker in workers.items()}
        first_id, sent = emulator.send_times()
        sent_ns = np.array(sent, dtype=np.int64)
        for kind in ("cache", "archive"):
            if not finals[kind].get("done"):
                raise RuntimeError(f"the {kind} worker did not finish cleanly")
            seen = np.frombuffer(Path(work / kind).read_bytes(), dtype=np.int64).reshape(-1, 3)
            index = seen[:, 0] - first_id
            valid = (index >= 0) & (index < len(sent_ns))
            sent_at, received_at, seen_at = sent_ns[index[valid]], seen[valid, 1], seen[valid, 2]
            for rate, start, end in windows:
                inside = (sent_at >= start) & (sent_at < end)
                rows.append(_row(kind, rate, (seen_at[inside] - sent_at[inside]) / 1e6,
                                 (received_at[inside] - sent_at[inside]) / 1e6))
    return rows


def _row(kind: str, rate: int, latency_ms: np.ndarray, to_producer_ms: np.ndarray) -> Row:
    """p50/p99/max of ``latency_ms``; the note splits it at the producer's receive time (ccxt's part first)."""
    metric = f"{kind} @ {rate // 1000}k/s p50/p99/max"
    gated = kind == "cache" and rate == TARGET_RATE
    if not len(latency_ms):
        return Row(NAME, metric, "no snapshots", ok=False if gated else None)
    p50, p99, worst = np.percentile(latency_ms, 50), np.percentile(latency_ms, 99), latency_ms.max()
    after = latency_ms - to_producer_ms
    note = (f"{len(latency_ms):,} snapshots; sent -> producer received it (ccxt's part) p50/p99 "
            f"{np.percentile(to_producer_ms, 50):.1f} / {np.percentile(to_producer_ms, 99):.1f} ms, then -> "
            f"{'visible' if kind == 'cache' else 'durable'} {np.percentile(after, 50):.1f} / "
            f"{np.percentile(after, 99):.1f} ms")
    return Row(NAME, metric, f"{p50:.1f} / {p99:.1f} / {worst:.1f} ms", target=f"p99 < {TARGET_MS:g} ms" if gated else "",
               ok=(p99 < TARGET_MS) if gated else None, note=note if kind == "cache" else "")
