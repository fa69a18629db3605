"""A Deribit emulator that sends book changes as fast as a socket takes them, or at a fixed rate (benchmarks).

The ordinary emulator steps a random-walk book for every message (~14-20k messages/s per process), too slow
to saturate one ccxt client. :class:`BlastDeribitEmulator` pre-generates, per instrument, a cycle of change
messages: ``cycle`` random-walk steps followed by their inverses, so the book ends where it started and the
cycle repeats forever. Every change is valid against the book it applies to (only existing levels are changed
or deleted), and the ``prev_change_id`` -> ``change_id`` chain is unbroken, so strict clients (the project's
collector, cryptofeed) never resynchronise.

Each connection gets its own stream: on subscribe, an instrument's snapshot (the cycle's starting book) is sent
and the instrument joins the connection's round-robin. A per-connection task writes whole batches of
pre-framed WebSocket messages (uncompressed: this emulator declines permessage-deflate) straight to the
transport, holding back while the transport's buffer is full (the client's read rate sets the pace) or while
``rate`` (messages/s per connection, 0 = unlimited) says to wait. ``change_id`` values come from one counter,
so with ``record_sends`` the send time of every message is kept and served at ``GET /_blast/sends`` for
latency measurements. ``stats.messages_sent`` counts every frame.

Run it alone: ``python -m emulator.blast --port 0 --rate 0 --option-strikes 250`` prints the URL and serves
until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import struct
import threading
import time
from array import array
from dataclasses import dataclass

import orjson
from aiohttp import web

from emulator.base import Connection, EmulatorError, now_ms
from emulator.books import Change, RandomWalkBook
from emulator.deribit import DeribitEmulator, notification
from emulator.server import EmulatorServer

BATCH_FRAMES = 256  # messages per transport write
HIGH_WATER = 512 * 1024  # bytes buffered in the transport before the blaster waits for the client
IDLE_SLEEP = 0.0005  # seconds between checks while the client or the rate holds the blaster back


def ws_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (server to client) carrying ``payload``."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def change_cycle(book: RandomWalkBook, steps: int) -> list[bytes]:
    """``steps`` random-walk steps of ``book`` and then their inverses, each as the JSON tail
    ``"bids":[...],"asks":[...]}}}`` of a change message; ``book`` is left as it was."""
    saved = dict(book.bids), dict(book.asks)
    forward: list[list[Change]] = []
    backward: list[list[Change]] = []
    amounts = {"bids": {book.price(t): a for t, a in book.bids.items()},
               "asks": {book.price(t): a for t, a in book.asks.items()}}
    for _ in range(steps):
        changes = book.step()
        if not changes:
            continue
        undo: list[Change] = []
        for side, action, price, amount in changes:
            before = amounts[side].get(price)
            if action == "delete":
                del amounts[side][price]
                undo.append((side, "new", price, before))
            else:
                amounts[side][price] = amount
                undo.append((side, "delete", price, 0.0) if before is None else (side, "change", price, before))
        forward.append(changes)
        backward.append(undo[::-1])
    book.bids, book.asks = saved
    return [_levels_tail(changes) for changes in forward + backward[::-1]]


def _levels_tail(changes: list[Change]) -> bytes:
    bids = [[action, price, amount] for side, action, price, amount in changes if side == "bids"]
    asks = [[action, price, amount] for side, action, price, amount in changes if side == "asks"]
    return b'"bids":' + orjson.dumps(bids) + b',"asks":' + orjson.dumps(asks) + b"}}}"


@dataclass
class _Chain:
    """One instrument's change stream on one connection."""

    head: bytes  # the message up to the timestamp, with this connection's channel name
    cycle: list[bytes]
    position: int
    change_id: int


