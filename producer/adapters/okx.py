"""OKX: checksum-verified books, gap resync on the live socket, batched subscribe frames.

ccxt 4.5.90's okx handler keeps the ``books`` channel's ``prevSeqId`` -> ``seqId`` chain (a break raises
InvalidNonce and its next watch unsubscribes and resubscribes) but never verifies OKX's crc32
``checksum``, so a corrupted book would be served silently; and an error event that names no request id
(a refused subscribe) rejects every watch on the socket without freeing the failed channels.

:class:`OkxStream` verifies every ``books`` message against its checksum over the exact strings OKX sent
(a shadow of the level strings is kept per symbol), and turns a broken chain or a checksum mismatch into
a :class:`SequenceGapError` for that symbol alone, never raising in the handler. The adapter's
:meth:`OkxAdapter.reset_subscription` then sends ``unsubscribe`` + ``subscribe`` on the same socket; the
fresh snapshot is flagged as a resync. A refused subscribe fails (and frees) exactly the channels of
the request OKX quotes back in the error.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from typing import Any, Optional

import ccxt
import ccxt.pro

from producer.adapters.base import GuardedClients
from producer.adapters.batch import chunked, start_batch_watch
from producer.adapters.live import LiveResyncAdapter
from producer.errors import SequenceGapError

log = logging.getLogger(__name__)

CHANNEL = "books"  # 400 levels, snapshot + checksummed updates; the public channel ccxt uses by default
CHECKSUM_DEPTH = 25  # levels per side in OKX's checksum
SUBSCRIBE_CHUNK = 200  # channels per subscribe frame (~11 KB; OKX accepts frames up to 64 KB)
ILLEGAL_REQUEST = "Illegal request: "


class ChecksumMismatchError(SequenceGapError):
    """The book after an update does not match OKX's checksum of it; the symbol is resynced."""


def book_hash(symbol: str) -> str:
    """ccxt's message hash of an okx book watch on :data:`CHANNEL`."""
    return f"{CHANNEL}:{symbol}"


def okx_checksum(bids: list[str], asks: list[str]) -> int:
    """OKX's checksum of the best levels given as ``"price:size"`` strings (best first): crc32 of the
    levels interleaved bid, ask, bid, ask ... (a side that runs out stops contributing), as a signed int32."""
    bids, asks = bids[:CHECKSUM_DEPTH], asks[:CHECKSUM_DEPTH]
    paired = min(len(bids), len(asks))
    parts = [""] * (2 * paired)
    parts[0::2], parts[1::2] = bids[:paired], asks[:paired]
    parts += bids[paired:] or asks[paired:]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


LevelTexts = tuple[dict[float, str], dict[float, str]]  # (bids, asks): price -> "price:size" as OKX sent them


def apply_level_texts(texts: LevelTexts, message: dict) -> None:
    """Update level strings with a message's levels (size ``0`` deletes)."""
    for side, key in zip(texts, ("bids", "asks")):
        for level in message.get(key) or ():
            price, size = level[0], level[1]
            if float(size) == 0:
                side.pop(float(price), None)
            else:
                side[float(price)] = f"{price}:{size}"


def checksum_of(orderbook: Any, texts: LevelTexts) -> int:
    """OKX's checksum of ccxt's book: its best levels, written as OKX wrote them."""
    bid_text, ask_text = texts[0].get, texts[1].get
    return okx_checksum([bid_text(level[0], "") for level in orderbook["bids"][:CHECKSUM_DEPTH]],
                        [ask_text(level[0], "") for level in orderbook["asks"][:CHECKSUM_DEPTH]])


