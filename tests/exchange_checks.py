"""Scenario checks shared by the per-exchange tests (OKX, Bybit): the real collector and unmodified ccxt.pro
against that exchange's emulator."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from typing import Any, AsyncIterator, Iterator

import ccxt.pro
import pytest

from common import StreamConfig
from emulator import EmulatorServer
from producer import CCXTProCollector

from tests.waiting import DEADLINE, wait_until  # noqa: E402,F401 - re-exported for the exchange tests

LIMIT = 10
UPDATE_INTERVAL = 0.05


# -- fixtures shared by the per-exchange test modules ----------------------------------------------------------
# A module sets EXCHANGE (and EMULATOR_OPTIONS if its emulator needs some), defines
# ``async def subscribe_books(collector) -> int`` (subscribes, returns how many books to expect) and imports
# ``server, errors, collector`` from here; ``raw_client_fixture("okx")`` names its plain-ccxt client fixture.


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    """A started emulator of the module's EXCHANGE whose books step every 50 ms."""
    exchange = request.module.EXCHANGE
    options = getattr(request.module, "EMULATOR_OPTIONS", None)
    with EmulatorServer(exchanges=[exchange], seed=42, port=0, update_interval=UPDATE_INTERVAL,
                        exchange_options={exchange: options} if options else None) as emulator:
        yield emulator


@pytest.fixture
def errors() -> list:
    """Every ``(symbol, error)`` the collector reports."""
    return []


@pytest.fixture
async def collector(server: EmulatorServer, errors: list, request: pytest.FixtureRequest) -> AsyncIterator[CCXTProCollector]:
    """A started collector streaming the module's ``subscribe_books`` selection, all first books in."""
    collector = await start_collector(server, request.module.EXCHANGE, errors)
    expected = await request.module.subscribe_books(collector)
    await wait_until(lambda: len(collector.orderbooks) == expected, what=f"{expected} books")
    yield collector
    await collector.stop()


