"""Deposits: initiated by the client, confirmed (or failed) by the PSP's callback, credited to
the wallet through the ledger. Callbacks are idempotent: a repeat changes nothing, a
contradiction (failed after credited, another amount, a reused PSP reference) moves no money
and is recorded for review. Copies of a callback racing in several processes answer as if they
had come one after the other: a copy that loses an append decides again on what the winner
wrote (a repeat, or a contradiction), never with a ConcurrencyError.

A deposit may settle in another currency than the wallet it credits (CNY into a USD wallet): it
is converted when the PSP confirms it, at the broker's deposit rate then (``fx.BrokerRates``),
and booked through the FX book (``fx.FxBook``): the markup is the broker's FX revenue."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Self, TypeVar

import attrs

from fxcrm_core.access import AccessControl, Actor
from fxcrm_core.events import Aggregate, DomainEvent, EventMetadata, Repository, UnitOfWork
from fxcrm_core.fx import BrokerRates, Direction, FxBook, FxSettlement
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import (
    ConcurrencyError,
    FxCrmError,
    IdempotencyConflictError,
    ValidationError,
)
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.kyc import KycService, Right
from fxcrm_core.ledger import Ledger, TransferRequest
from fxcrm_core.payments.transfers import MoneyAccounts

__all__ = [
    "DEPOSIT_EVENTS",
    "CallbackOutcome",
    "Deposit",
    "DepositConverted",
    "DepositIntoWallet",
    "DepositStatus",
    "Deposits",
    "LimitExceededError",
    "PaymentLimits",
]


class LimitExceededError(FxCrmError, ValueError):
    """A payment above its per-transaction or daily limit, or in a currency with no limit."""

    default_message = "the payment is above the allowed limit"


_TRIES = 8
_T = TypeVar("_T")


def retry_on_race(attempt: Callable[[], _T], what: str) -> _T:
    """Run ``attempt`` again while it loses an append to a concurrent writer.

    For commands whose attempts read afresh and whose appends are each all-or-nothing and safe
    to repeat (an account opened again with the same details is found open): a ConcurrencyError
    means the losing append wrote nothing, and the next attempt decides on what the winner wrote
    (an account it opened, a counter it moved, a callback it applied).
    """
    for _ in range(_TRIES):
        try:
            return attempt()
        except ConcurrencyError:
            continue
    raise ConcurrencyError(f"{what} kept racing with other writers; try again")


def _by_code(limits: Iterable[Money]) -> Mapping[str, Money]:
    return {m.currency.code: m for m in limits}


@attrs.frozen
class PaymentLimits:
    """Per-transaction limits per currency; a currency with no limit set is refused."""

    per_transaction: Mapping[str, Money] = attrs.field(converter=_by_code)

    def check(self, amount: Money) -> None:
        amount.require_positive("payment amount")
        limit = self.per_transaction.get(amount.currency.code)
        if limit is None:
            raise LimitExceededError(f"no payment limit is set for {amount.currency.code}")
        if amount > limit:
            raise LimitExceededError(f"payments are limited to {limit} each")


class DepositStatus(enum.Enum):
    INITIATED = "initiated"
    CREDITED = "credited"
    FAILED = "failed"


class CallbackOutcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"  # recorded for review; no money moved


@attrs.frozen
class DepositInitiated(DomainEvent):
    deposit_id: str
    client_id: str
    amount: Money
    psp: str
    method: str


@attrs.frozen
class DepositCredited(DomainEvent):
    psp_reference: str


@attrs.frozen
class DepositFailed(DomainEvent):
    psp_reference: str
    reason: str


@attrs.frozen
class DepositIntoWallet(DomainEvent):
    """Recorded with :class:`DepositInitiated` when the deposit settles in another currency than
    the wallet it credits: it is converted when the PSP confirms it."""

    currency: Currency


@attrs.frozen
class DepositConverted(DomainEvent):
    """Recorded with :class:`DepositCredited` for a deposit in another currency: what the PSP
    settled, what the wallet got, the markup earned, the broker's rate id and both rates (one
    unit settled buys ``client_rate`` units of the wallet's currency; ``market_rate`` at the
    market)."""

    settled: Money
    credited: Money
    revenue: Money
    rate_id: str
    client_rate: Decimal
    market_rate: Decimal


@attrs.frozen
class CallbackConflict(DomainEvent):
    psp_reference: str
    reported: str
    amount: Money | None


@attrs.frozen
class PspReferenceUsed(DomainEvent):
    deposit_id: str


DEPOSIT_EVENTS = (
    DepositInitiated,
    DepositCredited,
    DepositFailed,
    CallbackConflict,
    PspReferenceUsed,
    DepositIntoWallet,
    DepositConverted,
)


@attrs.frozen(kw_only=True)
class Deposit(Aggregate):
    category = "deposit"
    client_id: str = ""
    amount: Money | None = None
    psp: str = ""
    status: DepositStatus | None = None
    psp_reference: str | None = None
    conflicts: int = 0
    wallet_currency: Currency | None = None  # None: the settlement currency
    conversion: DepositConverted | None = None  # once credited in another currency

    @property
    def credited(self) -> Money | None:
        """What the wallet got: the amount, or the converted amount; None until credited."""
        if self.status is not DepositStatus.CREDITED:
            return None
        return self.amount if self.conversion is None else self.conversion.credited

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case DepositIntoWallet(currency=currency):
                return self.evolve(wallet_currency=currency)
            case DepositConverted():
                return self.evolve(conversion=event)
            case DepositInitiated():
                return self.evolve(
                    client_id=event.client_id, amount=event.amount, psp=event.psp,
                    status=DepositStatus.INITIATED,
                )  # fmt: skip
            case DepositCredited(psp_reference=ref):
                return self.evolve(status=DepositStatus.CREDITED, psp_reference=ref)
            case DepositFailed(psp_reference=ref):
                return self.evolve(status=DepositStatus.FAILED, psp_reference=ref)
            case CallbackConflict():
                return self.evolve(conflicts=self.conflicts + 1)
        raise ValidationError(f"Deposit cannot apply {type(event).__name__}")


@attrs.frozen(kw_only=True)
class PspReference(Aggregate):
    category = "pspref"
    deposit_id: str = ""

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, PspReferenceUsed):
            return self.evolve(deposit_id=event.deposit_id)
        raise ValidationError(f"PspReference cannot apply {type(event).__name__}")


class Deposits:
    def __init__(
        self,
        repository: Repository,
        ledger: Ledger,
        access: AccessControl,
        kyc: KycService,
        limits: PaymentLimits,
        *,
        ids: IdGenerator | None = None,
        rates: BrokerRates | None = None,
        fx: FxBook | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.repository = repository
        self.ledger = ledger
        self.access = access
        self.kyc = kyc
        self.limits = limits
        self.ids = ids or IdGenerator()
        self.money = MoneyAccounts(ledger)
        self.rates = rates  # the broker's rates: needed for deposits in another currency
        self.fx = fx or FxBook(ledger)
        self.clock = clock or SystemClock()

    def _uow(self, actor: str, reason: str) -> UnitOfWork:
        return UnitOfWork(self.repository, EventMetadata(actor, reason=reason))

    def initiate(
        self,
        actor: Actor,
        client_id: str,
        amount: Money,
        *,
        psp: str,
        method: str,
        into: str | Currency | None = None,
    ) -> str:
        """Start a deposit of ``amount`` (in the currency the PSP settles) into the client's
        wallet in ``into`` (default: the same currency). Another currency is converted when the
        PSP confirms, at the broker's deposit rate then; a pair the broker does not price now,
        or an amount too small to convert, is refused here already."""
        self.access.require(actor, "deposit.request", client_id=client_id)
        self.kyc.require(client_id, Right.DEPOSIT)
        self.limits.check(amount)
        wallet = amount.currency if into is None else Currency.of(into)
        if wallet != amount.currency:
            self._settle(amount, wallet)  # priced now too: fails early, writes nothing
        deposit_id = self.ids()
        with self._uow(actor.id, "deposit initiated") as uow:
            dep = uow.record(
                Deposit.blank(deposit_id),
                DepositInitiated(deposit_id, client_id, amount, psp, method),
            )
            if wallet != amount.currency:
                uow.record(dep, DepositIntoWallet(wallet))
            uow.commit()
        return deposit_id

    def _settle(self, amount: Money, wallet: Currency) -> FxSettlement:
        if self.rates is None:
            raise ValidationError("deposits in another currency need the broker's rates")
        quote = self.rates.quote_between(
            amount.currency, wallet, Direction.DEPOSIT, self.clock.now()
        )
        return self.fx.settle(amount, wallet, quote)

    def get(self, deposit_id: str) -> Deposit:
        return self.repository.get(Deposit, deposit_id)

    def _conflict(
        self, dep: Deposit, ref: str, reported: str, amount: Money | None
    ) -> CallbackOutcome:
        with self._uow(f"psp:{dep.psp}", "callback conflict") as uow:
            uow.record(dep, CallbackConflict(ref, reported, amount))
            uow.commit()
        return CallbackOutcome.CONFLICT

    def psp_confirmed(self, deposit_id: str, psp_reference: str, amount: Money) -> CallbackOutcome:
        """The PSP says the money arrived: credit the wallet once."""
        return retry_on_race(
            lambda: self._confirmed(deposit_id, psp_reference, amount), "the deposit callback"
        )

    def _confirmed(self, deposit_id: str, psp_reference: str, amount: Money) -> CallbackOutcome:
        dep = self.get(deposit_id)
        assert dep.amount is not None
        if dep.status is DepositStatus.CREDITED:
            same = dep.psp_reference == psp_reference and amount == dep.amount
            return (
                CallbackOutcome.DUPLICATE
                if same
                else self._conflict(dep, psp_reference, "confirmed", amount)
            )
        if dep.status is DepositStatus.FAILED or amount != dep.amount:
            return self._conflict(dep, psp_reference, "confirmed", amount)
        ref_key = f"{dep.psp}:{psp_reference}"
        used = self.repository.load(PspReference, ref_key)
        if used is not None and used.deposit_id != deposit_id:
            return self._conflict(dep, psp_reference, "reference reused", amount)
        wallet_currency = dep.wallet_currency or amount.currency
        wallet = self.money.wallet(dep.client_id, wallet_currency)
        clearing = self.money.broker("psp_clearing", amount.currency)
        if wallet_currency != amount.currency:
            return self._converted(dep, psp_reference, ref_key, amount, clearing, wallet)
        try:
            result = self.ledger.transfer(
                TransferRequest(f"deposit:{deposit_id}", clearing, wallet, amount),
                actor=f"psp:{dep.psp}",
                also=[
                    (dep, DepositCredited(psp_reference)),
                    (PspReference.blank(ref_key), PspReferenceUsed(deposit_id)),
                ],
            )
        except IdempotencyConflictError:
            return self._conflict(self.get(deposit_id), psp_reference, "confirmed", amount)
        # A racing copy of this callback finds the transfer made: it changed nothing.
        return CallbackOutcome.DUPLICATE if result.replayed else CallbackOutcome.APPLIED

    def _converted(
        self,
        dep: Deposit,
        psp_reference: str,
        ref_key: str,
        amount: Money,
        clearing: str,
        wallet: str,
    ) -> CallbackOutcome:
        """Credit a deposit in another currency: converted at the broker's deposit rate now, the
        conversion, the credit and the PSP reference in one append. No rate now (missing, stale):
        a typed RateNotFoundError and nothing written, so the PSP's retry credits it later."""
        assert dep.wallet_currency is not None
        settled = self._settle(amount, dep.wallet_currency)
        converted = DepositConverted(
            settled.sold, settled.bought, settled.revenue, settled.rate_id,
            settled.client_rate.rate, settled.market_rate.rate,
        )  # fmt: skip
        conversion_id = f"deposit:{dep.id}"
        try:
            booked = self.fx.book(
                conversion_id,
                settled,
                source=clearing,
                target=wallet,
                actor=f"psp:{dep.psp}",
                also=[
                    (dep, converted),
                    (dep.fold([converted]), DepositCredited(psp_reference)),
                    (PspReference.blank(ref_key), PspReferenceUsed(dep.id)),
                ],
            )
        except IdempotencyConflictError:
            # A racing copy converted first (at another rate, a moment earlier): a repeat if it
            # was this callback, else a contradiction.
            now = self.get(dep.id)
            if now.status is DepositStatus.CREDITED and now.psp_reference == psp_reference:
                return CallbackOutcome.DUPLICATE
            return self._conflict(now, psp_reference, "confirmed", amount)
        return CallbackOutcome.DUPLICATE if booked.replayed else CallbackOutcome.APPLIED

    def psp_failed(self, deposit_id: str, psp_reference: str, reason: str) -> CallbackOutcome:
        """The PSP says the payment failed: nothing is credited; after a credit, a conflict."""
        return retry_on_race(
            lambda: self._failed(deposit_id, psp_reference, reason), "the deposit callback"
        )

    def _failed(self, deposit_id: str, psp_reference: str, reason: str) -> CallbackOutcome:
        dep = self.get(deposit_id)
        if dep.status is DepositStatus.FAILED:
            return CallbackOutcome.DUPLICATE
        if dep.status is DepositStatus.CREDITED:
            return self._conflict(dep, psp_reference, "failed", None)
        with self._uow(f"psp:{dep.psp}", "deposit failed") as uow:
            uow.record(dep, DepositFailed(psp_reference, reason))
            uow.commit()
        return CallbackOutcome.APPLIED
