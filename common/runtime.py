"""Process-level tuning shared by every long-running process (producers and consumers)."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Call once start-up is done: move start-up objects (markets, ccxt's tables, imports) out of the
    collector's view and collect less often. Measured here: the default GC made a decode-and-keep loop
    ~4x slower, and tuning it gave the producer +15-30% at 500 symbols."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
