"""Benchmark 1, producer efficiency: how many book messages/s a client consumes from a saturated socket.

The blast emulator (its own process) writes Deribit book changes as fast as the client reads them, for the
first 50 and 500 instruments. Baseline: bare ccxt ``watch_order_book`` loops doing nothing. Measured: the full
producer (CCXTProCollector + RedisPublisher into a real Redis). Messages consumed = the emulator's sent counter
over the window (the socket is saturated, so sent = read). Target: producer >= 0.85 x baseline.
"""

from __future__ import annotations

import redis

from bench.harness import BlastEmulator, Row, measure_client, redis_server

NAME = "producer"
TARGET = 0.85


def run(quick: bool = False) -> list[Row]:
    counts, seconds, warmup = ((5,), 1.0, 0.3) if quick else ((50, 500), 8.0, 2.0)
    rows: list[Row] = []
    with BlastEmulator(option_strikes=5 if quick else 63) as emulator, redis_server() as server:
        client = redis.Redis.from_url(server.url)
        for count in counts:
            base, _, _ = measure_client(emulator, "ccxt", count, seconds, warmup)
            redis_cpu0 = _redis_cpu(client)
            prod, _, final = measure_client(emulator, "producer", count, seconds, warmup, redis_url=server.url)
            redis_cpu = _redis_cpu(client) - redis_cpu0
            client.flushall()
            ratio = prod.rate / base.rate
            rows.append(Row(
                NAME, f"{count} symbols msgs/s", f"{prod.rate:,.0f}", f"{base.rate:,.0f} (bare ccxt)", ratio,
                f">= {TARGET} x", ratio >= TARGET,
                note=(f"CPU per message: producer {prod.cpu_us_per_message:.1f} us vs bare ccxt "
                      f"{base.cpu_us_per_message:.1f} us; producer published {final.get('published', 0):,} "
                      f"snapshots in total, Redis used {redis_cpu:.1f} CPU-s during the producer run"),
            ))
        client.close()
    return rows


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
