"""Pytest fixtures around the exchange emulator (registered in conftest.py via ``pytest_plugins``)."""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from common.config import EXCHANGE_CONFIG_ENV
from emulator import EmulatorServer

FAST_UPDATE_INTERVAL = 0.05


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A started EmulatorServer serving deribit on a free 127.0.0.1 port, books stepping every 50 ms."""
    server = EmulatorServer(exchanges=["deribit"], seed=42, port=0, update_interval=FAST_UPDATE_INTERVAL)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def emulator_env(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """``emulator`` with $CCXT_COLLECTOR_EXCHANGE_CONFIG pointing every served exchange at it."""
    monkeypatch.setenv(EXCHANGE_CONFIG_ENV, json.dumps(emulator.env_config()))
    return emulator
