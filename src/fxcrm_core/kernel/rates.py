"""Exchange rates and the RateSource port: every conversion says which rate, source and time.

Inverse and cross rates exist only when asked for by name; a rate table never inverts silently.
A :class:`ConversionPolicy` rounds a client's conversions in the house's favour, so that no
sequence of conversions can be farmed for rounding gains.
"""

from __future__ import annotations

import bisect
import decimal
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol, runtime_checkable

import attrs

from fxcrm_core.kernel._decimal import (
    DIVISION,
    EXACT,
    DecimalLike,
    out_of_range,
    significant_digits,
    to_decimal,
)
from fxcrm_core.kernel.errors import (
    AmountBelowMinimumError,
    AmountOutOfRangeError,
    ArgumentTypeError,
    CurrencyMismatchError,
    NegativeAmountError,
    RateNotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency, Money, Rounding, UnroundedMoney
from fxcrm_core.kernel.time import to_utc

__all__ = [
    "MAX_RATE",
    "MAX_RATE_DIGITS",
    "MIN_RATE",
    "Conversion",
    "ConversionPolicy",
    "ExchangeRate",
    "RateSource",
    "RateTable",
    "SettledConversion",
]

#: Rates lie in [MIN_RATE, MAX_RATE]: symmetric, so an inverse rate is always a rate too.
MIN_RATE = Decimal("1e-30")
MAX_RATE = Decimal("1e30")
#: A rate has at most this many significant digits (an amount times a rate stays exact).
MAX_RATE_DIGITS = 50


def _positive_rate(value: DecimalLike) -> Decimal:
    rate = to_decimal(value, "rate")
    if rate <= 0:
        raise NegativeAmountError("an exchange rate must be positive")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AmountOutOfRangeError("an exchange rate must lie between 1e-30 and 1e30")
    if significant_digits(rate) > MAX_RATE_DIGITS:
        raise AmountOutOfRangeError(
            f"an exchange rate has at most {MAX_RATE_DIGITS} significant digits"
        )
    return rate


def _as_of(value: datetime) -> datetime:
    try:
        return to_utc(value, "as_of")
    except (OverflowError, ValueError) as e:
        if isinstance(e, ValidationError):
            raise
        raise ValidationError("as_of: a time outside the range of UTC datetimes") from None


def _source_name(value: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 500:
        raise ValidationError("an exchange rate must name its source (a string up to 500 chars)")
    return value


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
    source: str = attrs.field(converter=_source_name)
    as_of: datetime = attrs.field(converter=_as_of)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.base, Currency) or not isinstance(self.quote, Currency):
            raise ValidationError("use ExchangeRate.of(base, quote, ...) with currency codes")

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
        """Convert an amount of ``base`` into unrounded ``quote``; the rate travels with it.

        The product is exact for every accepted amount and rate (no rounding here: a
        :class:`ConversionPolicy` or the caller names it).
        """
        if not isinstance(money, Money | UnroundedMoney):
            raise ArgumentTypeError("convert takes Money or UnroundedMoney")
        if money.currency != self.base:
            raise CurrencyMismatchError(
                f"a {self.pair} rate converts {self.base.code}, not {money.currency.code}"
            )
        product = _exact_product(money.amount, self.rate)
        return Conversion(money, UnroundedMoney(product, self.quote), self)

    def inverse(self, *, significant_digits: int = 16) -> ExchangeRate:
        """The explicit inverse rate, to ``significant_digits`` (it is rarely exact)."""
        if (
            isinstance(significant_digits, bool)
            or not isinstance(significant_digits, int)
            or not 1 <= significant_digits <= MAX_RATE_DIGITS
        ):
            raise ValidationError(f"significant_digits must be an int from 1 to {MAX_RATE_DIGITS}")
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
        if not isinstance(other, ExchangeRate):
            raise ArgumentTypeError("cross takes an ExchangeRate")
        if self.quote != other.base:
            raise CurrencyMismatchError(f"cannot cross {self.pair} with {other.pair}")
        return ExchangeRate(
            self.base,
            other.quote,
            _exact_product(self.rate, other.rate),
            f"cross({self.source},{other.source})",
            min(self.as_of, other.as_of),
        )


def _exact_product(a: Decimal, b: Decimal) -> Decimal:
    try:
        return EXACT.multiply(a, b)
    except decimal.DecimalException as e:
        raise out_of_range(e) from None


@attrs.frozen(slots=True)
class Conversion:
    """The record of a conversion: what went in, what came out unrounded, and the rate used."""

    source: Money | UnroundedMoney
    result: UnroundedMoney
    rate: ExchangeRate

    def round(self, mode: Rounding) -> Money:
        return self.result.round(mode)


@attrs.frozen(slots=True)
class SettledConversion:
    """A conversion as a policy settles it: what was sold, the exact and the rounded amount
    bought, what rounding kept (``result + remainder == exact``), the rate and the mode."""

    source: Money
    exact: UnroundedMoney
    result: Money
    remainder: UnroundedMoney
    rate: ExchangeRate
    rounding: Rounding


def _rounding(value: object) -> Rounding:
    if not isinstance(value, Rounding):
        raise ValidationError("a conversion policy needs a Rounding mode")
    return value


def _minimum_units(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("minimum_units must be an int of at least 1")
    return value


def _minimums(value: Iterable[Money]) -> tuple[Money, ...]:
    if isinstance(value, str | bytes | Money) or not isinstance(value, Iterable):
        raise ValidationError("minimums is a list of Money, at most one per currency")
    found = tuple(value)
    if not all(isinstance(m, Money) for m in found):
        raise ValidationError("minimums is a list of Money, at most one per currency")
    if len({m.currency.code for m in found}) != len(found):
        raise ValidationError("minimums holds at most one amount per currency")
    for m in found:
        m.require_positive("a minimum")
    return found


@attrs.frozen(slots=True)
class ConversionPolicy:
    """How a client's conversions are rounded, and the least that may be converted.

    The default rounds the amount bought down (``Rounding.DOWN``): in the house's favour, so
    that no sequence of conversions back and forth at a pair's rates (with a spread >= 0) ever
    increases what the client holds. Small conversions are refused rather than rounded into
    nothing: the amount bought must be at least ``minimum_units`` of its currency's minor unit
    (100 by default, so rounding costs a client under 1%), and the amount sold at least its
    currency's entry in ``minimums``, if any.

    >>> from datetime import UTC, datetime
    >>> usd_eur = ExchangeRate.of("USD", "EUR", "0.9213", "lp", datetime(2026, 1, 5, tzinfo=UTC))
    >>> ConversionPolicy().convert(Money.of("10.99", "USD"), usd_eur)
    Money('10.12', 'EUR')
    >>> ConversionPolicy().convert(Money.of("0.01", "USD"), usd_eur)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fxcrm_core.kernel.errors.AmountBelowMinimumError: the converted amount would be under 100 ...
    """

    rounding: Rounding = attrs.field(default=Rounding.DOWN, converter=_rounding)
    minimum_units: int = attrs.field(default=100, converter=_minimum_units)
    minimums: tuple[Money, ...] = attrs.field(default=(), converter=_minimums)

    def minimum(self, currency: str | Currency) -> Money | None:
        """The least amount of ``currency`` that may be sold, if the policy sets one."""
        cur = Currency.of(currency)
        for m in self.minimums:
            if m.currency == cur:
                return m
        return None

    def settle(self, amount: Money, rate: ExchangeRate) -> SettledConversion:
        """Sell ``amount`` at ``rate``: the exact result, rounded by the policy, with the record
        a ledger keeps. Raises AmountBelowMinimumError when either side is under its minimum."""
        if not isinstance(amount, Money):
            raise ArgumentTypeError("a conversion sells Money")
        if not isinstance(rate, ExchangeRate):
            raise ArgumentTypeError("a conversion needs an ExchangeRate")
        return self.settle_exact(amount, rate.convert(amount).result, rate)

    def settle_exact(
        self, amount: Money, exact: UnroundedMoney, rate: ExchangeRate
    ) -> SettledConversion:
        """:meth:`settle` for a result the caller computed exactly itself (``amount`` divided
        by a rate, say, rather than multiplied by a rounded inverse): the minimums checked, the
        result rounded by the policy."""
        if not isinstance(amount, Money) or not isinstance(exact, UnroundedMoney):
            raise ArgumentTypeError("a conversion sells Money for an UnroundedMoney result")
        if not isinstance(rate, ExchangeRate):
            raise ArgumentTypeError("a conversion needs an ExchangeRate")
        amount.require_positive("a converted amount")
        least = self.minimum(amount.currency)
        if least is not None and amount < least:
            raise AmountBelowMinimumError(f"converting less than {least} is refused")
        result, remainder = exact.round_with_remainder(self.rounding)
        if result.minor < self.minimum_units:
            raise AmountBelowMinimumError(
                f"the converted amount would be under {self.minimum_units} minor units of "
                f"{result.currency.code}"
            )
        return SettledConversion(amount, exact, result, remainder, rate, self.rounding)

    def convert(self, amount: Money, rate: ExchangeRate) -> Money:
        """The amount bought for ``amount`` at ``rate`` under this policy (see :meth:`settle`)."""
        return self.settle(amount, rate).result


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
        if max_age is not None and (not isinstance(max_age, timedelta) or max_age < timedelta(0)):
            raise ValidationError("max_age must be a timedelta of zero or more")
        if rates is not None and not isinstance(rates, list | tuple):
            raise ArgumentTypeError("RateTable takes a list of ExchangeRate")
        self._series: dict[tuple[str, str], list[tuple[datetime, ExchangeRate]]] = {}
        self._max_age = max_age
        self._lock = threading.Lock()
        for r in rates or []:
            self.add(r)

    def add(self, rate: ExchangeRate) -> None:
        if not isinstance(rate, ExchangeRate):
            raise ArgumentTypeError("a RateTable holds ExchangeRate values")
        key = (rate.base.code, rate.quote.code)
        with self._lock:
            series = self._series.setdefault(key, [])
            bisect.insort(series, (rate.as_of, rate), key=lambda item: item[0])

    def rate(self, base: Currency, quote: Currency, at: datetime) -> ExchangeRate:
        base, quote = Currency.of(base), Currency.of(quote)
        when = _as_of(at)
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
