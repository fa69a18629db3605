"""OrderbookDataStore and StreamingDataRecorder against real files: round trips, Parquet parts, safety, stats."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import OrderbookSnapshot, StreamConfig
from common.storage import OrderbookDataStore, StreamingDataRecorder
from common.storage.tables import CSV_COLUMNS

DAY_1 = datetime(2024, 11, 16, 23, 59, 0, tzinfo=timezone.utc)
DAY_2 = datetime(2024, 11, 17, 0, 0, 1, tzinfo=timezone.utc)
FUTURE = "BTC/USD:BTC"
OPTION = "BTC/USD:BTC-241227-100000-C"


def snapshot(symbol: str = FUTURE, when: datetime = DAY_1, number: int = 0, *, exchange: str = "deribit",
             levels: int = 5) -> OrderbookSnapshot:
    """A hand-built snapshot whose every field depends on ``number`` (ms-precision time, like JSONL keeps)."""
    mid = 90_000.0 + number * 0.5
    return OrderbookSnapshot(
        symbol=symbol,
        timestamp=when + timedelta(milliseconds=number * 7),
        bids=[[mid - 0.5 - i, 1.0 + i / 3] for i in range(levels)],
        asks=[[mid + 0.5 + i, 2.0 + i / 7] for i in range(levels - number % 2)],
        exchange=exchange,
        market_type="option" if symbol == OPTION else "future",
        receive_ts_ns=1_731_715_200_000_000_000 + number,
        exchange_seq=None if number % 3 == 0 else 2**62 + number,
        seq=number,
        resync=number == 0,
    )


def two_symbols_two_days(count: int = 20) -> list[OrderbookSnapshot]:
    return [snapshot(symbol, day, n, exchange="okx" if n % 4 == 1 else "deribit")
            for symbol in (FUTURE, OPTION) for day in (DAY_1, DAY_2) for n in range(count)]


EXPECTED_NAMES = ["BTC_USD_BTC-241227-100000-C_20241116", "BTC_USD_BTC-241227-100000-C_20241117",
                  "BTC_USD_BTC_20241116", "BTC_USD_BTC_20241117"]


def expected_rows(snapshots: list[OrderbookSnapshot], stem: str) -> list[dict]:
    return [s.to_dict() for s in snapshots if f"{s.symbol.replace('/', '_').replace(':', '_')}_" in stem + "_"
            and stem.endswith(s.timestamp.strftime("%Y%m%d"))]


def frame_rows(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows in the shape of ``to_dict()`` (ISO timestamps, None for missing values)."""
    rows = []
    for record in frame.to_dict("records"):
        record["timestamp"] = record["timestamp"].isoformat()
        for name, value in record.items():
            if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
                record[name] = None
        rows.append(record)
    return rows


@pytest.fixture
def store(tmp_path):
    with OrderbookDataStore(tmp_path / "store", parquet_buffer_rows=7) as opened:
        yield opened


def save_all(store: OrderbookDataStore, fmt: str, snapshots: list[OrderbookSnapshot]) -> None:
    save = getattr(store, f"save_snapshot_{fmt}")
    for item in snapshots:
        save(item)


def test_jsonl_round_trip_by_symbol_and_day(store):
    snapshots = two_symbols_two_days()
    save_all(store, "jsonl", snapshots)
    assert store.list_files("jsonl") == [f"{name}.jsonl" for name in EXPECTED_NAMES]
    for name in EXPECTED_NAMES:
        loaded = store.load_snapshots_jsonl(f"{name}.jsonl")
        assert [s.to_dict() for s in loaded] == expected_rows(snapshots, name)
        assert loaded == [s for s in snapshots if [s.to_dict()] == expected_rows([s], name)]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tabular_round_trip_keeps_every_value_and_level(store, fmt):
    snapshots = two_symbols_two_days()
    save_all(store, fmt, snapshots)
    store.flush()
    assert store.list_files(fmt) == [f"{name}.{fmt}" for name in EXPECTED_NAMES]
    load = getattr(store, f"load_snapshots_{fmt}")
    for name in EXPECTED_NAMES:
        frame = load(f"{name}.{fmt}")
        assert list(frame.columns) == list(CSV_COLUMNS)
        assert frame_rows(frame) == expected_rows(snapshots, name)
    assert set(frame["exchange"]) == {"deribit", "okx"}  # one file holds both exchanges, rows say which


