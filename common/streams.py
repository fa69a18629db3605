"""Redis key naming: every key the pipeline reads or writes is built here.

A *shard* is one producer's share of the market (``deribit.btc``). All keys of a shard carry the shard
as a Redis Cluster hash tag, so one consumer call (a multi-key XREADGROUP over a shard's streams) stays
in one slot, while different shards spread over the cluster's nodes::

    ccxt:shards                          SET    shard tags that have ever published ("deribit.btc")
    ccxt:{deribit.btc}:streams           SET    the shard's book stream keys
    ccxt:{deribit.btc}:book:BTC/USD:BTC  STREAM msgpack snapshots of one (exchange, symbol), field "d"
    ccxt:{deribit.btc}:status            HASH   producer heartbeat/status (expires when the producer dies)
    ccxt:markets:deribit                 HASH   symbol -> JSON market metadata
    ccxt:latest:deribit                  HASH   symbol -> msgpack snapshot (the latest-book cache)
    {ccxt:latest:deribit}:order          HASH   symbol -> order key of the cached snapshot (same cluster slot)
    ccxt:deadletter                      STREAM entries no consumer could process, with the reason
    ccxt:alerts                          STREAM arbitrage monitor alerts
    ccxt:trimmed:archiver                HASH   stream -> entries MAXLEN removed before that group read them
    ccxt:lease:deribit:BTC/USD:BTC       STRING which shard owns a symbol (overlap protection)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAYLOAD_FIELD = b"d"
_TAG_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def shard_tag(exchange: str, shard: str | None = None) -> str:
    """The shard's identity and hash tag: ``deribit`` or ``deribit.btc``."""
    tag = exchange if not shard else f"{exchange}.{shard}"
    return _TAG_SAFE.sub("_", tag.lower())


@dataclass(frozen=True)
class StreamKeys:
    """Builds the pipeline's Redis keys under one prefix (default ``ccxt``)."""

    prefix: str = "ccxt"

    @property
    def shards(self) -> str:
        return f"{self.prefix}:shards"

    def shard_streams(self, tag: str) -> str:
        return f"{self.prefix}:{{{tag}}}:streams"

    def book_stream(self, tag: str, symbol: str) -> str:
        return f"{self.prefix}:{{{tag}}}:book:{symbol}"

    def status(self, tag: str) -> str:
        return f"{self.prefix}:{{{tag}}}:status"

    def markets(self, exchange: str) -> str:
        return f"{self.prefix}:markets:{exchange}"

    def latest(self, exchange: str) -> str:
        return f"{self.prefix}:latest:{exchange}"

    def latest_order(self, exchange: str) -> str:
        """Companion of :meth:`latest`; its hash tag is the whole ``latest`` key, so both share a cluster slot."""
        return f"{{{self.latest(exchange)}}}:order"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}:deadletter"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}:alerts"

    def trimmed(self, group: str) -> str:
        return f"{self.prefix}:trimmed:{group}"

    def lease(self, exchange: str, symbol: str) -> str:
        return f"{self.prefix}:lease:{exchange}:{symbol}"

    def parse_book_stream(self, key: str) -> tuple[str, str]:
        """``ccxt:{deribit.btc}:book:BTC/USD:BTC`` -> (``deribit.btc``, ``BTC/USD:BTC``)."""
        head = f"{self.prefix}:{{"
        if not key.startswith(head) or "}:book:" not in key:
            raise ValueError(f"not a book stream key: {key!r}")
        tag, symbol = key[len(head):].split("}:book:", 1)
        return tag, symbol
