"""Withdrawals: to a verified payout instrument of the same client only; the amount (and fee) is
held at once, counted against the daily limit in the same append, approved by a second person
with the checks re-run (a changed instrument refuses the approval and restarts it), then paid
(the hold is posted) or rejected/cancelled (the hold is released). Requests racing in several
processes read the day's counter again and are decided one after the other: each passes or is
refused on the total before it, none fails with a ConcurrencyError.

A withdrawal may be paid out in another currency than the wallet's (``payout_currency``): the
broker's withdrawal rate is locked when a second person approves it (the PSP is told the payout
amount then) and the conversion is booked through the FX book when the PSP pays, the markup as
the broker's FX revenue."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Self, TypeVar

import attrs

from fxcrm_core.access import AccessControl, Actor, ApprovalRule, Approvals
from fxcrm_core.events import (
    ERASED,
    Aggregate,
    DomainEvent,
    EventMetadata,
    EventRegistry,
    Repository,
    UnitOfWork,
    pii,
)
from fxcrm_core.fx import BrokerRates, Direction, FxBook, FxSettlement
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    FxCrmError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kernel.money import Currency, Money, Rounding, UnroundedMoney
from fxcrm_core.kernel.rates import ExchangeRate
from fxcrm_core.kernel.trading_day import TradingCalendar
from fxcrm_core.kyc import KycService, Right
from fxcrm_core.ledger import Ledger, TransferRequest
from fxcrm_core.payments.deposits import LimitExceededError, PaymentLimits, retry_on_race
from fxcrm_core.payments.transfers import MoneyAccounts
from fxcrm_core.privacy.masking import DEFAULT_MASKING, MaskingPolicy, Reveal
from fxcrm_core.privacy.pii import Email, Iban, Pan, PiiReveals, PiiValue

__all__ = [
    "INSTRUMENT_ADDED_VERSION",
    "WITHDRAWAL_EVENTS",
    "InstrumentAdded",
    "FeePolicy",
    "InstrumentKind",
    "InstrumentView",
    "PayoutInstrument",
    "Withdrawal",
    "WithdrawalStatus",
    "WithdrawalPayoutIn",
    "WithdrawalPayoutQuoted",
    "WithdrawalView",
    "Withdrawals",
    "register_instrument_events",
    "upcast_v1",
    "upcast_v2",
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
    """A payout instrument of a client: its value, sealed under the client's key, in the
    canonical text of its kind (a card's digits, an IBAN without spaces, an e-mail). No masked
    form is stored: :class:`PayoutInstrument` holds the value type and masks it when shown, so
    an erasure leaves nothing of the instrument readable, masked or not.

    Version 1 stored a masked string in clear beside the value, version 2 sealed it; an
    upcaster cannot encrypt (it sees the payload before the field cipher does), so both drop it
    on read (:func:`upcast_v1`, :func:`upcast_v2`). Version 1 rows' bytes still hold the clear
    string: crypto-shredding stops it being read through the SDK, not being on disk.
    """

    __subject__ = "client_id"
    instrument_id: str
    client_id: str
    kind: InstrumentKind
    value: str = pii()


INSTRUMENT_ADDED_VERSION = 3


def upcast_v1(data: dict[str, Any]) -> dict[str, Any]:
    """InstrumentAdded v1 → v2: the clear masked string is dropped."""
    return {**data, "masked": None}


def upcast_v2(data: dict[str, Any]) -> dict[str, Any]:
    """InstrumentAdded v2 → v3: the sealed masked string is dropped (shown from the value)."""
    return {key: value for key, value in data.items() if key != "masked"}


def register_instrument_events(registry: EventRegistry) -> None:
    """Register InstrumentAdded at its current version with the upcasters from versions 1
    and 2."""
    registry.register(InstrumentAdded, version=INSTRUMENT_ADDED_VERSION)
    registry.upcaster("InstrumentAdded", 1)(upcast_v1)
    registry.upcaster("InstrumentAdded", 2)(upcast_v2)


@attrs.frozen
class InstrumentVerified(DomainEvent):
    verified_by: str


@attrs.frozen
class InstrumentRemoved(DomainEvent):
    removed_by: str


@attrs.frozen(kw_only=True)
class PayoutInstrument(Aggregate):
    """A client's payout instrument. ``value`` is the value type of its kind (:class:`Pan`,
    :class:`Iban` or :class:`Email`; its repr is masked), read as the kind's erased value once
    the client's key is destroyed. Shown to a person only masked (:meth:`Withdrawals.instrument`)
    or through an audited reveal (:meth:`Withdrawals.reveal_instrument`)."""

    category = "instrument"
    client_id: str = ""
    kind: InstrumentKind | None = None
    value: PiiValue | None = None
    verified: bool = False
    removed: bool = False

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case InstrumentAdded():
                value = _PARSERS[event.kind].from_stored(event.value)
                return self.evolve(client_id=event.client_id, kind=event.kind, value=value)
            case InstrumentVerified():
                return self.evolve(verified=True)
            case InstrumentRemoved():
                return self.evolve(removed=True, verified=False)
        raise ValidationError(f"PayoutInstrument cannot apply {type(event).__name__}")

    @property
    def usable(self) -> bool:
        return self.verified and not self.removed

    @property
    def erased(self) -> bool:
        return self.value is not None and self.value.erased


@attrs.frozen(kw_only=True)
class InstrumentView:
    """A payout instrument as one actor may see it: ``masked`` is the value's partial mask (a
    card's BIN and last four, an IBAN's country and last four) for a role the masking policy
    lets see the kind, ``****`` for any other, ``[erased]`` once the client was erased; never
    the value in clear."""

    instrument_id: str
    client_id: str
    kind: InstrumentKind
    masked: str
    verified: bool
    removed: bool


#: Who sees an instrument: who manages it (the client) or verifies it (compliance, finance).
_INSTRUMENT_READERS = ("instrument.manage", "instrument.verify")
#: Who sees a withdrawal: who requests it (the client) or approves it (compliance, finance).
_WITHDRAWAL_READERS = ("withdrawal.request", "withdrawal.approve")


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


@attrs.frozen
class WithdrawalPayoutIn(DomainEvent):
    """Recorded with :class:`WithdrawalRequested`: paid out in ``currency``, not the wallet's."""

    currency: Currency


