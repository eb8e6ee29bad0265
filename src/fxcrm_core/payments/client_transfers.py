"""Money from one client's wallet to another's (转账): both verified, within the broker's limits,
approved by a second person above a threshold, accepted by the receiver where the broker asks
for consent. The amount is held on the sender's wallet at once (so two transfers racing on one
balance cannot both pass) and posted when every gate is passed, or released when the transfer
is rejected, declined or cancelled. The caller names each transfer (its request id): a retry of
the same request answers the same transfer, the same id for another request is refused.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Self

import attrs

from fxcrm_core.access import AccessControl, Actor, ApprovalRule, Approvals
from fxcrm_core.events import Aggregate, DomainEvent, EventMetadata, Repository, UnitOfWork
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    ConcurrencyError,
    IdempotencyConflictError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.money import Money
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.trading_day import TradingCalendar
from fxcrm_core.kyc import KycLevelTooLowError, KycService, Right
from fxcrm_core.ledger import Ledger, TransferRequest
from fxcrm_core.payments.deposits import LimitExceededError, PaymentLimits, retry_on_race
from fxcrm_core.payments.transfers import MoneyAccounts
from fxcrm_core.payments.withdrawals import PaymentCounted, PaymentDay

__all__ = [
    "CLIENT_TRANSFER_ACTION",
    "CLIENT_TRANSFER_EVENTS",
    "ClientTransfer",
    "ClientTransferStatus",
    "ClientTransfers",
]

#: The maker-checker action of a transfer above the approval threshold: ``transfer.request``
#: (the sender, or finance for them) and ``transfer.approve`` (finance).
CLIENT_TRANSFER_ACTION = "transfer"


class ClientTransferStatus(enum.Enum):
    WAITING = "waiting"  # held: for an approval, the receiver's consent, or both
    COMPLETED = "completed"
    REJECTED = "rejected"  # by a checker
    DECLINED = "declined"  # by the receiver
    CANCELLED = "cancelled"  # by the sender


@attrs.frozen
class ClientTransferRequested(DomainEvent):
    transfer_id: str
    sender_id: str
    receiver_id: str
    amount: Money
    needs_approval: bool
    needs_consent: bool


@attrs.frozen
class ClientTransferSubmitted(DomainEvent):
    approval_id: str


@attrs.frozen
class ClientTransferApproved(DomainEvent):
    approval_id: str


@attrs.frozen
class ClientTransferAccepted(DomainEvent):
    accepted_by: str


@attrs.frozen
class ClientTransferCompleted(DomainEvent):
    transfer_id: str


@attrs.frozen
class ClientTransferClosed(DomainEvent):
    status: ClientTransferStatus  # rejected, declined or cancelled
    reason: str


CLIENT_TRANSFER_EVENTS = (
    ClientTransferRequested,
    ClientTransferSubmitted,
    ClientTransferApproved,
    ClientTransferAccepted,
    ClientTransferCompleted,
    ClientTransferClosed,
)


@attrs.frozen(kw_only=True)
class ClientTransfer(Aggregate):
    """One client-to-client transfer, ``c2c-<request id>``."""

    category = "c2c"
    sender_id: str = ""
    receiver_id: str = ""
    amount: Money | None = None
    needs_approval: bool = False
    needs_consent: bool = False
    approval_id: str | None = None
    approved: bool = False
    accepted: bool = False
    status: ClientTransferStatus | None = None
    reason: str = ""

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case ClientTransferRequested():
                return self.evolve(
                    sender_id=event.sender_id, receiver_id=event.receiver_id,
                    amount=event.amount, needs_approval=event.needs_approval,
                    needs_consent=event.needs_consent, status=ClientTransferStatus.WAITING,
                )  # fmt: skip
            case ClientTransferSubmitted(approval_id=approval_id):
                return self.evolve(approval_id=approval_id)
            case ClientTransferApproved():
                return self.evolve(approved=True)
            case ClientTransferAccepted():
                return self.evolve(accepted=True)
            case ClientTransferCompleted():
                return self.evolve(status=ClientTransferStatus.COMPLETED)
            case ClientTransferClosed(status=status, reason=reason):
                return self.evolve(status=status, reason=reason)
        raise ValidationError(f"ClientTransfer cannot apply {type(event).__name__}")

    @property
    def ready(self) -> bool:
        """Every gate passed: what is left is to post the hold."""
        return (
            self.status is ClientTransferStatus.WAITING
            and (self.approved or not self.needs_approval)
            and (self.accepted or not self.needs_consent)
        )


class ClientTransfers:
    """Client-to-client transfers. ``daily`` caps what one client sends a trading day, per
    currency; ``approval_above`` sends a transfer above that amount (per currency) to a second
    person; ``consent`` makes every transfer wait for the receiver to accept it."""

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
        approval_above: Mapping[str, Money] | None = None,
        consent: bool = False,
        calendar: TradingCalendar | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.repository = repository
        self.ledger = ledger
        self.access = access
        self.kyc = kyc
        self.approvals = approvals
        self.limits = limits
        self.daily = _by_code(daily, "daily transfer limits")
        self.approval_above = _by_code(approval_above, "transfer approval thresholds")
        if not isinstance(consent, bool):
            raise ValidationError("consent is True or False")
        self.consent = consent
        self.calendar = calendar or TradingCalendar()
        self.clock = clock or SystemClock()
        self.money = MoneyAccounts(ledger)
        approvals.register(
            CLIENT_TRANSFER_ACTION, ApprovalRule(execute=self._approved, check=self._check)
        )

    # -- reads -----------------------------------------------------------------------------
    def get(self, actor: Actor, transfer_id: str) -> ClientTransfer:
        """The transfer, for the sender's or the receiver's side (``transfer.request`` on
        either client's rows)."""
        transfer = self._load(transfer_id)
        if not (
            self.access.allows(actor, "transfer.request", client_id=transfer.sender_id)
            or self.access.allows(actor, "transfer.request", client_id=transfer.receiver_id)
        ):
            raise AccessDeniedError(f"{actor.id} may not read this transfer")
        return transfer

    def _load(self, transfer_id: str) -> ClientTransfer:
        _require_id(transfer_id, "a transfer id")
        transfer = self.repository.load(ClientTransfer, transfer_id)
        if transfer is None or transfer.status is None:
            raise NotFoundError("no such transfer")
        return transfer

    # -- the sender ------------------------------------------------------------------------
    def request(
        self, actor: Actor, request_id: str, sender_id: str, receiver_id: str, amount: Money
    ) -> ClientTransfer:
        """Hold ``amount`` on the sender's wallet for the receiver; completed at once when no
        approval and no consent is needed. A retry with the same request id and the same
        content answers the transfer as it stands; another content is refused."""
        _require_id(request_id, "a request id")
        _require_id(sender_id, "a sender id")
        _require_id(receiver_id, "a receiver id")
        if not isinstance(amount, Money):
            raise ValidationError("a transfer amount is Money")
        self.access.require(actor, "transfer.request", client_id=sender_id)
        known = self.repository.load(ClientTransfer, request_id)
        if known is not None and known.status is not None:
            # A retry: the same transfer, taken on from where an earlier attempt stopped (a
            # crash after the hold, before its approval was asked for or the money moved).
            self._same(known, sender_id, receiver_id, amount)
            return self._go_on(actor, known)
        if sender_id == receiver_id:
            raise ValidationError("a client cannot send money to themselves")
        self.limits.check(amount)
        self.kyc.require(sender_id, Right.WITHDRAW)
        if self.kyc.closed is not None and self.kyc.closed(sender_id):
            # A closed relationship takes out what is left to its own instruments only.
            raise KycLevelTooLowError("the client's relationship is closed")
        self.kyc.require(receiver_id, Right.DEPOSIT)
        threshold = self.approval_above.get(amount.currency.code)
        requested = ClientTransferRequested(
            request_id,
            sender_id,
            receiver_id,
            amount,
            # Staff moving a client's money to another client never do it alone, whatever the
            # amount: only the sender's own request may pass without a second person.
            needs_approval=(threshold is not None and amount > threshold)
            or actor.client_id != sender_id,
            needs_consent=self.consent,
        )
        try:
            retry_on_race(lambda: self._hold(actor, requested), "the transfer request")
        except IdempotencyConflictError:
            raise IdempotencyConflictError("this request id names another transfer") from None
        return self._go_on(actor, self._load(request_id))

    def _go_on(self, actor: Actor, transfer: ClientTransfer) -> ClientTransfer:
        """Ask for the approval the transfer needs (once), then move the money if nothing else
        is waiting: the one way on from a hold, for a first attempt and a retry alike."""
        if (
            transfer.status is ClientTransferStatus.WAITING
            and transfer.needs_approval
            and transfer.approval_id is None
        ):
            approval_id = self.approvals.request(
                actor, CLIENT_TRANSFER_ACTION, transfer.id, {"transfer_id": transfer.id},
                client_id=transfer.sender_id,
            )  # fmt: skip
            try:
                self._record(actor.id, transfer, ClientTransferSubmitted(approval_id), "submitted")
            except ConcurrencyError:
                # Another attempt submitted the transfer first: its request is the one; this
                # one is withdrawn, so no checker can act on a second.
                self.approvals.cancel(actor, approval_id)
        return self._complete_if_ready(actor.id, transfer.id)

    def _same(
        self, known: ClientTransfer, sender_id: str, receiver_id: str, amount: Money
    ) -> ClientTransfer:
        if (known.sender_id, known.receiver_id, known.amount) != (sender_id, receiver_id, amount):
            raise IdempotencyConflictError("this request id names another transfer")
        return known

    def _hold(self, actor: Actor, requested: ClientTransferRequested) -> None:
        """Hold the amount and count it on the sender's day, in one append with the request
        (the day's counter read afresh on each attempt, as withdrawals do)."""
        known = self.repository.load(ClientTransfer, requested.transfer_id)
        if known is not None and known.status is not None:
            self._same(known, requested.sender_id, requested.receiver_id, requested.amount)
            return
        amount = requested.amount
        # The withdrawals' day counter, in a series of its own: "c2c:<client>:<trading day>".
        today = self.calendar.trading_day(self.clock.now()).isoformat()
        day_id = f"c2c:{requested.sender_id}:{today}"
        day = self.repository.load(PaymentDay, day_id) or PaymentDay.blank(day_id)
        cap = self.daily.get(amount.currency.code)
        if cap is not None and (day.total or Money.zero(amount.currency)) + amount > cap:
            raise LimitExceededError(f"transfers to other clients are limited to {cap} a day")
        sender = self.money.wallet(requested.sender_id, amount.currency)
        receiver = self.money.wallet(requested.receiver_id, amount.currency)
        self.ledger.transfer_linked(
            [
                TransferRequest(
                    _hold_id(requested.transfer_id), sender, receiver, amount, pending=True
                )
            ],
            actor=actor.id,
            also=[
                (ClientTransfer.blank(requested.transfer_id), requested),
                (day, PaymentCounted(amount)),
            ],
        )

    def cancel(self, actor: Actor, transfer_id: str, reason: str) -> ClientTransfer:
        """The sender takes it back before it completes: the hold is released."""
        transfer = self._load(transfer_id)
        self.access.require(actor, "transfer.request", client_id=transfer.sender_id)
        return self._close(actor, transfer, ClientTransferStatus.CANCELLED, reason)

    # -- the receiver ----------------------------------------------------------------------
    def accept(self, actor: Actor, transfer_id: str) -> ClientTransfer:
        """The receiver consents (where the broker asks for it); completes the transfer when
        nothing else is waiting."""
        transfer = self._load(transfer_id)
        self._require_receiver(actor, transfer)
        if transfer.status is not ClientTransferStatus.WAITING:
            if transfer.accepted:
                return transfer
            raise IllegalTransitionError("the transfer is no longer waiting")
        if not transfer.needs_consent or transfer.accepted:
            return transfer
        self.kyc.require(transfer.receiver_id, Right.DEPOSIT)
        self._record(actor.id, transfer, ClientTransferAccepted(actor.id), "accepted")
        return self._complete_if_ready(actor.id, transfer_id)

    def decline(self, actor: Actor, transfer_id: str, reason: str) -> ClientTransfer:
        """The receiver refuses it: the hold is released."""
        transfer = self._load(transfer_id)
        self._require_receiver(actor, transfer)
        return self._close(actor, transfer, ClientTransferStatus.DECLINED, reason)

    def _require_receiver(self, actor: Actor, transfer: ClientTransfer) -> None:
        # Consent is the receiver's own: the permission on the receiver's rows, and an actor
        # acting for that very client (staff do not consent for a client).
        self.access.require(actor, "transfer.request", client_id=transfer.receiver_id)
        if actor.client_id != transfer.receiver_id:
            raise AccessDeniedError(f"{actor.id} is not the receiver of this transfer")

    # -- the checker -----------------------------------------------------------------------
    def reject(self, actor: Actor, transfer_id: str, reason: str) -> ClientTransfer:
        """A checker refuses it (or a waiting approval is rejected): the hold is released."""
        transfer = self._load(transfer_id)
        self.access.require(actor, "transfer.approve", client_id=transfer.sender_id)
        if (
            transfer.status is ClientTransferStatus.WAITING
            and transfer.approval_id is not None
            and not transfer.approved
        ):
            self.approvals.reject(actor, transfer.approval_id, reason)
        return self._close(actor, transfer, ClientTransferStatus.REJECTED, reason)

    def _check(self, params: Mapping[str, str]) -> None:
        transfer = self._load(params["transfer_id"])
        if transfer.status is not ClientTransferStatus.WAITING:
            raise IllegalTransitionError("the transfer is no longer waiting for approval")
        # Both clients' levels as of now, every process's decisions included.
        self.kyc.require(transfer.sender_id, Right.WITHDRAW)
        self.kyc.require(transfer.receiver_id, Right.DEPOSIT)

    def _approved(self, params: Mapping[str, str], key: str) -> str:
        transfer = self._load(params["transfer_id"])
        if not transfer.approved:
            assert transfer.approval_id is not None
            with UnitOfWork(
                self.repository, EventMetadata("system:approvals", reason="transfer approved")
            ) as uow:
                uow.record(transfer, ClientTransferApproved(transfer.approval_id))
                uow.commit(idempotency_key=key)
        self._complete_if_ready("system:approvals", transfer.id)
        return f"transfer {transfer.id} approved"

    # -- completion and release ------------------------------------------------------------
    def _complete_if_ready(self, actor_id: str, transfer_id: str) -> ClientTransfer:
        transfer = self._load(transfer_id)
        if not transfer.ready:
            return transfer
        # The levels once more at the moment the money moves: a document revoked while the
        # transfer waited stops it here (it stays waiting; a checker may reject it).
        self.kyc.require(transfer.sender_id, Right.WITHDRAW)
        self.kyc.require(transfer.receiver_id, Right.DEPOSIT)
        self.ledger.post_pending(
            _hold_id(transfer_id),
            actor=actor_id,
            also=[(transfer, ClientTransferCompleted(transfer_id))],
        )
        return self._load(transfer_id)

    def _close(
        self, actor: Actor, transfer: ClientTransfer, status: ClientTransferStatus, reason: str
    ) -> ClientTransfer:
        reason = checked_text(reason, "reason", 500)
        if transfer.status is status:
            return transfer
        if transfer.status is not ClientTransferStatus.WAITING:
            raise IllegalTransitionError("the transfer can no longer be closed")
        if (
            transfer.approval_id is not None
            and not transfer.approved
            and status is not ClientTransferStatus.REJECTED
            and self.approvals.get(transfer.approval_id).maker_id == actor.id
        ):
            # The maker withdraws its request; any other closing leaves the request to be
            # refused by its check (the transfer no longer waits).
            self.approvals.cancel(actor, transfer.approval_id)
        self.ledger.void_pending(
            _hold_id(transfer.id),
            actor=actor.id,
            also=[(transfer, ClientTransferClosed(status, reason))],
        )
        return self._load(transfer.id)

    def _record(
        self, actor_id: str, transfer: ClientTransfer, event: DomainEvent, reason: str
    ) -> None:
        with UnitOfWork(
            self.repository, EventMetadata(actor_id, reason=f"transfer {reason}")
        ) as uow:
            uow.record(transfer, event)
            uow.commit()


def _hold_id(transfer_id: str) -> str:
    return f"c2c:{transfer_id}"


def _require_id(value: object, what: str) -> None:
    if checked_text(value, what) != value:
        raise ValidationError(f"the {what} has no surrounding spaces")


def _by_code(value: Mapping[str, Money] | None, what: str) -> dict[str, Money]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(code, str) and isinstance(money, Money) and money.currency.code == code
        for code, money in value.items()
    ):
        raise ValidationError(f"{what} map a currency code to Money in that currency")
    return dict(value)
