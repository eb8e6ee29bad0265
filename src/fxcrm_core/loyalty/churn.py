"""Churn warnings: a client whose trading falls well below its own baseline, whose deposits stop
after a regular habit, or whose balance drains gets a warning with the reasons and the figures.

The judgement is a port (:class:`ChurnModel`) a host may replace; :class:`BaselineChurnModel`
is the default, rules as data. :class:`ChurnWatch` records warnings as events on the client's
``churnwarning-<client>`` stream (at most one per client and period, cleared when the client
recovers), so other policies can react to them and a replay answers the same.
"""

from __future__ import annotations

import enum
import functools
import threading
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, Self

import attrs

from fxcrm_core.activity import Measure, Period
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import ArgumentTypeError, ConcurrencyError, ValidationError
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.kernel.trading_day import TradingCalendar
from fxcrm_core.loyalty.segments import ActivityFigures, _held, _reader

__all__ = [
    "CHURN_EVENTS",
    "BaselineChurnModel",
    "ChurnAssessment",
    "ChurnModel",
    "ChurnReason",
    "ChurnSignal",
    "ChurnState",
    "ChurnWarningCleared",
    "ChurnWarningRaised",
    "ChurnWarnings",
    "ChurnWatch",
]

_TICK = timedelta(microseconds=1)
_SYSTEM = "system:churn-watch"
_ZERO = Decimal(0)


class ChurnSignal(enum.Enum):
    """The default model's reasons (a host model may give its own codes)."""

    FREQUENCY_DROP = "frequency_drop"
    VOLUME_DROP = "volume_drop"
    DEPOSITS_STOPPED = "deposits_stopped"
    BALANCE_DRAINED = "balance_drained"


def _figures(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    out = tuple(value)
    if not all(
        isinstance(f, tuple) and len(f) == 2 and all(isinstance(x, str) for x in f) for f in out
    ):
        raise ValidationError("a reason's figures are (name, value) pairs of text")
    return out


def _code(value: object) -> str:
    return checked_text(value, "a reason code", 64)


@attrs.frozen
class ChurnReason:
    """One reason for a warning: its code and the figures that show it, as (name, value)."""

    code: str = attrs.field(converter=_code)
    figures: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_figures)


@attrs.frozen
class ChurnAssessment:
    """A model's verdict that ``client_id`` is fading at ``at``, with at least one reason."""

    client_id: str
    at: datetime
    reasons: tuple[ChurnReason, ...]
    model: str

    def __attrs_post_init__(self) -> None:
        if not self.reasons or not all(isinstance(r, ChurnReason) for r in self.reasons):
            raise ValidationError("an assessment has at least one ChurnReason")
        checked_text(self.model, "a model name", 64)


class ChurnModel(Protocol):
    """The port a host plugs its own churn model into: None for a client that is not fading."""

    @property
    def name(self) -> str: ...

    def assess(
        self, client_id: str, at: datetime, activity: ActivityFigures
    ) -> ChurnAssessment | None: ...  # fmt: skip


