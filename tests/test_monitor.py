"""The arbitrage monitor and the compare table against a real Redis, driven by snapshots published to the
book streams of deribit and okx (BTC/USD:BTC) and binanceusdm (BTC/USDT:USDT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import redis
from click.testing import CliRunner

from cli import main
from common.markets import MarketInfo
from common.streams import StreamKeys
from consumers.arbitrage import ArbitrageEngine, FeeSchedule
from consumers.cache import LatestBookCache
from consumers.grouping import Grouper
from consumers.monitor import ArbitrageMonitor
from tests.test_cache import DEADLINE, book, publish, running, wait_until

KEYS = StreamKeys()
MARKETS = [
    MarketInfo("deribit", "BTC/USD:BTC", "BTC-PERPETUAL", "swap", "BTC", "USD", "BTC"),
    MarketInfo("okx", "BTC/USD:BTC", "BTC-USD-SWAP", "swap", "BTC", "USD", "BTC"),
    MarketInfo("binanceusdm", "BTC/USDT:USDT", "BTCUSDT", "swap", "BTC", "USDT", "USDT"),
]


def alerts(redis_url: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [fields for _, fields in client.xrange(KEYS.alerts)]
    finally:
        client.close()


def tick(okx_bid: float, seq: int, *, deribit_age: float = 0.0) -> list:
    """One update of each of the three books; okx's bid moves, the others stay near 50000."""
    return [
        book("deribit", "BTC/USD:BTC", 50_000.0, 50_001.0, seq=seq, age=deribit_age),
        book("okx", "BTC/USD:BTC", okx_bid, okx_bid + 1.0, seq=seq),
        book("binanceusdm", "BTC/USDT:USDT", 50_000.0, 50_001.0, seq=seq),
    ]


def make_monitor() -> ArbitrageMonitor:
    # binanceusdm's high fee keeps its (equally crossed) pair below the threshold: exactly one opportunity
    fees = FeeSchedule({"binanceusdm": 15.0}, default_bps=5.0)
    return ArbitrageMonitor(ArbitrageEngine(Grouper(), fees, threshold_bps=5.0, close_margin_bps=1.0, max_age=30.0))


async def test_one_open_and_one_close_alert_per_crossed_market(redis_url):
    monitor = make_monitor()
    await publish(redis_url, tick(50_000.5, 1), MARKETS)
    async with running(redis_url, monitor) as runner:
        published = 3

        async def step(snapshots: list) -> None:
            nonlocal published
            await publish(redis_url, snapshots)
            published += len(snapshots)
            await wait_until(lambda: runner.stats.acked == published)

        await wait_until(lambda: runner.stats.acked == published)
        await step(tick(50_051.0, 2))  # edge ~10 bps, net ~0: below the threshold
        assert alerts(redis_url) == []

        await step(tick(50_100.0, 3))  # okx bid 50100 > deribit ask 50001: ~19.8 bps, net ~9.8
        for seq in range(4, 14):  # the crossed market persists over many ticks
            await step(tick(50_100.0 + seq, seq))
        opened = alerts(redis_url)
        assert [(a["event"], a["buy_exchange"], a["sell_exchange"]) for a in opened] == [("open", "deribit", "okx")]
        alert = opened[0]
        assert alert["group"] == "BTC-swap" and alert["buy_symbol"] == alert["sell_symbol"] == "BTC/USD:BTC"
        assert float(alert["ask"]) == 50_001.0 and float(alert["bid"]) == 50_100.0
        assert float(alert["edge_bps"]) == pytest.approx(99 / 50_001 * 1e4, abs=1e-3)
        assert float(alert["net_bps"]) == pytest.approx(float(alert["edge_bps"]) - 10.0, abs=1e-3)
        assert int(alert["ts"]) > 0 and alert["reason"] == "crossed"

        await step(tick(50_000.5, 14))  # back to normal
        closed = alerts(redis_url)[1:]
        assert [(a["event"], a["reason"], a["buy_exchange"]) for a in closed] == [("close", "narrowed", "deribit")]
    assert monitor.alerts_sent == 2


async def test_a_stale_book_never_makes_an_opportunity(redis_url):
    # a dead feed: deribit's only book is two minutes old, and okx bids far above its ask
    await publish(redis_url, tick(50_100.0, 1, deribit_age=120.0), MARKETS)
    async with running(redis_url, make_monitor()) as runner:
        await wait_until(lambda: runner.stats.acked == 3)
        await publish(redis_url, tick(50_100.0, 2, deribit_age=120.0)[1:])
        await wait_until(lambda: runner.stats.acked == 5)
        assert alerts(redis_url) == []
        await publish(redis_url, tick(50_100.0, 3)[:1])  # deribit comes back: now it is real
        await wait_until(lambda: len(alerts(redis_url)) == 1)
    assert alerts(redis_url)[0]["event"] == "open"


async def test_compare_once_shows_every_exchange_of_the_group(redis_url):
    await publish(redis_url, tick(50_010.0, 1) + [book("deribit", "ETH/USD:ETH", 3000.0, 3000.5, seq=1)], MARKETS)
    async with running(redis_url, LatestBookCache()) as runner:
        await wait_until(lambda: runner.stats.acked == 4)
    cli = CliRunner(env={"COLUMNS": "200"})
    for target in ("BTC/USD:BTC", "BTC-swap", "BTC/USDT:USDT"):
        result = cli.invoke(main, ["compare", target, "--once", "--redis-url", redis_url])
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "BTC-swap" in out and all(ex in out for ex in ("deribit", "okx", "binanceusdm"))
        assert "ETH" not in out and "best" in out
    result = cli.invoke(main, ["compare", "SOL/USD:SOL", "--once", "--redis-url", redis_url])
    assert result.exit_code == 1 and "no cached books" in result.stderr
    result = cli.invoke(main, ["compare", "BTC-swap", "--once", "--groups", "{\"g\": \"oops\"}", "--redis-url", redis_url])
    assert result.exit_code == 2 and result.stderr.startswith("error: groups:")


async def test_compare_uses_explicit_groups(redis_url):
    await publish(redis_url, tick(50_010.0, 1), MARKETS)
    async with running(redis_url, LatestBookCache()) as runner:
        await wait_until(lambda: runner.stats.acked == 3)
    groups = '{"perps": ["okx:BTC/USD:BTC", "binanceusdm:BTC/USDT:USDT"]}'
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        main, ["compare", "perps", "--once", "--groups", groups, "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    assert "okx" in result.stdout and "binanceusdm" in result.stdout and "deribit" not in result.stdout


def test_monitor_command_rejects_bad_fees():
    result = CliRunner().invoke(main, ["monitor", "--fee", "okx", "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 2 and "EXCHANGE=BPS" in result.stderr


async def test_monitor_command_alerts_and_stops_on_sigterm(redis_url):
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "monitor", "--redis-url", redis_url, "--threshold-bps", "5",
         "--fee", "binanceusdm=15", "--max-age", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await publish(redis_url, tick(50_100.0, 1), MARKETS)
        await wait_until(lambda: len(alerts(redis_url)) >= 1 or proc.poll() is not None)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, output.decode()
    assert [(a["event"], a["buy_exchange"], a["sell_exchange"]) for a in alerts(redis_url)] == [("open", "deribit", "okx")]
    assert "arbitrage open" in output.decode()
