"""``ccxt-collector status`` against a real Redis filled by the real publisher, a hand-written producer
heartbeat, a partly read consumer group, a latest-book cache, dead letters and alerts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from click.testing import CliRunner

from cli import main
from common.codec import encode
from common.inspection import read_pipeline_state
from common.model import OrderbookSnapshot, ms_to_datetime
from common.streams import StreamKeys
from producer.publisher import RedisPublisher
from tests.redis_server import free_port

KEYS = StreamKeys()
SYMBOLS = {"deribit.btc": ["BTC/USD:BTC", "BTC/USD:BTC-261225"], "deribit.eth": ["ETH/USD:ETH"]}
PER_SYMBOL = 10
REPO = Path(__file__).resolve().parents[1]


def snapshot(symbol: str, seq: int, age_s: float = 0.0) -> OrderbookSnapshot:
    recv_ns = time.time_ns() - int(age_s * 1e9)
    return OrderbookSnapshot(symbol, ms_to_datetime(recv_ns // 1_000_000), [[100.0, 1.0]], [[101.0, 2.0]],
                             "deribit", "future", recv_ns, None, seq)


async def publish_all(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        for tag, symbols in SYMBOLS.items():
            publisher = RedisPublisher(client, tag, batch_size=7)
            runner = asyncio.create_task(publisher.run())
            for seq in range(PER_SYMBOL):
                for symbol in symbols:
                    publisher.publish(snapshot(symbol, seq))
            publisher.close()
            await asyncio.wait_for(runner, timeout=10)
    finally:
        await client.aclose()


def heartbeat(client: redis.Redis, tag: str, *, age_s: float, alive: bool, **fields) -> None:
    """A status hash in ProducerProcess's format (every value a string, ``alive`` "1"/"0", a TTL)."""
    now = time.time()
    status = {
        "exchange": "deribit", "shard": tag, "host": "box1", "pid": 4242, "started_at": now - 60,
        "updated_at": now - age_s, "symbols": 2, "streaming": 2, "failed": 0, "updates": 1000,
        "updates_per_s": 12.5, "reconnects": 1, "resyncs": 0, "published": 1000, "buffered": 0, "dropped": 0,
        "redis_errors": 0, "last_error": "", "alive": "1" if alive else "0", **fields,
    }
    client.hset(KEYS.status(tag), mapping={k: str(v) for k, v in status.items()})
    client.expire(KEYS.status(tag), 60)


@pytest.fixture
def pipeline(redis_url):
    """The populated Redis: 3 streams x 10 entries over 2 shards, two producers, groups, cache, dead letters."""
    asyncio.run(publish_all(redis_url))
    client = redis.Redis.from_url(redis_url)
    heartbeat(client, "deribit.btc", age_s=0.5, alive=True, buffered=17,
              last_error="ConnectionError: redis://app:hunter2@db:6379 refused")
    heartbeat(client, "deribit.eth", age_s=3600, alive=False, failed=1)
    btc, btc_future = (KEYS.book_stream("deribit.btc", s) for s in SYMBOLS["deribit.btc"])
    eth = KEYS.book_stream("deribit.eth", "ETH/USD:ETH")
    for stream in (btc, btc_future, eth):
        client.xgroup_create(stream, "archiver", id="0")
    client.xgroup_create(btc, "cache", id="$")
    # archiver: consumer a reads 4 of btc and acks 1; consumer b reads all 10 of eth and acks them
    delivered = client.xreadgroup("archiver", "a", {btc: ">"}, count=4)[0][1]
    client.xack(btc, "archiver", delivered[0][0])
    eth_ids = [entry_id for entry_id, _ in client.xreadgroup("archiver", "b", {eth: ">"}, count=100)[0][1]]
    client.xack(eth, "archiver", *eth_ids)
    client.hset(KEYS.latest("deribit"), mapping={
        "BTC/USD:BTC": encode(snapshot("BTC/USD:BTC", 9, age_s=1)),
        "ETH/USD:ETH": encode(snapshot("ETH/USD:ETH", 9, age_s=120)),
        "BTC/USD:BTC-261225": encode(snapshot("BTC/USD:BTC-261225", 9, age_s=2)),
    })
    client.xadd(KEYS.deadletter, {"reason": "undecodable"})
    for _ in range(2):
        client.xadd(KEYS.alerts, {"edge": "1.5"})
    client.close()
    return redis_url


