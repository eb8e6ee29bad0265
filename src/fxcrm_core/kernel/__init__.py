"""The shared kernel: money, currencies, exchange rates, time, ids and errors.

It imports nothing else from fxcrm_core; everything else may import it.
"""

from fxcrm_core.kernel._decimal import MAX_AMOUNT, MAX_AMOUNT_DIGITS
from fxcrm_core.kernel.clock import Clock, FixedClock, SystemClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    AmountBelowMinimumError,
    AmountOutOfRangeError,
    ArgumentTypeError,
    CodecError,
    ConcurrencyError,
    CurrencyMismatchError,
    FloatNotAllowedError,
    FxCrmError,
    IdempotencyConflictError,
    IllegalTransitionError,
    NaiveDatetimeError,
    NegativeAmountError,
    NotFoundError,
    PrecisionError,
    RateNotFoundError,
    RetentionHoldError,
    StoreError,
    SubjectErasedError,
    UnknownCurrencyError,
    UnknownEventTypeError,
    ValidationError,
)
from fxcrm_core.kernel.ids import IdGenerator, new_id
from fxcrm_core.kernel.money import Currency, Money, Rounding, UnroundedMoney
from fxcrm_core.kernel.rates import (
    MAX_RATE,
    MIN_RATE,
    Conversion,
    ConversionPolicy,
    ExchangeRate,
    RateSource,
    RateTable,
    SettledConversion,
)
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import ensure_aware, to_utc
from fxcrm_core.kernel.trading_day import TradingCalendar

__all__ = [
    "checked_text",
    "MAX_AMOUNT",
    "MAX_AMOUNT_DIGITS",
    "MAX_RATE",
    "MIN_RATE",
    "AccessDeniedError",
    "AmountBelowMinimumError",
    "AmountOutOfRangeError",
    "ArgumentTypeError",
    "Clock",
    "CodecError",
    "ConcurrencyError",
    "Conversion",
    "ConversionPolicy",
    "Currency",
    "CurrencyMismatchError",
    "ExchangeRate",
    "FixedClock",
    "FloatNotAllowedError",
    "FxCrmError",
    "IdGenerator",
    "IdempotencyConflictError",
    "IllegalTransitionError",
    "Money",
    "NaiveDatetimeError",
    "NegativeAmountError",
    "NotFoundError",
    "PrecisionError",
    "RateNotFoundError",
    "RateSource",
    "RetentionHoldError",
    "RateTable",
    "Rounding",
    "StoreError",
    "SettledConversion",
    "SubjectErasedError",
    "SystemClock",
    "TradingCalendar",
    "UnknownCurrencyError",
    "UnknownEventTypeError",
    "UnroundedMoney",
    "ValidationError",
    "ensure_aware",
    "new_id",
    "to_utc",
]
