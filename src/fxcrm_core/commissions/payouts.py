"""Payouts: an IB's rebates accrue on its own aggregate (``ibpayouts-<ib>``), fed by a policy on
the rebate book, unrounded. The policy writes one line per recorded batch to the accrual journal
(``ibaccruals-journal``: what the batch adds up to per IB, trading day and currency); each IB's
account absorbs the journal's lines after the last it absorbed, at a payout run and, for every
IB at once, at each :data:`ABSORB_EVERY`-th line (so a reader never replays more than that many
lines, and a busy day writes a few events per IB, not one per IB and batch). Answers
(:meth:`Payouts.account`, :meth:`Payouts.pending`) count the lines not absorbed yet.

A payout converts what is due into the IB's wallet currency at a recorded rate, rounds once
(down) and carries the remainder forward, respects a minimum, a cadence cut-off and a hold
window, goes through maker-checker above a threshold, and posts through the ledger from rebate
expense to the IB's wallet in the same atomic append as the aggregate's record of it.
Reversals claw back: they reduce what is pending, and a negative balance is carried into later
payouts.

Everything lives in the log: a restart, or a second process, pays exactly what one process
would, under the same payout ids (``payout:<ib>:<n>``, ``n`` counted on the aggregate).

Payout policies too: each IB's policy is a :class:`PayoutPolicySet` on its account's stream,
recorded with actor and reason (:meth:`Payouts.set_policy`), and every payout event names the
policy version it was decided under. The ``policies`` mapping a host configures seeds them:
a configured policy that differs from the one last recorded *from configuration* is recorded
as ``system:config`` (:meth:`Payouts.ensure_policies`, or lazily by the next run), so a change
made by hand stands until the configuration itself changes. The payout currency cannot change
while a balance or a held payout is in the old one (:class:`PayoutCurrencyChangeError`): pay
it out, or claw it back, first; pending accruals are converted at the run, as always."""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Self

import attrs

