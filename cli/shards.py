"""``ccxt-collector shards plan``: split an exchange's selection into balanced producer shards."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import yaml

from cli.options import comma_separated, exchange_config_option, user_errors


@click.group()
def shards() -> None:
    """Plan how to split an exchange's instruments over producer processes."""


@shards.command()
@click.option("--exchange", required=True, help="ccxt exchange id, e.g. deribit.")
@click.option("--futures", multiple=True, callback=comma_separated, metavar="BASES", help="Bases whose futures + perpetuals to cover (BTC,ETH).")
@click.option("--options", multiple=True, callback=comma_separated, metavar="BASES", help="Bases whose option chains to cover.")
@click.option("--max-symbols", type=click.IntRange(min=1), default=500, show_default=True,
              help="At most this many symbols per shard (one producer process each).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write one shard YAML per shard into this directory.")
@exchange_config_option
@click.option("--demo", is_flag=True, help="Plan against the bundled exchange emulator (no internet).")
@user_errors
def plan(exchange: str, futures: list[str], options: list[str], max_symbols: int, out_dir: str | None,
         exchange_config: dict, demo: bool) -> None:
    """Print (or write) shard configs that cover the selection with balanced symbol counts.

    Futures + perpetuals of a base form one shard; options are split by whole expiries, so new strikes
    of an expiry land in the same shard at the next market refresh. Example:

    \b
      ccxt-collector shards plan --exchange deribit --futures BTC,ETH --options BTC,ETH --max-symbols 400 --out shards/
      ccxt-collector produce --config shards/deribit-btc-opt1.yaml
    """
    from producer.planner import plan_shards

    if not futures and not options:
        raise ValueError("nothing to plan: give --futures and/or --options")
    markets = asyncio.run(_load_markets(exchange, exchange_config, demo))
    planned = plan_shards(exchange, markets, futures, options, max_symbols)
    if not planned:
        raise ValueError(f"{exchange} lists no active instruments for futures={futures} options={options}")
    total = sum(shard["symbols_count"] for shard in planned)
    click.echo(f"# {len(planned)} shards, {total} symbols, at most {max_symbols} per shard")
    for shard in planned:
        body = {k: v for k, v in shard.items() if k != "symbols_count"}
        name = f"{exchange}-{shard['shard']}"
        if out_dir:
            path = Path(out_dir) / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# {shard['symbols_count']} symbols at planning time\n" + yaml.safe_dump(body, sort_keys=False))
            click.echo(f"{path}  ({shard['symbols_count']} symbols)")
        else:
            click.echo(f"---\n# {name}: {shard['symbols_count']} symbols\n" + yaml.safe_dump(body, sort_keys=False), nl=False)


async def _load_markets(exchange: str, exchange_config: dict, demo: bool):
    from common.config import StreamConfig, deep_merge
    from producer import CCXTProCollector

    server = None
    if demo:
        from emulator import EmulatorServer

        server = EmulatorServer(exchanges=[exchange], port=0).start()
        exchange_config = deep_merge(server.ccxt_config(exchange), exchange_config)
    collector = CCXTProCollector(StreamConfig(exchange_id=exchange, exchange_config=exchange_config))
    try:
        await collector.start()
        symbols = collector.get_available_futures() + collector.get_available_options()
        return [collector.get_market(symbol) for symbol in symbols]
    finally:
        await collector.stop()
        if server is not None:
            server.stop()
