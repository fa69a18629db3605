"""Binance USDⓈ-M futures: REST ``/fapi/v1/exchangeInfo`` + ``/fapi/v1/depth`` and the diff-depth WebSocket stream.

Lists BTC and ETH perpetuals and their two quarterly futures (``BTCUSDT_261225``: last Friday of the quarter,
08:00 UTC, as Binance delivers), plus USDT perpetuals of many other bases (enough for 100+ subscriptions).

Order books follow Binance's "how to manage a local order book correctly" for futures: a client subscribes
``<symbol>@depth[@100ms|@250ms|@500ms]`` with ``{"method": "SUBSCRIBE", "params": [...], "id": N}`` on
``/public/ws[/<n>]``, buffers ``depthUpdate`` events (``U`` first and ``u`` final update id, ``pu`` = the
previous event's ``u``, absolute quantities, 0 deletes), fetches ``GET /fapi/v1/depth`` whose ``lastUpdateId``
is the ``u`` of the last event already contained in it, drops events with ``u < lastUpdateId`` and continues
from the one with ``U <= lastUpdateId <= u``. REST and WebSocket run on one event loop, so the snapshot is
the book exactly as of ``lastUpdateId``. A skipped sequence number (fault) shows up as ``pu`` != previous ``u``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import random
import re
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from emulator.base import Connection, ExchangeEmulator, now_ms
from emulator.books import BookSpec, Change, future_price, reference_price

PERPETUAL_DELIVERY_MS = 4133404800000  # what Binance reports as a perpetual's deliveryDate (2100-12-25)
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
DEFAULT_DEPTH_LIMIT = 500
STREAMS_PER_CONNECTION = 200  # Binance futures: at most 200 streams per connection
STREAM_RE = re.compile(r"^([a-z0-9_]+)@depth(?:@(?:100|250|500)ms)?$")
#: (tick size, quantity step) of the instruments Binance lists with precise terms; other bases are derived
MAJOR_TERMS: dict[str, tuple[float, float]] = {"BTC": (0.1, 0.001), "ETH": (0.01, 0.001)}
DATED_BASES = ("BTC", "ETH")  # bases with quarterly futures
#: further USDT perpetuals (prices are seeded, not real)
ALT_BASES = (
    "SOL XRP DOGE ADA AVAX LINK DOT LTC BCH TRX UNI ATOM ETC XLM FIL APT ARB OP NEAR ICP HBAR VET ALGO AAVE MKR "
    "SAND MANA AXS EGLD THETA EOS XTZ FLOW CHZ GALA APE GMT LDO CRV DYDX SNX COMP ZEC DASH KAVA RUNE INJ SUI SEI "
    "TIA WLD BNB TON STX IMX GRT QNT FET ENS ZIL ONE KSM NEO IOTA QTUM ICX ONT ZRX BAT ENJ CELO ROSE MASK BLUR "
    "ORDI JTO PYTH WIF JUP STRK MANTA DYM PIXEL AEVO ETHFI ENA SAGA TAO OMNI NOT IO ZK ZRO LISTA RARE SXP STORJ "
    "ANKR CHR SKL BAND LRC YFI SUSHI"
).split()


class BinanceError(Exception):
    """A Binance error reply: ``{"code": N, "msg": "..."}``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def quarterly_expiries(now: dt.datetime, count: int = 2) -> list[dt.datetime]:
    """The next ``count`` quarterly deliveries after ``now``: last Friday of Mar/Jun/Sep/Dec, 08:00 UTC."""
    expiries: list[dt.datetime] = []
    year, month = now.year, now.month
    while len(expiries) < count:
        if month % 3 == 0:
            last = dt.date(year, month, calendar.monthrange(year, month)[1])
            friday = last - dt.timedelta(days=(last.weekday() - calendar.FRIDAY) % 7)
            expiry = dt.datetime(friday.year, friday.month, friday.day, 8, tzinfo=dt.timezone.utc)
            if expiry > now:
                expiries.append(expiry)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return expiries


def decimals(step: float) -> int:
    """Number of decimals of a tick or step size (0.001 -> 3, 1.0 -> 0)."""
    return max(0, -Decimal(repr(step)).normalize().as_tuple().exponent)


def alt_terms(base: str, seed: int) -> tuple[float, float, float]:
    """(seeded price, tick size, quantity step) of an alt perpetual: ~4 significant price digits, ~2 USDT lots."""
    price = math.exp(random.Random(f"reference:{seed}:{base}").uniform(math.log(0.05), math.log(500.0)))
    tick = 10.0 ** math.floor(math.log10(price * 1e-4))
    step = min(1.0, max(0.001, 10.0 ** math.floor(math.log10(2.0 / price))))
    return round(price / tick) * tick, float(f"{tick:.0e}"), float(f"{step:.0e}")


