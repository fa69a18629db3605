"""Listing helpers shared by the OKX and Bybit emulators: expiries, option strike grids, fair prices, and the
decimal strings those exchanges send numbers as.

Expiries come from :func:`emulator.deribit.listed_expiries` (a weekly, two quarterlies and the guide's pinned
``25DEC26``, all Fridays 08:00 UTC, as OKX and Bybit list them too), so one option exists on every emulated
exchange under the same unified symbol (``BTC/USD:BTC-261225-60000-C`` on Deribit and OKX).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from emulator.books import NOMINAL_PRICES, black_scholes, future_price
from emulator.deribit import listed_expiries

MS_PER_DAY = 86_400_000
NEAR_EXPIRY_DAYS = 21  # option expiries closer than this use the fine strike step
#: strike step per currency (near expiry, far expiry)
STRIKE_STEPS: dict[str, tuple[float, float]] = {"BTC": (1000.0, 5000.0), "ETH": (50.0, 250.0)}


def decimal_text(value: float) -> str:
    """``value`` as OKX and Bybit write numbers: plain decimal, no exponent, no trailing zeros (``0.0005``,
    ``60000``)."""
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def to_ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def expiries_ms(now: dt.datetime) -> tuple[list[int], list[int]]:
    """(future expiries, option expiries) in epoch ms, listed at ``now``."""
    futures, options = listed_expiries(now)
    return [to_ms(e) for e in futures], [to_ms(e) for e in options]


@dataclass(frozen=True)
class OptionQuote:
    """One listed option and its fair value."""

    strike: float
    call: bool
    usd_value: float  # undiscounted Black-76 value in USD
    forward: float  # forward price of the underlying at expiry (USD)

    @property
    def letter(self) -> str:
        return "C" if self.call else "P"

    @property
    def coin_value(self) -> float:
        """The value in the underlying coin (how inverse options are quoted)."""
        return self.usd_value / self.forward


def option_chain(currency: str, spot: float, expiry_ms: int, now_ms: int, strikes_each_side: int) -> list[OptionQuote]:
    """Calls and puts on ``2 * strikes_each_side + 1`` strikes around the nominal price (so BTC 60000 is always
    listed), fine steps for near expiries, coarse steps for far ones."""
    near_step, far_step = STRIKE_STEPS[currency]
    step = near_step if expiry_ms - now_ms < NEAR_EXPIRY_DAYS * MS_PER_DAY else far_step
    centre = round(NOMINAL_PRICES[currency] / step) * step
    forward = future_price(spot, expiry_ms, now_ms)
    years = (expiry_ms - now_ms) / (365.0 * MS_PER_DAY)
    chain = []
    for k in range(-strikes_each_side, strikes_each_side + 1):
        strike = centre + k * step
        for call in (True, False):
            chain.append(OptionQuote(strike, call, black_scholes(forward, strike, years, call=call), forward))
    return chain


def yymmdd(expiry_ms: int) -> str:
    """``261225`` for 2026-12-25."""
    return dt.datetime.fromtimestamp(expiry_ms / 1000, dt.timezone.utc).strftime("%y%m%d")
