"""``ccxt-collector markets``: list an exchange's futures, perpetuals and options (no streaming)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Iterator, Optional

import click

from cli.options import UsageFailure, exchange_config_option, user_errors
from common.config import StreamConfig, deep_merge
from common.markets import MarketInfo, expiry_matcher

MARKET_TYPES = ("future", "swap", "option")


@contextlib.contextmanager
def demo_exchange_config(exchange: str, demo: bool, exchange_config: dict) -> Iterator[dict]:
    """With ``demo``: start the bundled emulator for ``exchange`` in-process and yield ``exchange_config``
    pointed at it (stopped on exit); without: yield ``exchange_config`` unchanged."""
    if not demo:
        yield exchange_config
        return
    from emulator import EmulatorServer
    from emulator.base import EmulatorError

    try:
        server = EmulatorServer(exchanges=[exchange], seed=42, port=0).start()
    except EmulatorError as exc:
        raise UsageFailure(f"--demo: {exc}") from None
    try:
        yield deep_merge(server.ccxt_config(exchange), exchange_config)
    finally:
        server.stop()


def select_markets(
    collector: Any,
    market_type: Optional[str] = None,
    base: Optional[str] = None,
    expiry: Optional[str] = None,
    option_type: Optional[str] = None,
) -> list[MarketInfo]:
    """Markets of a started collector matching the filters (futures and perpetuals first, then options)."""
    kinds = (market_type,) if market_type else MARKET_TYPES
    on_expiry = expiry_matcher(expiry) if expiry else None
    futures = [] if option_type else collector.get_available_futures(base_currency=base)
    rows = [collector.get_market(symbol) for symbol in futures]
    rows = [
        info for info in rows
        if info.type in kinds and (on_expiry is None or (info.type != "swap" and on_expiry(info.expiry_date)))
    ]
    if "option" in kinds:
        options = collector.get_available_options(base_currency=base, option_type=option_type, expiry=expiry)
        rows += [collector.get_market(symbol) for symbol in options]
    return rows


@click.command()
@click.option("--exchange", default="deribit", show_default=True, help="ccxt exchange id.")
@click.option("--type", "market_type", type=click.Choice(MARKET_TYPES), help="Only dated futures, perpetual swaps or options.")
@click.option("--base", help="Base currency, e.g. BTC.")
@click.option("--expiry", help="DEC26 (month), 25DEC26 (day), 2026-12-25 or 261225.")
@click.option("--option-type", type=click.Choice(["C", "P", "call", "put"], case_sensitive=False), help="Calls or puts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of market records instead of a table.")
@exchange_config_option
@click.option("--demo", is_flag=True, help="List the bundled exchange emulator's markets (no internet).")
@user_errors
def markets(exchange, market_type, base, expiry, option_type, as_json, exchange_config, demo) -> None:
    """List the exchange's futures, perpetuals and options with their unified symbols and native ids.

    \b
    Example:
      ccxt-collector markets --exchange deribit --type option --base BTC --expiry DEC26 --option-type C
    """
    config = StreamConfig(exchange_id=exchange)  # validates the exchange id before any network
    with demo_exchange_config(exchange, demo, exchange_config) as ccxt_overrides:
        config.exchange_config = ccxt_overrides
        rows = asyncio.run(_load(config, market_type, base, expiry, option_type))
    if as_json:
        click.echo(json.dumps([info.to_dict() for info in rows], indent=2))
    else:
        _print_table(exchange, rows)


async def _load(config: StreamConfig, market_type, base, expiry, option_type) -> list[MarketInfo]:
    from producer import CCXTProCollector

    collector = CCXTProCollector(config)
    await collector.start()
    try:
        return select_markets(collector, market_type, base, expiry, option_type)
    finally:
        await collector.stop()


def _print_table(exchange: str, rows: list[MarketInfo]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{exchange}: {len(rows)} markets")
    for column in ("symbol", "id", "type", "expiry", "strike", "option type"):
        table.add_column(column, justify="right" if column == "strike" else "left", no_wrap=column in ("symbol", "id"))
    for info in rows:
        table.add_row(
            info.symbol,
            info.id,
            info.type,
            str(info.expiry_date) if info.expiry_date and info.type != "swap" else "",
            f"{info.strike:g}" if info.strike is not None else "",
            info.option_type or "",
        )
    Console().print(table)
