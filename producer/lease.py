"""Symbol leases: two producers must never publish the same (exchange, symbol) by accident.

Each producer instance takes ``ccxt:lease:<exchange>:<symbol>`` (SET NX with a TTL) for every symbol it
streams, renews the leases with its heartbeat and deletes them on a clean stop. A symbol already leased
by another live instance makes the new producer refuse to start, naming the owner. A crashed owner's
leases expire after ``ttl`` seconds, so a restarted producer waits at most that long.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Iterable

from common.config import ConfigError
from common.streams import StreamKeys

# delete / renew a lease only if we still own it
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0"


class LeaseConflict(ConfigError):
    """Another live producer owns some of the symbols this one was asked to stream."""


class SymbolLeases:
    """The leases of one producer instance (owner = ``<shard tag>/<host>/<pid>``)."""

    def __init__(self, redis, keys: StreamKeys, exchange: str, shard: str, ttl: int = 15) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self.redis = redis
        self.keys = keys
        self.exchange = exchange
        self.owner = f"{shard}/{socket.gethostname()}/{os.getpid()}"
        self.ttl = ttl
        self.held: set[str] = set()

    async def acquire(self, symbols: Iterable[str], wait: float | None = None) -> None:
        """Lease every symbol or none. Waits up to ``wait`` seconds (default: one TTL, so a crashed
        predecessor's leases can expire), then raises :class:`LeaseConflict` naming the owners."""
        wanted = [s for s in dict.fromkeys(symbols) if s not in self.held]
        deadline = time.monotonic() + (self.ttl + 1 if wait is None else wait)
        while True:
            conflicts = await self._try(wanted)
            if not conflicts:
                return
            if time.monotonic() >= deadline:
                owners = sorted({owner for owner in conflicts.values()})
                sample = ", ".join(sorted(conflicts)[:5]) + (" …" if len(conflicts) > 5 else "")
                raise LeaseConflict(
                    f"{len(conflicts)} {self.exchange} symbol(s) are already streamed by another producer "
                    f"({'; '.join(owners)}): {sample}. Two shards must not overlap: fix the shard selections "
                    f"(see `ccxt-collector shards plan`)."
                )
            wanted = list(conflicts)
            await asyncio.sleep(0.5)

    async def _try(self, symbols: list[str]) -> dict[str, str]:
        """SET NX every lease; returns {symbol: owner} of those held by someone else."""
        if not symbols:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for symbol in symbols:
                pipe.set(self.keys.lease(self.exchange, symbol), self.owner, nx=True, ex=self.ttl)
            results = await pipe.execute()
        taken = [s for s, ok in zip(symbols, results) if ok]
        self.held.update(taken)
        losers = [s for s, ok in zip(symbols, results) if not ok]
        if not losers:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for symbol in losers:
                pipe.get(self.keys.lease(self.exchange, symbol))
            owners = await pipe.execute()
        conflicts = {}
        for symbol, owner in zip(losers, owners):
            if owner is None:
                continue  # expired in between: the next try takes it
            owner = owner.decode() if isinstance(owner, bytes) else owner
            if owner == self.owner:
                self.held.add(symbol)
            else:
                conflicts[symbol] = owner
        return conflicts

    async def renew(self) -> None:
        """Extend every held lease (call more often than ``ttl``)."""
        await self._script(_RENEW, self.held, self.owner, self.ttl)

    async def release(self, symbols: Iterable[str] | None = None) -> None:
        """Give up leases (default: all held)."""
        targets = set(self.held if symbols is None else symbols) & self.held
        await self._script(_RELEASE, targets, self.owner)
        self.held -= targets

    async def _script(self, script: str, symbols: Iterable[str], *args: object) -> None:
        symbols = list(symbols)
        if not symbols:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for symbol in symbols:
                pipe.eval(script, 1, self.keys.lease(self.exchange, symbol), *args)
            await pipe.execute()
