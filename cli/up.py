"""``ccxt-collector up``: every role a config file names, on this machine, as supervised processes."""

from __future__ import annotations

import logging
import signal
import tempfile
from pathlib import Path
from typing import Any

import click
import yaml

from cli.options import redis_url_option, user_errors
from cli.supervisor import ProcessSpec, Supervisor
from common.config import ConfigError, deep_merge, load_mapping

CONSUMER_COMMANDS = ("archive", "cache", "monitor")

DEMO_CONFIG: dict[str, Any] = {
    "producers": [
        {"exchange": "deribit", "shard": "btc", "futures": ["BTC"], "options": ["BTC"]},
        {"exchange": "deribit", "shard": "eth", "futures": ["ETH"], "options": ["ETH"]},
    ],
    "consumers": {"archive": {"args": ["--out", "data/demo-archive"]}, "cache": {}, "monitor": {}},
}


def build_specs(config: dict[str, Any], workdir: Path, exchange_configs: dict[str, dict]) -> list[ProcessSpec]:
    """Turn an ``up`` config into process specs (producers get a shard YAML each, written to ``workdir``)."""
    from producer.shard import ShardConfig

    unknown = set(config) - {"redis_url", "producers", "consumers"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s) in up config: {', '.join(sorted(unknown))}")
    producers = config.get("producers") or []
    consumers = config.get("consumers") or {}
    if not isinstance(producers, list) or not isinstance(consumers, dict):
        raise ConfigError("up config: 'producers' must be a list and 'consumers' a mapping")
    specs: list[ProcessSpec] = []
    for entry in producers:
        if not isinstance(entry, dict):
            raise ConfigError(f"up config: each producer must be a mapping, got {entry!r}")
        entry = deep_merge({"exchange_config": exchange_configs.get(entry.get("exchange"), {})}, entry)
        shard = ShardConfig.from_mapping(entry)  # validates now, not in a crash-looping child
        path = workdir / f"shard-{shard.tag}.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in entry.items() if k != "redis_url"}))
        specs.append(ProcessSpec(f"produce[{shard.tag}]", ["produce", "--config", str(path)]))
    for name, options in consumers.items():
        if name not in CONSUMER_COMMANDS:
            raise ConfigError(f"up config: unknown consumer {name!r}; choose from {', '.join(CONSUMER_COMMANDS)}")
        options = options or {}
        replicas = options.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 1:
            raise ConfigError(f"up config: consumers.{name}.replicas must be a positive integer")
        args = [str(a) for a in options.get("args", [])]
        for i in range(replicas):
            specs.append(ProcessSpec(f"{name}[{i}]", [name, *args]))
    if not specs:
        raise ConfigError("up config names no producers and no consumers")
    return specs


@click.command()
@click.option("--config", "config_file", metavar="FILE", help="YAML/JSON with 'producers' (shard configs) and 'consumers'.")
@redis_url_option
@click.option("--demo", is_flag=True, help="Run the bundled exchange emulator and, if Redis is not reachable, a private "
              "redis-server; without --config, a demo pipeline (deribit BTC + ETH shards, archive, cache, monitor).")
@click.option("--check-config", is_flag=True, help="Validate the config and print the processes it would start.")
@click.option("-v", "--verbose", count=True)
@user_errors
def up(config_file: str | None, redis_url: str, demo: bool, check_config: bool, verbose: int) -> None:
    """Start the producers and consumers a config file names, as separate processes on this machine.

    Crashed processes are restarted with backoff; Ctrl-C / SIGTERM stops them all cleanly (each one
    flushes and acks before it exits).

    \b
    Example config:
      producers:
        - {exchange: deribit, shard: btc, futures: [BTC], options: [BTC]}
        - {exchange: deribit, shard: eth, futures: [ETH], options: [ETH]}
      consumers:
        archive: {replicas: 2, args: [--out, data/archive]}
        cache: {}
        monitor: {args: [--threshold-bps, "5"]}
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s up %(levelname)s: %(message)s")
    if not config_file and not demo:
        raise ConfigError("give --config FILE (or --demo for the bundled demo pipeline)")
    config = load_mapping(config_file, "--config") if config_file else DEMO_CONFIG
    source = click.get_current_context().get_parameter_source("redis_url")
    if source is click.core.ParameterSource.DEFAULT and config.get("redis_url"):
        redis_url = config["redis_url"]
    with tempfile.TemporaryDirectory(prefix="ccxt-collector-up-") as tmp:
        workdir = Path(tmp)
        if check_config:
            for spec in build_specs(config, workdir, {}):
                click.echo(f"{spec.name:<24} ccxt-collector {' '.join(spec.args)}")
            return
        emulator = redis = None
        try:
            exchange_configs: dict[str, dict] = {}
            if demo:
                emulator, exchange_configs = _start_emulator(config)
                redis, redis_url = _ensure_redis(redis_url, workdir)
            specs = build_specs(config, workdir, exchange_configs)
            for spec in specs:
                spec.env["REDIS_URL"] = redis_url  # in the environment, so passwords stay off `ps`
            supervisor = Supervisor(specs)
            signal.signal(signal.SIGTERM, supervisor.stop)
            signal.signal(signal.SIGINT, supervisor.stop)
            click.echo(f"up: {len(specs)} processes; Redis {redis_url.split('@')[-1]}. Ctrl-C stops them all.")
            if demo:
                click.echo(f"  try: REDIS_URL={redis_url} ccxt-collector latest deribit BTC/USD:BTC")
            supervisor.run()
        finally:
            if emulator is not None:
                emulator.stop()
            if redis is not None:
                redis.stop()


def _start_emulator(config: dict[str, Any]):
    from emulator import EXCHANGES, EmulatorServer

    wanted = sorted({p.get("exchange", "deribit") for p in config.get("producers") or []} & set(EXCHANGES))
    server = EmulatorServer(exchanges=wanted or ["deribit"], seed=42, port=0).start()
    click.echo(f"up: exchange emulator for {', '.join(wanted)} on {server.url}")
    return server, {name: server.ccxt_config(name) for name in wanted}


def _ensure_redis(url: str, workdir: Path):
    """Use Redis at ``url`` if it answers, else start a private redis-server for the demo."""
    import redis as redis_lib

    try:
        redis_lib.Redis.from_url(url, socket_connect_timeout=1).ping()
        return None, url
    except (redis_lib.RedisError, OSError):
        from emulator.redis_server import RedisServer

        server = RedisServer(workdir / "redis").start()
        click.echo(f"up: Redis not reachable at {url.split('@')[-1]}; started a private one at {server.url}")
        return server, server.url
