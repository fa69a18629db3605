"""Symbol leases on a real Redis: overlap refused with the owner named, crash expiry, clean release."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from common.streams import StreamKeys
from producer.lease import LeaseConflict, SymbolLeases

KEYS = StreamKeys()


async def test_overlap_is_refused_naming_the_owner(redis_url):
    client = aioredis.from_url(redis_url)
    first = SymbolLeases(client, KEYS, "deribit", "deribit.btc", ttl=5)
    await first.acquire(["BTC/USD:BTC", "BTC/USD:BTC-261225"])
    second = SymbolLeases(client, KEYS, "deribit", "deribit.all", ttl=5)
    second.owner = "deribit.all/otherhost/1"  # another process
    with pytest.raises(LeaseConflict, match=r"1 deribit symbol\(s\) are already streamed.*deribit\.btc/.*BTC/USD:BTC-261225"):
        await second.acquire(["ETH/USD:ETH", "BTC/USD:BTC-261225"], wait=0.2)
    # no overlap: fine, and the same symbol on another exchange is no conflict either
    await second.acquire(["ETH/USD:ETH"], wait=0)
    await SymbolLeases(client, KEYS, "okx", "okx.btc", ttl=5).acquire(["BTC/USD:BTC"], wait=0)
    # a clean stop releases, so the symbol can move to another shard at once
    await first.release()
    await second.acquire(["BTC/USD:BTC-261225"], wait=0)
    assert await client.get(KEYS.lease("deribit", "BTC/USD:BTC-261225")) == second.owner.encode()
    await client.aclose()


async def test_crashed_owner_expires_and_renew_keeps_alive(redis_url):
    client = aioredis.from_url(redis_url)
    dead = SymbolLeases(client, KEYS, "deribit", "deribit.btc", ttl=1)
    await dead.acquire(["BTC/USD:BTC"])
    successor = SymbolLeases(client, KEYS, "deribit", "deribit.btc", ttl=1)
    successor.owner = "deribit.btc/host/2"
    await successor.acquire(["BTC/USD:BTC"], wait=5)  # the dead owner never renews: its lease expires
    assert successor.held == {"BTC/USD:BTC"}
    await successor.renew()
    assert 0 < await client.ttl(KEYS.lease("deribit", "BTC/USD:BTC")) <= 1
    await dead.release()  # not the owner any more: must not delete the successor's lease
    assert await client.get(KEYS.lease("deribit", "BTC/USD:BTC")) == successor.owner.encode()
    await client.aclose()
