"""Collector configuration: :class:`StreamConfig` and the ccxt constructor config it produces."""

from __future__ import annotations

import copy
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

#: JSON (or a path to a JSON/YAML file) mapping exchange id -> ccxt config merged under every
#: ``StreamConfig.exchange_config``. This is how the guide's examples reach a local emulator unchanged.
EXCHANGE_CONFIG_ENV = "CCXT_COLLECTOR_EXCHANGE_CONFIG"


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and why."""


def supported_exchanges() -> list[str]:
    """Exchange ids that have a ccxt.pro WebSocket implementation."""
    import ccxt.pro

    return list(ccxt.pro.exchanges)


def check_exchange_id(exchange_id: str) -> str:
    """Return ``exchange_id`` if ccxt.pro supports it, else raise ConfigError naming close matches."""
    known = supported_exchanges()
    if exchange_id in known:
        return exchange_id
    close = difflib.get_close_matches(str(exchange_id), known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; supported: {', '.join(sorted(known))}"
    raise ConfigError(f"unknown exchange {exchange_id!r}{hint}")


def resolve_secret(value: Optional[str], what: str) -> Optional[str]:
    """``env:NAME`` -> the environment variable, ``file:PATH`` -> the file's stripped content; other
    values are returned as they are. Lets configs name a secret without containing it."""
    if not isinstance(value, str):
        return value
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ConfigError(f"{what}: environment variable {name} is not set")
        return os.environ[name]
    if value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    return value


def deep_merge(base: dict, override: dict) -> dict:
    """Return a new dict: ``override`` merged into ``base`` recursively (override wins)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_mapping(value: str, what: str = "config") -> dict:
    """Parse ``value`` as inline JSON or as a path to a JSON/YAML file holding a mapping."""
    text = value.strip()
    if not text.startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"{what}: {value!r} is neither inline JSON nor an existing file")
        text = path.read_text()
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{what}: cannot parse: {str(exc).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected a mapping, got {type(data).__name__}")
    return data


def env_exchange_config(exchange_id: str) -> dict:
    """The ccxt config for ``exchange_id`` supplied by ``$CCXT_COLLECTOR_EXCHANGE_CONFIG``, if any."""
    raw = os.environ.get(EXCHANGE_CONFIG_ENV)
    if not raw:
        return {}
    entry = load_mapping(raw, EXCHANGE_CONFIG_ENV).get(exchange_id) or {}
    if not isinstance(entry, dict):
        raise ConfigError(f"{EXCHANGE_CONFIG_ENV}: entry for {exchange_id!r} must be a mapping")
    return entry


@dataclass
class StreamConfig:
    """Configuration of one :class:`~producer.CCXTProCollector` (one exchange).

    The first twelve parameters are the guide's, with its defaults. ``api_key``/``api_secret`` may be
    ``env:NAME`` or ``file:PATH`` references; when not given they come from
    ``$CCXT_COLLECTOR_<EXCHANGE>_API_KEY`` / ``_API_SECRET`` if set. ``exchange_config`` is deep-merged
    into the ccxt constructor config (on top of ``$CCXT_COLLECTOR_EXCHANGE_CONFIG``): the way to reach a
    testnet, a proxy or a local emulator. ``stall_timeout`` is the per-symbol watchdog: a subscribed
    book with no update for that many seconds is resubscribed. ``callback_timeout`` bounds one
    ``on_orderbook_update`` call.
    """

    exchange_id: str = "deribit"
    api_key: Optional[str] = None
    api_secret: Optional[str] = None
    testnet: bool = False
    orderbook_limit: int = 20
    reconnect_delay: float = 5
    max_reconnect_attempts: int = 10
    rate_limit: bool = True
    store_snapshots: bool = True
    max_snapshots_per_symbol: int = 1000
    on_orderbook_update: Optional[Callable[..., Any]] = None
    on_error: Optional[Callable[..., Any]] = None
    exchange_config: dict[str, Any] = field(default_factory=dict)
    stall_timeout: float = 30.0
    callback_timeout: float = 10.0

    def __post_init__(self) -> None:
        check_exchange_id(self.exchange_id)
        prefix = f"CCXT_COLLECTOR_{self.exchange_id.upper()}"
        self.api_key = resolve_secret(self.api_key or os.environ.get(f"{prefix}_API_KEY"), "api_key")
        self.api_secret = resolve_secret(self.api_secret or os.environ.get(f"{prefix}_API_SECRET"), "api_secret")
        for name in ("orderbook_limit", "max_reconnect_attempts", "max_snapshots_per_symbol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("reconnect_delay", "stall_timeout", "callback_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.exchange_config, dict):
            raise ConfigError(f"exchange_config must be a dict, got {type(self.exchange_config).__name__}")
        for name in ("on_orderbook_update", "on_error"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigError(f"{name} must be callable, got {type(value).__name__}")

    def ccxt_config(self) -> dict[str, Any]:
        """The constructor config for ``ccxt.pro.<exchange_id>(...)``."""
        base: dict[str, Any] = {"enableRateLimit": bool(self.rate_limit)}
        if self.api_key:
            base["apiKey"] = self.api_key
        if self.api_secret:
            base["secret"] = self.api_secret
        merged = deep_merge(base, env_exchange_config(self.exchange_id))
        return deep_merge(merged, self.exchange_config)

    def __repr__(self) -> str:  # never print secrets
        hidden = {"api_key", "api_secret"}
        parts = [
            f"{name}={'***' if name in hidden and getattr(self, name) else repr(getattr(self, name))}"
            for name in self.__dataclass_fields__
            if name != "exchange_config"
        ]
        return f"StreamConfig({', '.join(parts)})"