class BinanceUsdmEmulator(ExchangeEmulator):
    """Binance USDⓈ-M public market data: exchangeInfo, depth snapshots and diff-depth streams."""

    name = "binanceusdm"
    ws_path = "/public/ws"
    malformed_frame = '{"e":"depthUpdate","E":17000000000'

    def __init__(self, seed: int = 42, update_interval: float = 0.1, burst: int = 1,
                 now: dt.datetime | None = None) -> None:
        super().__init__(seed, update_interval, burst)
        self.now = now or dt.datetime.now(dt.timezone.utc)
        self.info: dict[str, dict] = {}  # symbol -> exchangeInfo record
        self.price_decimals: dict[str, int] = {}
        self.qty_decimals: dict[str, int] = {}

    # -- instruments and books ---------------------------------------------------------------------------------

    def build_books(self) -> None:
        now = int(self.now.timestamp() * 1000)
        expiries = quarterly_expiries(self.now)
        for base in DATED_BASES:
            tick, step = MAJOR_TERMS[base]
            spot = reference_price(base, self.seed)
            self._add(f"{base}USDT", base, "PERPETUAL", PERPETUAL_DELIVERY_MS, spot, tick, step)
            for contract_type, expiry in zip(("CURRENT_QUARTER", "NEXT_QUARTER"), expiries):
                expiry_ms = int(expiry.timestamp() * 1000)
                self._add(f"{base}USDT_{expiry:%y%m%d}", base, contract_type, expiry_ms,
                          future_price(spot, expiry_ms, now), tick, step)
        for base in ALT_BASES:
            price, tick, step = alt_terms(base, self.seed)
            self._add(f"{base}USDT", base, "PERPETUAL", PERPETUAL_DELIVERY_MS, price, tick, step)

    def _add(self, symbol: str, base: str, contract_type: str, delivery_ms: int, mid: float, tick: float,
             step: float) -> None:
        price_decimals, qty_decimals = decimals(tick), decimals(step)
        onboard = 1569398400000 if contract_type == "PERPETUAL" else delivery_ms - 180 * 86400000
        self.info[symbol] = {
            "symbol": symbol,
            "pair": f"{base}USDT",
            "contractType": contract_type,
            "deliveryDate": delivery_ms,
            "onboardDate": onboard,
            "status": "TRADING",
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": base,
            "quoteAsset": "USDT",
            "marginAsset": "USDT",
            "pricePrecision": price_decimals,
            "quantityPrecision": qty_decimals,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": f"{tick:.{price_decimals}f}",
                 "minPrice": f"{tick:.{price_decimals}f}", "maxPrice": f"{mid * 100:.{price_decimals}f}"},
                {"filterType": "LOT_SIZE", "stepSize": f"{step:.{qty_decimals}f}",
                 "minQty": f"{step:.{qty_decimals}f}", "maxQty": "1000000"},
                {"filterType": "MARKET_LOT_SIZE", "stepSize": f"{step:.{qty_decimals}f}",
                 "minQty": f"{step:.{qty_decimals}f}", "maxQty": "100000"},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": "5"},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                 "multiplierDecimal": "4"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }
        self.price_decimals[symbol], self.qty_decimals[symbol] = price_decimals, qty_decimals
        self.add_book(symbol, BookSpec(mid, tick, step))

    def ccxt_config(self, base_url: str) -> dict:
        ws_url = base_url.replace("http://", "ws://", 1) + "/ws"  # ccxt rewrites a linear ".../ws" to /public/ws
        return {"urls": {"api": {"fapiPublic": base_url + "/fapi/v1", "ws": {"linear": ws_url}}}}

    def _levels(self, symbol: str, levels: list[list[float]]) -> list[list[str]]:
        """Levels as Binance sends them: ``[["price", "qty"], ...]`` with the instrument's decimals."""
        price_decimals, qty_decimals = self.price_decimals[symbol], self.qty_decimals[symbol]
        return [[f"{price:.{price_decimals}f}", f"{qty:.{qty_decimals}f}"] for price, qty in levels]

    # -- REST ----------------------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        app.router.add_get("/fapi/v1/depth", self._depth)
        app.router.add_get("/fapi/v1/ping", self._ping)
        app.router.add_get("/fapi/v1/time", self._time)
        app.router.add_get(self.ws_path, self.websocket_handler)
        app.router.add_get(self.ws_path + "/{index}", self.websocket_handler)

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    async def _exchange_info(self, request: web.Request) -> web.Response:
        return self._json({
            "timezone": "UTC",
            "serverTime": now_ms(),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": list(self.info.values()),
        })

    async def _depth(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        try:
            if symbol not in self.books:
                raise BinanceError(-1121, "Invalid symbol.")
            try:
                limit = int(request.query.get("limit", DEFAULT_DEPTH_LIMIT))
            except ValueError:
                raise BinanceError(-1100, "Illegal characters found in parameter 'limit'.") from None
            if limit not in DEPTH_LIMITS:
                raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
        except BinanceError as exc:
            return self._json({"code": exc.code, "msg": exc.msg}, status=400)
        book = self.books[symbol]
        timestamp = now_ms()
        return self._json({
            "lastUpdateId": self.sequence[symbol],
            "E": timestamp,
            "T": timestamp,
            "bids": self._levels(symbol, book.levels("bids", limit)),
            "asks": self._levels(symbol, book.levels("asks", limit)),
        })

    async def _ping(self, request: web.Request) -> web.Response:
        return self._json({})

    async def _time(self, request: web.Request) -> web.Response:
        return self._json({"serverTime": now_ms()})

    # -- WebSocket -----------------------------------------------------------------------------------------------

    async def on_text(self, conn: Connection, text: str) -> None:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self._reply(conn, None, error=BinanceError(3, "Invalid JSON: expected value at line 1 column 1"))
            return
        request_id = request.get("id") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict):
                raise BinanceError(2, "Invalid request: request must be an object")
            method = request.get("method")
            if method == "SUBSCRIBE":
                result = self._subscribe(conn, request.get("params"))
            elif method == "UNSUBSCRIBE":
                result = self._unsubscribe(conn, request.get("params"))
            elif method == "LIST_SUBSCRIPTIONS":
                result = sorted(conn.channels)
            else:
                raise BinanceError(2, f"Invalid request: unknown method {method!r}")
        except BinanceError as exc:
            await self._reply(conn, request_id, error=exc)
            return
        await self._reply(conn, request_id, result=result)

    async def _reply(self, conn: Connection, request_id: Any, result: Any = None,
                     error: BinanceError | None = None) -> None:
        body: dict[str, Any] = {"error": {"code": error.code, "msg": error.msg}} if error else {"result": result}
        body["id"] = request_id
        await conn.send(orjson.dumps(body).decode())

    def _streams(self, params: Any) -> list[tuple[str, str]]:
        """Validate a SUBSCRIBE/UNSUBSCRIBE param list: [(stream, symbol)] or a BinanceError."""
        if not isinstance(params, list) or not params:
            raise BinanceError(2, "Invalid request: params must be a non-empty list of streams")
        parsed = []
        for stream in params:
            match = STREAM_RE.match(stream) if isinstance(stream, str) else None
            symbol = match.group(1).upper() if match else None
            if symbol not in self.books:
                raise BinanceError(2, f"Invalid request: invalid stream {stream!r}")
            parsed.append((stream, symbol))
        return parsed

    def _subscribe(self, conn: Connection, params: Any) -> None:
        self.stats.subscribe_requests += 1
        if self.take_subscribe_failure():
            raise BinanceError(2, "Invalid request: emulated subscribe failure")
        streams = self._streams(params)
        if len(conn.channels | {stream for stream, _ in streams}) > STREAMS_PER_CONNECTION:
            raise BinanceError(2, f"Invalid request: at most {STREAMS_PER_CONNECTION} streams per connection")
        for stream, symbol in streams:
            self.subscribe(conn, stream, symbol)

    def _unsubscribe(self, conn: Connection, params: Any) -> None:
        for stream, symbol in self._streams(params):
            self.unsubscribe(conn, stream, symbol)

    # -- book events ---------------------------------------------------------------------------------------------

    async def publish(self, instrument: str, prev_id: int, change_id: int, changes: list[Change]) -> None:
        final: dict[str, dict[float, float]] = {"bids": {}, "asks": {}}  # absolute quantity per price, 0 = gone
        for side, _action, price, amount in changes:
            final[side][price] = amount
        timestamp = now_ms()
        event = orjson.dumps({
            "e": "depthUpdate",
            "E": timestamp,
            "T": timestamp,
            "s": instrument,
            "U": change_id,
            "u": change_id,
            "pu": prev_id,
            "b": self._levels(instrument, list(map(list, final["bids"].items()))),
            "a": self._levels(instrument, list(map(list, final["asks"].items()))),
        }).decode()
        for conn, streams in list(self.subscribers.get(instrument, {}).items()):
            for _ in streams:  # one event per subscribed stream, as Binance sends
                await conn.send(event)
