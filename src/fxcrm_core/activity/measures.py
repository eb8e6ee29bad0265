"""What the activity read model measures, over which windows, and how a deal's notional is
priced: the typed vocabulary tier rules, segmentation and churn warnings are written in."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from decimal import Decimal

import attrs

from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.kernel.money import Currency, UnroundedMoney

__all__ = [
    "Figure",
    "Instrument",
    "InstrumentSpec",
    "Measure",
    "Period",
    "fx_instrument",
]


class Measure(enum.Enum):
    """A figure of a client's activity over a window of trading days."""

    TRADES = "trades"  # trade deals (each open and each close is one)
    LOTS = "lots"  # lots of those deals
    VOLUME_USD = "volume_usd"  # their notional, in USD
    DEPOSITS = "deposits"  # credited to the client's wallets (less chargebacks), in USD
    WITHDRAWALS = "withdrawals"  # paid out of them (less reversals), in USD
    NET_DEPOSITS = "net_deposits"  # deposits - withdrawals
    ACTIVE_DAYS = "active_days"  # trading days with at least one trade deal
    REVENUE = "revenue"  # commissions, fees and markup charged, FX revenue, withdrawal fees
    REBATES = "rebates"  # rebates the IBs earned on the client's deals
    CONTRIBUTION = "contribution"  # revenue - rebates

    @property
    def in_usd(self) -> bool:
        """A money figure: its value is in USD (what had a rate), the rest kept apart."""
        return self in _MONEY or self is Measure.VOLUME_USD


_MONEY = frozenset(
    {
        Measure.DEPOSITS,
        Measure.WITHDRAWALS,
        Measure.NET_DEPOSITS,
        Measure.REVENUE,
        Measure.REBATES,
        Measure.CONTRIBUTION,
    }
)


class Period(enum.Enum):
    """A window that starts at a calendar boundary: the trading days of the month (or quarter)
    of the asked day, up to and including it."""

    MONTH = "month"
    QUARTER = "quarter"


@attrs.frozen
class Figure:
    """A measure over a window. ``value`` is a count, lots, or USD rounded to the cent
    (half-even); ``by_currency`` are the money amounts as they happened, exact, per currency;
    ``unpriced`` is what had no USD rate at its time and so is not in ``value``."""

    measure: Measure
    value: Decimal
    by_currency: tuple[UnroundedMoney, ...] = ()
    unpriced: tuple[UnroundedMoney, ...] = ()


@attrs.frozen
class Instrument:
    """How a symbol's notional is counted: ``contract_size`` units per lot, priced in ``quote``
    (the symbol's profit currency). Notional = lots x contract size x price, in ``quote``."""

    contract_size: Decimal
    quote: Currency

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.contract_size, Decimal) or not self.contract_size > 0:
            raise ValidationError("a contract size is a positive Decimal")
        if not isinstance(self.quote, Currency):
            raise ValidationError("an instrument's quote is a Currency")


InstrumentSpec = Callable[[str], Instrument | None]

_PAIR = re.compile(r"([A-Z]{3})([A-Z]{3})")
_METALS = {"XAU": Decimal(100), "XAG": Decimal(5000), "XPT": Decimal(100), "XPD": Decimal(100)}
_LOT = Decimal(100_000)


def fx_instrument(symbol: str) -> Instrument | None:
    """The default instruments: a currency pair (six letters, any broker suffix after them,
    ``EURUSD.m``) trades 100,000 units of its base per lot, priced in its quote currency; gold
    100 oz, silver 5,000 oz. Anything else (indices, CFDs): None, no notional (pass your own
    ``instruments=``).

    >>> fx_instrument("EURUSD.pro")
    Instrument(contract_size=Decimal('100000'), quote=Currency('USD'))
    >>> fx_instrument("XAUUSD").contract_size, fx_instrument("US30") is None
    (Decimal('100'), True)
    """
    found = _PAIR.match(symbol.upper()) if isinstance(symbol, str) else None
    if found is None:
        return None
    base, code = found.groups()
    try:
        quote = Currency.of(code)
        if base not in _METALS:
            Currency.of(base)  # metals are ISO codes without a minor unit: not a Currency here
    except FxCrmError:
        return None
    return Instrument(_METALS.get(base, _LOT), quote)