class OkxStream(GuardedClients, ccxt.pro.okx):
    """ccxt.pro okx with verified checksums and per-symbol resync."""

    def __init__(self, config: Optional[dict] = None) -> None:
        super().__init__(config or {})
        # symbol -> its level strings exactly as OKX sent them (what the checksum covers)
        self.level_texts: dict[str, LevelTexts] = {}
        self.fresh_books: set[str] = set()  # symbols rebuilt from a snapshot since the collector last looked
        self.resync_unsubscribes: Counter[str] = Counter()  # symbols whose next unsubscribe ack is a resync's
        self.checksum_failures = 0

    # -- books -----------------------------------------------------------------------------------------------

    def handle_order_book_message(self, client, message, orderbook, messageHash, market=None):
        """Apply one ``books`` snapshot or update, then check the chain and the checksum (never raises)."""
        symbol = orderbook["symbol"]
        snapshot = orderbook["nonce"] is None  # ccxt hands a snapshot a brand-new book
        previous = self.safe_integer(message, "prevSeqId")
        if not snapshot and previous != orderbook["nonce"]:
            self.fail_book(client, symbol, messageHash, SequenceGapError(
                f"okx {symbol}: prevSeqId {previous} does not follow seqId {orderbook['nonce']}"))
            return orderbook
        super().handle_order_book_message(client, message, orderbook, messageHash, market)
        expected = self.safe_integer(message, "checksum")
        if snapshot:  # level strings are kept only for books that carry checksums (OKX sends 0 since retiring it)
            self.level_texts.pop(symbol, None)
            if expected:
                self.level_texts[symbol] = ({}, {})
        texts = self.level_texts.get(symbol)
        if texts is not None:
            apply_level_texts(texts, message)
            if expected and expected != checksum_of(orderbook, texts):
                self.checksum_failures += 1
                self.fail_book(client, symbol, messageHash, ChecksumMismatchError(
                    f"okx {symbol}: book checksum {checksum_of(orderbook, texts)} != {expected} "
                    f"at seqId {orderbook['nonce']}"))
                return orderbook
        if snapshot:
            self.fresh_books.add(symbol)
            self.resync_unsubscribes.pop(symbol, None)  # OKX answered in order: no resync ack is still due
        return orderbook

    def fail_book(self, client, symbol: str, message_hash: str, error: SequenceGapError) -> None:
        """Drop ``symbol``'s book (ccxt ignores its updates until a snapshot) and fail its watch."""
        log.warning("%s", error)
        self.forget(symbol)
        client.reject(error, message_hash)

    def forget(self, symbol: str) -> None:
        self.orderbooks.pop(symbol, None)
        self.level_texts.pop(symbol, None)
        self.fresh_books.discard(symbol)

    # -- subscription replies ---------------------------------------------------------------------------------

    def handle_unsubscription(self, client, message):
        """Swallow the ack of a resync's unsubscribe: the channel is subscribed again already."""
        arg = self.safe_dict(message, "arg", {})
        symbol = self.safe_symbol(self.safe_string(arg, "instId"))
        if arg.get("channel") == CHANNEL and self.resync_unsubscribes[symbol] > 0:
            self.resync_unsubscribes[symbol] -= 1
            return
        super().handle_unsubscription(client, message)

    def handle_error_message(self, client, message):
        """An error that quotes a subscribe request fails and frees exactly that request's channels."""
        if isinstance(message, dict) and message.get("event") == "error" and self._fail_subscribe(client, message):
            return False
        return super().handle_error_message(client, message)

    def _fail_subscribe(self, client, message: dict) -> bool:
        text = message.get("msg") or ""
        if not text.startswith(ILLEGAL_REQUEST):
            return False
        try:
            request = self.parse_json(text[len(ILLEGAL_REQUEST):])
        except Exception:  # not a quoted request after all: let ccxt's generic handling decide
            return False
        if not isinstance(request, dict) or request.get("op") != "subscribe" or not request.get("args"):
            return False
        error_class = self.exceptions["exact"].get(str(message.get("code")), ccxt.ExchangeError)
        error = error_class(f"okx {self.json(message)}")
        for arg in request["args"]:
            if isinstance(arg, dict):
                message_hash = f"{arg.get('channel')}:{self.safe_symbol(arg.get('instId'))}"
                client.subscriptions.pop(message_hash, None)
                client.reject(error, message_hash)
        return True


class OkxAdapter(LiveResyncAdapter):
    """OKX via :class:`OkxStream` on the ``books`` channel; many channels per subscribe frame."""

    def exchange_class(self) -> type:
        return OkxStream

    def watch_limit(self, limit: int) -> Optional[int]:
        """Always the ``books`` channel (ccxt maps a limit to books5 / bbo-tbt, unchecked, or to
        books50-l2-tbt, which needs a login); the collector trims to the limit."""
        return None

    def subscription_chunks(self, exchange: Any, symbols: list[str]) -> list[list[str]]:
        return chunked(symbols, SUBSCRIBE_CHUNK)

    async def subscribe_batch(self, exchange: Any, symbols: list[str], limit: int) -> None:
        """One subscribe frame for all ``symbols`` (returns once ccxt registered the channels)."""
        client = exchange.client(exchange.get_url(CHANNEL, "public"))
        hashes = [book_hash(symbol) for symbol in symbols]
        await start_batch_watch(exchange.watch_order_book_for_symbols(symbols),
                                lambda: all(h in client.subscriptions for h in hashes))

    async def reset_subscription(self, exchange: Any, symbol: str) -> None:
        """``unsubscribe`` + ``subscribe`` on the live socket: OKX answers with a fresh snapshot, while ccxt
        keeps the channel registered (its watch just waits for that snapshot)."""
        exchange.forget(symbol)
        client = (exchange.clients or {}).get(exchange.get_url(CHANNEL, "public"))
        if client is None or book_hash(symbol) not in client.subscriptions or client.closed():
            return  # no live subscription: the next watch subscribes afresh
        arg = [{"channel": CHANNEL, "instId": exchange.market_id(symbol)}]
        exchange.resync_unsubscribes[symbol] += 1
        await client.send({"op": "unsubscribe", "args": arg})
        await client.send({"op": "subscribe", "args": arg})
