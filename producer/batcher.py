"""Coalesces (re)subscriptions of many symbols into few subscribe frames.

After a reconnect every symbol on the socket resubscribes at about the same time; one frame per
symbol would be throttled by ccxt's rate limiter (deribit: 20 frames/s, so 500 symbols take 25 s).
Symbols ask :meth:`SubscriptionBatcher.request`; requests arriving within ``window`` seconds share frames.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from producer.adapters.base import ExchangeAdapter

DEFAULT_WINDOW = 0.02  # seconds to collect requests before sending


class SubscriptionBatcher:
    """Sends batched subscriptions through an adapter that supports them."""

    def __init__(self, exchange: Any, adapter: ExchangeAdapter, limit: int, window: float = DEFAULT_WINDOW) -> None:
        self._exchange = exchange
        self._adapter = adapter
        self._limit = limit
        self._window = window
        self._pending: dict[str, asyncio.Future] = {}
        self._flusher: Optional[asyncio.Task] = None

    async def subscribe(self, symbols: list[str]) -> None:
        """Subscribe ``symbols`` now, in as few frames as the adapter allows."""
        for chunk in self._adapter.subscription_chunks(self._exchange, symbols):
            await self._adapter.subscribe_batch(self._exchange, chunk, self._limit)

    async def request(self, symbol: str) -> None:
        """Subscribe ``symbol`` together with the other symbols asking within the window."""
        future = self._pending.get(symbol)
        if future is None or future.done():
            future = self._pending[symbol] = asyncio.get_running_loop().create_future()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await future

    async def _flush(self) -> None:
        await asyncio.sleep(self._window)
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                await self.subscribe(list(batch))
            except Exception as exc:
                for future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
            else:
                for future in batch.values():
                    if not future.done():
                        future.set_result(None)

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
