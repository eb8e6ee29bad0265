"""A small aggregate for testing the event core: a cash till with a named holder (PII)."""

from __future__ import annotations

from typing import Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent, EventRegistry, pii
from fxcrm_core.kernel import Currency, Money, NegativeAmountError, ValidationError


@attrs.frozen
class TillOpened(DomainEvent):
    __subject__ = "till_id"
    till_id: str
    currency: Currency
    holder: str = pii()


@attrs.frozen
class CashPaidIn(DomainEvent):
    amount: Money


@attrs.frozen
class CashPaidOut(DomainEvent):
    amount: Money


@attrs.frozen
class TillClosed(DomainEvent):
    reason: str


EVENTS = (TillOpened, CashPaidIn, CashPaidOut, TillClosed)


def registry() -> EventRegistry:
    reg = EventRegistry()
    reg.register_all(EVENTS)
    return reg


@attrs.frozen(kw_only=True)
class Till(Aggregate):
    category = "till"
    holder: str | None = attrs.field(default=None, repr=False)
    balance: Money | None = None
    closed: bool = False

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case TillOpened(currency=cur, holder=holder):
                return self.evolve(holder=holder, balance=Money.zero(cur))
            case CashPaidIn(amount=amount):
                return self.evolve(balance=self._balance + amount)
            case CashPaidOut(amount=amount):
                return self.evolve(balance=self._balance - amount)
            case TillClosed():
                return self.evolve(closed=True)
        raise ValidationError(f"Till cannot apply {type(event).__name__}")

    @property
    def _balance(self) -> Money:
        if self.balance is None:
            raise ValidationError("till is not open")
        return self.balance

    # Commands: check the state, return the events.
    def open(self, currency: str, holder: str) -> list[DomainEvent]:
        if self.version:
            raise ValidationError("till already open")
        return [TillOpened(self.id, Currency.of(currency), holder)]

    def pay_in(self, amount: Money) -> list[DomainEvent]:
        self._check_open()
        return [CashPaidIn(amount.require_positive())]

    def pay_out(self, amount: Money) -> list[DomainEvent]:
        self._check_open()
        if amount.require_positive() > self._balance:
            raise NegativeAmountError("not enough cash in the till")
        return [CashPaidOut(amount)]

    def close(self, reason: str) -> list[DomainEvent]:
        self._check_open()
        return [TillClosed(reason)]

    def _check_open(self) -> None:
        if self.balance is None or self.closed:
            raise ValidationError("till is not open")
