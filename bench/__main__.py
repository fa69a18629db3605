"""``python -m bench``: run the benchmark suite and print one table (see ``bench/RESULTS.md``).

    python -m bench                      everything (about 4-5 minutes on 2 cores)
    python -m bench --quick              tiny sizes, seconds (the smoke test)
    python -m bench --only latency       one benchmark (repeat --only for several)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

from bench import latency_bench, peer_bench, producer_bench, scale_bench, script_rows
from bench.harness import BenchError, Row, machine_description, print_table

BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "producer": producer_bench.run,
    "archiver": script_rows.run_archiver,
    "latency": latency_bench.run,
    "scale": scale_bench.run,
    "peer": peer_bench.run,
    "storage": script_rows.run_storage,
}


def run(names: list[str], quick: bool) -> list[Row]:
    """Run the named benchmarks in order; a benchmark that fails gives one error row, the rest still run."""
    rows: list[Row] = []
    for name in names:
        started = time.monotonic()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows.extend(BENCHMARKS[name](quick))
        except (BenchError, OSError, RuntimeError) as exc:
            rows.append(Row(name, "error", "failed", ok=False, note=str(exc).splitlines()[0] if str(exc) else repr(exc)))
        print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="ccxt-collector benchmark suite")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs (seconds)")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    machine = machine_description()
    print(f"machine: {machine['nproc']} CPUs, {machine['cpu']}, Python {machine['python']}, "
          f"Redis {machine['redis']}{'  (--quick: sizes too small to mean anything)' if args.quick else ''}")
    started = time.monotonic()
    rows = run(names, args.quick)
    print_table(rows)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
