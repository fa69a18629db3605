"""Bybit v5: REST (``/v5/market/instruments-info``, ``/v5/market/orderbook``, ``/v5/market/time``) and the public
WebSockets, one per category (``/v5/public/linear``, ``/v5/public/inverse``, ``/v5/public/option``).

Lists USDT perpetuals (``BTCUSDT``) and dated USDT futures (``BTCUSDT-25DEC26``) under ``linear``, inverse
perpetuals (``BTCUSD``) and quarterly inverse futures (``BTCUSDZ26``) under ``inverse``, and USDC-settled option
chains (``BTC-25DEC26-60000-C``) under ``option``; spot lists nothing. Book topics ``orderbook.<depth>.<symbol>``
(linear/inverse depths 1, 50, 200, 500, 1000; option 25, 100) get a snapshot on subscribe, then ``delta``
messages holding the levels of the top ``depth`` that changed (size ``0`` deletes) with an update id ``u`` that
grows by one per message of that topic; depth 1 sends every change as a snapshot, as Bybit does.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from emulator.base import Connection, ExchangeEmulator, now_ms
from emulator.books import BookSpec, Change, future_price, reference_price
from emulator.derivatives import decimal_text, expiries_ms, option_chain, to_ms
from emulator.deribit import expiry_code

CATEGORIES = ("linear", "inverse", "option")
#: book depths a topic may ask for, per category
DEPTHS: dict[str, tuple[int, ...]] = {"linear": (1, 50, 200, 500, 1000), "inverse": (1, 50, 200, 500, 1000),
                                      "option": (25, 100)}
PAGE_LIMIT = 500  # instruments per page unless ``limit`` says otherwise (max 1000)
LAUNCHED_MS = 1_600_000_000_000
OPTION_STRIKES_EACH_SIDE = 5  # 11 strikes per expiry
FUTURE_MONTH_CODES = "FGHJKMNQUVXZ"  # inverse futures: BTCUSD + month code + year (BTCUSDZ26)
#: per currency: tick sizes and quantity steps as Bybit lists them
TERMS: dict[str, dict[str, float]] = {
    "BTC": {"linear_tick": 0.1, "linear_qty": 0.001, "inverse_tick": 0.5, "option_tick": 5.0, "option_qty": 0.01},
    "ETH": {"linear_tick": 0.01, "linear_qty": 0.01, "inverse_tick": 0.05, "option_tick": 0.1, "option_qty": 0.1},
}


class BybitError(Exception):
    """A request Bybit refuses (REST ``retCode`` / WebSocket ``ret_msg``)."""

    def __init__(self, message: str, code: int = 10001) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Topic:
    """What subscribers of one ``orderbook.<depth>.<symbol>`` topic hold: the top ``depth`` levels last
    published (or skipped) and the topic's update id."""

    update_id: int
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)


def is_quarterly(expiry_ms: int) -> bool:
    """True for the last Friday of March, June, September or December."""
    day = dt.datetime.fromtimestamp(expiry_ms / 1000, dt.timezone.utc)
    return day.month % 3 == 0 and day.day + 7 > calendar.monthrange(day.year, day.month)[1]


def inverse_future_id(currency: str, expiry_ms: int) -> str:
    day = dt.datetime.fromtimestamp(expiry_ms / 1000, dt.timezone.utc)
    return f"{currency}USD{FUTURE_MONTH_CODES[day.month - 1]}{day.year % 100:02d}"


def code_of(expiry_ms: int) -> str:
    return expiry_code(dt.datetime.fromtimestamp(expiry_ms / 1000, dt.timezone.utc))


