"""Per-exchange adapters. Add an exchange by subclassing :class:`ExchangeAdapter` and registering it here."""

from __future__ import annotations

from producer.adapters.base import ExchangeAdapter
from producer.adapters.deribit import DeribitAdapter
from producer.adapters.okx import OkxAdapter
from producer.adapters.bybit import BybitAdapter
from producer.adapters.binanceusdm import BinanceUsdmAdapter
from producer.adapters.htx import HtxAdapter

#: exchange id -> adapter class; exchanges not listed use the generic :class:`ExchangeAdapter`
ADAPTERS: dict[str, type[ExchangeAdapter]] = {
    "deribit": DeribitAdapter,
    "okx": OkxAdapter,
    "bybit": BybitAdapter,
    "binanceusdm": BinanceUsdmAdapter,
    "htx": HtxAdapter,
}


def adapter_for(exchange_id: str) -> ExchangeAdapter:
    """The adapter instance for ``exchange_id``."""
    return ADAPTERS.get(exchange_id, ExchangeAdapter)(exchange_id)


__all__ = ["ADAPTERS", "ExchangeAdapter", "adapter_for"]
