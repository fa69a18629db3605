"""Soak run: the real pipeline for a long time at a realistic rate; memory must stay flat.

    python -m bench.soak                       # 10 minutes, ~500 deribit symbols, 3,000 updates/s
    python -m bench.soak --minutes 60 --rate 5000

A Deribit emulator (its own process) streams book changes for ~500 instruments at ``--rate`` updates/s
to a real ``ccxt-collector produce`` process; ``archive`` and ``cache`` consume the streams from a
throwaway redis-server. Every ``--sample`` seconds the RSS of the three processes is read from /proc.
After the warm-up (the first 20% of the run, at least one minute unless the run is shorter), each
process's RSS must stay within ``--max-growth`` (5%) of its value at the end of the warm-up; the exit
code is 1 if any process grew more, so the command can gate a release. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.harness import BlastEmulator, redis_server, rss_bytes, scratch_dir

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Tracked:
    """One pipeline process and its RSS samples (seconds since start, bytes)."""

    name: str
    proc: subprocess.Popen
    samples: list[tuple[float, int]] = field(default_factory=list)

    def growth_after(self, warmup: float) -> tuple[int, int, float]:
        """(RSS at the end of warm-up, max RSS after it, growth in %)."""
        after = [rss for t, rss in self.samples if t >= warmup]
        if not after:
            raise SystemExit(f"soak: no sample of {self.name} after the warm-up; run longer")
        base = after[0]
        peak = max(after)
        return base, peak, 100.0 * (peak - base) / base


def start(name: str, args: list[str], redis_url: str, log_dir: Path) -> Tracked:
    log = open(log_dir / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "REDIS_URL": redis_url})
    return Tracked(name, proc)


def run(minutes: float, rate: float, option_strikes: int, sample: float, max_growth: float) -> int:
    duration = minutes * 60
    warmup = min(max(60.0, 0.2 * duration), 0.5 * duration)
    with scratch_dir("soak-") as work, redis_server("soak-redis-") as server, \
            BlastEmulator(rate=rate, option_strikes=option_strikes) as emulator:
        print(f"soak: {emulator.instrument_count} instruments at {rate:g} updates/s for {minutes:g} min "
              f"(warm-up {warmup:.0f} s); logs in {work}", flush=True)
        config = json.dumps(emulator.ccxt_config())
        tracked = [
            start("produce", ["produce", "--exchange", "deribit", "--shard", "soak", "--futures", "BTC,ETH",
                              "--options", "BTC,ETH", "--exchange-config", config], server.url, work),
            start("archive", ["archive", "--out", str(work / "archive"), "--max-file-age", "30"], server.url, work),
            start("cache", ["cache"], server.url, work),
        ]
        client = redis.Redis.from_url(server.url)
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < duration:
                for item in tracked:
                    if item.proc.poll() is not None:
                        raise SystemExit(f"soak: {item.name} exited with {item.proc.returncode}; see {work}/{item.name}.log")
                    item.samples.append((elapsed, rss_bytes(item.proc.pid)))
                status = {k.decode(): v.decode() for k, v in client.hgetall("ccxt:{deribit.soak}:status").items()}
                print(f"  {elapsed:6.0f} s  " + "  ".join(f"{t.name} {t.samples[-1][1] / 2**20:6.1f} MB" for t in tracked)
                      + f"  symbols {status.get('streaming', '?')}/{status.get('symbols', '?')}"
                      f"  updates/s {status.get('updates_per_s', '?')}  published {status.get('published', '?')}",
                      flush=True)
                time.sleep(sample)
        finally:
            for item in tracked:
                item.proc.terminate()
            exits = {item.name: item.proc.wait(120) for item in tracked}
            client.close()
    failed = False
    print(f"\n{'process':<10}{'RSS after warm-up':>20}{'max RSS after':>16}{'growth':>10}  verdict")
    for item in tracked:
        base, peak, growth = item.growth_after(warmup)
        ok = growth < max_growth
        failed |= not ok
        print(f"{item.name:<10}{base / 2**20:>17.1f} MB{peak / 2**20:>13.1f} MB{growth:>9.1f}%  "
              f"{'flat' if ok else f'GREW more than {max_growth:g}%'}")
    print(f"exit codes on SIGTERM: {exits}")
    failed |= any(code != 0 for code in exits.values())
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    parser.add_argument("--rate", type=float, default=3000.0, help="book updates per second over all symbols")
    parser.add_argument("--option-strikes", type=int, default=62, help="strikes per expiry (62 -> 504 instruments)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--max-growth", type=float, default=5.0, help="allowed RSS growth after warm-up, in %%")
    args = parser.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or args.sample <= 0:
        parser.error("--minutes, --rate and --sample must be positive")
    sys.exit(run(args.minutes, args.rate, args.option_strikes, args.sample, args.max_growth))


if __name__ == "__main__":
    main()
