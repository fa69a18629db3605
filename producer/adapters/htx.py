"""HTX (Huobi) linear swaps and futures: version-chain checking and unsubscribe-based resync.

ccxt 4.5.90's htx subscribes ``market.<id>.depth.size_<N>.high_freq`` (``data_type: incremental``; N is the
watch limit and must be 5, 20, 150 or 400) on ``/linear-swap-ws``, resets the book on the ``snapshot`` push and
applies an ``update`` only if its ``version`` is the book's + 1 — any other update is silently ignored and the
watch keeps returning the frozen book. :class:`HtxStream` turns a broken chain into :class:`SequenceGapError`
for that symbol's watch and drops its updates until the fresh snapshot of the resubscription. No REST call is
involved: each subscription's first push is the snapshot, so hundreds of symbols subscribe in one round trip.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import ccxt.pro

from common.config import StreamConfig
from producer.adapters.base import ExchangeAdapter, GuardedClients
from producer.errors import SequenceGapError

log = logging.getLogger(__name__)

DEPTHS = (5, 20, 150, 400)  # the sizes of HTX's incremental depth channels


def depth_channel(market_id: str, depth: int) -> str:
    """HTX's incremental depth channel (also ccxt's message and subscription hash)."""
    return f"market.{market_id}.depth.size_{depth}.high_freq"


class HtxStream(GuardedClients, ccxt.pro.htx):
    """ccxt.pro htx with a checked ``version`` chain on contract books."""

    def handle_order_book(self, client, message):
        channel, tick = message.get("ch"), message.get("tick")
        if isinstance(channel, str) and isinstance(tick, dict) and tick.get("event") == "update":
            symbol = self.safe_symbol(channel.split(".")[1])
            book = self.orderbooks.get(symbol)
            nonce = book.get("nonce") if book is not None else None
            if nonce is None:
                return  # resyncing: wait for the snapshot the resubscription brings
            if tick.get("version") != nonce + 1:
                del self.orderbooks[symbol]
                client.reject(SequenceGapError(
                    f"htx {symbol}: version {tick.get('version')} does not follow {nonce}"), channel)
                return
        super().handle_order_book(client, message)


class HtxAdapter(ExchangeAdapter):
    """HTX via :class:`HtxStream`; the channel size is the smallest HTX depth >= orderbook_limit."""

    def exchange_class(self) -> type:
        return HtxStream

    def create_exchange(self, config: StreamConfig) -> Any:
        exchange = super().create_exchange(config)
        # ccxt's un_watch_order_book names the channel by this option, not by the watch's limit
        exchange.options["watchOrderBook"] = {**exchange.options.get("watchOrderBook", {}),
                                              "depth": self.watch_limit(config.orderbook_limit)}
        return exchange

    def watch_limit(self, limit: int) -> Optional[int]:
        return next((depth for depth in DEPTHS if depth >= limit), DEPTHS[-1])

    async def unsubscribe(self, exchange: Any, symbol: str) -> None:
        """Send ``unsub`` without waiting for the ack (a stalled server never sends it) and forget the book;
        a later ``sub`` on the same socket is processed after it and brings a fresh snapshot."""
        self.forget_book(exchange, symbol)
        market = exchange.market(symbol)
        url = exchange.get_url_by_market_type(market["type"], market["linear"], False, True)
        client = (exchange.clients or {}).get(url)
        channel = depth_channel(market["id"], exchange.options["watchOrderBook"]["depth"])
        if client is None or client.subscriptions.pop(channel, None) is None or client.closed():
            return
        try:
            await client.send({"unsub": channel, "id": exchange.request_id()})
        except Exception as exc:  # the socket died meanwhile: nothing left to unsubscribe from
            log.debug("htx: unsubscribe %s not sent: %r", channel, exc)

    async def reset_subscription(self, exchange: Any, symbol: str) -> None:
        await self.unsubscribe(exchange, symbol)
