"""Deribit: JSON-RPC over REST (``/api/v2/public/<method>``) and WebSocket (``/ws/api/v2``).

Lists BTC and ETH perpetuals, dated futures and option chains with expiries computed the way Deribit lists them
(Fridays 08:00 UTC), plus the quarterly ``25DEC26`` expiry the user's guide uses. Book channels
``book.<instrument>.<interval>`` (``100ms``, ``agg2``, ``raw``, ``none``) get a ``snapshot`` on subscribe and then
``change`` notifications whose ``prev_change_id`` links to the previous ``change_id``.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import time
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from emulator.base import Connection, EmulatorError, ExchangeEmulator, now_ms
from emulator.books import NOMINAL_PRICES, BookSpec, Change, black_scholes, future_price, reference_price

API_VERSION = "1.2.26"
PERPETUAL_EXPIRY_MS = 32503708800000  # what Deribit reports for perpetuals (year 3000)
PINNED_EXPIRY = dt.datetime(2026, 12, 25, 8, tzinfo=dt.timezone.utc)  # "25DEC26", used throughout the guide
BOOK_INTERVALS = ("100ms", "agg2", "raw", "none")
CURRENCIES: dict[str, str] = {"BTC": "Bitcoin", "ETH": "Ethereum"}
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class RpcError(Exception):
    """A JSON-RPC error reply (code, message and Deribit's ``data`` object)."""

    def __init__(self, code: int, message: str, reason: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.data = {"reason": reason, "param": param} if reason else None

    def payload(self) -> dict:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data:
            error["data"] = self.data
        return error


def invalid_param(param: str, reason: str) -> RpcError:
    return RpcError(-32602, "Invalid params", reason, param)


# -- the instrument list ---------------------------------------------------------------------------------------


def expiry_code(expiry: dt.datetime) -> str:
    """Deribit's expiry code: day without leading zero, month, two-digit year (``4DEC26``, ``25DEC26``)."""
    return f"{expiry.day}{MONTHS[expiry.month - 1]}{expiry.year % 100:02d}"


def _friday_0800(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, 8, tzinfo=dt.timezone.utc)


def _last_friday(year: int, month: int) -> dt.date:
    last = dt.date(year, month, calendar.monthrange(year, month)[1])
    return last - dt.timedelta(days=(last.weekday() - calendar.FRIDAY) % 7)


def listed_expiries(now: dt.datetime) -> tuple[list[dt.datetime], list[dt.datetime]]:
    """(future expiries, option expiries) listed at ``now``: a weekly at least 7 days out, the next two
    quarterlies (last Friday of Mar/Jun/Sep/Dec, at least 7 days out) and the pinned 25DEC26."""
    horizon = now + dt.timedelta(days=7)
    day = horizon.date() + dt.timedelta(days=(calendar.FRIDAY - horizon.weekday()) % 7)
    weekly = _friday_0800(day)
    if weekly < horizon:
        weekly += dt.timedelta(days=7)
    quarterlies: list[dt.datetime] = []
    year, month = now.year, now.month
    while len(quarterlies) < 2:
        if month % 3 == 0 and _friday_0800(_last_friday(year, month)) >= horizon:
            quarterlies.append(_friday_0800(_last_friday(year, month)))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    futures = sorted({weekly, *quarterlies, PINNED_EXPIRY})
    options = sorted({weekly, quarterlies[0], PINNED_EXPIRY})
    return futures, options


def settlement_period(expiry_ms: int) -> str:
    """``perpetual``, ``month`` (the month's last Friday) or ``week``, as Deribit labels instruments."""
    if expiry_ms == PERPETUAL_EXPIRY_MS:
        return "perpetual"
    expiry = dt.datetime.fromtimestamp(expiry_ms / 1000, dt.timezone.utc)
    return "month" if expiry.day + 7 > calendar.monthrange(expiry.year, expiry.month)[1] else "week"


#: per currency: perpetual/future (tick, min amount, contract size), option (tick, min amount), strike steps
#: (near expiry, far expiry), as on Deribit
CONTRACT_TERMS: dict[str, dict[str, Any]] = {
    "BTC": {"perp_tick": 0.5, "future_tick": 2.5, "future_min": 10.0, "contract_size": 10.0,
            "option_tick": 0.0001, "option_min": 0.1, "strike_steps": (1000.0, 5000.0)},
    "ETH": {"perp_tick": 0.05, "future_tick": 0.25, "future_min": 1.0, "contract_size": 1.0,
            "option_tick": 0.0001, "option_min": 1.0, "strike_steps": (50.0, 250.0)},
}
NEAR_EXPIRY_DAYS = 21  # option expiries closer than this use the fine strike step


class DeribitEmulator(ExchangeEmulator):
    """Deribit's public market-data API: instruments, order books and book subscriptions."""

    name = "deribit"
    ws_path = "/ws/api/v2"

    def __init__(self, seed: int = 42, update_interval: float = 0.1, burst: int = 1,
                 min_heartbeat_interval: float = 10.0, now: dt.datetime | None = None,
                 option_strikes: int = 5) -> None:
        super().__init__(seed, update_interval, burst)
        if option_strikes < 1:
            raise EmulatorError("option_strikes must be >= 1")
        self.min_heartbeat_interval = min_heartbeat_interval
        self.option_strikes = option_strikes
        self.now = now or dt.datetime.now(dt.timezone.utc)
        self.info: dict[str, dict] = {}  # instrument name -> get_instruments record
        self.rpc: dict[str, Callable[[Any, dict], Awaitable[Any]]] = {  # REST passes conn=None
            "public/get_currencies": self._get_currencies,
            "public/get_instruments": self._get_instruments,
            "public/get_order_book": self._get_order_book,
            "public/get_time": self._get_time,
            "public/test": self._test,
            "public/hello": self._hello,
            "public/subscribe": self._subscribe,
            "public/unsubscribe": self._unsubscribe,
            "public/unsubscribe_all": self._unsubscribe_all,
            "public/set_heartbeat": self._set_heartbeat,
            "public/disable_heartbeat": self._disable_heartbeat,
        }

    # -- instruments and books ---------------------------------------------------------------------------------

    def build_books(self) -> None:
        now = int(self.now.timestamp() * 1000)
        future_expiries, option_expiries = listed_expiries(self.now)
        for currency in CURRENCIES:
            terms = CONTRACT_TERMS[currency]
            spot = reference_price(currency, self.seed)
            self._add(f"{currency}-PERPETUAL", "future", currency, PERPETUAL_EXPIRY_MS, 1534242287000,
                      BookSpec(spot, terms["perp_tick"], terms["future_min"]), terms["perp_tick"])
            for expiry in future_expiries:
                expiry_ms = int(expiry.timestamp() * 1000)
                mid = future_price(spot, expiry_ms, now)
                self._add(f"{currency}-{expiry_code(expiry)}", "future", currency, expiry_ms,
                          expiry_ms - 120 * 86400000, BookSpec(mid, terms["future_tick"], terms["future_min"]),
                          terms["future_tick"])
            for expiry in option_expiries:
                self._add_option_chain(currency, spot, expiry, now)

    def _add_option_chain(self, currency: str, spot: float, expiry: dt.datetime, now: int) -> None:
        """``option_strikes`` strikes (default five) around the nominal price (so BTC 60000 is always listed),
        calls and puts. A chain too wide for the usual strike step gets a finer (whole) one, so strikes stay positive."""
        terms = CONTRACT_TERMS[currency]
        expiry_ms = int(expiry.timestamp() * 1000)
        near_step, far_step = terms["strike_steps"]
        step = near_step if expiry_ms - now < NEAR_EXPIRY_DAYS * 86400000 else far_step
        centre = round(NOMINAL_PRICES[currency] / step) * step
        below = (self.option_strikes - 1) // 2
        while below * step >= centre and step > 1:
            step = float(int(step) // 2)  # whole strikes: a channel name cannot carry a decimal point
        forward = future_price(spot, expiry_ms, now)
        years = (expiry_ms - now) / (365.0 * 86400000)
        for strike in (centre + k * step for k in range(-below, self.option_strikes - below)):
            for option_type, letter in (("call", "C"), ("put", "P")):
                value = black_scholes(forward, strike, years, call=option_type == "call") / forward
                name = f"{currency}-{expiry_code(expiry)}-{strike:g}-{letter}"
                spec = BookSpec(value, terms["option_tick"], terms["option_min"], max_amount_steps=200)
                self._add(name, "option", currency, expiry_ms, expiry_ms - 60 * 86400000, spec, terms["option_tick"],
                          strike=strike, option_type=option_type)

    def _add(self, name: str, kind: str, currency: str, expiry_ms: int, created_ms: int, spec: BookSpec,
             tick: float, strike: float | None = None, option_type: str | None = None) -> None:
        option = kind == "option"
        record: dict[str, Any] = {
            "instrument_name": name,
            "instrument_id": 100000 + len(self.info),
            "kind": kind,
            "base_currency": currency,
            "counter_currency": "USD",
            "quote_currency": currency if option else "USD",
            "settlement_currency": currency,
            "price_index": f"{currency.lower()}_usd",
            "settlement_period": settlement_period(expiry_ms),
            "expiration_timestamp": expiry_ms,
            "creation_timestamp": created_ms,
            "is_active": True,
            "rfq": False,
            "tick_size": tick,
            "tick_size_steps": [],
            "min_trade_amount": spec.amount_step,
            "contract_size": 1.0 if option else CONTRACT_TERMS[currency]["contract_size"],
            "taker_commission": 0.0003 if option else 0.0005,
            "maker_commission": 0.0003 if option else 0.0,
            "block_trade_commission": 0.0003 if option else 0.00025,
            "block_trade_min_trade_amount": 25 if option else 200000,
            "block_trade_tick_size": tick,
        }
        if option:
            record.update(strike=strike, option_type=option_type)
        else:
            record.update(future_type="reversed", instrument_type="reversed", max_leverage=50,
                          max_liquidation_commission=0.0075)
        self.info[name] = record
        self.add_book(name, spec)

    def ccxt_config(self, base_url: str) -> dict:
        ws_url = base_url.replace("http://", "ws://", 1) + self.ws_path
        return {"urls": {"api": {"rest": base_url, "ws": ws_url}}}

    # -- REST ----------------------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v2/public/{method}", self._rest)
        app.router.add_get(self.ws_path, self.websocket_handler)

    async def _rest(self, request: web.Request) -> web.Response:
        method = "public/" + request.match_info["method"]
        started = time.time()
        handler = self.rpc.get(method)
        try:
            if handler is None or method in WS_ONLY_METHODS:
                raise RpcError(-32601, "Method not found")
            reply = {"result": await handler(None, dict(request.query))}
            status = 200
        except RpcError as exc:
            reply, status = {"error": exc.payload()}, 400
        body = envelope(reply, None, started)
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    async def _get_currencies(self, conn: Connection | None, params: dict) -> list[dict]:
        return [
            {"currency": code, "currency_long": long_name, "coin_type": long_name.upper(), "fee_precision": 4,
             "min_confirmations": 1, "min_withdrawal_fee": 0.0001, "withdrawal_fee": 0.0001,
             "withdrawal_priorities": [], "apr": 0.0, "in_cross_collateral_pool": True}
            for code, long_name in CURRENCIES.items()
        ]

    async def _get_instruments(self, conn: Connection | None, params: dict) -> list[dict]:
        currency = str(params.get("currency", "any")).upper()
        if currency != "ANY" and currency not in CURRENCIES:
            raise invalid_param("currency", "wrong format")
        kind = params.get("kind")
        if kind is not None and kind not in ("future", "option", "spot", "future_combo", "option_combo"):
            raise invalid_param("kind", "wrong format")
        return [
            record for record in self.info.values()
            if currency in ("ANY", record["base_currency"]) and kind in (None, record["kind"])
            and record["instrument_name"] not in self.unlisted
        ]

    async def _get_order_book(self, conn: Connection | None, params: dict) -> dict:
        name = params.get("instrument_name")
        if name not in self.books:
            raise invalid_param("instrument_name", "instrument not found")
        depth = params.get("depth")
        try:
            depth = None if depth is None else int(depth)
        except ValueError:
            raise invalid_param("depth", "must be an integer") from None
        if depth is not None and depth < 1:
            raise invalid_param("depth", "must be >= 1")
        view = self.book_view(name, depth)
        bids, asks = view["bids"], view["asks"]
        mid = (bids[0][0] + asks[0][0]) / 2
        return {
            "instrument_name": name,
            "timestamp": view["timestamp"],
            "change_id": view["change_id"],
            "state": "open",
            "bids": bids,
            "asks": asks,
            "best_bid_price": bids[0][0],
            "best_bid_amount": bids[0][1],
            "best_ask_price": asks[0][0],
            "best_ask_amount": asks[0][1],
            "mark_price": mid,
            "index_price": reference_price(self.info[name]["base_currency"], self.seed),
            "last_price": mid,
            "open_interest": 0,
            "stats": {"volume": 0, "price_change": 0, "low": mid, "high": mid},
        }

    async def _get_time(self, conn: Connection | None, params: dict) -> int:
        return now_ms()

    # -- WebSocket JSON-RPC ------------------------------------------------------------------------------------

    async def on_text(self, conn: Connection, text: str) -> None:
        started = time.time()
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self._reply(conn, {"error": RpcError(-32700, "Parse error").payload()}, None, started)
            return
        if not isinstance(request, dict):
            await self._reply(conn, {"error": RpcError(-32600, "Invalid Request").payload()}, None, started)
            return
        request_id = request.get("id")
        handler = self.rpc.get(request.get("method", ""))
        params = request.get("params") or {}
        try:
            if handler is None:
                raise RpcError(-32601, "Method not found")
            if not isinstance(params, dict):
                raise RpcError(-32602, "Invalid params")
            reply = {"result": await handler(conn, params)}
        except RpcError as exc:
            reply = {"error": exc.payload()}
        await self._reply(conn, reply, request_id, started)
        if "result" in reply and request.get("method") == "public/subscribe":
            await self._send_snapshots(conn, reply["result"])

    async def _reply(self, conn: Connection, reply: dict, request_id: Any, started: float) -> None:
        await conn.send(orjson.dumps(envelope(reply, request_id, started)).decode())

    async def _test(self, conn: Connection | None, params: dict) -> dict:
        if conn is not None:
            conn.state["test_request_pending"] = False
        return {"version": API_VERSION}

    async def _hello(self, conn: Connection | None, params: dict) -> dict:
        return {"version": API_VERSION}

    @staticmethod
    def parse_book_channel(channel: Any) -> str | None:
        """The instrument of a ``book.<instrument>.<interval>`` channel, or None if it is not one."""
        if not isinstance(channel, str):
            return None
        parts = channel.split(".")
        if len(parts) == 3 and parts[0] == "book" and parts[2] in BOOK_INTERVALS:
            return parts[1]
        return None

    def _channels(self, params: dict) -> list[tuple[str, str]]:
        """Validate ``params.channels``: [(channel, instrument)], or an RpcError naming the first bad channel."""
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            raise invalid_param("channels", "must be a non-empty list")
        parsed = []
        for channel in channels:
            instrument = self.parse_book_channel(channel)
            if instrument is None:
                raise invalid_param("channels", f"invalid channel {channel!r}")
            if instrument not in self.books:
                raise invalid_param("channels", f"instrument not found: {instrument}")
            parsed.append((channel, instrument))
        return parsed

    async def _subscribe(self, conn: Connection, params: dict) -> list[str]:
        self.stats.subscribe_requests += 1
        if self.take_subscribe_failure():
            raise RpcError(10028, "too_many_requests")
        parsed = self._channels(params)
        for channel, instrument in parsed:
            self.subscribe(conn, channel, instrument)
        return [channel for channel, _ in parsed]

    async def _send_snapshots(self, conn: Connection, channels: list[str]) -> None:
        """A fresh snapshot for every channel just subscribed (also on re-subscribe)."""
        for channel in channels:
            instrument = self.parse_book_channel(channel)
            book = self.books[instrument]
            data = {
                "type": "snapshot",
                "timestamp": now_ms(),
                "instrument_name": instrument,
                "change_id": self.sequence[instrument],
                "bids": [["new", p, a] for p, a in book.levels("bids")],
                "asks": [["new", p, a] for p, a in book.levels("asks")],
            }
            await conn.send(notification(channel, data))

    async def _unsubscribe(self, conn: Connection, params: dict) -> list[str]:
        return [channel for channel, instrument in self._channels(params)
                if self.unsubscribe(conn, channel, instrument)]

    async def _unsubscribe_all(self, conn: Connection, params: dict) -> str:
        for channel in list(conn.channels):
            self.unsubscribe(conn, channel, self.parse_book_channel(channel))
        return "ok"

    async def _set_heartbeat(self, conn: Connection, params: dict) -> str:
        try:
            interval = float(params.get("interval"))
        except (TypeError, ValueError):
            raise invalid_param("interval", "must be a number") from None
        if interval < self.min_heartbeat_interval:
            raise invalid_param("interval", f"must be >= {self.min_heartbeat_interval:g}")
        await self._disable_heartbeat(conn, params)
        conn.state["test_request_pending"] = False
        conn.state["heartbeat"] = conn.spawn(self._heartbeat(conn, interval))
        return "ok"

    async def _disable_heartbeat(self, conn: Connection, params: dict) -> str:
        task = conn.state.pop("heartbeat", None)
        if task is not None:
            task.cancel()
        return "ok"

    async def _heartbeat(self, conn: Connection, interval: float) -> None:
        """Send a ``test_request`` every ``interval`` s; close the connection if the previous one went unanswered
        (the client must call ``public/test``)."""
        while not conn.ws.closed:
            await asyncio.sleep(interval)
            if conn.state.get("test_request_pending"):
                await conn.ws.close(code=1000, message=b"heartbeat timeout")
                return
            conn.state["test_request_pending"] = True
            await conn.send(orjson.dumps(
                {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}).decode())

    # -- book notifications --------------------------------------------------------------------------------------

    async def publish(self, instrument: str, prev_id: int, change_id: int, changes: list[Change]) -> None:
        data = {
            "type": "change",
            "timestamp": now_ms(),
            "prev_change_id": prev_id,
            "instrument_name": instrument,
            "change_id": change_id,
            "bids": [[action, price, amount] for side, action, price, amount in changes if side == "bids"],
            "asks": [[action, price, amount] for side, action, price, amount in changes if side == "asks"],
        }
        frames: dict[str, str] = {}
        for conn, channels in list(self.subscribers.get(instrument, {}).items()):
            for channel in channels:
                if channel not in frames:
                    frames[channel] = notification(channel, data)
                await conn.send(frames[channel])


#: methods that need a WebSocket connection (REST answers "Method not found")
WS_ONLY_METHODS = frozenset({"public/subscribe", "public/unsubscribe", "public/unsubscribe_all",
                             "public/set_heartbeat", "public/disable_heartbeat"})


def envelope(reply: dict, request_id: Any, started: float) -> dict:
    """Wrap a ``{"result": ...}`` / ``{"error": ...}`` reply in Deribit's JSON-RPC envelope."""
    us_in, us_out = int(started * 1e6), int(time.time() * 1e6)
    body: dict[str, Any] = {"jsonrpc": "2.0"}
    if request_id is not None:
        body["id"] = request_id
    body.update(reply)
    body.update(usIn=us_in, usOut=us_out, usDiff=us_out - us_in, testnet=False)
    return body


def notification(channel: str, data: dict) -> str:
    return orjson.dumps({"jsonrpc": "2.0", "method": "subscription",
                         "params": {"channel": channel, "data": data}}).decode()


