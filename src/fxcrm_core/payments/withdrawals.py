"""Withdrawals: to a verified payout instrument of the same client only; the amount (and fee) is
held at once, counted against the daily limit in the same append, approved by a second person
with the checks re-run (a changed instrument refuses the approval and restarts it), then paid
(the hold is posted) or rejected/cancelled (the hold is released). Requests racing in several
processes read the day's counter again and are decided one after the other: each passes or is
refused on the total before it, none fails with a ConcurrencyError."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Self

import attrs

from fxcrm_core.access import AccessControl, Actor, ApprovalRule, Approvals
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    Erased,
    EventMetadata,
    EventRegistry,
    Repository,
    UnitOfWork,
    pii,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import AccessDeniedError, IllegalTransitionError, ValidationError
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kernel.money import Money, Rounding
from fxcrm_core.kernel.trading_day import TradingCalendar
from fxcrm_core.kyc import KycService, Right
from fxcrm_core.ledger import Ledger, TransferRequest
from fxcrm_core.payments.deposits import LimitExceededError, PaymentLimits, retry_on_race
from fxcrm_core.payments.transfers import MoneyAccounts
from fxcrm_core.privacy.masking import DEFAULT_MASKING, HIDDEN, MaskingPolicy, Reveal
from fxcrm_core.privacy.pii import Email, Iban, Pan, PiiValue

__all__ = [
    "INSTRUMENT_ADDED_VERSION",
    "WITHDRAWAL_EVENTS",
    "InstrumentAdded",
    "FeePolicy",
    "InstrumentKind",
    "PayoutInstrument",
    "Withdrawal",
    "WithdrawalStatus",
    "Withdrawals",
    "register_instrument_events",
    "upcast_v1",
]


class InstrumentKind(enum.Enum):
    CARD = "card"
    IBAN = "iban"
    EWALLET = "ewallet"  # identified by the account's e-mail


_PARSERS: dict[InstrumentKind, type[PiiValue]] = {
    InstrumentKind.CARD: Pan,
    InstrumentKind.IBAN: Iban,
    InstrumentKind.EWALLET: Email,
}


@attrs.frozen
class InstrumentAdded(DomainEvent):
    """A payout instrument of a client: its value and its masked form, both sealed under the
    client's key (version 2), so an erasure leaves neither readable.

    Version 1 stored ``masked`` in clear beside the sealed value. An upcaster cannot encrypt
    (it sees the payload before the field cipher does, and has no key), so :func:`upcast_v1`
    drops the clear string and old rows read ``masked`` as None; :class:`PayoutInstrument`
    then derives the masked form from the sealed value, which reads as ``ERASED`` once the
    client's key is destroyed. The old rows' bytes still hold the clear string: crypto-shredding
    stops it being read through the SDK, not being on disk.
    """

    __subject__ = "client_id"
    instrument_id: str
    client_id: str
    kind: InstrumentKind
    masked: str | None = pii()  # what staff and statements show; None in version-1 rows
    value: str = pii()


INSTRUMENT_ADDED_VERSION = 2


def upcast_v1(data: dict[str, Any]) -> dict[str, Any]:
    """InstrumentAdded v1 → v2: the clear masked string is dropped (:class:`InstrumentAdded`)."""
    return {**data, "masked": None}


def register_instrument_events(registry: EventRegistry) -> None:
    """Register InstrumentAdded at its current version with the upcaster from version 1."""
    registry.register(InstrumentAdded, version=INSTRUMENT_ADDED_VERSION)
    registry.upcaster("InstrumentAdded", 1)(upcast_v1)


@attrs.frozen
class InstrumentVerified(DomainEvent):
    verified_by: str


@attrs.frozen
class InstrumentRemoved(DomainEvent):
    removed_by: str


@attrs.frozen(kw_only=True)
class PayoutInstrument(Aggregate):
    category = "instrument"
    client_id: str = ""
    kind: InstrumentKind | None = None
    masked: str = ""
    verified: bool = False
    removed: bool = False

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case InstrumentAdded():
                return self.evolve(
                    client_id=event.client_id, kind=event.kind, masked=_masked(event)
                )
            case InstrumentVerified():
                return self.evolve(verified=True)
            case InstrumentRemoved():
                return self.evolve(removed=True, verified=False)
        raise ValidationError(f"PayoutInstrument cannot apply {type(event).__name__}")

    @property
    def usable(self) -> bool:
        return self.verified and not self.removed


def _masked(event: InstrumentAdded) -> str:
    """The masked form: as stored, or (a version-1 row) derived from the sealed value; ERASED
    once the client's key is gone."""
    if event.masked is not None:
        return event.masked
    if isinstance(event.value, Erased):
        return event.value
    return _PARSERS[event.kind].parse(event.value).masked(Reveal.PARTIAL)