def _share(value: object, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not 0 < value < 1:
        raise ValidationError(f"{what} is a Decimal share between 0 and 1")
    return value


def _days(value: object, what: str) -> int:
    if type(value) is not int or not 1 <= value <= 400:
        raise ValidationError(f"{what} is 1 to 400 trading days")
    return value


@functools.lru_cache(maxsize=1024)
def _back(calendar: TradingCalendar, day: date, n: int) -> date:
    """The trading day ``n`` trading days before ``day``."""
    seen = 0
    while seen < n:
        day -= timedelta(days=1)
        if calendar.is_trading_day(day):
            seen += 1
    return day


@functools.lru_cache(maxsize=1024)
def _in(calendar: TradingCalendar, day: date) -> datetime:
    """An instant inside the trading day ``day`` (its last microsecond)."""
    return calendar.session(day)[1] - _TICK


def _rate(value: Decimal, days: int) -> Decimal:
    return value / days


@attrs.frozen
class BaselineChurnModel:
    """The default churn model: the client's recent window against its own baseline.

    - **frequency**: active days per trading day over the last ``recent_days`` below
      ``fall_below`` of the rate over the ``baseline_days`` before them (a baseline of at least
      ``min_active_days`` active days);
    - **volume**: USD notional per trading day, likewise (the same habit, and a baseline of at
      least ``min_volume_usd``);
    - **deposits stopped**: a deposit in each of the ``deposit_cycles`` cycles of
      ``deposit_cycle_days`` trading days before the current cycle, and none in it;
    - **balance drained**: the wallet money (net deposits over the ``balance_days`` before the
      recent window, at least ``min_balance_usd``) fell by ``drained_share`` or more in it,
      and the client no longer trades as before (no trade in the recent window, or a
      frequency drop): a steady trader taking profits out is not leaving.
    """

    name: str = "baseline"
    recent_days: int = attrs.field(default=10, validator=lambda _, __, v: _days(v, "recent"))
    baseline_days: int = attrs.field(default=60, validator=lambda _, __, v: _days(v, "baseline"))
    fall_below: Decimal = attrs.field(
        default=Decimal("0.5"), validator=lambda _, __, v: _share(v, "fall_below")
    )
    min_active_days: int = attrs.field(
        default=5, validator=lambda _, __, v: _days(v, "min_active_days")
    )
    min_volume_usd: Decimal = Decimal(100_000)
    deposit_cycle_days: int = attrs.field(
        default=20, validator=lambda _, __, v: _days(v, "a deposit cycle")
    )
    deposit_cycles: int = attrs.field(
        default=3, validator=lambda _, __, v: _days(v, "deposit_cycles")
    )
    balance_days: int = attrs.field(
        default=250, validator=lambda _, __, v: _days(v, "balance_days")
    )
    min_balance_usd: Decimal = Decimal(100)
    drained_share: Decimal = attrs.field(
        default=Decimal("0.8"), validator=lambda _, __, v: _share(v, "drained_share")
    )
    calendar: TradingCalendar = attrs.field(factory=TradingCalendar)

    def __attrs_post_init__(self) -> None:
        checked_text(self.name, "a model name", 64)
        for value in (self.min_volume_usd, self.min_balance_usd):
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValidationError("a minimum is a Decimal of zero or more")
        if self.min_active_days > self.baseline_days:
            raise ValidationError("min_active_days is at most the baseline's length")

    def assess(
        self, client_id: str, at: datetime, activity: ActivityFigures
    ) -> ChurnAssessment | None:
        cal = self.calendar
        today = cal.trading_day(at)
        recent_first = _back(cal, today, self.recent_days - 1)
        before = _in(cal, _back(cal, recent_first, 1))  # the baseline ends the day before

        value = _reader(activity)

        def fig(measure: Measure, days: int, when: datetime) -> Decimal:
            return value(client_id, measure, days, when)

        reasons: list[ChurnReason] = []
        # Only a habit has a baseline: enough active days before the recent window.
        habit = fig(Measure.ACTIVE_DAYS, self.baseline_days, before)
        for signal, measure, minimum in (
            (ChurnSignal.FREQUENCY_DROP, Measure.ACTIVE_DAYS, Decimal(self.min_active_days)),
            (ChurnSignal.VOLUME_DROP, Measure.VOLUME_USD, self.min_volume_usd),
        ):
            if habit < self.min_active_days:
                break
            base = habit if measure is Measure.ACTIVE_DAYS else fig(
                measure, self.baseline_days, before)  # fmt: skip
            if base < minimum or base <= 0:
                continue
            recent = fig(measure, self.recent_days, at)
            ratio = _rate(recent, self.recent_days) / _rate(base, self.baseline_days)
            if ratio < self.fall_below:
                name = measure.value
                reasons.append(ChurnReason(signal.value, (
                    (f"recent_{name}", str(recent)), ("recent_days", str(self.recent_days)),
                    (f"baseline_{name}", str(base)), ("baseline_days", str(self.baseline_days)),
                    ("share_of_baseline", str(ratio.quantize(Decimal("0.0001")))),
                    ("threshold", str(self.fall_below)),
                )))  # fmt: skip
        cycle = self.deposit_cycle_days
        current = fig(Measure.DEPOSITS, cycle, at)
        if current <= 0:
            ends = [_back(cal, today, cycle * k) for k in range(1, self.deposit_cycles + 1)]
            cycles = [fig(Measure.DEPOSITS, cycle, _in(cal, end)) for end in ends]
            if all(c > 0 for c in cycles):
                reasons.append(ChurnReason(ChurnSignal.DEPOSITS_STOPPED.value, (
                    ("deposits_this_cycle", str(current)), ("cycle_days", str(cycle)),
                    *((f"deposits_cycle_minus_{k}", str(c)) for k, c in enumerate(cycles, 1)),
                )))  # fmt: skip
        held = fig(Measure.NET_DEPOSITS, self.balance_days, before)
        # Money taken out by a client still trading as before is profit taken, not a client
        # leaving: the drain counts when the trading stopped or fell too.
        trading = fig(Measure.ACTIVE_DAYS, self.recent_days, at) > 0 and not any(
            r.code == ChurnSignal.FREQUENCY_DROP.value for r in reasons
        )
        if held >= self.min_balance_usd and held > 0 and not trading:
            flow = fig(Measure.NET_DEPOSITS, self.recent_days, at)
            left = held + flow
            if left <= held * (1 - self.drained_share):
                reasons.append(ChurnReason(ChurnSignal.BALANCE_DRAINED.value, (
                    ("balance_before_usd", str(held)), ("net_flow_recent_usd", str(flow)),
                    ("balance_now_usd", str(left)), ("drained_share", str(self.drained_share)),
                )))  # fmt: skip
        if not reasons:
            return None
        return ChurnAssessment(client_id, at, tuple(reasons), self.name)


# -- events and the client's stream -------------------------------------------------------------

#: (reason code, figure name, value) for each figure a warning names.
Figures = tuple[tuple[str, str, str], ...]


@attrs.frozen
class ChurnWarningRaised(DomainEvent):
    """``client_id`` is fading at ``at`` (the ``period`` it was warned in), for ``reasons``."""

    client_id: str
    at: datetime
    period: str
    model: str
    reasons: tuple[str, ...]
    figures: Figures


@attrs.frozen
class ChurnWarningCleared(DomainEvent):
    """The warned client no longer fades at ``at``."""

    client_id: str
    at: datetime
    period: str


CHURN_EVENTS: tuple[type[DomainEvent], ...] = (ChurnWarningRaised, ChurnWarningCleared)


@attrs.frozen(kw_only=True)
class ChurnState(Aggregate):
    """One client's warnings (id: the client id): whether one is open, the period of the last
    one raised, and the latest instant decided (decisions go forward in time)."""

    category = "churnwarning"
    open: bool = False
    warned_in: str | None = None
    last_at: datetime | None = None

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, ChurnWarningRaised):
            return self.evolve(open=True, warned_in=event.period, last_at=event.at)
        if isinstance(event, ChurnWarningCleared):
            return self.evolve(open=False, last_at=event.at)
        raise ValidationError(f"ChurnState cannot apply {type(event).__name__}")


