"""OKX end to end: the emulator through unmodified ccxt.pro, then the collector (its OKX adapter) through the same
ccxt: exact books, checksums, recovery from disconnects, sequence gaps, bad checksums and refused subscribes."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import aiohttp
import orjson
import pytest

from emulator import EmulatorServer
from emulator.okx import book_checksum
from producer import CCXTProCollector, SequenceGapError, StallError
from producer.adapters.okx import ChecksumMismatchError, okx_checksum
from tests.exchange_checks import (  # noqa: F401 - server, errors, collector are fixtures
    DEADLINE, assert_books_equal_server, assert_raw_books_equal_server, collector, errors, levels, native_id, raw_client_fixture, recover_after_disconnect, refused_subscribe_recovers, resync_after, run_emulate_cli, server, start_collector, subscribe_everything, wait_until,
)

EXCHANGE = "okx"
OPTION = "BTC/USD:BTC-261225-60000-C"  # the same unified symbol as on Deribit


okx = raw_client_fixture("okx")


async def subscribe_books(collector: CCXTProCollector) -> int:
    """An inverse and a linear perpetual, a dated future and two options."""
    await collector.subscribe_futures(["BTC-USD-SWAP", "BTC/USDT:USDT", "BTC/USD:BTC-261225"])
    await collector.subscribe_options([OPTION, "BTC-USD-261225-60000-P"])
    return 5


# -- the emulator through plain ccxt ----------------------------------------------------------------------------


async def test_ccxt_loads_spot_swaps_futures_and_options(okx: Any) -> None:
    markets = okx.markets
    inverse, linear = markets["BTC/USD:BTC"], markets["BTC/USDT:USDT"]
    assert (inverse["id"], inverse["type"], inverse["inverse"], inverse["contractSize"]) == (
        "BTC-USD-SWAP", "swap", True, 100)
    assert (linear["id"], linear["linear"], linear["settle"]) == ("BTC-USDT-SWAP", True, "USDT")
    future = markets["BTC/USD:BTC-261225"]
    assert (future["id"], future["type"], future["active"]) == ("BTC-USD-261225", "future", True)
    option = markets[OPTION]
    assert (option["id"], option["strike"], option["optionType"], option["precision"]["price"]) == (
        "BTC-USD-261225-60000-C", 60000, "call", 0.0005)
    assert markets["BTC/USDT"]["spot"]
    for currency in ("BTC", "ETH"):
        options = [m for m in markets.values() if m["base"] == currency and m["option"]]
        assert len({m["expiry"] for m in options}) >= 2 and {m["optionType"] for m in options} == {"call", "put"}
        assert all(m["active"] and m["expiry"] % 86_400_000 == 8 * 3_600_000 for m in options)


async def test_rest_book_equals_the_server(okx: Any, server: EmulatorServer) -> None:
    server.pause(EXCHANGE)
    book = await asyncio.wait_for(okx.fetch_order_book("BTC/USD:BTC", 20), DEADLINE)
    wanted = server.book(EXCHANGE, "BTC-USD-SWAP", depth=20)
    assert (levels(book["bids"]), levels(book["asks"])) == (wanted["bids"], wanted["asks"])


async def test_ccxt_books_equal_the_server_on_every_channel(okx: Any, server: EmulatorServer) -> None:
    # None -> books (snapshot + updates), 5 -> books5, 1 -> bbo-tbt
    await assert_raw_books_equal_server(okx, server, {"BTC/USD:BTC": None, "ETH/USDT:USDT": None, OPTION: None,
                                                      "BTC/USD:BTC-261225": 5, "ETH/USD:ETH": 1})


def test_checksum_follows_okx_documentation() -> None:
    # OKX's documented example: bids 3366.1x7, 3366x6; asks 3366.8x9, 3368x8
    text = b"3366.1:7:3366.8:9:3366:6:3368:8"
    expected = zlib.crc32(text) - (1 << 32) if zlib.crc32(text) >= 1 << 31 else zlib.crc32(text)
    assert book_checksum([[3366.1, 7], [3366, 6]], [[3366.8, 9], [3368, 8]]) == expected
    assert okx_checksum(["3366.1:7", "3366:6"], ["3366.8:9", "3368:8"]) == expected
    # a side that runs out stops contributing; only the best 25 levels count
    assert okx_checksum(["1:1"], ["2:1", "3:1"]) == book_checksum([[1, 1]], [[2, 1], [3, 1]])
    many = [f"{p}:1" for p in range(100, 60, -1)]
    assert okx_checksum(many, []) == okx_checksum(many[:25], [])


async def test_wire_protocol_ping_acks_and_errors(server: EmulatorServer) -> None:
    url = server.ccxt_config(EXCHANGE)["urls"]["api"]["ws"] + "/public"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        async def reply() -> Any:
            text = (await asyncio.wait_for(ws.receive(), DEADLINE)).data
            return text if text == "pong" else orjson.loads(text)

        await ws.send_str("ping")
        assert await reply() == "pong"
        arg = {"channel": "books", "instId": "BTC-USD-SWAP"}
        await ws.send_str(orjson.dumps({"op": "subscribe", "args": [arg]}).decode())
        assert (await reply())["event"] == "subscribe"
        snapshot = await reply()
        data = snapshot["data"][0]
        assert (snapshot["action"], data["prevSeqId"]) == ("snapshot", -1)
        bids = [[float(p), float(s)] for p, s, *_ in data["bids"]]
        asks = [[float(p), float(s)] for p, s, *_ in data["asks"]]
        assert data["checksum"] == book_checksum(bids, asks)
        update = await reply()
        assert (update["action"], update["data"][0]["prevSeqId"]) == ("update", data["seqId"])
        await ws.send_str(orjson.dumps({"op": "subscribe", "args": [{"channel": "books", "instId": "NOPE"}]}).decode())
        while (error := await reply()).get("event") != "error":
            pass
        assert error["code"] == "60018"
        await ws.send_str(orjson.dumps({"op": "subscribe", "args": [{"channel": "books50-l2-tbt",
                                                                      "instId": "BTC-USD-SWAP"}]}).decode())
        while (error := await reply()).get("event") != "error":
            pass
        assert error["code"] == "60011"


# -- the collector ------------------------------------------------------------------------------------------------


async def test_collector_books_equal_the_exchange_level_for_level(collector: CCXTProCollector,
                                                                   server: EmulatorServer) -> None:
    await assert_books_equal_server(collector, server)
    for symbol in collector.subscribed_symbols():
        history = collector.get_snapshot_history(symbol)
        assert history[0].resync is True and not any(s.resync for s in history[1:])
    server.pause(EXCHANGE)  # the sequence number is OKX's seqId: it reaches the server's last change id
    for symbol in collector.subscribed_symbols():
        change_id = server.book(EXCHANGE, native_id(collector, symbol))["change_id"]
        await wait_until(lambda: collector.get_latest_orderbook(symbol).exchange_seq == change_id, what="seqId")
    assert {ob.market_type for ob in collector.get_all_orderbooks().values()} == {"swap", "future", "option"}
    assert collector.exchange.checksum_failures == 0


@pytest.mark.parametrize("fault", ["close_connections", "abort_connections"])
async def test_collector_recovers_after_disconnect(collector: CCXTProCollector, server: EmulatorServer,
                                                   fault: str) -> None:
    await recover_after_disconnect(collector, server, fault, "BTC/USD:BTC")


async def test_sequence_gap_resyncs_the_symbol(collector: CCXTProCollector, server: EmulatorServer,
                                               errors: list) -> None:
    server.skip_sequence(EXCHANGE, "BTC-USD-261225")
    await resync_after(collector, server, errors, "BTC/USD:BTC-261225", SequenceGapError)


async def test_bad_checksum_resyncs_the_symbol(collector: CCXTProCollector, server: EmulatorServer,
                                               errors: list) -> None:
    server.bad_checksum(EXCHANGE, "BTC-USD-SWAP")
    await resync_after(collector, server, errors, "BTC/USD:BTC", ChecksumMismatchError)
    assert collector.exchange.checksum_failures == 1


async def test_refused_subscribe_fails_only_its_symbols_and_recovers(collector: CCXTProCollector,
                                                                     server: EmulatorServer, errors: list) -> None:
    await refused_subscribe_recovers(collector, server, errors, "ETH-USD-SWAP", "60012")


async def test_stall_is_detected_and_recovered(server: EmulatorServer, errors: list) -> None:
    collector = await start_collector(server, EXCHANGE, errors, stall_timeout=1.0)
    try:
        await collector.subscribe_futures(["BTC-USD-SWAP", "ETH-USD-SWAP"])
        await wait_until(lambda: len(collector.orderbooks) == 2, what="two books")
        seqs = {s: collector.get_latest_orderbook(s).seq for s in collector.subscribed_symbols()}
        server.stall(EXCHANGE, True)
        try:
            await wait_until(lambda: any(isinstance(e, StallError) for _, e in errors), what="stall detected")
        finally:
            server.stall(EXCHANGE, False)
        for symbol, seq in seqs.items():
            await wait_until(lambda: any(s.resync and s.seq > seq for s in collector.get_snapshot_history(symbol)),
                             what=f"{symbol} resynced")
        await assert_books_equal_server(collector, server)
    finally:
        await collector.stop()


async def test_malformed_frame_is_dropped_and_streaming_goes_on(collector: CCXTProCollector,
                                                                server: EmulatorServer) -> None:
    before = collector.get_latest_orderbook("BTC/USD:BTC").seq
    server.send_malformed(EXCHANGE)
    await wait_until(lambda: collector.get_latest_orderbook("BTC/USD:BTC").seq > before + 5, what="updates")
    assert collector.get_status()["BTC/USD:BTC"]["reconnects"] == 0


async def test_more_than_a_hundred_symbols_subscribe_in_bounded_time(server: EmulatorServer, errors: list) -> None:
    collector = await start_collector(server, EXCHANGE, errors)
    try:
        seconds = await subscribe_everything(collector, at_least=100)
        assert seconds < DEADLINE
        client = next(iter(collector.exchange.clients.values()))
        assert server.stats(EXCHANGE)["subscribe_requests"] <= 2, "batched into few subscribe frames"
        assert len(client.subscriptions) >= 100
        assert not errors
    finally:
        await collector.stop()


async def test_discovery_filters_and_symbol_forms(server: EmulatorServer, errors: list) -> None:
    collector = await start_collector(server, EXCHANGE, errors)
    try:
        futures = collector.get_available_futures("BTC")
        assert futures[:2] == ["BTC/USD:BTC", "BTC/USDT:USDT"], "perpetuals first"
        assert "BTC/USD:BTC-261225" in futures and all(s.startswith("BTC/") for s in futures)
        calls = collector.get_available_options("BTC", option_type="C", expiry="25DEC26")
        assert OPTION in calls and all(s.endswith("-C") and "-261225-" in s for s in calls)
        puts = collector.get_available_options(base_currency="ETH", option_type="put", expiry="DEC26")
        assert puts and all(s.startswith("ETH/") and s.endswith("-P") for s in puts)
        assert await collector.subscribe_options(["BTC-USD-261225-60000-C"]) == [OPTION]
        await wait_until(lambda: collector.get_latest_orderbook("BTC-USD-261225-60000-C"), what="book by native id")
        assert collector.get_latest_orderbook(OPTION).symbol == OPTION
        assert (await collector.get_market_info("BTC-USD-SWAP"))["symbol"] == "BTC/USD:BTC"
    finally:
        await collector.stop()


def test_emulate_cli_serves_okx() -> None:
    run_emulate_cli(EXCHANGE)

