"""Metrics sources and their HTTP endpoint (/metrics, /healthz, /readyz), and logging (JSON lines, redaction)."""

from __future__ import annotations

import io
import json
import logging
import socket
from types import SimpleNamespace

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from common.health import MetricsServer, readiness, redis_ready, serve_metrics
from common.logs import redact, setup_logging
from common.metrics import ArchiverMetrics, CollectorMetrics, ConsumerLagMetrics, PublisherMetrics, RunnerMetrics
from common.streams import StreamKeys
from consumers.archiver import ArchiverStats
from consumers.runner import RunnerStats
from producer.publisher import PublisherStats
from tests.redis_server import free_port


# ------------------------------------------------------------------------------------------------ helpers
class FakeCollector:
    """Stands in for CCXTProCollector: an exchange id and a mutable per-symbol status."""

    exchange_id = "deribit"

    def __init__(self) -> None:
        self.symbols = {
            "BTC/USD:BTC": {"state": "streaming", "market_type": "swap", "updates": 100, "reconnects": 1, "resyncs": 2},
            "BTC/USD:BTC-261225": {"state": "streaming", "market_type": "future", "updates": 40, "reconnects": 0, "resyncs": 0},
            "BTC/USD:BTC-261225-100000-C": {"state": "failed", "market_type": "option", "updates": 7, "reconnects": 3, "resyncs": 1},
        }

    def get_status(self) -> dict:
        return {symbol: dict(status) for symbol, status in self.symbols.items()}


