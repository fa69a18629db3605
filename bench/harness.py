"""What every benchmark shares: result rows and the table, process CPU/RSS from ``/proc``, and the processes a
benchmark runs (the blast emulator, a client program, a throwaway Redis).

Absolute figures drift on a shared machine, so every benchmark reports a ratio against a baseline measured in
the same run, next to the absolute numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from emulator.redis_server import RedisServer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CHILD_START_TIMEOUT = 120.0  # seconds a client program may take to report ready


class BenchError(RuntimeError):
    """A benchmark could not run (a process failed to start, a client never got ready ...)."""


@dataclass
class Row:
    """One line of the results table. ``ratio`` is measured / baseline; ``ok`` None means no target."""

    bench: str
    metric: str
    measured: str
    baseline: str = ""
    ratio: Optional[float] = None
    target: str = ""
    ok: Optional[bool] = None
    note: str = ""


def print_table(rows: list[Row], out=sys.stdout) -> None:
    """A fixed-width table, one row per measurement, then the notes."""
    header = ("benchmark", "metric", "measured", "baseline", "ratio", "target", "ok")
    cells = [header] + [
        (r.bench, r.metric, r.measured, r.baseline, "" if r.ratio is None else f"{r.ratio:.2f}", r.target,
         {None: "", True: "yes", False: "NO"}[r.ok])
        for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    for n, line in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * width for width in widths), file=out)
    notes = [(r.bench, r.metric, r.note) for r in rows if r.note]
    if notes:
        print(file=out)
        for bench, metric, note in notes:
            print(f"* {bench} / {metric}: {note}", file=out)
    out.flush()


# -- /proc ------------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid``."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_SIZE


def machine_description() -> dict[str, str]:
    """nproc, CPU model, Python and redis-server versions."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {"nproc": str(os.cpu_count()), "cpu": model, "python": sys.version.split()[0],
            "redis": redis_version.split(" v=")[1].split()[0] if " v=" in redis_version else redis_version}


# -- processes ---------------------------------------------------------------------------------------------------


class Child:
    """A benchmark program in its own process that reports JSON lines on stdout (see :mod:`bench.feeds`)."""

    def __init__(self, args: list[str], python: str = sys.executable) -> None:
        self.proc = subprocess.Popen([python, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=Path(__file__).resolve().parent.parent)
        self.reports: list[dict] = []
        self._stderr: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.reports.append(report)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr = (self._stderr + [line])[-30:]

    def wait_for(self, key: str, timeout: float = CHILD_START_TIMEOUT) -> dict:
        """The first report that has ``key``; BenchError if the process exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for report in self.reports:
                    if key in report:
                        return report
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    break
                self._cond.wait(0.2)
        raise BenchError(f"{' '.join(self.proc.args[1:4])}: no {key!r} report "
                         f"(exit {self.proc.poll()}): {''.join(self._stderr[-10:]).strip()}")

    def stop(self, timeout: float = 60.0) -> dict:
        """SIGTERM, wait for the exit; returns the last report (the program's final counters)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.05)  # let the reader thread take the last line
        with self._cond:
            return self.reports[-1] if self.reports else {}


class BlastEmulator:
    """:mod:`emulator.blast` in its own process (so it never shares a core's time slice with the client)."""

    def __init__(self, rate: float = 0.0, option_strikes: int = 5, record_sends: bool = False) -> None:
        args = ["-m", "emulator.blast", "--rate", str(rate), "--option-strikes", str(option_strikes)]
        self.proc = subprocess.Popen([sys.executable, *args, *(["--record-sends"] if record_sends else [])],
                                     stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        line = self.proc.stdout.readline().split()
        if len(line) != 2:
            self.stop()
            raise BenchError("the blast emulator did not start")
        self.url, self.instrument_count = line[0], int(line[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            return reply.read()

    def messages_sent(self) -> int:
        return json.loads(self.get("/_emulator/deribit/stats"))["messages_sent"]

    def instruments(self) -> list[str]:
        return json.loads(self.get("/_emulator/deribit/instruments"))["instruments"]

    def set_rate(self, rate: float) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/_blast/rate?rate={rate}", method="POST"),
                               timeout=30).read()

    def send_times(self) -> tuple[int, list[int]]:
        """(first change id, send time in ns of every change id since)."""
        from array import array

        body = self.get("/_blast/sends")
        times = array("q")
        times.frombytes(body[8:])
        return int.from_bytes(body[:8], "little", signed=True), list(times)

    def ccxt_config(self) -> dict:
        ws = self.url.replace("http://", "ws://", 1) + "/ws/api/v2"
        return {"urls": {"api": {"rest": self.url, "ws": ws}}}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "BlastEmulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def redis_server(prefix: str = "bench-redis-") -> Iterator[RedisServer]:
    """A throwaway redis-server (no persistence), stopped afterwards."""
    with scratch_dir(prefix) as directory:
        server = RedisServer(directory).start()
        try:
            yield server
        finally:
            server.stop()


@dataclass
class Window:
    """Messages the emulator sent and CPU the client used over one measurement window."""

    seconds: float
    messages: int
    cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_us_per_message(self) -> float:
        return self.cpu / max(self.messages, 1) * 1e6

    @property
    def rate_per_core(self) -> float:
        """Messages per CPU-second of the client (what one fully busy core would do)."""
        return self.messages / max(self.cpu, 1e-9)


def measure_window(emulator: BlastEmulator, pids: list[int], seconds: float) -> Window:
    """Count the emulator's sent messages and the CPU of ``pids`` over ``seconds`` of wall time."""
    sent0, cpu0, t0 = emulator.messages_sent(), sum(map(cpu_seconds, pids)), time.monotonic()
    time.sleep(seconds)
    sent1, cpu1, t1 = emulator.messages_sent(), sum(map(cpu_seconds, pids)), time.monotonic()
    return Window(t1 - t0, sent1 - sent0, cpu1 - cpu0)


def measure_client(emulator: BlastEmulator, kind: str, count: int, seconds: float, warmup: float,
                   redis_url: str = "", python: str | None = None) -> tuple[Window, dict, dict]:
    """Run one :mod:`bench.feeds` program: (window, its ready report, its final report)."""
    args = ["-m", "bench.feeds", kind, "--url", emulator.url, "--count", str(count)]
    if redis_url:
        args += ["--redis-url", redis_url]
    child = Child(args, **({"python": python} if python else {}))
    try:
        ready = child.wait_for("ready")
        time.sleep(warmup)
        window = measure_window(emulator, [child.pid], seconds)
    finally:
        final = child.stop()
    return window, ready, final
