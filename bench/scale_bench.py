"""Benchmark 4, scale and memory: ~2,000 option books in one producer, and the memory of a held snapshot.

The blast emulator lists 250 strikes per option expiry (2,000 options + 8 futures) and sends changes at a
realistic pace (2 per book per second in total, as one paced stream). Measured on the full producer
(``ProducerProcess`` publishing to Redis): the time from start (markets loaded, subscribe frames sent) until
every book delivered its first snapshot, its RSS and its CPU while streaming. Baseline for the RSS: the same
program idle-equivalent, i.e. bare ccxt watching the same books. Bytes per held snapshot: a
``CCXTProCollector`` with ``store_snapshots=True`` streams 50 books (20 levels per side) and the objects its
history keeps alive are counted (see :func:`bench.feeds.held_bytes`).
Targets: RSS < 300 MB, all subscribed in < 30 s, <= 2 KB per snapshot.
"""

from __future__ import annotations

import time

from bench.harness import BlastEmulator, Child, Row, cpu_seconds, measure_client, redis_server, rss_bytes

NAME = "scale"
STRIKES = 250
UPDATES_PER_BOOK = 2.0
RSS_TARGET = 300e6
SUBSCRIBE_TARGET = 30.0
SNAPSHOT_TARGET = 2048


def run(quick: bool = False) -> list[Row]:
    strikes, seconds = (5, 1.0) if quick else (STRIKES, 8.0)
    rows: list[Row] = []
    with BlastEmulator(option_strikes=strikes) as emulator, redis_server() as server:
        count = emulator.instrument_count
        emulator.set_rate(count * UPDATES_PER_BOOK)
        base, base_ready, _ = measure_client(emulator, "ccxt", count, seconds, warmup=1.0)
        producer = Child(["-m", "bench.feeds", "producer", "--url", emulator.url, "--count", str(count),
                          "--redis-url", server.url])
        try:
            ready = producer.wait_for("ready")
            time.sleep(1.0)
            cpu0, t0 = cpu_seconds(producer.pid), time.monotonic()
            time.sleep(seconds)
            cpu = (cpu_seconds(producer.pid) - cpu0) / (time.monotonic() - t0)
            rss = rss_bytes(producer.pid)
        finally:
            producer.stop()
        rate = f"{count:,} books at {count * UPDATES_PER_BOOK:,.0f} msgs/s"
        rows.append(Row(NAME, "subscribe all", f"{ready['ready']:.1f} s", f"{base_ready['ready']:.1f} s (bare ccxt)",
                        ready["ready"] / base_ready["ready"], f"< {SUBSCRIBE_TARGET:g} s",
                        ready["ready"] < SUBSCRIBE_TARGET, note=f"{rate}; from process start to every first book"))
        rows.append(Row(NAME, "producer RSS", f"{rss / 1e6:.0f} MB", f"{rss_bytes_of(base_ready) / 1e6:.0f} MB (bare ccxt)",
                        rss / rss_bytes_of(base_ready), f"< {RSS_TARGET / 1e6:g} MB", rss < RSS_TARGET))
        rows.append(Row(NAME, "producer CPU", f"{cpu * 100:.0f}% of a core",
                        f"{base.cpu / base.seconds * 100:.0f}% (bare ccxt)", cpu / max(base.cpu / base.seconds, 1e-9),
                        note=f"{rate}"))
        history = Child(["-m", "bench.feeds", "history", "--url", emulator.url, "--count", "50"])
        try:
            history.wait_for("ready")
            time.sleep(seconds)
        finally:
            final = history.stop()
        per_snapshot = final.get("bytes_per_snapshot", float("nan"))
        rows.append(Row(NAME, "bytes per held snapshot", f"{per_snapshot:,.0f} B",
                        target=f"<= {SNAPSHOT_TARGET} B", ok=per_snapshot <= SNAPSHOT_TARGET,
                        note=f"{final.get('snapshots', 0):,} snapshots in history, "
                             f"{final.get('levels', 0):.0f} levels each on average"))
    return rows


def rss_bytes_of(report: dict) -> float:
    """The RSS a client reported when it became ready."""
    return float(report["rss"])
