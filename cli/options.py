"""Options and error handling shared by the commands."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import click

from common.config import ConfigError, load_mapping


class UsageFailure(click.ClickException):
    """A user error: printed as one line, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file or sys.stderr)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ConfigError/ValueError/OSError raised by a command into one clear line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, ValueError, OSError) as exc:
            raise UsageFailure(str(exc)) from None

    return wrapper


def comma_separated(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    """Click callback for repeatable options that also take comma-separated items: ``--futures BTC,ETH``."""
    return [item.strip() for raw in value for item in raw.split(",") if item.strip()]


def parse_exchange_config(ctx: click.Context, param: click.Parameter, value: str | None) -> dict:
    """Click callback: ``--exchange-config FILE_OR_JSON`` -> dict."""
    if not value:
        return {}
    try:
        return load_mapping(value, "--exchange-config")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


exchange_config_option = click.option(
    "--exchange-config",
    "exchange_config",
    callback=parse_exchange_config,
    metavar="FILE_OR_JSON",
    help="ccxt constructor config merged into the exchange's defaults (JSON text or a JSON/YAML file), "
    "e.g. '{\"urls\": {\"api\": {\"ws\": \"ws://127.0.0.1:8801/ws/api/v2\"}}}'.",
)

redis_url_option = click.option(
    "--redis-url",
    envvar="REDIS_URL",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="Redis URL (also $REDIS_URL). rediss:// for TLS; redis://user:password@host:port/db for ACLs.",
)


def logging_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-v/--verbose`` (count) and ``--log-json``; the command calls :func:`common.logs.setup_logging`."""
    func = click.option("--log-json", is_flag=True, help="One JSON object per log line (for log shippers).")(func)
    return click.option("-v", "--verbose", count=True, help="More logging: -v info, -vv debug.")(func)


def metrics_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--metrics-port`` (0 = off) and ``--metrics-host`` for /metrics, /healthz and /readyz."""
    func = click.option("--metrics-host", default="127.0.0.1", show_default=True,
                        help="Address of the metrics/health endpoint (0.0.0.0 to expose it, e.g. in a container).")(func)
    return click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
                        help="Serve Prometheus /metrics, /healthz and /readyz on this port (0 = off).")(func)


shard_option = click.option(
    "--shard", "shards", multiple=True, metavar="TAG",
    help="Only these shards' streams (repeatable), e.g. --shard deribit.btc; default: every shard.",
)


def worker_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every consumer worker command shares: --redis-url, --shard, metrics, logging, --check-config."""
    func = click.option("--check-config", is_flag=True, help="Validate the options and exit (no network).")(func)
    return redis_url_option(shard_option(metrics_options(logging_options(func))))


def run_worker(worker_factory: Callable[[], Any], *, redis_url: str, shards: tuple[str, ...], metrics_port: int,
               metrics_host: str, verbose: int, log_json: bool, check_config: bool, **runner_options: Any) -> None:
    """Build the worker, then (unless --check-config) run it until SIGTERM with logging and metrics set up."""
    import asyncio

    from common.logs import setup_logging
    from common.redis_client import check_url, redact
    from consumers.runner import serve

    check_url(redis_url)
    worker = worker_factory()  # validates the worker's own options
    if check_config:
        click.echo(f"ok: {worker.group} worker -> {redact(redis_url)} (shards: {', '.join(shards) or 'all'})")
        return
    setup_logging(verbose + 1, json=log_json)  # workers log progress at INFO by default
    asyncio.run(serve(worker, redis_url, shards=shards, metrics_port=metrics_port, metrics_host=metrics_host,
                      **runner_options))
