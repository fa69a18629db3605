"""OKX v5: REST (``/api/v5/public/instruments``, ``/api/v5/market/books``) and the public WebSocket
(``/ws/v5/public``).

Lists spot pairs, inverse (``BTC-USD-SWAP``) and linear (``BTC-USDT-SWAP``) perpetuals, inverse dated futures
(``BTC-USD-261225``) and inverse option chains (``BTC-USD-261225-60000-C``) for BTC and ETH. Book channels:
``books`` (a snapshot on subscribe, then updates linked by ``prevSeqId`` -> ``seqId`` and carrying OKX's crc32
``checksum`` of the top 25 levels), ``books5`` and ``bbo-tbt`` (the top 5 / top 1 levels in full on every
change). ``books-l2-tbt`` and ``books50-l2-tbt`` need a login, which the emulator refuses, as OKX does for an
anonymous client. The text frame ``ping`` gets ``pong``.
"""

from __future__ import annotations

import datetime as dt
import zlib
from typing import Any

import orjson
from aiohttp import web

from emulator.base import Connection, ExchangeEmulator, now_ms
from emulator.books import BookSpec, Change, RandomWalkBook, future_price, reference_price
from emulator.derivatives import decimal_text, expiries_ms, option_chain, to_ms, yymmdd

CHECKSUM_DEPTH = 25  # levels per side in OKX's book checksum
#: channel -> levels sent in full on every change (None: snapshot + incremental updates)
BOOK_CHANNELS: dict[str, int | None] = {"books": None, "books5": 5, "bbo-tbt": 1}
LOGIN_CHANNELS = frozenset({"books-l2-tbt", "books50-l2-tbt"})
INST_TYPES = ("SPOT", "SWAP", "FUTURES", "OPTION")
LISTED_MS = 1_600_000_000_000
OPTION_STRIKES_EACH_SIDE = 7  # 15 strikes per expiry: 120 options over two expiries

#: per currency: contract terms as OKX lists them (tick sizes, lot sizes, contract values)
TERMS: dict[str, dict[str, Any]] = {
    "BTC": {"spot_tick": 0.1, "spot_lot": 0.00001, "inverse_ct": 100, "linear_ct": 0.01, "swap_tick": 0.1,
            "option_ct": 0.01, "option_tick": 0.0005},
    "ETH": {"spot_tick": 0.01, "spot_lot": 0.0001, "inverse_ct": 10, "linear_ct": 0.1, "swap_tick": 0.01,
            "option_ct": 0.1, "option_tick": 0.0005},
}


def book_checksum(bids: list[list[float]], asks: list[list[float]]) -> int:
    """OKX's checksum: crc32 of ``bid1px:bid1sz:ask1px:ask1sz:bid2px:...`` over the best 25 levels per side
    (a side that runs out just stops contributing), as a signed 32-bit integer."""
    parts: list[str] = []
    for i in range(max(len(bids[:CHECKSUM_DEPTH]), len(asks[:CHECKSUM_DEPTH]))):
        for side in (bids, asks):
            if i < len(side):
                parts.append(f"{decimal_text(side[i][0])}:{decimal_text(side[i][1])}")
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def wire_level(price: float, amount: float) -> list[str]:
    """``[price, size, liquidated orders, orders]`` as OKX sends a level (size ``0`` deletes it)."""
    orders = "0" if amount == 0 else str(1 + int(price * 7 + amount * 3) % 9)
    return [decimal_text(price), decimal_text(amount), "0", orders]


