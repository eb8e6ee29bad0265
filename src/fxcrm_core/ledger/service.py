"""The ledger service: accounts, idempotent and linked transfers, two-phase holds, reversals,
history and point-in-time balances, on the event store.

A transfer writes its own stream (expected version 0: the id is used once) and one entry on each
of its two accounts, in one atomic append with the accounts' expected versions; a concurrent
writer makes it retry on fresh balances, so limits hold under concurrency.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta

import attrs

from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    RecordedEvent,
    Repository,
    StoredEvent,
    UnitOfWork,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import (
    ConcurrencyError,
    CurrencyMismatchError,
    IdempotencyConflictError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.kernel.rates import ConversionPolicy, ExchangeRate
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.ledger.model import (
    AccountOpened,
    AlreadyReversedError,
    Balance,
    Conversion,
    ConversionRecorded,
    EntryRecorded,
    ExceedsLimitError,
    LedgerAccount,
    Limit,
    PendingReleased,
    Transfer,
    TransferFailed,
    TransferRecorded,
    TransferResolved,
    TransferReversed,
    TransferStatus,
    content_digest,
)

__all__ = ["Entry", "Ledger", "PendingHolds", "TransferRequest", "TransferResult"]

_RETRIES = 8
_KEPT_ACCOUNTS = 10_000  # account states kept to start transfers from (see _LastSeen)
_KEPT_METADATA = 256  # metadata records kept by (actor, reason)


@attrs.frozen
class TransferRequest:
    transfer_id: str
    debit_account: str
    credit_account: str
    amount: Money
    pending: bool = False
    timeout: timedelta | None = None  # a pending transfer not resolved by then expires
    reverses: str | None = None

    def digest(self) -> str:
        return content_digest(
            self.debit_account, self.credit_account, self.amount, self.pending, self.timeout,
            self.reverses,
        )  # fmt: skip


@attrs.frozen
class TransferResult:
    transfer_id: str
    status: TransferStatus
    replayed: bool = False


@attrs.frozen
class Entry:
    position: int
    at: datetime
    transfer_id: str
    debit: bool
    amount: Money
    kind: str  # "pending", "posted" or "released"


class PendingHolds:
    """A read model of pending transfers and their timeouts (for expiry)."""

    name = "ledger-pending"
    event_types: frozenset[str] | None = frozenset({"TransferRecorded", "TransferResolved"})

    def __init__(self) -> None:
        self.timeouts: dict[str, datetime | None] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        transfer_id = recorded.stream_id.removeprefix("transfer-")
        if isinstance(event, TransferRecorded) and event.pending:
            self.timeouts[transfer_id] = event.timeout_at
        elif isinstance(event, TransferResolved):
            self.timeouts.pop(transfer_id, None)

    def reset(self) -> None:
        self.timeouts.clear()

    def due(self, now: datetime) -> list[str]:
        return sorted(t for t, at in self.timeouts.items() if at is not None and at <= now)


class _LastSeen:
    """The newest state this ledger read or committed of up to ``size`` accounts, to start a
    transfer from without reading the accounts' streams.

    Only a start: the append checks every account's version, so a stale state fails it and the
    transfer is tried again on states read from the store; no transfer is refused on these.
    """

    def __init__(self, size: int) -> None:
        self._states: dict[str, LedgerAccount] = {}
        self._size = size
        self._lock = threading.Lock()

    def get(self, account_id: str) -> LedgerAccount | None:
        return self._states.get(account_id)

    def keep(self, states: Iterable[LedgerAccount]) -> None:
        with self._lock:
            for state in states:
                known = self._states.pop(state.id, None)
                # Threads may report out of order: a newer state stays.
                self._states[state.id] = (
                    known if known is not None and known.version > state.version else state
                )
            while len(self._states) > self._size:
                del self._states[next(iter(self._states))]


class Ledger:
    def __init__(
        self,
        repository: Repository,
        *,
        clock: Clock | None = None,
        conversions: ConversionPolicy | None = None,
    ) -> None:
        self.repository = repository
        self.clock = clock or SystemClock()
        self.conversions = conversions or ConversionPolicy()
        self._seen = _LastSeen(_KEPT_ACCOUNTS)
        self._metadata: dict[tuple[str, str], EventMetadata] = {}

    def _uow(self, actor: str, reason: str) -> UnitOfWork:
        # One record per (actor, reason), so the codec encodes each once.
        metadata = self._metadata.get((actor, reason))
        if metadata is None:
            if len(self._metadata) >= _KEPT_METADATA:
                self._metadata.clear()
            metadata = self._metadata[actor, reason] = EventMetadata(actor, reason=reason)
        return UnitOfWork(self.repository, metadata)

    # -- accounts ------------------------------------------------------------------------
    def open_account(
        self,
        account_id: str,
        *,
        owner: str,
        currency: str | Currency,
        purpose: str,
        limit: Limit = Limit.NONE,
        actor: str = "system:ledger",
    ) -> LedgerAccount:
        """Open an account; opening it again with the same details returns it unchanged, also
        when another process opens it at the same moment (the loser finds the winner's)."""
        cur = Currency.of(currency)
        for _ in range(2):
            existing = self.repository.load(LedgerAccount, account_id)
            if existing is not None:
                b = existing.open_balance
                if (existing.owner, b.currency, existing.purpose, existing.limit) != (
                    owner, cur, purpose, limit,
                ):  # fmt: skip
                    raise IdempotencyConflictError("account id already used with other details")
                return existing
            try:
                with self._uow(actor, "account opened") as uow:
                    account = uow.record(
                        LedgerAccount.blank(account_id),
                        AccountOpened(account_id, owner, cur, purpose, limit),
                    )
                    uow.commit()
            except ConcurrencyError:
                continue  # opened meanwhile by another writer: read it and compare
            self._seen.keep((account,))
            return account
        raise ConcurrencyError("the account kept changing while it was opened; try again")

    def account(self, account_id: str) -> LedgerAccount:
        found = self.repository.load(LedgerAccount, account_id)
        if found is None:
            raise NotFoundError("no such ledger account")
        self._seen.keep((found,))
        return found

    def balance(self, account_id: str) -> Balance:
        return self.account(account_id).open_balance

    def balances(self, account_ids: Sequence[str]) -> dict[str, Balance]:
        """Several balances as of one moment: a consistent snapshot, so related accounts add up.

        Positions are handed out in commit order, so folding every account up to the same global
        position reads them all as they stood after that commit.
        """
        upto = self.repository.store.last_position()
        return {
            account_id: self._fold_until(account_id, lambda s: s.position > upto).open_balance
            for account_id in account_ids
        }

    def _entries(self, account_id: str) -> Iterator[tuple[StoredEvent, DomainEvent]]:
        """The account's stored events, decoded, in order."""
        stream = LedgerAccount.stream_id_for(account_id)
        decode = self.repository.codec.decode_event
        for stored in self.repository.store.read_stream(stream):
            yield stored, decode(stream, stored.event_type, stored.data)

    def _fold_until(self, account_id: str, past: Callable[[StoredEvent], bool]) -> LedgerAccount:
        state = LedgerAccount.blank(account_id)
        for stored, event in self._entries(account_id):
            if past(stored):
                break
            state = state.apply(event)
        return state

    def transfer_status(self, transfer_id: str) -> Transfer:
        return self.repository.get(Transfer, transfer_id)

    # -- transfers ---------------------------------------------------------------------------
    def transfer(
        self,
        request: TransferRequest,
        *,
        actor: str = "system:ledger",
        also: Sequence[tuple[Aggregate, DomainEvent]] = (),
    ) -> TransferResult:
        return self.transfer_linked([request], actor=actor, also=also)[0]

    def transfer_linked(
        self,
        requests: Sequence[TransferRequest],
        *,
        actor: str = "system:ledger",
        also: Sequence[tuple[Aggregate, DomainEvent]] = (),
    ) -> list[TransferResult]:
        """Post transfers all-or-nothing. A retry with the same ids and content returns the
        first results; the same id with other content is a conflict; a failed id keeps failing.
        ``also`` records further events (a conversion record) in the same atomic append."""
        _check_batch(requests)
        if any(r.reverses is not None for r in requests):
            # A correction must count against the original's reversed total: only reverse()
            # records it there, in the same append.
            raise ValidationError("a correction of a transfer goes through Ledger.reverse")
        for attempt in range(1 + _RETRIES):
            # The first try reads no stream: it starts from the accounts as this ledger last saw
            # them, and records the transfers expecting their streams empty (version 0); the
            # append checks all those versions. If anything fails, the next tries read the
            # transfers (an id already used answers from the store) and the accounts: a
            # transfer is refused only on what the store holds.
            results = self._attempt(requests, actor, also, fresh=attempt > 0)
            if results is not None:
                return results
        raise ConcurrencyError("the accounts kept changing; try again")

    def _attempt(
        self,
        requests: Sequence[TransferRequest],
        actor: str,
        also: Sequence[tuple[Aggregate, DomainEvent]],
        *,
        fresh: bool,
    ) -> list[TransferResult] | None:
        """One try at posting ``requests``: their results, or None if the append conflicted (or,
        not ``fresh``, anything failed on the states this ledger last saw)."""
        if fresh:
            known = self._known(requests)
            if known is not None:
                return known
        with self._uow(actor, "transfer") as uow:
            try:
                accounts = self._stage(uow, requests, also, fresh=fresh)
            except Exception as exc:
                if not fresh:
                    return None
                refused = exc
            else:
                try:
                    uow.commit()
                except ConcurrencyError:
                    return None  # balances moved or the id was taken: look again
                self._seen.keep(accounts)
                return _results(requests)
        if isinstance(refused, ExceedsLimitError | CurrencyMismatchError):
            self._fail(requests, actor, refused)
        raise refused

    def _known(self, requests: Sequence[TransferRequest]) -> list[TransferResult] | None:
        found = [self.repository.load(Transfer, r.transfer_id) for r in requests]
        if all(f is None for f in found):
            return None
        results = []
        for r, f in zip(requests, found, strict=True):
            if f is None or f.content != r.digest():
                raise IdempotencyConflictError(
                    "transfer id already used for a different transfer; nothing was written"
                )
            if f.status is TransferStatus.FAILED:
                raise ExceedsLimitError(f"this transfer failed before: {f.failure}")
            assert f.status is not None
            results.append(TransferResult(r.transfer_id, f.status, replayed=True))
        return results

    def _stage(
        self,
        uow: UnitOfWork,
        requests: Sequence[TransferRequest],
        also: Sequence[tuple[Aggregate, DomainEvent]],
        *,
        fresh: bool,
    ) -> list[LedgerAccount]:
        """Record the transfers, then each one's two entries on its accounts, checking the limits
        on the states the unit of work returns (each account is folded once, by the unit).
        Returns the accounts' new states. ``fresh``: read the accounts, even if seen before."""
        accounts: dict[str, LedgerAccount] = {}
        for r in requests:
            for a in (r.debit_account, r.credit_account):
                if a not in accounts:
                    seen = None if fresh else self._seen.get(a)
                    accounts[a] = seen if seen is not None else self.account(a)
        now = self.clock.now()
        linked = tuple(r.transfer_id for r in requests) if len(requests) > 1 else ()
        record = uow.record
        for r in requests:
            timeout_at = to_utc(now + r.timeout) if r.pending and r.timeout else None
            record(
                Transfer.blank(r.transfer_id),
                TransferRecorded(
                    r.transfer_id,
                    r.debit_account,
                    r.credit_account,
                    r.amount,
                    r.pending,
                    timeout_at,
                    r.reverses,
                    tuple(t for t in linked if t != r.transfer_id),
                    r.digest(),
                ),
            )
        for r in requests:
            debit, credit = accounts[r.debit_account], accounts[r.credit_account]
            currency = r.amount.currency
            for side in (debit, credit):
                held = side.open_balance.currency
                if held is not currency and held != currency:
                    raise CurrencyMismatchError(
                        "a transfer and both its accounts must share one currency"
                    )
            debit.check_limit_after(debit=r.amount)
            credit.check_limit_after(credit=r.amount)
            accounts[r.debit_account] = record(
                debit, EntryRecorded(r.transfer_id, True, r.amount, r.pending)
            )
            accounts[r.credit_account] = record(
                credit, EntryRecorded(r.transfer_id, False, r.amount, r.pending)
            )
        for aggregate, event in also:
            uow.record(aggregate, event)
        return list(accounts.values())

    def _fail(self, requests: Sequence[TransferRequest], actor: str, refused: Exception) -> None:
        reason = type(refused).__name__
        with self._uow(actor, "transfer refused") as uow:
            for r in requests:
                uow.record(
                    Transfer.blank(r.transfer_id), TransferFailed(r.transfer_id, reason, r.digest())
                )
            # Someone recording these ids meanwhile wins: their outcome stands.
            with contextlib.suppress(ConcurrencyError):
                uow.commit()

    # -- currencies ---------------------------------------------------------------------------
    def convert(
        self,
        conversion_id: str,
        *,
        source: str,
        target: str,
        amount: Money,
        rate: ExchangeRate,
        fx_accounts: tuple[str, str],
        policy: ConversionPolicy | None = None,
        actor: str = "system:ledger",
    ) -> ConversionRecorded:
        """Sell ``amount`` from ``source`` and buy the other currency into ``target``, as two
        linked transfers through the FX accounts (one per currency), at ``rate``.

        The amount bought is rounded by ``policy`` (default: down, in the house's favour, and
        at least a hundred minor units), so no run of conversions back and forth can farm
        rounding. The rate, its source and time, the exact result, the rounded one and the
        remainder are recorded with the transfers, atomically. A retry with the same id returns
        the record.
        """
        fx_sold, fx_bought = fx_accounts
        settled = (policy or self.conversions).settle(amount, rate)
        bought = settled.result
        record = ConversionRecorded(
            conversion_id, settled.source, bought, settled.exact, settled.remainder, rate.rate,
            rate.source, rate.as_of, settled.rounding.name,
        )  # fmt: skip
        existing = self.repository.load(Conversion, conversion_id)
        if existing is not None and existing.recorded is not None:
            if existing.recorded != record:
                raise IdempotencyConflictError("conversion id already used differently")
            return existing.recorded
        self.transfer_linked(
            [
                TransferRequest(f"{conversion_id}:sell", source, fx_sold, amount),
                TransferRequest(f"{conversion_id}:buy", fx_bought, target, bought),
            ],
            actor=actor,
            also=[(Conversion.blank(conversion_id), record)],
        )
        return record

    # -- two-phase -----------------------------------------------------------------------------
    def post_pending(
        self,
        transfer_id: str,
        *,
        amount: Money | None = None,
        actor: str = "system:ledger",
        also: Sequence[tuple[Aggregate, DomainEvent]] = (),
    ) -> TransferResult:
        """Post a hold, in full or in part (the rest is released); ``also`` is recorded with it."""
        return self._resolve(transfer_id, TransferStatus.POSTED_FROM_PENDING, amount, actor, also)

    def void_pending(
        self,
        transfer_id: str,
        *,
        actor: str = "system:ledger",
        also: Sequence[tuple[Aggregate, DomainEvent]] = (),
    ) -> TransferResult:
        return self._resolve(transfer_id, TransferStatus.VOIDED, None, actor, also)

    def expire_due(self, holds: PendingHolds, *, actor: str = "system:ledger") -> list[str]:
        """Expire every hold past its timeout (``holds`` must be caught up by the caller)."""
        expired = []
        for transfer_id in holds.due(self.clock.now()):
            self._resolve(transfer_id, TransferStatus.EXPIRED, None, actor)
            expired.append(transfer_id)
        return expired

    def _resolve(
        self,
        transfer_id: str,
        outcome: TransferStatus,
        amount: Money | None,
        actor: str,
        also: Sequence[tuple[Aggregate, DomainEvent]] = (),
    ) -> TransferResult:
        for _ in range(_RETRIES):
            t = self.repository.get(Transfer, transfer_id)
            assert t.amount is not None
            posted = amount if amount is not None else t.amount
            if outcome is not TransferStatus.POSTED_FROM_PENDING:
                posted = Money.zero(t.amount.currency)
            if t.status is outcome and t.posted == posted:
                return TransferResult(transfer_id, outcome, replayed=True)  # resolved at most once
            if t.status is not TransferStatus.PENDING:
                raise IllegalTransitionError(
                    f"the transfer is {t.status.value if t.status else 'unknown'}"
                )
            if outcome is TransferStatus.POSTED_FROM_PENDING and not (
                posted.is_positive() and posted <= t.amount
            ):
                raise ValidationError("a posted amount must be positive and at most the hold")
            debit = self.account(t.debit_account)
            credit = self.account(t.credit_account)
            with self._uow(actor, f"hold {outcome.value}") as uow:
                uow.record(t, TransferResolved(outcome, posted))
                sides = []
                for side, is_debit in ((debit, True), (credit, False)):
                    events: list[DomainEvent] = [PendingReleased(transfer_id, is_debit, t.amount)]
                    if posted.is_positive():
                        events.append(EntryRecorded(transfer_id, is_debit, posted, False))
                    sides.append(uow.record(side, *events))
                for aggregate, event in also:
                    uow.record(aggregate, event)
                try:
                    uow.commit()
                except ConcurrencyError:
                    continue
            self._seen.keep(sides)
            return TransferResult(transfer_id, outcome)
        raise ConcurrencyError("the accounts kept changing; try again")

    def reverse(
        self,
        transfer_id: str,
        correction_id: str,
        *,
        amount: Money | None = None,
        actor: str = "system:ledger",
    ) -> TransferResult:
        """Correct a posted transfer with a new one in the opposite direction (never an edit).

        ``amount`` reverses part of it (default: all that is not reversed yet); the corrections
        of one transfer never sum past its posted amount. The same ``correction_id`` again
        replays its result; any other once nothing is left is an :class:`AlreadyReversedError`.
        The reversal is recorded on the original transfer's stream in the correction's append,
        so two processes reversing at once conflict there and the loser is refused.
        """
        head, _, leg = transfer_id.rpartition(":")
        if leg in ("sell", "buy") and self.repository.load(Conversion, head) is not None:
            # One leg alone would leave the client holding both currencies.
            raise IllegalTransitionError("a conversion is undone by a conversion back, not a leg")
        for _ in range(1 + _RETRIES):
            t = self.repository.get(Transfer, transfer_id)
            if t.status not in (TransferStatus.POSTED, TransferStatus.POSTED_FROM_PENDING):
                raise IllegalTransitionError("only posted transfers are reversed")
            assert t.posted is not None
            done = t.reversal(correction_id)
            if done is not None:
                if amount is not None and amount != done:
                    raise IdempotencyConflictError(
                        "correction id already used for another amount; nothing was written"
                    )
                return TransferResult(correction_id, TransferStatus.POSTED, replayed=True)
            reversed_ = t.reversed
            assert reversed_ is not None
            left = t.posted - reversed_
            wanted = left if amount is None else amount
            if wanted.currency != left.currency:
                raise CurrencyMismatchError("a reversal is in the transfer's currency")
            if amount is not None:
                amount.require_positive("reversal amount")
            if not left.is_positive():
                raise AlreadyReversedError("the transfer is already reversed in full")
            if wanted > left:
                raise AlreadyReversedError(
                    "the reversal would take the reversed total past the transfer's amount"
                )
            request = TransferRequest(
                correction_id, t.credit_account, t.debit_account, wanted, reverses=transfer_id
            )
            # Fresh: accounts and the correction id are read from the store; a conflict (on the
            # original's stream too) reads the transfer again.
            results = self._attempt(
                [request], actor, [(t, TransferReversed(correction_id, wanted))], fresh=True
            )
            if results is not None:
                return results[0]
        raise ConcurrencyError("the transfer or its accounts kept changing; try again")

    # -- history -------------------------------------------------------------------------------
    def history(self, account_id: str) -> list[Entry]:
        entries = []
        for stored, event in self._entries(account_id):
            if isinstance(event, EntryRecorded | PendingReleased):
                kind = (
                    "released"
                    if isinstance(event, PendingReleased)
                    else ("pending" if event.pending else "posted")
                )
                entries.append(
                    Entry(
                        stored.position,
                        stored.recorded_at,
                        event.transfer_id,
                        event.debit,
                        event.amount,
                        kind,
                    )
                )
        return entries

    def balance_at(self, account_id: str, at: datetime) -> Balance:
        """The account's balance as it stood at ``at`` (events recorded up to then)."""
        when = to_utc(at, "at")
        state = self._fold_until(account_id, lambda s: s.recorded_at > when)
        if state.balance is None:
            raise NotFoundError("the account did not exist at that time")
        return state.balance


def _results(requests: Sequence[TransferRequest]) -> list[TransferResult]:
    status = TransferStatus.PENDING if requests[0].pending else TransferStatus.POSTED
    return [
        TransferResult(r.transfer_id, TransferStatus.PENDING if r.pending else status)
        for r in requests
    ]


def _check_batch(requests: Sequence[TransferRequest]) -> None:
    if not requests:
        raise ValidationError("a transfer batch needs at least one transfer")
    ids = [r.transfer_id for r in requests]
    if len(set(ids)) != len(ids) or not all(ids):
        raise ValidationError("transfer ids must be present and distinct")
    for r in requests:
        r.amount.require_positive("transfer amount")
        if r.debit_account == r.credit_account:
            raise ValidationError("a transfer moves money between two different accounts")
        if r.timeout is not None and not r.pending:
            raise ValidationError("only pending transfers have a timeout")
