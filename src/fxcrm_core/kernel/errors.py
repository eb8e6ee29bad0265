"""The error hierarchy: one root, and every error also refines the builtin it is a kind of.

Messages name what was wrong and never echo the offending value when it could be personal data.
"""

from __future__ import annotations


class FxCrmError(Exception):
    """Root of every error fxcrm_core raises on purpose."""

    default_message = "fxcrm_core refused the operation"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


class ValidationError(FxCrmError, ValueError):
    """Input that breaks a rule of the domain."""

    default_message = "invalid input"


class FloatNotAllowedError(FxCrmError, TypeError):
    """A float was given where an exact decimal is required (money, rates, ratios)."""

    default_message = "floats are not accepted: pass a Decimal, an int or a decimal string"


class UnknownCurrencyError(ValidationError):
    """A currency code that is not in ISO 4217's list nor registered by the host."""

    default_message = "unknown currency code"


class CurrencyMismatchError(ValidationError):
    """Two amounts of different currencies were combined."""

    default_message = "amounts in different currencies cannot be combined"


class PrecisionError(ValidationError):
    """An amount has more decimal places than its currency's minor unit allows."""

    default_message = "amount is more precise than the currency's minor unit"


class NegativeAmountError(ValidationError):
    """A negative (or zero, where positive is required) amount where it is not allowed."""

    default_message = "amount must be positive"


class NaiveDatetimeError(ValidationError):
    """A datetime without a time zone: fxcrm_core only accepts aware datetimes."""

    default_message = "naive datetime: pass a timezone-aware datetime"


class IllegalTransitionError(FxCrmError, ValueError):
    """A workflow step that the current state does not allow."""

    default_message = "that step is not allowed from the current state"


class NotFoundError(FxCrmError, LookupError):
    """Something looked up by id or key does not exist."""

    default_message = "not found"


class RateNotFoundError(NotFoundError):
    """No exchange rate is known for the pair at that time (inverses are never guessed)."""

    default_message = "no exchange rate for that currency pair and time"


class ConcurrencyError(FxCrmError, RuntimeError):
    """An append found a stream at another version than expected; nothing was written."""

    default_message = "the stream changed since it was read; nothing was written"


class IdempotencyConflictError(FxCrmError, ValueError):
    """An idempotency key was reused for a different operation."""

    default_message = "idempotency key already used for a different operation"


class UnknownEventTypeError(FxCrmError, LookupError):
    """A stored event names a type the codec's registry does not know."""

    default_message = "unknown event type"


class CodecError(FxCrmError, ValueError):
    """Stored bytes could not be turned back into an event (corrupt, tampered or wrong key)."""

    default_message = "stored event could not be decoded"


class AccessDeniedError(FxCrmError, PermissionError):
    """The actor lacks the permission, or the row is outside what its role may see."""

    default_message = "access denied"


class SubjectErasedError(FxCrmError, PermissionError):
    """The data subject was erased: no new personal data may be stored under it."""

    default_message = "the data subject was erased"


class RetentionHoldError(FxCrmError, PermissionError):
    """Erasure refused: records must be kept (AML retention or a legal hold)."""

    default_message = "erasure refused: a retention hold applies"


class StoreError(FxCrmError, OSError):
    """The storage adapter failed for a reason outside the domain (I/O, schema)."""

    default_message = "event store failure"


class AmountOutOfRangeError(ValidationError):
    """An amount past the largest the SDK accepts (``fxcrm_core.kernel.MAX_AMOUNT``), or a number
    or a result outside the range where fxcrm_core stays exact (see docs/money.md, "Limits")."""

    default_message = "amount is outside the range fxcrm_core accepts"


class AmountBelowMinimumError(ValidationError):
    """An operation on less than the smallest amount a policy allows (a conversion, say)."""

    default_message = "amount is below the allowed minimum"


class ArgumentTypeError(FxCrmError, TypeError):
    """An argument of the wrong kind (a list where Money goes, None where a rate goes)."""

    default_message = "an argument has the wrong type"
