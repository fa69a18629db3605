"""Three exchanges at once, through real ccxt against their emulators: in-process with
MultiExchangeCollector.compare_orderbooks, and through producers, Redis and the arbitrage monitor, which
raises exactly one alert when two exchanges are made to cross and one when they uncross."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from common import StreamConfig
from common.streams import StreamKeys
from consumers.arbitrage import ArbitrageEngine, FeeSchedule
from consumers.grouping import Grouper
from consumers.monitor import ArbitrageMonitor
from consumers.runner import ConsumerRunner
from emulator import EmulatorServer
from producer import MultiExchangeCollector
from producer.shard import ProducerProcess, ShardConfig
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(150)
PERPETUALS = {"deribit": "BTC-PERPETUAL", "okx": "BTC-USD-SWAP", "binanceusdm": "BTCUSDT"}


@pytest.fixture
def server():
    with EmulatorServer(exchanges=list(PERPETUALS), seed=7, port=0, update_interval=0.05) as emulator:
        yield emulator


async def test_multi_exchange_collector_compares_three_exchanges(server):
    multi = MultiExchangeCollector()
    try:
        for exchange, native in PERPETUALS.items():
            await multi.add_exchange(StreamConfig(exchange_id=exchange, exchange_config=server.ccxt_config(exchange)))
            await multi.get_collector(exchange).subscribe_futures([native])
        await wait_until(lambda: len(multi.compare_orderbooks("BTC/USD:BTC")) == 2
                    and multi.get_collector("binanceusdm").get_latest_orderbook("BTC/USDT:USDT") is not None,
                    45, "books from all three exchanges")
        inverse = multi.compare_orderbooks("BTC/USD:BTC")
        assert set(inverse) == {"deribit", "okx"}  # the same unified symbol on both
        linear = multi.get_collector("binanceusdm").get_latest_orderbook("BTCUSDT")
        mids = [book.mid_price for book in inverse.values()] + [linear.mid_price]
        assert max(mids) / min(mids) < 1.01, f"emulated prices should be close across exchanges: {mids}"
    finally:
        await multi.stop_all()


async def test_monitor_alerts_once_when_two_exchanges_cross_and_once_when_they_uncross(server, redis_url):
    keys = StreamKeys()
    producers = [
        ProducerProcess(ShardConfig(exchange=exchange, shard="btc", symbols=[native], limit=5, redis_url=redis_url,
                                    exchange_config=server.ccxt_config(exchange), market_refresh=0, heartbeat=0.2))
        for exchange, native in PERPETUALS.items()
    ]
    engine = ArbitrageEngine(Grouper({}), FeeSchedule({}, 5.0), threshold_bps=50, close_margin_bps=5, max_age=120)
    runner = ConsumerRunner(aioredis.from_url(redis_url), ArbitrageMonitor(engine), block_ms=50, discover_interval=0.2)
    client = aioredis.from_url(redis_url)
    tasks = [asyncio.create_task(p.run()) for p in producers] + [asyncio.create_task(runner.run())]

    async def alerts() -> list[dict]:
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in await client.xrange(keys.alerts)]

    def seen(exchange: str) -> int:
        return producers[list(PERPETUALS).index(exchange)].publisher.stats.published

    try:
        await wait_until(lambda: all(seen(e) >= 5 for e in PERPETUALS), 45, "all three producers publishing")
        server.pause()
        await asyncio.sleep(0.5)  # let the last frames of the walk reach the monitor
        assert await alerts() == [], "no opportunity may exist before the markets are made to cross"
        okx_mid = server.book("okx", "BTC-USD-SWAP", depth=1)["bids"][0][0]
        before = seen("okx")
        server.shift_price("okx", "BTC-USD-SWAP", okx_mid * 0.02)  # okx bids now ~200 bps above the others' asks
        await wait_until(lambda: seen("okx") > before, 20, "the shifted okx book to be published")
        await wait_until(_has(alerts, "open", "deribit"), 20, "an open alert (buy deribit, sell okx)")
        for _ in range(3):  # the crossed market persists over more ticks: still exactly one open alert
            before = seen("okx")
            server.shift_price("okx", "BTC-USD-SWAP", 1.0)
            await wait_until(lambda: seen("okx") > before, 20, "another okx tick")
        server.shift_price("okx", "BTC-USD-SWAP", -okx_mid * 0.02 - 3.0)
        await wait_until(_has(alerts, "close", "deribit"), 20, "a close alert (buy deribit, sell okx)")
        pair = [a for a in await alerts() if a["buy_exchange"] == "deribit" and a["sell_exchange"] == "okx"]
        assert [a["event"] for a in pair] == ["open", "close"]
        assert float(pair[0]["net_bps"]) >= 50
        events = [a["event"] for a in await alerts()]
        assert events.count("open") == events.count("close")  # every opened pair closed again
        assert all(a["sell_exchange"] == "okx" for a in await alerts())
    finally:
        for producer in producers:
            producer.stop()
        runner.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()


def _has(alerts, event: str, buy: str):
    async def check() -> bool:
        return any(a["event"] == event and a["buy_exchange"] == buy and a["sell_exchange"] == "okx" for a in await alerts())
    return check
