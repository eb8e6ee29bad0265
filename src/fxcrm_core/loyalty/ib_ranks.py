"""IB ranks decided by the tier engine: a :class:`~fxcrm_core.loyalty.Tiers` programme over
each IB's downline activity (:class:`IbActivity`), whose decisions become the IB network's rank
changes (``IbRankChanged``, with the effective date the rules gave), at once or through
maker-checker. A rank-based distribution (``RankSlices`` on recorded ranks) pays each deal by
the rank in force at the deal's time.

The rules are the tier programme's, unchanged (tiers, thresholds, windows, combination,
upgrade timing, downgrades and grace); the subject of each decision is an IB. Each decision
is a ``TierChanged`` on ``clienttier-<programme>/<ib>`` naming its rule, period and figures,
and, in the same unit of work, the network's ``IbRankChanged`` it gives, or an approval request
(``ib_rank``) when the ranks need a second person: a decision and its rank are recorded
together, by whichever process makes the decision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from fxcrm_core.access import AccessControl, Actor, ApprovalRequest, ApprovalRule, Approvals
from fxcrm_core.access.approvals import ApprovalRequested, ApprovalStatus
from fxcrm_core.activity import Figure
from fxcrm_core.activity import Measure as ClientMeasure
from fxcrm_core.commissions.network import IbNetworkService, IbRankChanged
from fxcrm_core.commissions.tree import IbTree, check_id, check_rank
from fxcrm_core.events import (
    DomainEvent,
    EventMetadata,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.events.store import read_types
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import NotFoundError, ValidationError
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.kernel.trading_day import TradingCalendar
from fxcrm_core.loyalty.events import ClientTier, TierChanged
from fxcrm_core.loyalty.programme import Measure, TierProgramme
from fxcrm_core.loyalty.tiers import DecisionInTheFutureError, Standing, Tiers

__all__ = [
    "IB_MEASURES",
    "IB_RANKS_POLICY",
    "RANK_ACTION",
    "RANK_PROGRAMME_PERMISSION",
    "DownlineFigures",
    "IbActivity",
    "IbRanks",
]

#: The policy that decides IB ranks when a trading day closes (:meth:`IbRanks.on_trading_day_closed`
#: on ``TradingDayClosed``).
IB_RANKS_POLICY = "loyalty-ib-ranks"
#: The maker-checker action of a rank change (``ib_rank.request`` / ``ib_rank.approve``).
RANK_ACTION = "ib_rank"
#: The permission to record a version of the IB rank programme (with ``tier.programme``).
RANK_PROGRAMME_PERMISSION = "ib_rank.programme"

T = TypeVar("T")

_TICK = timedelta(microseconds=1)
_OPEN = frozenset({ApprovalStatus.PENDING, ApprovalStatus.APPROVED})
_SYSTEM = "system:ib-ranks"
_SUMMED = {
    Measure.LOTS: ClientMeasure.LOTS,
    Measure.VOLUME_USD: ClientMeasure.VOLUME_USD,
    Measure.TRADES: ClientMeasure.TRADES,
    Measure.NET_DEPOSITS: ClientMeasure.NET_DEPOSITS,
}
#: The measures an IB is judged on: its downline's lots, USD volume, trades and net deposits,
#: and its active clients (downline clients with at least one trade in the span).
IB_MEASURES: frozenset[Measure] = frozenset({*_SUMMED, Measure.ACTIVE_CLIENTS})


class DownlineFigures(Protocol):
    """What IB activity reads of the client activity read model
    (:class:`~fxcrm_core.activity.ClientActivity` answers it): one client's figure over the
    ``days`` trading days ending with the trading day of ``at``."""

    def window(
        self, client_id: str, measure: ClientMeasure, *, days: int, at: datetime
    ) -> Figure: ...  # fmt: skip


class IbActivity:
    """The tier engine's activity source for IBs (subject ids are IB ids).

    An IB's figure over a span sums, per trading day of the span, the figures of the clients
    in its downline that day (attributed to it or to an IB below it, as the network tree stood
    at the day's last instant within the span). Figures are whole trading days (the read
    model's buckets): a span ending inside a day counts that whole day, so decide at a day's
    close (:meth:`IbRanks.on_trading_day_closed`) for figures a later reading repeats.
    """

    def __init__(
        self,
        network: IbNetworkService,
        figures: DownlineFigures,
        *,
        calendar: TradingCalendar | None = None,
    ) -> None:
        if not isinstance(network, IbNetworkService):
            raise ValidationError("IB activity needs the IB network")
        if not callable(getattr(figures, "window", None)):
            raise ValidationError("IB activity needs the client activity read model")
        self.network = network
        self.figures = figures
        self.calendar = calendar or TradingCalendar()
        self._lock = threading.RLock()
        # Each probe's downline of every IB, for one state of the tree (its version and pin):
        # computed once for all IBs, as a day's close evaluates every IB on the same days.
        self._tree_key: tuple[int, datetime | None] = (-1, None)
        self._members: dict[datetime, dict[str, list[str]]] = {}
        self._span: tuple[tuple[datetime, datetime] | None, list[datetime]] = (None, [])
        # Inside batch(): each client's figure per measure and run of days, asked once.
        self._values: dict[tuple[str, ClientMeasure, int, datetime], Decimal] | None = None
        #: When set (by a policy handling an event recorded then), the tree is read as the log
        #: held it at that instant (``IbNetworkService.as_recorded``): a worker catching up
        #: late reads the downline a broker running its policies inline read.
        self.recorded_by: datetime | None = None

    def tree(self) -> IbTree:
        """The network tree figures are read on: as recorded by :attr:`recorded_by` if set,
        else every change the log holds (a copy either way)."""
        when = self.recorded_by
        return self.network.tree() if when is None else self.network.as_recorded(when)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Within it, each client's figure for a day is asked of the read model once, however
        many IBs' downlines hold the client (the read model must not change meanwhile: a
        policy's handler, on a read model pinned to the event's position)."""
        with self._lock:
            self._values = {}
            try:
                yield
            finally:
                self._values = None

    def downline_days(
        self, ib_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, list[str]]]:
        """Per trading day of ``[start, end)``: an instant in it and the IB's downline then."""
        check_id(ib_id, "an IB id")
        begin, stop = to_utc(start, "start"), to_utc(end, "end")
        if not begin < stop:
            return []
        with self._lock:
            probes = self._probes(begin, stop)
            key = (self.network.version, self.recorded_by)  # (reads new changes first)
            if key != self._tree_key or len(self._members) > _PROBES_KEPT:
                self._tree_key, self._members = key, {}
            tree: IbTree | None = None
            out = []
            for probe in probes:
                members = self._members.get(probe)
                if members is None:
                    tree = tree or self.tree()
                    members = self._members[probe] = _downlines(tree, probe)
                out.append((probe, members.get(ib_id, [])))
            return out

    def _probes(self, begin: datetime, stop: datetime) -> list[datetime]:
        """An instant in each trading day of ``[begin, stop)``: its last one in the span."""
        if self._span[0] == (begin, stop):
            return self._span[1]
        cal = self.calendar
        probes = []
        day, last = cal.trading_day(begin), cal.trading_day(stop - _TICK)
        while day <= last:
            if cal.is_trading_day(day):
                probes.append(min(cal.session(day)[1], stop) - _TICK)
            day += timedelta(days=1)
        self._span = ((begin, stop), probes)
        return probes

    def _value(self, client_id: str, measure: ClientMeasure, days: int, at: datetime) -> Decimal:
        values = self._values
        key = (client_id, measure, days, at)
        if values is not None:
            found = values.get(key)
            if found is not None:
                return found
        value = _value(self.figures.window(client_id, measure, days=days, at=at))
        if values is not None:
            values[key] = value
        return value

    def measure(self, ib_id: str, measure: Measure, start: datetime, end: datetime) -> Decimal:
        """The IB's ``measure`` over ``[start, end)`` (whole trading days, see the class)."""
        if not isinstance(measure, Measure) or measure not in IB_MEASURES:
            raise ValidationError("an IB is measured on lots, volume, trades, net deposits "
                                  "or active clients")  # fmt: skip
        days = self.downline_days(ib_id, start, end)
        # Each client's runs of consecutive trading days in the downline: one window each
        # (a client under the IB all month is one question, not one per day).
        runs: dict[str, list[list[int]]] = {}
        for i, (_, clients) in enumerate(days):
            for client in clients:
                spans = runs.setdefault(client, [])
                if spans and spans[-1][1] == i - 1:
                    spans[-1][1] = i
                else:
                    spans.append([i, i])
        wanted = ClientMeasure.TRADES if measure is Measure.ACTIVE_CLIENTS else _SUMMED[measure]
        total = Decimal(0)
        for client, spans in runs.items():
            value = sum(
                (self._value(client, wanted, last - first + 1, days[last][0])
                 for first, last in spans),
                Decimal(0),
            )  # fmt: skip
            if measure is Measure.ACTIVE_CLIENTS:
                total += 1 if value > 0 else 0
            else:
                total += value
        return total


