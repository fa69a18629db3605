"""Bounded waits for tests: poll a condition until it holds or a deadline passes (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Callable

import pytest

DEADLINE = 15.0  # seconds any condition may take to become true on a loaded machine


async def wait_until(condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``condition`` (sync or async) until truthy and return its value; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_until_sync(condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Blocking twin of :func:`wait_until`, for tests that drive subprocesses without an event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