class ChurnWarnings:
    """A memory read model of every client's warnings (open or not, the period of the last
    raise, the last instant decided), rebuilt from the log in each process: it lets
    :meth:`ChurnWatch.evaluate_all` skip loading the streams of clients with nothing to decide.
    A decision to record still loads the client's stream (the append checks its version)."""

    name = "churn-warnings"
    event_types: frozenset[str] | None = frozenset({"ChurnWarningRaised", "ChurnWarningCleared"})

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.states: dict[str, ChurnState] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, ChurnWarningRaised | ChurnWarningCleared):
            key = event.client_id
            self.states[key] = self.states.get(key, ChurnState.blank(key)).apply(event)


def _period_label(period: Period, day: date) -> str:
    if period is Period.MONTH:
        return f"{day.year:04d}-{day.month:02d}"
    return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"


class ChurnWatch:
    """Evaluates clients with a :class:`ChurnModel` and records warnings: a warning is raised
    when the model finds the client fading and none is open, at most once per client and
    ``period`` (the trading day's calendar month by default); it is cleared when the model no
    longer does. Re-evaluating records nothing new."""

    def __init__(
        self,
        repository: Repository,
        activity: ActivityFigures,
        model: ChurnModel | None = None,
        *,
        calendar: TradingCalendar | None = None,
        clock: Clock | None = None,
        period: Period = Period.MONTH,
        batch: int = 500,
        projections: ProjectionRunner | None = None,
    ) -> None:
        if not isinstance(repository, Repository):
            raise ArgumentTypeError("the churn watch needs a repository")
        if not all(callable(getattr(activity, n, None)) for n in ("window", "clients")):
            raise ArgumentTypeError("the churn watch reads an activity read model")
        self.calendar = calendar or TradingCalendar()
        if model is None:
            model = BaselineChurnModel(calendar=self.calendar)
        if not callable(getattr(model, "assess", None)):
            raise ArgumentTypeError("a churn model has assess(client_id, at, activity)")
        if not isinstance(period, Period):
            raise ArgumentTypeError("period is a Period")
        if type(batch) is not int or batch < 1:
            raise ValidationError("batch is a positive number of clients")
        self.repository = repository
        self.activity = activity
        self.model = model
        self.clock = clock or SystemClock()
        self.period = period
        self.batch = batch
        if projections is not None and not isinstance(projections, ProjectionRunner):
            raise ArgumentTypeError("projections is the broker's ProjectionRunner")
        self.projections = projections
        self._warnings = ChurnWarnings()
        self._lock = threading.RLock()

    # -- reading --------------------------------------------------------------------------------
    def state(self, client_id: str) -> ChurnState:
        key = checked_text(client_id, "client id", 100)
        return self.repository.load(ChurnState, key) or ChurnState.blank(key)

    def warning(self, client_id: str) -> ChurnWarningRaised | None:
        """The client's open warning (None: none open)."""
        for recorded in reversed(self.history(client_id)):
            event = recorded.event
            if isinstance(event, ChurnWarningRaised):
                return event
            if isinstance(event, ChurnWarningCleared):
                return None
        return None

    def history(self, client_id: str) -> list[RecordedEvent[DomainEvent]]:
        """The client's warnings and clearances, oldest first, from the log."""
        stream_id = ChurnState.stream_id_for(checked_text(client_id, "client id", 100))
        decode = self.repository.codec.decode
        return [decode(row) for row in self.repository.store.read_stream(stream_id)]

    # -- deciding -------------------------------------------------------------------------------
    def _assess(self, client_id: str, at: datetime) -> ChurnAssessment | None:
        found = self.model.assess(client_id, at, self.activity)
        if found is not None and (
            not isinstance(found, ChurnAssessment) or found.client_id != client_id
        ):
            raise ValidationError("a churn model answers a ChurnAssessment of that client")
        return found

    def _decide(
        self, state: ChurnState, client_id: str, at: datetime, found: ChurnAssessment | None
    ) -> list[DomainEvent]:
        label = _period_label(self.period, self.calendar.trading_day(at))
        if found is not None:
            if state.open or state.warned_in == label:
                return []
            figures = tuple((r.code, n, v) for r in found.reasons for n, v in r.figures)
            codes = tuple(r.code for r in found.reasons)
            return [ChurnWarningRaised(client_id, at, label, found.model, codes, figures)]
        if state.open:
            return [ChurnWarningCleared(client_id, at, label)]
        return []

    def evaluate(
        self, client_id: str, at: datetime, *, uow: UnitOfWork | None = None
    ) -> list[DomainEvent]:
        """Assess the client at ``at`` and record a warning or its clearance; returns what was
        recorded. With ``uow`` (a policy's unit of work) the events go into it, uncommitted."""
        return self._evaluate(checked_text(client_id, "client id", 100), to_utc(at, "at"), uow)

    def _evaluate(
        self, key: str, when: datetime, uow: UnitOfWork | None, known: ChurnState | None = None
    ) -> list[DomainEvent]:
        with self._lock:
            found: ChurnAssessment | None = None
            if known is not None:
                if known.last_at is not None and when < known.last_at:
                    return []
                found = self._assess(key, when)
                if not self._decide(known, key, when, found):
                    return []  # nothing to decide by the read model: the stream is not loaded
            state = (uow or self.repository).load(ChurnState, key) or ChurnState.blank(key)
            if state.last_at is not None and when < state.last_at:
                return []  # decisions go forward in time
            if known is None:
                found = self._assess(key, when)
            events = self._decide(state, key, when, found)
            if events:
                if uow is not None:
                    uow.record(state, *events)
                else:
                    with UnitOfWork(self.repository, _metadata()) as own:
                        own.record(state, *events)
                        own.commit()
            return events

    def evaluate_all(self, at: datetime, *, uow: UnitOfWork | None = None) -> int:
        """Evaluate every client with activity at ``at``; returns how many clients got an event.
        Without ``uow`` the decisions are committed in batches; a batch another process wrote
        first is redone client by client, skipping those it already decided."""
        when = to_utc(at, "at")
        clients = self.activity.clients()
        states: dict[str, ChurnState] | None = None
        if self.projections is not None:
            self.projections.catch_up(self._warnings)
            states = self._warnings.states

        def known(client_id: str) -> ChurnState | None:
            if states is None:
                return None
            return states.get(client_id) or ChurnState.blank(client_id)

        if uow is not None:
            with _held(self.activity):
                return sum(1 for c in clients if self._evaluate(c, when, uow, known(c)))
        count = 0
        for i in range(0, len(clients), self.batch):
            chunk = clients[i : i + self.batch]
            try:
                with UnitOfWork(self.repository, _metadata()) as own:
                    # The read model caught up once per batch; the commit (and whatever its
                    # listeners run inline) comes after it.
                    with _held(self.activity):
                        decided = sum(1 for c in chunk if self._evaluate(c, when, own, known(c)))
                    if decided:
                        own.commit()
                count += decided
            except ConcurrencyError:
                for client_id in chunk:
                    try:
                        count += bool(self.evaluate(client_id, when))
                    except ConcurrencyError:
                        continue  # decided by the other process just now
        return count

    def on_trading_day_closed(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """A policy handler for ``TradingDayClosed``: evaluate every client at the last instant
        of the closed trading day (decided by the day, not by when the policy runs)."""
        day = getattr(recorded.event, "trading_day", None)
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ValidationError("the churn watch reacts to a closed trading day")
        self.evaluate_all(_in(self.calendar, day), uow=uow)


def _metadata() -> EventMetadata:
    return EventMetadata(_SYSTEM, reason="churn watch")
