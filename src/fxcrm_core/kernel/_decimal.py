"""Exact decimal arithmetic: the one place that turns outside values into Decimals.

Arithmetic on money runs in contexts of its own (never the caller's thread context) that trap
inexact results, so a computation that would need rounding raises instead of rounding silently;
rounding only happens where a caller names it. The limits below are what makes that possible:
within them every operation of the kernel is exact, and past them it refuses with a typed error.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

from fxcrm_core.kernel.errors import (
    AmountOutOfRangeError,
    FloatNotAllowedError,
    ValidationError,
)

#: Money amounts stay below 10**18 in absolute value, in every currency.
MAX_AMOUNT_DIGITS = 18
#: The first amount the SDK refuses (exclusive bound): ``abs(money.amount) < MAX_AMOUNT``.
MAX_AMOUNT = Decimal(10) ** MAX_AMOUNT_DIGITS
#: A currency has at most this many decimal places (so a Money has at most 36 digits).
MAX_MINOR_UNITS = 18
#: Numbers read as text (amounts, rates, ratios, factors) have at most this many characters.
MAX_TEXT = 200
#: A number the kernel accepts lies within 10**-MAX_EXPONENT and 10**(MAX_EXPONENT + 1).
MAX_EXPONENT = 100
#: Significant digits an intermediate (unrounded) result may have; far above any product of
#: accepted values (36 + 200 digits), so only long chains of products ever reach it.
MAX_DIGITS = 1000

_TRAPS = [decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact]

#: For intermediate results (products, sums of unrounded amounts): exact, or it raises.
EXACT = decimal.Context(
    prec=MAX_DIGITS,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=_TRAPS,
)

#: For Money itself: any result at or past MAX_AMOUNT overflows (Emax), any lost digit raises.
MONEY = decimal.Context(
    prec=MAX_AMOUNT_DIGITS + MAX_MINOR_UNITS + 4,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=MAX_AMOUNT_DIGITS - 1,
    Emin=-999_999,
    traps=_TRAPS,
)

#: For divisions that cannot be exact (inverse rates); callers name the precision they keep.
DIVISION = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)

#: For third-party code (Babel) that computes in the thread's context: wide, and never trapping
#: Inexact, so it neither rounds our amounts nor raises where it only compares.
TEXT = decimal.Context(
    prec=MAX_DIGITS, rounding=decimal.ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999
)

DecimalLike = Decimal | int | str

_INT_LIMIT = 10 ** (MAX_EXPONENT + 1)


def too_large(what: str = "amount") -> AmountOutOfRangeError:
    """The error for an amount at or past MAX_AMOUNT."""
    return AmountOutOfRangeError(
        f"{what} is past the largest amount fxcrm_core accepts (below 10**{MAX_AMOUNT_DIGITS})"
    )


def out_of_range(error: decimal.DecimalException, what: str = "result") -> AmountOutOfRangeError:
    """The typed error for a trapped signal of EXACT: the result left the exact range."""
    if isinstance(error, decimal.Overflow):
        return AmountOutOfRangeError(f"{what} is too large to compute exactly")
    if isinstance(error, decimal.Underflow | decimal.Subnormal):
        return AmountOutOfRangeError(f"{what} is too small to compute exactly")
    return AmountOutOfRangeError(
        f"{what} would need more than {MAX_DIGITS} significant digits to stay exact"
    )


def to_decimal(value: object, what: str = "amount") -> Decimal:
    """Return ``value`` as a finite Decimal in the kernel's range; floats are a TypeError.

    >>> to_decimal("12.50")
    Decimal('12.50')
    >>> to_decimal(0.1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fxcrm_core.kernel.errors.FloatNotAllowedError: amount: floats are not accepted; ...
    >>> to_decimal("1e999999")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fxcrm_core.kernel.errors.AmountOutOfRangeError: amount: out of range; ...
    """
    if type(value) is str:  # first: the codec reads every stored amount through here
        if len(value) > MAX_TEXT:
            raise ValidationError(f"{what}: a number has at most {MAX_TEXT} characters")
        try:
            result = Decimal(value)
        except decimal.InvalidOperation:
            raise ValidationError(f"{what}: not a decimal number") from None
    elif isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise ValidationError(f"{what}: a bool is not a number")
    elif isinstance(value, int):
        if not -_INT_LIMIT < value < _INT_LIMIT:  # before a costly conversion of a huge int
            raise AmountOutOfRangeError(f"{what}: out of range; see docs/money.md, Limits")
        result = Decimal(value)
    elif isinstance(value, float):
        raise FloatNotAllowedError(
            f"{what}: floats are not accepted; pass a Decimal, an int or a decimal string"
        )
    elif isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValidationError(f"{what}: a number has at most {MAX_TEXT} characters")
        try:
            # Decimal() itself accepts surrounding spaces and digit-group underscores; it is
            # exact whatever the context.
            result = Decimal(value)
        except decimal.InvalidOperation:
            # The text is not echoed: it may be anything a user typed.
            raise ValidationError(f"{what}: not a decimal number") from None
    else:
        raise FloatNotAllowedError(
            f"{what}: expected a Decimal, an int or a decimal string, got {type(value).__name__}"
        )
    if not result.is_finite():
        raise ValidationError(f"{what}: must be a finite number")
    if not -MAX_EXPONENT <= result.adjusted() <= MAX_EXPONENT:
        raise AmountOutOfRangeError(f"{what}: out of range; see docs/money.md, Limits")
    return result


def significant_digits(value: Decimal) -> int:
    """The digits of ``value``'s coefficient without its trailing zeros (``1.0850`` has 4)."""
    coefficient = value.as_tuple().digits
    n = len(coefficient)
    while n > 1 and coefficient[n - 1] == 0:
        n -= 1
    return n
