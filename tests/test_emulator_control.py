"""EmulatorServer lifecycle, the HTTP control API under /_emulator/, and the ``emulate`` command."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import aiohttp
import pytest
from click.testing import CliRunner

from cli import main
from emulator import EmulatorError, EmulatorServer

WAIT = 10.0


async def test_control_api_drives_the_emulator(emulator: EmulatorServer) -> None:
    control = emulator.url + "/_emulator/deribit/"
    async with aiohttp.ClientSession() as session:
        async with session.get(emulator.url + "/_emulator") as resp:
            assert (await resp.json())["env_config"] == emulator.env_config()
        async with session.post(control + "pause") as resp:
            assert resp.status == 200
        assert emulator.stats("deribit")["faults"]["paused"] is True
        async with session.get(control + "book", params={"instrument": "BTC-PERPETUAL", "depth": "5"}) as resp:
            served = await resp.json()
        assert served["bids"] == emulator.book("deribit", "BTC-PERPETUAL", depth=5)["bids"]
        assert len(served["asks"]) == 5
        async with session.post(control + "shift", json={"instrument": "BTC-PERPETUAL", "offset": 100}) as resp:
            assert resp.status == 200
        assert emulator.book("deribit", "BTC-PERPETUAL", depth=5)["bids"] == [[p + 100, a] for p, a in served["bids"]]
        for action, params in [("stall", {"on": "true"}), ("fail_subscribe", {"count": "3"}),
                               ("skip", {"instrument": "ETH-PERPETUAL"})]:
            async with session.post(control + action, params=params) as resp:
                assert resp.status == 200, await resp.text()
        faults = emulator.stats("deribit")["faults"]
        assert (faults["stalled"], faults["fail_subscribe"], faults["skip"]) == (True, 3, ["ETH-PERPETUAL"])
        async with session.post(control + "rate", params={"update_interval": "0.02", "burst": "4"}) as resp:
            assert resp.status == 200
        assert (emulator.emulators["deribit"].update_interval, emulator.emulators["deribit"].burst) == (0.02, 4)
        async with session.get(control + "instruments") as resp:
            assert (await resp.json())["instruments"] == emulator.instruments("deribit")
        listed = emulator.url + "/api/v2/public/get_instruments?currency=ETH"
        async with session.post(control + "delist", params={"instrument": "ETH-PERPETUAL"}) as resp:
            assert resp.status == 200
        async with session.get(listed) as resp:
            assert "ETH-PERPETUAL" not in {i["instrument_name"] for i in (await resp.json())["result"]}
        async with session.post(control + "list", params={"instrument": "ETH-PERPETUAL"}) as resp:
            assert resp.status == 200
        async with session.get(listed) as resp:
            assert "ETH-PERPETUAL" in {i["instrument_name"] for i in (await resp.json())["result"]}


@pytest.mark.parametrize("method, path, params, status", [
    ("POST", "deribit/skip", {"instrument": "NOPE"}, 400),
    ("POST", "deribit/skip", {}, 400),
    ("POST", "deribit/delist", {"instrument": "NOPE"}, 400),
    ("POST", "deribit/stall", {"on": "maybe"}, 400),
    ("POST", "deribit/fail_subscribe", {"count": "many"}, 400),
    ("POST", "deribit/rate", {"burst": "0"}, 400),
    ("POST", "deribit/shift", {"instrument": "BTC-PERPETUAL", "offset": "-1000000"}, 400),
    ("GET", "deribit/book", {"instrument": "BTC-PERPETUAL", "depth": "x"}, 400),
    ("POST", "okx/pause", {}, 404),
    ("POST", "deribit/explode", {}, 404),
])
async def test_control_api_rejects_bad_requests_with_a_message(
        emulator: EmulatorServer, method: str, path: str, params: dict, status: int) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, emulator.url + "/_emulator/" + path, params=params) as resp:
            assert resp.status == status
            assert (await resp.json())["error"]


def test_server_lifecycle_and_errors() -> None:
    with EmulatorServer(["deribit"], seed=1) as server:
        assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
        with pytest.raises(OSError):
            EmulatorServer(["deribit"], port=server.port).start()
        with pytest.raises(EmulatorError, match="unknown instrument"):
            server.book("deribit", "BTC-1JAN00")
        with pytest.raises(EmulatorError, match="not served"):
            server.pause("okx")
    server.stop()  # idempotent
    with pytest.raises(RuntimeError):
        server.pause()
    with pytest.raises(EmulatorError, match="available: .*deribit"):
        EmulatorServer(["nasdaq"])


def test_cli_unknown_exchange_exits_2_with_one_line() -> None:
    result = CliRunner().invoke(main, ["emulate", "--exchange", "nasdaq", "--port", "0"])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: no emulator for exchange 'nasdaq'; available: ") and "deribit" in line


def test_cli_port_in_use_exits_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = CliRunner().invoke(main, ["emulate", "--port", str(busy.getsockname()[1])])
    assert result.exit_code == 2 and result.output.startswith("error: ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_emulate_serves_until_sigterm() -> None:
    port = free_port()
    command = [sys.executable, "-c", "import sys; from cli import main; sys.exit(main())",
               "emulate", "--exchange", "deribit", "--port", str(port), "--seed", "7", "--update-interval", "0.05"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()  # blocks until the server listens (or the process dies)
        assert f"http://127.0.0.1:{port}" in banner, banner + process.stderr.read()
        lines = [process.stdout.readline() for _ in range(3)]
        env_line = next(line for line in lines if "CCXT_COLLECTOR_EXCHANGE_CONFIG=" in line)
        env_value = json.loads(env_line.split("=", 1)[1].strip().strip("'"))
        assert env_value["deribit"]["urls"]["api"]["rest"] == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/public/get_instruments?currency=BTC",
                                    timeout=WAIT) as resp:
            names = {r["instrument_name"] for r in json.load(resp)["result"]}
        assert {"BTC-PERPETUAL", "BTC-25DEC26", "BTC-25DEC26-60000-C"} <= names
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
        assert "emulator stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