_PROBES_KEPT = 400


def _downlines(tree: IbTree, at: datetime) -> dict[str, list[str]]:
    """Every IB's downline at ``at``: each client under its own IB and that IB's ancestors."""
    out: dict[str, list[str]] = {}
    for client in tree.clients():
        direct = tree.ib_of(client, at)
        if direct is None:
            continue
        try:
            chain = tree.chain(direct, at)
        except NotFoundError:  # (the client's IB not registered by then)
            continue
        for ib in chain:
            out.setdefault(ib, []).append(client)
    return out


def _value(figure: object) -> Decimal:
    value = getattr(figure, "value", None)
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValidationError("the client activity answers figures of finite Decimals")
    return value


class IbRanks:
    """IB ranks from a tier programme over the IBs' downline activity.

    ``ranks`` maps each tier name of the programme to the rank an IB of that tier holds in the
    network (the ranks ``RankSlices`` pays on). Decisions (:meth:`evaluate`,
    :meth:`close_period`, :meth:`on_trading_day_closed`) are the tier engine's, recorded on
    ``clienttier-<programme>/<ib>``; the :meth:`handle` policy records each as the network's
    ``IbRankChanged`` effective when the rules said, or, with ``approval=True``, files an
    ``ib_rank`` approval request that takes effect once a second person approves it (no
    earlier than the approval: deals already paid are never paid on a rank nobody knew of).

    Registers the ``ib_rank`` maker-checker rule with ``approvals``; staff ask for a rank by
    hand through it too (:meth:`request_rank`). Tier overrides of the inner tier service are
    not offered (a rank by hand is the ``ib_rank`` request).
    """

    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        approvals: Approvals,
        network: IbNetworkService,
        figures: DownlineFigures,
        *,
        ranks: Mapping[str, int],
        programme: str = "ib-ranks",
        approval: bool = False,
        calendar: TradingCalendar | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(repository, Repository):
            raise ValidationError("IB ranks need a repository")
        if not isinstance(access, AccessControl) or not isinstance(approvals, Approvals):
            raise ValidationError("IB ranks need access control and approvals")
        if not isinstance(ranks, Mapping) or not ranks:
            raise ValidationError("IB ranks need the rank of each tier (a mapping)")
        self.ranks = {checked_text(t, "tier name", 64): check_rank(r) for t, r in ranks.items()}
        if type(approval) is not bool:
            raise ValidationError("approval is True or False")
        self.repository = repository
        self.access = access
        self.approvals = approvals
        self.network = network
        self.approval = approval
        self.calendar = calendar or TradingCalendar()
        self.clock = clock or SystemClock()
        self.activity = IbActivity(network, figures, calendar=self.calendar)
        # The tier engine, as is. Its override rule goes to an Approvals of its own, so that
        # this service and a client tier programme can share the broker's.
        self.tiers = Tiers(
            repository, access, Approvals(repository, access), self.activity,
            programme=programme, calendar=self.calendar, clock=self.clock, measures=IB_MEASURES,
        )  # fmt: skip
        self.programme_id = self.tiers.programme_id
        self._rule = ApprovalRule(execute=self._execute, check=self._check)
        approvals.register(RANK_ACTION, self._rule)
        # Asked before a rank change by hand is requested or executed: raises when one may
        # not be made now (the broker's: while the day-close policy has closes to decide).
        self.guard: Callable[[str], None] | None = None

    # -- the programme --------------------------------------------------------------------------
    def record_programme(self, actor: Actor, programme: TierProgramme, *, reason: str) -> None:
        """Record the next version of the IB rank programme (``tier.programme`` and
        ``ib_rank.programme``); every tier must have a rank, every threshold an IB measure."""
        if not isinstance(actor, Actor):
            raise ValidationError("a programme version needs an actor")
        self.access.require(actor, RANK_PROGRAMME_PERMISSION)
        if not isinstance(programme, TierProgramme):
            raise ValidationError("a programme version is a TierProgramme")
        if any(t.name not in self.ranks for t in programme.tiers):
            raise ValidationError("every tier of the IB programme needs a rank")
        if not set(programme.measures) <= IB_MEASURES:
            raise ValidationError("an IB is measured on lots, volume, trades, net deposits "
                                  "or active clients")  # fmt: skip
        self.tiers.record_programme(actor, programme, reason=reason)

    # -- deciding -------------------------------------------------------------------------------
    def evaluate(
        self, ib_id: str, at: datetime, *, uow: UnitOfWork | None = None
    ) -> list[DomainEvent]:
        """Decide the IB's tier after activity at ``at`` (the tier engine's rules) and the rank
        it gives, recorded together (into ``uow`` when given); returns the tier decisions."""
        ib = check_id(ib_id, "an IB id")
        self._not_ahead(at, uow)
        return self._deciding(uow, [ib], lambda u: self.tiers.evaluate(ib, at, uow=u))

    def close_period(
        self, at: datetime, ib_ids: Iterable[str] | None = None, *, uow: UnitOfWork | None = None
    ) -> int:
        """Close the period that ended last by ``at`` for ``ib_ids`` (default: every IB
        registered by then); idempotent per IB and period."""
        if isinstance(ib_ids, str) or not isinstance(ib_ids, Iterable | None):
            raise ValidationError("close_period takes a collection of IB ids")
        self._not_ahead(at, uow)
        ibs = self._ibs(to_utc(at, "at")) if ib_ids is None else list(ib_ids)
        return self._deciding(uow, ibs, lambda u: self.tiers.close_period(at, ibs, uow=u))

    def _not_ahead(self, at: datetime, uow: UnitOfWork | None) -> None:
        # A caller's own decision (no policy unit) is dated no later than the clock's now.
        if uow is None and to_utc(at, "at") > self.clock.now():
            raise DecisionInTheFutureError()

    def _deciding(
        self,
        uow: UnitOfWork | None,
        ib_ids: list[str],
        decide: Callable[[UnitOfWork], T],
    ) -> T:
        """Run the tier engine into a unit of work and stage the ranks its decisions give in
        the same one (committed here when no ``uow`` is given)."""
        if uow is not None:
            decided = decide(uow)
            self._ranks_of_decisions(uow, ib_ids)
            return decided
        with UnitOfWork(self.repository, EventMetadata(_SYSTEM, reason="IB rank rules")) as own:
            decided = decide(own)
            self._ranks_of_decisions(own, ib_ids)
            if own.staged:
                own.commit()
        return decided

    def on_trading_day_closed(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """A policy handler for ``TradingDayClosed``: evaluate every IB at the last instant of
        the closed trading day, then close the period if the day ended one (decided by the
        day and the tree as recorded by the event, not by when the policy runs). In a broker,
        pin the activity read model to the event's position first (``PinnedActivity.at``)."""
        day = getattr(recorded.event, "trading_day", None)
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ValidationError("IB ranks react to a closed trading day")
        close = self.calendar.session(day)[1]
        try:
            self.tiers.programme_at(close - _TICK)
        except NotFoundError:
            return  # no programme in force yet: nothing to decide
        activity = self.activity
        with activity.batch():
            activity.recorded_by = to_utc(recorded.recorded_at, "recorded_at")
            try:
                ibs = self._ibs(close - _TICK)
                for ib_id in ibs:
                    self.tiers.evaluate(ib_id, close - _TICK, uow=uow)
                self.tiers.close_period(close, ibs, uow=uow)
            finally:
                activity.recorded_by = None
        self._ranks_of_decisions(uow, ibs)

    def on_late_deals(
        self, recorded: RecordedEvent[Any], uow: UnitOfWork, days: Mapping[str, Iterable[date]]
    ) -> None:
        """A policy handler's part for deals of closed trading days (``days``: per client,
        the trading days of its deals in ``recorded``, every one closed already): each IB up
        the client's chain then (the tree as recorded by the event) is reconsidered on that
        period's figures (:meth:`Tiers.reconsider`: an upgrade from when the deal is seen,
        never a downgrade), its rank recorded with the decision."""
        activity = self.activity
        with activity.batch():
            activity.recorded_by = to_utc(recorded.recorded_at, "recorded_at")
            try:
                tree = activity.tree()
                asked: dict[str, set[date]] = {}
                for client_id, client_days in days.items():
                    for day in client_days:
                        at = self.calendar.session(day)[1] - _TICK
                        introducer = tree.ib_of(client_id, at)
                        for ib_id in tree.chain(introducer, at) if introducer else ():
                            asked.setdefault(ib_id, set()).add(day)
                for ib_id in sorted(asked):
                    for day in sorted(asked[ib_id]):
                        self._reconsider(uow, ib_id, day, recorded.recorded_at)
            finally:
                activity.recorded_by = None

    def _reconsider(self, uow: UnitOfWork, ib_id: str, day: date, at: datetime) -> None:
        self._deciding(uow, [ib_id], lambda u: self.tiers.reconsider(ib_id, day, at, uow=u))

    def _ibs(self, at: datetime) -> list[str]:
        return sorted(self.activity.tree().ranks(at))

    # -- from decisions to ranks ----------------------------------------------------------------
    def _ranks_of_decisions(self, uow: UnitOfWork, ib_ids: Iterable[str]) -> None:
        """Each decision of this programme staged in ``uow`` becomes the IB's rank change
        (staged with it), or an ``ib_rank`` approval request; a decision that changes nothing
        (the IB holds that rank then), or that a later rank set by hand has overtaken, gives
        nothing."""
        changes: list[IbRankChanged] = []
        held: dict[str, tuple[datetime, int]] = {}  # what this unit already gave each IB
        for ib_id in ib_ids:
            stream = ClientTier.stream_id_for(f"{self.programme_id}/{ib_id}")
            for version, event in uow.staged_on(stream):
                if not isinstance(event, TierChanged):
                    continue
                rank = self.ranks.get(event.to_tier)
                if rank is None:
                    raise ValidationError("the IB programme decided a tier without a rank")
                if not self._due(ib_id, rank, event.effective_at, held.get(ib_id)):
                    continue
                held[ib_id] = (event.effective_at, rank)
                if not self.approval:
                    changes.append(IbRankChanged(ib_id, rank, event.effective_at))
                    continue
                self._request(uow, ib_id, rank, event, f"{stream}/{version}")
        self.network.stage_ranks(uow, changes)

    def _request(
        self, uow: UnitOfWork, ib_id: str, rank: int, event: TierChanged, decision: str
    ) -> None:
        params = {
            "ib_id": ib_id,
            "rank": str(rank),
            "effective_at": event.effective_at.isoformat(),
            "reason": f"{self.programme_id} {event.rule} {event.period}: {event.to_tier}",
            "decision": decision,
        }
        request_id = self.approvals.ids()
        # Recorded with the decision: the request and the policy's position commit together.
        uow.record(
            ApprovalRequest.blank(request_id),
            ApprovalRequested(
                request_id, RANK_ACTION, ib_id, None, _SYSTEM, self._rule.required,
                self._rule.steps, tuple(sorted(params.items())),
            ),
        )  # fmt: skip

    def _due(
        self, ib_id: str, rank: int, at: datetime, staged: tuple[datetime, int] | None
    ) -> bool:
        if staged is not None:  # a decision of this unit came first
            return at >= staged[0] and rank != staged[1]
        tree = self.network.tree()
        try:
            tree.check_rank(ib_id, rank, at)
        except (NotFoundError, ValidationError):
            return False  # not registered then, or a later rank set by hand stands
        return tree.rank(ib_id, at) != rank

    # -- ranks by hand, and approvals -----------------------------------------------------------
    def request_rank(
        self, maker: Actor, ib_id: str, rank: int, at: datetime, *, reason: str
    ) -> str:
        """Ask for ``rank`` for the IB from ``at`` (``ib_rank.request``); it is recorded once a
        second person approves (``ib_rank.approve``), from ``at`` or the approval, whichever is
        later. Returns the approval request id."""
        params = {
            "ib_id": check_id(ib_id, "an IB id"),
            "rank": str(check_rank(rank)),
            "effective_at": to_utc(at, "at").isoformat(),
            "reason": checked_text(reason, "reason", 500),
        }
        return self.approvals.request(maker, RANK_ACTION, params["ib_id"], params)

    def _when(self, params: Mapping[str, str]) -> datetime:
        return max(datetime.fromisoformat(params["effective_at"]), self.clock.now())

    def _check(self, params: Mapping[str, str]) -> None:
        if self.guard is not None:
            self.guard(params["ib_id"])
        decision = params.get("decision")
        if decision is not None:  # made by the rules: only their latest decision may stand
            stream, _, version = decision.rpartition("/")
            decided = self.repository.codec.registry.name_of(TierChanged)
            later = self.repository.store.read_stream(stream, after_version=int(version))
            if any(row.event_type == decided for row in later):
                raise ValidationError(
                    "the rules decided this IB's tier again since this request: approve the "
                    "later request (reject this one)"
                )
        self.network.tree().check_rank(params["ib_id"], int(params["rank"]), self._when(params))

    def _execute(self, params: Mapping[str, str], key: str) -> str:
        change = IbRankChanged(params["ib_id"], int(params["rank"]), self._when(params))
        reason = f"{params['reason']} (approved, {key})"
        with UnitOfWork(self.repository, EventMetadata(_SYSTEM, reason=reason)) as uow:
            self.network.stage(uow, change)
            uow.commit(idempotency_key=key)
        return f"ib_rank:{params['ib_id']}:{params['rank']}"

    def requests(self, *, open_only: bool = True) -> list[ApprovalRequest]:
        """The ``ib_rank`` approval requests, oldest first (by default those still waiting for
        a decision or an execution); read from the log."""
        name = self.repository.codec.registry.name_of(ApprovalRequested)
        found: list[ApprovalRequest] = []
        position, done = 0, False
        while not done:
            rows, position, done = read_types(self.repository.store, position, frozenset({name}),
                                              500)  # fmt: skip
            for row in rows:
                event = self.repository.codec.decode(row).event
                if isinstance(event, ApprovalRequested) and event.action == RANK_ACTION:
                    request = self.approvals.get(event.request_id)
                    if not open_only or request.status in _OPEN:
                        found.append(request)
        return found

    # -- answers --------------------------------------------------------------------------------
    def rank_of(self, ib_id: str, at: datetime) -> int:
        """The IB's rank at ``at`` as the network records it (what rank slices pay on)."""
        return self.network.rank_of(ib_id, at)

    def standing(self, ib_id: str, at: datetime) -> Standing:
        """The IB's tier at ``at`` under the programme (its rank: ``ranks[standing.tier]``)."""
        return self.tiers.standing(check_id(ib_id, "an IB id"), at)

    def history(self, ib_id: str) -> list[RecordedEvent[DomainEvent]]:
        """Every decision on the IB (rule, period, figures), oldest first."""
        return self.tiers.history(check_id(ib_id, "an IB id"))
