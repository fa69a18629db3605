"""User callbacks, run so that no stream ever waits for them.

* **async** ``on_orderbook_update``: one lane per symbol (a bounded queue drained by one task), each call
  bounded by ``callback_timeout``. A slow callback delays only its own symbol's later callbacks.
* **sync** callbacks (and sync ``on_error``): one worker thread, in order. Sync callbacks typically do
  file I/O (``StreamingDataRecorder.record_snapshot``); on the event loop they would stall every
  stream, in one thread they are never concurrent with themselves. A sync callback that returns a
  coroutine has it run on the loop.

A callback that raises, times out or falls behind by more than ``max_backlog`` snapshots is reported
to ``on_error(symbol, CallbackError)``; streaming continues either way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
from collections import deque
from typing import Any, Callable, Optional

from common.model import OrderbookSnapshot
from producer.errors import CallbackError

log = logging.getLogger(__name__)

DEFAULT_MAX_BACKLOG = 100_000
DROP_REPORT_EVERY = 1000  # after the first dropped snapshot, report every this many
_STOP = object()


def is_async_callable(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class CallbackRunner:
    """Dispatches ``on_update(snapshot)`` and ``on_error(symbol, error)`` off the streams' path."""

    def __init__(
        self,
        on_update: Optional[Callable[..., Any]],
        on_error: Optional[Callable[..., Any]],
        timeout: float,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
    ) -> None:
        self._on_update = on_update
        self._on_error = on_error
        self._update_is_async = on_update is not None and is_async_callable(on_update)
        self._error_is_async = on_error is not None and is_async_callable(on_error)
        self._timeout = timeout
        self._max_backlog = max_backlog
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._lanes: dict[str, _Lane] = {}
        self._error_tasks: set[asyncio.Task] = set()
        self._jobs: "queue.Queue[Any]" = queue.Queue(maxsize=max_backlog)
        self._thread: Optional[threading.Thread] = None
        self.dropped = 0

    @property
    def has_update_callback(self) -> bool:
        return self._on_update is not None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if (self._on_update and not self._update_is_async) or (self._on_error and not self._error_is_async):
            self._thread = threading.Thread(target=self._work, name="collector-callbacks", daemon=True)
            self._thread.start()

    # -- dispatch (called on the event loop, never blocks) --------------------------------------------------

    def update(self, snapshot: OrderbookSnapshot) -> None:
        if self._update_is_async:
            lane = self._lanes.get(snapshot.symbol)
            if lane is None:
                lane = self._lanes[snapshot.symbol] = _Lane(self._max_backlog)
            if len(lane.pending) == lane.pending.maxlen:
                self._dropped(snapshot.symbol)
            lane.pending.append(snapshot)
            if lane.task is None or lane.task.done():
                lane.task = asyncio.ensure_future(self._drain(lane))
        elif self._on_update is not None:
            self._submit(snapshot.symbol, self._on_update, snapshot)

    def error(self, symbol: str, error: BaseException) -> None:
        if self._on_error is None:
            return
        if self._error_is_async:
            task = asyncio.ensure_future(self._run_error(symbol, error))
            self._error_tasks.add(task)
            task.add_done_callback(self._error_tasks.discard)
        else:
            self._submit(symbol, self._on_error, symbol, error)

    def _submit(self, symbol: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._jobs.put_nowait((symbol, fn, args))
        except queue.Full:
            self._dropped(symbol)

    def _dropped(self, symbol: str) -> None:
        self.dropped += 1
        if self.dropped % DROP_REPORT_EVERY == 1:
            log.warning("on_orderbook_update falls behind: %d snapshot(s) dropped so far", self.dropped)
            if self._on_update is not self._on_error:
                self.error(symbol, CallbackError(f"on_orderbook_update falls behind; {self.dropped} dropped"))

    # -- async lane ---------------------------------------------------------------------------------------

    async def _drain(self, lane: "_Lane") -> None:
        pending = lane.pending
        while pending:
            snapshot = pending.popleft()
            try:
                async with asyncio.timeout(self._timeout):
                    await self._on_update(snapshot)
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise
                self._callback_failed(snapshot.symbol, "on_orderbook_update was cancelled", None)
            except TimeoutError as exc:
                self._callback_failed(snapshot.symbol, f"on_orderbook_update exceeded {self._timeout:g} s", exc)
            except Exception as exc:
                self._callback_failed(snapshot.symbol, f"on_orderbook_update raised {exc!r}", exc)

    async def _run_error(self, symbol: str, error: BaseException) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._on_error(symbol, error)
        except Exception:
            log.exception("on_error(%s, %r) failed", symbol, error)

    def _callback_failed(self, symbol: str, message: str, cause: Optional[BaseException]) -> None:
        log.debug("%s: %s", symbol, message)
        failure = CallbackError(message)
        failure.__cause__ = cause
        self.error(symbol, failure)

    # -- sync worker thread --------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            symbol, fn, args = job
            try:
                result = fn(*args)
                if inspect.iscoroutine(result):
                    asyncio.run_coroutine_threadsafe(result, self._loop)
            except Exception as exc:
                if fn is self._on_error:
                    log.exception("on_error(%s, ...) failed", symbol)
                else:
                    self._loop.call_soon_threadsafe(
                        self._callback_failed, symbol, f"on_orderbook_update raised {exc!r}", exc
                    )

    # -- shutdown -------------------------------------------------------------------------------------------

    async def close(self, timeout: float) -> None:
        """Let queued callbacks finish (up to ``timeout`` s), then stop."""
        lanes = [lane.task for lane in self._lanes.values() if lane.task is not None and not lane.task.done()]
        tasks = lanes + list(self._error_tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
        if self._thread is not None:
            try:
                self._jobs.put(_STOP, timeout=timeout)
            except queue.Full:
                log.warning("callback thread still busy after %g s; abandoning its backlog", timeout)
            await asyncio.to_thread(self._thread.join, timeout)
            self._thread = None


class _Lane:
    """One symbol's pending async callbacks and the task draining them."""

    __slots__ = ("pending", "task")

    def __init__(self, maxlen: int) -> None:
        self.pending: deque = deque(maxlen=maxlen)
        self.task: Optional[asyncio.Task] = None