def test_csv_and_parquet_loaders_return_identical_frames(store):
    snapshots = two_symbols_two_days(10)
    save_all(store, "csv", snapshots)
    save_all(store, "parquet", snapshots)
    csv_frame = store.load_snapshots_csv("BTC_USD_BTC_20241116.csv")
    parquet_frame = store.load_snapshots_parquet("BTC_USD_BTC_20241116.parquet")
    pd.testing.assert_frame_equal(csv_frame, parquet_frame)
    assert csv_frame["exchange_seq"].dtype == "Int64" and csv_frame["exchange_seq"].isna().sum() == 4


def test_parquet_is_readable_after_each_flush_and_after_close(tmp_path):
    directory = tmp_path / "store" / "parquet"
    store = OrderbookDataStore(tmp_path / "store", parquet_buffer_rows=4)
    save_all(store, "parquet", [snapshot(number=n) for n in range(10)])
    store.flush()
    parts = sorted(p.name for p in directory.iterdir())
    assert parts == ["BTC_USD_BTC_20241116.part-00001.parquet"]
    assert pq.read_table(directory / parts[0]).num_rows == 10

    save_all(store, "parquet", [snapshot(number=n) for n in range(10, 13)])
    store.flush()
    assert len(store.load_snapshots_parquet("BTC_USD_BTC_20241116.parquet")) == 13
    save_all(store, "parquet", [snapshot(number=n) for n in range(13, 20)])
    store.close()

    assert store.list_files("parquet") == ["BTC_USD_BTC_20241116.parquet"]
    assert sorted(p.name for p in directory.iterdir()) == [
        f"BTC_USD_BTC_20241116.part-0000{i}.parquet" for i in (1, 2, 3)]  # no temporary files left
    reopened = OrderbookDataStore(tmp_path / "store")
    frame = reopened.load_snapshots_parquet("BTC_USD_BTC_20241116.parquet")
    assert list(frame["seq"]) == list(range(20))
    assert len(reopened.load_snapshots_parquet("BTC_USD_BTC_20241116.part-00002.parquet")) == 3


def test_loading_publishes_what_the_store_still_buffers(store):
    save_all(store, "parquet", [snapshot(number=n) for n in range(3)])
    save_all(store, "jsonl", [snapshot(number=n) for n in range(3)])
    assert len(store.load_snapshots_parquet("BTC_USD_BTC_20241116.parquet")) == 3
    assert len(store.load_snapshots_jsonl("BTC_USD_BTC_20241116.jsonl")) == 3


def test_many_snapshots_make_few_files_and_few_open_handles(tmp_path):
    base = tmp_path / "store"
    symbols = [f"SYM{i}/USDT:USDT" for i in range(10)]
    fds_before = len(os.listdir("/proc/self/fd"))
    store = OrderbookDataStore(base, max_open_files=4, parquet_buffer_rows=100, parquet_part_rows=1000)
    most_fds = 0
    for n in range(300):
        for symbol in symbols:
            item = snapshot(symbol, number=n)
            store.save_snapshot_jsonl(item)
            store.save_snapshot_csv(item)
        store.save_snapshot_parquet(snapshot(FUTURE, number=n))
        most_fds = max(most_fds, len(os.listdir("/proc/self/fd")) - fds_before)
    for n in range(300, 2500):
        store.save_snapshot_parquet(snapshot(FUTURE, number=n))
    store.close()
    assert most_fds <= 4 + 1  # the LRU bound (+1 while a new file opens before the oldest closes)
    assert len(list((base / "jsonl").iterdir())) == 10 and len(list((base / "csv").iterdir())) == 10
    assert len(list((base / "parquet").iterdir())) == 3  # 2500 rows in parts of at most 1000
    assert all(len(store.load_snapshots_jsonl(name)) == 300 for name in store.list_files("jsonl"))
    assert all(len(store.load_snapshots_csv(name)) == 300 for name in store.list_files("csv"))
    assert list(store.load_snapshots_parquet("BTC_USD_BTC_20241116.parquet")["seq"]) == list(range(2500))


