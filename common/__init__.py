"""Shared building blocks: the snapshot model, its wire codec, configuration and Redis key naming."""

from common.config import ConfigError, StreamConfig
from common.model import OrderbookSnapshot

__all__ = ["ConfigError", "OrderbookSnapshot", "StreamConfig"]
