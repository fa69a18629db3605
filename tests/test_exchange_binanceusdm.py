"""Binance USDⓈ-M end to end: the emulator through unmodified ccxt.pro (REST snapshot + diff-depth sync), then the
collector (its binanceusdm adapter) through the same ccxt: exact books, recovery from disconnects, sequence gaps,
refused subscribes and 100+ symbols on one connection."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import ccxt
import orjson
import pytest

from emulator import EmulatorServer
from producer import CCXTProCollector, SequenceGapError
from tests.exchange_checks import (  # noqa: F401 - server, errors, collector are fixtures
    malformed_frame_is_dropped, recover_after_stall, refused_subscribe_recovers, DEADLINE, assert_books_equal_server, assert_raw_books_equal_server, collector, errors, native_id, raw_client_fixture, recover_after_disconnect, resync_after, run_emulate_cli, server, start_collector, subscribe_everything, wait_until,
)

EXCHANGE = "binanceusdm"
QUARTERLY = "BTC/USDT:USDT-261225"  # BTCUSDT_261225, the December 2026 quarterly


binance = raw_client_fixture("binance")


async def subscribe_books(collector: CCXTProCollector) -> int:
    """Two perpetuals (one by native id), both BTC quarterlies and an alt."""
    await collector.subscribe_futures(["BTC/USDT:USDT", "ETHUSDT", QUARTERLY, "BTCUSDT_270326", "SOL/USDT:USDT"])
    return 5


# -- the emulator through plain ccxt ----------------------------------------------------------------------------


async def test_ccxt_loads_perpetuals_and_quarterlies(binance: Any) -> None:
    markets = binance.markets
    perpetual = markets["BTC/USDT:USDT"]
    assert (perpetual["id"], perpetual["type"], perpetual["linear"], perpetual["settle"]) == (
        "BTCUSDT", "swap", True, "USDT")
    assert (perpetual["precision"]["price"], perpetual["precision"]["amount"]) == (0.1, 0.001)
    for currency in ("BTC", "ETH"):
        futures = sorted((m for m in markets.values() if m["base"] == currency and m["future"]),
                         key=lambda m: m["expiry"])
        assert [m["info"]["contractType"] for m in futures] == ["CURRENT_QUARTER", "NEXT_QUARTER"]
        assert all(m["active"] and m["expiry"] % 86_400_000 == 8 * 3_600_000 for m in futures)
    assert (markets[QUARTERLY]["id"], markets["BTC/USDT:USDT-270326"]["id"]) == ("BTCUSDT_261225", "BTCUSDT_270326")
    swaps = [m for m in markets.values() if m["swap"]]
    assert len(swaps) >= 100 and all(m["active"] and m["quote"] == "USDT" for m in swaps)


async def test_rest_depth_equals_the_server_and_rejects_bad_input(binance: Any, server: EmulatorServer) -> None:
    server.pause(EXCHANGE)
    book = await asyncio.wait_for(binance.fetch_order_book("ETH/USDT:USDT", 5), DEADLINE)
    wanted = server.book(EXCHANGE, "ETHUSDT", depth=5)
    assert (book["bids"], book["asks"], book["nonce"]) == (wanted["bids"], wanted["asks"], wanted["change_id"])
    with pytest.raises(ccxt.BadRequest):
        await asyncio.wait_for(binance.fetch_order_book("ETH/USDT:USDT", 7), DEADLINE)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/fapi/v1/depth", params={"symbol": "NOPE"}) as reply:
            assert (reply.status, (await reply.json())["code"]) == (400, -1121)


async def test_ccxt_books_equal_the_server(binance: Any, server: EmulatorServer) -> None:
    # the watch limit is the REST snapshot depth: 50 and ccxt's default 1000
    await assert_raw_books_equal_server(binance, server, {"BTC/USDT:USDT": 50, QUARTERLY: None})
    assert binance.orderbooks["BTC/USDT:USDT"]["nonce"] == server.book(EXCHANGE, "BTCUSDT")["change_id"]


async def test_plain_ccxt_raises_checksum_error_on_a_gap_and_resyncs_on_the_next_watch(binance: Any,
                                                                                       server: EmulatorServer) -> None:
    await asyncio.wait_for(binance.watch_order_book("BTC/USDT:USDT", 50), DEADLINE)
    server.skip_sequence(EXCHANGE, "BTCUSDT")
    with pytest.raises(ccxt.ChecksumError):
        while True:
            await asyncio.wait_for(binance.watch_order_book("BTC/USDT:USDT", 50), DEADLINE)
    await assert_raw_books_equal_server(binance, server, {"BTC/USDT:USDT": 50})


async def test_wire_protocol_subscribe_updates_and_errors(server: EmulatorServer) -> None:
    url = server.ccxt_config(EXCHANGE)["urls"]["api"]["ws"]["linear"].replace("/ws", "/public/ws/0")
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        async def request(payload: Any) -> dict:
            await ws.send_str(payload if isinstance(payload, str) else orjson.dumps(payload).decode())
            while "e" in (reply := orjson.loads((await asyncio.wait_for(ws.receive(), DEADLINE)).data)):
                pass
            return reply

        assert await request({"method": "SUBSCRIBE", "params": ["ethusdt@depth@100ms"], "id": 1}) == {
            "result": None, "id": 1}
        first = orjson.loads((await asyncio.wait_for(ws.receive(), DEADLINE)).data)
        second = orjson.loads((await asyncio.wait_for(ws.receive(), DEADLINE)).data)
        assert (first["e"], first["s"], second["pu"]) == ("depthUpdate", "ETHUSDT", first["u"])
        assert first["U"] <= first["u"] and all(isinstance(p, str) for p, _ in first["b"] + first["a"])
        assert (await request({"method": "LIST_SUBSCRIPTIONS", "id": 2}))["result"] == ["ethusdt@depth@100ms"]
        assert (await request({"method": "SUBSCRIBE", "params": ["nope@depth"], "id": 3}))["error"]["code"] == 2
        assert (await request("{not json"))["error"]["code"] == 3
        assert await request({"method": "UNSUBSCRIBE", "params": ["ethusdt@depth@100ms"], "id": 4}) == {
            "result": None, "id": 4}
        assert (await request({"method": "LIST_SUBSCRIPTIONS", "id": 5}))["result"] == []


# -- the collector ------------------------------------------------------------------------------------------------


async def test_collector_books_equal_the_exchange_level_for_level(collector: CCXTProCollector,
                                                                   server: EmulatorServer) -> None:
    await assert_books_equal_server(collector, server)
    for symbol in collector.subscribed_symbols():
        history = collector.get_snapshot_history(symbol)
        assert history[0].resync is True and not any(s.resync for s in history[1:])
        assert collector.get_latest_orderbook(symbol).exchange_seq == server.book(
            EXCHANGE, native_id(collector, symbol))["change_id"]
    assert {ob.market_type for ob in collector.get_all_orderbooks().values()} == {"swap", "future"}
    assert len(collector.exchange.clients) == 1, "every symbol on its home connection"
    assert server.stats(EXCHANGE)["subscribe_requests"] == 2, "one SUBSCRIBE per market type"


@pytest.mark.parametrize("fault", ["close_connections", "abort_connections"])
async def test_collector_recovers_after_disconnect(collector: CCXTProCollector, server: EmulatorServer,
                                                   fault: str) -> None:
    await recover_after_disconnect(collector, server, fault, "BTC/USDT:USDT")


async def test_sequence_gap_resyncs_the_symbol(collector: CCXTProCollector, server: EmulatorServer,
                                               errors: list) -> None:
    server.skip_sequence(EXCHANGE, "BTCUSDT_261225")
    await resync_after(collector, server, errors, QUARTERLY, SequenceGapError)


async def test_refused_subscribe_fails_only_its_symbol_and_recovers(collector: CCXTProCollector,
                                                                    server: EmulatorServer, errors: list) -> None:
    await refused_subscribe_recovers(collector, server, errors, "XRPUSDT", ccxt.ExchangeError)
    assert "Invalid request" in str(errors[0][1])


async def test_malformed_frame_is_dropped_and_streaming_goes_on(collector: CCXTProCollector,
                                                                server: EmulatorServer) -> None:
    await malformed_frame_is_dropped(collector, server, "BTC/USDT:USDT")


async def test_collector_recovers_after_a_stall(server: EmulatorServer) -> None:
    await recover_after_stall(server, EXCHANGE, ["BTC/USDT:USDT", QUARTERLY])


async def test_more_than_a_hundred_symbols_subscribe_in_bounded_time(server: EmulatorServer, errors: list) -> None:
    collector = await start_collector(server, EXCHANGE, errors)
    try:
        # one REST snapshot per symbol, paced by ccxt's rate limiter (depth weight 2 -> 0.1 s each)
        await subscribe_everything(collector, at_least=100, seconds_per_symbol=0.3)
        assert server.stats(EXCHANGE)["subscribe_requests"] == 2, "one SUBSCRIBE per market type"
        assert len(collector.exchange.clients) == 1
        assert not errors
    finally:
        await collector.stop()


async def test_discovery_and_symbol_forms(server: EmulatorServer, errors: list) -> None:
    collector = await start_collector(server, EXCHANGE, errors)
    try:
        assert collector.get_available_futures("BTC") == ["BTC/USDT:USDT", QUARTERLY, "BTC/USDT:USDT-270326"]
        assert collector.get_available_futures("eth")[0] == "ETH/USDT:USDT"
        assert collector.get_available_options() == []
        assert await collector.subscribe_futures(["BTCUSDT_261225"]) == [QUARTERLY]
        await wait_until(lambda: collector.get_latest_orderbook("BTCUSDT_261225"), what="book by native id")
        assert collector.get_latest_orderbook(QUARTERLY).symbol == QUARTERLY
        assert (await collector.get_market_info("ETHUSDT"))["symbol"] == "ETH/USDT:USDT"
    finally:
        await collector.stop()


def test_emulate_cli_serves_binanceusdm() -> None:
    run_emulate_cli(EXCHANGE)
