"""Deribit: change_id chain checking, batched subscribe frames, snapshot-based resync.

ccxt 4.5.90's deribit handler never checks ``prev_change_id``, applies a ``snapshot`` as deltas onto
whatever book it holds (stale levels survive a reconnect), sets ``nonce`` to the timestamp and raises
inside the message handler on any JSON-RPC error reply (which stops the socket's receive loop).
:class:`DeribitStream` fixes all four in the handler, without ever raising there: an error reply fails
only the watches of the channels its request carried; a broken chain
rejects only that symbol's pending watch with :class:`SequenceGapError` and drops its changes until
the fresh snapshot that the collector's resubscription brings.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

import ccxt
import ccxt.pro

from producer.adapters.base import ExchangeAdapter, GuardedClients
from producer.errors import SequenceGapError

log = logging.getLogger(__name__)

INTERVAL = "100ms"  # ccxt's default book interval ('raw' needs authentication)
MAX_FRAME_BYTES = 30000  # deribit refuses frames >= 32768 B; ccxt refuses >= 32767 B of JSON
FRAME_OVERHEAD_BYTES = 200  # envelope around the channel list, with room for ccxt's extra params


def book_channel(market_id: str) -> str:
    return f"book.{market_id}.{INTERVAL}"


def book_hash(symbol: str, descriptor: str = INTERVAL) -> str:
    """ccxt's message hash for a deribit book watch."""
    return f"book|{symbol}|{descriptor}"


class DeribitStream(GuardedClients, ccxt.pro.deribit):
    """ccxt.pro deribit with a checked change_id chain and error replies routed to their channels."""

    def __init__(self, config: Optional[dict] = None) -> None:
        super().__init__(config or {})
        # symbol -> change_id of the last applied message; a symbol without one drops changes until the
        # snapshot its (re)subscription brings
        self.last_change_id: dict[str, int] = {}
        self.fresh_books: set[str] = set()  # symbols rebuilt from a snapshot since the collector last looked
        self.pending_subscribes: dict[Any, list[tuple[str, str]]] = {}  # request id -> [(channel, hash)]
        self.symbol_of_id: dict[str, str] = {}  # instrument name -> unified symbol (safe_symbol is costly)

    def set_markets(self, markets, currencies=None):
        self.symbol_of_id = {}  # a market reload may map names anew
        return super().set_markets(markets, currencies)

    def watch_multiple(self, url, message_hashes, message=None, subscribe_hashes=None, subscription=None):
        """Remember which channels each subscribe request carries, to route an error reply to them."""
        if isinstance(message, dict) and message.get("method") == "public/subscribe" and subscribe_hashes:
            client = (self.clients or {}).get(url)
            known = client.subscriptions if client is not None else {}
            if any(channel not in known for channel in subscribe_hashes):
                self.pending_subscribes[message.get("id")] = list(zip(subscribe_hashes, message_hashes))
        return super().watch_multiple(url, message_hashes, message, subscribe_hashes, subscription)

    def handle_message(self, client, message):
        if isinstance(message, dict) and "id" in message:
            self._handle_reply(client, message)
        else:
            super().handle_message(client, message)

    def _handle_reply(self, client, message: dict) -> None:
        """A JSON-RPC reply: an error fails exactly the channels of the request it answers."""
        channels = self.pending_subscribes.pop(message.get("id"), None)
        error = message.get("error")
        if error is None:
            return
        failure = ccxt.ExchangeError(f"deribit {self.json(error)}")
        if not channels:
            log.warning("deribit: error reply to request %r: %s", message.get("id"), failure)
            return
        for channel, message_hash in channels:
            client.subscriptions.pop(channel, None)
            client.reject(failure, message_hash)

    def handle_order_book(self, client, message):
        params = message["params"]
        data = params["data"]
        name = data.get("instrument_name")
        symbol = self.symbol_of_id.get(name)
        if symbol is None:
            symbol = self.symbol_of_id[name] = self.safe_symbol(name)
        change_id = data.get("change_id")
        last_change_id = self.last_change_id.get(symbol)
        if data.get("type") == "snapshot":
            self.orderbooks.pop(symbol, None)
            self.fresh_books.add(symbol)
        elif last_change_id is None:
            return
        elif data.get("prev_change_id") != last_change_id:
            descriptor = params["channel"].split(".", 2)[2]
            self.forget(symbol)
            client.reject(
                SequenceGapError(
                    f"deribit {symbol}: prev_change_id {data.get('prev_change_id')} does not follow "
                    f"change_id {last_change_id}"
                ),
                book_hash(symbol, descriptor),
            )
            return
        self.last_change_id[symbol] = change_id
        super().handle_order_book(client, message)
        self.orderbooks[symbol]["nonce"] = change_id

    def forget(self, symbol: str) -> None:
        """Forget ``symbol``'s book and chain; ignore its changes until the next snapshot."""
        self.orderbooks.pop(symbol, None)
        self.last_change_id.pop(symbol, None)
        self.fresh_books.discard(symbol)