def test_more_symbols_than_open_parts_still_make_parts_of_whole_row_groups(tmp_path):
    symbols = [f"OPT{i}/USD:USD" for i in range(20)]
    with OrderbookDataStore(tmp_path, max_open_files=2, parquet_buffer_rows=50) as store:
        for n in range(100):
            for symbol in symbols:
                store.save_snapshot_parquet(snapshot(symbol, number=n))
    assert len(list((tmp_path / "parquet").iterdir())) == 20 * 2  # one part per 50-row group, not per row
    assert all(list(store.load_snapshots_parquet(name)["seq"]) == list(range(100))
               for name in store.list_files("parquet"))


def test_two_stores_on_one_directory_never_overwrite_each_others_parts(tmp_path):
    first, second = OrderbookDataStore(tmp_path), OrderbookDataStore(tmp_path)
    first.save_snapshot_parquet(snapshot(number=1))
    second.save_snapshot_parquet(snapshot(number=2))
    first.close()
    second.close()
    assert sorted(first.load_snapshots_parquet("BTC_USD_BTC_20241116.parquet")["seq"]) == [1, 2]


@pytest.mark.parametrize("symbol", ["../../etc/passwd", "/etc/passwd", "..", "a\x00b", "..\\..\\x", "C:\\x", "~/.ssh"])
def test_hostile_symbols_stay_inside_base_path(tmp_path, symbol):
    base = tmp_path / "store"
    with OrderbookDataStore(base) as store:
        for fmt in ("jsonl", "csv", "parquet"):
            getattr(store, f"save_snapshot_{fmt}")(snapshot(symbol))
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) == 3
    for path in written:
        assert path.parent.parent == base and "/" not in path.name and not path.name.startswith(".")
    assert store.load_snapshots_jsonl(store.list_files("jsonl")[0])[0].symbol == symbol


def test_load_refuses_names_outside_base_path(store, tmp_path):
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(b"{}\n")
    (store.base_path / "jsonl").mkdir()
    (store.base_path / "jsonl" / "link.jsonl").symlink_to(secret)
    for name in ["../../secret.jsonl", str(secret), "link.jsonl", "a\x00b.jsonl", "", "."]:
        with pytest.raises(ValueError):
            store.load_snapshots_jsonl(name)
    with pytest.raises(ValueError):
        store.load_snapshots_parquet("../../../etc/passwd")
    with pytest.raises(FileNotFoundError, match="NOPE_20241116.csv"):
        store.load_snapshots_csv("NOPE_20241116.csv")