def status_json(url: str) -> dict:
    result = CliRunner().invoke(main, ["status", "--json", "--redis-url", url])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_status_json_reports_producers_streams_groups_books(pipeline):
    doc = status_json(pipeline)

    producers = {p["shard"]: p for p in doc["producers"]}
    assert producers["deribit.btc"]["state"] == "up" and producers["deribit.btc"]["buffered"] == 17
    assert producers["deribit.btc"]["updates_per_s"] == 12.5 and producers["deribit.btc"]["pid"] == 4242
    assert producers["deribit.eth"]["state"] == "stopped" and producers["deribit.eth"]["failed"] == 1
    assert "hunter2" not in json.dumps(doc) and "redis://app:***@db" in producers["deribit.btc"]["last_error"]

    shards = {s["shard"]: s for s in doc["shards"]}
    assert shards["deribit.btc"]["streams"] == 2 and shards["deribit.btc"]["length"] == 2 * PER_SYMBOL
    assert shards["deribit.eth"]["streams"] == 1 and shards["deribit.eth"]["entries_added"] == PER_SYMBOL
    assert shards["deribit.btc"]["last_write_age_s"] is not None

    groups = {g["group"]: g for g in doc["groups"]}
    archiver = groups["archiver"]
    assert archiver["streams"] == 3 and archiver["consumers"] == ["a", "b"]
    assert archiver["pending"] == 3  # 4 delivered on btc, 1 acked; eth all acked
    assert archiver["lag"] == (PER_SYMBOL - 4) + PER_SYMBOL + 0  # btc rest, btc future untouched, eth read
    assert groups["cache"] == {"group": "cache", "streams": 1, "consumers": [], "pending": 0, "lag": 0, "lag_unknown": 0}
    by_shard = {g["group"]: g for g in shards["deribit.eth"]["groups"]}
    assert by_shard["archiver"]["lag"] == 0 and by_shard["archiver"]["consumers"] == ["b"]

    (books,) = doc["books"]
    assert books["exchange"] == "deribit" and books["books"] == 3 and books["stale"] == 1
    assert 1 <= books["median_age_s"] < 120 <= books["max_age_s"]
    assert doc["dead_letters"] == 1 and doc["alerts"] == 2


def test_status_human_view_names_everything(pipeline):
    result = CliRunner().invoke(main, ["status", "--redis-url", pipeline], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    for text in ("Producers", "deribit.btc", "stopped 60m", "archiver", "Latest books", "dead letters: 1", "alerts: 2",
                 "deribit.btc: ConnectionError: redis://app:***@db"):
        assert text in result.output
    assert "hunter2" not in result.output


def test_status_on_an_empty_redis_says_none(redis_url):
    result = CliRunner().invoke(main, ["status", "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    assert "Producers: none" in result.output and "Consumer groups: none" in result.output


def test_unreachable_redis_is_one_line_exit_2_without_the_password():
    url = f"redis://app:hunter2@127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(main, ["status", "--redis-url", url])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Redis at redis://app:***@127.0.0.1")
    assert "hunter2" not in result.output


def test_watch_json_prints_a_document_per_sample_with_write_rates(pipeline):
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "status", "--watch", "--json", "--interval", "0.2", "--redis-url", pipeline],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first, second = (json.loads(proc.stdout.readline()) for _ in range(2))
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert all(shard["write_rate"] is None for shard in first["shards"])
    assert [shard["write_rate"] for shard in second["shards"]] == [0.0, 0.0]  # nothing written in between
    assert second["taken_at"] > first["taken_at"]


class RoundTrips:
    """Counts the requests a redis.asyncio client sends (a pipeline is one)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        original = aioredis.connection.AbstractConnection.send_packed_command

        async def counting(connection, command, check_health=True):
            self.count += 1
            return await original(connection, command, check_health)

        monkeypatch.setattr(aioredis.connection.AbstractConnection, "send_packed_command", counting)


async def test_thousands_of_streams_cost_a_few_round_trips(redis_url, monkeypatch):
    client = aioredis.Redis.from_url(redis_url)
    try:
        streams = [KEYS.book_stream("deribit.opt", f"BTC/USD:BTC-261225-{strike}-C") for strike in range(2500)]
        async with client.pipeline(transaction=False) as pipe:
            pipe.sadd(KEYS.shards, "deribit.opt")
            pipe.sadd(KEYS.shard_streams("deribit.opt"), *streams)
            for stream in streams:
                pipe.xadd(stream, {"d": b"x"})
                pipe.xgroup_create(stream, "archiver", id="0")
                pipe.xreadgroup("archiver", "a", {stream: ">"}, count=1)
            await pipe.execute()
        trips = RoundTrips(monkeypatch)
        state = await asyncio.wait_for(read_pipeline_state(client), timeout=30)
    finally:
        await client.aclose()
    assert state.shards[0].streams == 2500 and state.groups[0].pending == 2500
    assert state.groups[0].consumers == {"a"}
    assert trips.count < 40  # vs. 7500 if each stream's XINFO calls were sent one by one