def raw_client_fixture(name: str) -> Any:
    """A fixture named ``name``: an unmodified ccxt.pro client of the module's EXCHANGE, markets loaded."""

    async def raw(server: EmulatorServer, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
        client = await raw_exchange(server, request.module.EXCHANGE)
        yield client
        await client.close()

    return pytest.fixture(name=name)(raw)


def make_config(server: EmulatorServer, exchange: str, **overrides: Any) -> StreamConfig:
    settings: dict[str, Any] = dict(exchange_id=exchange, exchange_config=server.ccxt_config(exchange),
                                    orderbook_limit=LIMIT, reconnect_delay=0.05, max_reconnect_attempts=20)
    settings.update(overrides)
    return StreamConfig(**settings)


async def raw_exchange(server: EmulatorServer, exchange: str) -> Any:
    """An unmodified ccxt.pro client of ``exchange`` pointed at ``server``, markets loaded."""
    client = getattr(ccxt.pro, exchange)(server.ccxt_config(exchange))
    try:
        await asyncio.wait_for(client.load_markets(), DEADLINE)
    except BaseException:
        await client.close()
        raise
    return client


def native_id(collector: CCXTProCollector, symbol: str) -> str:
    return collector.exchange.market(symbol)["id"]


def levels(side: list) -> list[list[float]]:
    """ccxt book side ``[[price, amount, ...], ...]`` -> ``[[price, amount], ...]``."""
    return [[price, amount] for price, amount, *_ in side]


async def assert_raw_books_equal_server(client: Any, server: EmulatorServer, symbols: dict[str, int | None],
                                        depth: int = LIMIT) -> None:
    """Watch each symbol (with its limit) through plain ccxt, pause, and compare the top ``depth`` levels."""
    exchange = client.id
    for symbol, limit in symbols.items():
        for _ in range(3):
            await asyncio.wait_for(client.watch_order_book(symbol, limit), DEADLINE)
    server.pause(exchange)
    try:
        for symbol, limit in symbols.items():
            wanted = server.book(exchange, client.market(symbol)["id"], depth=min(depth, limit or depth))
            await wait_until(lambda: (book := client.orderbooks.get(symbol)) is not None
                             and levels(book["bids"])[:len(wanted["bids"])] == wanted["bids"]
                             and levels(book["asks"])[:len(wanted["asks"])] == wanted["asks"],
                             what=f"{symbol} to equal the server's book")
    finally:
        server.resume(exchange)


async def assert_books_equal_server(collector: CCXTProCollector, server: EmulatorServer) -> None:
    """Pause the emulator, wait until every collector book equals the server's top ``LIMIT`` levels, resume."""
    exchange = collector.exchange_id
    server.pause(exchange)
    try:
        for symbol in collector.subscribed_symbols():
            wanted = server.book(exchange, native_id(collector, symbol), depth=LIMIT)
            await wait_until(lambda: (book := collector.get_latest_orderbook(symbol)) is not None
                             and book.bids == wanted["bids"] and book.asks == wanted["asks"],
                             what=f"{symbol} to equal the server's book")
            book = collector.get_latest_orderbook(symbol)
            assert len(book.bids) == LIMIT and len(book.asks) == LIMIT
            assert book.exchange_seq is not None
    finally:
        server.resume(exchange)


async def recover_after_disconnect(collector: CCXTProCollector, server: EmulatorServer, fault: str,
                                   shifted: str) -> None:
    """Cut every connection (``close_connections`` / ``abort_connections``) and move ``shifted``'s prices far
    meanwhile: every symbol must reconnect, flag a resync and end up equal to the server (no stale levels)."""
    exchange = collector.exchange_id
    seqs = {s: collector.get_latest_orderbook(s).seq for s in collector.subscribed_symbols()}
    server.pause(exchange)
    getattr(server, fault)(exchange)
    market = collector.exchange.market(shifted)
    server.shift_price(exchange, market["id"], 40 * market["precision"]["price"])
    server.resume(exchange)
    for symbol, seq in seqs.items():
        await wait_until(lambda: collector.get_status()[symbol]["reconnects"] >= 1, what=f"{symbol} reconnect")
        await wait_until(lambda: any(s.resync and s.seq > seq for s in collector.get_snapshot_history(symbol)),
                         what=f"{symbol} resync snapshot")
    await assert_books_equal_server(collector, server)


async def resync_after(collector: CCXTProCollector, server: EmulatorServer, errors: list, symbol: str,
                       error: type) -> None:
    """After a fault on ``symbol`` that only a book check can see: ``error`` reported (in ``errors``, the
    collector's on_error log), a resync snapshot flagged, the book right again; no other symbol disturbed,
    nothing reconnected."""
    others = {s: collector.get_status()[s]["updates"] for s in collector.subscribed_symbols() if s != symbol}
    await wait_until(lambda: any(s == symbol and isinstance(e, error) for s, e in errors), what=f"{error.__name__}")
    await wait_until(lambda: collector.get_status()[symbol]["resyncs"] >= 1, what="resync counted")
    await wait_until(lambda: any(s.resync and s.seq > 1 for s in collector.get_snapshot_history(symbol)),
                     what="resync snapshot")
    await assert_books_equal_server(collector, server)
    for other, updates in others.items():
        status = collector.get_status()[other]
        assert (status["resyncs"], status["reconnects"]) == (0, 0), other
        assert status["updates"] > updates, other
    assert collector.get_status()[symbol]["reconnects"] == 0, "resynced on the live socket"


async def refused_subscribe_recovers(collector: CCXTProCollector, server: EmulatorServer, errors: list,
                                     future: str, expected: str | type) -> None:
    """The exchange refuses the next two subscribes: subscribing ``future`` reports two errors for it alone (other
    symbols undisturbed) — of type ``expected``, or naming it if it is a string — then it streams and every book
    equals the server's."""
    server.fail_subscribe(collector.exchange_id, count=2)
    [symbol] = await collector.subscribe_futures([future])
    await wait_until(lambda: collector.get_latest_orderbook(symbol) is not None, what=f"{symbol} book")
    assert [s for s, _ in errors] == [symbol] * 2
    for _, error in errors:
        assert isinstance(error, expected) if isinstance(expected, type) else expected in str(error), error
    assert all(collector.get_status()[s]["errors"] == 0 for s in collector.subscribed_symbols() if s != symbol)
    await assert_books_equal_server(collector, server)


async def start_collector(server: EmulatorServer, exchange: str, errors: list, **overrides: Any) -> CCXTProCollector:
    """A started collector that appends every reported ``(symbol, error)`` to ``errors``."""
    collector = CCXTProCollector(make_config(server, exchange, on_error=lambda s, e: errors.append((s, e)),
                                             **overrides))
    await collector.start()
    return collector


async def subscribe_everything(collector: CCXTProCollector, at_least: int, seconds_per_symbol: float = 0.0) -> float:
    """Subscribe every listed future and option; wait for all first books (``seconds_per_symbol`` more per symbol
    where ccxt paces subscriptions itself); print and return the seconds it took."""
    started = time.monotonic()
    await collector.subscribe_futures(collector.get_available_futures())
    await collector.subscribe_options(collector.get_available_options())
    count = len(collector.subscribed_symbols())
    assert count >= at_least
    await wait_until(lambda: len(collector.orderbooks) == count, timeout=max(DEADLINE, count * seconds_per_symbol),
                     what=f"{count} first books")
    seconds = time.monotonic() - started
    print(f"\n{collector.exchange_id}: {count} symbols streaming after {seconds:.1f} s")
    return seconds


def run_emulate_cli(exchange: str) -> None:
    """``ccxt-collector emulate --exchange X --port 0``: it prints its address and serves ccxt's markets."""
    process = subprocess.Popen([sys.executable, "-m", "cli", "emulate", "--exchange", exchange, "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + DEADLINE
        while not any("control API" in line for line in lines):
            line = process.stdout.readline()
            assert line and time.monotonic() < deadline, f"emulate did not start: {''.join(lines)}"
            lines.append(line)
        url = lines[0].split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(f"{url}/_emulator", timeout=DEADLINE) as reply:
            index = json.load(reply)
        assert index["exchanges"] == [exchange]
        assert any(f"{exchange}: " in line and " instruments" in line for line in lines)

        async def load() -> int:
            client = getattr(ccxt.pro, exchange)(index["env_config"][exchange])
            try:
                return len(await asyncio.wait_for(client.load_markets(), DEADLINE))
            finally:
                await client.close()

        assert asyncio.run(load()) > 50
    finally:
        process.terminate()
        process.wait(DEADLINE)


async def recover_after_stall(server: EmulatorServer, exchange: str, symbols: list[str]) -> None:
    """The server goes silent for several stall timeouts (no data, replies or heartbeats, nothing closed): the
    watchdog reconnects every symbol and the books end equal to the server's."""
    errors: list = []
    collector = await start_collector(server, exchange, errors, stall_timeout=0.5)
    try:
        await collector.subscribe_futures(symbols)
        await wait_until(lambda: len(collector.orderbooks) == len(symbols), what="first books")
        server.stall(exchange)
        await wait_until(lambda: all(s["reconnects"] >= 1 for s in collector.get_status().values()),
                         what="the watchdog to reconnect every symbol")
        seqs = {symbol: collector.get_latest_orderbook(symbol).seq for symbol in symbols}
        server.stall(exchange, False)
        for symbol, seq in seqs.items():
            await wait_until(lambda: any(s.resync and s.seq > seq for s in collector.get_snapshot_history(symbol)),
                             what=f"{symbol} resync snapshot")
        await assert_books_equal_server(collector, server)
        assert {type(error).__name__ for _, error in errors} >= {"StallError"}
    finally:
        await collector.stop()


async def malformed_frame_is_dropped(collector: CCXTProCollector, server: EmulatorServer, symbol: str) -> None:
    """A garbage frame on every connection is dropped; ``symbol`` streams on without reconnecting."""
    before = collector.get_latest_orderbook(symbol).seq
    server.send_malformed(collector.exchange_id)
    await wait_until(lambda: collector.get_latest_orderbook(symbol).seq > before + 5, what="updates")
    assert collector.get_status()[symbol]["reconnects"] == 0
