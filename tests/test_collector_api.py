"""Collector API against the deribit emulator: market discovery and filters, symbol resolution and its
errors, start/stop errors, the DataFrame export, market info, MultiExchangeCollector."""

from __future__ import annotations

import time

import ccxt
import pytest

from common import ConfigError, StreamConfig
from emulator import EmulatorServer
from producer import (
    CCXTProCollector,
    CollectorNotStartedError,
    ExchangeUnavailableError,
    MarketTypeError,
    MultiExchangeCollector,
    UnknownSymbolError,
)
from tests.test_collector_streaming import make_config, wait_until


@pytest.fixture
async def started(emulator):
    collector = CCXTProCollector(make_config(emulator))
    await collector.start()
    yield collector
    await collector.stop()


def test_unknown_exchange_is_a_clear_config_error():
    with pytest.raises(ConfigError, match=r"unknown exchange 'deribt'.*deribit"):
        StreamConfig(exchange_id="deribt")


async def test_methods_before_start_say_so():
    collector = CCXTProCollector(StreamConfig(exchange_id="deribit"))
    with pytest.raises(CollectorNotStartedError, match="start"):
        collector.get_available_futures()
    with pytest.raises(CollectorNotStartedError):
        await collector.subscribe_futures(["BTC/USD:BTC"])


async def test_unreachable_endpoint_fails_fast_with_a_clear_error():
    config = StreamConfig(exchange_id="deribit", exchange_config={
        "urls": {"api": {"rest": "http://127.0.0.1:9", "ws": "ws://127.0.0.1:9/ws/api/v2"}}})
    started_at = time.monotonic()
    with pytest.raises(ExchangeUnavailableError, match="deribit: cannot load markets") as raised:
        await CCXTProCollector(config).start(timeout=10)
    assert time.monotonic() - started_at < 10
    assert isinstance(raised.value, ccxt.NetworkError) and isinstance(raised.value, OSError)


async def test_futures_include_perpetuals_and_dated_futures(started, emulator):
    futures = started.get_available_futures()
    assert futures[0] == "BTC/USD:BTC"  # perpetual first
    kinds = {started.get_market(s).type for s in futures}
    assert kinds == {"swap", "future"}
    btc = started.get_available_futures(base_currency="btc")
    assert btc and all(s.startswith("BTC/") for s in btc)
    assert set(btc) < set(futures)
    native = {started.get_market(s).id for s in futures}
    server_futures = {name for name in emulator.instruments("deribit") if not name.endswith(("-C", "-P"))}
    assert native == server_futures


async def test_option_filters(started):
    calls = started.get_available_options(base_currency="BTC", option_type="C")
    assert calls and all(s.endswith("-C") and s.startswith("BTC/") for s in calls)
    assert started.get_available_options(base_currency="BTC", option_type="call") == calls
    puts = started.get_available_options(base_currency="BTC", option_type="put")
    assert puts and all(s.endswith("-P") for s in puts)
    dec26 = started.get_available_options(expiry="DEC26")
    assert dec26 and all("-2612" in s for s in dec26)
    day = started.get_available_options(expiry="25DEC26")
    assert day == started.get_available_options(expiry="2026-12-25") == started.get_available_options(expiry="261225")
    assert "BTC/USD:BTC-261225-60000-C" in day
    ranged = started.get_available_options(base_currency="BTC", min_strike=59000, max_strike=61000)
    assert ranged and all(59000 <= started.get_market(s).strike <= 61000 for s in ranged)
    expiries = [started.get_market(s).expiry for s in calls]
    assert expiries == sorted(expiries)
    with pytest.raises(ValueError, match="expiry"):
        started.get_available_options(expiry="someday")
    with pytest.raises(ValueError, match="option type"):
        started.get_available_options(option_type="X")


