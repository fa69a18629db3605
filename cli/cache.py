"""``ccxt-collector cache`` (the latest-book cache worker) and ``ccxt-collector latest`` (read one book)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from itertools import zip_longest

import click

from cli.options import redis_url_option, user_errors

shard_option = click.option(
    "--shard", "shards", multiple=True, metavar="TAG",
    help="Only these shards' streams (repeatable), e.g. --shard deribit.btc; default: every shard.",
)
verbose_option = click.option("-v", "--verbose", count=True, help="Debug logging.")


def setup_logging(verbose: int) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.command()
@redis_url_option
@shard_option
@verbose_option
@user_errors
def cache(redis_url: str, shards: tuple[str, ...], verbose: int) -> None:
    """Keep the newest book of every (exchange, symbol) in Redis until SIGTERM/Ctrl-C (then exit 0).

    Books go to the HASH ccxt:latest:EXCHANGE (symbol -> msgpack wire payload). Run several for
    redundancy or load sharing: they share the consumer group "cache" and never write an older book
    over a newer one. Read with `ccxt-collector latest` or consumers.cache.LatestBooks.
    """
    from consumers.cache import LatestBookCache
    from consumers.runner import serve

    setup_logging(verbose)
    asyncio.run(serve(LatestBookCache(), redis_url, shards=shards))


@click.command()
@click.argument("exchange")
@click.argument("symbol")
@click.option("--depth", type=click.IntRange(min=1), default=10, show_default=True, help="Levels per side to show.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly OrderbookSnapshot.to_dict() as one JSON object.")
@click.option("--stale-after", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds without an update after which the book is marked STALE.")
@redis_url_option
@user_errors
def latest(exchange: str, symbol: str, depth: int, as_json: bool, stale_after: float, redis_url: str) -> None:
    """Print the cached latest book of SYMBOL (unified symbol or native id) on EXCHANGE.

    Exit codes: 0 printed, 1 no such book in the cache (one line on stderr), 2 bad input or Redis unreachable.
    """
    from redis.exceptions import RedisError

    from consumers.cache import LatestBooks

    try:
        with LatestBooks(redis_url, stale_after=stale_after) as books:
            snapshot = books.get(exchange, symbol)
    except RedisError as exc:
        raise OSError(f"cannot read the latest-book cache at {redis_url.split('@')[-1]}: {exc}") from None
    if snapshot is None:
        click.echo(f"no cached book for {exchange} {symbol} (is `ccxt-collector cache` running?)", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(snapshot.to_dict()))
        return
    from rich.console import Console

    Console().print(book_table(snapshot, depth))


def book_table(snapshot, depth: int):
    """A rich table of one book: bids and asks side by side, with mid, spread, age and a STALE marker."""
    from rich.table import Table

    stale = " [bold red]STALE[/]" if snapshot.extra.get("stale") else ""
    spread = snapshot.spread
    spread_text = "-" if spread is None else f"{spread:g} ({spread / snapshot.mid_price * 1e4:.1f} bps)"
    mid = "-" if snapshot.mid_price is None else f"{snapshot.mid_price:g}"
    table = Table(
        title=f"{snapshot.exchange} {snapshot.symbol} ({snapshot.market_type}){stale}",
        caption=f"mid {mid}  spread {spread_text}  age {snapshot.extra.get('age', 0.0):.1f}s  seq {snapshot.seq}",
    )
    for name in ("bid size", "bid", "ask", "ask size"):
        table.add_column(name, justify="right")
    for bid, ask in zip_longest(snapshot.bids[:depth], snapshot.asks[:depth]):
        table.add_row(
            *(("", "") if bid is None else (f"{bid[1]:g}", f"[green]{bid[0]:g}[/]")),
            *(("", "") if ask is None else (f"[red]{ask[0]:g}[/]", f"{ask[1]:g}")),
        )
    return table
