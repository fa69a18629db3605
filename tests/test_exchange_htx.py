"""HTX (Huobi) linear contracts end to end: the emulator (gzip frames, ping/pong, incremental depth channels) through
unmodified ccxt.pro, then the collector (its htx adapter) through the same ccxt: exact books, recovery from
disconnects, version gaps that plain ccxt would silently ignore, refused subscribes and 100+ symbols."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import aiohttp
import ccxt
import orjson
import pytest
from aiohttp import WSMsgType

from emulator import EmulatorServer
from producer import CCXTProCollector, SequenceGapError
from tests.exchange_checks import (  # noqa: F401 - server, errors, collector are fixtures
    malformed_frame_is_dropped, recover_after_stall, refused_subscribe_recovers, DEADLINE, UPDATE_INTERVAL, assert_books_equal_server, assert_raw_books_equal_server, collector, errors, native_id, raw_client_fixture, recover_after_disconnect, resync_after, run_emulate_cli, server, start_collector, subscribe_everything, wait_until,
)

EXCHANGE = "htx"
QUARTERLY = "BTC/USDT:USDT-261225"  # BTC-USDT-261225, contract_type quarter
PING_INTERVAL = 0.5  # seconds; HTX's is 5 s, short here so every test runs through several pings
EMULATOR_OPTIONS = {"ping_interval": PING_INTERVAL}


htx = raw_client_fixture("htx")


async def subscribe_books(collector: CCXTProCollector) -> int:
    """Both perpetuals (one by native id), the quarterly, a weekly and an alt."""
    weekly = next(s for s in collector.get_available_futures("ETH") if s != "ETH/USDT:USDT")
    await collector.subscribe_futures(["BTC/USDT:USDT", "ETH-USDT", QUARTERLY, weekly, "SOL/USDT:USDT"])
    return 5


def unzip(message: aiohttp.WSMessage) -> dict:
    assert message.type == WSMsgType.BINARY, message
    return orjson.loads(gzip.decompress(message.data))


# -- the emulator through plain ccxt ----------------------------------------------------------------------------


async def test_ccxt_loads_linear_swaps_and_futures(htx: Any) -> None:
    markets = htx.markets
    swap = markets["BTC/USDT:USDT"]
    assert (swap["id"], swap["type"], swap["linear"], swap["contractSize"], swap["precision"]["price"]) == (
        "BTC-USDT", "swap", True, 0.001, 0.1)
    quarterly = markets[QUARTERLY]
    assert (quarterly["id"], quarterly["type"], quarterly["info"]["contract_type"]) == (
        "BTC-USDT-261225", "future", "quarter")
    for currency in ("BTC", "ETH"):
        futures = sorted((m for m in markets.values() if m["base"] == currency and m["future"]),
                         key=lambda m: m["expiry"])
        assert [m["info"]["contract_type"] for m in futures] == ["this_week", "next_week", "quarter"]
        assert all(m["active"] and m["expiry"] % 86_400_000 == 8 * 3_600_000 for m in futures)
    assert len([m for m in markets.values() if m["swap"]]) >= 100
    assert not any(m["spot"] or m["inverse"] for m in markets.values())


async def test_rest_depth_equals_the_server(htx: Any, server: EmulatorServer) -> None:
    server.pause(EXCHANGE)
    book = await asyncio.wait_for(htx.fetch_order_book("ETH/USDT:USDT"), DEADLINE)
    wanted = server.book(EXCHANGE, "ETH-USDT")
    assert (book["bids"], book["asks"]) == (wanted["bids"], wanted["asks"])


async def test_ccxt_books_equal_the_server_on_every_channel_size(htx: Any, server: EmulatorServer) -> None:
    await assert_raw_books_equal_server(htx, server, {"BTC/USDT:USDT": 20, QUARTERLY: 150, "ETH/USDT:USDT": 5})
    book = htx.orderbooks["ETH/USDT:USDT"]
    assert len(book["bids"]) == len(book["asks"]) == 5, "size_5: levels leaving the top 5 are deleted"


async def test_plain_ccxt_silently_freezes_on_a_version_gap(htx: Any, server: EmulatorServer) -> None:
    """The trap the adapter exists for: ccxt drops every update after a gap and keeps returning the old book."""
    await asyncio.wait_for(htx.watch_order_book("BTC/USDT:USDT", 20), DEADLINE)
    server.skip_sequence(EXCHANGE, "BTC-USDT")
    await wait_until(lambda: not server.stats(EXCHANGE)["faults"]["skip"], what="the skipped change")
    for _ in range(2):  # by now every update sent before the gap has been handled
        await asyncio.wait_for(htx.watch_order_book("BTC/USDT:USDT", 20), DEADLINE)
    frozen, server_id = htx.orderbooks["BTC/USDT:USDT"]["nonce"], server.book(EXCHANGE, "BTC-USDT")["change_id"]
    for _ in range(5):
        book = await asyncio.wait_for(htx.watch_order_book("BTC/USDT:USDT", 20), DEADLINE)
    assert server.book(EXCHANGE, "BTC-USDT")["change_id"] > server_id
    assert book["nonce"] == frozen


async def test_wire_protocol_gzip_ping_subscribe_and_errors(server: EmulatorServer) -> None:
    url = f"{server.url.replace('http', 'ws')}/linear-swap-ws"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        async def reply() -> dict:
            while "ping" in (message := unzip(await asyncio.wait_for(ws.receive(), DEADLINE))):
                await ws.send_str(orjson.dumps({"pong": message["ping"]}).decode())
            return message

        channel = "market.BTC-USDT.depth.size_20.high_freq"
        await ws.send_str(orjson.dumps({"sub": channel, "data_type": "incremental", "id": "1"}).decode())
        ack = await reply()
        assert (ack["id"], ack["status"], ack["subbed"]) == ("1", "ok", channel)
        snapshot, update = (await reply())["tick"], (await reply())["tick"]
        assert (snapshot["event"], len(snapshot["bids"]), len(snapshot["asks"])) == ("snapshot", 20, 20)
        assert (update["event"], update["version"], update["ch"]) == ("update", snapshot["version"] + 1, channel)
        await ws.send_str(orjson.dumps({"unsub": channel, "id": "2"}).decode())
        while "unsubbed" not in (message := await reply()):
            pass
        assert (message["id"], message["status"]) == ("2", "ok")
        await ws.send_str(orjson.dumps({"sub": "market.NOPE.depth.size_20.high_freq", "id": "3"}).decode())
        error = await reply()
        assert (error["id"], error["status"], error["err-code"]) == ("3", "error", "bad-request")
        await ws.send_str(orjson.dumps({"sub": "market.ETH-USDT.depth.size_5.high_freq", "id": "4"}).decode())
        assert (await reply())["status"] == "ok"
        pushes = [(await reply())["tick"] for _ in range(3)]  # data_type snapshot (the default): full views
        assert all(tick["event"] == "snapshot" and len(tick["bids"]) == 5 for tick in pushes)


async def test_unanswered_pings_close_the_connection(server: EmulatorServer) -> None:
    url = f"{server.url.replace('http', 'ws')}/linear-swap-ws"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        pings = 0
        while (message := await asyncio.wait_for(ws.receive(), DEADLINE)).type == WSMsgType.BINARY:
            assert "ping" in unzip(message)
            pings += 1
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and pings == 2


# -- the collector ------------------------------------------------------------------------------------------------


async def test_collector_books_equal_the_exchange_level_for_level(collector: CCXTProCollector,
                                                                   server: EmulatorServer) -> None:
    await assert_books_equal_server(collector, server)
    for symbol in collector.subscribed_symbols():
        history = collector.get_snapshot_history(symbol)
        assert history[0].resync is True and not any(s.resync for s in history[1:])
    assert {ob.market_type for ob in collector.get_all_orderbooks().values()} == {"swap", "future"}
    await asyncio.sleep(3 * PING_INTERVAL)  # several heartbeats: ccxt answers them, nothing reconnects
    assert all(status["reconnects"] == 0 for status in collector.get_status().values())


@pytest.mark.parametrize("fault", ["close_connections", "abort_connections"])
async def test_collector_recovers_after_disconnect(collector: CCXTProCollector, server: EmulatorServer,
                                                   fault: str) -> None:
    await recover_after_disconnect(collector, server, fault, "BTC/USDT:USDT")


async def test_version_gap_resyncs_the_symbol(collector: CCXTProCollector, server: EmulatorServer,
                                              errors: list) -> None:
    server.skip_sequence(EXCHANGE, "BTC-USDT-261225")
    await resync_after(collector, server, errors, QUARTERLY, SequenceGapError)


async def test_refused_subscribe_fails_only_its_symbol_and_recovers(collector: CCXTProCollector,
                                                                    server: EmulatorServer, errors: list) -> None:
    await refused_subscribe_recovers(collector, server, errors, "XRP-USDT", ccxt.BadRequest)


async def test_malformed_frame_is_dropped_and_streaming_goes_on(collector: CCXTProCollector,
                                                                server: EmulatorServer) -> None:
    await malformed_frame_is_dropped(collector, server, "BTC/USDT:USDT")


async def test_collector_recovers_after_a_stall(server: EmulatorServer) -> None:
    await recover_after_stall(server, EXCHANGE, ["BTC/USDT:USDT", QUARTERLY])


async def test_more_than_a_hundred_symbols_subscribe_in_bounded_time(server: EmulatorServer, errors: list) -> None:
    collector = await start_collector(server, EXCHANGE, errors)
    try:
        # ccxt sends one frame per 100 ms and HTX has no multi-topic subscribe: ~0.1 s per symbol
        await subscribe_everything(collector, at_least=100, seconds_per_symbol=0.3)
        assert len(collector.exchange.clients) == 1 and not errors
    finally:
        await collector.stop()


async def test_discovery_and_symbol_forms(server: EmulatorServer, errors: list) -> None:
    collector = await start_collector(server, EXCHANGE, errors)
    try:
        futures = collector.get_available_futures("BTC")
        assert futures[0] == "BTC/USDT:USDT" and futures[-1] == QUARTERLY and len(futures) == 4
        assert collector.get_available_options() == []
        assert await collector.subscribe_futures(["BTC-USDT-261225"]) == [QUARTERLY]
        await wait_until(lambda: collector.get_latest_orderbook("BTC-USDT-261225"), what="book by native id")
        assert collector.get_latest_orderbook(QUARTERLY).exchange_seq is not None
        assert native_id(collector, "ETH/USDT:USDT") == "ETH-USDT"
    finally:
        await collector.stop()


def test_emulate_cli_serves_htx() -> None:
    run_emulate_cli(EXCHANGE)
