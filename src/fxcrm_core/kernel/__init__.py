"""The shared kernel: money, currencies, exchange rates, time, ids and errors.

It imports nothing else from fxcrm_core; everything else may import it.
"""

from fxcrm_core.kernel.clock import Clock, FixedClock, SystemClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
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
from fxcrm_core.kernel.rates import Conversion, ExchangeRate, RateSource, RateTable
from fxcrm_core.kernel.time import ensure_aware, to_utc
from fxcrm_core.kernel.trading_day import TradingCalendar

__all__ = [
    "AccessDeniedError",
    "Clock",
    "CodecError",
    "ConcurrencyError",
    "Conversion",
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