async def fetch(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(url) as response:
            return response.status, await response.text()


async def scrape(server: MetricsServer) -> dict[tuple[str, tuple], float]:
    """GET /metrics -> {(sample name, sorted labels): value}."""
    status, text = await fetch(f"{server.url}/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
async def started():
    """Start MetricsServers on free ports; stop them after the test."""
    servers: list[MetricsServer] = []

    async def start(**kwargs) -> MetricsServer:
        server = await serve_metrics(free_port(), **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


# ------------------------------------------------------------------------------------------------ metrics
async def test_metrics_endpoint_exports_values_of_all_stats_sources(started):
    collector = FakeCollector()
    publisher = SimpleNamespace(
        stats=PublisherStats(published=1234, dropped=5, errors=2, spilled=300, replayed=7), buffered=42,
        spool=SimpleNamespace(bytes=65536), batch_listeners=[],
    )
    runner = SimpleNamespace(group="archiver", stats=RunnerStats(read=900, acked=880, dead_letters=3, reclaimed=4, errors=1, streams=12))
    archiver = SimpleNamespace(stats=ArchiverStats(rows_written=5000, files_written=3, bytes_written=10_000, rows_buffered=17))
    publisher_metrics = PublisherMetrics(publisher)
    for size, seconds in ((100, 0.002), (1000, 0.02), (1000, 0.03)):
        for listener in publisher.batch_listeners:  # what RedisPublisher does after every batch
            listener(size, seconds)

    server = await started(sources=[CollectorMetrics(collector), publisher_metrics, RunnerMetrics(runner), ArchiverMetrics(archiver)])
    values = await scrape(server)

    p = "ccxt_collector_"
    assert values[(f"{p}updates_total", (("exchange", "deribit"), ("market_type", "swap")))] == 100
    assert values[(f"{p}updates_total", (("exchange", "deribit"), ("market_type", "option")))] == 7
    assert values[(f"{p}reconnects_total", (("exchange", "deribit"),))] == 4
    assert values[(f"{p}resyncs_total", (("exchange", "deribit"),))] == 3
    assert values[(f"{p}symbols", (("exchange", "deribit"), ("state", "failed")))] == 1
    assert values[(f"{p}published_total", ())] == 1234
    assert values[(f"{p}publish_dropped_total", ())] == 5
    assert values[(f"{p}publish_buffered", ())] == 42
    assert values[(f"{p}spool_bytes", ())] == 65536
    assert values[(f"{p}redis_errors_total", (("role", "publisher"),))] == 2
    assert values[(f"{p}publish_batch_size_count", ())] == 3
    assert values[(f"{p}publish_batch_size_sum", ())] == 2100
    assert values[(f"{p}publish_latency_seconds_bucket", (("le", "0.025"),))] == 2
    assert values[(f"{p}consumer_entries_total", (("group", "archiver"),))] == 900
    assert values[(f"{p}dead_letters_total", (("group", "archiver"),))] == 3
    assert values[(f"{p}archive_rows_total", ())] == 5000
    assert values[(f"{p}archive_files_total", ())] == 3


async def test_counters_never_go_down_when_symbols_are_retired_or_restart(started):
    collector = FakeCollector()
    server = await started(sources=[CollectorMetrics(collector)])
    key = ("ccxt_collector_updates_total", (("exchange", "deribit"), ("market_type", "option")))
    assert (await scrape(server))[key] == 7

    del collector.symbols["BTC/USD:BTC-261225-100000-C"]  # expired option retired
    assert (await scrape(server))[key] == 7
    collector.symbols["BTC/USD:BTC-261225-100000-C"] = {"state": "subscribing", "market_type": "option", "updates": 2}
    assert (await scrape(server))[key] == 9
    reconnects = ("ccxt_collector_reconnects_total", (("exchange", "deribit"),))
    assert (await scrape(server))[reconnects] == 4


async def test_two_runners_in_one_process_share_one_metric_family(started):
    runners = [SimpleNamespace(group=g, stats=RunnerStats(read=n)) for g, n in (("archiver", 5), ("cache", 6))]
    server = await started(sources=[RunnerMetrics(r) for r in runners])
    status, text = await fetch(f"{server.url}/metrics")
    assert text.count("# TYPE ccxt_collector_consumer_entries_total counter") == 1
    values = await scrape(server)
    assert values[("ccxt_collector_consumer_entries_total", (("group", "cache"),))] == 6


async def test_consumer_lag_and_pending_come_from_redis_and_vanish_when_it_fails(started, redis_server):
    keys = StreamKeys()
    client = aioredis.Redis.from_url(redis_server.url, socket_connect_timeout=1, socket_timeout=2)
    try:
        streams = [keys.book_stream("deribit.btc", s) for s in ("BTC/USD:BTC", "ETH/USD:ETH")]
        await client.sadd(keys.shards, "deribit.btc")
        await client.sadd(keys.shard_streams("deribit.btc"), *streams)
        for stream in streams:
            for i in range(10):
                await client.xadd(stream, {"d": b"x"})
            await client.xgroup_create(stream, "archiver", id="0")
        await client.xreadgroup("archiver", "c1", {streams[0]: ">"}, count=4)  # 4 pending, 16 undelivered

        server = await started(sources=[ConsumerLagMetrics(client, "archiver")])
        values = await scrape(server)
        labels = (("group", "archiver"), ("shard", "deribit.btc"))
        assert values[("ccxt_collector_consumer_lag", labels)] == 16
        assert values[("ccxt_collector_consumer_pending", labels)] == 4

        redis_server.kill()
        values = await scrape(server)  # the scrape still answers; the lag is absent, not stale
        assert ("ccxt_collector_consumer_lag", labels) not in values
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------------------------ health
async def test_healthz_and_readyz_report_liveness_and_readiness(started):
    problem: dict[str, str | None] = {"reason": None}

    async def has_symbols():
        return problem["reason"]

    async def broken():
        raise RuntimeError("boom")

    server = await started(ready=has_symbols)
    assert await fetch(f"{server.url}/healthz") == (200, '{"status": "ok"}')
    assert (await fetch(f"{server.url}/readyz"))[0] == 200
    problem["reason"] = "no subscribed symbols"
    status, body = await fetch(f"{server.url}/readyz")
    assert status == 503 and json.loads(body) == {"status": "not ready", "reason": "no subscribed symbols"}

    failing = await started(ready=readiness(has_symbols, broken))
    problem["reason"] = None
    status, body = await fetch(f"{failing.url}/readyz")
    assert status == 503 and "boom" in json.loads(body)["reason"]


async def test_readyz_follows_redis(started, redis_server):
    client = aioredis.Redis.from_url(redis_server.url, socket_connect_timeout=1, socket_timeout=2)
    try:
        server = await started(ready=redis_ready(client))
        assert (await fetch(f"{server.url}/readyz"))[0] == 200
        redis_server.kill()
        status, body = await fetch(f"{server.url}/readyz")
        assert status == 503 and json.loads(body)["reason"].startswith("redis unreachable")
    finally:
        await client.aclose()


async def test_busy_port_gives_a_clear_error_and_port_0_disables():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=rf"metrics port 127.0.0.1:{port} is already in use"):
            await serve_metrics(port)
    assert await serve_metrics(0) is None
    with pytest.raises(ValueError, match="1..65535"):
        MetricsServer(70000)


# ------------------------------------------------------------------------------------------------ logging
@pytest.fixture
def log_stream():
    """setup_logging into a buffer; the root logger's previous setup is restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield io.StringIO()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_json_log_lines_parse_and_carry_extra_fields(log_stream):
    setup_logging(1, json=True, stream=log_stream)
    log = logging.getLogger("ccxt.test")
    log.info("published %d snapshots", 5, extra={"shard": "deribit.btc", "batch": 100})
    log.debug("hidden at -v")
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["published 5 snapshots", "failed"]
    first = lines[0]
    assert first["level"] == "INFO" and first["logger"] == "ccxt.test" and first["ts"].endswith("Z")
    assert first["shard"] == "deribit.btc" and first["batch"] == 100
    assert "ValueError: bad value" in lines[1]["exc"]


@pytest.mark.parametrize("as_json", [False, True])
def test_secrets_are_masked_in_every_log_record(log_stream, as_json):
    setup_logging(0, json=as_json, stream=log_stream)
    log = logging.getLogger("ccxt.test")
    log.warning("connecting to %s", "redis://app:hunter2@redis.internal:6379/0")
    log.warning("exchange config %s", {"apiKey": "AK-123456", "secret": "S-abcdef", "password": "pw-9876"})
    log.warning("retry", extra={"config": {"apiKey": "AK-123456", "urls": ["rediss://:hunter2@h/1"]}})
    try:
        raise ConnectionError("auth failed for redis://app:hunter2@redis.internal:6379/0")
    except ConnectionError:
        log.exception("redis down")
    output = log_stream.getvalue()
    for secret in ("hunter2", "AK-123456", "S-abcdef", "pw-9876"):
        assert secret not in output
    assert "redis://app:***@redis.internal:6379/0" in output
    if as_json:
        assert all(json.loads(line) for line in output.splitlines())


def test_redact_leaves_ordinary_text_alone():
    assert redact("redis://127.0.0.1:6379/0 and the secret rotation") == "redis://127.0.0.1:6379/0 and the secret rotation"
    assert redact("access_token=abc max_tokens=5") == "access_token=*** max_tokens=5"
