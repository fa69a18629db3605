"""One place that turns a Redis URL into a client, for every command and worker.

``redis://`` / ``rediss://`` (TLS) / ``unix://`` give a single-node client; ``redis+cluster://`` and
``rediss+cluster://`` give a Redis Cluster client (any node's address; the rest is discovered).
Passwords and ACL users go in the URL (``redis://user:password@host:6379/0``) or the environment
(``REDIS_URL``); :func:`redact` hides them wherever a URL is printed.
"""

from __future__ import annotations

from typing import Any, Union

import redis
import redis.asyncio as aioredis

from common.logs import redact

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

AsyncClient = Union[aioredis.Redis, aioredis.RedisCluster]
SyncClient = Union[redis.Redis, redis.RedisCluster]


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def _plain(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{CLUSTER_SCHEMES.get(scheme, scheme)}://{rest}"


def check_url(url: str) -> None:
    """Raise ValueError with a clear message for a URL no client can use."""
    if "://" not in url:
        raise ValueError(f"bad Redis URL {redact(url)!r}: expected redis://host:port/db (or rediss://, redis+cluster://)")
    scheme = url.split("://", 1)[0]
    if scheme not in {"redis", "rediss", "unix", *CLUSTER_SCHEMES}:
        raise ValueError(f"bad Redis URL scheme {scheme!r}: use redis, rediss, unix, redis+cluster or rediss+cluster")


def async_client(url: str, **kwargs: Any) -> AsyncClient:
    """An asyncio client for ``url`` (cluster or single node). Replies are bytes."""
    check_url(url)
    kwargs.setdefault("socket_connect_timeout", 5)
    if is_cluster(url):
        return aioredis.RedisCluster.from_url(_plain(url), **kwargs)
    return aioredis.Redis.from_url(url, **kwargs)


def sync_client(url: str, **kwargs: Any) -> SyncClient:
    """A blocking client for ``url`` (cluster or single node). Replies are bytes."""
    check_url(url)
    kwargs.setdefault("socket_connect_timeout", 5)
    if is_cluster(url):
        return redis.RedisCluster.from_url(_plain(url), **kwargs)
    return redis.Redis.from_url(url, **kwargs)


async def ensure_reachable(client: AsyncClient, url: str) -> None:
    """PING ``client``; if Redis does not answer, raise OSError with one clear line (password masked)."""
    from redis.exceptions import RedisError

    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise OSError(f"cannot reach Redis at {redact(url)}: {exc}") from None
