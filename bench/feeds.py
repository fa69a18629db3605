"""The client programs the benchmarks measure, each run in its own process against the blast emulator.

    python -m bench.feeds ccxt       --url URL --count N                  bare ccxt.pro watch_order_book loops
    python -m bench.feeds producer   --url URL --count N --redis-url R    the full producer (ProducerProcess)
    python -m bench.feeds cryptofeed --url URL --count N --redis-url R    cryptofeed 2.4.1 + its Redis BookStream
    python -m bench.feeds history    --url URL --count N                  CCXTProCollector keeping history
    python -m bench.feeds cache      --redis-url R --out FILE             latest-book cache worker, timed
    python -m bench.feeds archive    --redis-url R --out FILE             Parquet archiver worker, timed

A feed subscribes the emulator's first N instruments, prints one JSON line ``{"ready": seconds, "rss": bytes}``
once every instrument delivered its first book, keeps streaming until SIGTERM, and then prints its final
counters as one JSON line. The parent measures messages and CPU from outside (see :mod:`bench.harness`).
A timed worker prints ``{"ready": ...}`` once running and, at SIGTERM, writes to FILE when each snapshot
became visible (cache) or durable (archive): int64 triples (exchange change id, the producer's receive time,
time.time_ns()).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import urllib.request
from array import array
from pathlib import Path

READY_POLL = 0.01  # seconds between checks for "every instrument has a book"
SUBSCRIBE_CHUNK = 500  # channels per subscribe frame (deribit refuses frames of 32 KB and more)


def report(**values: object) -> None:
    print(json.dumps(values), flush=True)


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def first_instruments(url: str, count: int) -> list[str]:
    with urllib.request.urlopen(f"{url}/_emulator/deribit/instruments", timeout=30) as reply:
        return json.loads(reply.read())["instruments"][:count]


def ccxt_config(url: str) -> dict:
    return {"urls": {"api": {"rest": url, "ws": url.replace("http://", "ws://", 1) + "/ws/api/v2"}}}


def stop_event() -> asyncio.Event:
    """Set on SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def wait_ready(started: float, ready: "callable", stop: asyncio.Event) -> None:
    while not ready():
        if stop.is_set():
            return
        await asyncio.sleep(READY_POLL)
    report(ready=time.monotonic() - started, rss=rss())


async def run_ccxt(args: argparse.Namespace) -> None:
    """The baseline: one bare ``watch_order_book`` loop per symbol that does nothing with the book. The channels
    are first subscribed with ``watch_order_book_for_symbols`` in chunks (one frame each, as the producer does):
    ccxt throttles its WebSocket sends to one per ``rateLimit`` (50 ms), so 2,000 single subscribes take 100 s."""
    import ccxt.pro

    stop = stop_event()
    started = time.monotonic()
    exchange = ccxt.pro.deribit(ccxt_config(args.url))
    await exchange.load_markets()
    symbols = [exchange.safe_symbol(native) for native in first_instruments(args.url, args.count)]
    seen: set[str] = set()
    returns = 0

    async def loop(symbol: str) -> None:
        nonlocal returns
        while True:
            await exchange.watch_order_book(symbol)
            seen.add(symbol)
            returns += 1

    batches = [asyncio.create_task(exchange.watch_order_book_for_symbols(symbols[i:i + SUBSCRIBE_CHUNK]))
               for i in range(0, len(symbols), SUBSCRIBE_CHUNK)]
    await asyncio.sleep(0)  # the batch watches register their channels before the loops look
    tasks = batches + [asyncio.create_task(loop(symbol)) for symbol in symbols]
    await wait_ready(started, lambda: len(seen) == len(symbols), stop)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await exchange.close()
    report(done=True, watch_returns=returns)


async def run_producer(args: argparse.Namespace) -> None:
    """The full producer: CCXTProCollector + RedisPublisher into a real Redis, as ``ccxt-collector produce``."""
    from producer.shard import ProducerProcess, ShardConfig

    stop = stop_event()
    started = time.monotonic()
    config = ShardConfig(exchange="deribit", shard="bench", symbols=first_instruments(args.url, args.count),
                         exchange_config=ccxt_config(args.url), redis_url=args.redis_url, market_refresh=0)
    producer = ProducerProcess(config)
    task = asyncio.create_task(producer.run())
    await wait_ready(started, lambda: len(producer.collector.orderbooks) == len(config.symbols) or task.done(), stop)
    await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    producer.stop()
    await task
    stats = producer.publisher.stats
    report(done=True, published=stats.published, batches=stats.batches, dropped=stats.dropped, redis_errors=stats.errors)


def run_cryptofeed(args: argparse.Namespace) -> None:
    """cryptofeed 2.4.1's Deribit feed with its Redis Streams book backend (``BookStream``), pointed at the
    emulator as ``shared/notes/cryptofeed-peer-facts.md`` describes."""
    from cryptofeed import FeedHandler
    from cryptofeed.backends.redis import BookStream
    from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
    from cryptofeed.defines import L2_BOOK
    from cryptofeed.exchanges import Deribit

    host_port = args.url.split("://", 1)[1]
    ws_options = {"ssl": False, "server_hostname": None}

    class LocalDeribit(Deribit):
        # its connection class refuses anything but wss://; ssl=False makes websockets open plain TCP
        websocket_endpoints = [WebsocketEndpoint(f"wss://{host_port}/ws/api/v2", options=ws_options)]
        rest_endpoints = [RestEndpoint(args.url, routes=Routes([
            "/api/v2/public/get_instruments?currency=BTC", "/api/v2/public/get_instruments?currency=ETH"]))]

        @classmethod
        def is_authenticated_channel(cls, channel: str) -> bool:
            return channel != L2_BOOK and super().is_authenticated_channel(channel)

    natives = set(first_instruments(args.url, args.count))
    symbols = [std for std, native in LocalDeribit.symbol_mapping().items() if native in natives]
    seen: set[str] = set()
    started = time.monotonic()

    async def mark_seen(book, receipt_timestamp) -> None:
        if len(seen) < len(symbols):
            seen.add(book.symbol)
            if len(seen) == len(symbols):
                report(ready=time.monotonic() - started, rss=rss())

    # redis-py 8 defaults to a 5 s socket timeout, which silently kills BookStream's writer under load
    backend = BookStream(host="127.0.0.1", port=f"{args.redis_port}?socket_timeout=600")
    handler = FeedHandler(config={"log": {"disabled": True}, "uvloop": False})
    handler.add_feed(LocalDeribit(symbols=symbols, channels=[L2_BOOK], callbacks={L2_BOOK: [backend, mark_seen]}))
    asyncio.set_event_loop(asyncio.new_event_loop())
    handler.run()  # until SIGTERM (its own handlers)
    report(done=True, symbols=len(symbols))