class OkxError(Exception):
    """A request OKX answers with an error (``code`` and ``msg``)."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


class OkxEmulator(ExchangeEmulator):
    """OKX's public market data: instruments, books and book channels."""

    name = "okx"
    ws_path = "/ws/v5/public"
    has_checksum = True
    malformed_frame = '{"arg":{"channel":"books","instId":"BTC-USD-SWAP"},"action":"update","data":[{"as'

    def __init__(self, seed: int = 42, update_interval: float = 0.1, burst: int = 1,
                 now: dt.datetime | None = None) -> None:
        super().__init__(seed, update_interval, burst)
        self.now = now or dt.datetime.now(dt.timezone.utc)
        self.info: dict[str, dict[str, Any]] = {}  # instId -> instruments record

    # -- instruments and books ---------------------------------------------------------------------------------

    def build_books(self) -> None:
        now = to_ms(self.now)
        future_expiries, option_expiries = expiries_ms(self.now)
        for currency, terms in TERMS.items():
            spot = reference_price(currency, self.seed)
            self._add({"instId": f"{currency}-USDT", "instType": "SPOT", "baseCcy": currency, "quoteCcy": "USDT",
                       "tickSz": terms["spot_tick"], "lotSz": terms["spot_lot"]},
                      BookSpec(spot, terms["spot_tick"], terms["spot_lot"]))
            self._add_contract(f"{currency}-USD-SWAP", "SWAP", currency, "USD", currency, "inverse",
                               terms["inverse_ct"], "USD", spot, terms["swap_tick"], 1)
            self._add_contract(f"{currency}-USDT-SWAP", "SWAP", currency, "USDT", "USDT", "linear",
                               terms["linear_ct"], currency, spot, terms["swap_tick"], 0.01)
            for expiry in future_expiries:
                self._add_contract(f"{currency}-USD-{yymmdd(expiry)}", "FUTURES", currency, "USD", currency,
                                   "inverse", terms["inverse_ct"], "USD", future_price(spot, expiry, now),
                                   terms["swap_tick"], 1, expiry)
            for expiry in option_expiries:
                for quote in option_chain(currency, spot, expiry, now, OPTION_STRIKES_EACH_SIDE):
                    inst_id = f"{currency}-USD-{yymmdd(expiry)}-{decimal_text(quote.strike)}-{quote.letter}"
                    self._add_contract(inst_id, "OPTION", currency, "USD", currency, "", terms["option_ct"],
                                       currency, quote.coin_value, terms["option_tick"], 1, expiry,
                                       strike=quote.strike, option_type=quote.letter)

    def _add_contract(self, inst_id: str, inst_type: str, base: str, quote: str, settle: str, ct_type: str,
                      ct_val: float, ct_val_ccy: str, mid: float, tick: float, lot: float,
                      expiry_ms: int | None = None, strike: float | None = None,
                      option_type: str | None = None) -> None:
        record: dict[str, Any] = {
            "instId": inst_id, "instType": inst_type, "uly": f"{base}-{quote}", "instFamily": f"{base}-{quote}",
            "settleCcy": settle, "ctType": ct_type, "ctVal": ct_val, "ctMult": 1, "ctValCcy": ct_val_ccy,
            "tickSz": tick, "lotSz": lot, "expTime": "" if expiry_ms is None else str(expiry_ms),
            "stk": "" if strike is None else decimal_text(strike), "optType": option_type or "",
            "lever": "" if inst_type == "OPTION" else "100",
        }
        spec = BookSpec(mid, tick, lot, max_amount_steps=200 if inst_type == "OPTION" else 500)
        self._add(record, spec)

    def _add(self, record: dict[str, Any], spec: BookSpec) -> None:
        """Complete an instruments record with OKX's remaining fields (numbers as strings) and build its book."""
        full: dict[str, Any] = {
            "alias": "", "baseCcy": "", "quoteCcy": "", "category": "1", "ctMult": "", "ctType": "", "ctVal": "",
            "ctValCcy": "", "expTime": "", "instFamily": "", "lever": "", "listTime": str(LISTED_MS),
            "maxLmtSz": "100000000", "maxMktSz": "1000000", "minSz": "", "optType": "", "ruleType": "normal",
            "settleCcy": "", "state": "live", "stk": "", "uly": "",
        }
        full.update(record)
        full["minSz"] = full["lotSz"]
        for key in ("tickSz", "lotSz", "minSz", "ctVal", "ctMult"):
            if isinstance(full[key], (int, float)):
                full[key] = decimal_text(full[key])
        self.info[full["instId"]] = full
        self.add_book(full["instId"], spec)

    def ccxt_config(self, base_url: str) -> dict:
        host = base_url.split("://", 1)[1]
        return {"hostname": host, "urls": {"api": {"rest": "http://{hostname}", "ws": f"ws://{host}/ws/v5"}}}

    # -- REST ----------------------------------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v5/public/instruments", self._instruments)
        app.router.add_get("/api/v5/public/time", self._time)
        app.router.add_get("/api/v5/market/books", self._rest_book)
        app.router.add_get(self.ws_path, self.websocket_handler)

    async def _instruments(self, request: web.Request) -> web.Response:
        query = request.query
        inst_type = query.get("instType", "")
        family = query.get("instFamily") or query.get("uly")
        if not inst_type:
            return rest_error(OkxError("50014", "Parameter instType can not be empty."))
        if inst_type not in INST_TYPES:
            return rest_error(OkxError("51000", "Parameter instType error"))
        if inst_type == "OPTION" and not family:
            return rest_error(OkxError("50014", "Parameter instFamily can not be empty."))
        records = [
            record for record in self.info.values()
            if record["instType"] == inst_type
            and family in (None, record["instFamily"])
            and query.get("instId") in (None, record["instId"])
        ]
        return rest_reply(records)

    async def _time(self, request: web.Request) -> web.Response:
        return rest_reply([{"ts": str(now_ms())}])

    async def _rest_book(self, request: web.Request) -> web.Response:
        inst_id = request.query.get("instId", "")
        if inst_id not in self.books:
            return rest_error(OkxError("51001", "Instrument ID does not exist"))
        try:
            depth = min(int(request.query.get("sz", "1")), 400)
        except ValueError:
            return rest_error(OkxError("51000", "Parameter sz error"))
        view = self.book_view(inst_id, max(depth, 1))
        return rest_reply([{"asks": [wire_level(p, a) for p, a in view["asks"]],
                            "bids": [wire_level(p, a) for p, a in view["bids"]], "ts": str(view["timestamp"])}])

    # -- WebSocket -----------------------------------------------------------------------------------------------

    async def on_text(self, conn: Connection, text: str) -> None:
        if text == "ping":
            await conn.send("pong")
            return
        try:
            request = orjson.loads(text)
            if not isinstance(request, dict) or request.get("op") not in ("subscribe", "unsubscribe"):
                raise OkxError("60012", f"Illegal request: {text}")
            args = self._channel_args(request.get("args"), text)
            if request["op"] == "subscribe":
                await self._subscribe(conn, args, text)
            else:
                for channel, inst_id in args:
                    self.unsubscribe(conn, channel_key(channel, inst_id), inst_id)
                    await conn.send(self._event("unsubscribe", conn, channel, inst_id))
        except orjson.JSONDecodeError:
            await conn.send(self._error(conn, OkxError("60012", f"Illegal request: {text}")))
        except OkxError as exc:
            await conn.send(self._error(conn, exc))

    def _channel_args(self, args: Any, text: str) -> list[tuple[str, str]]:
        """Validate ``args``: [(channel, instId)], or the OkxError OKX answers the whole request with."""
        if not isinstance(args, list) or not args:
            raise OkxError("60012", f"Illegal request: {text}")
        parsed = []
        for arg in args:
            channel, inst_id = (arg.get("channel"), arg.get("instId")) if isinstance(arg, dict) else (None, None)
            if channel in LOGIN_CHANNELS:
                raise OkxError("60011", "Please log in")
            if channel not in BOOK_CHANNELS or inst_id not in self.books:
                raise OkxError("60018", f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist")
            parsed.append((channel, inst_id))
        return parsed

    async def _subscribe(self, conn: Connection, args: list[tuple[str, str]], text: str) -> None:
        self.stats.subscribe_requests += 1
        if self.take_subscribe_failure():
            raise OkxError("60012", f"Illegal request: {text}")
        for channel, inst_id in args:
            self.subscribe(conn, channel_key(channel, inst_id), inst_id)
            await conn.send(self._event("subscribe", conn, channel, inst_id))
        for channel, inst_id in args:  # a fresh snapshot for every channel subscribed, also on re-subscribe
            await conn.send(self._book_frame(channel, inst_id, None))

    def _event(self, event: str, conn: Connection, channel: str, inst_id: str) -> str:
        return orjson.dumps({"event": event, "arg": {"channel": channel, "instId": inst_id},
                             "connId": conn_id(conn)}).decode()

    def _error(self, conn: Connection, exc: OkxError) -> str:
        return orjson.dumps({"event": "error", "code": exc.code, "msg": exc.msg, "connId": conn_id(conn)}).decode()

    # -- book messages -----------------------------------------------------------------------------------------

    def _book_frame(self, channel: str, inst_id: str, update: dict | None) -> str:
        """A ``books`` snapshot (``update`` None) or update, or the full top of a ``books5`` / ``bbo-tbt``."""
        book = self.books[inst_id]
        arg = {"channel": channel, "instId": inst_id}
        depth = BOOK_CHANNELS[channel]
        if depth is not None:
            data = {"asks": [wire_level(p, a) for p, a in book.levels("asks", depth)],
                    "bids": [wire_level(p, a) for p, a in book.levels("bids", depth)],
                    "instId": inst_id, "ts": str(now_ms()), "seqId": self.sequence[inst_id]}
            return orjson.dumps({"arg": arg, "data": [data]}).decode()
        if update is None:
            update = {"asks": [wire_level(p, a) for p, a in book.levels("asks")],
                      "bids": [wire_level(p, a) for p, a in book.levels("bids")],
                      "ts": str(now_ms()), "checksum": self.checksum(book),
                      "prevSeqId": -1, "seqId": self.sequence[inst_id]}
            return orjson.dumps({"arg": arg, "action": "snapshot", "data": [update]}).decode()
        return orjson.dumps({"arg": arg, "action": "update", "data": [update]}).decode()

    @staticmethod
    def checksum(book: RandomWalkBook) -> int:
        return book_checksum(book.levels("bids", CHECKSUM_DEPTH), book.levels("asks", CHECKSUM_DEPTH))

    async def publish(self, instrument: str, prev_id: int, change_id: int, changes: list[Change]) -> None:
        checksum = self.checksum(self.books[instrument])
        if instrument in self.faults.bad_checksum:
            self.faults.bad_checksum.discard(instrument)
            checksum = checksum + 1 if checksum < 2**31 - 1 else checksum - 1
        update = {
            "asks": [wire_level(price, amount) for side, _, price, amount in changes if side == "asks"],
            "bids": [wire_level(price, amount) for side, _, price, amount in changes if side == "bids"],
            "ts": str(now_ms()), "checksum": checksum, "prevSeqId": prev_id, "seqId": change_id,
        }
        frames: dict[str, str] = {}
        for conn, channels in list(self.subscribers.get(instrument, {}).items()):
            for key in channels:
                if key not in frames:
                    frames[key] = self._book_frame(key.split(":", 1)[0], instrument, update)
                await conn.send(frames[key])


def channel_key(channel: str, inst_id: str) -> str:
    """The connection's channel key of one subscription (``books:BTC-USD-SWAP``)."""
    return f"{channel}:{inst_id}"


def conn_id(conn: Connection) -> str:
    return f"{conn.id:08x}"


def rest_reply(data: list) -> web.Response:
    return web.Response(body=orjson.dumps({"code": "0", "data": data, "msg": ""}), content_type="application/json")


def rest_error(exc: OkxError) -> web.Response:
    body = orjson.dumps({"code": exc.code, "data": [], "msg": exc.msg})
    return web.Response(body=body, status=400, content_type="application/json")

