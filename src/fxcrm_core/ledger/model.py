"""The double-entry ledger's model: accounts with posted and pending balances, and transfers.

Every transfer moves one amount of one currency from a debit account to a credit account.
Pending transfers (holds) count against the limits at once and are later posted (in full or in
part), voided, or expired. Nothing is ever edited: a correction is a new, reversing transfer.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Self

import attrs

from fxcrm_core.events import Aggregate, DomainEvent
from fxcrm_core.kernel.errors import (
    CurrencyMismatchError,
    FxCrmError,
    IllegalTransitionError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney

__all__ = [
    "LEDGER_EVENTS",
    "AccountOpened",
    "AlreadyReversedError",
    "Balance",
    "Conversion",
    "ConversionRecorded",
    "EntryRecorded",
    "ExceedsLimitError",
    "Limit",
    "LedgerAccount",
    "PendingReleased",
    "Transfer",
    "TransferFailed",
    "TransferRecorded",
    "TransferResolved",
    "TransferReversed",
    "TransferStatus",
]


class ExceedsLimitError(FxCrmError, ValueError):
    """The transfer would take an account past its limit (counting pending holds)."""

    default_message = "the transfer exceeds the account's available balance"


class AlreadyReversedError(IllegalTransitionError):
    """The transfer is already reversed, in full or by as much as this reversal would add."""

    default_message = "the transfer is already reversed"


class Limit(enum.Enum):
    NONE = "none"
    DEBITS_WITHIN_CREDITS = "debits<=credits"  # wallets, payables: cannot go below zero
    CREDITS_WITHIN_DEBITS = "credits<=debits"  # asset accounts that must not turn negative


class TransferStatus(enum.Enum):
    POSTED = "posted"
    PENDING = "pending"
    POSTED_FROM_PENDING = "posted_from_pending"
    VOIDED = "voided"
    EXPIRED = "expired"
    FAILED = "failed"


@attrs.frozen
class Balance:
    """An account's four sums, and what follows from them."""

    currency: Currency
    debits_posted: Money
    credits_posted: Money
    debits_pending: Money
    credits_pending: Money

    @classmethod
    def zero(cls, currency: Currency) -> Balance:
        z = Money.zero(currency)
        return cls(currency, z, z, z, z)

    @property
    def net_credit(self) -> Money:
        """Posted credits minus posted debits (a wallet's balance)."""
        return self.credits_posted - self.debits_posted

    @property
    def available_credit(self) -> Money:
        """What a credits-normal account can still pay out: pending debits count already."""
        return self.credits_posted - self.debits_posted - self.debits_pending

    @property
    def available_debit(self) -> Money:
        return self.debits_posted - self.credits_posted - self.credits_pending


@attrs.frozen
class AccountOpened(DomainEvent):
    account_id: str
    owner: str
    currency: Currency
    purpose: str  # wallet, mirror, omnibus, psp_clearing, fees, ib_payable, fx, suspense ...
    limit: Limit


@attrs.frozen
class EntryRecorded(DomainEvent):
    """One side of a transfer, on one account."""

    transfer_id: str
    debit: bool
    amount: Money
    pending: bool


@attrs.frozen
class PendingReleased(DomainEvent):
    """A pending amount leaves the pending sums (posted, voided or expired)."""

    transfer_id: str
    debit: bool
    amount: Money


LedgerEvent = AccountOpened | EntryRecorded | PendingReleased


_MOVES = (EntryRecorded, PendingReleased)


def _moved(balance: Balance | None, event: EntryRecorded | PendingReleased) -> Balance:
    """The balance after one entry (added to its sum) or release (taken off the pending sum)."""
    if balance is None:
        raise ValidationError("no such ledger account")
    dp, cp = balance.debits_posted, balance.credits_posted
    dh, ch = balance.debits_pending, balance.credits_pending
    amount = event.amount
    if isinstance(event, PendingReleased):
        if event.debit:
            dh = dh - amount
        else:
            ch = ch - amount
    elif event.pending:
        if event.debit:
            dh = dh + amount
        else:
            ch = ch + amount
    elif event.debit:
        dp = dp + amount
    else:
        cp = cp + amount
    return Balance(balance.currency, dp, cp, dh, ch)


@attrs.frozen(kw_only=True)
class LedgerAccount(Aggregate):
    category = "ledger"
    owner: str = ""
    purpose: str = ""
    limit: Limit = Limit.NONE
    balance: Balance | None = None

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case AccountOpened(currency=currency, owner=owner, purpose=purpose, limit=limit):
                return self.evolve(
                    owner=owner, purpose=purpose, limit=limit, balance=Balance.zero(currency)
                )
            case EntryRecorded() | PendingReleased():
                return self._with(_moved(self.balance, event), self.version)
        raise ValidationError(f"LedgerAccount cannot apply {type(event).__name__}")

    def fold(self, events: Iterable[DomainEvent]) -> Self:
        """Like :meth:`Aggregate.fold`, but entries and releases only move the balance, so the
        state is built once at the end rather than once per event and again for the version."""
        state, balance, count = self, self.balance, 0
        for event in events:
            count += 1
            if isinstance(event, _MOVES):
                balance = _moved(balance, event)
            else:
                state = state._with(balance, state.version).apply(event)
                balance = state.balance
        return state._with(balance, self.version + count) if count else self

    def _with(self, balance: Balance | None, version: int) -> Self:
        return type(self)(
            id=self.id,
            version=version,
            owner=self.owner,
            purpose=self.purpose,
            limit=self.limit,
            balance=balance,
        )

    @property
    def open_balance(self) -> Balance:
        if self.balance is None:
            raise ValidationError("no such ledger account")
        return self.balance

    def check_limit_after(self, *, debit: Money | None = None, credit: Money | None = None) -> None:
        """Raise if adding these (pending or posted) amounts would break the account's limit."""
        b = self.open_balance
        # Only the side the limit bounds is summed (every transfer checks both its accounts);
        # an amount in another currency is refused either way.
        for amount in (debit, credit):
            if amount is None or amount.currency is b.currency:
                continue
            if amount.currency != b.currency:
                raise CurrencyMismatchError(
                    f"cannot combine {amount.currency.code} with {b.currency.code}"
                )
        limit = self.limit
        if (
            limit is Limit.DEBITS_WITHIN_CREDITS
            and debit is not None
            and debit > b.available_credit
        ) or (
            limit is Limit.CREDITS_WITHIN_DEBITS
            and credit is not None
            and credit > b.available_debit
        ):
            raise ExceedsLimitError()