class WithdrawalStatus(enum.Enum):
    REQUESTED = "requested"
    APPROVED = "approved"
    PAID = "paid"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


@attrs.frozen
class WithdrawalRequested(DomainEvent):
    withdrawal_id: str
    client_id: str
    amount: Money
    fee: Money
    instrument_id: str
    instrument_version: int


@attrs.frozen
class WithdrawalSubmitted(DomainEvent):
    approval_id: str


@attrs.frozen
class WithdrawalInstrumentChanged(DomainEvent):
    instrument_id: str
    instrument_version: int


@attrs.frozen
class WithdrawalApproved(DomainEvent):
    approval_id: str


@attrs.frozen
class WithdrawalPaid(DomainEvent):
    psp_reference: str


@attrs.frozen
class WithdrawalClosed(DomainEvent):
    status: WithdrawalStatus  # rejected or cancelled
    reason: str


@attrs.frozen
class PaymentCounted(DomainEvent):
    amount: Money


# InstrumentAdded is registered apart, at version 2 with its upcaster: register_instrument_events.
WITHDRAWAL_EVENTS = (
    InstrumentVerified,
    InstrumentRemoved,
    WithdrawalRequested,
    WithdrawalSubmitted,
    WithdrawalInstrumentChanged,
    WithdrawalApproved,
    WithdrawalPaid,
    WithdrawalClosed,
    PaymentCounted,
)


@attrs.frozen(kw_only=True)
class Withdrawal(Aggregate):
    category = "withdrawal"
    client_id: str = ""
    amount: Money | None = None
    fee: Money | None = None
    instrument_id: str = ""
    instrument_version: int = 0
    approval_id: str | None = None
    status: WithdrawalStatus | None = None

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case WithdrawalRequested():
                return self.evolve(
                    client_id=event.client_id, amount=event.amount, fee=event.fee,
                    instrument_id=event.instrument_id, instrument_version=event.instrument_version,
                    status=WithdrawalStatus.REQUESTED,
                )  # fmt: skip
            case (
                WithdrawalSubmitted(approval_id=approval) | WithdrawalApproved(approval_id=approval)
            ):
                approved = isinstance(event, WithdrawalApproved)
                return self.evolve(
                    approval_id=approval,
                    status=WithdrawalStatus.APPROVED if approved else self.status,
                )
            case WithdrawalInstrumentChanged(instrument_id=iid, instrument_version=version):
                # A new destination needs a new approval: back to waiting for one.
                return self.evolve(
                    instrument_id=iid,
                    instrument_version=version,
                    approval_id=None,
                    status=WithdrawalStatus.REQUESTED,
                )
            case WithdrawalPaid():
                return self.evolve(status=WithdrawalStatus.PAID)
            case WithdrawalClosed(status=status):
                return self.evolve(status=status)
        raise ValidationError(f"Withdrawal cannot apply {type(event).__name__}")


@attrs.frozen(kw_only=True)
class PaymentDay(Aggregate):
    """What a client withdrew on one trading day: the daily limit's counter."""

    category = "payday"
    total: Money | None = None

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, PaymentCounted):
            total = event.amount if self.total is None else self.total + event.amount
            return self.evolve(total=total)
        raise ValidationError(f"PaymentDay cannot apply {type(event).__name__}")


@attrs.frozen
class FeePolicy:
    """A flat fee plus a share of the amount, rounded up to the minor unit."""

    flat: Mapping[str, Money] = attrs.field(factory=dict)
    share: Decimal = Decimal(0)

    def fee(self, amount: Money) -> Money:
        variable = (amount * self.share).round(Rounding.CEILING)
        return self.flat.get(amount.currency.code, Money.zero(amount.currency)) + variable


