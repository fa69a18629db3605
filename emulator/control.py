"""The HTTP control API under ``/_emulator/`` (JSON), for driving an out-of-process emulator.

    GET  /_emulator                                   -> served exchanges, their ccxt configs and the env value
    GET  /_emulator/{exchange}/instruments | stats | config
    GET  /_emulator/{exchange}/book?instrument=BTC-PERPETUAL[&depth=10]
    POST /_emulator/{exchange}/pause | resume | close | abort | malformed[?payload=...]
    POST /_emulator/{exchange}/stall?on=true|false
    POST /_emulator/{exchange}/fail_subscribe?count=N
    POST /_emulator/{exchange}/skip?instrument=X
    POST /_emulator/{exchange}/bad_checksum?instrument=X       (exchanges whose books carry a checksum: okx)
    POST /_emulator/{exchange}/shift?instrument=X&offset=-150.5
    POST /_emulator/{exchange}/list?instrument=X | delist?instrument=X  (deribit: a new listing / an expiry)
    POST /_emulator/{exchange}/rate?update_interval=0.01[&burst=5]

Parameters come from the query string or a JSON object body. Bad input -> 400 ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web

from emulator.base import EmulatorError, ExchangeEmulator

if TYPE_CHECKING:
    from emulator.server import EmulatorServer

Params = dict[str, Any]
Action = Callable[[ExchangeEmulator, Params], Any]


def _required(params: Params, key: str) -> Any:
    if key not in params:
        raise EmulatorError(f"missing parameter {key!r}")
    return params[key]


_REQUIRED = object()


def _number(params: Params, key: str, kind: type, default: Any = _REQUIRED) -> Any:
    """``params[key]`` converted to ``kind`` (``default`` when absent; required if no default)."""
    value = params.get(key, default)
    if value is _REQUIRED:
        raise EmulatorError(f"missing parameter {key!r}")
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise EmulatorError(f"parameter {key!r} must be a {kind.__name__}, got {value!r}") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "on", "yes"):
        return True
    if text in ("0", "false", "off", "no"):
        return False
    raise EmulatorError(f"expected a boolean, got {value!r}")


#: GET endpoints: read-only views
READS: dict[str, Action] = {
    "instruments": lambda em, p: {"instruments": em.instruments()},
    "stats": lambda em, p: em.stats_dict(),
    "book": lambda em, p: em.book_view(_required(p, "instrument"), _number(p, "depth", int, None)),
}

#: POST endpoints: faults and rate changes
ACTIONS: dict[str, Action] = {
    "pause": lambda em, p: em.pause(),
    "resume": lambda em, p: em.resume(),
    "close": lambda em, p: em.close_connections(),
    "abort": lambda em, p: em.abort_connections(),
    "malformed": lambda em, p: em.send_raw(str(p.get("payload", em.malformed_frame))),
    "stall": lambda em, p: em.stall(_bool(p.get("on", True))),
    "fail_subscribe": lambda em, p: em.fail_subscribe(_number(p, "count", int, 1)),
    "skip": lambda em, p: em.skip_sequence(_required(p, "instrument")),
    "bad_checksum": lambda em, p: em.bad_checksum(_required(p, "instrument")),
    "shift": lambda em, p: em.shift_price(_required(p, "instrument"), _number(p, "offset", float)),
    "list": lambda em, p: em.set_listed(_required(p, "instrument"), True),
    "delist": lambda em, p: em.set_listed(_required(p, "instrument"), False),
    "rate": lambda em, p: em.set_rate(_number(p, "update_interval", float, None),
                                      _number(p, "burst", int, None)),
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def _params(request: web.Request) -> Params:
    params: Params = dict(request.query)
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            raise EmulatorError("body must be a JSON object") from None
        if not isinstance(body, dict):
            raise EmulatorError("body must be a JSON object")
        params.update(body)
    return params


def add_control_routes(app: web.Application, server: "EmulatorServer") -> None:
    """Register ``/_emulator/...`` on ``app`` for the emulators of ``server``."""

    async def index(request: web.Request) -> web.Response:
        return _json({"url": server.url, "exchanges": list(server.emulators), "env_config": server.env_config()})

    def handler(table: dict[str, Action], extra: dict[str, Callable[[str], Any]]) -> Callable[
            [web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            exchange, name = request.match_info["exchange"], request.match_info["action"]
            if exchange not in server.emulators:
                return _json({"error": f"exchange {exchange!r} is not served here"}, 404)
            if name in extra:
                return _json(extra[name](exchange))
            if name not in table:
                return _json({"error": f"unknown endpoint {name!r}; {request.method} takes: "
                                       f"{', '.join(sorted([*table, *extra]))}"}, 404)
            try:
                result = table[name](server.emulators[exchange], await _params(request))
                if asyncio.iscoroutine(result):
                    result = await result
            except EmulatorError as exc:
                return _json({"error": str(exc)}, 400)
            return _json(result if isinstance(result, dict) else {"ok": True, "result": result})

        return handle

    app.router.add_get("/_emulator", index)
    app.router.add_get("/_emulator/{exchange}/{action}", handler(READS, {"config": server.ccxt_config}))
    app.router.add_post("/_emulator/{exchange}/{action}", handler(ACTIONS, {}))
