"""Pure logic of the comparison monitor: grouping, edges net of fees, the open/close state machine, staleness."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from common.config import ConfigError
from common.markets import MarketInfo
from consumers.arbitrage import (
    ArbitrageEngine,
    Edge,
    FeeSchedule,
    OpportunityTracker,
    Quote,
    compare,
    edges,
    parse_fees,
)
from consumers.grouping import Grouper, Instrument

NOW = 1_800_000_000.0
EXPIRY_MS = int(datetime(2026, 12, 25, 8, tzinfo=timezone.utc).timestamp() * 1000)


def quote(exchange: str, bid: float | None, ask: float | None, *, symbol: str = "BTC/USD:BTC", age: float = 0.0,
          seq: int = 1) -> Quote:
    return Quote(exchange, symbol, bid, ask, NOW - age, seq)


@pytest.mark.parametrize("symbol, group", [
    ("BTC/USD:BTC", "BTC-swap"),
    ("BTC/USDT:USDT", "BTC-swap"),
    ("BTC/USD:BTC-261225", "BTC-future-2026-12-25"),
    ("BTC/USDT:USDT-261225", "BTC-future-2026-12-25"),
    ("BTC/USD:BTC-270326", "BTC-future-2027-03-26"),
    ("BTC/USD:BTC-261225-60000-C", "BTC-option-2026-12-25-60000-call"),
    ("BTC/USDT:USDT-261225-60000-P", "BTC-option-2026-12-25-60000-put"),
    ("ETH/USDC:USDC-261225-3500.5-C", "ETH-option-2026-12-25-3500.5-call"),
    ("BTC/USDT", "BTC-spot"),
])
def test_group_keys_from_unified_symbols(symbol, group):
    assert Instrument.from_symbol(symbol).group == group


@pytest.mark.parametrize("bad", ["BTCUSD", "BTC-PERPETUAL", "BTC/USD:BTC-2612", "BTC/USD:BTC-261225-60000-X", ""])
def test_unparseable_symbols_raise_value_error(bad):
    with pytest.raises(ValueError):
        Instrument.from_symbol(bad)


def test_registry_metadata_wins_over_the_symbol():
    option = MarketInfo("deribit", "BTC/USD:BTC-261225-60000-C", "BTC-25DEC26-60000-C", "option", "BTC", "USD", "BTC",
                        expiry=EXPIRY_MS, strike=60000.0, option_type="call")
    odd = MarketInfo("paradex", "BTC-PERP", "BTC-USD-PERP", "swap", "BTC", "USD", "USDC")
    grouper = Grouper(markets=[option, odd])
    assert grouper.membership("deribit", option.symbol).group == Instrument.from_symbol(option.symbol).group
    assert grouper.membership("paradex", "BTC-PERP").group == "BTC-swap"  # unparseable, but the registry knows it
    assert grouper.membership("paradex", "ETH-PERP") is None
    grouper.add_registry([b"{not json", b'{"exchange": "x"}'])  # unreadable entries are skipped, not fatal


def test_futures_split_by_expiry_and_options_by_strike_and_type():
    grouper = Grouper()
    groups = {s: grouper.membership("okx", s).group for s in (
        "BTC/USD:BTC-261225", "BTC/USD:BTC-270326", "BTC/USD:BTC-261225-60000-C", "BTC/USD:BTC-261225-60000-P",
        "BTC/USD:BTC-261225-70000-C", "ETH/USD:ETH-261225",
    )}
    assert len(set(groups.values())) == len(groups)


def test_options_share_a_group_but_are_compared_only_in_the_same_price_unit():
    grouper = Grouper()
    coin = grouper.membership("deribit", "BTC/USD:BTC-261225-60000-C")
    usdt = grouper.membership("binance", "BTC/USDT:USDT-261225-60000-C")
    assert coin.group == usdt.group and (coin.price_unit, usdt.price_unit) == ("BTC", "USD")
    found = edges(coin.group, [(quote("deribit", 0.05, 0.051), "BTC"), (quote("binance", 3000, 3010), "USD")],
                  FeeSchedule())
    assert found == []
    assert grouper.membership("okx", "BTC/USD:BTC").price_unit == grouper.membership("x", "BTC/USDT:USDT").price_unit


def test_explicit_groups_override_and_are_validated():
    grouper = Grouper({"btc-perps": ["deribit:BTC/USD:BTC", "okx:BTC/USDT:USDT"]})
    assert grouper.membership("deribit", "BTC/USD:BTC").group == "btc-perps"
    assert grouper.membership("okx", "BTC/USDT:USDT").group == "btc-perps"
    assert grouper.membership("okx", "BTC/USD:BTC").group == "BTC-swap"  # not listed: automatic
    for bad in ({"g": "deribit:BTC/USD:BTC"}, {"g": []}, {"g": ["BTC/USD"]},
                {"a": ["okx:BTC/USD:BTC"], "b": ["okx:BTC/USD:BTC"]}):
        with pytest.raises(ConfigError):
            Grouper(bad)


def test_edges_are_net_of_both_taker_fees():
    fees = FeeSchedule({"okx": 8.0}, default_bps=5.0)
    found = {(e.buy.exchange, e.sell.exchange): e for e in edges(
        "BTC-swap", [(quote("deribit", 99.0, 100.0), "USD"), (quote("okx", 100.2, 100.3), "USD")], fees)}
    assert set(found) == {("deribit", "okx"), ("okx", "deribit")}
    assert found[("deribit", "okx")].edge_bps == pytest.approx(20.0)
    assert found[("deribit", "okx")].net_bps == pytest.approx(7.0)
    assert found[("okx", "deribit")].net_bps < 0
    one_sided = edges("BTC-swap", [(quote("deribit", None, 100.0), "USD"), (quote("okx", 100.2, 100.3), "USD")], fees)
    assert one_sided == []  # a book with a missing side takes no part


def test_parse_fees():
    assert parse_fees(["deribit=5", "okx=8.5"]) == {"deribit": 5.0, "okx": 8.5}
    for bad in ("okx", "okx=", "=5", "okx=abc", "okx=-1"):
        with pytest.raises(ValueError, match="EXCHANGE=BPS"):
            parse_fees([bad])


def edge(net: float) -> Edge:
    return Edge("BTC-swap", quote("deribit", 99.0, 100.0), quote("okx", 101.0, 102.0), net + 10.0, net)


def test_tracker_opens_once_keeps_quiet_and_closes_with_hysteresis():
    tracker = OpportunityTracker(threshold_bps=5.0, close_margin_bps=2.0)
    assert tracker.update("BTC-swap", [edge(4.9)], 1) == []  # below threshold
    opened = tracker.update("BTC-swap", [edge(5.0)], 2)
    assert [(a.event, a.reason) for a in opened] == [("open", "crossed")]
    for net in (9.0, 5.0, 3.5, 3.0, 6.0):  # persists, and 3.0..5.0 is inside the hysteresis band
        assert tracker.update("BTC-swap", [edge(net)], 3) == []
    closed = tracker.update("BTC-swap", [edge(2.9)], 4)
    assert [(a.event, a.reason, a.edge.net_bps) for a in closed] == [("close", "narrowed", 2.9)]
    assert tracker.update("BTC-swap", [edge(4.0)], 5) == []  # closed: needs the threshold again
    assert [a.event for a in tracker.update("BTC-swap", [edge(5.5)], 6)] == ["open"]
    gone = tracker.update("BTC-swap", [], 7)
    assert [(a.event, a.reason, a.edge.net_bps) for a in gone] == [("close", "unavailable", 5.5)]
    assert tracker.open_groups == []


def test_alert_fields_carry_the_documented_names():
    alert = OpportunityTracker(0.0).update("BTC-swap", [edge(7.0)], 1234)[0]
    assert alert.fields() == {
        "event": "open", "group": "BTC-swap", "buy_exchange": "deribit", "buy_symbol": "BTC/USD:BTC", "ask": 100.0,
        "sell_exchange": "okx", "sell_symbol": "BTC/USD:BTC", "bid": 101.0, "edge_bps": 17.0, "net_bps": 7.0,
        "ts": 1234, "reason": "crossed",
    }
    assert "buy deribit" in alert.describe() and "net 7.00 bps" in alert.describe()


def engine(**options) -> ArbitrageEngine:
    return ArbitrageEngine(Grouper(), FeeSchedule(), threshold_bps=5.0, **options)


def test_engine_ignores_stale_books_and_sweeps_them_closed():
    mon = engine(max_age=5.0)
    # deribit's book is old: its low ask must not look like an opportunity against okx
    assert mon.update([quote("deribit", 98.0, 99.0, age=6.0), quote("okx", 101.0, 101.1)], NOW) == []
    alerts = mon.update([quote("deribit", 99.0, 100.0, seq=2)], NOW)
    assert [(a.event, a.edge.buy.exchange, a.edge.sell.exchange) for a in alerts] == [("open", "deribit", "okx")]
    assert mon.sweep(NOW + 4.0) == []
    assert [(a.event, a.reason) for a in mon.sweep(NOW + 5.5)] == [("close", "unavailable")]
    assert mon.sweep(NOW + 6.0) == []


def test_engine_keeps_the_newest_quote_and_skips_ungroupable_symbols():
    mon = engine()
    assert [a.event for a in mon.update([quote("deribit", 99.0, 100.0, seq=5), quote("okx", 101, 101.1)], NOW)] == ["open"]
    # a redelivered older deribit quote (not crossed) changes nothing
    assert mon.update([quote("deribit", 102.0, 103.0, seq=4, age=0.5)], NOW) == []
    assert mon.update([quote("kraken", 1.0, 2.0, symbol="XBTUSD")], NOW) == []
    # newest deribit is no longer crossed: one close, evaluated once per batch whatever the batch order
    batch = [quote("deribit", 101.0, 101.05, seq=7), quote("deribit", 99.0, 100.0, seq=6)]
    assert [a.event for a in mon.update(batch, NOW)] == ["close"]


def test_comparison_rows_measure_against_the_tightest_book():
    rows = compare([
        (quote("deribit", 100.0, 100.2), "USD"),      # spread 0.2: best
        (quote("okx", 100.5, 101.5), "USD"),          # mid 101.0
        (quote("bybit", 90.0, 91.0, age=60), "USD"),  # stale
        (quote("binance", None, 100.0), "USD"),       # one-sided
    ], NOW, max_age=5.0)
    by_exchange = {row.quote.exchange: row for row in rows}
    assert [row.quote.exchange for row in rows] == ["binance", "bybit", "deribit", "okx"]
    assert by_exchange["deribit"].best and by_exchange["deribit"].diff_bps == 0.0
    assert by_exchange["okx"].diff_bps == pytest.approx((101.0 - 100.1) / 100.1 * 1e4)
    assert by_exchange["bybit"].stale and by_exchange["bybit"].diff_bps is None
    assert by_exchange["binance"].diff_bps is None and not by_exchange["binance"].stale


def test_instrument_from_market_matches_parsed_symbol():
    market = MarketInfo("okx", "BTC/USD:BTC-261225", "BTC-USD-261225", "future", "BTC", "USD", "BTC", expiry=EXPIRY_MS)
    assert Instrument.from_market(market) == Instrument.from_symbol("BTC/USD:BTC-261225")
    assert Instrument.from_market(market).expiry == date(2026, 12, 25)
