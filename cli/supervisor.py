"""Supervises a set of child processes on one machine: start, restart on crash, stop cleanly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger(__name__)


@dataclass
class ProcessSpec:
    """One role: a name and the ``ccxt-collector`` arguments that run it."""

    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Child:
    spec: ProcessSpec
    proc: Optional[subprocess.Popen] = None
    restarts: int = 0
    next_start: float = 0.0


class Supervisor:
    """Keeps every child running (restart with backoff, capped at 30 s); ``stop()`` SIGTERMs them all,
    waits ``grace`` seconds, then SIGKILLs stragglers."""

    def __init__(self, specs: list[ProcessSpec], grace: float = 30.0) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate process names in {names}")
        self.children = [_Child(spec) for spec in specs]
        self.grace = grace
        self._stop = threading.Event()

    def _spawn(self, child: _Child) -> None:
        cmd = [sys.executable, "-m", "cli", *child.spec.args]
        env = {**os.environ, **child.spec.env}
        child.proc = subprocess.Popen(cmd, env=env)
        log.info("started %s (pid %d): ccxt-collector %s", child.spec.name, child.proc.pid, " ".join(child.spec.args))

    def run(self, poll: float = 0.5) -> None:
        """Start everything and supervise until :meth:`stop`; then stop the children."""
        for child in self.children:
            self._spawn(child)
        try:
            while not self._stop.wait(poll):
                now = time.monotonic()
                for child in self.children:
                    code = child.proc.poll() if child.proc else None
                    if child.proc is not None and code is not None:
                        child.restarts += 1
                        delay = min(30.0, 2 ** min(child.restarts, 5) / 2)
                        log.error("%s exited with code %s; restarting in %.0f s (restart #%d)",
                                  child.spec.name, code, delay, child.restarts)
                        child.proc, child.next_start = None, now + delay
                    if child.proc is None and now >= child.next_start:
                        self._spawn(child)
        finally:
            self._terminate_all()

    def stop(self, *_: object) -> None:
        self._stop.set()

    def _terminate_all(self) -> None:
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in live:
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in live:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                log.info("%s stopped (exit %s)", child.spec.name, child.proc.returncode)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop within %.0f s; killing it", child.spec.name, self.grace)
                child.proc.kill()
                child.proc.wait()
