"""Typed errors raised or reported by the collector.

Subscription-time errors are raised to the caller; streaming errors are passed to
``StreamConfig.on_error(symbol, error)``. Where a ccxt error type fits, ours subclass it so that
``except ccxt.BadSymbol`` / ``except ccxt.NetworkError`` keep working.
"""

from __future__ import annotations

import ccxt


class UnknownSymbolError(ccxt.BadSymbol, ValueError):
    """The symbol is neither a ccxt unified symbol nor an exchange-native id of a loaded market."""


class MarketTypeError(ValueError):
    """The symbol exists but is of the wrong kind for the call (e.g. an option passed to subscribe_futures)."""


class CollectorNotStartedError(RuntimeError):
    """A method that needs loaded markets was called before ``await collector.start()``."""


class ExchangeUnavailableError(ccxt.NetworkError, ConnectionError):
    """``start()`` could not reach the exchange (load_markets failed)."""


class SequenceGapError(ccxt.NetworkError):
    """The exchange's sequence chain broke (e.g. deribit prev_change_id != last change_id); the book is resynced."""


class StallError(ccxt.RequestTimeout):
    """No update for a subscribed symbol within ``stall_timeout``; the watchdog resubscribes it."""


class SymbolFailedError(ccxt.NetworkError):
    """A symbol failed ``max_reconnect_attempts`` times in a row and was given up."""


class CallbackError(RuntimeError):
    """A user callback raised, timed out or fell behind; the stream itself is unaffected."""
