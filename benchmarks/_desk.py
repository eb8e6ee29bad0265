"""The benchmark's cash desk: a small aggregate with a balance that commands change only by
recording events (the same shape as the eventsourcing library's example it is measured against).
"""

from __future__ import annotations

from typing import Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent
from fxcrm_core.kernel import Currency, Money, NegativeAmountError, ValidationError


@attrs.frozen
class DeskOpened(DomainEvent):
    currency: Currency


@attrs.frozen
class CashReceived(DomainEvent):
    amount: Money
    psp_reference: str


@attrs.frozen
class CashPaid(DomainEvent):
    amount: Money


@attrs.frozen(kw_only=True)
class CashDesk(Aggregate):
    category = "desk"
    balance: Money | None = None
    received: int = 0

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case DeskOpened(currency=currency):
                return self.evolve(balance=Money.zero(currency))
            case CashReceived(amount=amount):
                return self.evolve(balance=self.cash + amount, received=self.received + 1)
            case CashPaid(amount=amount):
                return self.evolve(balance=self.cash - amount)
        raise ValidationError(f"CashDesk cannot apply {type(event).__name__}")

    @property
    def cash(self) -> Money:
        if self.balance is None:
            raise ValidationError("desk is not open")
        return self.balance

    def receive(self, amount: Money, psp_reference: str) -> list[DomainEvent]:
        return [CashReceived(amount.require_positive(), psp_reference)]

    def pay(self, amount: Money) -> list[DomainEvent]:
        if amount.require_positive() > self.cash:
            raise NegativeAmountError("the desk does not hold that much")
        return [CashPaid(amount)]


DESK_EVENTS = (DeskOpened, CashReceived, CashPaid)
