"""Loyalty points (issue 15, item 3): accrual rules as data, a points account per client holding
lots that expire oldest first, redemption as cashback through the ledger or as host-defined
rewards, and reversal when the deal or deposit that earned points goes away.

The rules, in one place:

- a closed trade deal earns ``per_lot`` points of its symbol's group for each lot it closes; a
  deposit earns on the client's *net* deposits: only money above the highest net the client
  reached before earns (a withdrawal and a new deposit of the same money earn nothing); a
  referred client's first deposit earns its referrer a flat award. A tier's multiplier scales
  each award when it is earned, and the figures are kept with the lot;
- each award is a lot keyed by its source (``deal:<server>:<ticket>``, ``deposit:<id>``,
  ``referral:<client>``): the same source never earns twice; an updated deal re-prices its lot;
  a deleted deal or a charged-back deposit reverses it;
- points are spent and expire oldest first; every taking names the lots it took from, so the
  balance is the sum of the lots' remainders and can never go below zero: a reversal larger
  than what is left takes what is left and records the shortfall;
- a redemption as cashback posts a ledger transfer (``points:<client>:<request>``) from the
  broker's ``loyalty`` account to the client's wallet in the same append as the points it
  spends; a reward redemption records the reward id for the host to fulfil. Both are
  idempotent per request id.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import ROUND_UP, Decimal
from typing import Any

import attrs

from fxcrm_core.access import AccessControl, Actor, ApprovalRule, Approvals
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.events.store import TypeCursor
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import (
    ConcurrencyError,
    FxCrmError,
    IdempotencyConflictError,
    ValidationError,
)
from fxcrm_core.kernel.money import Money
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.ledger import Ledger, LedgerAccount, Transfer, TransferRequest, TransferStatus
from fxcrm_core.ledger.model import TransferRecorded, TransferResolved
from fxcrm_core.loyalty.points_account import (
    POINTS_EVENTS,
    Figures,
    NetDepositCounted,
    PointsAccount,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsLot,
    PointsRedeemed,
    PointsRepriced,
    PointsReversed,
    Taken,
    redemption_digest,
)
from fxcrm_core.loyalty.points_rules import (
    MAX_POINTS,
    POINT,
    ZERO,
    CashbackRate,
    DepositRate,
    PointsRules,
    check_points,
    earned,
)
from fxcrm_core.payments import MoneyAccounts
from fxcrm_core.trading import Deal, DealChange, DealsReceived

__all__ = [
    "ADJUST_ACTION",
    "MAX_POINTS",
    "POINTS_EVENTS",
    "POINTS_POLICY",
    "POINTS_UPSTREAM",
    "REDEEM_PERMISSION",
    "CashbackRate",
    "DepositRate",
    "ExpiryInTheFutureError",
    "InsufficientPointsError",
    "NetDepositCounted",
    "Points",
    "PointsAccount",
    "PointsAdjusted",
    "PointsEarned",
    "PointsExpired",
    "PointsLot",
    "PointsRedeemed",
    "PointsRepriced",
    "PointsReversed",
    "PointsRules",
    "Redemption",
]

#: The permission to redeem points (a client on its own rows; staff on a client's behalf).
REDEEM_PERMISSION = "points.redeem"
#: The maker-checker action of a manual adjustment (``points_adjust.request`` / ``.approve``).
ADJUST_ACTION = "points_adjust"
#: The policy's name in the log (its position stream is ``policy-loyalty-points``).
POINTS_POLICY = "loyalty-points"
#: The upstream events the points policy handles.
POINTS_UPSTREAM: tuple[type[DomainEvent], ...] = (DealsReceived, TransferRecorded, TransferResolved)

_SYSTEM = "system:loyalty-points"
_DEPOSITS = ("deposit:", "wire:")
_WITHDRAWAL = "wd:"


class InsufficientPointsError(FxCrmError, ValueError):
    """The client holds fewer live points than asked for; nothing was written."""

    default_message = "not enough points"


class ExpiryInTheFutureError(ValidationError):
    """Expiring points at an instant after the clock's now (it would take points still live
    then); nothing was written."""

    default_message = "points cannot be expired at an instant after now"


@attrs.frozen
class Redemption:
    """What a redemption did (``replayed``: a retry answered from the log)."""

    client_id: str
    request_id: str
    points: Decimal
    cashback: Money | None
    transfer_id: str | None
    reward_id: str | None
    replayed: bool = False


# -- the service --------------------------------------------------------------------------------


ClientOf = Callable[[str, int], "str | None"]
Multiplier = Callable[[str, datetime], Decimal]


def _one(client_id: str, at: datetime) -> Decimal:
    return Decimal(1)


class Points:
    """The points service: earns from the log (:meth:`handle`, a policy handler), redeems,
    expires and adjusts; answers balances and lots.

    ``client_of(server, login)`` names the client behind a trading login (None: not a
    client's); ``referrer_of(client_id)`` the client who referred it; ``multiplier(client_id,
    at)`` the tier's points multiplier then (``Tiers.benefits(...).points_multiplier``).
    Registers the ``points_adjust`` maker-checker rule with ``approvals``.
    """

    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        approvals: Approvals,
        ledger: Ledger,
        rules: PointsRules,
        *,
        client_of: ClientOf,
        referrer_of: Callable[[str], str | None] | None = None,
        multiplier: Multiplier | None = None,
        clock: Clock | None = None,
        max_adjustment: Decimal = Decimal(1_000_000),
    ) -> None:
        if not isinstance(repository, Repository) or not isinstance(ledger, Ledger):
            raise ValidationError("the points service needs a repository and a ledger")
        if not isinstance(access, AccessControl) or not isinstance(approvals, Approvals):
            raise ValidationError("the points service needs access control and approvals")
        if not isinstance(rules, PointsRules):
            raise ValidationError("the points rules are a PointsRules value")
        if not callable(client_of):
            raise ValidationError("client_of maps (server, login) to a client id")
        check_points(max_adjustment, "the adjustment limit", positive=True)
        self.repository = repository
        self.access = access
        self.approvals = approvals
        self.ledger = ledger
        self.money = MoneyAccounts(ledger)
        self.rules = rules
        self.client_of = client_of
        self.referrer_of = referrer_of
        self.multiplier = multiplier or _one
        self.clock = clock or SystemClock()
        self.max_adjustment = max_adjustment
        self._lock = threading.RLock()
        self._holders: dict[str, None] = {}
        names = repository.codec.registry.name_of
        self._holder_rows = TypeCursor(
            repository.store, frozenset({names(PointsEarned), names(PointsAdjusted)})
        )
        approvals.register(
            ADJUST_ACTION, ApprovalRule(execute=self._adjust, check=self._check_adjust)
        )

    # -- reading --------------------------------------------------------------------------------
    def account(self, client_id: str) -> PointsAccount:
        key = checked_text(client_id, "client id", 100)
        return self.repository.load(PointsAccount, key) or PointsAccount.blank(key)

    def balance(self, client_id: str, at: datetime | None = None) -> Decimal:
        """The points the client may spend now, or at the instant ``at``: lots past their time
        do not count, whether or not their expiry is recorded yet.

        At an instant ``at`` the account is as the log stood then (the events recorded by
        ``at``: nothing earned, spent or reversed later counts), and a lot counts only from
        the time it was earned (``earned_at <= at < expires_at``)."""
        if at is None:
            return self.account(client_id).held_balance(self.clock.now())
        when = to_utc(at, "at")
        key = checked_text(client_id, "client id", 100)
        rows = [row for row in self.history(key) if row.recorded_at <= when]
        return PointsAccount.blank(key).fold([row.event for row in rows]).live_balance(when)

    def history(self, client_id: str) -> list[RecordedEvent[DomainEvent]]:
        """Everything recorded on the client's points, oldest first, with who, when and why."""
        stream_id = PointsAccount.stream_id_for(checked_text(client_id, "client id", 100))
        decode = self.repository.codec.decode
        return [decode(row) for row in self.repository.store.read_stream(stream_id)]

    def holders(self) -> list[str]:
        """Every client that ever held points (a memory read of the log, caught up here)."""
        with self._lock:
            for row in self._holder_rows.new_rows():
                self._holders[row.stream_id.removeprefix("points-")] = None
            return sorted(self._holders)

    # -- earning: the policy handler ----------------------------------------------------------
    def handle(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """The ``loyalty-points`` policy: deals received earn, re-price or reverse; deposits
        into a wallet earn on net deposits (and a first one its referrer's award); a
        withdrawal paid lowers net deposits; a chargeback reverses what its deposit earned.
        Records into ``uow`` (committed by the runner with the policy's position)."""
        event = recorded.event
        at = recorded.recorded_at
        if isinstance(event, DealsReceived):
            for item in event.items:
                self._deal(uow, item.change, item.deal, at)
        elif isinstance(event, TransferRecorded):
            if event.pending:
                return
            if event.reverses is not None:
                if event.reverses.startswith(_DEPOSITS):
                    self._chargeback(uow, event, at)
                elif event.reverses.startswith(_WITHDRAWAL):
                    self._money(uow, event.credit_account, event.transfer_id, event.amount, at)
            elif event.transfer_id.startswith(_DEPOSITS):
                self._deposit(uow, event, at)
        elif isinstance(event, TransferResolved):
            transfer_id = recorded.stream_id.removeprefix("transfer-")
            if (
                transfer_id.startswith(_WITHDRAWAL)
                and event.status is TransferStatus.POSTED_FROM_PENDING
                and event.posted.is_positive()
            ):
                transfer = uow.get(Transfer, transfer_id)
                self._money(uow, transfer.debit_account, transfer_id, -event.posted, at)

    def _state(self, uow: UnitOfWork, client_id: str) -> PointsAccount:
        return uow.load(PointsAccount, client_id) or PointsAccount.blank(client_id)

    def _deal(self, uow: UnitOfWork, change: DealChange, deal: Deal, now: datetime) -> None:
        """One feed item: earn when new, re-price when changed, reverse when deleted; ``now``
        is when the log learnt of it (the deal's own time dates the lot)."""
        client_id = self.client_of(deal.server, deal.login)
        if client_id is None:
            return
        source = f"deal:{deal.server}:{deal.ticket}"
        state = self._state(uow, client_id)
        lot = state.lot(source)
        if lot is not None and lot.reversed:
            return  # a deleted deal never earns again
        if change is DealChange.DELETED:
            if lot is not None:
                self._reverse(uow, state, source, "deal_deleted", now)
            return
        base, figures = self.rules.deal_points(deal)
        if lot is None:
            if base > 0:
                multiplier = self._multiplier(client_id, deal.time)
                # Earned when the deal was made, or when it was recorded if it is stamped
                # later (a server clock ahead): its validity never starts in the future.
                self._earn(uow, state, source, earned(base, multiplier), min(deal.time, now),
                           now, (*figures, ("multiplier", str(multiplier))))  # fmt: skip
            return
        points = earned(base, lot.multiplier)  # the multiplier it was earned with
        if points == lot.amount:
            return  # the same deal again: it earned already
        events = state.expiries(now)
        settled = state.fold(events)
        lot = settled.lot(source)
        assert lot is not None
        added, shortfall = ZERO, ZERO
        taken: Taken = ()
        if points > lot.amount:
            added = points - lot.amount if now < lot.expires_at else ZERO
        else:
            # Only what was granted and did not expire (spent or held) above the new figure is
            # taken back: expired points benefited no one.
            due = max(lot.amount - lot.expired - points, ZERO)
            taken, shortfall = settled.take(due, now, first=source)
        events.append(
            PointsRepriced(client_id, source, points, added, taken, shortfall,
                           (*figures, ("multiplier", str(lot.multiplier))))
        )  # fmt: skip
        uow.record(state, *events)

    def _multiplier(self, client_id: str, at: datetime) -> Decimal:
        value = self.multiplier(client_id, at)
        if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
            raise ValidationError("a points multiplier is a finite Decimal of zero or more")
        return value

    def _earn(
        self,
        uow: UnitOfWork,
        state: PointsAccount,
        source: str,
        points: Decimal,
        earned_at: datetime,
        now: datetime,
        figures: Figures,
    ) -> None:
        if points <= 0 or state.lot(source) is not None:
            return
        expires = earned_at + self.rules.validity
        earned = PointsEarned(state.id, source, points, earned_at, expires, figures)
        uow.record(state, *state.expiries(now), earned)

    def _reverse(
        self, uow: UnitOfWork, state: PointsAccount, source: str, reason: str, at: datetime,
        part: Decimal = Decimal(1), whole: Decimal = Decimal(1),
    ) -> None:  # fmt: skip
        """Reverse the source's award up to ``part / whole`` of it in all (the whole by
        default): that share of the points granted and not expired (rounded up to the point),
        less what earlier reversals of it took back - so parts add up to the whole and never
        to more."""
        events = state.expiries(at)
        now = state.fold(events)
        lot = now.lot(source)
        share = _share(part, whole)
        if lot is None or share <= lot.reversed_share:
            return
        target = _part(lot.amount - lot.expired, part, whole).quantize(POINT, rounding=ROUND_UP)
        due = max(target - lot.reversed_points, ZERO)
        taken, shortfall = now.take(due, at, first=source)
        events.append(PointsReversed(state.id, source, reason, taken, shortfall, share=share))
        uow.record(state, *events)

    def _wallet_owner(self, uow: UnitOfWork, account_id: str) -> str | None:
        account = uow.load(LedgerAccount, account_id)
        if account is None or account.purpose != "wallet":
            return None
        return account.owner

    def _money(
        self, uow: UnitOfWork, wallet: str, transfer_id: str, amount: Money, at: datetime
    ) -> None:
        """Money out of (or back into) a wallet: net deposits move, the highest net stays."""
        client_id = self._wallet_owner(uow, wallet)
        if client_id is None:
            return
        state = self._state(uow, client_id)
        net, high = state.net.get(amount.currency.code, (ZERO, ZERO))
        net += amount.amount
        uow.record(state, NetDepositCounted(client_id, transfer_id, amount, net, high, ZERO))

    def _deposit(self, uow: UnitOfWork, event: TransferRecorded, at: datetime) -> None:
        client_id = self._wallet_owner(uow, event.credit_account)
        if client_id is None:
            return
        source = _deposit_source(event.transfer_id)
        state = self._state(uow, client_id)
        if source in state.deposits:
            return
        amount = event.amount
        net, high = state.net.get(amount.currency.code, (ZERO, ZERO))
        net += amount.amount
        basis = max(net - high, ZERO)
        counted = NetDepositCounted(client_id, source, amount, net, max(net, high), basis)
        first = state.first_deposit is None
        state = uow.record(state, counted)
        rate = self.rules.deposit_rate(amount.currency)
        if rate is not None and basis > 0 and rate.points > 0:
            multiplier = self._multiplier(client_id, at)
            base = basis / rate.per.amount * rate.points
            figures: Figures = (("basis", str(Money.of(basis, amount.currency))),
                       ("per", str(rate.per)), ("points", str(rate.points)),
                       ("multiplier", str(multiplier)))  # fmt: skip
            self._earn(uow, state, source, earned(base, multiplier), at, at, figures)
        referrer = self.referrer_of(client_id) if self.referrer_of and first else None
        if referrer is not None and referrer != client_id and self.rules.per_referral > 0:
            checked_text(referrer, "referrer id", 100)
            multiplier = self._multiplier(referrer, at)
            referral: Figures = (
                ("referred", client_id), ("per_referral", str(self.rules.per_referral)),
                ("multiplier", str(multiplier)),
            )  # fmt: skip
            self._earn(uow, self._state(uow, referrer), f"referral:{client_id}",
                       earned(self.rules.per_referral, multiplier), at, at, referral)  # fmt: skip

    def _chargeback(self, uow: UnitOfWork, event: TransferRecorded, at: datetime) -> None:
        assert event.reverses is not None
        client_id = self._wallet_owner(uow, event.debit_account)
        if client_id is None:
            return
        source = _deposit_source(event.reverses)
        state = self._state(uow, client_id)
        amount = event.amount
        deposited, basis = state.deposits.get(source, (amount.amount, ZERO))
        charged = state.charged_back.get(source, ZERO)
        # The share of the deposit charged back so far, this part included: a deposit charged
        # back in parts reverses its points in parts, all of them once the money is all back.
        after = charged + amount.amount
        net, high = state.net.get(amount.currency.code, (ZERO, ZERO))
        # The part of the deposit that earned is taken off the highest net too, so a later
        # deposit of real money earns again.
        high -= _part(basis, after, deposited) - _part(basis, charged, deposited)
        counted = NetDepositCounted(client_id, event.transfer_id, -amount, net - amount.amount,
                                    high, ZERO, deposit=source)  # fmt: skip
        state = uow.record(state, counted)
        self._reverse(uow, state, source, "chargeback", at, after, deposited)
        if state.first_deposit == source and self.referrer_of is not None:
            referrer = self.referrer_of(client_id)
            if referrer is not None and referrer != client_id:
                self._reverse(uow, self._state(uow, referrer), f"referral:{client_id}",
                              "chargeback", at)  # fmt: skip

    # -- redeeming ------------------------------------------------------------------------------
    def redeem(
        self, actor: Actor, client_id: str, points: Decimal, *, request_id: str
    ) -> Redemption:
        """Spend ``points`` (oldest first) as cashback at the rules' rate: a ledger transfer
        ``points:<client>:<request>`` from the broker's ``loyalty`` account to the client's
        wallet, in the same append as the points spent. Idempotent per request id (the same id
        for another amount is an IdempotencyConflictError)."""
        client_id, points, request = self._redemption(actor, client_id, points, request_id)
        rate = self.rules.cashback
        if rate is None:
            raise ValidationError("these rules give no cashback for points")
        cashback = rate.cashback(points)
        transfer_id = f"points:{client_id}:{request}"
        for _ in range(5):
            state = self.account(client_id)
            done = self._answered(state, request, points, f"cashback {cashback}")
            if done is not None:
                return done
            now = self.clock.now()
            events = self._spend(state, points, now, PointsRedeemed(
                client_id, request, points, (), cashback, transfer_id, None))  # fmt: skip
            also: list[tuple[Aggregate, DomainEvent]] = []
            for e in events:
                also.append((state, e))
                state = state.fold([e])
            try:
                # Opening an account two processes open at once conflicts too: try again.
                wallet = self.money.wallet(client_id, cashback.currency)
                funding = self.money.broker("loyalty", cashback.currency)
                self.ledger.transfer(
                    TransferRequest(transfer_id, funding, wallet, cashback),
                    actor=actor.id, also=also,
                )  # fmt: skip
            except ConcurrencyError:
                self.repository.forget()
                continue  # the points moved meanwhile (an accrual, another redemption)
            return Redemption(client_id, request, points, cashback, transfer_id, None)
        raise ConcurrencyError("the points kept changing; try again")

    def redeem_reward(
        self, actor: Actor, client_id: str, points: Decimal, reward_id: str, *, request_id: str
    ) -> Redemption:
        """Spend ``points`` (oldest first) on the host's reward ``reward_id``; the host fulfils
        it (read the ``PointsRedeemed`` event). Idempotent per request id."""
        client_id, points, request = self._redemption(actor, client_id, points, request_id)
        reward = checked_text(reward_id, "reward id", 100)
        for _ in range(5):
            state = self.account(client_id)
            done = self._answered(state, request, points, f"reward {reward}")
            if done is not None:
                return done
            events = self._spend(state, points, self.clock.now(), PointsRedeemed(
                client_id, request, points, (), None, None, reward))  # fmt: skip
            with UnitOfWork(self.repository, EventMetadata(actor.id, reason="points reward")) as u:
                u.record(state, *events)
                try:
                    u.commit()
                except ConcurrencyError:
                    self.repository.forget()
                    continue
            return Redemption(client_id, request, points, None, None, reward)
        raise ConcurrencyError("the points kept changing; try again")

    def _redemption(
        self, actor: Actor, client_id: str, points: Decimal, request_id: str
    ) -> tuple[str, Decimal, str]:
        if not isinstance(actor, Actor):
            raise ValidationError("a redemption needs an actor")
        client = checked_text(client_id, "client id", 100)
        self.access.require(actor, REDEEM_PERMISSION, client_id=client)
        amount = check_points(points, "points redeemed", positive=True)
        return client, amount, checked_text(request_id, "request id", 100)

    def _answered(
        self, state: PointsAccount, request: str, points: Decimal, what: str
    ) -> Redemption | None:
        asked = state.requests.get(request)
        if asked is None:
            return None
        if asked != redemption_digest(points, what):
            raise IdempotencyConflictError("request id already used for another redemption")
        for row in reversed(self.history(state.id)):
            e = row.event
            if isinstance(e, PointsRedeemed) and e.request_id == request:
                return Redemption(state.id, request, e.points, e.cashback, e.transfer_id,
                                  e.reward_id, replayed=True)  # fmt: skip
        raise IdempotencyConflictError("request id already used for an adjustment")

    def _spend(
        self, state: PointsAccount, points: Decimal, at: datetime, redeemed: PointsRedeemed
    ) -> list[DomainEvent]:
        events = state.expiries(at)
        taken, shortfall = state.fold(events).take(points, at)
        if shortfall > 0:
            raise InsufficientPointsError()
        return [*events, attrs.evolve(redeemed, taken=taken)]

    # -- expiry ---------------------------------------------------------------------------------
    def expire(
        self,
        at: datetime,
        client_ids: Iterable[str] | None = None,
        *,
        uow: UnitOfWork | None = None,
    ) -> int:
        """Record the expiry of every lot past its time by ``at`` (oldest first), for the
        clients given (default: every holder); idempotent. Returns how many clients it recorded
        anything for.

        ``at`` after the clock's now is refused (:class:`ExpiryInTheFutureError`, nothing
        recorded): points live until then could never come back. With ``uow`` (a policy's
        unit of work) the events are recorded into it, not committed, and ``at`` is the
        instant the upstream event names (a closed trading day's end): the decision depends on
        the log alone, never on the clock of the process running the policy."""
        when = to_utc(at, "at")
        if uow is None and when > self.clock.now():
            raise ExpiryInTheFutureError()
        if client_ids is not None and (
            isinstance(client_ids, str) or not isinstance(client_ids, Iterable)
        ):
            raise ValidationError("expire takes a collection of client ids")
        ids = self.holders() if client_ids is None else list(dict.fromkeys(client_ids))
        count = 0
        if uow is not None:
            for client_id in ids:
                state = self._state(uow, client_id)
                events = state.expiries(when)
                if events:
                    uow.record(state, *events)
                    count += 1
            return count
        for client_id in ids:
            for _ in range(5):
                state = self.account(client_id)
                events = state.expiries(when)
                if not events:
                    break
                meta = EventMetadata(_SYSTEM, reason="points expired")
                with UnitOfWork(self.repository, meta) as uow:
                    uow.record(state, *events)
                    try:
                        uow.commit()
                    except ConcurrencyError:
                        self.repository.forget()
                        continue
                count += 1
                break
        return count

    # -- manual adjustments ----------------------------------------------------------------------
    def request_adjustment(
        self, maker: Actor, client_id: str, points: Decimal, *, reason: str
    ) -> str:
        """Ask to add (positive) or take (negative) ``points`` by hand
        (``points_adjust.request``); it is recorded once a second person approves
        (``points_adjust.approve``). A taking never makes the balance negative: what is not
        there is recorded as a shortfall. Returns the approval request id."""
        if not isinstance(points, Decimal) or not points.is_finite() or points == 0:
            raise ValidationError("an adjustment is a non-zero Decimal of points")
        self._check_adjust({"points": str(points)})
        params = {
            "client_id": checked_text(client_id, "client id", 100),
            "points": str(points),
            "reason": checked_text(reason, "reason", 500),
        }
        return self.approvals.request(maker, ADJUST_ACTION, params["client_id"], params,
                                      client_id=params["client_id"])  # fmt: skip

    def _check_adjust(self, params: Mapping[str, str]) -> None:
        """An adjustment is a non-zero number of points to two decimals, within the limit
        (checked before any arithmetic: a huge value is a ValidationError, never a signal)."""
        try:
            points = Decimal(params["points"])
        except (KeyError, TypeError, ArithmeticError):
            raise ValidationError("an adjustment is a number of points") from None
        if (
            not points.is_finite()
            or points == 0
            or abs(points) > min(self.max_adjustment, MAX_POINTS)
            or points != points.quantize(POINT)
        ):
            raise ValidationError("an adjustment is counted to two decimals, within the limit")

    def _adjust(self, params: Mapping[str, str], key: str) -> str:
        client_id, points = params["client_id"], Decimal(params["points"])
        request = key.removeprefix("approval:")
        for _ in range(5):
            state = self.account(client_id)
            if request in state.requests:
                return f"points_adjust:{client_id}"
            now = self.clock.now()
            events = state.expiries(now)
            taken: Taken = ()
            shortfall = ZERO
            if points < 0:
                taken, shortfall = state.fold(events).take(-points, now)
            expires = now + self.rules.validity if points > 0 else None
            events.append(
                PointsAdjusted(client_id, request, points, expires, taken, shortfall, now)
            )
            meta = EventMetadata(_SYSTEM, reason=params["reason"])
            with UnitOfWork(self.repository, meta) as uow:
                uow.record(state, *events)
                try:
                    uow.commit(idempotency_key=key)
                except ConcurrencyError:
                    self.repository.forget()
                    continue
            return f"points_adjust:{client_id}"
        raise ConcurrencyError("the points kept changing; try again")


def _share(part: Decimal, whole: Decimal) -> Decimal:
    """``part`` of ``whole``, at most 1 (1 when there is no whole to share)."""
    if whole <= 0 or part >= whole:
        return Decimal(1)
    return part / whole


def _part(value: Decimal, part: Decimal, whole: Decimal) -> Decimal:
    """``value`` times ``part / whole`` (all of it from the whole on), multiplied before divided
    so that a share that comes to a round figure is exact."""
    if whole <= 0 or part >= whole:
        return value
    return value * part / whole


def _deposit_source(transfer_id: str) -> str:
    """A deposit's source key: its transfer id, without a converted deposit's leg."""
    head, _, leg = transfer_id.rpartition(":")
    return head if leg in ("bought", "buy") else transfer_id
