"""Per-symbol streaming state: what the collector's status report shows for each subscribed symbol."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Optional

# lifecycle of one symbol
SUBSCRIBING = "subscribing"  # waiting for its first book since the (re)subscription
STREAMING = "streaming"
RECONNECTING = "reconnecting"  # failed, backing off before resubscribing
FAILED = "failed"  # gave up after max_reconnect_attempts consecutive failures

# where the symbol's task is awaiting (the watchdog only interrupts a task waiting for data)
PHASE_SUBSCRIBE = "subscribe"
PHASE_WATCH = "watch"
PHASE_BACKOFF = "backoff"


@dataclass(eq=False)
class SymbolState:
    """One subscribed symbol: its streaming task, counters and last error."""

    symbol: str
    market_type: str
    state: str = SUBSCRIBING
    phase: str = PHASE_SUBSCRIBE
    seq: int = 0  # collector sequence of the last emitted snapshot (never reset)
    updates: int = 0
    reconnects: int = 0
    resyncs: int = 0
    errors: int = 0
    consecutive_failures: int = 0
    last_error: Optional[str] = None
    last_update_at: Optional[float] = None  # time.monotonic() of the last emitted snapshot
    progress_at: float = field(default_factory=time.monotonic)  # last update or (re)subscription
    resync_next: bool = True  # the next emitted snapshot starts a new continuous run
    interrupt: Optional[BaseException] = None  # set by the watchdog together with task.cancel()
    task: Optional[asyncio.Task] = None

    def status(self) -> dict[str, Any]:
        age = None if self.last_update_at is None else round(time.monotonic() - self.last_update_at, 3)
        return {
            "state": self.state,
            "market_type": self.market_type,
            "seq": self.seq,
            "updates": self.updates,
            "reconnects": self.reconnects,
            "resyncs": self.resyncs,
            "errors": self.errors,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_update_age": age,
        }
