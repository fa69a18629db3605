"""``ccxt-collector archive`` (the Parquet archiver worker) and ``ccxt-collector read`` (query the archive)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import click

from cli.options import UsageFailure, run_worker, user_errors, worker_options


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Archive root directory (created if missing).")
@click.option("--rows-per-file", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Write a partition's file once it holds this many rows.")
@click.option("--max-file-age", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="...or once its oldest row waited this many seconds.")
@click.option("--depth", type=click.IntRange(min=1, max=1000), default=20, show_default=True,
              help="Levels per side stored (deeper ones are cut, missing ones are null).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Entries per XREADGROUP call.")
@click.option("--claim-idle", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds after which a dead archiver's pending entries are taken over; must exceed "
              "--max-file-age + 1  [default: max(30, 2 x max-file-age)]")
@click.option("--consumer", default=None, help="Consumer name in the group [default: HOST-PID].")
@worker_options
@user_errors
def archive(out: Path, rows_per_file: int, max_file_age: float, depth: int, batch_size: int,
            claim_idle: Optional[float], consumer: Optional[str], **common) -> None:
    """Archive the book streams to Parquet under OUT until SIGTERM/Ctrl-C (then write every buffer, ack, exit 0).

    \b
    Layout: OUT/exchange=EX/date=YYYY-MM-DD/part-*.parquet (Hive partitioning; pyarrow, DuckDB, polars).
    Several archivers (consumer group "archiver") share the work; each entry lands in the archive once.
    Exit code 2: OUT not writable, Redis unreachable, or bad options.
    """
    from consumers.archiver import ParquetArchiver
    from consumers.runner import default_consumer_name

    claim_idle = max(30.0, 2 * max_file_age) if claim_idle is None else claim_idle
    if claim_idle <= max_file_age + 1:
        raise UsageFailure(f"--claim-idle ({claim_idle:g}) must exceed --max-file-age + 1 ({max_file_age + 1:g}): "
                           "entries wait up to --max-file-age in a buffer and would be taken from a live archiver")
    check_writable(out)
    consumer = consumer or default_consumer_name()
    run_worker(lambda: ParquetArchiver(out, consumer=consumer, rows_per_file=rows_per_file, max_file_age=max_file_age,
                                       depth=depth),
               consumer=consumer, batch_size=batch_size, claim_idle_ms=int(claim_idle * 1000), **common)


def check_writable(directory: Path) -> None:
    """Create ``directory`` and prove a file can be written there; one clear OSError if not."""
    probe = directory / f".tmp-probe-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"--out {directory} is not writable: {exc.strerror or exc}") from None


@click.command()
@click.option("--archive", "archive_dir", required=True, type=click.Path(path_type=Path),
              help="Archive root directory (the archiver's --out).")
@click.option("--exchange", default=None, help="ccxt exchange id, e.g. deribit [default: all].")
@click.option("--symbol", default=None, help="Unified symbol, e.g. BTC/USD:BTC [default: all].")
@click.option("--start", default=None, help="ISO 8601 date/time, inclusive (UTC unless an offset is given).")
@click.option("--end", default=None, help="ISO 8601 date/time, exclusive.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "jsonl", "parquet"]), default="table",
              show_default=True, help="jsonl: one OrderbookSnapshot.to_dict() per line; csv/parquet: flat columns.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here instead of stdout (required for parquet).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N snapshots (the first by seq).")
@user_errors
def read(archive_dir: Path, exchange: Optional[str], symbol: Optional[str], start: Optional[str], end: Optional[str],
         fmt: str, output: Optional[Path], limit: Optional[int]) -> None:
    """Print archived snapshots, sorted by (exchange, symbol, seq).

    Exit codes: 0 success, also when nothing matches (a note on stderr, no output written);
    2 bad input (unknown archive directory, unparseable date, parquet without --output).
    """
    from consumers.reader import read_books

    if fmt == "parquet" and output is None:
        raise UsageFailure("--format parquet needs --output FILE")
    frame = read_books(archive_dir, exchange=exchange, symbol=symbol, start=start, end=end)
    if limit is not None:
        frame = frame.head(limit)
    if frame.empty:
        wanted = " ".join(part for part in (exchange, symbol) if part) or "any symbol"
        span = f" from {start or 'the beginning'} to {end or 'the end'}" if start or end else ""
        click.echo(f"no archived snapshots for {wanted}{span} in {archive_dir}", err=True)
        return
    if fmt == "parquet":
        frame.to_parquet(output, index=False, compression="zstd")
        return
    with click.open_file(str(output) if output else "-", "w", encoding="utf-8") as sink:
        if fmt == "csv":
            frame.to_csv(sink, index=False)
        elif fmt == "jsonl":
            write_jsonl(frame, sink)
        else:
            print_table(frame, sink)


def write_jsonl(frame, sink) -> None:
    """One ``OrderbookSnapshot.to_dict()`` JSON object per line."""
    import orjson

    from consumers.reader import frame_snapshots

    for snapshot in frame_snapshots(frame):
        sink.write(orjson.dumps(snapshot.to_dict()).decode())
        sink.write("\n")


def print_table(frame, sink) -> None:
    """A rich table: time, seq, best bid/ask, mid, spread, resync (plus exchange/symbol if several)."""
    from rich.console import Console
    from rich.table import Table

    several = frame[["exchange", "symbol"]].drop_duplicates().shape[0] > 1
    table = Table(title=None if several else f"{frame['exchange'].iat[0]} {frame['symbol'].iat[0]}")
    columns = ["exchange", "symbol"] if several else []
    for name in [*columns, "time (UTC)", "seq", "best bid", "best ask", "mid", "spread", "resync"]:
        table.add_column(name, justify="left" if name in ("exchange", "symbol", "time (UTC)") else "right")
    bid, ask = frame["bid_px_0"], frame["ask_px_0"]
    for row, (stamp, seq, best_bid, best_ask, mid, spread, resync) in enumerate(
        zip(frame["timestamp"], frame["seq"], bid, ask, (bid + ask) / 2, ask - bid, frame["resync"])
    ):
        table.add_row(
            *(str(frame[name].iat[row]) for name in columns),
            stamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], str(seq),
            *(_number(value) for value in (best_bid, best_ask, mid, spread)),
            "yes" if resync else "",
        )
    Console(file=sink, width=None if sink.isatty() else 160).print(table)  # a pipe or file: no terminal width


def _number(value: float) -> str:
    return "-" if value != value else f"{value:g}"  # NaN: that side was empty
