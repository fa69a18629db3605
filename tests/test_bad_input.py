"""Bad input anywhere gets one clear line on stderr, exit code 2, no traceback, and nothing half-written."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=90, cwd=cwd)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "broken.yaml").write_text("exchange: deribit\nfutures: [BTC\n")
    (tmp_path / "list.yaml").write_text("- deribit\n")
    (tmp_path / "unknown-key.yaml").write_text("exchange: deribit\nfutures: [BTC]\nmaxlenn: 5\n")
    (tmp_path / "a-file").write_text("not a directory")
    return tmp_path


CASES = {
    "unknown exchange (produce)": (["produce", "--exchange", "derbit", "--futures", "BTC", "--check-config"], "did you mean deribit"),
    "unknown exchange (markets)": (["markets", "--exchange", "nosuchexchange"], "unknown exchange"),
    "unknown exchange (record)": (["record", "--exchange", "derbit", "--futures", "BTC", "--out", "{tmp}/rec"], "unknown exchange"),
    "unknown exchange (emulate)": (["emulate", "--exchange", "nasdaq", "--port", "0"], "nasdaq"),
    "unknown symbol": (["record", "--demo", "--symbols", "BTC-PERPETUALL", "--out", "{tmp}/rec", "--duration", "5"], "BTC-PERPETUAL"),
    "negative limit (produce)": (["produce", "--exchange", "deribit", "--futures", "BTC", "--limit", "-1", "--check-config"], "limit"),
    "zero limit (record)": (["record", "--demo", "--futures", "BTC", "--limit", "0", "--out", "{tmp}/rec"], "limit"),
    "broken YAML": (["produce", "--config", "{tmp}/broken.yaml", "--check-config"], "cannot parse"),
    "YAML that is not a mapping": (["produce", "--config", "{tmp}/list.yaml", "--check-config"], "expected a mapping"),
    "unknown config key": (["produce", "--config", "{tmp}/unknown-key.yaml", "--check-config"], "did you mean 'maxlen'"),
    "missing config file": (["produce", "--config", "{tmp}/missing.yaml", "--check-config"], "neither inline JSON nor an existing file"),
    "bad exchange config JSON": (["markets", "--exchange", "deribit", "--exchange-config", "{{broken"], "cannot parse"),
    "bad Redis URL scheme": (["produce", "--exchange", "deribit", "--futures", "BTC", "--redis-url", "http://x", "--check-config"], "scheme"),
    "bad Redis URL (worker)": (["cache", "--redis-url", "localhost:6379", "--check-config"], "bad Redis URL"),
    "unreachable Redis (worker)": (["archive", "--out", "{tmp}/arch", "--redis-url", "redis://127.0.0.1:1/0"], "cannot reach Redis"),
    "unreachable Redis (latest)": (["latest", "deribit", "BTC/USD:BTC", "--redis-url", "redis://127.0.0.1:1/0"], "cannot read the latest-book cache"),
    "unwritable archive dir": (["archive", "--out", "{tmp}/a-file/sub", "--check-config"], "not writable"),
    "unwritable record dir": (["record", "--demo", "--futures", "BTC", "--out", "{tmp}/a-file/sub", "--duration", "5"], "{tmp}/a-file"),
    "unreachable exchange": (["markets", "--exchange", "deribit", "--exchange-config",
                              '{{"urls": {{"api": {{"rest": "http://127.0.0.1:1", "ws": "ws://127.0.0.1:1/ws"}}}}}}'], "deribit"),
    "bad read dates": (["read", "--archive", "{tmp}", "--start", "yesterday-ish"], "start"),
    "missing archive": (["read", "--archive", "{tmp}/nowhere"], "nowhere"),
    "usage error": (["shards", "plan", "--exchange", "deribit", "--max-symbols", "-3"], "--max-symbols"),
    "missing argument": (["latest"], "Missing argument"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_clear_line_and_exit_2(name, files):
    args, expected = CASES[name]
    result = run(*[a.format(tmp=files) for a in args], cwd=files)
    assert result.returncode == 2, f"{name}: exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), f"{name}: expected one error line, got:\n{result.stderr}"
    assert expected.format(tmp=files) in lines[0], lines[0]
    assert not list((files / "rec").rglob("*.*")) if (files / "rec").exists() else True  # nothing half-written