@attrs.frozen
class WithdrawalPayoutQuoted(DomainEvent):
    """The broker's withdrawal rate, locked at approval (recorded with
    :class:`WithdrawalApproved`): the amount is sold for ``payout`` (what the PSP pays out); at
    the market it was worth ``market_value``; the difference is the FX revenue."""

    payout: Money
    payout_exact: UnroundedMoney
    market_value: Money
    revenue: Money
    rate_id: str
    client_rate: Decimal  # one unit of the wallet's currency buys this much of the payout's
    market_rate: Decimal
    market_source: str
    market_as_of: datetime
    quoted_at: datetime


# InstrumentAdded is registered apart, at version 3 with its upcasters: register_instrument_events.
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
    WithdrawalPayoutIn,
    WithdrawalPayoutQuoted,
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
    payout_currency: Currency | None = None  # None: paid out in the wallet's currency
    payout_quote: WithdrawalPayoutQuoted | None = None  # the rate locked at approval

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case WithdrawalPayoutIn(currency=currency):
                return self.evolve(payout_currency=currency)
            case WithdrawalPayoutQuoted():
                return self.evolve(payout_quote=event)
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


@attrs.frozen(kw_only=True)
class WithdrawalView:
    """A withdrawal as one actor may see it (:meth:`Withdrawals.view`): ``to`` is the
    destination masked for the actor's roles."""

    withdrawal_id: str
    client_id: str
    amount: Money
    fee: Money
    status: WithdrawalStatus
    to: InstrumentView
    # Paid out in another currency: the payout, the client's rate and its id, once approved.
    payout: Money | None = None
    rate: Decimal | None = None
    rate_id: str | None = None


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
        rates: BrokerRates | None = None,
        fx: FxBook | None = None,
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
        self.rates = rates  # the broker's rates: needed for payouts in another currency
        self.fx = fx or FxBook(ledger)
        approvals.register("withdrawal", ApprovalRule(execute=self._approve, check=self._check))

    def _uow(self, actor: str, reason: str) -> UnitOfWork:
        return UnitOfWork(self.repository, EventMetadata(actor, reason=reason))

    # -- instruments -----------------------------------------------------------------------
    def add_instrument(self, actor: Actor, client_id: str, kind: InstrumentKind, value: str) -> str:
        self.access.require(actor, "instrument.manage", client_id=client_id)
        if not isinstance(kind, InstrumentKind):
            raise ValidationError("an instrument is a card, an IBAN or an e-wallet")
        parsed = _PARSERS[kind].parse(value)
        instrument_id = self.ids()
        with self._uow(actor.id, "instrument added") as uow:
            uow.record(
                PayoutInstrument.blank(instrument_id),
                InstrumentAdded(instrument_id, client_id, kind, parsed.reveal()),
            )
            uow.commit()
        return instrument_id

    def verify_instrument(self, actor: Actor, instrument_id: str) -> InstrumentView:
        instrument = self._instrument(instrument_id)
        self.access.require(actor, "instrument.verify", client_id=instrument.client_id)
        if instrument.removed:
            raise IllegalTransitionError("a removed instrument cannot be verified")
        if instrument.erased:
            raise IllegalTransitionError("an erased client's instrument cannot be verified")
        with self._uow(actor.id, "instrument verified") as uow:
            instrument = uow.record(instrument, InstrumentVerified(actor.id))
            uow.commit()
        return self._shown(self._roles(actor, _INSTRUMENT_READERS, instrument), instrument)

    def instrument(self, actor: Actor, instrument_id: str) -> InstrumentView:
        """The instrument as ``actor`` may see it (who manages or verifies the client's
        instruments), masked for the roles that let it (:class:`InstrumentView`)."""
        instrument = self._instrument(instrument_id)
        return self._shown(self._roles(actor, _INSTRUMENT_READERS, instrument), instrument)

    def reveal_instrument(self, actor: Actor, instrument_id: str, reason: str) -> str:
        """The instrument's value in clear, for an actor with ``pii.reveal`` on the client's
        rows, recorded first as a :class:`~fxcrm_core.privacy.PiiRevealed` with the reason
        (:class:`~fxcrm_core.privacy.PiiReveals`); an erased value is not revealed."""
        instrument = self._instrument(instrument_id)
        if instrument.value is None:
            raise NotFoundError("no such instrument")
        if instrument.value.erased:
            self.access.require(actor, "pii.reveal", client_id=instrument.client_id)
            raise IllegalTransitionError("the client was erased: nothing to reveal")
        return PiiReveals(self.repository, self.access).reveal(
            actor,
            instrument.value,
            subject_id=instrument.client_id,
            reason=reason,
            field=f"instrument:{instrument.id}",
        )

    def _instrument(self, instrument_id: str) -> PayoutInstrument:
        if not isinstance(instrument_id, str) or not instrument_id:
            raise ValidationError("an instrument id is non-empty text")
        return self.repository.get(PayoutInstrument, instrument_id)

    def _roles(
        self, actor: Actor, permissions: tuple[str, ...], instrument: PayoutInstrument
    ) -> frozenset[str]:
        """The actor's roles that grant one of ``permissions`` on the client's rows: what a
        view is masked for. None of them: AccessDeniedError."""
        roles = frozenset[str]().union(
            *(
                self.access.roles_allowing(actor, permission, client_id=instrument.client_id)
                for permission in permissions
            )
        )
        if not roles:
            raise AccessDeniedError(f"{actor.id} may not see this client's payment details")
        return roles

    def _shown(self, roles: frozenset[str], instrument: PayoutInstrument) -> InstrumentView:
        """The instrument masked for ``roles``: its partial mask (never more: the value in
        clear only through :meth:`reveal_instrument`), ``****`` for a role the masking policy
        does not let see that kind, ``[erased]`` once the client's key is gone."""
        if instrument.kind is None or instrument.value is None:
            raise NotFoundError("no such instrument")
        value = instrument.value
        reveal = min(self.masking.reveal_for(roles, value.kind), Reveal.PARTIAL)
        return InstrumentView(
            instrument_id=instrument.id,
            client_id=instrument.client_id,
            kind=instrument.kind,
            masked=ERASED if value.erased else value.masked(reveal),
            verified=instrument.verified,
            removed=instrument.removed,
        )

    def remove_instrument(self, actor: Actor, instrument_id: str) -> None:
        instrument = self._instrument(instrument_id)
        self.access.require(actor, "instrument.manage", client_id=instrument.client_id)
        with self._uow(actor.id, "instrument removed") as uow:
            uow.record(instrument, InstrumentRemoved(actor.id))
            uow.commit()

    def _usable(self, client_id: str, instrument_id: str) -> PayoutInstrument:
        instrument = self.repository.get(PayoutInstrument, instrument_id)
        if instrument.client_id != client_id:
            raise _refusal(
                AccessDeniedError("withdrawals go only to the client's own instruments"),
                "refusal.withdrawal.own_instrument",
            )
        if not instrument.usable:
            raise _refusal(
                IllegalTransitionError("the payout instrument is not verified"),
                "refusal.withdrawal.instrument_not_verified",
            )
        return instrument

    # -- withdrawals -----------------------------------------------------------------------
    def request(
        self,
        actor: Actor,
        client_id: str,
        instrument_id: str,
        amount: Money,
        *,
        payout_currency: str | Currency | None = None,
    ) -> str:
        """Withdraw ``amount`` (and the fee) from the wallet in its currency, paid out in
        ``payout_currency`` (default: the same); another currency is priced now (an unpriced
        pair is refused) and converted at the broker's withdrawal rate locked at approval."""
        self.access.require(actor, "withdrawal.request", client_id=client_id)
        self.kyc.require(client_id, Right.WITHDRAW)
        self.limits.check(amount)
        payout = None if payout_currency is None else Currency.of(payout_currency)
        if payout == amount.currency:
            payout = None
        if payout is not None:
            self._settle(amount, payout)  # fails early, writes nothing
        instrument = self._usable(client_id, instrument_id)
        fee = self.fees.fee(amount)
        withdrawal_id = self.ids()
        requested = WithdrawalRequested(
            withdrawal_id, client_id, amount, fee, instrument_id, instrument.version
        )
        retry_on_race(lambda: self._hold(actor, requested, payout), "the withdrawal request")
        self._submit(actor, withdrawal_id)
        return withdrawal_id

    def _settle(self, amount: Money, payout: Currency) -> FxSettlement:
        if self.rates is None:
            raise ValidationError("payouts in another currency need the broker's rates")
        quote = self.rates.quote_between(
            amount.currency, payout, Direction.WITHDRAWAL, self.clock.now()
        )
        return self.fx.settle(amount, payout, quote)

    def _hold(
        self, actor: Actor, requested: WithdrawalRequested, payout: Currency | None = None
    ) -> None:
        """Hold the amount and fee, and count them on today's counter, in one append.

        The counter is read here, on each attempt: a request in another process that counted
        first makes this append fail, and the next attempt checks the limit on its total (the
        ledger retries on its own streams only, so a stale counter comes back as a conflict)."""
        amount, fee, withdrawal_id = requested.amount, requested.fee, requested.withdrawal_id
        day_id = f"{requested.client_id}:{self.calendar.trading_day(self.clock.now()).isoformat()}"
        day = self.repository.load(PaymentDay, day_id) or PaymentDay.blank(day_id)
        cap = self.daily.get(amount.currency.code)
        if cap is not None and (day.total or Money.zero(amount.currency)) + amount > cap:
            raise _refusal(
                LimitExceededError(f"withdrawals are limited to {cap} a day"),
                "refusal.withdrawal.daily_limit",
                limit=cap,
            )
        wallet = self.money.wallet(requested.client_id, amount.currency)
        clearing = self.money.broker("psp_clearing", amount.currency)
        holds = [TransferRequest(f"wd:{withdrawal_id}", wallet, clearing, amount, pending=True)]
        if fee.is_positive():
            fees = self.money.broker("fees", amount.currency)
            holds.append(
                TransferRequest(f"wd-fee:{withdrawal_id}", wallet, fees, fee, pending=True)
            )
        also: list[tuple[Aggregate, DomainEvent]] = [
            (Withdrawal.blank(withdrawal_id), requested),
            (day, PaymentCounted(amount)),
        ]
        if payout is not None:
            also.append(
                (Withdrawal.blank(withdrawal_id).fold([requested]), WithdrawalPayoutIn(payout))
            )
        self.ledger.transfer_linked(holds, actor=actor.id, also=also)

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

    def view(self, actor: Actor, withdrawal_id: str) -> WithdrawalView:
        """The withdrawal as ``actor`` may see it (who requests or approves the client's
        withdrawals): amounts and status, and where the money goes as the instrument's mask
        for the roles that let the actor act on it."""
        if not isinstance(withdrawal_id, str) or not withdrawal_id:
            raise ValidationError("a withdrawal id is non-empty text")
        w = self.get(withdrawal_id)
        instrument = self._instrument(w.instrument_id)
        roles = self._roles(actor, _WITHDRAWAL_READERS, instrument)
        assert w.amount is not None
        assert w.fee is not None
        assert w.status is not None
        return WithdrawalView(
            withdrawal_id=w.id,
            client_id=w.client_id,
            amount=w.amount,
            fee=w.fee,
            status=w.status,
            to=self._shown(roles, instrument),
            payout=w.payout_quote.payout if w.payout_quote else None,
            rate=w.payout_quote.client_rate if w.payout_quote else None,
            rate_id=w.payout_quote.rate_id if w.payout_quote else None,
        )

    def _check(self, params: Mapping[str, str]) -> None:
        w = self.get(params["withdrawal_id"])
        if w.status is not WithdrawalStatus.REQUESTED:
            raise _refusal(
                IllegalTransitionError("the withdrawal is no longer waiting for approval"),
                "refusal.withdrawal.not_pending",
            )
        # The client's level as of now, every process's decisions included: a document revoked
        # since the request stops the money here.
        self.kyc.require(w.client_id, Right.WITHDRAW)
        instrument = self._usable(w.client_id, w.instrument_id)
        if instrument.version != w.instrument_version:
            raise _refusal(
                IllegalTransitionError("the payout instrument changed: approval restarts"),
                "refusal.withdrawal.instrument_changed",
            )
        if w.payout_currency is not None:
            assert w.amount is not None
            self._settle(w.amount, w.payout_currency)  # no rate now: no approval now

    def _approve(self, params: Mapping[str, str], key: str) -> str:
        w = self.get(params["withdrawal_id"])
        assert w.approval_id is not None
        events: list[DomainEvent] = [WithdrawalApproved(w.approval_id)]
        if w.payout_currency is not None:
            assert w.amount is not None
            events.append(_quoted(self._settle(w.amount, w.payout_currency), self.clock.now()))
        with self._uow("system:approvals", "withdrawal approved") as uow:
            uow.record(w, *events)
            uow.commit(idempotency_key=key)
        return f"withdrawal {w.id} approved"

    def change_instrument(self, actor: Actor, withdrawal_id: str, instrument_id: str) -> None:
        """Send the money elsewhere: only before payment, and approval starts again."""
        w = self.get(withdrawal_id)
        self.access.require(actor, "withdrawal.request", client_id=w.client_id)
        if w.status not in (WithdrawalStatus.REQUESTED, WithdrawalStatus.APPROVED):
            raise _refusal(
                IllegalTransitionError("the withdrawal can no longer change"),
                "refusal.withdrawal.final",
            )
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
        if w.payout_quote is not None:
            self._convert_payout(w)
        self.ledger.post_pending(
            f"wd:{withdrawal_id}", actor="psp:payout", also=[(w, WithdrawalPaid(psp_reference))]
        )
        return self.get(withdrawal_id)

    def _convert_payout(self, w: Withdrawal) -> None:
        """Book the payout's conversion at the rate locked at approval, before the hold is
        posted (a retry finds it booked): what the hold moves to the wallet currency's PSP
        clearing is sold to the FX position, the payout bought into the payout currency's."""
        quoted, amount = w.payout_quote, w.amount
        assert quoted is not None
        assert amount is not None
        payout = quoted.payout.currency
        settlement = FxSettlement(
            Direction.WITHDRAWAL, amount, quoted.payout, quoted.payout_exact,
            quoted.market_value, quoted.revenue,
            ExchangeRate(amount.currency, payout, quoted.client_rate, quoted.rate_id,
                         quoted.quoted_at),
            ExchangeRate(amount.currency, payout, quoted.market_rate, quoted.market_source,
                         quoted.market_as_of),
            quoted.rate_id,
        )  # fmt: skip
        self.fx.book(
            f"withdrawal:{w.id}",
            settlement,
            source=self.money.broker("psp_clearing", amount.currency),
            target=self.money.broker("psp_clearing", payout),
            actor="psp:payout",
        )

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


_E = TypeVar("_E", bound=FxCrmError)


def _refusal(error: _E, code: str, **params: object) -> _E:
    """``error`` with the catalog msgid a client portal shows for it (``Catalog.error_text``
    reads ``code`` first; the English message stays for logs) and the values its text names
    (``params``: the broker's own figures, never a client's data)."""
    setattr(error, "code", code)  # noqa: B010 - FxCrmError declares no code attribute
    setattr(error, "params", dict(params))  # noqa: B010 - nor params
    return error


def _quoted(settled: FxSettlement, at: datetime) -> WithdrawalPayoutQuoted:
    market = settled.market_rate
    return WithdrawalPayoutQuoted(
        settled.bought, settled.bought_exact, settled.market_value, settled.revenue,
        settled.rate_id, settled.client_rate.rate, market.rate, market.source, market.as_of, at,
    )  # fmt: skip
