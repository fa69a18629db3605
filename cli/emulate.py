"""``ccxt-collector emulate``: run local exchange emulators in the foreground."""

from __future__ import annotations

import json
import signal
import threading

import click

from cli.options import UsageFailure, user_errors
from common.config import EXCHANGE_CONFIG_ENV


@click.command()
@click.option("--exchange", "exchanges", multiple=True, default=("deribit",), show_default=True, metavar="NAME",
              help="Exchange to emulate; repeat for several (all share one port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8801, show_default=True,
              help="Port to listen on (0 = any free port).")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the books: same seed, same books.")
@click.option("--update-interval", type=click.FloatRange(min=0.0, min_open=True), default=0.1, show_default=True,
              help="Seconds between two changes of each instrument's book.")
@click.option("--burst", type=click.IntRange(min=1), default=1, show_default=True,
              help="Changes per instrument per interval (load tests).")
@user_errors
def emulate(exchanges: tuple[str, ...], host: str, port: int, seed: int, update_interval: float, burst: int) -> None:
    """Serve an offline exchange that unmodified ccxt.pro streams order books from.

    Speaks the exchange's public REST and WebSocket API on HOST:PORT with seeded random-walk books, and a
    JSON control API under /_emulator/ (pause, resume, close, abort, skip, bad_checksum, malformed,
    stall, fail_subscribe, shift, list, delist, rate, book, instruments, stats). Runs until Ctrl-C / SIGTERM.

    \b
    Example:
      ccxt-collector emulate --exchange deribit --port 8801
      curl -X POST http://127.0.0.1:8801/_emulator/deribit/pause
    """
    from emulator import EXCHANGES, EmulatorServer

    unknown = [name for name in exchanges if name not in EXCHANGES]
    if unknown:
        raise UsageFailure(f"no emulator for exchange {unknown[0]!r}; available: {', '.join(sorted(EXCHANGES))}")
    server = EmulatorServer(exchanges=exchanges, seed=seed, host=host, port=port,
                            update_interval=update_interval, burst=burst)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    try:
        env_value = json.dumps(server.env_config(), separators=(",", ":"))
        click.echo(f"emulating {', '.join(server.emulators)} at {server.url} (seed {seed})")
        for name in server.emulators:
            config = json.dumps(server.ccxt_config(name), separators=(",", ":"))
            click.echo(f"  {name}: {len(server.instruments(name))} instruments; --exchange-config '{config}'")
        click.echo(f"  export {EXCHANGE_CONFIG_ENV}='{env_value}'")
        click.echo(f"  control API: {server.url}/_emulator   (Ctrl-C to stop)")
        stop.wait()
    finally:
        server.stop()
    click.echo("emulator stopped")
