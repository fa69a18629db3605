"""``CCXTProCollector``: real-time order books of one exchange through ccxt.pro.

Every subscribed symbol runs its own task (``watch_order_book`` in a loop), so one symbol's errors,
backoff or slow consumer never hold up another. Subscriptions are sent in batches where the exchange
allows (one frame for hundreds of channels). Exchange-specific fixes live in :mod:`producer.adapters`.

Each emitted snapshot is trimmed to ``orderbook_limit`` levels and packed once into the wire format's
float64 blocks (:class:`~common.model.PackedSnapshot`): that compact form goes to the bounded history and
to the packed listeners (the pipeline's publisher encodes it without touching a level again). Then the
full :class:`OrderbookSnapshot` is built, stored as the symbol's latest book and handed to the other
listeners synchronously and to the user's ``on_orderbook_update`` (see :mod:`producer.callbacks`). Nobody
needing it (the producer's case: only the publisher listens), the packed form is stored as the latest book
and unpacked when first read.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict, deque
from collections.abc import Iterator, MutableMapping
from typing import Any, Callable, Iterable, Optional, Union

import ccxt
import pandas as pd

from common.config import ConfigError, StreamConfig
from common.markets import MarketInfo
from common.codec import pack_levels
from common.model import OrderbookSnapshot, PackedSnapshot, ms_to_datetime
from producer.adapters import adapter_for
from producer.batcher import SubscriptionBatcher
from producer.callbacks import CallbackRunner
from producer.catalog import FUTURE_TYPES, OPTION_TYPES, MarketCatalog
from producer.errors import (
    CollectorNotStartedError,
    ExchangeUnavailableError,
    SequenceGapError,
    StallError,
    SymbolFailedError,
)
from producer.stream_state import (
    FAILED,
    PHASE_BACKOFF,
    PHASE_SUBSCRIBE,
    PHASE_WATCH,
    RECONNECTING,
    STREAMING,
    SUBSCRIBING,
    SymbolState,
)

log = logging.getLogger(__name__)

Listener = Callable[[OrderbookSnapshot], None]
PackedListener = Callable[[PackedSnapshot], None]
Symbols = Union[str, Iterable[str]]

START_TIMEOUT = 30.0  # seconds start() may spend loading markets
MAX_BACKOFF = 60.0  # cap of the exponential reconnect backoff, seconds
SILENCE_FACTOR = 1.5  # a socket is silent after this many stall_timeouts without any frame
STOP_TIMEOUT = 10.0  # seconds stop() lets queued callbacks finish
DATAFRAME_COLUMNS = [
    "exchange", "symbol", "type", "timestamp", "receive_time", "exchange_seq", "seq",
    "best_bid", "best_bid_size", "best_ask", "best_ask_size", "mid_price", "spread",
    "bid_levels", "ask_levels", "base", "expiry", "strike", "option_type",
]


class CCXTProCollector:
    """Streams order books of many futures, perpetuals and options of one exchange.

    ``orderbooks`` maps unified symbol -> latest snapshot; ``snapshot_history`` maps unified symbol
    -> bounded deque of past snapshots in their compact form, :class:`~common.model.PackedSnapshot`
    (``store_snapshots`` / ``max_snapshots_per_symbol``; clearing it is allowed;
    :meth:`get_snapshot_history` returns them as :class:`OrderbookSnapshot`). Lookups accept unified
    symbols and exchange-native ids.
    """

    def __init__(self, config: StreamConfig) -> None:
        self.config = config
        self.exchange_id = config.exchange_id
        self.adapter = adapter_for(config.exchange_id)
        self.exchange: Any = None
        self._latest: dict[str, Union[OrderbookSnapshot, PackedSnapshot]] = {}
        self.orderbooks = LatestBooks(self._latest)
        self.snapshot_history: defaultdict[str, deque[PackedSnapshot]] = defaultdict(self._new_history)
        self.subscribed_futures: set[str] = set()
        self.subscribed_options: set[str] = set()
        #: first ``seq`` of a symbol is seq_origin + 1 (a producer sets it to the start time in µs so that
        #: seq keeps growing across restarts)
        self.seq_origin = 0
        self._catalog: Optional[MarketCatalog] = None
        self._streams: dict[str, SymbolState] = {}
        self._last_seq: dict[str, int] = {}  # seq of unsubscribed symbols: a resubscription continues it
        self._listeners: list[Listener] = []
        self._packed_listeners: list[PackedListener] = []
        self._callbacks = CallbackRunner(config.on_orderbook_update, config.on_error, config.callback_timeout)
        self._batcher: Optional[SubscriptionBatcher] = None
        self._watchdog: Optional[asyncio.Task] = None

    def __repr__(self) -> str:
        return f"<CCXTProCollector {self.exchange_id} symbols={len(self._streams)}>"

    # -- configuration shortcuts (the guide names them) --------------------------------------------------

    @property
    def orderbook_limit(self) -> int:
        return self.config.orderbook_limit

    @property
    def reconnect_delay(self) -> float:
        return self.config.reconnect_delay

    @property
    def max_reconnect_attempts(self) -> int:
        return self.config.max_reconnect_attempts

    @property
    def is_running(self) -> bool:
        return self._catalog is not None

    def _new_history(self) -> deque:
        return deque(maxlen=self.config.max_snapshots_per_symbol)

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Create the ccxt.pro exchange (sandbox if ``testnet``) and load its markets.

        Raises :class:`ExchangeUnavailableError` if the markets cannot be loaded within ``timeout`` s,
        :class:`~common.config.ConfigError` if ``testnet`` is not supported by the exchange.
        """
        if self.is_running:
            return
        try:
            exchange = self.adapter.create_exchange(self.config)
        except ccxt.NotSupported as exc:
            raise ConfigError(f"{self.exchange_id}: testnet is not supported ({exc})") from None
        # ping at least every stall_timeout, so a live but quiet socket is never silent for longer
        keepalive_ms = min(exchange.streaming.get("keepAlive") or 30000, self.config.stall_timeout * 1000)
        exchange.streaming = {**exchange.streaming, "keepAlive": max(keepalive_ms, 100)}
        try:
            await asyncio.wait_for(exchange.load_markets(), timeout)
        except (ccxt.BaseError, OSError, asyncio.TimeoutError) as exc:
            await exchange.close()
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ExchangeUnavailableError(f"{self.exchange_id}: cannot load markets: {reason}") from exc
        except BaseException:
            await exchange.close()
            raise
        self.exchange = exchange
        self._catalog = MarketCatalog(self.exchange_id, exchange.markets)
        if self.adapter.batch_subscribe:
            self._batcher = SubscriptionBatcher(exchange, self.adapter, self.config.orderbook_limit)
        self._callbacks.start()
        self._watchdog = asyncio.ensure_future(self._watch_stalls())

    async def refresh_markets(self) -> None:
        """Reload the exchange's markets (new listings, expiries); streams are not interrupted."""
        catalog = self._require_catalog()
        markets = await self.exchange.load_markets(reload=True)
        self._catalog = MarketCatalog(catalog.exchange_id, markets)

    async def stop(self) -> None:
        """Stop every stream, let queued callbacks finish, close the exchange's connections."""
        if not self.is_running:
            return
        tasks = [state.task for state in self._streams.values() if state.task is not None]
        if self._watchdog is not None:
            tasks.append(self._watchdog)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._batcher is not None:
            self._batcher.close()
        await self._callbacks.close(STOP_TIMEOUT)
        await self.exchange.close()
        self._catalog = None
        self._watchdog = None
        self._batcher = None

    async def __aenter__(self) -> "CCXTProCollector":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    # -- subscriptions --------------------------------------------------------------------------------------

    async def subscribe_futures(self, symbols: Symbols) -> list[str]:
        """Stream futures and perpetual swaps (unified symbols or native ids); returns the unified symbols.

        Raises :class:`UnknownSymbolError` (a ``ccxt.BadSymbol`` and ``ValueError``) naming close matches,
        or :class:`MarketTypeError` for an option; nothing is subscribed then.
        """
        return await self._subscribe(symbols, FUTURE_TYPES, "subscribe_futures")

    async def subscribe_options(self, symbols: Symbols) -> list[str]:
        """Stream options (unified symbols or native ids); errors as :meth:`subscribe_futures`."""
        return await self._subscribe(symbols, OPTION_TYPES, "subscribe_options")

    async def subscribe_all_futures(self, base_currency: Optional[str] = None) -> list[str]:
        """Stream every active future and perpetual, optionally of one base currency."""
        return await self.subscribe_futures(self.get_available_futures(base_currency))

    async def subscribe_all_options(self, **filters: Any) -> list[str]:
        """Stream every active option matching the filters of :meth:`get_available_options`."""
        return await self.subscribe_options(self.get_available_options(**filters))

    async def _subscribe(self, symbols: Symbols, kinds: tuple[str, ...], method: str) -> list[str]:
        catalog = self._require_catalog()
        requested = [symbols] if isinstance(symbols, str) else list(symbols)
        unified = catalog.resolve_kind(requested, kinds, method)
        new = [symbol for symbol in unified if symbol not in self._streams]
        for symbol in new:
            market_type = catalog.market_type(symbol)
            self._streams[symbol] = SymbolState(symbol, market_type, seq=self._last_seq.get(symbol, self.seq_origin))
            (self.subscribed_options if market_type in OPTION_TYPES else self.subscribed_futures).add(symbol)
        if new and self._batcher is not None:
            await self._batcher.subscribe(new)
        for symbol in new:
            state = self._streams[symbol]
            state.task = asyncio.ensure_future(self._stream(state, subscribed=self._batcher is not None))
        return unified

    async def unsubscribe(self, symbol: str) -> None:
        """Stop streaming ``symbol``; its latest book is dropped, its history kept."""
        unified = symbol if symbol in self._streams else self._require_catalog().resolve(symbol)
        state = self._streams.pop(unified, None)
        if state is None:
            return
        if state.task is not None:
            state.task.cancel()
            await asyncio.gather(state.task, return_exceptions=True)
        self._last_seq[unified] = state.seq
        self.subscribed_futures.discard(unified)
        self.subscribed_options.discard(unified)
        if unified in self.orderbooks:
            del self.orderbooks[unified]
        await self.adapter.unsubscribe(self.exchange, unified)

    def subscribed_symbols(self) -> list[str]:
        return list(self._streams)

    # -- listeners (the pipeline's sinks) ------------------------------------------------------------------

    def add_listener(self, listener: Union[Listener, PackedListener], *, packed: bool = False) -> None:
        """Call ``listener(snapshot)`` synchronously for every emitted snapshot, before user callbacks.

        With ``packed=True`` it receives the :class:`~common.model.PackedSnapshot` instead, before the full
        snapshot is built (the publisher's fast path: levels already in the wire layout). A listener runs
        inside the symbol's task and must not block; an exception is logged and ignored.
        """
        (self._packed_listeners if packed else self._listeners).append(listener)

    def remove_listener(self, listener: Union[Listener, PackedListener]) -> None:
        (self._packed_listeners if listener in self._packed_listeners else self._listeners).remove(listener)

    # -- the per-symbol stream -------------------------------------------------------------------------------

    async def _stream(self, state: SymbolState, subscribed: bool) -> None:
        exchange, symbol = self.exchange, state.symbol
        limit = self.adapter.watch_limit(self.config.orderbook_limit)
        while True:
            try:
                if not subscribed:
                    state.phase = PHASE_SUBSCRIBE
                    if self._batcher is not None:
                        await self._batcher.request(symbol)
                    subscribed = True
                    state.progress_at = time.monotonic()
                state.phase = PHASE_WATCH
                book = await exchange.watch_order_book(symbol, limit)
                self._emit(state, book)
                continue
            except asyncio.CancelledError:
                error = self._interruption(state)
            except Exception as exc:
                error = exc
            subscribed = False
            if not await self._recover(state, error):
                return

    def _interruption(self, state: SymbolState) -> BaseException:
        """Classify a CancelledError: the watchdog's interrupt, ccxt cancelling the watch (its socket
        was closed) — both returned as errors to recover from — or a real cancellation (re-raised)."""
        task = asyncio.current_task()
        if not task.cancelling():
            return ccxt.NetworkError(f"{state.symbol}: the connection was closed")
        interrupt, state.interrupt = state.interrupt, None
        if interrupt is not None and task.uncancel() == 0:
            return interrupt
        raise asyncio.CancelledError

    def _emit(self, state: SymbolState, book: dict) -> None:
        """Turn ccxt's book into a snapshot and hand it out (the hot path: keep it lean)."""
        receive_ns = time.time_ns()
        limit = self.config.orderbook_limit
        symbol = state.symbol
        timestamp = book.get("timestamp")
        bids, asks = book["bids"][:limit], book["asks"][:limit]
        state.seq += 1
        state.updates += 1
        packed = PackedSnapshot(
            symbol,
            self.exchange_id,
            state.market_type,
            timestamp if timestamp is not None else receive_ns // 1_000_000,
            receive_ns,
            self.adapter.exchange_seq(book),
            state.seq,
            state.resync_next | self.adapter.take_fresh(self.exchange, symbol),
            pack_levels(bids),
            pack_levels(asks),
        )
        state.resync_next = False
        state.consecutive_failures = 0
        state.state = STREAMING
        state.last_update_at = state.progress_at = time.monotonic()
        if self.config.store_snapshots:
            self.snapshot_history[symbol].append(packed)
        _notify(self._packed_listeners, packed)
        if not (self._listeners or self._callbacks.has_update_callback):
            self._latest[symbol] = packed
            return
        snapshot = OrderbookSnapshot(
            symbol, ms_to_datetime(packed.timestamp_ms), _copy_levels(bids), _copy_levels(asks), self.exchange_id,
            state.market_type, receive_ns, packed.exchange_seq, packed.seq, packed.resync,
        )
        self._latest[symbol] = snapshot
        _notify(self._listeners, snapshot)
        if self._callbacks.has_update_callback:
            self._callbacks.update(snapshot)

    async def _recover(self, state: SymbolState, error: BaseException) -> bool:
        """Report ``error``, give up after too many consecutive failures, else reset and back off.

        Returns False if the symbol is given up.
        """
        symbol = state.symbol
        gap = isinstance(error, SequenceGapError)
        state.errors += 1
        state.consecutive_failures += 1
        state.last_error = f"{type(error).__name__}: {error}"
        state.resync_next = True
        if gap:
            state.resyncs += 1
        else:
            state.reconnects += 1
        log.warning("%s %s: %s (failure %d)", self.exchange_id, symbol, state.last_error, state.consecutive_failures)
        self._callbacks.error(symbol, error)
        if state.consecutive_failures >= self.config.max_reconnect_attempts:
            state.state = FAILED
            failure = SymbolFailedError(
                f"{self.exchange_id} {symbol}: gave up after {state.consecutive_failures} consecutive failures; "
                f"last: {state.last_error}"
            )
            state.last_error = f"{type(failure).__name__}: {failure}"
            self._callbacks.error(symbol, failure)
            await self._quietly(self.adapter.unsubscribe(self.exchange, symbol))
            return False
        state.state = RECONNECTING
        state.phase = PHASE_BACKOFF
        if isinstance(error, StallError):
            await self._quietly(self.adapter.recover_stall(self.exchange, symbol, self.config.stall_timeout))
        elif gap:
            await self._quietly(self.adapter.reset_subscription(self.exchange, symbol))
        else:
            self.adapter.forget_book(self.exchange, symbol)
        await asyncio.sleep(self._backoff(state.consecutive_failures, immediate=gap))
        state.state = SUBSCRIBING
        return True

    def _backoff(self, failures: int, immediate: bool) -> float:
        """reconnect_delay * 2^(failures-1), capped, with ±20% jitter; 0 for the first resync after a gap."""
        if immediate and failures == 1:
            return 0.0
        delay = min(self.config.reconnect_delay * 2 ** (failures - 1), MAX_BACKOFF)
        return delay * random.uniform(0.8, 1.2)

    async def _quietly(self, recovery: Any) -> None:
        try:
            await recovery
        except Exception as exc:  # recovery is best effort; the resubscription that follows decides
            log.debug("%s: recovery step failed: %r", self.exchange_id, exc)

    async def _watch_stalls(self) -> None:
        """Interrupt symbols that got no update for ``stall_timeout`` s while a socket went silent (nothing,
        not even a pong, for SILENCE_FACTOR x stall_timeout; ccxt's own keepalive gives up only after 2-3x),
        or that never got a book since their (re)subscription. A quiet book on a live socket is no stall."""
        timeout = self.config.stall_timeout
        period = min(max(timeout / 4, 0.05), 1.0)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            silent = self._silent_sockets(timeout * SILENCE_FACTOR)
            for state in list(self._streams.values()):
                waiting = now - state.progress_at
                if (
                    state.phase == PHASE_WATCH
                    and waiting > timeout
                    and state.interrupt is None
                    and state.task is not None
                    and (silent or state.state != STREAMING)
                ):
                    state.interrupt = StallError(f"{self.exchange_id} {state.symbol}: no update for {waiting:.1f} s")
                    state.task.cancel()

    def _silent_sockets(self, timeout: float) -> bool:
        now_ms = self.exchange.milliseconds()
        for client in (self.exchange.clients or {}).values():
            heard = client.last_message_at or client.connectionStarted or now_ms
            if now_ms - heard > timeout * 1000:
                return True
        return False

    # -- data access ---------------------------------------------------------------------------------------

    def get_latest_orderbook(self, symbol: str) -> Optional[OrderbookSnapshot]:
        """The latest snapshot of ``symbol`` (unified or native id), None before its first update.

        Raises :class:`UnknownSymbolError` for a symbol the exchange does not list.
        """
        book = self.orderbooks.get(symbol)
        if book is not None:
            return book
        return self.orderbooks.get(self._require_catalog().resolve(symbol))

    def get_all_orderbooks(self) -> dict[str, OrderbookSnapshot]:
        return dict(self.orderbooks)

    def get_futures_orderbooks(self) -> dict[str, OrderbookSnapshot]:
        """Latest books of futures and perpetual swaps."""
        return {s: ob for s, ob in self.orderbooks.items() if ob.market_type in FUTURE_TYPES}

    def get_options_orderbooks(self) -> dict[str, OrderbookSnapshot]:
        return {s: ob for s, ob in self.orderbooks.items() if ob.market_type in OPTION_TYPES}

    def get_snapshot_history(self, symbol: str) -> list[OrderbookSnapshot]:
        """Past snapshots of ``symbol``, oldest first (at most ``max_snapshots_per_symbol``), unpacked anew
        from the history's compact form on every call."""
        unified = symbol if symbol in self.snapshot_history else self._require_catalog().resolve(symbol)
        history = self.snapshot_history.get(unified)
        return [packed.unpack() for packed in history] if history else []

    def get_orderbooks_as_dataframe(self) -> pd.DataFrame:
        """One row per symbol with top of book, levels and (options) strike, expiry and type."""
        rows = []
        for symbol, ob in self.orderbooks.items():
            info = self._market_info(symbol)
            rows.append({
                "exchange": ob.exchange,
                "symbol": symbol,
                "type": ob.market_type,
                "timestamp": ob.timestamp,
                "receive_time": pd.Timestamp(ob.receive_ts_ns, unit="ns", tz="UTC"),
                "exchange_seq": ob.exchange_seq,
                "seq": ob.seq,
                "best_bid": ob.best_bid,
                "best_bid_size": ob.best_bid_size,
                "best_ask": ob.best_ask,
                "best_ask_size": ob.best_ask_size,
                "mid_price": ob.mid_price,
                "spread": ob.spread,
                "bid_levels": len(ob.bids),
                "ask_levels": len(ob.asks),
                "base": info.base if info else None,
                "expiry": _expiry(info),
                "strike": info.strike if info else None,
                "option_type": info.option_type if info else None,
            })
        return pd.DataFrame(rows, columns=DATAFRAME_COLUMNS)

    def _market_info(self, symbol: str) -> Optional[MarketInfo]:
        catalog = self._catalog
        return catalog.info(symbol) if catalog is not None and catalog.find(symbol) == symbol else None

    def get_status(self) -> dict[str, dict[str, Any]]:
        """Per subscribed symbol: state (subscribing / streaming / reconnecting / failed), seq, updates,
        reconnects, resyncs, errors, consecutive failures, last error and seconds since the last update."""
        return {symbol: state.status() for symbol, state in self._streams.items()}

    # -- market discovery ----------------------------------------------------------------------------------

    def get_available_futures(self, base_currency: Optional[str] = None) -> list[str]:
        """Active futures and perpetual swaps (unified symbols), perpetuals first, then by expiry."""
        return self._require_catalog().futures(base_currency)

    def get_available_options(
        self,
        base_currency: Optional[str] = None,
        option_type: Optional[str] = None,
        expiry: Optional[str] = None,
        min_strike: Optional[float] = None,
        max_strike: Optional[float] = None,
    ) -> list[str]:
        """Active options (unified symbols) sorted by expiry, strike, call/put.

        ``option_type`` C/P/call/put; ``expiry`` DEC26 (any day that month), 25DEC26, 2026-12-25 or
        261225; ``min_strike``/``max_strike`` inclusive. A malformed filter raises ValueError.
        """
        return self._require_catalog().options(base_currency, option_type, expiry, min_strike, max_strike)

    async def get_market_info(self, symbol: str) -> dict[str, Any]:
        """ccxt's unified market structure of ``symbol`` (unified or native id), as a new dict."""
        return dict(self._require_catalog().market(symbol))

    def get_market(self, symbol: str) -> MarketInfo:
        """:class:`MarketInfo` of ``symbol`` (unified or native id)."""
        catalog = self._require_catalog()
        return catalog.info(catalog.resolve(symbol))

    def _require_catalog(self) -> MarketCatalog:
        if self._catalog is None:
            raise CollectorNotStartedError(f"{self.exchange_id} collector is not started; await collector.start() first")
        return self._catalog


