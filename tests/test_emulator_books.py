"""Seeded random-walk books, pricing and Deribit's expiry calendar (pure logic, no network)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from emulator import EmulatorServer
from emulator.books import BookSpec, RandomWalkBook, black_scholes, reference_price
from emulator.deribit import PINNED_EXPIRY, DeribitEmulator, expiry_code, listed_expiries, settlement_period


def deribit_books(seed: int) -> DeribitEmulator:
    """A Deribit emulator with its books built (not serving)."""
    emulator = DeribitEmulator(seed=seed)
    emulator.build_books()
    return emulator


def replay(levels: dict[str, dict[float, float]], changes: list) -> None:
    for side, action, price, amount in changes:
        if action == "delete":
            assert price in levels[side], f"delete of a missing level {price}"
            del levels[side][price]
        else:
            assert (action == "change") == (price in levels[side]), f"{action} at {price}"
            levels[side][price] = amount


def test_same_seed_same_books_and_different_seed_different_books() -> None:
    first, second, other = deribit_books(7), deribit_books(7), deribit_books(8)
    assert first.instruments() == second.instruments()
    for name in first.instruments():
        assert first.books[name].levels("bids") == second.books[name].levels("bids")
        assert first.books[name].step() == second.books[name].step()
    assert first.books["BTC-PERPETUAL"].levels("asks") != other.books["BTC-PERPETUAL"].levels("asks")


def test_server_builds_books_before_start() -> None:
    server = EmulatorServer(["deribit"], seed=3)
    assert "BTC-25DEC26-60000-C" in server.instruments("deribit")
    assert server.env_config()["deribit"]["urls"]["api"]["ws"].endswith("/ws/api/v2")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reference_prices_anchor_every_book(seed: int) -> None:
    btc, eth = reference_price("BTC", seed), reference_price("ETH", seed)
    assert abs(btc / 60000 - 1) <= 0.01 and abs(eth / 3000 - 1) <= 0.01
    assert reference_price("BTC", seed) == btc
    books = deribit_books(seed).books
    perpetual = books["BTC-PERPETUAL"]
    assert abs(perpetual.best_bid() / btc - 1) < 0.002
    quarterly = books["BTC-" + expiry_code(PINNED_EXPIRY)]
    assert quarterly.best_bid() > perpetual.best_ask()  # contango basis


@pytest.mark.parametrize("seed", [11, 12])
def test_steps_never_cross_keep_depth_and_replay_exactly(seed: int) -> None:
    emulator = deribit_books(seed)
    for name in ("BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-25DEC26-60000-P"):
        book = emulator.books[name]
        tick = book.spec.tick_size
        replica = {side: {p: a for p, a in book.levels(side)} for side in ("bids", "asks")}
        for _ in range(1500):
            replay(replica, book.step())
            assert book.best_bid() < book.best_ask()
            assert 30 <= len(book.bids) <= 50 and 30 <= len(book.asks) <= 50
        assert replica == {side: {p: a for p, a in book.levels(side)} for side in ("bids", "asks")}
        for price, amount in book.levels("bids") + book.levels("asks"):
            assert abs(price / tick - round(price / tick)) < 1e-6 and amount > 0


def test_walk_reverts_to_its_anchor() -> None:
    book = RandomWalkBook(BookSpec(60000.0, 0.5, 10.0), random.Random(5))
    for _ in range(20000):
        book.step()
    assert abs(book.best_bid() / 60000 - 1) < 0.01


def test_shift_moves_every_level_and_refuses_negative_prices() -> None:
    book = RandomWalkBook(BookSpec(100.0, 0.5, 1.0), random.Random(1))
    before = book.levels("bids"), book.levels("asks")
    replica = {side: {p: a for p, a in book.levels(side)} for side in ("bids", "asks")}
    replay(replica, book.shift(25.0))
    assert book.levels("bids") == [[p + 25.0, a] for p, a in before[0]]
    assert replica["asks"] == {p + 25.0: a for p, a in before[1]}
    with pytest.raises(ValueError):
        book.shift(-1000.0)


def test_option_prices_are_plausible_and_satisfy_put_call_parity() -> None:
    emulator = deribit_books(42)
    forward = emulator.books["BTC-25DEC26"].best_bid()
    for strike in (50000, 55000, 60000, 65000, 70000):
        call = emulator.books[f"BTC-25DEC26-{strike}-C"]
        put = emulator.books[f"BTC-25DEC26-{strike}-P"]
        call_mid = (call.best_bid() + call.best_ask()) / 2
        put_mid = (put.best_bid() + put.best_ask()) / 2
        assert 0.0005 < call_mid < 0.5 and 0.0005 < put_mid < 0.5
        assert call_mid - put_mid == pytest.approx((forward - strike) / forward, abs=0.01)
    assert black_scholes(60000, 60000, 0.25, call=True) == pytest.approx(0.6 * 0.5 * 60000 * 0.398, rel=0.02)


@pytest.mark.parametrize("today", ["2026-11-26", "2026-12-20", "2027-02-03", "2027-06-30"])
def test_expiries_are_fridays_at_0800_and_include_25dec26(today: str) -> None:
    now = dt.datetime.fromisoformat(today + "T05:00:00+00:00")
    futures, options = listed_expiries(now)
    assert len(futures) >= 2 and len(options) >= 2 and PINNED_EXPIRY in futures and PINNED_EXPIRY in options
    for expiry in futures + options:
        assert (expiry.weekday(), expiry.hour, expiry.minute) == (4, 8, 0)
        assert expiry == PINNED_EXPIRY or expiry - now >= dt.timedelta(days=7)
    assert {settlement_period(int(e.timestamp() * 1000)) for e in futures} <= {"week", "month"}
    assert settlement_period(int(PINNED_EXPIRY.timestamp() * 1000)) == "month"
    assert expiry_code(PINNED_EXPIRY) == "25DEC26" and expiry_code(dt.datetime(2027, 3, 5)) == "5MAR27"
