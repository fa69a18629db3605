"""Snapshot persistence: ``OrderbookDataStore`` (JSONL / CSV / Parquet files by symbol and day) and
``StreamingDataRecorder`` (a collector callback that records into a store)."""

from common.storage.recorder import RECORDER_FORMATS, StreamingDataRecorder
from common.storage.store import OrderbookDataStore

__all__ = ["RECORDER_FORMATS", "OrderbookDataStore", "StreamingDataRecorder"]
