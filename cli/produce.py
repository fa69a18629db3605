"""``ccxt-collector produce``: run one producer shard (exchange + symbol selection) into Redis Streams."""

from __future__ import annotations

import asyncio
import signal

import click

from cli.options import comma_separated, exchange_config_option, logging_options, metrics_options, redis_url_option, user_errors
from common.config import load_mapping
from common.redis_client import async_client, ensure_reachable, redact


@click.command()
@click.option("--config", "config_file", metavar="FILE", help="Shard YAML/JSON; flags given on the command line override it.")
@click.option("--exchange", help="ccxt exchange id, e.g. deribit, okx, binanceusdm.")
@click.option("--shard", help="Shard name (default: the currencies, e.g. 'btc'); the stream hash tag is EXCHANGE.SHARD.")
@click.option("--futures", multiple=True, callback=comma_separated, metavar="BASES", help="Stream all futures + perpetuals of these bases (BTC,ETH).")
@click.option("--options", multiple=True, callback=comma_separated, metavar="BASES", help="Stream the option chains of these bases.")
@click.option("--symbols", multiple=True, callback=comma_separated, metavar="SYMBOLS", help="Explicit symbols (unified or native ids), comma separated.")
@click.option("--expiry", help="Options expiry filter: DEC26 (month), 25DEC26 (day) or 2026-12-25.")
@click.option("--option-type", type=click.Choice(["C", "P", "call", "put"], case_sensitive=False), help="Only calls or puts.")
@click.option("--limit", type=int, help="Order-book levels per snapshot (default 20).")
@click.option("--maxlen", type=int, help="Entries kept per symbol stream, approximate MAXLEN (default 100000).")
@click.option("--market-refresh", type=float, help="Seconds between market reloads; 0 disables (default 300).")
@click.option("--spool-dir", type=click.Path(file_okay=False), help="On-disk journal used while Redis is unreachable "
              "(replayed in order when it is back, also after a restart). Default: memory only.")
@click.option("--spool-max-bytes", type=int, help="Bound of the spool (default 1 GiB); beyond it drops are logged and "
              "marked resync.")
@exchange_config_option
@redis_url_option
@click.option("--check-config", is_flag=True, help="Validate the configuration and exit (no network).")
@click.option("--demo", is_flag=True, help="Stream from the bundled exchange emulator started in-process (no internet).")
@metrics_options
@logging_options
@user_errors
def produce(config_file, exchange, shard, futures, options, symbols, expiry, option_type, limit, maxlen,
            market_refresh, spool_dir, spool_max_bytes, exchange_config, redis_url, check_config, demo,
            metrics_port, metrics_host, verbose, log_json) -> None:
    """Stream one shard's order books and publish them to Redis Streams.

    \b
    Example (the guide's BTC/ETH horizontal split, one process each):
      ccxt-collector produce --exchange deribit --shard btc --futures BTC --options BTC
      ccxt-collector produce --exchange deribit --shard eth --futures ETH --options ETH

    Every snapshot goes to the stream ccxt:{EXCHANGE.SHARD}:book:SYMBOL (see the README for the key
    scheme and wire format). SIGTERM/Ctrl-C stops subscriptions, flushes what is buffered, exits 0.
    """
    from common.logs import setup_logging
    from producer.shard import ShardConfig

    setup_logging(verbose, json=log_json)
    data = load_mapping(config_file, "--config") if config_file else {}
    overrides = dict(exchange=exchange, shard=shard, futures=futures, options=options, symbols=symbols,
                     expiry=expiry, option_type=option_type, limit=limit, maxlen=maxlen,
                     market_refresh=market_refresh, spool_dir=spool_dir, spool_max_bytes=spool_max_bytes,
                     exchange_config=exchange_config)
    source = click.get_current_context().get_parameter_source("redis_url")
    if source is not click.core.ParameterSource.DEFAULT or "redis_url" not in data:
        overrides["redis_url"] = redis_url  # flag or $REDIS_URL beat the file; the file beats the default
    config = ShardConfig.from_mapping(data, **overrides)
    if check_config:
        click.echo(f"ok: shard {config.tag} ({config.exchange}; futures={config.futures} options={config.options} "
                   f"symbols={config.symbols}) -> {redact(config.redis_url)}")
        return
    asyncio.run(_run(config, demo, metrics_port, metrics_host))


async def _run(config, demo: bool, metrics_port: int, metrics_host: str) -> None:
    from common.config import deep_merge
    from common.health import readiness, redis_ready, serve_metrics
    from common.metrics import CollectorMetrics, PublisherMetrics
    from producer.shard import ProducerProcess

    emulator = None
    if demo:
        from emulator import EmulatorServer

        emulator = EmulatorServer(exchanges=[config.exchange], seed=42, port=0).start()
        config.exchange_config = deep_merge(emulator.ccxt_config(config.exchange), config.exchange_config)
    await _check_redis(config.redis_url)
    process = ProducerProcess(config)
    server = await serve_metrics(
        metrics_port, host=metrics_host,
        sources=[CollectorMetrics(process.collector), PublisherMetrics(process.publisher)],
        ready=readiness(redis_ready(process.redis), process.ready),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, process.stop)
    try:
        await process.run()
    finally:
        if server is not None:
            await server.stop()
        if emulator is not None:
            emulator.stop()


async def _check_redis(url: str) -> None:
    """Fail fast, in bounded time, with one clear line when Redis is unreachable."""
    client = async_client(url, socket_timeout=5)
    try:
        await ensure_reachable(client, url)
    finally:
        await client.aclose()
