"""``ccxt-collector bench``: run the benchmark suite of a source checkout (``python -m bench``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from cli.options import UsageFailure, user_errors

CHECKOUT = Path(__file__).resolve().parent.parent


@click.command()
@click.option("--quick", is_flag=True, help="Tiny sizes: checks that everything runs (seconds).")
@click.option("--only", multiple=True, metavar="NAME",
              help="Run only this benchmark (repeatable): producer, archiver, latency, scale, peer, storage.")
@user_errors
def bench(quick: bool, only: tuple[str, ...]) -> None:
    """Measure the pipeline against baselines run side by side (about 5 minutes; results in bench/RESULTS.md)."""
    if not (CHECKOUT / "bench" / "__main__.py").is_file():
        raise UsageFailure("the benchmark suite ships with the source checkout only (bench/ next to cli/)")
    args = [sys.executable, "-m", "bench", *(["--quick"] if quick else []), *(f"--only={name}" for name in only)]
    sys.exit(subprocess.call(args, cwd=CHECKOUT))
