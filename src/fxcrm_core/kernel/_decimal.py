"""Exact decimal arithmetic: the one place that turns outside values into Decimals.

Arithmetic on money runs in a context that traps inexact results, so a computation that would
need rounding raises instead of rounding silently; rounding only happens where a caller names it.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

from fxcrm_core.kernel.errors import FloatNotAllowedError, ValidationError

#: Wide enough that sums and products of real-world amounts and rates are always exact.
EXACT = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=999_999,
    Emin=-999_999,
    traps=[
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
        decimal.Inexact,
    ],
)

#: For divisions that cannot be exact (inverse rates); callers name the precision they keep.
DIVISION = decimal.Context(
    prec=60,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)

DecimalLike = Decimal | int | str


def to_decimal(value: object, what: str = "amount") -> Decimal:
    """Return ``value`` as a finite Decimal; floats are a TypeError, never converted.

    >>> to_decimal("12.50")
    Decimal('12.50')
    >>> to_decimal(0.1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fxcrm_core.kernel.errors.FloatNotAllowedError: amount: floats are not accepted; ...
    """
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise ValidationError(f"{what}: a bool is not a number")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        raise FloatNotAllowedError(
            f"{what}: floats are not accepted; pass a Decimal, an int or a decimal string"
        )
    elif isinstance(value, str):
        try:
            # Decimal() itself accepts surrounding spaces and digit-group underscores.
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
    return result
