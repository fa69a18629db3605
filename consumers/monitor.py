"""The arbitrage / comparison monitor worker: book streams in, ``ccxt:alerts`` entries (and log lines) out.

Consumer group ``monitor``. Each batch's newest quote per instrument is fed to an
:class:`~consumers.arbitrage.ArbitrageEngine`; every group the batch touched is evaluated once (stream
order across exchanges inside a batch is not time order, so evaluating entry by entry would pair one
exchange's new book with another's outdated one). Alerts go to the alerts stream, then the batch is
acked: the state lives in memory and alerts are the only output. Market metadata for grouping is read
from the registry (``ccxt:markets:<exchange>``) the first time an instrument is seen.

Alert entry fields: event (open|close), group, buy_exchange, buy_symbol, ask, sell_exchange, sell_symbol,
bid, edge_bps, net_bps, ts (ms), reason (crossed|narrowed|unavailable).
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Optional

import redis.asyncio as aioredis

from common.streams import StreamKeys
from consumers.arbitrage import Alert, ArbitrageEngine, Quote
from consumers.runner import StreamEntry, Worker

log = logging.getLogger(__name__)

ALERTS_MAXLEN = 100_000


class ArbitrageMonitor(Worker):
    """Runs an :class:`ArbitrageEngine` over the book streams and publishes its alerts."""

    group = "monitor"
    report_trimmed = False  # only the newest book matters here

    def __init__(self, engine: ArbitrageEngine, keys: StreamKeys = StreamKeys()) -> None:
        self.engine = engine
        self.keys = keys
        self.alerts_sent = 0
        self._redis: Optional[aioredis.Redis] = None
        self._looked_up: set[tuple[str, str]] = set()

    async def start(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def handle(self, entries: list[StreamEntry]) -> Iterable[StreamEntry]:
        quotes = [Quote.from_fields(entry.fields) for entry in entries]
        await self._learn_markets({(q.exchange, q.symbol) for q in quotes} - self._looked_up)
        await self._publish(self.engine.update(quotes, time.time()))
        return entries

    async def flush(self) -> Iterable[StreamEntry]:
        await self._publish(self.engine.sweep(time.time()))
        return ()

    async def _learn_markets(self, instruments: set[tuple[str, str]]) -> None:
        """Fetch registry metadata of instruments seen for the first time (one pipelined round trip)."""
        if not instruments:
            return
        ordered = sorted(instruments)
        async with self._redis.pipeline(transaction=False) as pipe:
            for exchange, symbol in ordered:
                pipe.hget(self.keys.markets(exchange), symbol)
            replies = await pipe.execute()
        self.engine.grouper.add_registry(raw for raw in replies if raw is not None)
        self._looked_up |= instruments

    async def _publish(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for alert in alerts:
                log.warning("%s", alert.describe())
                pipe.xadd(self.keys.alerts, alert.fields(), maxlen=ALERTS_MAXLEN, approximate=True)
            await pipe.execute()
        self.alerts_sent += len(alerts)
