"""Exchange id -> emulator class. Adding an exchange = one module behind :class:`emulator.base.ExchangeEmulator`
plus one line here."""

from __future__ import annotations

from emulator.base import ExchangeEmulator
from emulator.deribit import DeribitEmulator
from emulator.bybit import BybitEmulator
from emulator.okx import OkxEmulator
from emulator.binanceusdm import BinanceUsdmEmulator
from emulator.htx import HtxEmulator

EXCHANGES: dict[str, type[ExchangeEmulator]] = {
    DeribitEmulator.name: DeribitEmulator,
    BybitEmulator.name: BybitEmulator,
    OkxEmulator.name: OkxEmulator,
    BinanceUsdmEmulator.name: BinanceUsdmEmulator,
    HtxEmulator.name: HtxEmulator,
}
