"""HTX (Huobi) USDT-margined contracts: REST ``/linear-swap-api/v1/swap_contract_info`` + market depth, and the
gzip-compressed market WebSocket ``/linear-swap-ws``.

Lists BTC-USDT and ETH-USDT perpetual swaps and their linear futures (``this_week``, ``next_week``, ``quarter``:
Fridays 08:00 UTC; ``BTC-USDT-261225`` is the December 2026 quarterly), plus USDT swaps of the alt bases the
binanceusdm emulator lists (same seeded prices), all from the one contract-info endpoint.

Books: ``{"sub": "market.BTC-USDT.depth.size_20.high_freq", "data_type": "incremental", "id": "1"}`` is acked
with ``{"id", "status": "ok", "subbed", "ts"}``, then pushes ``{"ch", "ts", "tick": {"mrid", "id", "bids",
"asks", "ts", "version", "ch", "event"}}``: first the top-``size`` levels as ``event: snapshot``, then on every
change of that top-``size`` view an ``update`` with the changed levels (0 = delete; levels entering the view
are included) whose ``version`` is the previous one + 1 (per channel). With ``data_type: snapshot`` every push
is the full view. Every server frame is gzip-compressed binary; the server sends ``{"ping": ts}`` every
``ping_interval`` s and closes a connection that leaves ``MAX_MISSED_PINGS`` pings unanswered by ``{"pong": ts}``.
A skipped sequence (fault) advances the versions without sending: the next update's version jumps by 2.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from emulator.base import Connection, EmulatorError, ExchangeEmulator, now_ms
from emulator.binanceusdm import ALT_BASES, alt_terms, quarterly_expiries
from emulator.books import BookSpec, Change, RandomWalkBook, future_price, reference_price

CHANNEL_RE = re.compile(r"^market\.([A-Z0-9]+-USDT(?:-\d{6})?)\.depth\.size_(5|20|150|400)\.high_freq$")
DATA_TYPES = ("incremental", "snapshot")
DEFAULT_DATA_TYPE = "snapshot"
REST_DEPTH_LEVELS = 150  # ``type=step0`` returns 150 levels per side
MAX_MISSED_PINGS = 2
#: per currency: (price tick, contract size in coins)
CONTRACT_TERMS: dict[str, tuple[float, float]] = {"BTC": (0.1, 0.001), "ETH": (0.01, 0.01)}
FUTURE_TYPES = ("this_week", "next_week", "quarter")


def gzipped(message: dict) -> bytes:
    """One HTX server frame: the JSON message, gzip-compressed."""
    return gzip.compress(orjson.dumps(message), compresslevel=1, mtime=0)


def future_expiries(now: dt.datetime) -> dict[str, dt.datetime]:
    """HTX's linear futures listed at ``now``: this and next Friday 08:00 UTC and the quarterly after them."""
    days_ahead = (4 - now.weekday()) % 7
    this_week = dt.datetime(now.year, now.month, now.day, 8, tzinfo=dt.timezone.utc) + dt.timedelta(days=days_ahead)
    if this_week <= now:
        this_week += dt.timedelta(days=7)
    next_week = this_week + dt.timedelta(days=7)
    quarter = next(expiry for expiry in quarterly_expiries(now, 3) if expiry > next_week)
    return dict(zip(FUTURE_TYPES, (this_week, next_week, quarter)))


@dataclass
class DepthView:
    """What one ``depth.size_N`` channel has published of a book: its top-N levels and its version."""

    size: int
    version: int
    levels: dict[str, dict[float, float]] = field(default_factory=lambda: {"bids": {}, "asks": {}})

    def advance(self, book: RandomWalkBook) -> dict[str, list[list[float]]] | None:
        """Move to the book's current top-N; returns the changed levels (0 = gone) or None if unchanged."""
        diff: dict[str, list[list[float]]] = {}
        for side in ("bids", "asks"):
            now = dict(map(tuple, book.levels(side, self.size)))
            before = self.levels[side]
            diff[side] = [[price, amount] for price, amount in now.items() if before.get(price) != amount]
            diff[side] += [[price, 0.0] for price in before if price not in now]
            self.levels[side] = now
        if not diff["bids"] and not diff["asks"]:
            return None
        self.version += 1
        return diff

    def full(self) -> dict[str, list[list[float]]]:
        return {side: [[price, amount] for price, amount in self.levels[side].items()] for side in ("bids", "asks")}


