"""Bonus credit (issue 15, item 4): a credit granted to a trading account through the trading
server's credit operations, burnt pro rata when money leaves the account and removed when the
account's equity falls below it.

The rules, in one place:

- a grant is decided first: ``BonusGrantDecided`` (amount, who and why) is recorded on the
  account's ``bonus-<account>`` stream *before* the server is asked, then ``CREDIT_IN`` is
  posted under the key ``bonus:<account>:grant:<grant id>`` and ``BonusGranted`` records the
  server's ticket. A retry (after a crash anywhere) repeats the keyed call for the amount the log
  decided, so nothing is credited twice and the log never records more than the server took; the
  same grant id for another amount is an ``IdempotencyConflictError`` (from the log, or from the
  server when it holds the key for another operation: then ``BonusGrantRefused`` drops the
  decision and nothing counts as granted);
- money out of the account (``InternalTransferCompleted`` to the wallet, or the out leg of an
  account-to-account transfer) is noted by the ``loyalty-bonus`` policy
  (``BonusWithdrawalNoted``) with the balance the account held *before* that withdrawal, fixed
  when it is noted (see :meth:`Bonus.handle`), and the credit granted by then, read from the
  bonus stream as it stood at the withdrawal (money out before any grant is not noted; a later
  grant is not burnt for it). :meth:`Bonus.settle` then decides the burn:
  ``credit x withdrawn / balance before``, oldest first, rounded half up to the minor unit and
  never more than the credit left (a withdrawal of the whole balance burns all of it); money
  moved in or out later never changes it. The decision and its figures are recorded
  (``BonusBurnDecided``) *before* the server is asked, so a retry burns the recorded amount under
  the same key ``bonus:<account>:<burn id>`` and nothing twice (``BonusBurnt`` with the ticket);
- :meth:`Bonus.check_equity` removes the whole credit left when the server shows equity below
  the credit (``reason`` ``equity_below_credit``), by the same decide-then-burn steps;
- both go account by account: an account the server cannot answer for (or that fails otherwise)
  is logged and left for the next run, named in the result's ``failed``, and stops no other;
- the credit recorded is what was granted less what was burnt or decided: it never goes below
  zero, and what is burnt never exceeds what was granted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Self

import attrs

from fxcrm_core.access import AccessControl, Actor
from fxcrm_core.accounts import TradingAccount
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.events.store import TypeCursor, read_types
from fxcrm_core.kernel.errors import (
    ConcurrencyError,
    FxCrmError,
    IdempotencyConflictError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.payments import InternalTransfer, InternalTransferCompleted
from fxcrm_core.trading import (
    AccountNotFoundError,
    BalanceOperation,
    TradingServer,
    TradingServerError,
)

__all__ = [
    "BONUS_EVENTS",
    "BONUS_POLICY",
    "BONUS_UPSTREAM",
    "GRANT_PERMISSION",
    "Bonus",
    "BonusAccount",
    "BonusBurnDecided",
    "BonusBurnt",
    "BonusGrantDecided",
    "BonusGrantRefused",
    "BonusGranted",
    "BonusRun",
    "BonusWithdrawalNoted",
]

log = logging.getLogger(__name__)

#: The permission to grant a bonus credit (staff, on the client's rows).
GRANT_PERMISSION = "bonus.grant"
#: The policy's name in the log (position stream ``policy-loyalty-bonus``).
BONUS_POLICY = "loyalty-bonus"
#: The upstream events the bonus policy handles.
BONUS_UPSTREAM: tuple[type[DomainEvent], ...] = (InternalTransferCompleted,)

_ZERO = Decimal(0)
_SYSTEM = "system:loyalty-bonus"
_RETRIES = 5

Figures = tuple[tuple[str, str], ...]


# -- events -------------------------------------------------------------------------------------


@attrs.frozen
class BonusGrantDecided(DomainEvent):
    """``amount`` of credit is to be posted under the grant's key for ``reason`` (recorded
    before the server is asked: what a retry posts and what the grant id stands for)."""

    account_id: str
    grant_id: str
    amount: Money
    reason: str


@attrs.frozen
class BonusGrantRefused(DomainEvent):
    """The server refused the decided grant (its key names another operation there): the
    decision is dropped and nothing was granted."""

    account_id: str
    grant_id: str
    reason: str


@attrs.frozen
class BonusGranted(DomainEvent):
    """``amount`` of credit posted to the account (server deal ``ticket``) for ``reason``."""

    account_id: str
    grant_id: str
    amount: Money
    ticket: int
    reason: str


@attrs.frozen
class BonusWithdrawalNoted(DomainEvent):
    """``withdrawn`` left the account (request ``withdrawal_id``): a burn is to be decided on
    ``balance_before``, the account's balance before it (None when the server could not say
    when the withdrawal was noted: the burn is then decided on the balance at the settle), and
    on the credit granted by then (``granted_before``; a later grant is not burnt for it)."""

    account_id: str
    withdrawal_id: str
    withdrawn: Money
    balance_before: Money | None = None
    granted_before: Money | None = None


@attrs.frozen
class BonusBurnDecided(DomainEvent):
    """``amount`` of credit to take out (``reason``: ``withdrawal`` or
    ``equity_below_credit``), with the ``figures`` it was worked out from."""

    account_id: str
    burn_id: str
    amount: Money
    reason: str
    figures: Figures


@attrs.frozen
class BonusBurnt(DomainEvent):
    """The decided burn taken out on the server (``CREDIT_OUT``, deal ``ticket``)."""

    account_id: str
    burn_id: str
    amount: Money
    ticket: int


BONUS_EVENTS: tuple[type[DomainEvent], ...] = (
    BonusGrantDecided,
    BonusGrantRefused,
    BonusGranted,
    BonusWithdrawalNoted,
    BonusBurnDecided,
    BonusBurnt,
)


# -- state --------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class BonusAccount(Aggregate):
    """One trading account's bonus (id: the trading account id): grants, withdrawals waiting
    for a decision, burns decided and not yet made, and the totals."""

    category = "bonus"
    currency: str = ""
    grants: Mapping[str, BonusGranted] = attrs.field(factory=dict)
    granting: Mapping[str, BonusGrantDecided] = attrs.field(factory=dict)  # not posted yet
    waiting: tuple[BonusWithdrawalNoted, ...] = ()
    noted: frozenset[str] = frozenset()
    decided: Mapping[str, BonusBurnDecided] = attrs.field(factory=dict)  # not burnt yet
    burns: Mapping[str, BonusBurnt] = attrs.field(factory=dict)
    granted: Decimal = _ZERO
    burnt: Decimal = _ZERO
    decisions: int = 0

    @property
    def credit(self) -> Decimal:
        """The credit granted and not burnt (decided burns still count)."""
        return self.granted - self.burnt

    @property
    def available(self) -> Decimal:
        """The credit a new burn may take: granted less burnt and decided."""
        return self.credit - sum((d.amount.amount for d in self.decided.values()), _ZERO)

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case BonusGrantDecided():
                if event.grant_id in self.grants or event.grant_id in self.granting:
                    raise IdempotencyConflictError("this grant id is already decided")
                return self.evolve(granting={**self.granting, event.grant_id: event})
            case BonusGrantRefused():
                granting = {k: v for k, v in self.granting.items() if k != event.grant_id}
                return self.evolve(granting=granting)
            case BonusGranted():
                granting = {k: v for k, v in self.granting.items() if k != event.grant_id}
                return self.evolve(
                    currency=event.amount.currency.code,
                    grants={**self.grants, event.grant_id: event},
                    granting=granting,
                    granted=self.granted + event.amount.amount,
                )
            case BonusWithdrawalNoted():
                return self.evolve(
                    waiting=(*self.waiting, event), noted=self.noted | {event.withdrawal_id}
                )
            case BonusBurnDecided():
                if event.amount.amount > self.available:
                    raise ValidationError("a burn exceeds the credit left")
                waiting = tuple(w for w in self.waiting if f"wd:{w.withdrawal_id}" != event.burn_id)
                decided = dict(self.decided)
                if event.amount.is_positive():
                    decided[event.burn_id] = event
                return self.evolve(waiting=waiting, decided=decided, decisions=self.decisions + 1)
            case BonusBurnt():
                decided = {k: v for k, v in self.decided.items() if k != event.burn_id}
                return self.evolve(
                    decided=decided,
                    burns={**self.burns, event.burn_id: event},
                    burnt=self.burnt + event.amount.amount,
                )
        raise ValidationError(f"BonusAccount cannot apply {type(event).__name__}")


class BonusRun(list[BonusBurnt]):
    """The burns one :meth:`Bonus.settle` or :meth:`Bonus.check_equity` made (a list), and
    ``failed``: the accounts it could not handle, with the error's type name (retried by the
    next run)."""

    def __init__(self, burnt: Iterable[BonusBurnt] = (), failed: Mapping[str, str] | None = None):
        super().__init__(burnt)
        self.failed: dict[str, str] = dict(failed or {})


# -- the service --------------------------------------------------------------------------------


class Bonus:
    """Grants bonus credit, notes withdrawals (:meth:`handle`, the ``loyalty-bonus`` policy),
    burns credit pro rata (:meth:`settle`) and removes it when equity falls below it
    (:meth:`check_equity`); both from the scheduler, after the policies ran."""

    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        servers: Mapping[str, TradingServer],
    ) -> None:
        if not isinstance(repository, Repository) or not isinstance(access, AccessControl):
            raise ValidationError("the bonus service needs a repository and access control")
        if not isinstance(servers, Mapping):
            raise ValidationError("servers maps a server name to its TradingServer")
        self.repository = repository
        self.access = access
        self.servers = servers
        self._lock = threading.Lock()
        self._holders: dict[str, None] = {}
        granted = repository.codec.registry.name_of(BonusGranted)
        self._holder_rows = TypeCursor(repository.store, frozenset({granted}))

    # -- reading --------------------------------------------------------------------------------
    def account(self, account_id: str) -> BonusAccount:
        key = checked_text(account_id, "account id", 100)
        return self.repository.load(BonusAccount, key) or BonusAccount.blank(key)

    def holders(self) -> list[str]:
        """Every trading account ever granted a bonus (a memory read of the log)."""
        with self._lock:
            for row in self._holder_rows.new_rows():
                self._holders[row.stream_id.removeprefix("bonus-")] = None
            return sorted(self._holders)

    def _trading(self, account_id: str) -> tuple[TradingAccount, TradingServer]:
        account = self.repository.get(TradingAccount, checked_text(account_id, "account id", 100))
        server = self.servers.get(account.server)
        if server is None:
            raise TradingServerError("no such trading server is connected")
        return account, server

    # -- granting -------------------------------------------------------------------------------
    def grant(
        self, actor: Actor, account_id: str, amount: Money, *, grant_id: str, reason: str
    ) -> BonusGranted:
        """Post ``amount`` of bonus credit to the trading account (``bonus.grant`` on its
        client's rows); idempotent per grant id (see the module docstring)."""
        if not isinstance(actor, Actor):
            raise ValidationError("a grant needs an actor")
        if not isinstance(amount, Money):
            raise ValidationError("a bonus is Money")
        amount.require_positive("bonus amount")
        grant = checked_text(grant_id, "grant id", 100)
        why = checked_text(reason, "reason", 500)
        account, server = self._trading(account_id)
        self.access.require(actor, GRANT_PERMISSION, client_id=account.client_id)
        if amount.currency != Currency.of(account.currency):
            raise ValidationError("a bonus is in the trading account's currency")
        key = f"bonus:{account.id}:grant:{grant}"
        for _ in range(_RETRIES):
            state = self.account(account.id)
            done = state.grants.get(grant)
            if done is not None:
                if done.amount != amount:
                    raise IdempotencyConflictError("grant id already used for another amount")
                return done
            decided = state.granting.get(grant)
            if decided is None:
                # Decide, then call: the log names the amount before the server is asked, so
                # a retry can only post (and record) that amount.
                self._record(state, BonusGrantDecided(account.id, grant, amount, why), actor.id,
                             why)  # fmt: skip
                continue  # a lost race re-reads; a won one posts below on the next pass
            if decided.amount != amount:
                raise IdempotencyConflictError("grant id already used for another amount")
            try:
                # The keyed call itself, not balance_operation_made: the server answers the
                # same ticket only for the same operation, so a key it holds for another
                # amount is refused rather than recorded as this one.
                ticket = server.balance_operation(
                    account.login, BalanceOperation.CREDIT_IN, amount,
                    comment=f"bonus {grant}", idempotency_key=key,
                )  # fmt: skip
            except IdempotencyConflictError:
                refused = BonusGrantRefused(account.id, grant, "server key names another operation")
                self._record(self.account(account.id), refused, actor.id, why)
                raise IdempotencyConflictError(
                    "the trading server holds this grant id for another operation"
                ) from None
            granted = BonusGranted(account.id, grant, amount, ticket, decided.reason)
            if self._record(state, granted, actor.id, why):
                return granted
        raise ConcurrencyError("the bonus kept changing; try again")

    def _record(self, state: BonusAccount, event: DomainEvent, actor: str, reason: str) -> bool:
        with UnitOfWork(self.repository, EventMetadata(actor, reason=reason)) as uow:
            uow.record(state, event)
            try:
                uow.commit()
            except ConcurrencyError:
                self.repository.forget(state.stream_id)
                return False
        return True

    # -- the policy handler ---------------------------------------------------------------------
    def handle(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """The ``loyalty-bonus`` policy: money out of a trading account holding bonus credit is
        noted with the balance before it; :meth:`settle` decides and burns.

        Why the balance is fixed here: the burn must be decided on the balance the money left,
        and the log holds no account balances (trading profit and loss live on the server). So
        the figure is read from the server once, when the withdrawal is noted, and from then on
        it is the log's: a later deposit, a later settle or a replay never changes it. Inline
        (the default) this runs right after the transfer's commit, so the server's balance is
        the one the withdrawal left, and adding the withdrawal back gives the balance before.
        A late worker reads the server later: it adds back every CRM transfer of the account
        the log recorded after this one (withdrawals, deposits, account-to-account legs), so it
        records the inline figure unless the account's trading or a balance operation outside
        the CRM moved the balance meanwhile. A server that cannot answer leaves the figure
        unset (logged; the withdrawal is still noted and :meth:`settle` falls back to the
        balance it reads)."""
        event = recorded.event
        if not isinstance(event, InternalTransferCompleted) or event.to_trading:
            return
        undo = event.request_id.removesuffix(":out") + ":undo"
        if event.request_id.endswith(":out") and uow.load(InternalTransfer, undo) is not None:
            return  # an account-to-account transfer given back: the money came back with it
        state = uow.load(BonusAccount, event.account_id)
        if state is None or event.request_id in state.noted:
            return
        # Whether the account held credit when the money left, and how much had been granted
        # by then: the bonus stream as it stood at this event's position (a late worker must
        # not burn for a withdrawal made before the grant, nor burn a later grant for it).
        then = self._as_of(state.id, recorded.position)
        if then.available <= 0:
            return
        cur = Currency.of(then.currency)
        noted = BonusWithdrawalNoted(
            event.account_id, event.request_id, event.amount,
            self._balance_before(recorded.position, event), Money.of(then.granted, cur),
        )  # fmt: skip
        uow.record(state, noted)

    def _as_of(self, account_id: str, position: int) -> BonusAccount:
        codec = self.repository.codec
        rows = self.repository.store.read_stream(BonusAccount.stream_id_for(account_id))
        return BonusAccount.blank(account_id).fold(
            codec.decode_event(r.stream_id, r.event_type, r.data)
            for r in rows
            if r.position < position
        )

    def _balance_before(self, position: int, event: InternalTransferCompleted) -> Money | None:
        server = self.servers.get(event.server)
        try:
            if server is None:
                raise TradingServerError("no such trading server is connected")
            balance = server.account_state(event.login).balance
        except (TradingServerError, AccountNotFoundError) as exc:
            log.warning(
                "bonus: no balance for account %s's withdrawal (%s); settle decides on its own",
                event.account_id, type(exc).__name__,
            )  # fmt: skip
            return None
        balance = balance + event.amount
        for later in self._transfers_after(position, event.account_id):
            balance = balance - later.amount if later.to_trading else balance + later.amount
        return balance

    def _transfers_after(self, position: int, account_id: str) -> list[InternalTransferCompleted]:
        """The CRM's transfers of ``account_id`` recorded after ``position`` (inline: none)."""
        codec = self.repository.codec
        types = frozenset({codec.registry.name_of(InternalTransferCompleted)})
        out: list[InternalTransferCompleted] = []
        done = False
        while not done:
            rows, position, done = read_types(self.repository.store, position, types, 1000)
            for row in rows:
                event = codec.decode_event(row.stream_id, row.event_type, row.data)
                if isinstance(event, InternalTransferCompleted) and event.account_id == account_id:
                    out.append(event)
        return out

    # -- burning --------------------------------------------------------------------------------
    def _accounts(self, account_ids: Iterable[str] | None) -> list[str]:
        if account_ids is None:
            return self.holders()
        if isinstance(account_ids, str) or not isinstance(account_ids, Iterable):
            raise ValidationError("account ids are a collection")
        return [checked_text(a, "account id", 100) for a in dict.fromkeys(account_ids)]

    def settle(self, account_ids: Iterable[str] | None = None) -> BonusRun:
        """Decide the pro-rata burn of every withdrawal noted, then make every burn decided and
        not made (a crash's leftovers too); for the accounts given (default: every holder).
        Returns the burns made by this call; an account that fails is logged, named in
        ``failed`` and retried by the next run, and stops no other."""
        return self._each(account_ids, "settle", self._settle_one)

    def check_equity(self, account_ids: Iterable[str] | None = None) -> BonusRun:
        """Remove the credit left of every account (given, default every holder) whose equity
        the server shows below its credit. Returns the burns made; failures as :meth:`settle`."""
        return self._each(account_ids, "equity check", self._check_one)

    def _settle_one(self, account_id: str) -> list[BonusBurnt]:
        state = self.account(account_id)
        if not state.waiting and not state.decided:
            return []
        account, server = self._trading(account_id)
        if state.waiting:
            self._decide(account, server, self._pro_rata)
        return self._burn(account, server)

    def _check_one(self, account_id: str) -> list[BonusBurnt]:
        if self.account(account_id).available <= 0:
            return []
        account, server = self._trading(account_id)
        self._decide(account, server, self._equity)
        return self._burn(account, server)

    def _each(
        self, account_ids: Iterable[str] | None, step: str,
        one: Callable[[str], list[BonusBurnt]],
    ) -> BonusRun:  # fmt: skip
        burnt: list[BonusBurnt] = []
        failed: dict[str, str] = {}
        for account_id in self._accounts(account_ids):
            try:
                burnt.extend(one(account_id))
            except FxCrmError as exc:
                # One account the server cannot answer for (archived, moved, a refusal) must
                # not stop every other account's burn day after day: log it (ids and the
                # error's type only) and carry on; the next run retries it.
                failed[account_id] = type(exc).__name__
                log.warning("bonus %s failed for account %s: %s", step, account_id,
                            type(exc).__name__)  # fmt: skip
        return BonusRun(burnt, failed)

    def _decide(
        self, account: TradingAccount, server: TradingServer,
        decide: Callable[[BonusAccount, TradingServer, TradingAccount], list[DomainEvent]],
    ) -> None:  # fmt: skip
        for _ in range(_RETRIES):
            state = self.account(account.id)
            events = decide(state, server, account)
            if not events:
                return
            with UnitOfWork(self.repository, EventMetadata(_SYSTEM, reason="bonus burn")) as u:
                u.record(state, *events)
                try:
                    u.commit()
                except ConcurrencyError:
                    self.repository.forget(state.stream_id)
                    continue
            return
        raise ConcurrencyError("the bonus kept changing; try again")

    def _pro_rata(
        self, state: BonusAccount, server: TradingServer, account: TradingAccount
    ) -> list[DomainEvent]:
        if not state.waiting:
            return []
        live = server.account_state(account.login)
        cur = Currency.of(state.currency)
        credit = min(state.available, live.credit.amount)
        # Only for a withdrawal noted without its balance: the server's balance now, plus the
        # withdrawals noted and not decided (the old rule; see handle()).
        fallback = live.balance.amount + sum((w.withdrawn.amount for w in state.waiting), _ZERO)
        events: list[DomainEvent] = []
        for w in state.waiting:
            withdrawn = w.withdrawn.amount
            # The credit when the money left: grants recorded after it are not burnt for it.
            later = _ZERO if w.granted_before is None else state.granted - w.granted_before.amount
            credit_then = max(credit - later, _ZERO)
            noted = w.balance_before is not None
            balance = fallback if w.balance_before is None else w.balance_before.amount
            if credit_then <= 0:
                burn = _ZERO
            elif balance <= 0 or withdrawn >= balance:
                burn = credit_then
            else:
                exact = credit_then * withdrawn / balance
                burn = min(exact.quantize(cur.quantum, rounding=ROUND_HALF_UP), credit_then)
            figures: Figures = (
                ("withdrawn", str(w.withdrawn)), ("balance_before", str(Money.of(balance, cur))),
                ("credit_before", str(Money.of(credit_then, cur))),
            )  # fmt: skip
            if not noted:
                figures = (*figures, ("balance_read", "at_settle"))
            events.append(BonusBurnDecided(state.id, f"wd:{w.withdrawal_id}",
                                           Money.of(burn, cur), "withdrawal", figures))  # fmt: skip
            credit -= burn
            fallback -= withdrawn
        return events

    def _equity(
        self, state: BonusAccount, server: TradingServer, account: TradingAccount
    ) -> list[DomainEvent]:
        if state.available <= 0:
            return []
        live = server.account_state(account.login)
        if not live.equity < live.credit:
            return []
        cur = Currency.of(state.currency)
        burn = min(state.available, live.credit.amount)
        figures = (
            ("equity", str(live.equity)), ("server_credit", str(live.credit)),
            ("balance", str(live.balance)), ("credit_before", str(Money.of(state.available, cur))),
        )  # fmt: skip
        burn_id = f"equity:{state.decisions + 1}"
        return [BonusBurnDecided(state.id, burn_id, Money.of(burn, cur), "equity_below_credit",
                                 figures)]  # fmt: skip

    def _burn(self, account: TradingAccount, server: TradingServer) -> list[BonusBurnt]:
        out = []
        for burn_id in sorted(self.account(account.id).decided):
            for _ in range(_RETRIES):
                state = self.account(account.id)
                decided = state.decided.get(burn_id)
                if decided is None:
                    break  # another process made it
                key = f"bonus:{account.id}:{burn_id}"
                ticket = server.balance_operation_made(account.login, key)
                if ticket is None:
                    ticket = server.balance_operation(
                        account.login, BalanceOperation.CREDIT_OUT, decided.amount,
                        comment=f"bonus {burn_id}", idempotency_key=key,
                    )  # fmt: skip
                burnt = BonusBurnt(account.id, burn_id, decided.amount, ticket)
                if self._record(state, burnt, _SYSTEM, decided.reason):
                    out.append(burnt)
                    break
        return out