class BybitEmulator(ExchangeEmulator):
    """Bybit's public market data: instruments, books and ``orderbook`` topics of three categories."""

    name = "bybit"
    ws_path = "/v5/public/linear"
    malformed_frame = '{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1,"data":{"s":"BTCU'

    def __init__(self, seed: int = 42, update_interval: float = 0.1, burst: int = 1,
                 now: dt.datetime | None = None) -> None:
        super().__init__(seed, update_interval, burst)
        self.now = now or dt.datetime.now(dt.timezone.utc)
        self.info: dict[str, dict[str, Any]] = {}  # symbol -> instruments-info record (with "category")
        self.price_decimals: dict[str, int] = {}
        self.topics: dict[str, dict[int, Topic]] = {}  # symbol -> depth -> topic state

    # -- instruments and books ---------------------------------------------------------------------------------

    def build_books(self) -> None:
        now = to_ms(self.now)
        future_expiries, option_expiries = expiries_ms(self.now)
        for currency, terms in TERMS.items():
            spot = reference_price(currency, self.seed)
            self._add_future(f"{currency}USDT", "linear", "LinearPerpetual", currency, "USDT", spot, terms, 0)
            self._add_future(f"{currency}USD", "inverse", "InversePerpetual", currency, "USD", spot, terms, 0)
            for expiry in future_expiries:
                mid = future_price(spot, expiry, now)
                self._add_future(f"{currency}USDT-{code_of(expiry)}", "linear", "LinearFutures", currency, "USDT",
                                 mid, terms, expiry)
                if is_quarterly(expiry):
                    self._add_future(inverse_future_id(currency, expiry), "inverse", "InverseFutures", currency,
                                     "USD", mid, terms, expiry)
            for expiry in option_expiries:
                for quote in option_chain(currency, spot, expiry, now, OPTION_STRIKES_EACH_SIDE):
                    symbol = f"{currency}-{code_of(expiry)}-{decimal_text(quote.strike)}-{quote.letter}"
                    record = {
                        "symbol": symbol, "status": "Trading", "baseCoin": currency, "quoteCoin": "USDC",
                        "settleCoin": "USDC", "optionsType": "Call" if quote.call else "Put",
                        "launchTime": str(LAUNCHED_MS), "deliveryTime": str(expiry), "deliveryFeeRate": "0.00015",
                        "priceFilter": price_filter(terms["option_tick"]),
                        "lotSizeFilter": {"maxOrderQty": "10000", "minOrderQty": decimal_text(terms["option_qty"]),
                                          "qtyStep": decimal_text(terms["option_qty"])},
                    }
                    spec = BookSpec(quote.usd_value, terms["option_tick"], terms["option_qty"], max_amount_steps=200)
                    self._add(record, "option", spec)

    def _add_future(self, symbol: str, category: str, contract_type: str, base: str, quote: str, mid: float,
                    terms: dict[str, float], expiry_ms: int) -> None:
        linear = category == "linear"
        tick = terms["linear_tick"] if linear else terms["inverse_tick"]
        qty = terms["linear_qty"] if linear else 1.0
        record = {
            "symbol": symbol, "contractType": contract_type, "status": "Trading", "baseCoin": base,
            "quoteCoin": quote, "settleCoin": quote if linear else base, "launchTime": str(LAUNCHED_MS),
            "deliveryTime": str(expiry_ms), "deliveryFeeRate": "" if expiry_ms == 0 else "0.0005",
            "priceScale": str(max(0, len(decimal_text(tick).partition(".")[2]))),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": price_filter(tick),
            "lotSizeFilter": {"maxOrderQty": "1000000", "minOrderQty": decimal_text(qty), "qtyStep": decimal_text(qty),
                              "postOnlyMaxOrderQty": "1000000", "maxMktOrderQty": "100000",
                              "minNotionalValue": "5" if linear else "0"},
            "unifiedMarginTrade": True, "fundingInterval": 480 if expiry_ms == 0 else 0, "copyTrading": "none",
            "upperFundingRate": "0.005", "lowerFundingRate": "-0.005", "isPreListing": False, "preListingInfo": None,
        }
        self._add(record, category, BookSpec(mid, tick, qty))

    def _add(self, record: dict[str, Any], category: str, spec: BookSpec) -> None:
        symbol = record["symbol"]
        self.info[symbol] = {**record, "category": category}
        self.price_decimals[symbol] = len(record["priceFilter"]["tickSize"].partition(".")[2])
        self.add_book(symbol, spec)

    def ccxt_config(self, base_url: str) -> dict:
        ws_base = base_url.replace("http://", "ws://", 1)
        rest = {name: base_url for name in ("spot", "futures", "v2", "public", "private")}
        sockets = {category: f"{ws_base}/v5/public/{category}" for category in ("spot", *CATEGORIES)}
        return {"urls": {"api": {**rest, "ws": {"public": sockets}}}}

    # -- REST ----------------------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v5/market/instruments-info", self._instruments)
        app.router.add_get("/v5/market/orderbook", self._rest_book)
        app.router.add_get("/v5/market/time", self._time)
        for category in ("spot", *CATEGORIES):
            app.router.add_get(f"/v5/public/{category}", self.websocket_handler)

    async def _instruments(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            category = self._category(query.get("category"))
            limit = int(query.get("limit", PAGE_LIMIT))
            offset = int(query.get("cursor") or 0)
        except ValueError:
            return rest_reply(error=BybitError("params error: limit or cursor"))
        except BybitError as exc:
            return rest_reply(error=exc)
        if not 1 <= limit <= 1000:
            return rest_reply(error=BybitError("params error: limit must be 1..1000"))
        status = query.get("status", "Trading")
        records = [
            {k: v for k, v in record.items() if k != "category"} for record in self.info.values()
            if record["category"] == category and record["status"] == status
            and query.get("baseCoin", record["baseCoin"]) == record["baseCoin"]
            and query.get("symbol", record["symbol"]) == record["symbol"]
        ]
        page = records[offset:offset + limit]
        cursor = str(offset + limit) if offset + limit < len(records) else ""
        return rest_reply({"category": category, "list": page, "nextPageCursor": cursor})

    def _category(self, category: str | None) -> str:
        if category == "spot":
            return category
        if category not in CATEGORIES:
            raise BybitError("params error: category is invalid")
        return category

    async def _rest_book(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        record = self.info.get(symbol)
        if record is None or record["category"] != request.query.get("category"):
            return rest_reply(error=BybitError("params error: symbol invalid", 10001))
        try:
            depth = int(request.query.get("limit", 25 if record["category"] == "option" else 50))
        except ValueError:
            return rest_reply(error=BybitError("params error: limit"))
        view = self.book_view(symbol, max(depth, 1))
        return rest_reply({"s": symbol, "b": self._levels(symbol, view["bids"]),
                           "a": self._levels(symbol, view["asks"]), "ts": view["timestamp"],
                           "u": self.sequence[symbol], "seq": self.sequence[symbol], "cts": view["timestamp"]})

    async def _time(self, request: web.Request) -> web.Response:
        nanos = time.time_ns()
        return rest_reply({"timeSecond": str(nanos // 10**9), "timeNano": str(nanos)})

    def _levels(self, symbol: str, levels: list[list[float]]) -> list[list[str]]:
        decimals = self.price_decimals[symbol]
        return [[f"{price:.{decimals}f}", decimal_text(amount)] for price, amount in levels]

    # -- WebSocket -----------------------------------------------------------------------------------------------

    async def on_text(self, conn: Connection, text: str) -> None:
        category = conn.path.rsplit("/", 1)[-1]
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            await conn.send(self._reply(conn, category, {}, "subscribe", BybitError("error:invalid json")))
            return
        if not isinstance(request, dict):
            await conn.send(self._reply(conn, category, {}, "", BybitError("error:invalid op")))
            return
        op = request.get("op")
        try:
            if op == "ping":
                await conn.send(self._pong(conn, category, request))
            elif op == "subscribe":
                await self._subscribe(conn, category, request)
            elif op == "unsubscribe":
                for topic, symbol, _ in self._topics(category, request.get("args")):
                    self.unsubscribe(conn, topic, symbol)
                await conn.send(self._reply(conn, category, request, op))
            else:
                raise BybitError("error:invalid op")
        except BybitError as exc:
            await conn.send(self._reply(conn, category, request, str(op or ""), exc))

    def _topics(self, category: str, args: Any) -> list[tuple[str, str, int]]:
        """Validate ``args``: [(topic, symbol, depth)], or the BybitError the whole request fails with."""
        if not isinstance(args, list) or not args:
            raise BybitError("error:args is empty")
        parsed = []
        for topic in args:
            parts = topic.split(".") if isinstance(topic, str) else []
            record = self.info.get(parts[2]) if len(parts) == 3 else None
            if (parts[:1] != ["orderbook"] or record is None or record["category"] != category
                    or not parts[1].isdigit() or int(parts[1]) not in DEPTHS[category]):
                raise BybitError(f"error:handler not found,topic:{topic}")
            parsed.append((topic, parts[2], int(parts[1])))
        return parsed

    async def _subscribe(self, conn: Connection, category: str, request: dict) -> None:
        self.stats.subscribe_requests += 1
        if self.take_subscribe_failure():
            raise BybitError("error:too many requests, please try later")
        parsed = self._topics(category, request.get("args"))
        for topic, symbol, _ in parsed:
            self.subscribe(conn, topic, symbol)
        await conn.send(self._reply(conn, category, request, "subscribe"))
        for topic, symbol, depth in parsed:  # a fresh snapshot per topic, also on re-subscribe
            state = self._topic(symbol, depth)
            await conn.send(self._book_message(topic, symbol, "snapshot", state.bids, state.asks, state.update_id))

    def _reply(self, conn: Connection, category: str, request: dict, op: str, error: BybitError | None = None) -> str:
        """The command response: linear/inverse style, or options' ``COMMAND_RESP``."""
        body: dict[str, Any] = {"success": error is None, "ret_msg": "" if error is None else error.message,
                                "conn_id": conn_id(conn), "op": op}
        if category == "option":
            topics = request.get("args") if isinstance(request.get("args"), list) else []
            body.update(data={"successTopics": [] if error else topics, "failTopics": topics if error else []},
                        type="COMMAND_RESP")
        if "req_id" in request:
            body["req_id"] = request["req_id"]
        return orjson.dumps(body).decode()

    def _pong(self, conn: Connection, category: str, request: dict) -> str:
        if category == "option":
            body: dict[str, Any] = {"op": "pong", "args": [str(now_ms())], "conn_id": conn_id(conn)}
        else:
            body = {"success": True, "ret_msg": "pong", "conn_id": conn_id(conn), "op": "ping"}
        if "req_id" in request:
            body["req_id"] = request["req_id"]
        return orjson.dumps(body).decode()

    # -- book messages -----------------------------------------------------------------------------------------

    def _topic(self, symbol: str, depth: int) -> Topic:
        """The topic state of ``symbol`` at ``depth``, created from the current book on first use."""
        per_depth = self.topics.setdefault(symbol, {})
        if depth not in per_depth:
            book = self.books[symbol]
            per_depth[depth] = Topic(self.sequence[symbol], dict(map(tuple, book.levels("bids", depth))),
                                     dict(map(tuple, book.levels("asks", depth))))
        return per_depth[depth]

    def _advance(self, symbol: str, depth: int) -> tuple[list[list[float]], list[list[float]]] | None:
        """Move the topic to the book's current top ``depth``: the changed levels per side (amount 0 for removed
        ones) and a new update id, or None if the top ``depth`` did not change."""
        state = self.topics[symbol][depth]
        book = self.books[symbol]
        bids, asks = dict(map(tuple, book.levels("bids", depth))), dict(map(tuple, book.levels("asks", depth)))
        if bids == state.bids and asks == state.asks:
            return None
        diffs = ([[p, new.get(p, 0.0)] for p in sorted(old.keys() | new.keys()) if old.get(p) != new.get(p)]
                 for old, new in ((state.bids, bids), (state.asks, asks)))
        changed = (next(diffs), next(diffs))
        state.bids, state.asks = bids, asks
        state.update_id += 1
        return changed

    async def apply(self, instrument: str, changes: list[Change]) -> None:
        """As the base class; then topics whose change was skipped (a skip_sequence fault) still move on, so
        their subscribers see a gap in ``u`` and miss those levels, as after a lost message."""
        await super().apply(instrument, changes)
        for depth in self.topics.get(instrument, {}):
            self._advance(instrument, depth)

    async def publish(self, instrument: str, prev_id: int, change_id: int, changes: list[Change]) -> None:
        frames: dict[str, str | None] = {}
        for conn, topics in list(self.subscribers.get(instrument, {}).items()):
            for topic in topics:
                if topic not in frames:
                    frames[topic] = self._delta_frame(topic, instrument)
                if frames[topic] is not None:
                    await conn.send(frames[topic])

    def _delta_frame(self, topic: str, symbol: str) -> str | None:
        depth = int(topic.split(".")[1])
        self._topic(symbol, depth)
        changed = self._advance(symbol, depth)
        if changed is None:
            return None
        state = self.topics[symbol][depth]
        if depth == 1:
            return self._book_message(topic, symbol, "snapshot", state.bids, state.asks, state.update_id)
        return self._book_message(topic, symbol, "delta", dict(map(tuple, changed[0])),
                                  dict(map(tuple, changed[1])), state.update_id)

    def _book_message(self, topic: str, symbol: str, kind: str, bids: dict[float, float], asks: dict[float, float],
                      update_id: int) -> str:
        ts = now_ms()
        data = {"s": symbol, "b": self._levels(symbol, sorted(map(list, bids.items()), reverse=True)),
                "a": self._levels(symbol, sorted(map(list, asks.items()))), "u": update_id,
                "seq": self.sequence[symbol]}
        return orjson.dumps({"topic": topic, "type": kind, "ts": ts, "data": data, "cts": ts}).decode()


def price_filter(tick: float) -> dict[str, str]:
    decimals = len(decimal_text(tick).partition(".")[2])
    return {"minPrice": f"{tick:.{decimals}f}", "maxPrice": f"{1999999 * tick:.{decimals}f}",
            "tickSize": f"{tick:.{decimals}f}"}


def conn_id(conn: Connection) -> str:
    return f"emulator-{conn.id:06d}"


def rest_reply(result: dict | None = None, error: BybitError | None = None) -> web.Response:
    body = {"retCode": 0 if error is None else error.code, "retMsg": "OK" if error is None else error.message,
            "result": result if error is None else {}, "retExtInfo": {}, "time": now_ms()}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
