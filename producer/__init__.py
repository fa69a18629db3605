"""The producer side: ccxt.pro order-book collectors (and the pipeline's publisher)."""

from producer.collector import CCXTProCollector
from producer.errors import (
    CallbackError,
    CollectorNotStartedError,
    ExchangeUnavailableError,
    MarketTypeError,
    SequenceGapError,
    StallError,
    SymbolFailedError,
    UnknownSymbolError,
)
from producer.multi import MultiExchangeCollector

__all__ = [
    "CCXTProCollector",
    "CallbackError",
    "CollectorNotStartedError",
    "ExchangeUnavailableError",
    "MarketTypeError",
    "MultiExchangeCollector",
    "SequenceGapError",
    "StallError",
    "SymbolFailedError",
    "UnknownSymbolError",
]
