"""Shard planning: balanced, complete, non-overlapping shards that load as producer configs."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import yaml

from common.markets import MarketInfo, expiry_matcher
from producer.planner import day_code, plan_shards
from producer.shard import ShardConfig


def ms(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, 8, tzinfo=timezone.utc).timestamp() * 1000)


def option(base: str, expiry: int, strike: int, kind: str) -> MarketInfo:
    return MarketInfo("deribit", f"{base}/USD:{base}-{expiry}-{strike}-{kind[0].upper()}", "x", "option", base, "USD",
                      base, expiry, float(strike), kind)


def test_plan_is_balanced_complete_and_disjoint():
    expiries = {ms(2026, 12, 4): 6, ms(2026, 12, 25): 20, ms(2027, 3, 26): 60}  # strikes per expiry
    markets = [option("BTC", e, 1000 * k, kind) for e, n in expiries.items() for k in range(n) for kind in ("call", "put")]
    markets += [MarketInfo("deribit", "BTC/USD:BTC", "BTC-PERPETUAL", "swap", "BTC", "USD", "BTC")]
    shards = plan_shards("deribit", markets, ["BTC"], ["BTC"], max_symbols=50)
    assert all(s["symbols_count"] <= 50 for s in shards)
    assert sum(s["symbols_count"] for s in shards) == len(markets)
    covered = []
    for shard in shards:
        if "options" not in shard:
            continue
        matchers = [expiry_matcher(e) for e in shard["expiry"]]
        covered += [m.symbol for m in markets if m.type == "option" and any(f(m.expiry_date) for f in matchers)
                    and m.option_type == shard.get("option_type", m.option_type)
                    and shard.get("min_strike", -1) <= m.strike <= shard.get("max_strike", 1e18)]
    assert sorted(covered) == sorted(m.symbol for m in markets if m.type == "option")  # each option exactly once
    big = [s for s in shards if s.get("option_type")]
    assert {s["option_type"] for s in big} == {"call", "put"}  # the 120-symbol expiry was split by type
    assert any("min_strike" in s for s in big) and any("max_strike" in s for s in big)  # ... and by strike
    assert day_code(datetime(2026, 12, 4).date()) == "4DEC26"


def test_cli_writes_shard_files_that_load_as_producer_configs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cli", "shards", "plan", "--exchange", "deribit", "--futures", "BTC", "--options",
         "BTC,ETH", "--max-symbols", "12", "--out", str(tmp_path), "--demo"],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    files = sorted(tmp_path.glob("*.yaml"))
    assert len(files) >= 3
    tags = {ShardConfig.from_mapping(yaml.safe_load(f.read_text())).tag for f in files}
    assert len(tags) == len(files) and "deribit.btc-fut" in tags


def test_cli_rejects_empty_selection():
    result = subprocess.run([sys.executable, "-m", "cli", "shards", "plan", "--exchange", "deribit", "--demo"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "nothing to plan" in result.stderr and "Traceback" not in result.stderr
