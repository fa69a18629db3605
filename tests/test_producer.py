"""The producer process: market refresh, overlap refusal between producers, metrics and health endpoints."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import redis.asyncio as aioredis
import yaml

from common.streams import StreamKeys
from emulator.redis_server import free_port
from producer.shard import ProducerProcess, ShardConfig
from tests.waiting import wait_until, wait_until_sync

pytestmark = pytest.mark.timeout(120)
KEYS = StreamKeys()


def btc_futures(emulator) -> list[str]:
    return [i for i in emulator.instruments("deribit") if i.startswith("BTC-") and not i.endswith(("-C", "-P"))]


async def test_market_refresh_subscribes_new_listings_and_retires_delisted(emulator, redis_url):
    futures = btc_futures(emulator)
    newcomer, leaving = futures[-1], "BTC-PERPETUAL"
    emulator.set_listed("deribit", newcomer, False)  # not listed yet when the producer starts
    producer = ProducerProcess(ShardConfig(exchange="deribit", shard="btc", futures=["BTC"], limit=5, redis_url=redis_url,
                                           exchange_config=emulator.ccxt_config("deribit"), market_refresh=0.3,
                                           heartbeat=0.2))
    client = aioredis.from_url(redis_url)
    task = asyncio.create_task(producer.run())
    try:
        await wait_until(lambda: len(producer.subscribed()) == len(futures) - 1, 30, "the listed futures")
        new_symbol = "BTC/USD:BTC-" + _yymmdd(newcomer)
        assert new_symbol not in producer.subscribed()
        emulator.set_listed("deribit", newcomer, True)
        await wait_until(lambda: producer.collector.orderbooks.get(new_symbol) is not None, 30,
                         "the new listing to be subscribed and streamed")
        emulator.set_listed("deribit", leaving, False)
        await wait_until(lambda: "BTC/USD:BTC" not in producer.subscribed(), 30, "the delisted perpetual to be retired")
        assert await client.get(KEYS.lease("deribit", "BTC/USD:BTC")) is None, "a retired symbol's lease is released"
        assert await client.get(KEYS.lease("deribit", new_symbol)) is not None
        markets = await client.hgetall(KEYS.markets("deribit"))
        assert json.loads(markets[new_symbol.encode()])["expiry"] is not None
    finally:
        producer.stop()
        await asyncio.wait_for(task, 30)
        await client.aclose()


def _yymmdd(native: str) -> str:
    """BTC-25DEC26 -> 261225."""
    from datetime import datetime

    return datetime.strptime(native.split("-")[1], "%d%b%y").strftime("%y%m%d")


async def test_an_overlapping_producer_is_refused_with_the_owner_named(emulator, redis_url, tmp_path):
    first = ProducerProcess(ShardConfig(exchange="deribit", shard="btc", futures=["BTC"], limit=5, redis_url=redis_url,
                                        exchange_config=emulator.ccxt_config("deribit"), market_refresh=0, heartbeat=0.2))
    task = asyncio.create_task(first.run())
    try:
        await wait_until(lambda: first.subscribed(), 30, "the first producer")
        config = tmp_path / "overlap.yaml"
        config.write_text(yaml.safe_dump({"exchange": "deribit", "shard": "all", "futures": ["BTC", "ETH"],
                                          "lease_ttl": 1, "exchange_config": emulator.ccxt_config("deribit")}))
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "produce", "--config", str(config), "--redis-url", redis_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(second.communicate(), 60)
        lines = err.decode().strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, err.decode()
        assert "already streamed by another producer (deribit.btc/" in lines[0] and "BTC/USD:BTC" in lines[0]
        assert first.subscribed(), "the first producer is untouched"
    finally:
        first.stop()
        await asyncio.wait_for(task, 30)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_producer_and_worker_serve_metrics_and_health(redis_url):
    producer_port, cache_port = free_port(), free_port()
    env = {**os.environ, "REDIS_URL": redis_url}
    processes = [
        subprocess.Popen([sys.executable, "-m", "cli", "produce", "--demo", "--exchange", "deribit", "--futures", "BTC",
                          "--metrics-port", str(producer_port)], env=env, stderr=subprocess.PIPE, text=True),
        subprocess.Popen([sys.executable, "-m", "cli", "cache", "--metrics-port", str(cache_port)], env=env,
                         stderr=subprocess.PIPE, text=True),
    ]
    try:
        base = f"http://127.0.0.1:{producer_port}"
        wait_until_sync(lambda: _get(base + "/readyz")[0] == 200, 60, "the producer to be ready")
        assert _get(base + "/healthz")[0] == 200
        wait_until_sync(lambda: "ccxt_collector_published_total" in _get(base + "/metrics")[1], 30, "producer metrics")
        metrics = _get(base + "/metrics")[1]
        updates = [line for line in metrics.splitlines() if line.startswith("ccxt_collector_updates_total{")]
        assert updates and any(float(line.rsplit(" ", 1)[1]) > 0 for line in updates), updates
        worker = f"http://127.0.0.1:{cache_port}"
        wait_until_sync(lambda: _get(worker + "/readyz")[0] == 200, 30, "the cache worker to be ready")
        wait_until_sync(lambda: 'ccxt_collector_consumer_lag{group="cache"' in _get(worker + "/metrics")[1], 30,
                        "consumer lag metrics")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(60) for process in processes]
    assert codes == [0, 0], [p.stderr.read() for p in processes]
