"""``EmulatorServer``: one aiohttp server on a background thread (its own event loop) hosting exchange emulators.

Sync and async code alike control it through plain method calls, which run on the server's loop; an
out-of-process server is driven through the same operations over HTTP under ``/_emulator/`` (see
:mod:`emulator.control`).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Iterable, Mapping

from aiohttp import web

from emulator.base import EmulatorError, ExchangeEmulator
from emulator.control import add_control_routes
from emulator.registry import EXCHANGES

CALL_TIMEOUT = 10.0  # seconds a control call may take on the server loop


def make_emulator(name: str, classes: Mapping[str, type[ExchangeEmulator]] = EXCHANGES,
                  **kwargs: Any) -> ExchangeEmulator:
    """Instantiate the emulator of exchange ``name`` from ``classes`` (EmulatorError naming the supported ones
    otherwise)."""
    try:
        cls = classes[name]
    except KeyError:
        raise EmulatorError(f"no emulator for exchange {name!r}; available: {', '.join(sorted(classes))}") from None
    return cls(**kwargs)


class EmulatorServer:
    """Serves the emulators of ``exchanges`` on ``host:port`` (0 = a free port) from a background thread.

    ``emulator_classes`` replaces registry entries (e.g. ``{"deribit": BlastDeribitEmulator}``)."""

    def __init__(self, exchanges: Iterable[str] = ("deribit",), seed: int = 42, host: str = "127.0.0.1",
                 port: int = 0, update_interval: float = 0.1, burst: int = 1,
                 exchange_options: dict[str, dict] | None = None,
                 emulator_classes: Mapping[str, type[ExchangeEmulator]] | None = None) -> None:
        names = list(dict.fromkeys(exchanges))
        if not names:
            raise EmulatorError("at least one exchange is required")
        if not update_interval > 0:
            raise EmulatorError("update_interval must be > 0")
        options = exchange_options or {}
        self.emulators: dict[str, ExchangeEmulator] = {
            name: make_emulator(name, {**EXCHANGES, **(emulator_classes or {})}, seed=seed,
                                update_interval=update_interval, burst=burst, **options.get(name, {}))
            for name in names
        }
        for emulator in self.emulators.values():
            emulator.build_books()
        self.seed = seed
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<EmulatorServer {','.join(self.emulators)} {self.url if self._runner else 'stopped'}>"

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> "EmulatorServer":
        """Start serving; returns once the port is listening (raises OSError if it cannot bind)."""
        if self._thread is not None:
            raise RuntimeError("EmulatorServer already started")
        self._thread = threading.Thread(target=self._serve, name="emulator-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(CALL_TIMEOUT):
            raise RuntimeError("emulator server did not start in time")
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise self._startup_error
        return self

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to start()'s caller
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _startup(self) -> None:
        app = web.Application()
        for emulator in self.emulators.values():
            emulator.add_routes(app)
        add_control_routes(app, self)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        for emulator in self.emulators.values():
            emulator.start()

    async def _shutdown(self) -> None:
        for emulator in self.emulators.values():
            await emulator.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop serving: connections are aborted, the thread ends. Idempotent."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT)
        self._thread = None

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses and configs ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def emulator(self, exchange: str) -> ExchangeEmulator:
        try:
            return self.emulators[exchange]
        except KeyError:
            raise EmulatorError(f"exchange {exchange!r} is not served here; serving: {', '.join(self.emulators)}") \
                from None

    def ccxt_config(self, exchange: str) -> dict:
        """ccxt constructor config (deep-merge it into yours) that points ccxt's ``exchange`` at this server."""
        return self.emulator(exchange).ccxt_config(self.url)

    def env_config(self) -> dict:
        """``{exchange: ccxt config}`` for every served exchange: the value of $CCXT_COLLECTOR_EXCHANGE_CONFIG."""
        return {name: self.ccxt_config(name) for name in self.emulators}

    def instruments(self, exchange: str) -> list[str]:
        """Native instrument names the exchange lists."""
        return self.emulator(exchange).instruments()

    # -- control (each runs on the server loop) ----------------------------------------------------------------

    def call(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(*args)`` (sync or async) on the server loop and return its result."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("EmulatorServer is not running")

        async def run() -> Any:
            result = func(*args)
            return await result if asyncio.iscoroutine(result) else result

        if threading.current_thread() is self._thread:
            raise RuntimeError("call() from the server loop itself; call the emulator directly")
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(CALL_TIMEOUT)

    def _targets(self, exchange: str | None) -> list[ExchangeEmulator]:
        return list(self.emulators.values()) if exchange is None else [self.emulator(exchange)]

    def pause(self, exchange: str | None = None) -> None:
        """Stop book changes (all exchanges by default); connections stay up, pings/heartbeats are answered."""
        for emulator in self._targets(exchange):
            self.call(emulator.pause)

    def resume(self, exchange: str | None = None) -> None:
        for emulator in self._targets(exchange):
            self.call(emulator.resume)

    def book(self, exchange: str, instrument: str, depth: int | None = None) -> dict:
        """The server's current book: ``{"bids": [[p, a], ...], "asks": [...], "change_id", "timestamp"}``."""
        return self.call(self.emulator(exchange).book_view, instrument, depth)

    def close_connections(self, exchange: str) -> int:
        """WebSocket close (code 1001) on every connection; returns how many."""
        return self.call(self.emulator(exchange).close_connections)

    def abort_connections(self, exchange: str) -> int:
        """TCP abort (no close frame) on every connection; returns how many."""
        return self.call(self.emulator(exchange).abort_connections)

    def set_listed(self, exchange: str, instrument: str, listed: bool) -> None:
        """List or delist an instrument: a new listing or an expiry, as the next market reload sees it."""
        self.call(self.emulator(exchange).set_listed, instrument, listed)

    def skip_sequence(self, exchange: str, instrument: str) -> None:
        """The instrument's next change is applied to the server's book but never sent (a sequence gap)."""
        self.call(self.emulator(exchange).skip_sequence, instrument)

    def bad_checksum(self, exchange: str, instrument: str) -> None:
        """The instrument's next book update carries a wrong checksum (OKX; EmulatorError if none)."""
        self.call(self.emulator(exchange).bad_checksum, instrument)

    def send_malformed(self, exchange: str, payload: str | None = None) -> int:
        """One garbage frame to every connection (default: a truncated JSON object); returns how many."""
        emulator = self.emulator(exchange)
        return self.call(emulator.send_raw, payload if payload is not None else emulator.malformed_frame)

    def stall(self, exchange: str, on: bool = True) -> None:
        """Stop (True) or restart (False) sending anything: no data, replies or pongs; nothing is closed.
        Frames that would have been sent meanwhile are dropped (a client sees a sequence gap afterwards)."""
        self.call(self.emulator(exchange).stall, on)

    def fail_subscribe(self, exchange: str, count: int = 1) -> None:
        """The next ``count`` subscribe requests get a JSON-RPC error reply."""
        self.call(self.emulator(exchange).fail_subscribe, count)

    def shift_price(self, exchange: str, instrument: str, offset: float) -> None:
        """Move every level of the book by ``offset`` (price units), published as one change."""
        self.call(self.emulator(exchange).shift_price, instrument, offset)

    def set_rate(self, exchange: str | None = None, update_interval: float | None = None,
                 burst: int | None = None) -> None:
        """Change how often books step (``update_interval`` s) and how many changes per step (``burst``)."""
        for emulator in self._targets(exchange):
            self.call(emulator.set_rate, update_interval, burst)

    def stats(self, exchange: str) -> dict:
        """Counters (connections, subscriptions, messages sent ...) and fault switches."""
        return self.call(self.emulator(exchange).stats_dict)
