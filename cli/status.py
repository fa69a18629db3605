"""``ccxt-collector status``: the pipeline at a glance (producers, streams, consumer groups, latest books)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Optional

import click
from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from cli.options import redis_url_option, user_errors
from common.inspection import PipelineState, fill_write_rates, read_pipeline_state
from common.logs import redact

_STATE_STYLE = {"up": "green", "late": "yellow", "stopped": "red"}


@click.command()
@redis_url_option
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C (adds write rates).")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (one per line with --watch).")
@click.option("--stale-after", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="A latest book older than this many seconds counts as stale.")
@user_errors
def status(redis_url: str, watch: bool, interval: float, as_json: bool, stale_after: float) -> None:
    """Show producers, streams per shard, consumer groups (pending, lag), latest-book ages, dead letters and alerts.

    \b
    Examples:
      ccxt-collector status
      ccxt-collector status --watch --interval 5
      ccxt-collector status --json | jq '.groups'

    Exit code 2 if Redis cannot be reached.
    """
    try:
        asyncio.run(_status(redis_url, watch, interval, as_json, stale_after))
    except KeyboardInterrupt:
        pass


async def _status(redis_url: str, watch: bool, interval: float, as_json: bool, stale_after: float) -> None:
    from redis.exceptions import RedisError

    from common.redis_client import async_client

    client = async_client(redis_url, socket_connect_timeout=3, socket_timeout=10)
    console = Console()
    try:
        try:
            state = await read_pipeline_state(client, stale_after=stale_after)
        except (RedisError, OSError) as exc:
            raise OSError(f"cannot reach Redis at {redact(redis_url)}: {redact(str(exc))}") from None
        _show(console, state, as_json)
        while watch:
            await asyncio.sleep(interval)
            previous = state
            try:
                state = await read_pipeline_state(client, stale_after=stale_after)
            except (RedisError, OSError) as exc:  # keep watching: Redis may come back
                console.print(f"[red]{time.strftime('%H:%M:%S')} Redis unreachable: {redact(str(exc))}[/]")
                continue
            fill_write_rates(state, previous)
            if not as_json:
                console.clear()
            _show(console, state, as_json)
    finally:
        await client.aclose()


def _show(console: Console, state: PipelineState, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(state.to_dict(), separators=(",", ":")))
    else:
        console.print(render(state))


# ------------------------------------------------------------------------------------------------ rendering
def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _count(value: int, bad_style: str = "red") -> Text:
    return Text(f"{value:,}", style=bad_style if value else "")


def _table(title: str, key: str, *columns: str) -> Table:
    """A compact table: the key column left-aligned, the others right-aligned, cells never wrapped."""
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(key, no_wrap=True)
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True, overflow="ellipsis")
    return table


def render(state: PipelineState) -> Group:
    """The human view of one :class:`PipelineState`."""
    producers = _table("Producers", "shard", "state", "symbols", "failed", "upd/s", "reconn", "resync", "buffered",
                       "dropped", "host:pid")
    for p in state.producers:
        producers.add_row(
            p.shard, Text(f"{p.state} {_age(p.age_s)}", style=_STATE_STYLE.get(p.state, "")), f"{p.streaming}/{p.symbols}",
            _count(p.failed), f"{p.updates_per_s:,.1f}", str(p.reconnects), str(p.resyncs), _count(p.buffered, "yellow"),
            _count(p.dropped), f"{p.host}:{p.pid}",
        )
    errors = Text("\n").join(
        Text.assemble(f"  {p.shard}: ", (p.last_error, "red")) for p in state.producers if p.last_error
    )

    shards = _table("Streams per shard", "shard", "streams", "entries", "written", "writes/s", "last write")
    for s in state.shards:
        missing = f" ({s.missing} missing)" if s.missing else ""
        shards.add_row(s.shard, f"{s.streams:,}{missing}", f"{s.length:,}", f"{s.entries_added:,}",
                       "-" if s.write_rate is None else f"{s.write_rate:,.1f}", _age(s.last_write_age_s))

    groups = _table("Consumer groups", "group", "streams", "consumers", "pending", "lag")
    for g in state.groups:
        lag = f"{g.lag:,}" + (f" (+{g.lag_unknown} streams unknown)" if g.lag_unknown else "")
        groups.add_row(g.group, f"{g.streams:,}", str(len(g.consumers)), f"{g.pending:,}", lag)

    books = _table("Latest books", "exchange", "books", "median age", "max age", "stale", "undecodable")
    for b in state.books:
        books.add_row(b.exchange, f"{b.books:,}", _age(b.median_age_s), _age(b.max_age_s),
                      _count(b.stale, "yellow"), _count(b.undecodable))

    taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.taken_at))
    footer = Text.assemble(
        (f"{taken}  ", "dim"), "dead letters: ", _count(state.dead_letters), "  alerts: ", _count(state.alerts, "yellow")
    )
    parts = [table if table.row_count else Text(f"{table.title}: none", style="dim")
             for table in (producers, shards, groups, books)]
    if errors:
        parts.insert(1, Text.assemble(("last errors:\n", "bold"), errors))
    return Group(*parts, footer)