async def run_history(args: argparse.Namespace) -> None:
    """A collector keeping every snapshot in its history; at SIGTERM reports the memory one held snapshot takes."""
    from common.config import StreamConfig
    from producer import CCXTProCollector

    stop = stop_event()
    started = time.monotonic()
    config = StreamConfig(exchange_id="deribit", exchange_config=ccxt_config(args.url), store_snapshots=True,
                          max_snapshots_per_symbol=1_000_000)
    async with CCXTProCollector(config) as collector:
        symbols = first_instruments(args.url, args.count)
        await collector.subscribe_futures([s for s in symbols if collector.get_market(s).type != "option"])
        await collector.subscribe_options([s for s in symbols if collector.get_market(s).type == "option"])
        await wait_ready(started, lambda: len(collector.orderbooks) == len(symbols), stop)
        await stop.wait()
        for symbol in collector.subscribed_symbols():
            await collector.unsubscribe(symbol)
        held = [snapshot for history in collector.snapshot_history.values() for snapshot in history]
        report(done=True, snapshots=len(held), bytes_per_snapshot=held_bytes(held) / max(len(held), 1),
               levels=sum(len(s.bids) + len(s.asks) for s in held) / max(len(held), 1))


def held_bytes(snapshots: list) -> int:
    """Bytes of every object the snapshots keep alive, each object counted once (consecutive snapshots share the
    float objects of unchanged levels) and strings left out (symbol, exchange and type are shared by all)."""
    seen: set[int] = set()
    total = 0
    stack: list = list(snapshots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, str):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif hasattr(obj, "__slots__"):
            stack.extend(getattr(obj, name) for name in obj.__slots__ if hasattr(obj, name))
    return total


async def run_timed_worker(args: argparse.Namespace) -> None:
    """The cache or archiver worker under the consumer runner, noting when each snapshot became visible/durable."""
    from common.redis_client import async_client
    from consumers.archiver import ParquetArchiver
    from consumers.cache import LatestBookCache
    from common.runtime import tune_gc
    from consumers.runner import ConsumerRunner, decode_entries

    seen = array("q")
    stamps: dict[tuple[str, bytes], tuple[int, int]] = {}  # entry -> (xseq, the producer's receive time)

    def note(entries) -> None:
        now = time.time_ns()
        for entry in entries:
            stamp = stamps.pop((entry.stream, entry.id), None)
            if stamp is not None:
                seen.extend((*stamp, now))

    class Timed(LatestBookCache if args.kind == "cache" else ParquetArchiver):
        async def handle(self, entries):
            columns = decode_entries(entries)  # in bulk, as the workers decode (entry.fields would decode one by one)
            stamps.update(zip([(entry.stream, entry.id) for entry in entries], zip(columns.xseq, columns.recv_ns)))
            durable = list(await super().handle(entries))
            note(durable)
            return durable

        async def flush(self):
            durable = list(await super().flush())
            note(durable)
            return durable

    worker = Timed() if args.kind == "cache" else Timed(args.out + ".parquet", max_file_age=args.max_file_age,
                                                         progress_interval=0)
    stop = stop_event()
    client = async_client(args.redis_url)
    runner = ConsumerRunner(client, worker, consumer=f"bench-{args.kind}", block_ms=100,
                            flush_interval=args.max_file_age / 2, discover_interval=0.2)
    tune_gc()
    task = asyncio.create_task(runner.run(stop))
    report(ready=0.0, rss=rss())
    await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    await task
    await client.aclose()
    Path(args.out).write_bytes(seen.tobytes())
    report(done=True, noted=len(seen) // 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("ccxt", "producer", "cryptofeed", "history", "cache", "archive"))
    parser.add_argument("--url", help="the blast emulator's base URL (feeds)")
    parser.add_argument("--count", type=int, default=50, help="how many of its instruments to subscribe (feeds)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", help="where a timed worker writes its timings (the archive goes to OUT.parquet/)")
    parser.add_argument("--max-file-age", type=float, default=1.0, help="archiver: seconds a file stays open")
    args = parser.parse_args()
    args.redis_port = int(args.redis_url.rsplit(":", 1)[1].split("/")[0])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.kind in ("cache", "archive"):
        if not args.out:
            parser.error(f"{args.kind} needs --out")
        asyncio.run(run_timed_worker(args))
        return
    if not args.url:
        parser.error(f"{args.kind} needs --url")
    if args.kind == "cryptofeed":
        run_cryptofeed(args)
    else:
        asyncio.run({"ccxt": run_ccxt, "producer": run_producer, "history": run_history}[args.kind](args))


if __name__ == "__main__":
    main()
