"""The HTTP endpoint of every long-running process, served inside its asyncio loop (aiohttp):

    /metrics   Prometheus text exposition of the process's metric sources (``common.metrics``)
    /healthz   liveness: 200 whenever the event loop answers
    /readyz    readiness: 200, or 503 with a JSON reason, from the process's async readiness check

Bound to 127.0.0.1 unless told otherwise; port 0 means disabled. Wiring is one line::

    server = await serve_metrics(port, sources=[...], ready=readiness(redis_ready(redis), my_check))
    ...
    await server.stop()  # if server is not None
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Awaitable, Callable, Iterable, Optional

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from common.logs import redact
from common.metrics import RefreshingSource, build_registry

log = logging.getLogger(__name__)

#: A readiness check returns None when ready, else the reason it is not (shown in the 503 body).
ReadinessCheck = Callable[[], Awaitable[Optional[str]]]

#: bound on a readiness check and on refreshing metric sources before a scrape
CHECK_TIMEOUT = 5.0


def redis_ready(redis: aioredis.Redis) -> ReadinessCheck:
    """Ready while Redis answers PING."""

    async def check() -> Optional[str]:
        try:
            await redis.ping()
        except Exception as exc:  # any failure means "not ready", with the reason
            return f"redis unreachable: {exc}"
        return None

    return check


def readiness(*checks: ReadinessCheck) -> ReadinessCheck:
    """All ``checks`` in order; the first reason returned wins."""

    async def check() -> Optional[str]:
        for one in checks:
            reason = await one()
            if reason:
                return reason
        return None

    return check


class MetricsServer:
    """aiohttp server for /metrics, /healthz, /readyz on ``host:port`` inside the running loop."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        sources: Iterable[Collector] = (),
        ready: Optional[ReadinessCheck] = None,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"metrics port must be 1..65535, got {port}")
        self.host = host
        self.port = port
        self.sources = list(sources)
        self.registry = build_registry(self.sources)
        self.ready = ready
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> "MetricsServer":
        """Listen; raises OSError with one clear line if the port is taken or the host cannot be bound."""
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(f"metrics port {self.host}:{self.port} is already in use (choose another port, "
                              "or 0 to disable the endpoint)") from None
            raise OSError(f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}") from None
        log.info("metrics and health endpoint on %s (/metrics /healthz /readyz)", self.url)
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        await self._refresh_sources()
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _refresh_sources(self) -> None:
        refreshing = [source for source in self.sources if isinstance(source, RefreshingSource)]
        if not refreshing:
            return
        results = await asyncio.gather(
            *(asyncio.wait_for(source.refresh(), CHECK_TIMEOUT) for source in refreshing), return_exceptions=True
        )
        for source, result in zip(refreshing, results):
            if isinstance(result, BaseException):
                log.warning("metrics source %s failed to refresh: %r", type(source).__name__, result)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready is None:
            return web.json_response({"status": "ready"})
        try:
            reason = await asyncio.wait_for(self.ready(), CHECK_TIMEOUT)
        except asyncio.TimeoutError:
            reason = f"readiness check timed out after {CHECK_TIMEOUT:g} s"
        except Exception as exc:  # a broken check reports not-ready instead of a 500
            reason = f"readiness check failed: {exc!r}"
        if reason:
            return web.json_response({"status": "not ready", "reason": redact(reason)}, status=503)
        return web.json_response({"status": "ready"})


async def serve_metrics(
    port: int,
    *,
    host: str = "127.0.0.1",
    sources: Iterable[Collector] = (),
    ready: Optional[ReadinessCheck] = None,
) -> Optional[MetricsServer]:
    """Start the endpoint in the running loop; None when ``port`` is 0 (disabled)."""
    if port == 0:
        return None
    return await MetricsServer(port, host=host, sources=sources, ready=ready).start()
