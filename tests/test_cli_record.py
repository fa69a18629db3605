"""``ccxt-collector record`` and ``markets`` end to end (in-process emulator via --demo), and their user errors."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from cli import main
from common.storage import OrderbookDataStore


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_record_demo_writes_files_and_exits_0(tmp_path):
    out = tmp_path / "data"
    result = run("record", "--demo", "--futures", "BTC", "--options", "BTC", "--expiry", "25DEC26",
                 "--duration", "3", "--limit", "5", "--out", str(out), "--format", "both")
    assert result.exit_code == 0, result.output
    assert "recorded" in result.output and "BTC/USD:BTC" in result.output
    store = OrderbookDataStore(base_path=out)
    jsonl = store.list_files("jsonl")
    parquet = store.list_files("parquet")
    assert any(name.startswith("BTC_USD_BTC_") for name in jsonl)
    assert len(jsonl) == 14 and parquet  # 4 futures/perpetuals + 10 options of 25DEC26
    snapshots = store.load_snapshots_jsonl(next(n for n in jsonl if n.startswith("BTC_USD_BTC_")))
    assert snapshots[0].resync is True and snapshots[0].seq == 1
    assert [s.seq for s in snapshots] == list(range(1, len(snapshots) + 1))
    assert all(len(s.bids) <= 5 for s in snapshots)
    store.close()


def test_record_sigterm_flushes_and_exits_0(tmp_path):
    out = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "record", "--demo", "--symbols", "BTC-PERPETUAL", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        jsonl_dir = out / "jsonl"
        for _ in range(300):  # until the first snapshot was written (bounded: 30 s)
            if jsonl_dir.exists() and any(jsonl_dir.iterdir()):
                break
            try:
                process.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                pass
        process.terminate()
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "recorded" in output
    assert OrderbookDataStore(base_path=out).load_snapshots_jsonl(
        next(p.name for p in (out / "jsonl").iterdir()))


def test_record_unknown_exchange_is_one_line_exit_2():
    result = CliRunner().invoke(main, ["record", "--exchange", "deribt", "--futures", "BTC"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "unknown exchange 'deribt'" in lines[0] and "deribit" in lines[0]


def test_record_bad_inputs_exit_2(tmp_path):
    cases = [
        (["--demo", "--symbols", "BTC-PERPETUL"], "BTC-PERPETUAL"),
        (["--futures", ""], "nothing to record"),  # (with --demo, no selection means the BTC demo set)
        (["--demo", "--options", "BTC", "--expiry", "JAN99"], "matches no instrument"),
        (["--futures", "BTC", "--exchange-config",
          '{"urls": {"api": {"rest": "http://127.0.0.1:9", "ws": "ws://127.0.0.1:9/ws"}}}'], "cannot load markets"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["record", "--out", str(tmp_path), *args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.output)


def test_markets_lists_filtered_options_as_json():
    result = run("markets", "--demo", "--type", "option", "--base", "BTC", "--expiry", "25DEC26",
                 "--option-type", "C", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 5
    assert {row["option_type"] for row in rows} == {"call"}
    assert "BTC-25DEC26-60000-C" in {row["id"] for row in rows}


def test_markets_table_and_types():
    result = run("markets", "--demo", "--type", "swap")
    assert result.exit_code == 0, result.output
    assert "BTC-PERPETUAL" in result.output and "ETH-PERPETUAL" in result.output
    assert "option" not in result.output.replace("option type", "")


def test_markets_bad_expiry_exit_2():
    result = CliRunner().invoke(main, ["markets", "--demo", "--expiry", "someday"])
    assert result.exit_code == 2
    assert result.output.startswith("error: expiry must look like")


def test_first_command_record_demo_alone_works(tmp_path, monkeypatch):
    """The README's first command: no selection given, --demo records the BTC curve and chain."""
    monkeypatch.chdir(tmp_path)
    result = run("record", "--demo", "--duration", "3")
    assert result.exit_code == 0, result.output
    store = OrderbookDataStore(base_path=tmp_path / "data" / "raw" / "orderbooks")
    names = store.list_files("jsonl")
    assert any(n.startswith("BTC_USD_BTC_") for n in names) and any(n.endswith(tuple("CP")) or "-C_" in n for n in names)
    store.close()
