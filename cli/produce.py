"""``ccxt-collector produce``: run one producer shard (exchange + symbol selection) into Redis Streams."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from cli.options import exchange_config_option, redis_url_option, user_errors
from common.config import load_mapping


def _csv(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    return [item.strip() for raw in value for item in raw.split(",") if item.strip()]


@click.command()
@click.option("--config", "config_file", metavar="FILE", help="Shard YAML/JSON; flags given on the command line override it.")
@click.option("--exchange", help="ccxt exchange id, e.g. deribit, okx, binanceusdm.")
@click.option("--shard", help="Shard name (default: the currencies, e.g. 'btc'); the stream hash tag is EXCHANGE.SHARD.")
@click.option("--futures", multiple=True, callback=_csv, metavar="BASES", help="Stream all futures + perpetuals of these bases (BTC,ETH).")
@click.option("--options", multiple=True, callback=_csv, metavar="BASES", help="Stream the option chains of these bases.")
@click.option("--symbols", multiple=True, callback=_csv, metavar="SYMBOLS", help="Explicit symbols (unified or native ids), comma separated.")
@click.option("--expiry", help="Options expiry filter: DEC26 (month), 25DEC26 (day) or 2026-12-25.")
@click.option("--option-type", type=click.Choice(["C", "P", "call", "put"], case_sensitive=False), help="Only calls or puts.")
@click.option("--limit", type=int, help="Order-book levels per snapshot (default 20).")
@click.option("--maxlen", type=int, help="Entries kept per symbol stream, approximate MAXLEN (default 100000).")
@click.option("--market-refresh", type=float, help="Seconds between market reloads; 0 disables (default 300).")
@exchange_config_option
@redis_url_option
@click.option("--check-config", is_flag=True, help="Validate the configuration and exit (no network).")
@click.option("--demo", is_flag=True, help="Stream from the bundled exchange emulator started in-process (no internet).")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@user_errors
def produce(config_file, exchange, shard, futures, options, symbols, expiry, option_type, limit, maxlen,
            market_refresh, exchange_config, redis_url, check_config, demo, verbose) -> None:
    """Stream one shard's order books and publish them to Redis Streams.

    \b
    Example (the guide's BTC/ETH horizontal split, one process each):
      ccxt-collector produce --exchange deribit --shard btc --futures BTC --options BTC
      ccxt-collector produce --exchange deribit --shard eth --futures ETH --options ETH

    Every snapshot goes to the stream ccxt:{EXCHANGE.SHARD}:book:SYMBOL (see the README for the key
    scheme and wire format). SIGTERM/Ctrl-C stops subscriptions, flushes what is buffered, exits 0.
    """
    from producer.shard import ShardConfig

    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = load_mapping(config_file, "--config") if config_file else {}
    overrides = dict(exchange=exchange, shard=shard, futures=futures, options=options, symbols=symbols,
                     expiry=expiry, option_type=option_type, limit=limit, maxlen=maxlen,
                     market_refresh=market_refresh, exchange_config=exchange_config)
    source = click.get_current_context().get_parameter_source("redis_url")
    if source is not click.core.ParameterSource.DEFAULT or "redis_url" not in data:
        overrides["redis_url"] = redis_url  # flag or $REDIS_URL beat the file; the file beats the default
    config = ShardConfig.from_mapping(data, **overrides)
    if check_config:
        click.echo(f"ok: shard {config.tag} ({config.exchange}; futures={config.futures} options={config.options} "
                   f"symbols={config.symbols}) -> {config.redis_url.split('@')[-1]}")
        return
    asyncio.run(_run(config, demo))


async def _run(config, demo: bool) -> None:
    from common.config import deep_merge
    from producer.shard import ProducerProcess

    emulator = None
    if demo:
        from emulator import EmulatorServer

        emulator = EmulatorServer(exchanges=[config.exchange], seed=42, port=0).start()
        config.exchange_config = deep_merge(emulator.ccxt_config(config.exchange), config.exchange_config)
    await _check_redis(config.redis_url)
    process = ProducerProcess(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, process.stop)
    try:
        await process.run()
    finally:
        if emulator is not None:
            emulator.stop()


async def _check_redis(url: str) -> None:
    """Fail fast, in bounded time, with one clear line when Redis is unreachable."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise OSError(f"cannot reach Redis at {url.split('@')[-1]}: {exc}") from None
    finally:
        await client.aclose()
