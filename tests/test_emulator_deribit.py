"""The Deribit emulator through unmodified ccxt.pro (and a raw WebSocket client where ccxt hides the wire)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable

import aiohttp
import ccxt.pro
import pytest

from emulator import EmulatorServer

WAIT = 10.0  # seconds any single wait may take before the test fails


@pytest.fixture
async def deribit(emulator: EmulatorServer) -> AsyncIterator[Any]:
    """An unmodified ccxt.pro deribit client pointed at the emulator, markets loaded."""
    exchange = ccxt.pro.deribit(emulator.ccxt_config("deribit"))
    await asyncio.wait_for(exchange.load_markets(), WAIT)
    yield exchange
    await exchange.close()


async def eventually(condition: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def levels(side: list) -> list[list[float]]:
    """ccxt book side ``[[price, amount, count], ...]`` -> ``[[price, amount], ...]``."""
    return [[price, amount] for price, amount, *_ in side]


async def test_load_markets_lists_perpetuals_futures_and_options(deribit: Any) -> None:
    markets = deribit.markets
    perpetual = markets["BTC/USD:BTC"]
    assert (perpetual["id"], perpetual["type"], perpetual["inverse"]) == ("BTC-PERPETUAL", "swap", True)
    assert markets["ETH/USD:ETH"]["swap"]
    future = markets["BTC/USD:BTC-261225"]
    assert (future["id"], future["type"], future["active"]) == ("BTC-25DEC26", "future", True)
    assert future["precision"]["price"] == 2.5 and future["contractSize"] == 10
    option = markets["BTC/USD:BTC-261225-60000-C"]
    assert (option["id"], option["type"], option["strike"], option["optionType"]) == (
        "BTC-25DEC26-60000-C", "option", 60000, "call")
    for currency in ("BTC", "ETH"):
        futures = [m for m in markets.values() if m["base"] == currency and m["future"]]
        options = [m for m in markets.values() if m["base"] == currency and m["option"]]
        assert len(futures) >= 2
        assert len({m["expiry"] for m in options}) >= 2 and len(options) >= 20
        assert {m["optionType"] for m in options} == {"call", "put"}
        assert all(m["expiry"] % 86400000 == 8 * 3600000 for m in futures + options)  # 08:00 UTC


async def test_watch_order_book_streams_and_matches_server_when_paused(emulator: EmulatorServer,
                                                                       deribit: Any) -> None:
    first = await asyncio.wait_for(deribit.watch_order_book("BTC/USD:BTC"), WAIT)
    first_nonce = first["nonce"]
    assert 30 <= len(first["bids"]) <= 50 and 30 <= len(first["asks"]) <= 50
    assert first["bids"][0][0] < first["asks"][0][0]
    while (await asyncio.wait_for(deribit.watch_order_book("BTC/USD:BTC"), WAIT))["nonce"] == first_nonce:
        pass
    emulator.pause()
    book = deribit.orderbooks["BTC/USD:BTC"]
    server_book = emulator.book("deribit", "BTC-PERPETUAL")
    await eventually(lambda: levels(book["bids"]) == server_book["bids"] and levels(book["asks"]) ==
                     server_book["asks"], what="ccxt book == server book")
    again = emulator.book("deribit", "BTC-PERPETUAL")  # paused: no further changes
    assert (again["change_id"], again["bids"], again["asks"]) == (
        server_book["change_id"], server_book["bids"], server_book["asks"])
