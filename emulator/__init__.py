"""Local exchange emulators that unmodified ccxt.pro streams order books from (offline demos, load tests, CI).

    from emulator import EmulatorServer
    with EmulatorServer(exchanges=["deribit"], seed=42) as server:
        exchange = ccxt.pro.deribit(server.ccxt_config("deribit"))
"""

from emulator.base import EmulatorError, ExchangeEmulator
from emulator.registry import EXCHANGES
from emulator.server import EmulatorServer

__all__ = ["EXCHANGES", "EmulatorError", "EmulatorServer", "ExchangeEmulator"]
