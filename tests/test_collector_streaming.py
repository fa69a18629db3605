"""The collector streaming real ccxt.pro against the deribit emulator: exact books, recovery from
disconnects, sequence gaps, stalls and failing subscriptions, callback isolation, unsubscribe."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from common import StreamConfig
from producer import CCXTProCollector, StallError, SymbolFailedError

from tests.waiting import DEADLINE, wait_until  # noqa: E402

LIMIT = 10


def make_config(emulator, **overrides: Any) -> StreamConfig:
    settings: dict[str, Any] = dict(
        exchange_id="deribit",
        exchange_config=emulator.ccxt_config("deribit"),
        orderbook_limit=LIMIT,
        reconnect_delay=0.05,
        max_reconnect_attempts=20,
    )
    settings.update(overrides)
    return StreamConfig(**settings)


@pytest.fixture
async def collector(emulator):
    """A started collector on the emulator streaming a perpetual, a future and four options."""
    collector = CCXTProCollector(make_config(emulator))
    await collector.start()
    futures = collector.get_available_futures("BTC")
    await collector.subscribe_futures(["BTC-PERPETUAL", futures[1]])
    await collector.subscribe_options(collector.get_available_options("BTC", expiry="25DEC26")[:4])
    await wait_until(lambda: len(collector.orderbooks) == 6, what="six books")
    yield collector
    await collector.stop()


def native_id(collector: CCXTProCollector, symbol: str) -> str:
    return collector.exchange.market(symbol)["id"]


async def assert_books_equal_server(collector: CCXTProCollector, emulator) -> None:
    """Pause the emulator, wait until every collector book caught up, compare level by level, resume."""
    emulator.pause()
    try:
        for symbol in collector.subscribed_symbols():
            server = emulator.book("deribit", native_id(collector, symbol), depth=LIMIT)
            await wait_until(
                lambda: (ob := collector.get_latest_orderbook(symbol)) is not None
                and ob.exchange_seq == server["change_id"],
                what=f"{symbol} to reach change_id {server['change_id']}",
            )
            book = collector.get_latest_orderbook(symbol)
            assert book.bids == server["bids"], symbol
            assert book.asks == server["asks"], symbol
            assert len(book.bids) == LIMIT and len(book.asks) == LIMIT
    finally:
        emulator.resume()


async def test_books_equal_the_exchange_level_for_level(collector, emulator):
    await assert_books_equal_server(collector, emulator)
    for symbol in collector.subscribed_symbols():
        history = collector.get_snapshot_history(symbol)
        assert history[0].resync is True and history[0].seq == 1
        assert [s.seq for s in history] == list(range(1, len(history) + 1))
        assert not any(s.resync for s in history[1:])
    types = {ob.market_type for ob in collector.get_all_orderbooks().values()}
    assert types == {"swap", "future", "option"}
    assert set(collector.get_futures_orderbooks()) == {"BTC/USD:BTC", collector.get_available_futures("BTC")[1]}
    assert len(collector.get_options_orderbooks()) == 4


async def test_native_ids_and_unified_symbols_find_the_same_book(collector):
    assert collector.get_latest_orderbook("BTC-PERPETUAL") is collector.get_latest_orderbook("BTC/USD:BTC")
    option = sorted(collector.subscribed_options)[0]
    assert collector.get_latest_orderbook(native_id(collector, option)).symbol == option


@pytest.mark.parametrize("fault", ["close_connections", "abort_connections"])
async def test_books_recover_after_disconnect_without_stale_levels(collector, emulator, fault):
    seqs = {s: collector.get_latest_orderbook(s).seq for s in collector.subscribed_symbols()}
    # move prices far so any level kept from before the disconnect would show up as a stale level
    emulator.pause()
    getattr(emulator, fault)("deribit")
    emulator.shift_price("deribit", "BTC-PERPETUAL", 500.0)
    emulator.resume()
    for symbol in seqs:
        await wait_until(lambda: collector.get_status()[symbol]["reconnects"] >= 1, what=f"{symbol} reconnect")
        await wait_until(
            lambda: any(s.resync and s.seq > seqs[symbol] for s in collector.get_snapshot_history(symbol)),
            what=f"{symbol} resync snapshot",
        )
    await assert_books_equal_server(collector, emulator)
    history = collector.get_snapshot_history("BTC/USD:BTC")
    assert [s.seq for s in history] == list(range(1, len(history) + 1)), "seq continues across reconnects"


async def test_sequence_gap_is_detected_and_the_symbol_resyncs(collector, emulator):
    other_updates = collector.get_status()["BTC/USD:BTC"]["updates"]
    option = sorted(collector.subscribed_options)[0]
    emulator.skip_sequence("deribit", native_id(collector, option))
    await wait_until(lambda: collector.get_status()[option]["resyncs"] >= 1, what="gap detected")
    await wait_until(
        lambda: any(s.resync and s.seq > 1 for s in collector.get_snapshot_history(option)), what="resync snapshot"
    )
    await assert_books_equal_server(collector, emulator)
    assert collector.get_status()["BTC/USD:BTC"]["resyncs"] == 0
    assert collector.get_status()["BTC/USD:BTC"]["updates"] > other_updates


async def test_stall_is_detected_by_the_watchdog_and_recovers(emulator):
    errors: list[tuple[str, BaseException]] = []
    config = make_config(emulator, stall_timeout=1.0, on_error=lambda symbol, error: errors.append((symbol, error)))
    async with CCXTProCollector(config) as collector:
        await collector.subscribe_futures(["BTC-PERPETUAL", "ETH-PERPETUAL"])
        await wait_until(lambda: len(collector.orderbooks) == 2, what="two books")
        emulator.stall("deribit", True)
        try:
            await wait_until(lambda: any(isinstance(e, StallError) for _, e in errors), what="stall detected")
        finally:
            emulator.stall("deribit", False)
        seqs = {s: collector.get_latest_orderbook(s).seq for s in ("BTC/USD:BTC", "ETH/USD:ETH")}
        for symbol, seq in seqs.items():
            await wait_until(
                lambda: collector.get_latest_orderbook(symbol).seq > seq + 5, what=f"{symbol} streams again"
            )
            assert collector.get_status()[symbol]["state"] == "streaming"
        await assert_books_equal_server(collector, emulator)


async def test_malformed_frame_does_not_stop_the_socket(collector, emulator, caplog):
    before = collector.get_latest_orderbook("BTC/USD:BTC").seq
    emulator.send_malformed("deribit")
    await wait_until(lambda: "dropped a frame" in caplog.text, what="the frame dropped")
    await wait_until(lambda: collector.get_latest_orderbook("BTC/USD:BTC").seq > before + 5, what="updates")
    assert collector.get_status()["BTC/USD:BTC"]["reconnects"] == 0


async def test_failing_subscriptions_mark_the_symbol_failed(emulator):
    errors: list[tuple[str, BaseException]] = []

    async def on_error(symbol: str, error: BaseException) -> None:
        errors.append((symbol, error))

    config = make_config(emulator, max_reconnect_attempts=3, reconnect_delay=0.01, on_error=on_error)
    async with CCXTProCollector(config) as collector:
        emulator.fail_subscribe("deribit", count=1000)
        await collector.subscribe_futures(["BTC-PERPETUAL"])
        await wait_until(lambda: collector.get_status()["BTC/USD:BTC"]["state"] == "failed", what="failed")
        await wait_until(lambda: any(isinstance(e, SymbolFailedError) for _, e in errors), what="reported")
        status = collector.get_status()["BTC/USD:BTC"]
        assert status["consecutive_failures"] == 3
        assert "too_many_requests" in str(errors[0][1])
        assert collector.get_latest_orderbook("BTC/USD:BTC") is None


async def test_subscribe_recovers_after_transient_subscribe_failures(emulator):
    async with CCXTProCollector(make_config(emulator)) as collector:
        emulator.fail_subscribe("deribit", count=2)
        await collector.subscribe_futures(["BTC-PERPETUAL"])
        await wait_until(lambda: collector.get_latest_orderbook("BTC/USD:BTC") is not None, what="book")
        assert collector.get_status()["BTC/USD:BTC"]["reconnects"] == 2
        first = collector.get_snapshot_history("BTC/USD:BTC")[0]
        assert first.seq == 1 and first.resync is True


async def test_raising_and_slow_callbacks_do_not_stop_other_symbols(emulator):
    errors: list[tuple[str, BaseException]] = []
    seen: dict[str, int] = {}

    async def on_update(snapshot) -> None:
        seen[snapshot.symbol] = seen.get(snapshot.symbol, 0) + 1
        if snapshot.symbol == "BTC/USD:BTC":
            raise RuntimeError("boom")
        if snapshot.symbol == "ETH/USD:ETH" and seen[snapshot.symbol] == 1:
            await asyncio.sleep(30)  # far beyond callback_timeout

    config = make_config(emulator, on_orderbook_update=on_update, callback_timeout=0.2,
                         on_error=lambda symbol, error: errors.append((symbol, error)))
    async with CCXTProCollector(config) as collector:
        future = collector.get_available_futures("BTC")[1]
        await collector.subscribe_futures(["BTC-PERPETUAL", "ETH-PERPETUAL", future])
        await wait_until(lambda: seen.get(future, 0) >= 20, what="callbacks of the healthy symbol")
        await wait_until(lambda: {s for s, _ in errors} >= {"BTC/USD:BTC", "ETH/USD:ETH"}, what="both reported")
        for symbol in ("BTC/USD:BTC", "ETH/USD:ETH"):
            assert collector.get_status()[symbol]["updates"] >= 20, "streaming continued"
            assert collector.get_status()[symbol]["errors"] == 0, "a callback failure is not a stream failure"
        assert any("exceeded" in str(e) for s, e in errors if s == "ETH/USD:ETH")
        assert any("boom" in str(e) for s, e in errors if s == "BTC/USD:BTC")


async def test_blocking_sync_callback_does_not_block_streaming(emulator):
    calls: list[int] = []
    gate = threading.Event()

    def on_update(snapshot) -> None:  # a sync callback blocked in I/O until the test opens the gate
        calls.append(snapshot.seq)
        gate.wait(DEADLINE)

    async with CCXTProCollector(make_config(emulator, on_orderbook_update=on_update)) as collector:
        await collector.subscribe_futures(["BTC-PERPETUAL"])
        await wait_until(lambda: calls, what="first callback")
        await wait_until(lambda: collector.get_latest_orderbook("BTC/USD:BTC").seq >= 20, what="streaming")
        assert calls == [1], "the callback is still blocked"
        gate.set()
        await wait_until(lambda: len(calls) >= 20, what="queued callbacks run in order")
        assert calls[:20] == list(range(1, 21))


async def test_listener_sees_every_snapshot_in_order(emulator):
    received = []
    async with CCXTProCollector(make_config(emulator)) as collector:
        collector.add_listener(received.append)
        await collector.subscribe_futures(["BTC-PERPETUAL"])
        await wait_until(lambda: len(received) >= 10, what="listener calls")
        assert [s.seq for s in received[:10]] == list(range(1, 11))
        assert received[0].resync is True


async def test_unsubscribe_stops_updates(collector, emulator):
    await collector.unsubscribe("BTC-PERPETUAL")
    assert "BTC/USD:BTC" not in collector.get_status()
    assert collector.get_latest_orderbook("BTC/USD:BTC") is None
    history_len = len(collector.get_snapshot_history("BTC/USD:BTC"))
    other = collector.get_available_futures("BTC")[1]
    seq = collector.get_latest_orderbook(other).seq
    await wait_until(lambda: collector.get_latest_orderbook(other).seq > seq + 10, what="others keep streaming")
    assert len(collector.get_snapshot_history("BTC/USD:BTC")) == history_len
    client = next(iter(collector.exchange.clients.values()))
    assert "book.BTC-PERPETUAL.100ms" not in client.subscriptions


async def test_history_is_bounded_and_clearable(emulator):
    async with CCXTProCollector(make_config(emulator, max_snapshots_per_symbol=5)) as collector:
        await collector.subscribe_futures(["BTC-PERPETUAL"])
        await wait_until(lambda: collector.get_status()["BTC/USD:BTC"]["updates"] >= 12, what="updates")
        history = collector.get_snapshot_history("BTC-PERPETUAL")
        assert len(history) == 5
        assert [s.seq for s in history] == list(range(history[0].seq, history[0].seq + 5))
        collector.snapshot_history.clear()
        seq = collector.get_latest_orderbook("BTC/USD:BTC").seq
        await wait_until(lambda: collector.get_snapshot_history("BTC/USD:BTC"), what="history refills")
        assert collector.get_snapshot_history("BTC/USD:BTC")[0].seq > seq


async def test_history_disabled(emulator):
    async with CCXTProCollector(make_config(emulator, store_snapshots=False)) as collector:
        await collector.subscribe_futures(["BTC-PERPETUAL"])
        await wait_until(lambda: collector.get_status()["BTC/USD:BTC"]["updates"] >= 3, what="updates")
        assert collector.get_snapshot_history("BTC/USD:BTC") == []


async def test_many_symbols_subscribe_and_resubscribe_in_few_frames(emulator):
    async with CCXTProCollector(make_config(emulator)) as collector:
        symbols = await collector.subscribe_all_futures() + await collector.subscribe_all_options()
        assert len(symbols) == len(emulator.instruments("deribit"))
        await wait_until(lambda: len(collector.orderbooks) == len(symbols), what="every book")
        assert emulator.stats("deribit")["subscribe_requests"] == 2  # one frame per subscribe_* call
        before = {s: collector.get_status()[s]["reconnects"] for s in symbols}
        emulator.close_connections("deribit")
        # wait for the recovery itself (frames already in flight would also advance every seq)
        await wait_until(
            lambda: all(collector.get_status()[s]["reconnects"] > before[s] and collector.get_status()[s]["state"]
                        == "streaming" for s in symbols), what="all resubscribed"
        )
        resubscribes = emulator.stats("deribit")["subscribe_requests"] - 2
        assert 1 <= resubscribes <= 5, f"{len(symbols)} symbols resubscribed in {resubscribes} frames"
        assert emulator.stats("deribit")["subscriptions"] == len(symbols)
