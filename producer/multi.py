"""``MultiExchangeCollector``: one :class:`CCXTProCollector` per exchange, for cross-exchange comparison."""

from __future__ import annotations

import asyncio

from common.config import ConfigError, StreamConfig
from common.model import OrderbookSnapshot
from producer.collector import CCXTProCollector
from producer.errors import UnknownSymbolError


class MultiExchangeCollector:
    """Owns several collectors keyed by exchange id."""

    def __init__(self) -> None:
        self.collectors: dict[str, CCXTProCollector] = {}

    async def add_exchange(self, config: StreamConfig) -> CCXTProCollector:
        """Create and start a collector for ``config.exchange_id`` (ConfigError if it is already added)."""
        if config.exchange_id in self.collectors:
            raise ConfigError(f"exchange {config.exchange_id!r} is already added")
        collector = CCXTProCollector(config)
        await collector.start()
        self.collectors[config.exchange_id] = collector
        return collector

    def get_collector(self, exchange_id: str) -> CCXTProCollector:
        """The collector of ``exchange_id`` (KeyError naming the added exchanges otherwise)."""
        try:
            return self.collectors[exchange_id]
        except KeyError:
            raise KeyError(f"no collector for {exchange_id!r}; added: {', '.join(self.collectors) or 'none'}") from None

    def get_all_collectors(self) -> dict[str, CCXTProCollector]:
        return dict(self.collectors)

    def compare_orderbooks(self, symbol: str) -> dict[str, OrderbookSnapshot]:
        """``{exchange_id: latest snapshot}`` for the exchanges that have a book of ``symbol``."""
        books: dict[str, OrderbookSnapshot] = {}
        for exchange_id, collector in self.collectors.items():
            try:
                book = collector.get_latest_orderbook(symbol)
            except UnknownSymbolError:
                continue
            if book is not None:
                books[exchange_id] = book
        return books

    async def stop_all(self) -> None:
        """Stop every collector (concurrently)."""
        await asyncio.gather(*(collector.stop() for collector in self.collectors.values()))
