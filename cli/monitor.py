"""``ccxt-collector monitor`` (arbitrage alerts worker) and ``ccxt-collector compare`` (side-by-side table)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Optional

import click

from cli.cache import console, number
from cli.options import redis_url_option, run_worker, user_errors, worker_options
from common.config import load_mapping

if TYPE_CHECKING:
    from rich.table import Table

    from consumers.cache import LatestBooks
    from consumers.grouping import Grouper, Membership

groups_option = click.option(
    "--groups", "groups_file", metavar="FILE_OR_JSON",
    help='Explicit comparison groups: YAML/JSON mapping name -> ["exchange:symbol", ...] (file or inline JSON).',
)


def _groups(groups_file: Optional[str]) -> dict:
    return load_mapping(groups_file, "--groups") if groups_file else {}


@click.command()
@click.option("--threshold-bps", type=float, default=5.0, show_default=True,
              help="Alert when a crossed market's edge net of both taker fees reaches this many bps.")
@click.option("--close-margin-bps", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Hysteresis: an open opportunity closes when its net edge falls below threshold - margin.")
@click.option("--fee", "fees", multiple=True, metavar="EXCHANGE=BPS", help="Taker fee of an exchange (repeatable).")
@click.option("--default-fee-bps", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Taker fee of exchanges without --fee.")
@groups_option
@click.option("--max-age", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Ignore books not updated for this many seconds (a dead feed never creates an opportunity).")
@worker_options
@user_errors
def monitor(threshold_bps: float, close_margin_bps: float, fees: tuple[str, ...], default_fee_bps: float,
            groups_file: Optional[str], max_age: float, **common) -> None:
    """Watch every book stream for crossed markets across exchanges until SIGTERM/Ctrl-C (then exit 0).

    Instruments are grouped across exchanges (BTC-swap, BTC-future-2026-12-25,
    BTC-option-2026-12-25-60000-call; see the README for the USD/USDT caveat). When the best bid on one
    exchange exceeds the best ask on another by at least --threshold-bps after both taker fees, one
    "open" alert goes to the stream ccxt:alerts and the log; one "close" follows when it narrows or a
    book goes stale.

    \b
    Example: ccxt-collector monitor --threshold-bps 3 --fee deribit=5 --fee okx=8
    """
    from consumers.arbitrage import ArbitrageEngine, FeeSchedule, parse_fees
    from consumers.grouping import Grouper
    from consumers.monitor import ArbitrageMonitor

    def build() -> ArbitrageMonitor:
        return ArbitrageMonitor(ArbitrageEngine(
            Grouper(_groups(groups_file)), FeeSchedule(parse_fees(fees), default_fee_bps), threshold_bps,
            close_margin_bps=close_margin_bps, max_age=max_age,
        ))

    run_worker(build, **common)


@click.command()
@click.argument("target", metavar="GROUP_OR_SYMBOL")
@click.option("--once", is_flag=True, help="Print one table and exit (for scripts).")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True, help="Refresh seconds.")
@click.option("--max-age", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Books older than this are shown as STALE and left out of the comparison.")
@groups_option
@redis_url_option
@user_errors
def compare(target: str, once: bool, interval: float, max_age: float, groups_file: Optional[str],
            redis_url: str) -> None:
    """Live side-by-side table of one comparison group, read from the latest-book cache.

    GROUP_OR_SYMBOL is a group key (BTC-swap, BTC-future-2026-12-25, an explicit group's name) or a
    symbol (BTC/USD:BTC: its group). "vs best" is each mid's distance in bps from the mid of the
    tightest-spread fresh book. Needs `ccxt-collector cache` running. Exit 1 if nothing matches.
    """
    from redis.exceptions import RedisError

    from common.redis_client import redact
    from rich.live import Live

    from consumers.cache import LatestBooks
    from consumers.grouping import Grouper

    try:
        with LatestBooks(redis_url, stale_after=max_age) as books:
            view = GroupView(books, Grouper(_groups(groups_file)), target, max_age)
            table = view.table()
            if table is None:
                click.echo(f"no cached books for group or symbol {target!r} (is `ccxt-collector cache` running?)",
                           err=True)
                sys.exit(1)
            if once:
                console().print(table)
                return
            with Live(table, console=console(), auto_refresh=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(view.table() or table, refresh=True)
    except KeyboardInterrupt:
        pass
    except RedisError as exc:
        raise OSError(f"cannot read the latest-book cache at {redact(redis_url)}: {exc}") from None


class GroupView:
    """One comparison group of the latest-book cache, rendered as a rich table on demand."""

    def __init__(self, books: "LatestBooks", grouper: "Grouper", target: str, max_age: float) -> None:
        self.books = books
        self.grouper = grouper
        self.target = target
        self.max_age = max_age
        self._registries: set[str] = set()  # exchanges whose market registry the grouper has learnt

    def table(self) -> Optional["Table"]:
        """The group's table now, or None if no cached book belongs to ``target``'s group."""
        from rich import box
        from rich.table import Table

        from consumers.arbitrage import Quote, compare

        snapshots = self.books.all()
        for exchange in {exchange for exchange, _ in snapshots} - self._registries:
            self.grouper.add_registry(self.books.redis.hvals(self.books.keys.markets(exchange)))
            self._registries.add(exchange)
        members = {key: m for key in snapshots if (m := self.grouper.membership(*key))}
        group = self._group(members)
        picked = [(Quote.from_snapshot(snapshots[key]), m.price_unit) for key, m in members.items() if m.group == group]
        if not picked:
            return None
        table = Table(title=f"{group}  {time.strftime('%H:%M:%S')}", box=box.SIMPLE_HEAD)
        for name in ("exchange", "symbol", "bid", "ask", "mid", "spread", "age", "vs best (bps)"):
            table.add_column(name, justify="left" if name in ("exchange", "symbol") else "right")
        for row in compare(picked, time.time(), self.max_age):
            q = row.quote
            diff = "best" if row.best else "-" if row.diff_bps is None else f"{row.diff_bps:+.1f}"
            table.add_row(q.exchange, q.symbol, number(q.bid), number(q.ask), number(q.mid), number(q.spread),
                          f"{row.age:.1f}s" + (" [bold red]STALE[/]" if row.stale else ""), diff)
        return table

    def _group(self, members: dict[tuple[str, str], "Membership"]) -> Optional[str]:
        """``target`` as a group key, else the group of a cached book with that symbol, else of the parsed symbol."""
        from consumers.grouping import Instrument

        if self.target in {m.group for m in members.values()}:
            return self.target
        for (_, symbol), membership in sorted(members.items()):
            if symbol == self.target:
                return membership.group
        try:
            return Instrument.from_symbol(self.target).group
        except ValueError:
            return None

