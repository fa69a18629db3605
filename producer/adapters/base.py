"""The per-exchange adapter interface and its generic default (plain ccxt behaviour).

The collector streams every exchange the same way; whatever differs per exchange (sequence checks,
batch subscription frames, how to get a fresh snapshot, what the exchange sequence number is) lives
behind this small interface. Subclasses override only what their exchange needs and register in
:mod:`producer.adapters`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

import ccxt
import ccxt.pro

from ccxt.async_support.base.ws.client import Client

from common.config import StreamConfig

log = logging.getLogger(__name__)

CLIENT_CLOSE_TIMEOUT = 5.0  # seconds to wait for a ccxt WebSocket client to close
UNSUBSCRIBE_TIMEOUT = 5.0  # seconds to wait for the exchange to confirm an unsubscribe


class GuardedClient(Client):
    """A ccxt WebSocket client whose receive loop survives any frame.

    ccxt decodes and dispatches each frame inside the receive loop's done-callback; an exception there
    (an undecodable frame, a handler raising on an error reply) ends the loop for good and every watch
    on the socket hangs until keepalive gives up. Here such a frame is logged and dropped instead.
    """

    dropped_frames = 0

    def handle_text_or_binary_message(self, data: Any) -> None:
        try:
            super().handle_text_or_binary_message(data)
        except Exception as exc:
            self.dropped_frames += 1
            log.warning("%s: dropped a frame that could not be handled: %r", self.url, exc)


class GuardedClients:
    """Mixin for a ccxt.pro exchange class: its WebSocket clients are :class:`GuardedClient`."""

    def client(self, url: str) -> Client:
        client = super().client(url)
        if type(client) is Client:
            client.__class__ = GuardedClient
        return client


class ExchangeAdapter:
    """Generic adapter: one ``watch_order_book`` subscription per symbol, ccxt's nonce as sequence."""

    #: True if :meth:`subscribe_batch` sends one frame for many symbols (the collector then funnels
    #: (re)subscriptions through a batcher); False: each symbol's first ``watch_order_book`` subscribes.
    batch_subscribe = False

    def __init__(self, exchange_id: str) -> None:
        self.exchange_id = exchange_id

    # -- construction ------------------------------------------------------------------------------------

    def exchange_class(self) -> type:
        """The ccxt.pro class to instantiate (adapters may return a subclass that hooks message handlers)."""
        return getattr(ccxt.pro, self.exchange_id)

    def create_exchange(self, config: StreamConfig) -> Any:
        """Instantiate :meth:`exchange_class` (with :class:`GuardedClients` mixed in) from the config."""
        cls = self.exchange_class()
        if not issubclass(cls, GuardedClients):
            cls = type(cls.__name__, (GuardedClients, cls), {})
        exchange = cls(config.ccxt_config())
        if config.testnet:
            exchange.set_sandbox_mode(True)
        return exchange

    # -- subscribing --------------------------------------------------------------------------------------

    def watch_limit(self, limit: int) -> Optional[int]:
        """The ``limit`` passed to ``watch_order_book`` (some exchanges pick a channel or REST depth by it)."""
        return limit

    def subscription_chunks(self, exchange: Any, symbols: list[str]) -> list[list[str]]:
        """Split symbols into groups that one subscribe frame may carry."""
        return [symbols]

    async def subscribe_batch(self, exchange: Any, symbols: list[str], limit: int) -> None:
        """Register and send one subscription for ``symbols`` without waiting for data (batching adapters)."""

    async def unsubscribe(self, exchange: Any, symbol: str) -> None:
        """Stop the exchange sending ``symbol``'s book (confirmed, bounded in time: a stalled server never
        confirms) and forget the local copy."""
        if exchange.has.get("unWatchOrderBook"):
            try:
                await asyncio.wait_for(exchange.un_watch_order_book(symbol), UNSUBSCRIBE_TIMEOUT)
            except Exception as exc:  # best effort: the stream task is already gone
                log.debug("%s: un_watch_order_book(%s) failed: %r", self.exchange_id, symbol, exc)
        self.forget_book(exchange, symbol)

    async def reset_subscription(self, exchange: Any, symbol: str) -> None:
        """Make the next watch start from a fresh snapshot (after a gap or a stall on a live socket).

        Generic: unsubscribe if ccxt can, else close the exchange's sockets (every symbol resubscribes).
        """
        if exchange.has.get("unWatchOrderBook"):
            await self.unsubscribe(exchange, symbol)
        else:
            await close_clients(exchange, list((exchange.clients or {}).values()))
            self.forget_book(exchange, symbol)

    def forget_book(self, exchange: Any, symbol: str) -> None:
        """Drop ccxt's cached book so a re-watch cannot merge a new snapshot onto stale levels.

        Calls ``exchange.forget(symbol)`` where the adapter's ccxt subclass has one (it also drops the
        symbol's sequence chain and fresh-snapshot mark).
        """
        forget = getattr(exchange, "forget", None)
        if forget is not None:
            forget(symbol)
        else:
            exchange.orderbooks.pop(symbol, None)

    # -- reading books ---------------------------------------------------------------------------------------

    def exchange_seq(self, book: dict) -> Optional[int]:
        """The exchange's sequence number of a ccxt book (generic: ccxt's nonce)."""
        nonce = book.get("nonce")
        return nonce if isinstance(nonce, int) else None

    def take_fresh(self, exchange: Any, symbol: str) -> bool:
        """True once after the exchange replaced ``symbol``'s book with a fresh snapshot on its own.

        Reads ``exchange.fresh_books`` (a set of symbols) where the adapter's ccxt subclass keeps one.
        """
        fresh = getattr(exchange, "fresh_books", None)
        if fresh and symbol in fresh:
            fresh.discard(symbol)
            return True
        return False

    # -- recovery ------------------------------------------------------------------------------------------

    async def recover_stall(self, exchange: Any, symbol: str, stall_timeout: float) -> None:
        """``symbol`` got no update for ``stall_timeout`` s: close sockets that went silent (a dead receive
        loop or a half-open connection), else resubscribe just this symbol."""
        now_ms = exchange.milliseconds()
        silent = [
            client
            for client in (exchange.clients or {}).values()
            if client.last_message_at is None or now_ms - client.last_message_at > stall_timeout * 1000
        ]
        if silent:
            await close_clients(exchange, silent)
            self.forget_book(exchange, symbol)
        else:
            await self.reset_subscription(exchange, symbol)


async def close_clients(exchange: Any, clients: list[Any]) -> None:
    """Close ccxt WebSocket clients and detach them from the exchange, so the next watch dials anew.

    Closing cancels every pending watch on those sockets (the watchers see a cancelled future).
    ``client.error`` is set first: ccxt's on_close then leaves ``exchange.clients`` alone (it deletes by
    url, which by then may name the replacement socket).
    """
    for client in clients:
        client.error = client.error or ccxt.NetworkError(f"{client.url}: closed by the collector's watchdog")
        if (exchange.clients or {}).get(client.url) is client:
            del exchange.clients[client.url]
    for client in clients:
        try:
            await asyncio.wait_for(client.close(), CLIENT_CLOSE_TIMEOUT)
        except Exception as exc:  # the socket may already be half dead; it is detached either way
            log.debug("closing %s failed: %r", client.url, exc)
