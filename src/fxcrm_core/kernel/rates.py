"""Exchange rates and the RateSource port: every conversion says which rate, source and time.

Inverse and cross rates exist only when asked for by name; a rate table never inverts silently.
"""

from __future__ import annotations

import bisect
import threading
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol, runtime_checkable

import attrs

from fxcrm_core.kernel._decimal import DIVISION, EXACT, DecimalLike, to_decimal
from fxcrm_core.kernel.errors import (
    CurrencyMismatchError,
    NegativeAmountError,
    RateNotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency, Money, Rounding, UnroundedMoney
from fxcrm_core.kernel.time import to_utc

__all__ = ["Conversion", "ExchangeRate", "RateSource", "RateTable"]


def _positive_rate(value: DecimalLike) -> Decimal:
    rate = to_decimal(value, "rate")
    if rate <= 0:
        raise NegativeAmountError("an exchange rate must be positive")
    return rate


def _as_of(value: datetime) -> datetime:
    return to_utc(value, "as_of")


@attrs.frozen(slots=True)
class ExchangeRate:
    """One unit of ``base`` is worth ``rate`` units of ``quote``, per ``source`` at ``as_of``.

    >>> from datetime import UTC, datetime
    >>> eurusd = ExchangeRate.of("EUR", "USD", "1.0850", "ecb", datetime(2026, 1, 5, tzinfo=UTC))
    >>> c = eurusd.convert(Money.of("100", "EUR"))
    >>> c.result, c.round(Rounding.HALF_EVEN)
    (UnroundedMoney('108.500000', 'USD'), Money('108.50', 'USD'))
    """

    base: Currency
    quote: Currency
    rate: Decimal = attrs.field(converter=_positive_rate)
    source: str
    as_of: datetime = attrs.field(converter=_as_of)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.base, Currency) or not isinstance(self.quote, Currency):
            raise ValidationError("use ExchangeRate.of(base, quote, ...) with currency codes")
        if not self.source:
            raise ValidationError("an exchange rate must name its source")

    @classmethod
    def of(
        cls,
        base: str | Currency,
        quote: str | Currency,
        rate: DecimalLike,
        source: str,
        as_of: datetime,
    ) -> ExchangeRate:
        return cls(Currency.of(base), Currency.of(quote), to_decimal(rate, "rate"), source, as_of)

    @property
    def pair(self) -> str:
        return f"{self.base.code}/{self.quote.code}"

    def convert(self, money: Money | UnroundedMoney) -> Conversion:
        """Convert an amount of ``base`` into unrounded ``quote``; the rate travels with it."""
        if money.currency != self.base:
            raise CurrencyMismatchError(
                f"a {self.pair} rate converts {self.base.code}, not {money.currency.code}"
            )
        result = UnroundedMoney(EXACT.multiply(money.amount, self.rate), self.quote)
        return Conversion(money, result, self)

    def inverse(self, *, significant_digits: int = 16) -> ExchangeRate:
        """The explicit inverse rate, to ``significant_digits`` (it is rarely exact)."""
        ctx = DIVISION.copy()
        ctx.prec = significant_digits
        return ExchangeRate(
            self.quote,
            self.base,
            ctx.divide(Decimal(1), self.rate),
            f"inverse({self.source})",
            self.as_of,
        )

    def cross(self, other: ExchangeRate) -> ExchangeRate:
        """Chain ``base/X`` with ``X/quote`` into ``base/quote`` (exact product, older time)."""
        if self.quote != other.base:
            raise CurrencyMismatchError(f"cannot cross {self.pair} with {other.pair}")
        return ExchangeRate(
            self.base,
            other.quote,
            EXACT.multiply(self.rate, other.rate),
            f"cross({self.source},{other.source})",
            min(self.as_of, other.as_of),
        )


@attrs.frozen(slots=True)
class Conversion:
    """The record of a conversion: what went in, what came out unrounded, and the rate used."""

    source: Money | UnroundedMoney
    result: UnroundedMoney
    rate: ExchangeRate

    def round(self, mode: Rounding) -> Money:
        return self.result.round(mode)


@runtime_checkable
class RateSource(Protocol):
    """Gives the rate for a currency pair in force at a time, or raises RateNotFoundError."""

    def rate(self, base: Currency, quote: Currency, at: datetime) -> ExchangeRate: ...


class RateTable:
    """An in-memory RateSource: the latest rate at or before the asked time, per direct pair.

    ``max_age`` refuses rates older than that at the asked time (a stale rate is not a rate).
    """

    def __init__(
        self, rates: list[ExchangeRate] | None = None, *, max_age: timedelta | None = None
    ):
        self._series: dict[tuple[str, str], list[tuple[datetime, ExchangeRate]]] = {}
        self._max_age = max_age
        self._lock = threading.Lock()
        for r in rates or []:
            self.add(r)

    def add(self, rate: ExchangeRate) -> None:
        key = (rate.base.code, rate.quote.code)
        with self._lock:
            series = self._series.setdefault(key, [])
            bisect.insort(series, (rate.as_of, rate), key=lambda item: item[0])

    def rate(self, base: Currency, quote: Currency, at: datetime) -> ExchangeRate:
        when = to_utc(at, "at")
        if base == quote:
            return ExchangeRate(base, quote, Decimal(1), "identity", when)
        series = self._series.get((base.code, quote.code), [])
        i = bisect.bisect_right(series, when, key=lambda item: item[0])
        if i == 0:
            hint = ""
            if (quote.code, base.code) in self._series:
                hint = f"; only {quote.code}/{base.code} is known: use .inverse() explicitly"
            raise RateNotFoundError(f"no {base.code}/{quote.code} rate at that time{hint}")
        found = series[i - 1][1]
        if self._max_age is not None and when - found.as_of > self._max_age:
            raise RateNotFoundError(f"the latest {base.code}/{quote.code} rate is too old")
        return found
