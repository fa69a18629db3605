"""Building blocks for adapters whose ccxt subclass keeps books right on the live socket (OKX, Bybit).

Such a subclass checks each book message (sequence chain, checksum) without ever raising in the
handler: a bad message drops the symbol's book and chain (``exchange.forget(symbol)``, which the base
adapter's ``forget_book`` calls) and fails only that symbol's watch; the adapter's ``reset_subscription``
re-subscribes the channel on the same socket; the snapshot that follows is recorded in
``exchange.fresh_books`` and flagged as a resync once (the base adapter's ``take_fresh``).
"""

from __future__ import annotations

from producer.adapters.base import ExchangeAdapter


class LiveResyncAdapter(ExchangeAdapter):
    """Adapter for a ccxt subclass with ``forget(symbol)`` and ``fresh_books``; subscribes in batches."""

    batch_subscribe = True