class Withdrawals:
    def __init__(
        self,
        repository: Repository,
        ledger: Ledger,
        access: AccessControl,
        kyc: KycService,
        approvals: Approvals,
        limits: PaymentLimits,
        *,
        daily: Mapping[str, Money] | None = None,
        fees: FeePolicy | None = None,
        calendar: TradingCalendar | None = None,
        clock: Clock | None = None,
        ids: IdGenerator | None = None,
        masking: MaskingPolicy | None = None,
    ) -> None:
        self.repository = repository
        self.masking = masking or DEFAULT_MASKING  # what an actor sees of an instrument
        self.ledger = ledger
        self.access = access
        self.kyc = kyc
        self.approvals = approvals
        self.limits = limits
        self.daily = dict(daily or {})  # currency code -> the most a client withdraws a day
        self.fees = fees or FeePolicy()
        self.calendar = calendar or TradingCalendar()
        self.clock = clock or SystemClock()
        self.ids = ids or IdGenerator(self.clock)
        self.money = MoneyAccounts(ledger)
        approvals.register("withdrawal", ApprovalRule(execute=self._approve, check=self._check))

    def _uow(self, actor: str, reason: str) -> UnitOfWork:
        return UnitOfWork(self.repository, EventMetadata(actor, reason=reason))

    # -- instruments -----------------------------------------------------------------------
    def add_instrument(self, actor: Actor, client_id: str, kind: InstrumentKind, value: str) -> str:
        self.access.require(actor, "instrument.manage", client_id=client_id)
        parsed = _PARSERS[kind].parse(value)
        instrument_id = self.ids()
        masked = parsed.masked(Reveal.PARTIAL)
        with self._uow(actor.id, "instrument added") as uow:
            uow.record(
                PayoutInstrument.blank(instrument_id),
                InstrumentAdded(instrument_id, client_id, kind, masked, parsed.reveal()),
            )
            uow.commit()
        return instrument_id

    def verify_instrument(self, actor: Actor, instrument_id: str) -> PayoutInstrument:
        instrument = self.repository.get(PayoutInstrument, instrument_id)
        self.access.require(actor, "instrument.verify", client_id=instrument.client_id)
        if instrument.removed:
            raise IllegalTransitionError("a removed instrument cannot be verified")
        with self._uow(actor.id, "instrument verified") as uow:
            instrument = uow.record(instrument, InstrumentVerified(actor.id))
            uow.commit()
        return self._shown(actor, instrument)

    def _shown(self, actor: Actor, instrument: PayoutInstrument) -> PayoutInstrument:
        """The instrument as ``actor`` may see it: its partial mask (never more: the value in
        clear only through an audited reveal), or hidden for a role the masking policy does
        not let see that kind."""
        if instrument.kind is None or isinstance(instrument.masked, Erased):
            return instrument
        kind = _PARSERS[instrument.kind].kind
        if self.masking.reveal_for(actor.roles, kind) is Reveal.HIDDEN:
            return attrs.evolve(instrument, masked=HIDDEN)
        return instrument

    def remove_instrument(self, actor: Actor, instrument_id: str) -> None:
        instrument = self.repository.get(PayoutInstrument, instrument_id)
        self.access.require(actor, "instrument.manage", client_id=instrument.client_id)
        with self._uow(actor.id, "instrument removed") as uow:
            uow.record(instrument, InstrumentRemoved(actor.id))
            uow.commit()

    def _usable(self, client_id: str, instrument_id: str) -> PayoutInstrument:
        instrument = self.repository.get(PayoutInstrument, instrument_id)
        if instrument.client_id != client_id:
            raise AccessDeniedError("withdrawals go only to the client's own instruments")
        if not instrument.usable:
            raise IllegalTransitionError("the payout instrument is not verified")
        return instrument

    # -- withdrawals -----------------------------------------------------------------------
    def request(self, actor: Actor, client_id: str, instrument_id: str, amount: Money) -> str:
        self.access.require(actor, "withdrawal.request", client_id=client_id)
        self.kyc.require(client_id, Right.WITHDRAW)
        self.limits.check(amount)
        instrument = self._usable(client_id, instrument_id)
        fee = self.fees.fee(amount)
        withdrawal_id = self.ids()
        requested = WithdrawalRequested(
            withdrawal_id, client_id, amount, fee, instrument_id, instrument.version
        )
        retry_on_race(lambda: self._hold(actor, requested), "the withdrawal request")
        self._submit(actor, withdrawal_id)
        return withdrawal_id

    def _hold(self, actor: Actor, requested: WithdrawalRequested) -> None:
        """Hold the amount and fee, and count them on today's counter, in one append.

        The counter is read here, on each attempt: a request in another process that counted
        first makes this append fail, and the next attempt checks the limit on its total (the
        ledger retries on its own streams only, so a stale counter comes back as a conflict)."""
        amount, fee, withdrawal_id = requested.amount, requested.fee, requested.withdrawal_id
        day_id = f"{requested.client_id}:{self.calendar.trading_day(self.clock.now()).isoformat()}"
        day = self.repository.load(PaymentDay, day_id) or PaymentDay.blank(day_id)
        cap = self.daily.get(amount.currency.code)
        if cap is not None and (day.total or Money.zero(amount.currency)) + amount > cap:
            raise LimitExceededError(f"withdrawals are limited to {cap} a day")
        wallet = self.money.wallet(requested.client_id, amount.currency)
        clearing = self.money.broker("psp_clearing", amount.currency)
        holds = [TransferRequest(f"wd:{withdrawal_id}", wallet, clearing, amount, pending=True)]
        if fee.is_positive():
            fees = self.money.broker("fees", amount.currency)
            holds.append(
                TransferRequest(f"wd-fee:{withdrawal_id}", wallet, fees, fee, pending=True)
            )
        self.ledger.transfer_linked(
            holds,
            actor=actor.id,
            also=[(Withdrawal.blank(withdrawal_id), requested), (day, PaymentCounted(amount))],
        )

    def _submit(self, actor: Actor, withdrawal_id: str) -> None:
        w = self.repository.get(Withdrawal, withdrawal_id)
        approval_id = self.approvals.request(
            actor, "withdrawal", withdrawal_id, {"withdrawal_id": withdrawal_id},
            client_id=w.client_id,
        )  # fmt: skip
        with self._uow(actor.id, "withdrawal submitted") as uow:
            uow.record(w, WithdrawalSubmitted(approval_id))
            uow.commit()

    def get(self, withdrawal_id: str) -> Withdrawal:
        return self.repository.get(Withdrawal, withdrawal_id)

    def _check(self, params: Mapping[str, str]) -> None:
        w = self.get(params["withdrawal_id"])
        if w.status is not WithdrawalStatus.REQUESTED:
            raise IllegalTransitionError("the withdrawal is no longer waiting for approval")
        # The client's level as of now, every process's decisions included: a document revoked
        # since the request stops the money here.
        self.kyc.require(w.client_id, Right.WITHDRAW)
        instrument = self._usable(w.client_id, w.instrument_id)
        if instrument.version != w.instrument_version:
            raise IllegalTransitionError("the payout instrument changed: approval restarts")

    def _approve(self, params: Mapping[str, str], key: str) -> str:
        w = self.get(params["withdrawal_id"])
        assert w.approval_id is not None
        with self._uow("system:approvals", "withdrawal approved") as uow:
            uow.record(w, WithdrawalApproved(w.approval_id))
            uow.commit(idempotency_key=key)
        return f"withdrawal {w.id} approved"

    def change_instrument(self, actor: Actor, withdrawal_id: str, instrument_id: str) -> None:
        """Send the money elsewhere: only before payment, and approval starts again."""
        w = self.get(withdrawal_id)
        self.access.require(actor, "withdrawal.request", client_id=w.client_id)
        if w.status not in (WithdrawalStatus.REQUESTED, WithdrawalStatus.APPROVED):
            raise IllegalTransitionError("the withdrawal can no longer change")
        instrument = self._usable(w.client_id, instrument_id)
        if w.approval_id is not None and w.status is WithdrawalStatus.REQUESTED:
            self.approvals.cancel(actor, w.approval_id)
        with self._uow(actor.id, "withdrawal instrument changed") as uow:
            uow.record(w, WithdrawalInstrumentChanged(instrument_id, instrument.version))
            uow.commit()
        self._submit(actor, withdrawal_id)

    def paid(self, withdrawal_id: str, psp_reference: str) -> Withdrawal:
        """The PSP paid it out: post the holds. A repeat of the same callback changes nothing."""
        w = self.get(withdrawal_id)
        if w.status is WithdrawalStatus.PAID:
            return w
        if w.status is not WithdrawalStatus.APPROVED:
            raise IllegalTransitionError("only approved withdrawals are paid")
        assert w.fee is not None
        if w.fee.is_positive():
            self.ledger.post_pending(f"wd-fee:{withdrawal_id}", actor="psp:payout")
        self.ledger.post_pending(
            f"wd:{withdrawal_id}", actor="psp:payout", also=[(w, WithdrawalPaid(psp_reference))]
        )
        return self.get(withdrawal_id)

    def close(
        self, actor: Actor, withdrawal_id: str, status: WithdrawalStatus, reason: str
    ) -> Withdrawal:
        """Reject (a checker) or cancel (the client) before payment: the holds are released."""
        w = self.get(withdrawal_id)
        if status not in (WithdrawalStatus.REJECTED, WithdrawalStatus.CANCELLED):
            raise ValidationError("a withdrawal closes as rejected or cancelled")
        if w.status is status:
            return w
        if w.status not in (WithdrawalStatus.REQUESTED, WithdrawalStatus.APPROVED):
            raise IllegalTransitionError("the withdrawal can no longer be closed")
        if status is WithdrawalStatus.REJECTED:
            self.access.require(actor, "withdrawal.approve", client_id=w.client_id)
            if w.approval_id is not None and w.status is WithdrawalStatus.REQUESTED:
                self.approvals.reject(actor, w.approval_id, reason)
        else:
            self.access.require(actor, "withdrawal.request", client_id=w.client_id)
            if w.approval_id is not None and w.status is WithdrawalStatus.REQUESTED:
                self.approvals.cancel(actor, w.approval_id)
        assert w.fee is not None
        if w.fee.is_positive():
            self.ledger.void_pending(f"wd-fee:{withdrawal_id}", actor=actor.id)
        self.ledger.void_pending(
            f"wd:{withdrawal_id}", actor=actor.id, also=[(w, WithdrawalClosed(status, reason))]
        )
        return self.get(withdrawal_id)
