"""Helpers for adapters that subscribe many book channels with one frame."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Iterable, TypeVar

Item = TypeVar("Item")


def chunked(items: Iterable[Item], size: int) -> list[list[Item]]:
    """``items`` in consecutive groups of at most ``size``."""
    items = list(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


async def start_batch_watch(watch: Awaitable[Any], registered: Callable[[], bool]) -> None:
    """Run a batch watch (``watch_order_book_for_symbols``) until ccxt has registered its subscriptions and
    scheduled the subscribe frame (``registered()``), or it finished.

    Its result (the first book of any symbol) is not needed: each symbol's own ``watch_order_book`` then
    finds the channel subscribed and only waits. The batch watch's eventual error is retrieved so asyncio
    does not log it.
    """
    pending = asyncio.ensure_future(watch)
    pending.add_done_callback(_retrieve_outcome)
    for _ in range(100):
        if pending.done() or registered():
            return
        await asyncio.sleep(0)


def _retrieve_outcome(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()
