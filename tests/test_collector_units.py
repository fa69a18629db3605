"""Pure-logic parts of the collector: deribit subscribe-frame chunking and the reconnect backoff."""

from __future__ import annotations

import json

from common import StreamConfig
from producer import CCXTProCollector
from producer.adapters.deribit import DeribitAdapter


class Markets:
    """Stands in for ccxt's ``exchange.market`` (the only thing chunking reads)."""

    def market(self, symbol: str) -> dict:
        return {"id": symbol}


def test_deribit_chunks_stay_under_the_frame_limit_and_keep_every_symbol():
    symbols = [f"BTC-25DEC26-{100000 + i}-C" for i in range(3000)]
    chunks = DeribitAdapter("deribit").subscription_chunks(Markets(), symbols)
    assert len(chunks) > 1
    assert [s for chunk in chunks for s in chunk] == symbols
    for chunk in chunks:
        frame = {"jsonrpc": "2.0", "method": "public/subscribe", "id": 123456789,
                 "params": {"channels": [f"book.{s}.100ms" for s in chunk]}}
        assert len(json.dumps(frame, separators=(",", ":"))) < 32767


def test_backoff_doubles_with_jitter_and_is_capped():
    collector = CCXTProCollector(StreamConfig(exchange_id="deribit", reconnect_delay=1))
    delays = [collector._backoff(n, immediate=False) for n in range(1, 12)]  # noqa: SLF001
    for n, delay in enumerate(delays[:6], start=1):
        assert 0.8 * 2 ** (n - 1) <= delay <= 1.2 * 2 ** (n - 1)
    assert max(delays) <= 60 * 1.2
    assert collector._backoff(1, immediate=True) == 0  # noqa: SLF001 - first resync after a gap
    assert collector._backoff(2, immediate=True) > 0  # noqa: SLF001