class BlastDeribitEmulator(DeribitEmulator):
    """Deribit emulator whose book changes are replayed from pre-generated cycles (see the module docstring)."""

    ws_compress = False

    def __init__(self, *args, rate: float = 0.0, cycle: int = 100, record_sends: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if rate < 0 or cycle < 1:
            raise EmulatorError("rate must be >= 0 and cycle >= 1")
        self.rate = rate
        self.cycle_steps = cycle
        self.record_sends = record_sends
        self.cycles: dict[str, list[bytes]] = {}
        self.first_change_id = 1_000_000_000
        self._change_ids = itertools.count(self.first_change_id)
        self.send_times = array("q")  # send time (ns) of change id first_change_id + i

    def build_books(self) -> None:
        super().build_books()
        self.cycles = {name: change_cycle(book, self.cycle_steps) for name, book in self.books.items()}

    def start(self) -> None:
        """No random-walk pump: every connection is driven by its own blaster."""

    def add_routes(self, app: web.Application) -> None:
        super().add_routes(app)
        app.router.add_get("/_blast/sends", self._sends)
        app.router.add_post("/_blast/rate", self._set_blast_rate)

    async def _sends(self, request: web.Request) -> web.Response:
        """Binary: the first change id (int64) then the send time in ns of every change id since (int64 each)."""
        return web.Response(body=struct.pack("<q", self.first_change_id) + self.send_times.tobytes(),
                            content_type="application/octet-stream")

    async def _set_blast_rate(self, request: web.Request) -> web.Response:
        try:
            rate = float(request.query["rate"])
        except (KeyError, ValueError):
            return web.json_response({"error": "rate=<messages per second> is required"}, status=400)
        if rate < 0:
            return web.json_response({"error": "rate must be >= 0"}, status=400)
        self.rate = rate
        return web.json_response({"rate": rate})

    def _next_id(self, sent_ns: int) -> int:
        change_id = next(self._change_ids)
        if self.record_sends:
            self.send_times.append(sent_ns)
        return change_id

    async def _send_snapshots(self, conn: Connection, channels: list[str]) -> None:
        """The cycle's starting book as a snapshot; then the instrument joins the connection's blaster."""
        chains: dict[str, _Chain] = conn.state.setdefault("chains", {})
        for channel in channels:
            instrument = self.parse_book_channel(channel)
            book = self.books[instrument]
            change_id = self._next_id(time.time_ns())
            await conn.send(notification(channel, {
                "type": "snapshot", "timestamp": now_ms(), "instrument_name": instrument, "change_id": change_id,
                "bids": [["new", p, a] for p, a in book.levels("bids")],
                "asks": [["new", p, a] for p, a in book.levels("asks")],
            }))
            head = ('{"jsonrpc":"2.0","method":"subscription","params":{"channel":"%s","data":{"type":"change",'
                    '"instrument_name":"%s","timestamp":' % (channel, instrument)).encode()
            chains[channel] = _Chain(head, self.cycles[instrument], 0, change_id)
            conn.state["chains_changed"] = True
        if "blaster" not in conn.state:
            conn.state["blaster"] = conn.spawn(self._blast(conn, chains))

    async def _unsubscribe(self, conn: Connection, params: dict) -> list[str]:
        dropped = await super()._unsubscribe(conn, params)
        for channel in dropped:
            conn.state.get("chains", {}).pop(channel, None)
            conn.state["chains_changed"] = True
        return dropped

    async def _blast(self, conn: Connection, chains: dict[str, _Chain]) -> None:
        """Write batches of change messages round-robin over the connection's instruments until it closes."""
        transport = conn.transport
        started, sent = time.monotonic(), 0
        order: list[_Chain] = []
        turn = 0
        while not conn.ws.closed and transport is not None and not transport.is_closing():
            budget = BATCH_FRAMES
            if self.rate > 0:
                due = int((time.monotonic() - started) * self.rate) - sent
                if due > BATCH_FRAMES:  # fell behind (client slow): do not burst to catch up
                    started, sent, due = time.monotonic(), 0, 1
                budget = min(budget, due)
            if budget <= 0 or not chains or self.faults.paused or transport.get_write_buffer_size() > HIGH_WATER:
                await asyncio.sleep(IDLE_SLEEP)
                continue
            if conn.state.pop("chains_changed", False):
                order = list(chains.values())
            now_ns = time.time_ns()
            stamp = b"%d" % (now_ns // 1_000_000)
            frames = []
            for _ in range(budget):
                turn = (turn + 1) % len(order)
                chain = order[turn]
                change_id = self._next_id(now_ns)
                tail = chain.cycle[chain.position]
                chain.position = (chain.position + 1) % len(chain.cycle)
                frames.append(ws_frame(b"%s%s,\"prev_change_id\":%d,\"change_id\":%d,%s" % (
                    chain.head, stamp, chain.change_id, change_id, tail)))
                chain.change_id = change_id
            transport.write(b"".join(frames))
            sent += budget
            self.stats.messages_sent += budget
            self.stats.book_updates += budget
            await asyncio.sleep(0)


def serve(port: int, rate: float, option_strikes: int, cycle: int, record_sends: bool, seed: int = 42) -> None:
    """Serve a blast emulator on 127.0.0.1:``port`` until SIGTERM/SIGINT; prints its URL first."""
    server = EmulatorServer(
        ("deribit",), seed=seed, port=port, emulator_classes={"deribit": BlastDeribitEmulator},
        exchange_options={"deribit": {"rate": rate, "cycle": cycle, "record_sends": record_sends,
                                      "option_strikes": option_strikes}},
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        print(server.url, len(server.instruments("deribit")), flush=True)
        stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Deribit blast emulator (benchmarks)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s per connection (0 = unlimited)")
    parser.add_argument("--option-strikes", type=int, default=5, help="strikes per option expiry")
    parser.add_argument("--cycle", type=int, default=100, help="random-walk steps per pre-generated cycle")
    parser.add_argument("--record-sends", action="store_true", help="keep every message's send time")
    args = parser.parse_args()
    serve(args.port, args.rate, args.option_strikes, args.cycle, args.record_sends)


if __name__ == "__main__":
    main()