from fxcrm_core.access import AccessControl, Actor, ApprovalRule, Approvals, ApprovalStatus
from fxcrm_core.commissions.book import RebateEntriesRecorded
from fxcrm_core.commissions.tree import check_id, check_time
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    Policy,
    RecordedEvent,
    Repository,
    UnitOfWork,
    ValueCodec,
)
from fxcrm_core.events.store import read_types
from fxcrm_core.kernel._decimal import MAX_TEXT, to_decimal
from fxcrm_core.kernel.errors import (
    CodecError,
    ConcurrencyError,
    CurrencyMismatchError,
    FxCrmError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency, Money, Rounding, UnroundedMoney
from fxcrm_core.kernel.rates import RateSource
from fxcrm_core.ledger import Ledger, Transfer, TransferRequest, TransferStatus

__all__ = [
    "PAYOUT_ACTION",
    "PAYOUT_EVENTS",
    "PAYOUT_POLICY",
    "Cadence",
    "HeldPayout",
    "HeldPayoutMade",
    "IbPayoutAccount",
    "PAYOUT_POLICY_PERMISSION",
    "PayoutApprovalRejected",
    "PayoutCurrencyChangeError",
    "PayoutHeld",
    "PayoutMade",
    "PayoutPolicy",
    "PayoutPolicySet",
    "PayoutRefused",
    "PayoutResult",
    "Payouts",
    "ABSORB_EVERY",
    "AccrualJournal",
    "AccrualView",
    "AccrualsAbsorbed",
    "RebatesAccrued",
    "RebatesJournaled",
    "RemainderCarried",
    "accrual_policy",
    "accrue",
    "payout_transfer_id",
]

PAYOUT_ACTION = "payout"  # the approval action (permissions payout.request / payout.approve)
PAYOUT_POLICY = "ib-payouts"  # the accrual policy's name: its position stream is policy-<name>
PAYOUT_POLICY_PERMISSION = "payout.policy"  # setting an IB's payout policy
CONFIG_ACTOR = Actor.system("config")  # who records the configured policies

log = logging.getLogger("fxcrm_core.commissions")

_ZERO = Decimal(0)
_TRIES = 4
_SEED_CHUNK = 500  # configured policies recorded per append

#: What is pending on one trading day in one currency: (trading day, currency code, sum).
Sum = tuple[date, str, Decimal]
#: One IB's line in the accrual journal: (IB, trading day, currency code, sum).
Row = tuple[str, date, str, Decimal]
#: Every IB's account absorbs the journal's lines at each line whose version is a multiple of
#: this (in the policy's unit of work): no reader replays more lines than this. Part of the
#: log's format: readers take every line up to the last multiple as absorbed by every IB, so
#: a log written with one value must never be read with another.
ABSORB_EVERY = 16
JOURNAL_ID = "journal"


class Cadence(enum.Enum):
    INSTANT = "instant"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"

    def cutoff(self, today: date) -> date:
        """The last trading day a payout made ``today`` covers."""
        if self is Cadence.INSTANT:
            return today
        if self is Cadence.DAILY:
            return today - timedelta(days=1)
        if self is Cadence.WEEKLY:
            return today - timedelta(days=today.weekday() + 1)  # up to the previous Sunday
        return today.replace(day=1) - timedelta(days=1)  # up to the end of last month


@attrs.frozen
class PayoutPolicy:
    currency: Currency  # the IB's wallet currency
    minimum: Money
    cadence: Cadence = Cadence.DAILY
    hold: timedelta = timedelta(0)  # entries younger than this wait (disputes, reversals)
    approval_above: Money | None = None


class PayoutCurrencyChangeError(CurrencyMismatchError):
    """A new payout currency while the IB's balance or a held payout is in the old one."""

    default_message = "the IB is owed money in its current payout currency; settle it first"


def _checked(policy: object) -> PayoutPolicy:
    """``policy`` if it is a coherent PayoutPolicy, else ValidationError."""
    if not isinstance(policy, PayoutPolicy):
        raise ValidationError("a payout policy is a PayoutPolicy")
    if not isinstance(policy.currency, Currency) or not isinstance(policy.cadence, Cadence):
        raise ValidationError("a payout policy names a currency and a cadence")
    if not isinstance(policy.minimum, Money) or policy.minimum.currency != policy.currency:
        raise ValidationError("a payout minimum is Money in the policy's currency")
    if policy.minimum.is_negative():
        raise ValidationError("a payout minimum is not negative")
    above = policy.approval_above
    if above is not None and (not isinstance(above, Money) or above.currency != policy.currency):
        raise ValidationError("an approval threshold is Money in the policy's currency")
    if above is not None and above.is_negative():
        raise ValidationError("an approval threshold is not negative")
    hold = policy.hold
    if not isinstance(hold, timedelta) or hold < timedelta(0) or hold % timedelta(days=1):
        raise ValidationError("a payout hold is a whole number of days, not negative")
    if hold > MAX_HOLD:
        raise ValidationError("a payout hold is at most ten years")
    return policy


MAX_HOLD = timedelta(days=3660)  # a payout held longer than ten years is a typing error


@attrs.frozen
class PayoutResult:
    """What one run did for one IB. ``paid`` is set on exactly one result per payout, that of
    the run that posted it: a host sends its notice or bank transfer from ``paid`` alone.

    ``already_paid``: another run (a second process, a concurrent caller) posted this payout,
    ``payout_id``, first, for that amount; this run moved nothing (``paid`` is None) and must
    not act on it. ``carried`` is then what the other run left owed."""

    ib_id: str
    paid: Money | None  # None: nothing paid (below the minimum, nothing due, awaiting approval)
    carried: UnroundedMoney  # what stays owed in the IB's currency, rounding remainder included
    approval_id: str | None = None
    rate_source: str | None = None
    payout_id: str | None = None  # the ledger transfer id of what was paid
    error: str | None = None  # why this IB was not paid (run_all: the others are unaffected)
    already_paid: Money | None = None  # posted by another run under ``payout_id``, not this one


def payout_transfer_id(ib_id: str, sequence: int) -> str:
    """The ledger transfer id of an IB's ``sequence``-th payout."""
    return f"payout:{ib_id}:{sequence}"


# -- events ------------------------------------------------------------------------------------
@attrs.frozen
class RebatesAccrued(DomainEvent):
    """Rebate entries of one recorded batch, summed per trading day and currency (unrounded;
    negative sums are clawbacks from reversals)."""

    ib_id: str
    sums: tuple[Sum, ...]


def _row_data(rows: tuple[Row, ...]) -> list[list[str]]:
    data = [[ib, day.isoformat(), code, str(amount)] for ib, day, code, amount in rows]
    if any(len(row[3]) > MAX_TEXT for row in data):  # (what reading back refuses)
        raise CodecError("an accrued sum has too many digits to store")
    return data


def _rows_of_data(data: Any) -> tuple[Row, ...]:
    """The journal's rows as stored (CodecError, naming no value, if malformed)."""
    if not isinstance(data, list):
        raise CodecError("accrual journal rows are stored as a list")
    days: dict[str, date] = {}
    out: list[Row] = []
    try:
        for ib, day, code, amount in data:
            if not (type(ib) is str and type(day) is str and type(code) is str):
                raise TypeError
            when = days.get(day)
            if when is None:
                when = days[day] = date.fromisoformat(day)
            if type(amount) is not str:
                raise TypeError
            out.append((ib, when, code, to_decimal(amount, "an accrued sum")))
    except (TypeError, ValueError, ArithmeticError, FxCrmError):
        raise CodecError("an accrual journal row is malformed") from None
    return tuple(out)


JOURNAL_ROWS = ValueCodec(tuple[Row, ...], _row_data, _rows_of_data)


def _journal_rows(rows: Iterable[Row]) -> tuple[Row, ...]:
    """The rows of a journal line as any process reads them back, checked as decoding checks
    them (ValidationError, naming no value; an amount too long to store is refused when it is
    written): a line no process could read is never written, nor handed back by the codec to
    the process that wrote it."""
    try:
        out = tuple(rows)
        for row in out:
            ib, day, code, amount = row
            if not (
                type(row) is tuple and type(ib) is str and type(day) is date
                and type(code) is str and type(amount) is Decimal
            ):  # fmt: skip
                raise TypeError
            to_decimal(amount, "an accrued sum")
    except (TypeError, ValueError, FxCrmError):
        raise ValidationError("an accrual journal row is malformed") from None
    return out


@attrs.frozen
class RebatesJournaled(DomainEvent):
    """The accrual journal's line for one recorded batch of rebate entries: what they add up to
    per IB, trading day and currency (unrounded; negative sums are clawbacks), in IB order."""

    journal: str
    rows: tuple[Row, ...] = attrs.field(converter=_journal_rows)

    __value_codecs__ = (JOURNAL_ROWS,)
    # (read back inline by the absorption at each multiple, in the process that wrote it)
    __reuse_decoded__ = True


@attrs.frozen
class AccrualsAbsorbed(DomainEvent):
    """The accrual journal's lines up to version ``through`` taken into the IB's account:
    ``sums``, what they held for this IB since the last it absorbed."""

    ib_id: str
    through: int
    sums: tuple[Sum, ...]


@attrs.frozen
class PayoutMade(DomainEvent):
    """``amount`` posted to the IB's wallet (ledger transfer ``transfer_id``, in the same
    append). ``covered`` left pending for it; ``carried`` is what the IB is owed after it.
    ``recovered``: recorded from a transfer found posted under this id (nothing covered, the
    amount comes out of the carried balance)."""

    ib_id: str
    sequence: int
    transfer_id: str
    amount: Money
    covered: tuple[Sum, ...]
    carried: UnroundedMoney
    rate_source: str | None = None
    recovered: bool = False
    policy_version: int = 0  # the PayoutPolicySet it was decided under (0: before they were)


@attrs.frozen
class PayoutHeld(DomainEvent):
    """A payout awaiting approval ``approval_id``: ``covered`` left pending, ``amount`` is held
    (paid when approved, back to the IB's balance when rejected), ``carried`` is the rest."""

    ib_id: str
    sequence: int
    approval_id: str
    amount: Money
    covered: tuple[Sum, ...]
    carried: UnroundedMoney
    rate_source: str | None = None
    policy_version: int = 0


@attrs.frozen
class HeldPayoutMade(DomainEvent):
    """The held payout ``sequence`` was approved and posted (ledger transfer ``transfer_id``)."""

    ib_id: str
    sequence: int
    approval_id: str
    transfer_id: str


@attrs.frozen
class PayoutApprovalRejected(DomainEvent):
    """The approval of a held payout was rejected or cancelled (``status``): its amount is owed
    again, in ``carried``, and the next run pays it (through a new approval if still above)."""

    ib_id: str
    sequence: int
    approval_id: str
    status: str
    carried: UnroundedMoney


@attrs.frozen
class RemainderCarried(DomainEvent):
    """What was due stays owed, in ``carried``: below the minimum, rounding to nothing, or
    negative after clawbacks. ``covered`` left pending for it."""

    ib_id: str
    covered: tuple[Sum, ...]
    carried: UnroundedMoney
    rate_source: str | None = None
    policy_version: int = 0


@attrs.frozen
class PayoutRefused(DomainEvent):
    """The ledger refused transfer ``transfer_id`` (``reason``): the id is spent, nothing moved;
    the next payout takes the next sequence number."""

    ib_id: str
    sequence: int
    transfer_id: str
    reason: str


@attrs.frozen
class PayoutPolicySet(DomainEvent):
    """The IB's payouts follow ``policy`` from now on (its version: how many were set before,
    plus one). ``from_config``: recorded from the host's configuration, not by a person."""

    ib_id: str
    policy: PayoutPolicy
    from_config: bool = False
    # False: the configuration recorded as the baseline only, while a policy set by hand
    # before it stays in force ("a change by hand stands until the configuration changes").
    in_force: bool = True
    # A balance below one minor unit of the old currency, which no payout could ever pay,
    # left behind when the currency changed (recorded, not silently dropped).
    written_off: UnroundedMoney | None = None


PAYOUT_EVENTS = (
    PayoutPolicySet,
    RebatesAccrued,
    RebatesJournaled,
    AccrualsAbsorbed,
    PayoutMade,
    PayoutHeld,
    HeldPayoutMade,
    PayoutApprovalRejected,
    RemainderCarried,
    PayoutRefused,
)


# -- the aggregate -----------------------------------------------------------------------------
@attrs.frozen
class HeldPayout:
    sequence: int
    approval_id: str
    amount: Money


def _merged(pending: tuple[Sum, ...], sums: Iterable[Sum], sign: int = 1) -> tuple[Sum, ...]:
    if sign > 0 and type(sums) is tuple and len(sums) == 1 and len(pending) <= 1:
        # (the accrual of one batch of one trading day onto what one day owes: the rule below)
        ((day, code, amount),) = sums
        if not pending:
            total = _ZERO + amount
            return ((day, code, total),) if total else ()
        ((held_day, held_code, held),) = pending
        if held_day == day and held_code == code:
            total = held + amount
            return ((day, code, total),) if total else ()
    out = {(day, code): amount for day, code, amount in pending}
    for day, code, amount in sums:
        key = (day, code)
        out[key] = out.get(key, _ZERO) + (amount if sign > 0 else -amount)
    return tuple(sorted((day, code, amount) for (day, code), amount in out.items() if amount))


@attrs.frozen(kw_only=True)
class IbPayoutAccount(Aggregate):
    """What one IB is owed: accrued and not yet paid, per trading day and currency (unrounded),
    the balance carried in the IB's currency (rounding remainders, amounts below the minimum,
    clawbacks), the payouts awaiting approval, and how many payout ids it has used."""

    category = "ibpayouts"
    pending: tuple[Sum, ...] = ()
    carried: UnroundedMoney | None = None
    sequence: int = 0
    held: tuple[HeldPayout, ...] = ()
    policy: PayoutPolicy | None = None  # the policy in force (None: none recorded yet)
    policy_version: int = 0  # how many policies were set
    configured: PayoutPolicy | None = None  # the last one recorded from configuration
    journal_version: int = 0  # the accrual journal's lines absorbed (up to this version)

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case AccrualsAbsorbed(through=through, sums=sums):
                return self.evolve(
                    pending=_merged(self.pending, sums),
                    journal_version=max(self.journal_version, through),
                )
            case PayoutPolicySet(policy=policy, from_config=from_config):
                configured = policy if from_config else self.configured
                if not event.in_force:
                    return self.evolve(configured=configured)
                return self.evolve(
                    policy=policy,
                    policy_version=self.policy_version + 1,
                    configured=configured,
                    carried=None if event.written_off is not None else self.carried,
                )
            case RebatesAccrued(sums=sums):
                return self.evolve(pending=_merged(self.pending, sums))
            case PayoutMade():
                return self.evolve(
                    pending=_merged(self.pending, event.covered, -1),
                    carried=event.carried,
                    sequence=max(self.sequence, event.sequence),
                )
            case PayoutHeld():
                return self.evolve(
                    pending=_merged(self.pending, event.covered, -1),
                    carried=event.carried,
                    sequence=max(self.sequence, event.sequence),
                    held=(*self.held, HeldPayout(event.sequence, event.approval_id, event.amount)),
                )
            case HeldPayoutMade(sequence=n):
                return self.evolve(held=tuple(h for h in self.held if h.sequence != n))
            case PayoutApprovalRejected(sequence=n, carried=carried):
                return self.evolve(
                    held=tuple(h for h in self.held if h.sequence != n), carried=carried
                )
            case RemainderCarried():
                return self.evolve(
                    pending=_merged(self.pending, event.covered, -1), carried=event.carried
                )
            case PayoutRefused(sequence=n):
                return self.evolve(sequence=max(self.sequence, n))
        raise ValidationError(f"IbPayoutAccount cannot apply {type(event).__name__}")

    # -- commands --------------------------------------------------------------------------------
    def absorb(self, through: int, sums: Iterable[Sum]) -> list[DomainEvent]:
        """Take in the journal's lines up to ``through`` (``sums``: what they hold for this IB
        after the last line absorbed); nothing when they add nothing."""
        kept = tuple(sorted(s for s in sums if s[2]))
        if not kept or through <= self.journal_version:
            return []
        return [AccrualsAbsorbed(self.id, through, kept)]

    def with_lines(self, through: int, sums: Iterable[Sum]) -> IbPayoutAccount:
        """The account as it stands with the journal's lines up to ``through`` counted (an
        answer, not a state to record on: its version is the stored one)."""
        events = self.absorb(through, sums)
        return self.apply(events[0]) if events else self

    def balance(self, currency: Currency) -> UnroundedMoney:
        """The carried balance, in ``currency`` (the payout policy's)."""
        c = self.carried
        if c is None or (c.amount == 0 and c.currency != currency):
            return UnroundedMoney.zero(currency)
        if c.currency != currency:
            raise CurrencyMismatchError(
                "the IB carries a balance in another currency than its payout policy's"
            )
        return c

    def set_policy(self, policy: PayoutPolicy, *, from_config: bool) -> list[DomainEvent]:
        """Record ``policy`` unless it is the one in force (by hand) or the one last recorded
        from configuration (``from_config``: a change by hand since then stands). A new
        currency is refused while something is owed in the old one."""
        if policy == (self.configured if from_config else self.policy):
            return []
        old = self.policy
        if from_config and self.configured is None and old is not None:
            # Set by hand before any configuration was recorded: the hand-set policy stands,
            # the configuration is its baseline (a later change of it takes force).
            return [PayoutPolicySet(self.id, policy, from_config, in_force=False)]
        written_off = None
        if old is not None and policy.currency != old.currency:
            carried = self.carried
            if self.held:
                raise PayoutCurrencyChangeError()
            if carried is not None and carried.amount != 0:
                unit = Decimal(1).scaleb(-carried.currency.minor_units)
                if abs(carried.amount) >= unit:
                    raise PayoutCurrencyChangeError()
                written_off = carried  # below a minor unit: no payout could ever pay it
        return [PayoutPolicySet(self.id, policy, from_config, written_off=written_off)]

    def held_payout(self, sequence: int) -> HeldPayout | None:
        return next((h for h in self.held if h.sequence == sequence), None)

    def due(self, cutoff: date) -> tuple[Sum, ...]:
        """What is pending on trading days up to ``cutoff``."""
        return tuple(s for s in self.pending if s[0] <= cutoff)


# -- the accrual journal and its policy -----------------------------------------------------
@attrs.frozen(kw_only=True)
class AccrualJournal(Aggregate):
    """The accrual journal (stream ``ibaccruals-journal``): one :class:`RebatesJournaled` per
    recorded batch of rebate entries. Its state is its version alone (the lines are read from
    the stream, never folded into memory)."""

    category = "ibaccruals"

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, RebatesJournaled):
            return self
        raise ValidationError(f"AccrualJournal cannot apply {type(event).__name__}")


