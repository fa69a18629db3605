"""The Deribit emulator through unmodified ccxt.pro (and a raw WebSocket client where ccxt hides the wire)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable

import aiohttp
import ccxt.pro
import pytest

from emulator import EmulatorServer

WAIT = 10.0  # seconds any single wait may take before the test fails


@pytest.fixture
async def deribit(emulator: EmulatorServer) -> AsyncIterator[Any]:
    """An unmodified ccxt.pro deribit client pointed at the emulator, markets loaded."""
    exchange = ccxt.pro.deribit(emulator.ccxt_config("deribit"))
    await asyncio.wait_for(exchange.load_markets(), WAIT)
    yield exchange
    await exchange.close()


async def eventually(condition: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def levels(side: list) -> list[list[float]]:
    """ccxt book side ``[[price, amount, count], ...]`` -> ``[[price, amount], ...]``."""
    return [[price, amount] for price, amount, *_ in side]


async def test_load_markets_lists_perpetuals_futures_and_options(deribit: Any) -> None:
    markets = deribit.markets
    perpetual = markets["BTC/USD:BTC"]
    assert (perpetual["id"], perpetual["type"], perpetual["inverse"]) == ("BTC-PERPETUAL", "swap", True)
    assert markets["ETH/USD:ETH"]["swap"]
    future = markets["BTC/USD:BTC-261225"]
    assert (future["id"], future["type"], future["active"]) == ("BTC-25DEC26", "future", True)
    assert future["precision"]["price"] == 2.5 and future["contractSize"] == 10
    option = markets["BTC/USD:BTC-261225-60000-C"]
    assert (option["id"], option["type"], option["strike"], option["optionType"]) == (
        "BTC-25DEC26-60000-C", "option", 60000, "call")
    for currency in ("BTC", "ETH"):
        futures = [m for m in markets.values() if m["base"] == currency and m["future"]]
        options = [m for m in markets.values() if m["base"] == currency and m["option"]]
        assert len(futures) >= 2
        assert len({m["expiry"] for m in options}) >= 2 and len(options) >= 20
        assert {m["optionType"] for m in options} == {"call", "put"}
        assert all(m["expiry"] % 86400000 == 8 * 3600000 for m in futures + options)  # 08:00 UTC


async def test_watch_order_book_streams_and_matches_server_when_paused(emulator: EmulatorServer,
                                                                       deribit: Any) -> None:
    first = await asyncio.wait_for(deribit.watch_order_book("BTC/USD:BTC"), WAIT)
    first_nonce = first["nonce"]
    assert 30 <= len(first["bids"]) <= 50 and 30 <= len(first["asks"]) <= 50
    assert first["bids"][0][0] < first["asks"][0][0]
    while (await asyncio.wait_for(deribit.watch_order_book("BTC/USD:BTC"), WAIT))["nonce"] == first_nonce:
        pass
    emulator.pause()
    book = deribit.orderbooks["BTC/USD:BTC"]
    server_book = emulator.book("deribit", "BTC-PERPETUAL")
    await eventually(lambda: levels(book["bids"]) == server_book["bids"] and levels(book["asks"]) ==
                     server_book["asks"], what="ccxt book == server book")
    again = emulator.book("deribit", "BTC-PERPETUAL")  # paused: no further changes
    assert (again["change_id"], again["bids"], again["asks"]) == (
        server_book["change_id"], server_book["bids"], server_book["asks"])


# -- a raw JSON-RPC client for what ccxt hides ------------------------------------------------------------------


class RawClient:
    """A bare aiohttp WebSocket client speaking Deribit's JSON-RPC."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = iter(range(1, 10**6))

    async def send(self, method: str, params: dict | None = None) -> int:
        request_id = next(self._ids)
        await self.ws.send_json({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        return request_id

    async def frame(self) -> aiohttp.WSMessage:
        return await asyncio.wait_for(self.ws.receive(), WAIT)

    async def next_json(self, predicate: Callable[[dict], bool], seen: list | None = None) -> dict:
        """The next JSON frame matching ``predicate`` (earlier frames are appended to ``seen``)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            msg = await self.frame()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = msg.json()
            if predicate(data):
                return data
            if seen is not None:
                seen.append(data)
        pytest.fail("no matching frame")

    async def call(self, method: str, params: dict | None = None) -> dict:
        request_id = await self.send(method, params)
        return await self.next_json(lambda m: m.get("id") == request_id)


def book_channel(instrument: str, kind: str, interval: str = "100ms") -> Callable[[dict], bool]:
    """Predicate: a ``snapshot``/``change`` notification of ``book.<instrument>.<interval>``."""
    channel = f"book.{instrument}.{interval}"
    return lambda m: m.get("params", {}).get("channel") == channel and m["params"]["data"]["type"] == kind


@pytest.fixture
async def raw(emulator: EmulatorServer) -> AsyncIterator[RawClient]:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(emulator.url + "/ws/api/v2", autoping=False) as ws:
            yield RawClient(ws)


async def test_snapshot_then_linked_changes_unsubscribe_and_fresh_snapshot(raw: RawClient) -> None:
    reply = await raw.call("public/subscribe", {"channels": ["book.ETH-PERPETUAL.raw"]})
    assert reply["result"] == ["book.ETH-PERPETUAL.raw"]
    snapshot = (await raw.next_json(book_channel("ETH-PERPETUAL", "snapshot", "raw")))["params"]["data"]
    assert "prev_change_id" not in snapshot and snapshot["instrument_name"] == "ETH-PERPETUAL"
    assert all(action == "new" for action, _, _ in snapshot["bids"] + snapshot["asks"])
    assert max(p for _, p, _ in snapshot["bids"]) < min(p for _, p, _ in snapshot["asks"])
    previous = snapshot["change_id"]
    for _ in range(3):
        change = (await raw.next_json(book_channel("ETH-PERPETUAL", "change", "raw")))["params"]["data"]
        assert change["prev_change_id"] == previous and change["change_id"] > previous
        assert {e[0] for e in change["bids"] + change["asks"]} <= {"new", "change", "delete"}
        assert isinstance(change["timestamp"], int)
        previous = change["change_id"]

    reply = await raw.call("public/unsubscribe", {"channels": ["book.ETH-PERPETUAL.raw"]})
    assert reply["result"] == ["book.ETH-PERPETUAL.raw"]
    # after the unsubscribe reply no notification arrives until a re-subscribe, which snapshots afresh
    seen: list[dict] = []
    subscribe = await raw.send("public/subscribe", {"channels": ["book.ETH-PERPETUAL.raw"]})
    end = await raw.send("public/test")
    await raw.next_json(lambda m: m.get("id") == end, seen)
    assert seen[0]["id"] == subscribe
    assert seen[1]["params"]["data"]["type"] == "snapshot"
    assert seen[1]["params"]["data"]["change_id"] >= previous


async def test_skip_sequence_leaves_a_change_id_gap(emulator: EmulatorServer, raw: RawClient) -> None:
    await raw.call("public/subscribe", {"channels": ["book.BTC-PERPETUAL.100ms"]})
    snapshot = (await raw.next_json(book_channel("BTC-PERPETUAL", "snapshot")))["params"]["data"]
    emulator.skip_sequence("deribit", "BTC-PERPETUAL")
    previous = snapshot["change_id"]
    while True:
        change = (await raw.next_json(book_channel("BTC-PERPETUAL", "change")))["params"]["data"]
        if change["prev_change_id"] != previous:
            break
        previous = change["change_id"]
    assert change["prev_change_id"] == previous + 1  # the skipped change was numbered, applied, never sent
    assert emulator.stats("deribit")["faults"]["skip"] == []


async def test_fail_subscribe_errors_the_next_n_subscribes_only(emulator: EmulatorServer, raw: RawClient) -> None:
    emulator.fail_subscribe("deribit", count=2)
    for _ in range(2):
        reply = await raw.call("public/subscribe", {"channels": ["book.BTC-PERPETUAL.100ms"]})
        assert reply["error"]["code"] == 10028 and "result" not in reply
    reply = await raw.call("public/subscribe", {"channels": ["book.BTC-PERPETUAL.100ms"]})
    assert reply["result"] == ["book.BTC-PERPETUAL.100ms"]
    await raw.next_json(book_channel("BTC-PERPETUAL", "snapshot"))


async def test_json_rpc_errors(raw: RawClient) -> None:
    unknown = await raw.call("public/subscribe", {"channels": ["book.BTC-1JAN99.100ms"]})
    assert unknown["error"]["code"] == -32602 and "instrument not found" in unknown["error"]["data"]["reason"]
    bad_channel = await raw.call("public/subscribe", {"channels": ["book.BTC-PERPETUAL.1s"]})
    assert bad_channel["error"]["code"] == -32602
    assert (await raw.call("public/no_such_method"))["error"]["code"] == -32601
    await raw.ws.send_str("not json")
    assert (await raw.next_json(lambda m: True))["error"]["code"] == -32700
    assert (await raw.call("public/hello", {"client_name": "t", "client_version": "1"}))["result"]["version"]


async def test_ws_ping_answered_and_heartbeat_test_requests() -> None:
    with EmulatorServer(["deribit"], update_interval=0.05,
                        exchange_options={"deribit": {"min_heartbeat_interval": 0.1}}) as server:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(server.url + "/ws/api/v2", autoping=False) as ws:
                client = RawClient(ws)
                await ws.ping(b"hi")
                pong = await client.frame()
                assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"hi")
                too_fast = await client.call("public/set_heartbeat", {"interval": 0.01})
                assert too_fast["error"]["code"] == -32602
                assert (await client.call("public/set_heartbeat", {"interval": 0.1}))["result"] == "ok"
                for _ in range(2):  # answered test_requests keep the connection open
                    await client.next_json(lambda m: m.get("method") == "heartbeat")
                    assert "result" in await client.call("public/test")
                await client.next_json(lambda m: m.get("method") == "heartbeat")
                # unanswered: the server closes the connection at the next interval
                closing = await client.frame()
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_stall_sends_nothing_until_resumed(emulator: EmulatorServer, raw: RawClient) -> None:
    await raw.call("public/subscribe", {"channels": ["book.BTC-PERPETUAL.100ms"]})
    emulator.stall("deribit", True)
    dropped_before = emulator.stats("deribit")["messages_dropped"]
    stalled_request = await raw.send("public/test")
    await raw.ws.ping(b"stalled")
    await eventually(lambda: emulator.stats("deribit")["messages_dropped"] > dropped_before + 2,
                     what="frames dropped by the stall")
    emulator.stall("deribit", False)
    seen: list[dict] = []
    after = await raw.send("public/test")
    while True:  # everything up to the reply to the post-stall request
        msg = await raw.frame()
        assert msg.type == aiohttp.WSMsgType.TEXT, f"unexpected {msg.type} (the stalled ping must not be answered)"
        if msg.json().get("id") == after:
            break
        seen.append(msg.json())
    assert all(m.get("id") != stalled_request for m in seen)


async def test_malformed_frame_reaches_clients(emulator: EmulatorServer, raw: RawClient) -> None:
    await raw.call("public/test")
    assert emulator.send_malformed("deribit") == 1
    msg = await raw.frame()
    assert msg.type == aiohttp.WSMsgType.TEXT
    with pytest.raises(ValueError):
        msg.json()


async def test_ccxt_ignores_plain_garbage_but_a_truncated_frame_stops_its_socket(
        emulator: EmulatorServer, deribit: Any) -> None:
    """Documents ccxt 4.5.90: non-JSON text is passed over; text starting with '{' that fails to parse raises inside
    ccxt's receive loop, which then never reads again (watches hang until ccxt's keepalive gives up)."""
    nonce = (await asyncio.wait_for(deribit.watch_order_book("BTC/USD:BTC"), WAIT))["nonce"]
    emulator.send_malformed("deribit", payload="garbage")
    while (book := await asyncio.wait_for(deribit.watch_order_book("BTC/USD:BTC"), WAIT))["nonce"] == nonce:
        pass
    emulator.send_malformed("deribit")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(deribit.watch_order_book("BTC/USD:BTC"), 1.0)
    assert book["bids"][0][0] < book["asks"][0][0]


@pytest.mark.parametrize("fault", ["close_connections", "abort_connections"])
async def test_connection_loss_raises_network_error_and_next_watch_recovers(
        emulator: EmulatorServer, deribit: Any, fault: str) -> None:
    await asyncio.wait_for(deribit.watch_order_book("BTC/USD:BTC"), WAIT)
    pending = asyncio.ensure_future(deribit.watch_order_book("BTC/USD:BTC"))
    emulator.pause()  # so the pending watch can only end by the fault
    assert getattr(emulator, fault)("deribit") == 1
    with pytest.raises(ccxt.NetworkError, match="closing code 1001" if fault == "close_connections" else None):
        await asyncio.wait_for(pending, WAIT)
    emulator.resume()
    deribit.orderbooks.pop("BTC/USD:BTC", None)  # ccxt would merge the new snapshot onto the stale book
    book = await asyncio.wait_for(deribit.watch_order_book("BTC/USD:BTC"), WAIT)
    assert book["bids"][0][0] < book["asks"][0][0]
    assert emulator.stats("deribit")["connections_total"] == 2


async def test_shift_price_moves_the_streamed_book(emulator: EmulatorServer, deribit: Any) -> None:
    await asyncio.wait_for(deribit.watch_order_book("BTC/USD:BTC"), WAIT)
    emulator.pause()
    before = emulator.book("deribit", "BTC-PERPETUAL")
    emulator.shift_price("deribit", "BTC-PERPETUAL", -1500)
    after = emulator.book("deribit", "BTC-PERPETUAL")
    assert [[p - 1500, a] for p, a in before["bids"]] == after["bids"]
    assert after["change_id"] == before["change_id"] + 1
    book = deribit.orderbooks["BTC/USD:BTC"]
    await eventually(lambda: levels(book["bids"]) == after["bids"] and levels(book["asks"]) == after["asks"],
                     what="ccxt book shifted")


async def test_rest_order_book_and_instrument_filters(emulator: EmulatorServer, deribit: Any) -> None:
    emulator.pause()
    server_book = emulator.book("deribit", "BTC-25DEC26-60000-C", depth=10)
    fetched = await asyncio.wait_for(deribit.fetch_order_book("BTC/USD:BTC-261225-60000-C", limit=10), WAIT)
    assert (fetched["bids"], fetched["asks"]) == (server_book["bids"], server_book["asks"])
    assert 0.001 < fetched["bids"][0][0] < 0.5  # quoted in BTC
    api = emulator.url + "/api/v2/public/"
    async with aiohttp.ClientSession() as session:
        async with session.get(api + "get_instruments", params={"currency": "ETH", "kind": "option"}) as resp:
            result = (await resp.json())["result"]
        assert result and {(r["base_currency"], r["kind"]) for r in result} == {("ETH", "option")}
        async with session.get(api + "get_instruments", params={"currency": "DOGE"}) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["data"]["param"] == "currency"
        async with session.get(api + "get_order_book", params={"instrument_name": "NOPE"}) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == -32602
        async with session.get(api + "subscribe") as resp:
            assert (await resp.json())["error"]["code"] == -32601


async def test_env_config_points_ccxt_at_the_emulator(emulator_env: EmulatorServer) -> None:
    from common.config import env_exchange_config

    exchange = ccxt.pro.deribit(env_exchange_config("deribit"))
    try:
        book = await asyncio.wait_for(exchange.watch_order_book("ETH/USD:ETH"), WAIT)
        assert book["bids"][0][0] < book["asks"][0][0]
    finally:
        await exchange.close()
