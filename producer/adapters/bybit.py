"""Bybit (v5): update-id gap detection, resync on the live socket, batched subscribe frames per category.

ccxt 4.5.90's bybit handler ignores the book's update id ``u`` entirely: a lost delta corrupts the book
silently, a delta arriving before (or without) a snapshot builds a book from nothing, and ``nonce`` stays
None. It also only accepts limits 1/50/200/1000 (options 25/100) and unsubscribes ``orderbook.500`` unless
told the depth. :class:`BybitStream` checks that every delta's ``u`` is the previous one + 1 (a snapshot
starts a new chain), drops deltas of a symbol without a chain, sets ``nonce`` to ``u``, picks the depth
topic that covers the requested limit per market type, and on a gap fails only that symbol's watch
with :class:`SequenceGapError`; :meth:`BybitAdapter.reset_subscription` then re-subscribes the topic on
the same socket, and the fresh snapshot is flagged as a resync.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

import ccxt.pro

from producer.adapters.base import UNSUBSCRIBE_TIMEOUT, GuardedClients
from producer.adapters.batch import chunked, start_batch_watch
from producer.adapters.live import LiveResyncAdapter
from producer.errors import SequenceGapError

log = logging.getLogger(__name__)

#: book depths Bybit serves per market kind (ccxt's lists), smallest first
DEPTHS: dict[str, tuple[int, ...]] = {"option": (25, 100), "default": (1, 50, 200, 1000)}
DEFAULT_DEPTH: dict[str, int] = {"option": 100, "default": 50}  # ccxt's, when no limit is given
SUBSCRIBE_CHUNK = 200  # topics per subscribe frame (Bybit caps a linear/inverse request at 21,000 characters)


def book_hash(symbol: str) -> str:
    """ccxt's message hash of a bybit book watch."""
    return f"orderbook:{symbol}"


def socket_kind(market: dict) -> str:
    """Which public socket serves ``market``: spot, linear, inverse or option."""
    if market.get("option"):
        return "option"
    if market.get("spot"):
        return "spot"
    return "linear" if market.get("linear") else "inverse"


class BybitStream(GuardedClients, ccxt.pro.bybit):
    """ccxt.pro bybit with a checked ``u`` chain and per-symbol resync."""

    def __init__(self, config: Optional[dict] = None) -> None:
        super().__init__(config or {})
        self.last_update_id: dict[str, int] = {}  # symbol -> u of the last applied message
        self.book_depth: dict[str, int] = {}  # symbol -> depth of its subscribed topic
        self.fresh_books: set[str] = set()  # symbols rebuilt from a snapshot since the collector last looked

    def book_depth_for(self, market: dict, limit: Optional[int]) -> int:
        """The smallest topic depth that holds ``limit`` levels (the largest if none does)."""
        kind = "option" if market.get("option") else "default"
        if limit is None:
            return DEFAULT_DEPTH[kind]
        depths = DEPTHS[kind]
        return next((depth for depth in depths if depth >= limit), depths[-1])

    async def watch_order_book_for_symbols(self, symbols, limit=None, params={}):
        if self.markets is None:
            await self.load_markets()
        market = self.market(symbols[0])
        depth = self.book_depth_for(market, limit)
        for symbol in symbols:
            self.book_depth[self.symbol(symbol)] = depth
        return await super().watch_order_book_for_symbols(symbols, depth, params)

    def handle_order_book(self, client, message):
        """Apply a snapshot (new chain) or a delta that continues its chain; anything else fails the symbol."""
        data = message.get("data") or {}
        symbol = self.safe_symbol(data.get("s"), None, None, "spot" if "spot" in client.url else "contract")
        update_id = data.get("u")
        if message.get("type") == "snapshot":
            self.orderbooks.pop(symbol, None)
            self.fresh_books.add(symbol)
        elif symbol not in self.last_update_id:
            return  # no chain since the last gap: wait for the snapshot the resubscription brings
        elif update_id != self.last_update_id[symbol] + 1:
            error = SequenceGapError(f"bybit {symbol}: update id {update_id} does not follow "
                                     f"{self.last_update_id[symbol]}")
            log.warning("%s", error)
            self.forget(symbol)
            client.reject(error, book_hash(symbol))
            return
        self.last_update_id[symbol] = update_id
        super().handle_order_book(client, message)
        self.orderbooks[symbol]["nonce"] = update_id

    def forget(self, symbol: str) -> None:
        self.orderbooks.pop(symbol, None)
        self.last_update_id.pop(symbol, None)
        self.fresh_books.discard(symbol)


class BybitAdapter(LiveResyncAdapter):
    """Bybit via :class:`BybitStream`; one subscribe frame per socket (category) and chunk."""

    def exchange_class(self) -> type:
        return BybitStream

    def subscription_chunks(self, exchange: Any, symbols: list[str]) -> list[list[str]]:
        by_socket: dict[str, list[str]] = {}
        for symbol in symbols:
            by_socket.setdefault(socket_kind(exchange.market(symbol)), []).append(symbol)
        return [chunk for group in by_socket.values() for chunk in chunked(group, SUBSCRIBE_CHUNK)]

    async def subscribe_batch(self, exchange: Any, symbols: list[str], limit: int) -> None:
        """One subscribe frame for ``symbols`` (one socket kind; returns once ccxt registered the topics)."""
        client = exchange.client(await exchange.get_url_by_market_type(symbols[0], False, "watchOrderBook"))
        hashes = [book_hash(symbol) for symbol in symbols]
        await start_batch_watch(exchange.watch_order_book_for_symbols(symbols, limit),
                                lambda: all(h in client.subscriptions for h in hashes))

    async def unsubscribe(self, exchange: Any, symbol: str) -> None:
        """``un_watch_order_book`` of the depth actually subscribed (confirmed, bounded in time)."""
        depth = exchange.book_depth.get(symbol)
        try:
            await asyncio.wait_for(exchange.un_watch_order_book(symbol, {"limit": depth} if depth else {}),
                                   UNSUBSCRIBE_TIMEOUT)
        except Exception as exc:  # best effort: the stream task is already gone
            log.debug("bybit: un_watch_order_book(%s) failed: %r", symbol, exc)
        exchange.forget(symbol)

    async def reset_subscription(self, exchange: Any, symbol: str) -> None:
        """``unsubscribe`` + ``subscribe`` of the topic on the live socket; Bybit answers with a fresh snapshot.

        The subscribe's request id is recorded on ccxt's subscription, so a refusal fails (and frees) it."""
        exchange.forget(symbol)
        client = (exchange.clients or {}).get(await exchange.get_url_by_market_type(symbol, False, "watchOrderBook"))
        subscription = client.subscriptions.get(book_hash(symbol)) if client is not None else None
        if subscription is None or client.closed() or symbol not in exchange.book_depth:
            return  # no live subscription: the next watch subscribes afresh
        topic = f"orderbook.{exchange.book_depth[symbol]}.{exchange.market_id(symbol)}"
        request_id = exchange.request_id()
        client.subscriptions[book_hash(symbol)] = {"id": request_id, "topics": [topic]}
        await client.send({"op": "unsubscribe", "req_id": exchange.request_id(), "args": [topic]})
        await client.send({"op": "subscribe", "req_id": request_id, "args": [topic]})