def test_unusable_base_path_fails_at_construction(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        OrderbookDataStore(blocker)
    with pytest.raises(OSError, match="not writable"):
        OrderbookDataStore(blocker / "below")
    with pytest.raises(OSError):
        StreamingDataRecorder(base_path=blocker)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories")
def test_read_only_base_path_fails_at_construction(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OSError, match="not writable"):
            OrderbookDataStore(tmp_path / "store")
    finally:
        tmp_path.chmod(0o755)


def test_bad_arguments_give_clear_errors(store):
    with pytest.raises(ValueError, match="without a symbol"):
        store.save_snapshot_jsonl(snapshot(""))
    with pytest.raises(ValueError, match="unknown storage format"):
        store.list_files("xlsx")
    with pytest.raises(ValueError, match="unknown recording format"):
        StreamingDataRecorder(base_path=store.base_path, format="xml")
    with pytest.raises(ValueError, match="max_open_files"):
        OrderbookDataStore(store.base_path, max_open_files=0)
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.save_snapshot_csv(snapshot())


def test_a_crashed_writers_partial_line_is_ignored_then_cut_before_appending(tmp_path):
    path = tmp_path / "jsonl" / "BTC_USD_BTC_20241116.jsonl"
    with OrderbookDataStore(tmp_path) as store:
        store.save_snapshot_jsonl(snapshot(number=1))
    with open(path, "ab") as file:
        file.write(b'{"exchange": "deri')  # the process died here
    assert [s.seq for s in store.load_snapshots_jsonl(path.name)] == [1]
    with OrderbookDataStore(tmp_path) as store:
        store.save_snapshot_jsonl(snapshot(number=2))
    assert [s.seq for s in store.load_snapshots_jsonl(path.name)] == [1, 2]


def test_csv_of_another_layout_is_not_appended_to(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "BTC_USD_BTC_20241116.csv").write_text("time,price\n1,2\n")
    with OrderbookDataStore(tmp_path) as store:
        with pytest.raises(ValueError, match="another column layout"):
            store.save_snapshot_csv(snapshot())
        with pytest.raises(ValueError, match="not a snapshot CSV"):
            store.load_snapshots_csv("BTC_USD_BTC_20241116.csv")


def test_delete_files_removes_old_days_of_every_format(tmp_path):
    today = datetime.now(timezone.utc)
    with OrderbookDataStore(tmp_path) as store:
        for when in (DAY_1, today):
            for fmt in ("jsonl", "csv", "parquet"):
                getattr(store, f"save_snapshot_{fmt}")(snapshot(when=when))
        store.flush()
        deleted = store.delete_files(older_than_days=7)
        today_name = f"BTC_USD_BTC_{today:%Y%m%d}"
        assert sorted(deleted) == ["csv/BTC_USD_BTC_20241116.csv", "jsonl/BTC_USD_BTC_20241116.jsonl",
                                   "parquet/BTC_USD_BTC_20241116.parquet"]
        assert store.list_all_files() == {fmt: [f"{today_name}.{fmt}"] for fmt in ("jsonl", "csv", "parquet")}
        with pytest.raises(ValueError):
            store.delete_files(older_than_days=-1)


def test_guide_store_snippets(tmp_path):
    orderbook = snapshot(FUTURE, datetime(2024, 11, 16, 12, 0, tzinfo=timezone.utc))
    store = OrderbookDataStore(base_path=str(tmp_path / "data/raw/orderbooks"))
    store.save_snapshot_jsonl(orderbook)
    store.save_snapshot_csv(orderbook)
    store.save_snapshot_parquet(orderbook)
    store.flush()
    for fmt in ("jsonl", "csv", "parquet"):
        assert list((tmp_path / f"data/raw/orderbooks/{fmt}").glob(f"BTC_USD_BTC_20241116*.{fmt}"))

    snapshots = store.load_snapshots_jsonl("BTC_USD_BTC_20241116.jsonl")
    df = store.load_snapshots_csv("BTC_USD_BTC_20241116.csv")
    df_parquet = store.load_snapshots_parquet("BTC_USD_BTC_20241116.parquet")
    assert snapshots == [orderbook] and len(df) == len(df_parquet) == 1
    assert store.list_files('jsonl') == ["BTC_USD_BTC_20241116.jsonl"]
    assert store.list_files('csv') == ["BTC_USD_BTC_20241116.csv"]
    assert store.list_files('parquet') == ["BTC_USD_BTC_20241116.parquet"]
    all_files = store.list_all_files()
    assert all_files == {fmt: [f"BTC_USD_BTC_20241116.{fmt}"] for fmt in ("jsonl", "csv", "parquet")}
    store.close()


async def test_guide_example_2_recorder_with_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recorder = StreamingDataRecorder(format='jsonl')
    config = StreamConfig(exchange_id='deribit', on_orderbook_update=recorder.record_snapshot)
    for n in range(5):
        config.on_orderbook_update(snapshot(OPTION, number=n))  # what the collector does with a sync callback
    stats = recorder.get_stats()
    print(f"Recorded {stats['total_snapshots']} snapshots")
    assert stats["total_snapshots"] == 5
    recorder.close()
    path = tmp_path / "data/raw/orderbooks/jsonl/BTC_USD_BTC-241227-100000-C_20241116.jsonl"
    assert len(path.read_bytes().splitlines()) == 5


async def test_recorder_callback_with_both_formats_and_stats(tmp_path):
    snapshots = two_symbols_two_days(5)
    async with StreamingDataRecorder(base_path=tmp_path, format='both') as recorder:
        for item in snapshots:
            result = recorder.record_snapshot(item)
            assert result is None  # a plain sync callback: nothing to await
            await asyncio.sleep(0)
        stats = recorder.get_stats()
    assert stats["total_snapshots"] == 20 and stats["errors"] == 0
    assert stats["symbols"] == [FUTURE, OPTION]
    assert stats["per_symbol"] == {FUTURE: 10, OPTION: 10}
    assert stats["files"] == sorted(f"{fmt}/{name}.{fmt}" for name in EXPECTED_NAMES for fmt in ("jsonl", "parquet"))
    assert stats["format"] == "both" and stats["started_at"].tzinfo is not None
    store = recorder.store
    assert store.list_files("csv") == []
    for name in EXPECTED_NAMES:
        rows = [s.to_dict() for s in store.load_snapshots_jsonl(f"{name}.jsonl")]
        assert rows == frame_rows(store.load_snapshots_parquet(f"{name}.parquet")) == expected_rows(snapshots, name)


def test_recorder_counts_write_errors_logs_once_and_keeps_going(tmp_path, caplog):
    recorder = StreamingDataRecorder(base_path=tmp_path, format='both')
    (tmp_path / "jsonl").write_text("a file where the jsonl directory should be")
    with caplog.at_level(logging.ERROR, logger="common.storage"):
        for n in range(3):
            recorder.record_snapshot(snapshot(number=n))
    stats = recorder.get_stats()
    assert stats["errors"] == 3 and stats["total_snapshots"] == 0
    assert len([r for r in caplog.records if "jsonl" in r.getMessage()]) == 1
    recorder.close()
    assert len(recorder.store.load_snapshots_parquet("BTC_USD_BTC_20241116.parquet")) == 3  # the other format went on
    recorder.record_snapshot(snapshot(number=4))  # after close: counted, not raised
    assert recorder.get_stats()["errors"] == 5


async def test_recorder_flushes_a_quiet_stream_within_its_interval(tmp_path):
    recorder = StreamingDataRecorder(base_path=tmp_path, format='jsonl', flush_interval=0.05)
    recorder.record_snapshot(snapshot())
    path = tmp_path / "jsonl" / "BTC_USD_BTC_20241116.jsonl"
    deadline = time.monotonic() + 10
    while path.stat().st_size == 0:
        assert time.monotonic() < deadline, "the idle flush never happened"
        await asyncio.sleep(0.02)
    assert len(path.read_bytes().splitlines()) == 1
    recorder.close()


def test_csv_columns_follow_the_models_row_shape():
    assert tuple(snapshot().to_dict()) == CSV_COLUMNS


def test_foreign_parquet_file_gives_a_clear_error(store):
    (store.base_path / "parquet").mkdir()
    pq.write_table(pa.table({"price": [1.0]}), store.base_path / "parquet" / "OTHER_20241116.parquet")
    with pytest.raises(ValueError, match="not a snapshot Parquet file"):
        store.load_snapshots_parquet("OTHER_20241116.parquet")


def test_a_recorder_never_closed_is_flushed_at_interpreter_exit(tmp_path):
    script = textwrap.dedent(f"""
        from datetime import datetime, timezone
        from common import OrderbookSnapshot
        from common.storage import StreamingDataRecorder
        recorder = StreamingDataRecorder(base_path={str(tmp_path)!r}, format='both', flush_interval=3600)
        for n in range(5):
            recorder.record_snapshot(OrderbookSnapshot("BTC/USD:BTC", datetime(2024, 11, 16, tzinfo=timezone.utc),
                                                       [[1.0, 2.0]], [[3.0, 4.0]], "deribit", seq=n))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, cwd=Path(__file__).parent.parent)
    store = OrderbookDataStore(tmp_path)
    assert [s.seq for s in store.load_snapshots_jsonl("BTC_USD_BTC_20241116.jsonl")] == list(range(5))
    assert list(store.load_snapshots_parquet("BTC_USD_BTC_20241116.parquet")["seq"]) == list(range(5))