class DeribitAdapter(ExchangeAdapter):
    """Deribit via :class:`DeribitStream`; many channels per subscribe frame."""

    batch_subscribe = True

    def exchange_class(self) -> type:
        return DeribitStream

    def watch_limit(self, limit: int) -> Optional[int]:
        return None  # deribit ignores it; the collector trims

    def __init__(self, exchange_id: str) -> None:
        super().__init__(exchange_id)
        self.channels: dict[str, str] = {}  # symbol -> book channel (kept: a market reload may delist it)

    def channel(self, exchange: Any, symbol: str) -> str:
        channel = self.channels.get(symbol)
        if channel is None:
            channel = self.channels[symbol] = book_channel(exchange.market(symbol)["id"])
        return channel

    def subscription_chunks(self, exchange: Any, symbols: list[str]) -> list[list[str]]:
        chunks: list[list[str]] = [[]]
        size = FRAME_OVERHEAD_BYTES
        for symbol in symbols:
            cost = len(self.channel(exchange, symbol)) + 3  # quotes and comma
            if chunks[-1] and size + cost > MAX_FRAME_BYTES:
                chunks.append([])
                size = FRAME_OVERHEAD_BYTES
            chunks[-1].append(symbol)
            size += cost
        return [chunk for chunk in chunks if chunk]

    async def subscribe_batch(self, exchange: Any, symbols: list[str], limit: int) -> None:
        """One ``public/subscribe`` frame for all ``symbols``; returns once ccxt registered the channels,
        so the symbols' own ``watch_order_book`` calls find them subscribed and send nothing."""
        watch = exchange.watch_order_book_for_symbols(symbols)
        # drive the coroutine to its first suspension: by then watch_multiple has registered the
        # channels and scheduled the frame; what remains is waiting for the first book, which nobody needs
        pending = exchange.asyncio_loop.create_task(watch)
        pending.add_done_callback(_consume_outcome)
        client = exchange.client(exchange.urls["api"]["ws"])
        channels = [self.channel(exchange, symbol) for symbol in symbols]
        for _ in range(100):
            if pending.done() or all(channel in client.subscriptions for channel in channels):
                return
            await asyncio.sleep(0)

    async def unsubscribe(self, exchange: Any, symbol: str) -> None:
        """Send ``public/unsubscribe`` (ccxt's un_watch raises NotSupported) and forget the book."""
        exchange.forget(symbol)
        client = (exchange.clients or {}).get(exchange.urls["api"]["ws"])
        if client is None:
            return
        channel = self.channel(exchange, symbol)
        if client.subscriptions.pop(channel, None) is None or client.closed():
            return
        request = {"jsonrpc": "2.0", "method": "public/unsubscribe", "params": {"channels": [channel]},
                   "id": exchange.request_id()}
        try:
            await client.send(request)
        except Exception as exc:  # the socket died meanwhile: nothing left to unsubscribe from
            log.debug("deribit: unsubscribe %s not sent: %r", channel, exc)

    async def reset_subscription(self, exchange: Any, symbol: str) -> None:
        """Unsubscribe the channel; the collector's resubscription then brings a fresh snapshot."""
        await self.unsubscribe(exchange, symbol)


def _consume_outcome(task: Any) -> None:
    """The batch watch's own result is never used; retrieve its exception so asyncio does not log it."""
    if not task.cancelled():
        task.exception()