_JOURNAL_STREAM = AccrualJournal.stream_id_for(JOURNAL_ID)


def accrue(recorded: RecordedEvent[RebateEntriesRecorded], uow: UnitOfWork) -> None:
    """Policy handler on :class:`RebateEntriesRecorded`: writes the batch's line to the accrual
    journal (its entries summed per IB, trading day and currency) and, at each
    :data:`ABSORB_EVERY`-th line, has every IB's account absorb the lines it has not. Never
    commits: the policy runner commits it with its position, so each batch accrues exactly
    once."""
    event = recorded.event
    if not isinstance(event, RebateEntriesRecorded):
        raise ValidationError(f"payouts cannot accrue {type(event).__name__}")
    rows = tuple(
        sorted(
            (ib, day, code, amount)
            for (ib, day, code), amount in event.entries.sums().items()
            if amount
        )
    )
    if not rows:
        return
    staged = uow.staged_on(_JOURNAL_STREAM)
    head = staged[-1][0] if staged else uow.repository.store.stream_version(_JOURNAL_STREAM)
    uow.record(AccrualJournal(id=JOURNAL_ID, version=head), RebatesJournaled(JOURNAL_ID, rows))
    through = head + 1
    if through % ABSORB_EVERY == 0:
        _absorb_every_ib(uow, through)