async def test_unknown_symbol_names_close_matches_and_subscribes_nothing(started):
    with pytest.raises(UnknownSymbolError, match="BTC-PERPETUAL") as raised:
        await started.subscribe_futures(["BTC/USD:BTC", "BTC-PERPETUL"])
    assert isinstance(raised.value, ccxt.BadSymbol) and isinstance(raised.value, ValueError)
    assert started.subscribed_symbols() == []
    with pytest.raises(UnknownSymbolError):
        started.get_latest_orderbook("NOPE")


async def test_wrong_market_type_is_refused(started):
    with pytest.raises(MarketTypeError, match="subscribe_options"):
        await started.subscribe_futures(["BTC-25DEC26-60000-C"])
    with pytest.raises(MarketTypeError, match="subscribe_futures"):
        await started.subscribe_options(["BTC-PERPETUAL"])
    assert started.subscribed_symbols() == []


async def test_symbols_resolve_from_native_ids(started):
    symbols = await started.subscribe_options(["BTC-25DEC26-60000-C"])
    assert symbols == ["BTC/USD:BTC-261225-60000-C"]
    assert await started.subscribe_options(["BTC/USD:BTC-261225-60000-C"]) == symbols  # idempotent
    assert started.subscribed_symbols() == symbols
    info = await started.get_market_info("BTC-25DEC26-60000-C")
    assert info["symbol"] == symbols[0] and info["strike"] == 60000 and info["optionType"] == "call"


async def test_dataframe_has_one_row_per_symbol_with_option_fields(started):
    option = "BTC/USD:BTC-261225-60000-C"
    await started.subscribe_futures(["BTC/USD:BTC"])
    await started.subscribe_options([option])
    await wait_until(lambda: len(started.orderbooks) == 2, what="two books")
    df = started.get_orderbooks_as_dataframe().set_index("symbol")
    for column in ("exchange", "type", "timestamp", "best_bid", "best_ask", "best_bid_size", "best_ask_size",
                   "mid_price", "spread", "bid_levels", "ask_levels", "strike", "expiry", "option_type", "seq"):
        assert column in df.columns or column == "symbol"
    assert df.loc[option, "strike"] == 60000 and df.loc[option, "option_type"] == "call"
    assert str(df.loc[option, "expiry"].date()) == "2026-12-25"
    assert df.loc["BTC/USD:BTC", "type"] == "swap"
    row = df.loc["BTC/USD:BTC"]
    assert row["mid_price"] == pytest.approx((row["best_bid"] + row["best_ask"]) / 2)
    assert row["bid_levels"] == 10


async def test_dataframe_of_nothing_has_the_columns(started):
    df = started.get_orderbooks_as_dataframe()
    assert df.empty and "mid_price" in df.columns


async def test_multi_exchange_compare(monkeypatch):
    with EmulatorServer(exchanges=["deribit", "okx"], seed=7, port=0, update_interval=0.05) as server:
        multi = MultiExchangeCollector()
        for exchange_id in ("deribit", "okx"):
            await multi.add_exchange(StreamConfig(exchange_id=exchange_id,
                                                  exchange_config=server.ccxt_config(exchange_id)))
        try:
            with pytest.raises(ConfigError, match="already added"):
                await multi.add_exchange(StreamConfig(exchange_id="okx"))
            assert set(multi.get_all_collectors()) == {"deribit", "okx"}
            for exchange_id in ("deribit", "okx"):
                await multi.get_collector(exchange_id).subscribe_futures(["BTC/USD:BTC"])
            await multi.get_collector("deribit").subscribe_futures(["ETH/USD:ETH"])
            comparison = await wait_until(
                lambda: (c := multi.compare_orderbooks("BTC/USD:BTC")) and len(c) == 2 and c, what="both books"
            )
            assert {ob.exchange for ob in comparison.values()} == {"deribit", "okx"}
            assert set(await wait_until(lambda: multi.compare_orderbooks("ETH/USD:ETH"), what="eth")) == {"deribit"}
            assert multi.compare_orderbooks("NOPE/USD:NOPE") == {}
            with pytest.raises(KeyError, match="deribit, okx"):
                multi.get_collector("bybit")
        finally:
            await multi.stop_all()