class LatestBooks(MutableMapping[str, OrderbookSnapshot]):
    """``collector.orderbooks``: unified symbol -> latest :class:`OrderbookSnapshot`.

    The collector stores a book in its packed form when nobody needs the full one right away; it is unpacked
    on its first read, once (later reads of the same book return the same object). The collector's own
    writes never go through the cache, so a read from another thread cannot put an older book back.
    """

    def __init__(self, books: dict[str, Union[OrderbookSnapshot, PackedSnapshot]]) -> None:
        self._books = books
        self._unpacked: dict[str, tuple[PackedSnapshot, OrderbookSnapshot]] = {}

    def __getitem__(self, symbol: str) -> OrderbookSnapshot:
        book = self._books[symbol]
        if type(book) is not PackedSnapshot:
            return book
        cached = self._unpacked.get(symbol)
        if cached is not None and cached[0] is book:
            return cached[1]
        snapshot = book.unpack()
        self._unpacked[symbol] = (book, snapshot)
        return snapshot

    def __setitem__(self, symbol: str, book: OrderbookSnapshot) -> None:
        self._books[symbol] = book

    def __delitem__(self, symbol: str) -> None:
        del self._books[symbol]
        self._unpacked.pop(symbol, None)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._books

    def __iter__(self) -> Iterator[str]:
        return iter(self._books)

    def __len__(self) -> int:
        return len(self._books)

    def __repr__(self) -> str:
        return f"<LatestBooks of {len(self._books)} symbols>"


def _expiry(info: Optional[MarketInfo]) -> Optional[pd.Timestamp]:
    """Expiry of a dated market (perpetuals report a far-future placeholder: shown as None)."""
    if info is None or info.expiry is None or info.type == "swap":
        return None
    return pd.Timestamp(info.expiry, unit="ms", tz="UTC")


def _copy_levels(levels: list) -> list[list[float]]:
    """Fresh ``[price, size]`` lists of ccxt's levels (ccxt mutates its level lists in place; counted and
    indexed books keep a third element per level)."""
    if levels and len(levels[0]) == 3:
        return [[price, size] for price, size, _ in levels]
    return [[level[0], level[1]] for level in levels]


def _notify(listeners: list[Callable[[Any], None]], item: Any) -> None:
    """Call every listener with ``item``; one that raises is logged and the others still run."""
    for listener in listeners:
        try:
            listener(item)
        except Exception:
            log.exception("listener %r failed on %s", listener, item.symbol)