def _journal_lines(uow: UnitOfWork, after: int) -> Iterator[tuple[int, tuple[Row, ...]]]:
    """The journal's lines after version ``after``, committed or staged in ``uow``, decoded one
    at a time."""
    repository = uow.repository
    for s in repository.store.read_stream(_JOURNAL_STREAM, after_version=after):
        line = repository.codec.decode_event(s.stream_id, s.event_type, s.data)
        if not isinstance(line, RebatesJournaled):
            raise CodecError(f"{s.stream_id} holds a {type(line).__name__}")
        yield s.version, line.rows
    for v, e in uow.staged_on(_JOURNAL_STREAM):
        if isinstance(e, RebatesJournaled):
            yield v, e.rows


def _absorb_every_ib(uow: UnitOfWork, through: int) -> None:
    """Every IB's account absorbs the journal's lines up to ``through`` (a multiple of
    :data:`ABSORB_EVERY`: every line up to the previous multiple was absorbed then). Only the
    sums per IB, day and currency are kept while the lines are read, never the lines."""
    accounts: dict[str, IbPayoutAccount] = {}
    owed: dict[str, dict[tuple[date, str], Decimal]] = {}
    for version, rows in _journal_lines(uow, through - ABSORB_EVERY):
        for ib_id, day, code, amount in rows:
            account = accounts.get(ib_id)
            if account is None:
                account = accounts[ib_id] = _account_to_accrue(uow, ib_id)
            if version > account.journal_version:
                sums = owed.setdefault(ib_id, {})
                sums[(day, code)] = sums.get((day, code), _ZERO) + amount
    for ib_id in sorted(owed):
        sums = owed[ib_id]
        events = accounts[ib_id].absorb(through, [(d, c, a) for (d, c), a in sums.items()])
        if events:
            uow.record(accounts[ib_id], *events)


def _summed(sums: Iterable[Sum]) -> tuple[Sum, ...]:
    return _merged((), sums)


def _account_to_accrue(uow: UnitOfWork, ib_id: str) -> IbPayoutAccount:
    """The IB's account as last seen by this process, without a read when it is cached: the
    append names the version it builds on, so an event another writer added makes the commit
    fail and the policy runner retries on states read afresh (exactly once either way)."""
    staged = uow.staged_on(IbPayoutAccount.stream_id_for(ib_id))
    if staged:
        return uow.load(IbPayoutAccount, ib_id) or IbPayoutAccount.blank(ib_id)
    cached = uow.repository._cached(IbPayoutAccount, ib_id)
    if cached is not None:
        return cached
    return uow.load(IbPayoutAccount, ib_id) or IbPayoutAccount.blank(ib_id)


class AccrualView:
    """The accrual journal's lines not yet absorbed by every IB, in memory per process, caught
    up before each answer: what an IB's account stands at with them counted. Holds at most
    :data:`ABSORB_EVERY` lines' rows (everything before the last multiple is absorbed)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self._version = 0  # the journal's lines read
        self._floor = 0  # every line up to this version is absorbed by every IB
        self._rows: dict[str, list[tuple[int, Sum]]] = {}
        self._lock = threading.Lock()

    def account(self, ib_id: str) -> IbPayoutAccount:
        """The IB's account with the journal's lines it has not absorbed counted."""
        stored, through, sums = self.current(ib_id)
        return stored.with_lines(through, sums)

    def current(self, ib_id: str) -> tuple[IbPayoutAccount, int, tuple[Sum, ...]]:
        """The IB's stored account, the journal's version and what its lines the account has
        not absorbed hold for the IB, read together. The account is read before the journal:
        when a multiple's absorption lands in between, the floor moves past the account as
        read (its lines would count nowhere), so the account is read again."""
        for _ in range(_TRIES):
            floor = self._floor  # (every line up to it was committed before the read below)
            stored = self.repository.load(IbPayoutAccount, ib_id) or IbPayoutAccount.blank(ib_id)
            with self._lock:
                self._catch_up()
                if self._floor > max(floor, stored.journal_version):
                    continue
                return stored, self._version, self._held_for(stored)
        raise ConcurrencyError("the accrual journal kept moving; try again")

    def unabsorbed(self, account: IbPayoutAccount) -> tuple[int, tuple[Sum, ...]]:
        """The journal's version now, and what its lines after the account's last absorbed
        one hold for the IB."""
        with self._lock:
            self._catch_up()
            return self._version, self._held_for(account)

    def _held_for(self, account: IbPayoutAccount) -> tuple[Sum, ...]:
        after = max(account.journal_version, self._floor)
        rows = self._rows.get(account.id, ())
        return _summed(s for v, s in rows if v > after)

    def _catch_up(self) -> None:
        store, codec = self.repository.store, self.repository.codec
        head = store.stream_version(_JOURNAL_STREAM)
        floor = head - head % ABSORB_EVERY
        if floor > self._floor:
            self._floor = floor
            if self._version < floor:
                self._rows.clear()  # all of it absorbed, and what is unread too
                self._version = floor
            else:
                for ib_id, kept in list(self._rows.items()):
                    kept = [r for r in kept if r[0] > floor]
                    if kept:
                        self._rows[ib_id] = kept
                    else:
                        del self._rows[ib_id]
        if head <= self._version:
            return
        for s in store.read_stream(_JOURNAL_STREAM, after_version=self._version):
            line = codec.decode_event(s.stream_id, s.event_type, s.data)
            if not isinstance(line, RebatesJournaled):
                raise CodecError(f"{s.stream_id} holds a {type(line).__name__}")
            for ib_id, day, code, amount in line.rows:
                self._rows.setdefault(ib_id, []).append((s.version, (day, code, amount)))
            self._version = s.version


def accrual_policy() -> Policy:
    """The policy-table line: :func:`accrue` on every :class:`RebateEntriesRecorded`."""
    return Policy(PAYOUT_POLICY, (RebateEntriesRecorded,), accrue)


# -- the service -------------------------------------------------------------------------------
@attrs.frozen
class _Ready:
    """A payout decided and not yet posted: its transfer and the account's record of it."""

    ib_id: str
    account: IbPayoutAccount
    event: PayoutMade
    request: TransferRequest
    policy: PayoutPolicy