@attrs.frozen
class TransferRecorded(DomainEvent):
    transfer_id: str
    debit_account: str
    credit_account: str
    amount: Money
    pending: bool
    timeout_at: datetime | None
    reverses: str | None
    linked: tuple[str, ...]  # the other transfers of an all-or-nothing batch
    content: str  # digest of what was asked: a retry with other content is a conflict


@attrs.frozen
class TransferResolved(DomainEvent):
    """A pending transfer is posted (``posted`` > 0, maybe partly), voided or expired."""

    status: TransferStatus
    posted: Money


@attrs.frozen
class TransferReversed(DomainEvent):
    """Recorded on the original transfer's stream, in the same append as its correction: the
    stream's version then orders every reversal, so the reversed total never passes the posted
    amount, whichever process reverses."""

    correction_id: str
    amount: Money


@attrs.frozen
class TransferFailed(DomainEvent):
    """A transfer refused for a business reason: retries with this id keep failing the same way."""

    transfer_id: str
    reason: str
    content: str


@attrs.frozen
class ConversionRecorded(DomainEvent):
    """A currency conversion: two linked transfers through FX accounts, at a recorded rate.

    ``remainder`` is what rounding the bought amount left over (bought_exact - bought): kept here
    so that no fraction of a cent is ever lost without a trace.
    """

    conversion_id: str
    sold: Money
    bought: Money
    bought_exact: UnroundedMoney
    remainder: UnroundedMoney
    rate: Decimal
    rate_source: str
    rate_as_of: datetime
    rounding: str


@attrs.frozen(kw_only=True)
class Conversion(Aggregate):
    category = "conversion"
    recorded: ConversionRecorded | None = None

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, ConversionRecorded):
            return self.evolve(recorded=event)
        raise ValidationError(f"Conversion cannot apply {type(event).__name__}")


LEDGER_EVENTS = (
    AccountOpened,
    EntryRecorded,
    PendingReleased,
    TransferRecorded,
    TransferResolved,
    TransferFailed,
    ConversionRecorded,
    TransferReversed,
)


@attrs.frozen(kw_only=True)
class Transfer(Aggregate):
    category = "transfer"
    status: TransferStatus | None = None
    debit_account: str = ""
    credit_account: str = ""
    amount: Money | None = None
    posted: Money | None = None
    timeout_at: datetime | None = None
    reverses: str | None = None
    content: str = ""
    failure: str | None = None
    reversals: tuple[tuple[str, Money], ...] = ()  # (correction id, amount), in order

    @property
    def reversed(self) -> Money | None:
        """How much of the posted amount its corrections moved back (None if not posted)."""
        if self.posted is None:
            return None
        return sum((amount for _, amount in self.reversals), Money.zero(self.posted.currency))

    def reversal(self, correction_id: str) -> Money | None:
        """The amount the correction with this id reversed, if it reversed this transfer."""
        return next((amount for c, amount in self.reversals if c == correction_id), None)

    def apply(self, event: DomainEvent) -> Self:
        return self._after(event, self.version)

    def fold(self, events: Iterable[DomainEvent]) -> Self:
        """Like :meth:`Aggregate.fold`, but each state is built with its version at once (every
        transfer folds its record: one state built instead of two)."""
        state = self
        for event in events:
            state = state._after(event, state.version + 1)
        return state

    def _after(self, event: DomainEvent, version: int) -> Self:
        match event:
            case TransferRecorded():
                return type(self)(
                    id=self.id,
                    version=version,
                    status=TransferStatus.PENDING if event.pending else TransferStatus.POSTED,
                    debit_account=event.debit_account,
                    credit_account=event.credit_account,
                    amount=event.amount,
                    posted=None if event.pending else event.amount,
                    timeout_at=event.timeout_at,
                    reverses=event.reverses,
                    content=event.content,
                    failure=self.failure,
                    reversals=self.reversals,
                )
            case TransferReversed(correction_id=correction_id, amount=amount):
                return self.evolve(
                    reversals=(*self.reversals, (correction_id, amount)), version=version
                )
            case TransferResolved(status=status, posted=posted):
                return self.evolve(status=status, posted=posted, version=version)
            case TransferFailed(reason=reason, content=content):
                return self.evolve(
                    status=TransferStatus.FAILED, failure=reason, content=content, version=version
                )
        raise ValidationError(f"Transfer cannot apply {type(event).__name__}")


def content_digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:32]
