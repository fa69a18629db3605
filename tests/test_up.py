"""``ccxt-collector up``: every role as a supervised process; Ctrl-C/SIGTERM stops them all cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(150)


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=60, **kwargs)


def test_up_demo_runs_the_pipeline_and_stops_everything(redis_url, tmp_path):
    up = subprocess.Popen([sys.executable, "-m", "cli", "up", "--demo", "-v", "--redis-url", redis_url], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            latest = cli("latest", "deribit", "BTC/USD:BTC", "--json", "--redis-url", redis_url)
            if latest.returncode == 0:
                break
            assert up.poll() is None, up.communicate()
            assert time.monotonic() < deadline, f"no latest book: {latest.stderr}"
            time.sleep(0.5)
        book = json.loads(latest.stdout)
        assert book["exchange"] == "deribit" and book["bids"] and book["asks"]
        status = json.loads(cli("status", "--json", "--redis-url", redis_url).stdout)
        assert {p["shard"] for p in status["producers"]} == {"deribit.btc", "deribit.eth"}
    finally:
        up.send_signal(signal.SIGTERM)
        out, err = up.communicate(timeout=90)
    assert up.returncode == 0, err
    pids = [int(p) for p in re.findall(r"started \S+ \(pid (\d+)\)", err)]
    assert len(pids) == 5, err
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z", f"{pid} still runs"
    assert list((tmp_path / "data" / "demo-archive").rglob("*.parquet")), "the archiver did not flush on stop"


def test_up_check_config_and_bad_configs(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("producers:\n  - {exchange: deribit, shard: btc, futures: [BTC]}\n"
                      "consumers:\n  archive: {replicas: 2, args: [--out, data/archive]}\n  cache: {}\n")
    result = cli("up", "--config", str(config), "--check-config")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["produce[deribit.btc]", "archive[0]", "archive[1]", "cache[0]"]
    for body, message in [("producers:\n  - {exchange: derbit, futures: [BTC]}\n", "did you mean deribit"),
                          ("consumers:\n  archiver: {}\n", "unknown consumer 'archiver'"),
                          ("producers: []\nconsumers: {}\n", "names no producers"),
                          ("producers:\n  - {exchange: deribit, futurez: [BTC]}\n", "did you mean 'futures'")]:
        config.write_text(body)
        result = cli("up", "--config", str(config), "--check-config")
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