class Payouts:
    """Runs payouts on the IBs' accounts. Accounts are fed by :func:`accrue` (a policy); the
    approval rule for :data:`PAYOUT_ACTION` is :meth:`approval_rule`, registered once by the
    composition root.

    ``policies`` is the host's configuration: it seeds each IB's recorded policy (see the
    module's docstring); runs follow the recorded one. ``run_all`` without ``ib_ids`` runs
    every IB with a policy: configured, or recorded by any process (:meth:`ib_ids`)."""

    def __init__(
        self,
        ledger: Ledger,
        rates: RateSource,
        policies: Mapping[str, PayoutPolicy],
        *,
        access: AccessControl,
        approvals: Approvals | None = None,
    ) -> None:
        self.ledger = ledger
        self.repository: Repository = ledger.repository  # one log: payouts post atomically
        self.rates = rates
        self.policies = dict(policies)
        self.access = access
        self.approvals = approvals
        # IBs with a recorded policy, read from the log (a memory read model of the
        # PayoutPolicySet events, caught up before every answer).
        self._recorded: set[str] = set()
        self._read_upto = 0
        self._lock = threading.Lock()
        self._lines = AccrualView(self.repository)  # the journal's lines not absorbed yet

    accrue = staticmethod(accrue)

    def ib_ids(self) -> list[str]:
        """Every IB with a payout policy, in id order: configured here, or recorded in the log
        by anyone (set by hand, or configured in another process)."""
        with self._lock:
            store = self.repository.store
            types = frozenset({PayoutPolicySet.__name__})
            prefix = f"{IbPayoutAccount.category}-"
            while True:
                page, upto, done = read_types(store, self._read_upto, types, 1000)
                self._recorded.update(s.stream_id.removeprefix(prefix) for s in page)
                self._read_upto = upto
                if done:
                    break
            return sorted(self._recorded | self.policies.keys())

    def approval_rule(self) -> ApprovalRule:
        """The rule to register once per broker: ``approvals.register(PAYOUT_ACTION, ...)``."""
        return ApprovalRule(execute=self._execute, check=_check_params)

    # -- reading -------------------------------------------------------------------------------
    def account(self, ib_id: str) -> IbPayoutAccount:
        """The IB's account as it stands, the accrual journal's lines it has not absorbed yet
        counted (an answer: commands record on the stored state)."""
        return self._lines.account(check_id(ib_id, "an IB id"))

    def _stored(self, ib_id: str) -> IbPayoutAccount:
        return self.repository.load(IbPayoutAccount, ib_id) or IbPayoutAccount.blank(ib_id)

    def _absorbed(self, actor: Actor, ib_id: str) -> IbPayoutAccount:
        """The IB's account with the accrual journal's lines it has not absorbed recorded on
        it (read with the journal: an account read before a multiple's absorption would find
        nothing to absorb and be decided on without those lines)."""
        for _ in range(_TRIES):
            account, through, sums = self._lines.current(ib_id)
            events = account.absorb(through, sums)
            if not events:
                return account
            try:
                with self._uow(actor, "accruals absorbed") as uow:
                    account = uow.record(account, *events)
                    uow.commit()
                return account
            except ConcurrencyError:
                continue  # absorbed meanwhile: look again
        raise ConcurrencyError("the IB's payout account kept changing; try again")

    def pending(self, ib_id: str) -> list[tuple[date, UnroundedMoney]]:
        """What the IB has accrued and not yet been paid, per trading day (and currency)."""
        return [
            (day, UnroundedMoney(amount, Currency.of(code)))
            for day, code, amount in self.account(ib_id).pending
        ]

    # -- policies ------------------------------------------------------------------------------
    def policy(self, ib_id: str) -> PayoutPolicy:
        """The policy the IB's next run follows: the recorded one, or the configured one where
        the configuration is not recorded yet (the run records it first); ValidationError if
        the IB has neither."""
        account = self.account(check_id(ib_id, "an IB id"))
        configured = self.policies.get(ib_id)
        hand_set_first = account.configured is None and account.policy is not None
        if configured is not None and configured != account.configured and not hand_set_first:
            return configured
        if account.policy is None:
            raise ValidationError("no payout policy for that IB")
        return account.policy

    _policy = policy

    def policy_history(self, ib_id: str) -> list[RecordedEvent[PayoutPolicySet]]:
        """The IB's policies as recorded, oldest first (the n-th is version n), each with who
        set it, when and why."""
        stream = IbPayoutAccount.stream_id_for(check_id(ib_id, "an IB id"))
        decode = self.repository.codec.decode
        out: list[RecordedEvent[PayoutPolicySet]] = []
        for row in self.repository.store.read_stream(stream):
            if row.event_type == PayoutPolicySet.__name__:
                r = decode(row)
                if isinstance(r.event, PayoutPolicySet) and r.event.in_force:
                    e = r.event
                    out.append(
                        RecordedEvent(
                            r.stream_id, r.version, r.position, r.recorded_at, e, r.metadata
                        )
                    )
        return out

    def policy_at(self, ib_id: str, at: datetime) -> PayoutPolicy | None:
        """The policy recorded for the IB as the log held it at ``at`` (None: none yet)."""
        when = check_time(at)
        found = [r.event.policy for r in self.policy_history(ib_id) if r.recorded_at <= when]
        return found[-1] if found else None

    def set_policy(self, actor: Actor, ib_id: str, policy: PayoutPolicy, *, reason: str) -> int:
        """Record ``policy`` for the IB's later runs (permission ``payout.policy``), with the
        actor and reason; returns the policy version in force. The same policy again records
        nothing. A new currency while a balance or a held payout is in the old one raises
        :class:`PayoutCurrencyChangeError` (pay it out or claw it back first)."""
        if not isinstance(actor, Actor):
            raise ValidationError("setting a payout policy needs an actor")
        check_id(ib_id, "an IB id")
        _checked(policy)
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("setting a payout policy needs a reason")
        self.access.require(actor, PAYOUT_POLICY_PERMISSION)
        return self._set(actor, reason, ib_id, policy, from_config=False)[0].policy_version

    def ensure_policies(self, *, reason: str = "payout policy from configuration") -> list[str]:
        """Record, as ``system:config``, each configured policy that differs from the one last
        recorded from configuration; returns the IBs recorded, in id order. Idempotent, and
        safe when several processes start at once (each policy is recorded once). Runs do the
        same for the IBs they pay, so calling this is optional (it makes the audit trail show
        a configuration change when it is deployed, not at the next run). A configured policy
        refused (incoherent, or a new currency while money is owed in the old one) is not
        recorded: its IB's runs report the error until it is mended."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("recording the configured payout policies needs a reason")
        return self._seed_all(sorted(self.policies), reason)

    def _seed_all(
        self, ib_ids: Sequence[str], reason: str = "payout policy from configuration"
    ) -> list[str]:
        """Record the configured policies of ``ib_ids`` that changed (a broker's first run
        seeds thousands). A refused policy (a currency change while money is owed) is left for
        its IB's run to report."""

        def decide(account: IbPayoutAccount) -> list[DomainEvent]:
            return account.set_policy(_checked(self.policies[account.id]), from_config=True)

        def one(ib_id: str) -> bool:
            policy = _checked(self.policies[ib_id])
            return self._set(CONFIG_ACTOR, reason, ib_id, policy, from_config=True)[1]

        todo = [i for i in ib_ids if i in self.policies]
        return self._in_chunks(CONFIG_ACTOR, reason, todo, decide, one)

    def _absorb_all(self, actor: Actor, ib_ids: Sequence[str]) -> None:
        """Record on each account the accrual journal's lines it has not absorbed (a run
        before a busy day's next :data:`ABSORB_EVERY`-th line finds thousands)."""

        def decide(account: IbPayoutAccount) -> list[DomainEvent]:
            return account.absorb(*self._lines.unabsorbed(account))

        def one(ib_id: str) -> bool:
            self._absorbed(actor, ib_id)
            return True

        self._in_chunks(actor, "accruals absorbed", ib_ids, decide, one)

    def _in_chunks(
        self,
        actor: Actor,
        reason: str,
        ib_ids: Sequence[str],
        decide: Callable[[IbPayoutAccount], list[DomainEvent]],
        one: Callable[[str], bool],
    ) -> list[str]:
        """Record ``decide``'s events on each IB's account, ``_SEED_CHUNK`` accounts to an
        append; a chunk that meets a concurrent change, or a refusal, is recorded one account
        at a time by ``one`` (each IB's outcome its own). Returns the IBs recorded."""
        done: list[str] = []
        for start in range(0, len(ib_ids), _SEED_CHUNK):
            part = ib_ids[start : start + _SEED_CHUNK]
            staged: list[str] = []
            try:
                with self._uow(actor, reason) as uow:
                    for ib_id in part:
                        account = self._stored(ib_id)
                        events = decide(account)
                        if events:
                            uow.record(account, *events)
                            staged.append(ib_id)
                    if staged:
                        uow.commit()
                done += staged
                continue
            except FxCrmError:
                pass  # one by one below
            for ib_id in part:
                with contextlib.suppress(FxCrmError):
                    if one(ib_id):
                        done.append(ib_id)
        return done

    def _seeded(
        self, account: IbPayoutAccount, reason: str = "payout policy from configuration"
    ) -> IbPayoutAccount:
        """The account with its configured policy recorded, if it was not."""
        configured = self.policies.get(account.id)
        if configured is None or configured == account.configured:
            return account
        return self._set(CONFIG_ACTOR, reason, account.id, _checked(configured), from_config=True)[
            0
        ]

    def _set(
        self, actor: Actor, reason: str, ib_id: str, policy: PayoutPolicy, *, from_config: bool
    ) -> tuple[IbPayoutAccount, bool]:
        """The account with ``policy`` recorded, and whether this call recorded it."""
        for _ in range(_TRIES):
            account = self._stored(ib_id)
            events = account.set_policy(policy, from_config=from_config)
            if not events:
                return account, False  # recorded already (by another process, or a retry)
            try:
                with self._uow(actor, reason) as uow:
                    account = uow.record(account, *events)
                    uow.commit()
            except ConcurrencyError:
                continue  # the account moved: decide again on what it holds now
            if from_config:
                log.info("payout policy recorded from configuration", extra={"ib": ib_id})
            return account, True
        raise ConcurrencyError("the IB's payout account kept changing; try again")

    # -- running -------------------------------------------------------------------------------
    def run(self, actor: Actor, ib_id: str, today: date) -> PayoutResult:
        """Pay what is due to ``ib_id`` as of ``today`` under its policy (a refusal raises)."""
        _check_run(actor, today)
        check_id(ib_id, "an IB id")
        self.access.require(actor, "payout.run")
        self._policy(ib_id)  # refuse an IB without one before anything is written
        return self._run_one(actor, ib_id, today)

    def run_all(
        self, actor: Actor, today: date, ib_ids: Iterable[str] | None = None, *, chunk: int = 100
    ) -> list[PayoutResult]:
        """Pay every IB (or those listed) as :meth:`run` would, one result per IB in id order,
        posting the payouts to the ledger ``chunk`` at a time, each chunk in one all-or-nothing
        ledger command. An IB that cannot be paid (a ledger refusal, a missing rate) gets a
        result with ``error`` and the others are paid: a refused chunk is posted again one
        payout at a time. (Each transfer of a command records the ids of the others, so a
        chunk's record grows as its square.)"""
        _check_run(actor, today)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValidationError("a chunk holds a whole number of payouts, at least one")
        if ib_ids is not None:
            if isinstance(ib_ids, str | bytes) or not isinstance(ib_ids, Iterable):
                raise ValidationError("ib_ids lists IB ids")
            ib_ids = [check_id(i, "an IB id") for i in ib_ids]
        self.access.require(actor, "payout.run")
        ids = self.ib_ids() if ib_ids is None else sorted(set(ib_ids))
        for ib_id in ids:
            if ib_id not in self.policies:
                self._policy(ib_id)  # refuse an IB without one before anything is written
        self._seed_all(ids)
        self._absorb_all(actor, ids)
        results: dict[str, PayoutResult] = {}
        ready: list[_Ready] = []
        for ib_id in ids:
            try:
                result, payout = self._prepare(actor, ib_id, today)
            except FxCrmError as exc:
                results[ib_id] = self._failed(ib_id, exc)
                continue
            results[ib_id] = result
            if payout is not None:
                ready.append(payout)
        for start in range(0, len(ready), chunk):
            part = ready[start : start + chunk]
            try:
                if self._post(part, actor):
                    for payout in part:
                        results[payout.ib_id] = self._already_paid(payout)
            except FxCrmError:
                # One payout refused, or an account moved: each again on its own, so one IB's
                # trouble stays its own (an id the refusal spent is recorded, the next one used).
                for payout in part:
                    ib_id = payout.ib_id
                    try:
                        results[ib_id] = self._run_one(actor, ib_id, today)
                    except FxCrmError as exc:
                        results[ib_id] = self._failed(ib_id, exc)
        return [results[ib_id] for ib_id in ids]

    def _run_one(self, actor: Actor, ib_id: str, today: date) -> PayoutResult:
        for _ in range(_TRIES):
            result, payout = self._prepare(actor, ib_id, today)
            if payout is None:
                return result
            try:
                replayed = self._post([payout], actor)
            except ConcurrencyError:
                continue  # the account moved (an accrual): decide again on its new state
            except FxCrmError:
                with contextlib.suppress(FxCrmError):  # a refusal spends the id: record it
                    self._reconcile(actor, self._stored(ib_id), payout.policy)
                raise
            return self._already_paid(payout) if replayed else result
        raise ConcurrencyError("the IB's payout account kept changing; try again")

    def _failed(self, ib_id: str, exc: FxCrmError) -> PayoutResult:
        account = self.account(ib_id)
        policy = account.policy or self.policies.get(ib_id)
        if policy is None:  # an IB named to run_all with no policy is refused before this
            raise ValidationError("no payout policy for that IB") from exc
        try:
            carried = account.balance(policy.currency)
        except FxCrmError:
            carried = account.carried or UnroundedMoney.zero(policy.currency)
        # An FxCrmError's message holds no personal data.
        return PayoutResult(ib_id, None, carried, error=f"{type(exc).__name__}: {exc}")

    def _uow(self, actor: Actor, reason: str) -> UnitOfWork:
        return UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason))

    def _record(
        self, actor: Actor, account: IbPayoutAccount, event: DomainEvent
    ) -> IbPayoutAccount:
        with self._uow(actor, "payout run") as uow:
            account = uow.record(account, event)
            uow.commit()
        return account

    def _prepare(self, actor: Actor, ib_id: str, today: date) -> tuple[PayoutResult, _Ready | None]:
        """Settle what is due under the recorded policy (the configured one recorded first if
        it changed); returns the result and the payout to post now, if any. Records (and
        commits) what needs no ledger posting: rejected approvals back in the balance, a
        balance carried, a payout held for approval."""
        account = self._absorbed(actor, ib_id)
        if account.policy is not None:  # (rejected approvals back first, under the policy
            # they were held under: a configured change may wait on them)
            account = self._settle_approvals(actor, account, account.policy)
        account = self._seeded(account)
        policy = account.policy
        if policy is None:
            raise ValidationError("no payout policy for that IB")
        version = account.policy_version
        account = self._settle_approvals(actor, account, policy)
        account = self._reconcile(actor, account, policy)
        cutoff = policy.cadence.cutoff(today) - timedelta(days=policy.hold.days)
        covered = account.due(cutoff)
        due: dict[str, Decimal] = {}
        for _, code, summed in covered:
            due[code] = due.get(code, _ZERO) + summed
        total = account.balance(policy.currency)
        source = None
        for code, sum_ in sorted(due.items()):
            currency = Currency.of(code)
            amount = UnroundedMoney(sum_, currency)
            if currency == policy.currency:
                total = total + amount
                continue
            rate = self.rates.rate(currency, policy.currency, _noon(today))
            total = total + rate.convert(amount).result
            source = f"{rate.source} {rate.rate} at {rate.as_of.isoformat()}"
        paid, remainder = total.round_with_remainder(Rounding.DOWN)
        if not paid.is_positive() or paid < policy.minimum:
            # Below the minimum, rounding to nothing, or clawed back: owed, and waits.
            if covered:
                carried = RemainderCarried(ib_id, covered, total, source, version)
                self._record(actor, account, carried)
            return PayoutResult(ib_id, None, total, rate_source=source), None
        sequence = account.sequence + 1
        if policy.approval_above is not None and paid > policy.approval_above:
            held = PayoutHeld(ib_id, sequence, "", paid, covered, remainder, source, version)
            approval_id = self._hold(actor, account, held)
            return PayoutResult(ib_id, None, remainder, approval_id, source), None
        transfer_id = payout_transfer_id(ib_id, sequence)
        event = PayoutMade(
            ib_id,
            sequence,
            transfer_id,
            paid,
            covered,
            remainder,
            source,
            policy_version=version,
        )
        request = self._request(ib_id, transfer_id, paid)
        result = PayoutResult(ib_id, paid, remainder, rate_source=source, payout_id=transfer_id)
        return result, _Ready(ib_id, account, event, request, policy)

    def _request(self, ib_id: str, transfer_id: str, amount: Money) -> TransferRequest:
        cur = amount.currency
        wallet = f"ib-wallet:{ib_id}:{cur.code}"
        expense = f"rebate_expense:{cur.code}"
        self._open(wallet, owner=ib_id, currency=cur, purpose="ib_wallet")
        self._open(expense, owner="broker", currency=cur, purpose="rebate_expense")
        return TransferRequest(transfer_id, expense, wallet, amount)

    def _open(self, account_id: str, *, owner: str, currency: Currency, purpose: str) -> None:
        """Open a ledger account unless open. Two runs opening it at the same moment: the one
        that loses the append finds it open on the second try (same details)."""
        try:
            self.ledger.open_account(account_id, owner=owner, currency=currency, purpose=purpose)
        except ConcurrencyError:
            self.ledger.open_account(account_id, owner=owner, currency=currency, purpose=purpose)

    def _post(self, payouts: Sequence[_Ready], actor: Actor) -> bool:
        """Post payouts from rebate expense to the IBs' wallets, all-or-nothing, with each
        account's PayoutMade in the same append: the ledger and the accounts never diverge.

        Returns True when the ledger only replayed them: another writer posted these very
        transfers first (the ledger answers a batch wholly from the store or writes it wholly),
        so this call moved nothing and its callers must not report them as paid."""
        results = self.ledger.transfer_linked(
            [p.request for p in payouts],
            actor=actor.id,
            also=[(p.account, p.event) for p in payouts],
        )
        if not any(r.replayed for r in results):
            return False
        # Posted before under these ids (another worker, or a host): record what is missing.
        for p in payouts:
            self._reconcile(actor, self._stored(p.ib_id), p.policy)
        return True

    def _already_paid(self, payout: _Ready) -> PayoutResult:
        """The result of a payout another run posted first (same id, same content)."""
        carried = self.account(payout.ib_id).balance(payout.policy.currency)
        event = payout.event
        return PayoutResult(
            payout.ib_id,
            None,
            carried,
            rate_source=event.rate_source,
            payout_id=event.transfer_id,
            already_paid=event.amount,
        )

    def _reconcile(
        self, actor: Actor, account: IbPayoutAccount, policy: PayoutPolicy
    ) -> IbPayoutAccount:
        """Record what the ledger already holds under the account's next payout ids: a refused
        transfer spends its id; a posted one (written by a host or an older version, not with
        its record) is recorded as paid out of the carried balance, so it is never paid again."""
        while True:
            sequence = account.sequence + 1
            transfer_id = payout_transfer_id(account.id, sequence)
            found = self.repository.load(Transfer, transfer_id)
            if found is None:
                return account
            event: DomainEvent
            if found.status is TransferStatus.FAILED:
                reason = found.failure or "refused"
                event = PayoutRefused(account.id, sequence, transfer_id, reason)
            elif found.status is TransferStatus.POSTED and found.amount is not None:
                carried = account.balance(policy.currency) - found.amount
                event = PayoutMade(
                    account.id,
                    sequence,
                    transfer_id,
                    found.amount,
                    (),
                    carried,
                    recovered=True,
                    policy_version=account.policy_version,
                )
            else:
                raise ValidationError("a pending ledger transfer holds this IB's next payout id")
            account = self._record(actor, account, event)

    # -- approvals -----------------------------------------------------------------------------
    def _hold(self, actor: Actor, account: IbPayoutAccount, held: PayoutHeld) -> str:
        """Ask for approval, then record the payout held for it."""
        if self.approvals is None:
            raise ValidationError(
                "a payout above its approval threshold needs the approvals service"
            )
        approval_id = self.approvals.request(
            actor,
            PAYOUT_ACTION,
            account.id,
            {
                "payout_id": payout_transfer_id(account.id, held.sequence),
                "ib_id": account.id,
                "sequence": str(held.sequence),
                "amount": str(held.amount),
            },
        )
        try:
            self._record(actor, account, attrs.evolve(held, approval_id=approval_id))
        except BaseException:
            # The account moved meanwhile: withdraw the request, nothing is held for it.
            with contextlib.suppress(FxCrmError):  # else its execution finds nothing held
                self.approvals.cancel(actor, approval_id)
            raise
        return approval_id

    def _settle_approvals(
        self, actor: Actor, account: IbPayoutAccount, policy: PayoutPolicy
    ) -> IbPayoutAccount:
        """Payouts held for an approval since rejected or cancelled, or approved and then
        refused by the ledger (the transfer id spent, nothing moved), are owed again (the
        approvals service has no hook for a rejection: each run looks)."""
        if self.approvals is None:
            return account
        for held in account.held:
            status = self.approvals.get(held.approval_id).status.value
            if status not in (ApprovalStatus.REJECTED.value, ApprovalStatus.CANCELLED.value):
                if not self._refused(account.id, held.sequence):
                    continue
                status = "refused"
            carried = account.balance(policy.currency) + held.amount
            event = PayoutApprovalRejected(
                account.id, held.sequence, held.approval_id, status, carried
            )
            account = self._record(actor, account, event)
        return account

    def _refused(self, ib_id: str, sequence: int) -> bool:
        """Whether the ledger refused the IB's ``sequence``-th payout transfer."""
        found = self.repository.load(Transfer, payout_transfer_id(ib_id, sequence))
        return found is not None and found.status is TransferStatus.FAILED

    def _execute(self, params: Mapping[str, str], key: str) -> str:
        """The approved action: post the held payout (once, whatever the retries)."""
        approval_id = key.removeprefix("approval:")
        ib_id, sequence = params["ib_id"], int(params["sequence"])
        transfer_id = payout_transfer_id(ib_id, sequence)
        system = Actor.system("approvals")
        for _ in range(_TRIES):
            account = self._stored(ib_id)
            held = account.held_payout(sequence)
            if held is None or held.approval_id != approval_id:
                found = self.repository.load(Transfer, transfer_id)
                if held is None and found is not None and found.status is TransferStatus.POSTED:
                    return f"paid {found.amount}"  # a retry after the payout was made
                raise ValidationError("no payout is held for that approval")
            request = self._request(ib_id, transfer_id, held.amount)
            event = HeldPayoutMade(ib_id, sequence, approval_id, transfer_id)
            try:
                results = self.ledger.transfer_linked(
                    [request], actor=system.id, also=[(account, event)]
                )
            except ConcurrencyError:
                continue
            except FxCrmError:
                # Refused: the id is spent and nothing moved; the amount is owed again now
                # (a run would find it too), and the next run pays it under a new approval.
                if self._refused(ib_id, sequence):
                    with contextlib.suppress(FxCrmError):
                        now = self._stored(ib_id)
                        if now.policy is not None:  # (the recorded policy it was held under)
                            self._settle_approvals(system, now, now.policy)
                raise
            account = self._stored(ib_id)
            if results[0].replayed and account.held_payout(sequence) is not None:
                self._record(system, account, event)  # posted, not recorded with it: record now
            return f"paid {held.amount}"
        raise ConcurrencyError("the IB's payout account kept changing; try again")


def _check_run(actor: object, today: object) -> None:
    """A payout run's actor and day, of the right kinds (ValidationError, echoing nothing)."""
    if not isinstance(actor, Actor):
        raise ValidationError("a payout run needs an actor")
    if isinstance(today, datetime) or not isinstance(today, date):
        raise ValidationError("a payout run is for a day (a date, not a time)")
    if not _FIRST_DAY <= today <= _LAST_DAY:
        raise ValidationError("a payout run is for a day between the years 1900 and 9000")


_FIRST_DAY, _LAST_DAY = date(1900, 1, 1), date(9000, 12, 31)


def _check_params(params: Mapping[str, str]) -> None:
    if not params.get("ib_id") or not params.get("sequence", "").isdigit():
        raise ValidationError("a payout approval names the IB and the payout's sequence")


def _noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