class HtxEmulator(ExchangeEmulator):
    """HTX linear swaps and futures: contract info, depth snapshots and incremental depth channels."""

    name = "htx"
    ws_path = "/linear-swap-ws"

    def __init__(self, seed: int = 42, update_interval: float = 0.1, burst: int = 1, ping_interval: float = 5.0,
                 now: dt.datetime | None = None) -> None:
        super().__init__(seed, update_interval, burst)
        if not ping_interval > 0:
            raise EmulatorError("ping_interval must be > 0")
        self.ping_interval = ping_interval
        self.now = now or dt.datetime.now(dt.timezone.utc)
        self.info: dict[str, dict] = {}  # contract_code -> swap_contract_info record
        self.views: dict[str, dict[str, DepthView]] = {}  # contract_code -> channel -> view

    # -- instruments and books ---------------------------------------------------------------------------------

    def build_books(self) -> None:
        now = int(self.now.timestamp() * 1000)
        expiries = future_expiries(self.now)
        for currency, (tick, contract_size) in CONTRACT_TERMS.items():
            spot = reference_price(currency, self.seed)
            self._add(f"{currency}-USDT", currency, "swap", None, spot, tick, contract_size)
            for contract_type, expiry in expiries.items():
                expiry_ms = int(expiry.timestamp() * 1000)
                self._add(f"{currency}-USDT-{expiry:%y%m%d}", currency, contract_type, expiry,
                          future_price(spot, expiry_ms, now), tick, contract_size)
        for currency in ALT_BASES:  # priced as on the binanceusdm emulator; a contract is one quantity step
            price, tick, contract_size = alt_terms(currency, self.seed)
            self._add(f"{currency}-USDT", currency, "swap", None, price, tick, contract_size)

    def _add(self, code: str, currency: str, contract_type: str, expiry: dt.datetime | None, mid: float,
             tick: float, contract_size: float) -> None:
        created = (expiry - dt.timedelta(days=120)) if expiry else dt.datetime(2020, 10, 21, tzinfo=dt.timezone.utc)
        self.info[code] = {
            "symbol": currency,
            "contract_code": code,
            "contract_size": contract_size,
            "price_tick": tick,
            "delivery_date": f"{expiry:%Y%m%d}" if expiry else "",
            "delivery_time": str(int(expiry.timestamp() * 1000)) if expiry else "",
            "create_date": f"{created:%Y%m%d}",
            "contract_status": 1,
            "settlement_date": str(int(self.now.timestamp() * 1000) // 28800000 * 28800000 + 28800000),
            "support_margin_mode": "all",
            "business_type": "futures" if expiry else "swap",
            "pair": f"{currency}-USDT",
            "contract_type": contract_type,
            "trade_partition": "USDT",
        }
        self.add_book(code, BookSpec(mid, tick, 1.0))  # amounts in whole contracts
        self.views[code] = {}

    def ccxt_config(self, base_url: str) -> dict:
        host = base_url.split("://", 1)[1]
        ws_url = base_url.replace("http://", "ws://", 1) + self.ws_path
        public = {"linear": {"public": ws_url}}
        return {
            "urls": {
                "hostnames": {"contract": host, "spot": host},
                "api": {"contract": "http://{hostname}", "ws": {"api": {"swap": public, "future": public}}},
            },
            # load only linear contracts (ccxt also asks spot and inverse markets, and spot currencies)
            "options": {"fetchMarkets": {"types": {"spot": False, "linear": True, "inverse": False}}},
            "has": {"fetchCurrencies": False},
        }

    # -- REST ----------------------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/linear-swap-api/v1/swap_contract_info", self._contract_info)
        app.router.add_get("/linear-swap-ex/market/depth", self._depth)
        app.router.add_get(self.ws_path, self.websocket_handler)

    @staticmethod
    def _json(body: dict) -> web.Response:
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    @staticmethod
    def _error(code: int, message: str) -> web.Response:
        return HtxEmulator._json({"status": "error", "err_code": code, "err_msg": message, "ts": now_ms()})

    async def _contract_info(self, request: web.Request) -> web.Response:
        query = request.query
        business_type = query.get("business_type", "swap")
        if business_type not in ("swap", "futures", "all"):
            return self._error(1067, "The business_type is invalid.")
        records = [
            record for record in self.info.values()
            if business_type in ("all", record["business_type"])
            and query.get("contract_code", record["contract_code"]) == record["contract_code"]
            and query.get("pair", record["pair"]) == record["pair"]
            and query.get("contract_type", record["contract_type"]) == record["contract_type"]
        ]
        return self._json({"status": "ok", "data": records, "ts": now_ms()})

    async def _depth(self, request: web.Request) -> web.Response:
        code = request.query.get("contract_code", "")
        if code not in self.books:
            return self._error(1332, "The contract code is invalid.")
        if request.query.get("type") != "step0":
            return self._error(1067, "The type is invalid.")
        book = self.books[code]
        timestamp = now_ms()
        channel = f"market.{code}.depth.step0"
        tick = {"asks": book.levels("asks", REST_DEPTH_LEVELS), "bids": book.levels("bids", REST_DEPTH_LEVELS),
                "ch": channel, "id": self.sequence[code], "mrid": self.sequence[code], "ts": timestamp,
                "version": self.sequence[code]}
        return self._json({"ch": channel, "status": "ok", "tick": tick, "ts": timestamp})

    # -- WebSocket -----------------------------------------------------------------------------------------------

    def on_connect(self, conn: Connection) -> None:
        conn.spawn(self._heartbeat(conn))

    async def _heartbeat(self, conn: Connection) -> None:
        """Send ``{"ping": ts}`` every ``ping_interval`` s; close the connection once ``MAX_MISSED_PINGS`` pings
        went unanswered (a stall pauses the heartbeat)."""
        pings: list[int] = conn.state.setdefault("pings", [])
        while not conn.ws.closed:
            await asyncio.sleep(self.ping_interval)
            if self.faults.stalled:
                continue
            if len(pings) >= MAX_MISSED_PINGS:
                await conn.ws.close(code=1000, message=b"heartbeat timeout")
                return
            pings.append(now_ms())
            await conn.send(gzipped({"ping": pings[-1]}))

    async def on_text(self, conn: Connection, text: str) -> None:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            await self._reply_error(conn, None, "bad-request", "invalid request")
        elif "pong" in request:
            pings = conn.state["pings"]
            if request["pong"] in pings:
                pings.clear()
        elif "sub" in request:
            await self._subscribe(conn, request)
        elif "unsub" in request:
            await self._unsubscribe(conn, request)
        else:
            await self._reply_error(conn, request.get("id"), "bad-request", "invalid request")

    async def _reply_error(self, conn: Connection, request_id: Any, code: str, message: str) -> None:
        await conn.send(gzipped({"id": request_id, "status": "error", "err-code": code, "err-msg": message,
                                 "ts": now_ms()}))

    def _parse_channel(self, channel: Any) -> tuple[str, int] | None:
        """(contract code, size) of a listed ``market.<code>.depth.size_<N>.high_freq`` channel, else None."""
        match = CHANNEL_RE.match(channel) if isinstance(channel, str) else None
        if match is None or match.group(1) not in self.books:
            return None
        return match.group(1), int(match.group(2))

    async def _subscribe(self, conn: Connection, request: dict) -> None:
        self.stats.subscribe_requests += 1
        channel, request_id = request["sub"], request.get("id")
        parsed = self._parse_channel(channel)
        data_type = request.get("data_type", DEFAULT_DATA_TYPE)
        if self.take_subscribe_failure():
            await self._reply_error(conn, request_id, "bad-request", "emulated subscribe failure")
            return
        if parsed is None or data_type not in DATA_TYPES:
            await self._reply_error(conn, request_id, "bad-request", f"invalid topic {channel}")
            return
        code, size = parsed
        view = self.views[code].get(channel)
        if view is None:
            view = self.views[code][channel] = DepthView(size, self.sequence[code])
        view.advance(self.books[code])  # catch up on changes nobody was subscribed to
        self.subscribe(conn, channel, code)
        conn.state.setdefault("data_types", {})[channel] = data_type
        await conn.send(gzipped({"id": request_id, "status": "ok", "subbed": channel, "ts": now_ms()}))
        await conn.send(self._frame(code, channel, view, "snapshot", view.full()))

    async def _unsubscribe(self, conn: Connection, request: dict) -> None:
        channel, request_id = request["unsub"], request.get("id")
        parsed = self._parse_channel(channel)
        if parsed is None:
            await self._reply_error(conn, request_id, "bad-request", f"invalid topic {channel}")
            return
        self.unsubscribe(conn, channel, parsed[0])
        await conn.send(gzipped({"id": request_id, "status": "ok", "unsubbed": channel, "ts": now_ms()}))

    def _frame(self, code: str, channel: str, view: DepthView, event: str, levels: dict) -> bytes:
        timestamp = now_ms()
        tick = {"mrid": self.sequence[code], "id": self.sequence[code], "bids": levels["bids"],
                "asks": levels["asks"], "ts": timestamp, "version": view.version, "ch": channel, "event": event}
        return gzipped({"ch": channel, "ts": timestamp, "tick": tick})

    # -- book pushes ---------------------------------------------------------------------------------------------

    async def apply(self, instrument: str, changes: list[Change]) -> None:
        """As the base, and a skipped change still advances every channel's version (its push is lost)."""
        skipped = bool(changes) and instrument in self.faults.skip
        await super().apply(instrument, changes)
        if skipped:
            await self._push(instrument, send=False)

    async def publish(self, instrument: str, prev_id: int, change_id: int, changes: list[Change]) -> None:
        await self._push(instrument, send=True)

    async def _push(self, code: str, send: bool) -> None:
        """Advance every channel view of ``code``; send the changed ones to their subscribers."""
        book = self.books[code]
        subscribers = list(self.subscribers.get(code, {}).items())
        for channel, view in self.views[code].items():
            diff = view.advance(book)
            if diff is None or not send:
                continue
            frames: dict[str, bytes] = {}
            for conn, channels in subscribers:
                if channel in channels:
                    data_type = conn.state["data_types"][channel]
                    if data_type not in frames:
                        frames[data_type] = (self._frame(code, channel, view, "update", diff)
                                             if data_type == "incremental"
                                             else self._frame(code, channel, view, "snapshot", view.full()))
                    await conn.send(frames[data_type])

    async def send_raw(self, text: str | bytes) -> int:
        """Garbage arrives the way every HTX frame does: gzip-compressed."""
        return await super().send_raw(gzip.compress(text.encode()) if isinstance(text, str) else text)
