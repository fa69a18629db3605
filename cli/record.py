"""``ccxt-collector record``: stream order books in one process and write them to files (no Redis)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any, Optional

import click

from cli.markets import demo_exchange_config
from cli.options import UsageFailure, comma_separated, exchange_config_option, user_errors
from common.config import StreamConfig

REFRESH_PER_SECOND = 2
MAX_TABLE_ROWS = 40


@click.command()
@click.option("--exchange", default="deribit", show_default=True, help="ccxt exchange id.")
@click.option("--futures", multiple=True, callback=comma_separated, metavar="BASES", help="All futures + perpetuals of these bases (BTC,ETH).")
@click.option("--options", multiple=True, callback=comma_separated, metavar="BASES", help="The option chains of these bases.")
@click.option("--symbols", multiple=True, callback=comma_separated, metavar="SYMBOLS", help="Explicit symbols (unified or native ids).")
@click.option("--expiry", help="Options expiry filter: DEC26 (month), 25DEC26 (day), 2026-12-25 or 261225.")
@click.option("--option-type", type=click.Choice(["C", "P", "call", "put"], case_sensitive=False), help="Only calls or puts.")
@click.option("--out", "out_dir", default="data/raw/orderbooks", show_default=True, type=click.Path(file_okay=False),
              help="Directory the files are written under (<out>/<format>/<SYMBOL>_<YYYYMMDD>.<format>).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet", "both"]), default="jsonl",
              show_default=True, help="File format; 'both' = JSONL + Parquet.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after this many seconds (default: until Ctrl-C).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Order-book levels per snapshot.")
@exchange_config_option
@click.option("--demo", is_flag=True, help="Stream from the bundled exchange emulator started in-process (no internet).")
@user_errors
def record(exchange, futures, options, symbols, expiry, option_type, out_dir, fmt, duration, limit, exchange_config,
           demo) -> None:
    """Stream order books and record every snapshot to files, with a live table.

    \b
    Examples:
      ccxt-collector record --demo --duration 10          # offline: BTC futures + options from the emulator
      ccxt-collector record --exchange deribit --futures BTC --options BTC --expiry DEC26 --out data/ --format both

    Ctrl-C / SIGTERM / --duration: stops streaming, flushes the files, prints a summary, exits 0.
    """
    if not (futures or options or symbols):
        if not demo:
            raise UsageFailure("nothing to record: give --futures, --options and/or --symbols")
        futures, options = ["BTC"], ["BTC"]  # the demo's first impression: a whole BTC curve and chain
        click.echo("demo: recording BTC futures, perpetual and options (choose with --futures/--options/--symbols)",
                   err=True)
    config = StreamConfig(exchange_id=exchange, orderbook_limit=limit)
    from common.storage import StreamingDataRecorder

    recorder = StreamingDataRecorder(base_path=out_dir, format=fmt)
    try:
        with demo_exchange_config(exchange, demo, exchange_config) as ccxt_overrides:
            config.exchange_config = ccxt_overrides
            config.on_orderbook_update = recorder.record_snapshot
            asyncio.run(_record(config, futures, options, symbols, expiry, option_type, duration))
    finally:
        recorder.close()
    _print_summary(recorder.get_stats())


async def _record(config: StreamConfig, futures: list[str], options: list[str], symbols: list[str],
                  expiry: Optional[str], option_type: Optional[str], duration: Optional[float]) -> None:
    from producer import CCXTProCollector

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    collector = CCXTProCollector(config)
    await collector.start()
    try:
        selected_futures, selected_options = _select(collector, futures, options, symbols, expiry, option_type)
        await collector.subscribe_futures(selected_futures)
        await collector.subscribe_options(selected_options)
        await _show_live(collector, stop, duration)
    finally:
        await collector.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _select(collector: Any, futures: list[str], options: list[str], symbols: list[str],
            expiry: Optional[str], option_type: Optional[str]) -> tuple[list[str], list[str]]:
    """(futures, options) named by the selection flags; ValueError if they name nothing."""
    selected_futures = [s for base in futures for s in collector.get_available_futures(base_currency=base)]
    selected_options = [
        s for base in options
        for s in collector.get_available_options(base_currency=base, option_type=option_type, expiry=expiry)
    ]
    for symbol in symbols:
        market = collector.get_market(symbol)
        (selected_options if market.type == "option" else selected_futures).append(market.symbol)
    if not selected_futures and not selected_options:
        raise ValueError("the selection matches no instrument (check --futures/--options bases and --expiry)")
    return sorted(set(selected_futures)), sorted(set(selected_options))


async def _show_live(collector: Any, stop: asyncio.Event, duration: Optional[float]) -> None:
    """Refresh the table ~2x/s until ``stop`` is set or ``duration`` elapsed."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    deadline = None if duration is None else time.monotonic() + duration
    with Live(_table(collector), console=console, refresh_per_second=REFRESH_PER_SECOND) as live:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            timeout = 1 / REFRESH_PER_SECOND
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - time.monotonic()))
            try:
                await asyncio.wait_for(stop.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            live.update(_table(collector))
    if not console.is_terminal:
        console.line()  # a non-terminal Live leaves the last table line open


def _table(collector: Any) -> Any:
    from rich.table import Table

    status = collector.get_status()
    books = collector.get_all_orderbooks()
    table = Table(title=f"{collector.exchange_id}: {len(status)} symbols (Ctrl-C to stop)")
    for column in ("symbol", "state", "updates", "mid", "spread", "age s"):
        table.add_column(column, justify="left" if column in ("symbol", "state") else "right", no_wrap=column == "symbol")
    for symbol in sorted(status)[:MAX_TABLE_ROWS]:
        row, book = status[symbol], books.get(symbol)
        age = row["last_update_age"]
        table.add_row(
            symbol,
            row["state"],
            str(row["updates"]),
            _number(book.mid_price if book else None),
            _number(book.spread if book else None),
            "" if age is None else f"{age:.1f}",
        )
    if len(status) > MAX_TABLE_ROWS:
        table.caption = f"... and {len(status) - MAX_TABLE_ROWS} more"
    return table


def _number(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.6g}"


def _print_summary(stats: dict[str, Any]) -> None:
    click.echo(
        f"recorded {stats['total_snapshots']} snapshots of {len(stats['symbols'])} symbols "
        f"into {len(stats['files'])} files under {stats['base_path']}"
        + (f"; {stats['errors']} write errors" if stats["errors"] else "")
    )
