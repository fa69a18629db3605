"""``ccxt-collector cache`` (the latest-book cache worker) and ``ccxt-collector latest`` (read one book)."""

from __future__ import annotations

import json
import sys
from itertools import zip_longest
from typing import TYPE_CHECKING, Optional

import click

from cli.options import redis_url_option, run_worker, user_errors, worker_options

if TYPE_CHECKING:
    from rich.console import Group

    from common.model import OrderbookSnapshot

@click.command()
@worker_options
@user_errors
def cache(**common) -> None:
    """Keep the newest book of every (exchange, symbol) in Redis until SIGTERM/Ctrl-C (then exit 0).

    Books go to the HASH ccxt:latest:EXCHANGE (symbol -> msgpack wire payload). Run several for
    redundancy or load sharing: they share the consumer group "cache" and never write an older book
    over a newer one. Read with `ccxt-collector latest` or consumers.cache.LatestBooks.
    """
    from consumers.cache import LatestBookCache

    run_worker(LatestBookCache, **common)


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

    from common.redis_client import redact

    from consumers.cache import LatestBooks

    try:
        with LatestBooks(redis_url, stale_after=stale_after) as books:
            snapshot = books.get(exchange, symbol)
    except RedisError as exc:
        raise OSError(f"cannot read the latest-book cache at {redact(redis_url)}: {exc}") from None
    if snapshot is None:
        click.echo(f"no cached book for {exchange} {symbol} (is `ccxt-collector cache` running?)", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(snapshot.to_dict()))
        return
    console().print(book_view(snapshot, depth))


def console():
    """A rich console; when output is not a terminal (scripts, pipes) it is wide enough not to truncate."""
    from rich.console import Console

    out = Console()
    if not out.is_terminal:
        out.width = max(out.width, 160)
    return out


def number(value: Optional[float]) -> str:
    """A price or size for display: up to 10 significant digits, no exponent for ordinary magnitudes."""
    return "-" if value is None else f"{value:.10g}"


def book_view(snapshot: "OrderbookSnapshot", depth: int) -> "Group":
    """One book: bids and asks side by side, then a line with mid, spread, age, seq and a STALE marker."""
    from rich.console import Group
    from rich.table import Table

    table = Table(title=f"{snapshot.exchange} {snapshot.symbol} ({snapshot.market_type})")
    for name in ("bid size", "bid", "ask", "ask size"):
        table.add_column(name, justify="right")
    for bid, ask in zip_longest(snapshot.bids[:depth], snapshot.asks[:depth]):
        table.add_row(
            *(("", "") if bid is None else (number(bid[1]), f"[green]{number(bid[0])}[/]")),
            *(("", "") if ask is None else (f"[red]{number(ask[0])}[/]", number(ask[1]))),
        )
    spread, mid = snapshot.spread, snapshot.mid_price
    spread_bps = f" ({spread / mid * 1e4:.1f} bps)" if spread is not None and mid else ""
    summary = (f"mid {number(mid)}  spread {number(spread)}{spread_bps}  age {snapshot.extra.get('age', 0.0):.1f}s"
               f"  seq {snapshot.seq}" + ("  [bold red]STALE[/]" if snapshot.extra.get("stale") else ""))
    return Group(table, summary)
