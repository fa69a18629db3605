"""Bybit end to end: the emulator through unmodified ccxt.pro, then the collector (its Bybit adapter) through the
same ccxt: exact books per category and depth, recovery from disconnects, update-id gaps, refused subscribes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from emulator import EmulatorServer
from producer import CCXTProCollector, SequenceGapError
from tests.exchange_checks import (  # noqa: F401 - server, errors, collector are fixtures
    DEADLINE, assert_books_equal_server, assert_raw_books_equal_server, collector, errors, levels, raw_client_fixture, recover_after_disconnect, refused_subscribe_recovers, resync_after, run_emulate_cli, server, start_collector, subscribe_everything, wait_until,
)

EXCHANGE = "bybit"
OPTION = "BTC/USDC:USDC-261225-60000-C"  # native id BTC-25DEC26-60000-C


bybit = raw_client_fixture("bybit")


async def subscribe_books(collector: CCXTProCollector) -> int:
    """Linear and inverse perpetuals and futures and two options (three sockets)."""
    await collector.subscribe_futures(["BTCUSDT", "BTC/USD:BTC", "BTC/USDT:USDT-261225", "BTCUSDZ26"])
    await collector.subscribe_options([OPTION, "BTC-25DEC26-60000-P"])
    return 6


# -- the emulator through plain ccxt ----------------------------------------------------------------------------


async def test_ccxt_loads_linear_inverse_and_option_markets(bybit: Any) -> None:
    markets = bybit.markets
    linear, inverse = markets["BTC/USDT:USDT"], markets["BTC/USD:BTC"]
    assert (linear["id"], linear["type"], linear["linear"], linear["precision"]["price"]) == (
        "BTCUSDT", "swap", True, 0.1)
    assert (inverse["id"], inverse["inverse"], inverse["settle"]) == ("BTCUSD", True, "BTC")
    assert (markets["BTC/USDT:USDT-261225"]["id"], markets["BTC/USDT:USDT-261225"]["type"]) == (
        "BTCUSDT-25DEC26", "future")
    assert markets["BTC/USD:BTC-261225"]["id"] == "BTCUSDZ26"  # the same unified symbol as Deribit's future
    option = markets[OPTION]
    assert (option["id"], option["strike"], option["optionType"], option["active"]) == (
        "BTC-25DEC26-60000-C", 60000, "call", True)
    for currency in ("BTC", "ETH"):
        options = [m for m in markets.values() if m["base"] == currency and m["option"]]
        assert len({m["expiry"] for m in options}) >= 2 and {m["optionType"] for m in options} == {"call", "put"}
    assert not any(m["spot"] for m in markets.values())


async def test_instrument_pages_are_followed(server: EmulatorServer) -> None:
    url = server.url + "/v5/market/instruments-info"
    async with aiohttp.ClientSession() as session:
        symbols, cursor = [], ""
        while True:
            async with session.get(url, params={"category": "option", "limit": "7", "cursor": cursor}) as reply:
                result = (await reply.json())["result"]
            symbols += [record["symbol"] for record in result["list"]]
            cursor = result["nextPageCursor"]
            if not cursor:
                break
        async with session.get(url, params={"category": "option"}) as reply:
            everything = [record["symbol"] for record in (await reply.json())["result"]["list"]]
        assert symbols == everything and len(symbols) > 7
        async with session.get(url, params={"category": "nope"}) as reply:
            assert (await reply.json())["retCode"] == 10001


async def test_rest_book_equals_the_server(bybit: Any, server: EmulatorServer) -> None:
    server.pause(EXCHANGE)
    book = await asyncio.wait_for(bybit.fetch_order_book("BTC/USDT:USDT", 50), DEADLINE)
    wanted = server.book(EXCHANGE, "BTCUSDT", depth=50)
    assert (levels(book["bids"]), levels(book["asks"])) == (wanted["bids"], wanted["asks"])


async def test_ccxt_books_equal_the_server_on_every_socket_and_depth(bybit: Any, server: EmulatorServer) -> None:
    # linear depth 50 (default) and 1 (snapshots), inverse 50, option 25: depth-limited topics must add the levels
    # that move into the top N and delete the ones that fall out of it
    await assert_raw_books_equal_server(bybit, server, {"BTC/USDT:USDT": None, "ETH/USDT:USDT": 1,
                                                        "BTC/USD:BTC": None, OPTION: 25}, depth=50)
    assert len(bybit.orderbooks["ETH/USDT:USDT"]["bids"]) == 1
    assert len(bybit.orderbooks[OPTION]["bids"]) == 25


async def test_wire_protocol_ping_acks_and_update_ids(server: EmulatorServer) -> None:
    url = server.ccxt_config(EXCHANGE)["urls"]["api"]["ws"]["public"]["linear"]
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        async def reply() -> dict:
            return orjson.loads((await asyncio.wait_for(ws.receive(), DEADLINE)).data)

        await ws.send_str('{"req_id":"7","op":"ping"}')
        pong = await reply()
        assert (pong["success"], pong["ret_msg"], pong["req_id"]) == (True, "pong", "7")
        await ws.send_str('{"req_id":"8","op":"subscribe","args":["orderbook.50.BTCUSDT"]}')
        while (ack := await reply()).get("op") != "subscribe":
            pass
        assert (ack["success"], ack["req_id"]) == (True, "8")
        snapshot = await reply()
        assert (snapshot["topic"], snapshot["type"]) == ("orderbook.50.BTCUSDT", "snapshot")
        update_id = snapshot["data"]["u"]
        for _ in range(5):
            delta = await reply()
            assert (delta["type"], delta["data"]["u"]) == ("delta", update_id + 1)
            update_id += 1
        await ws.send_str('{"req_id":"9","op":"subscribe","args":["orderbook.50.BTC-25DEC26-60000-C"]}')
        while (refusal := await reply()).get("op") != "subscribe":
            pass
        assert (refusal["success"], refusal["req_id"]) == (False, "9"), "options live on the option socket"


# -- the collector ------------------------------------------------------------------------------------------------


async def test_collector_books_equal_the_exchange_level_for_level(collector: CCXTProCollector,
                                                                   server: EmulatorServer) -> None:
    await assert_books_equal_server(collector, server)
    for symbol in collector.subscribed_symbols():
        history = collector.get_snapshot_history(symbol)
        assert history[0].resync is True and not any(s.resync for s in history[1:])
    assert {ob.market_type for ob in collector.get_all_orderbooks().values()} == {"swap", "future", "option"}
    assert len(collector.exchange.clients) == 3, "linear, inverse and option sockets"
    assert collector.exchange.book_depth == {**{s: 50 for s in collector.subscribed_futures},
                                             **{s: 25 for s in collector.subscribed_options}}


@pytest.mark.parametrize("fault", ["close_connections", "abort_connections"])
async def test_collector_recovers_after_disconnect(collector: CCXTProCollector, server: EmulatorServer,
                                                   fault: str) -> None:
    await recover_after_disconnect(collector, server, fault, "BTC/USDT:USDT")


@pytest.mark.parametrize("symbol", ["BTC/USD:BTC-261225", OPTION])
async def test_update_id_gap_resyncs_the_symbol(collector: CCXTProCollector, server: EmulatorServer, errors: list,
                                                symbol: str) -> None:
    server.skip_sequence(EXCHANGE, collector.exchange.market(symbol)["id"])
    await resync_after(collector, server, errors, symbol, SequenceGapError)


async def test_refused_subscribe_fails_only_its_symbols_and_recovers(collector: CCXTProCollector,
                                                                     server: EmulatorServer, errors: list) -> None:
    await refused_subscribe_recovers(collector, server, errors, "ETHUSDT", "too many requests")


async def test_unsubscribe_stops_the_topic(collector: CCXTProCollector, server: EmulatorServer) -> None:
    await collector.unsubscribe("BTCUSDT")
    assert collector.get_latest_orderbook("BTC/USDT:USDT") is None
    await wait_until(lambda: server.stats(EXCHANGE)["subscriptions"] == 5, what="the server to drop the topic")
    linear = next(c for url, c in collector.exchange.clients.items() if url.endswith("/linear"))
    assert "orderbook:BTC/USDT:USDT" not in linear.subscriptions


async def test_more_than_a_hundred_symbols_subscribe_in_bounded_time(server: EmulatorServer, errors: list) -> None:
    collector = await start_collector(server, EXCHANGE, errors)
    try:
        seconds = await subscribe_everything(collector, at_least=100)
        assert seconds < DEADLINE
        assert server.stats(EXCHANGE)["subscribe_requests"] <= 4, "one frame per socket and call"
        assert not errors
        await assert_books_equal_server(collector, server)
    finally:
        await collector.stop()


async def test_discovery_filters_and_symbol_forms(server: EmulatorServer, errors: list) -> None:
    collector = await start_collector(server, EXCHANGE, errors, orderbook_limit=100)
    try:
        futures = collector.get_available_futures("BTC")
        assert set(futures[:2]) == {"BTC/USD:BTC", "BTC/USDT:USDT"}, "perpetuals first"
        assert {"BTC/USD:BTC-261225", "BTC/USDT:USDT-261225"} <= set(futures)
        calls = collector.get_available_options("BTC", option_type="call", expiry="2026-12-25")
        assert OPTION in calls and all(s.endswith("-C") and "-261225-" in s for s in calls)
        assert collector.get_available_options("BTC", min_strike=60000, max_strike=60000, expiry="25DEC26") == [
            OPTION, "BTC/USDC:USDC-261225-60000-P"]
        assert await collector.subscribe_options(["BTC-25DEC26-60000-C"]) == [OPTION]
        assert await collector.subscribe_futures(["ETHUSD"]) == ["ETH/USD:ETH"]
        await wait_until(lambda: len(collector.orderbooks) == 2, what="books by native id")
        assert collector.exchange.book_depth == {OPTION: 100, "ETH/USD:ETH": 200}, "the depth covering limit 100"
        assert len(collector.get_latest_orderbook("BTC-25DEC26-60000-C").bids) == min(
            100, len(server.book(EXCHANGE, "BTC-25DEC26-60000-C")["bids"]))
    finally:
        await collector.stop()


def test_emulate_cli_serves_bybit() -> None:
    run_emulate_cli(EXCHANGE)

