"""Binance USDⓈ-M: REST-snapshot depth, batched SUBSCRIBE frames on few connections, gap -> SequenceGapError.

ccxt 4.5.90's binanceusdm syncs books the way Binance documents it: SUBSCRIBE ``<id>@depth@100ms``, and on
the ack fetch ``GET /fapi/v1/depth?limit=<watch limit>`` (rate-limited: weight 2 for limits up to 50 -> 0.1 s
of ccxt's limiter each, 20 for 1000 -> 1 s) and replay the buffered deltas. Three traps this adapter handles:

* ccxt opens one WebSocket per distinct symbol *list* (up to 50): a symbol watched alone after being
  subscribed in a batch would subscribe again on a new connection. Each symbol gets a home connection
  (``stream``), and every list hash ccxt may compute for it is pinned to that home.
* A broken ``pu`` chain raises ChecksumError inside ccxt; :class:`BinanceUsdmStream` reports it as
  :class:`SequenceGapError` so the collector counts a resync and resubscribes at once.
* An error reply to SUBSCRIBE rejects the watch but leaves ccxt's subscription in place (the next watch
  would wait forever); :meth:`BinanceUsdmAdapter.forget_book` drops it so the retry subscribes again.
"""

from __future__ import annotations

from typing import Any, Optional

import ccxt.pro

from producer.adapters.base import ExchangeAdapter, GuardedClients
from producer.adapters.batch import start_batch_watch
from producer.errors import SequenceGapError

#: valid ``limit`` values of ``GET /fapi/v1/depth``; 5..50 all cost request weight 2
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
MIN_SNAPSHOT_DEPTH = 50  # as cheap as 5..20, and leaves room for levels moving into view
SYMBOLS_PER_STREAM = 200  # ccxt's and Binance's limit of streams per connection
STREAM_TYPE = "linear"


def book_hash(symbol: str) -> str:
    """ccxt's message (and subscription) hash of a binance book."""
    return "orderbook::" + symbol


def list_hash(symbols: list[str]) -> str:
    """ccxt's key of the connection a ``watch_order_book_for_symbols(symbols)`` call uses."""
    return "multipleOrderbook::" + ",".join(symbols)


class BinanceUsdmStream(GuardedClients, ccxt.pro.binanceusdm):
    """ccxt.pro binanceusdm reporting a broken update-id chain as :class:`SequenceGapError`."""

    def handle_order_book(self, client, message):
        symbol = self.safe_market(message.get("s"), None, None, "swap")["symbol"]
        book = self.orderbooks.get(symbol)
        nonce = book.get("nonce") if book is not None else None
        u, first, previous = message.get("u"), message.get("U"), message.get("pu")
        if nonce is not None and None not in (u, first, previous) and u >= nonce and first > nonce \
                and previous != nonce:
            # the same condition ccxt raises ChecksumError on; report it as what it is
            del self.orderbooks[symbol]
            client.subscriptions.pop(book_hash(symbol), None)
            client.reject(SequenceGapError(f"binanceusdm {symbol}: pu {previous} does not follow u {nonce}"),
                          book_hash(symbol))
            return
        super().handle_order_book(client, message)


class BinanceUsdmAdapter(ExchangeAdapter):
    """Binance USDⓈ-M via :class:`BinanceUsdmStream`; up to 200 symbols per SUBSCRIBE frame and connection."""

    batch_subscribe = True

    def __init__(self, exchange_id: str) -> None:
        super().__init__(exchange_id)
        self.home_streams: dict[str, str] = {}  # symbol -> index of the connection it lives on

    def exchange_class(self) -> type:
        return BinanceUsdmStream

    def watch_limit(self, limit: int) -> Optional[int]:
        """The REST snapshot depth: the smallest valid Binance limit >= ``limit`` (at least 50)."""
        wanted = max(limit, MIN_SNAPSHOT_DEPTH)
        return next((depth for depth in DEPTH_LIMITS if depth >= wanted), DEPTH_LIMITS[-1])

    def subscription_chunks(self, exchange: Any, symbols: list[str]) -> list[list[str]]:
        """Group by home connection and market type (ccxt refuses mixed swap/future lists)."""
        self._assign_homes(exchange, symbols)
        chunks: dict[tuple[str, str], list[str]] = {}
        for symbol in symbols:
            chunks.setdefault((self.home_streams[symbol], exchange.market(symbol)["type"]), []).append(symbol)
        return list(chunks.values())

    def _assign_homes(self, exchange: Any, symbols: list[str]) -> None:
        """Give new symbols a home connection (filling each up to 200) and pin ccxt's hashes to it."""
        load: dict[str, int] = {}
        for stream in self.home_streams.values():
            load[stream] = load.get(stream, 0) + 1
        for symbol in symbols:
            if symbol not in self.home_streams:
                stream = next((s for s, n in load.items() if n < SYMBOLS_PER_STREAM), str(len(load)))
                load[stream] = load.get(stream, 0) + 1
                self.home_streams[symbol] = stream
            self._pin(exchange, [symbol])

    def _pin(self, exchange: Any, symbols: list[str]) -> None:
        """Make ccxt send ``symbols`` (one list hash) over their common home connection."""
        pins = exchange.options.setdefault("streamBySubscriptionsHash", {})
        pins[list_hash(symbols)] = self.home_streams[symbols[0]]

    async def subscribe_batch(self, exchange: Any, symbols: list[str], limit: int) -> None:
        """One SUBSCRIBE frame for ``symbols`` (one home, one market type); returns once ccxt registered the
        subscriptions, so each symbol's own ``watch_order_book`` finds them and sends nothing."""
        self._assign_homes(exchange, symbols)
        self._pin(exchange, symbols)
        url_hashes = [book_hash(symbol) for symbol in symbols]

        def registered() -> bool:
            return any(all(h in client.subscriptions for h in url_hashes) for client in exchange.clients.values())

        await start_batch_watch(exchange.watch_order_book_for_symbols(symbols, self.watch_limit(limit)), registered)

    async def reset_subscription(self, exchange: Any, symbol: str) -> None:
        """Drop the local book and subscription; the resubscription on the same connection brings a fresh
        REST snapshot (Binance acknowledges a repeated SUBSCRIBE)."""
        self.forget_book(exchange, symbol)

    def forget_book(self, exchange: Any, symbol: str) -> None:
        exchange.orderbooks.pop(symbol, None)
        for client in list((exchange.clients or {}).values()):
            client.subscriptions.pop(book_hash(symbol), None)

