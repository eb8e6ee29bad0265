"""Loyalty KPIs per calendar month or quarter of the forex trading day: churn rate, tier
distribution, points flows with redemption and participation rates, and client lifetime value
(overall and per acquisition cohort), read from the log.

:class:`LoyaltyKpis` is a memory read model of the loyalty events (tier decisions and
overrides, points, churn warnings), rebuilt from position 0 in each process and caught up before
every answer; the activity figures come from the client activity read model (the
:class:`~fxcrm_core.loyalty.segments.ActivityFigures` port). A second process answers the same.
"""

from __future__ import annotations

import decimal
import threading
from collections.abc import Collection, Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal

import attrs

from fxcrm_core.activity import Measure, Period
from fxcrm_core.events import DomainEvent, ProjectionRunner, RecordedEvent
from fxcrm_core.kernel.errors import ArgumentTypeError, ValidationError
from fxcrm_core.kernel.trading_day import TradingCalendar
from fxcrm_core.loyalty.churn import ChurnWarningCleared, ChurnWarningRaised
from fxcrm_core.loyalty.events import (
    TierChanged,
    TierOverrideEnded,
    TierOverrideSet,
    TierProgrammeRecorded,
)
from fxcrm_core.loyalty.points_account import (
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    PointsRepriced,
    PointsReversed,
)
from fxcrm_core.loyalty.programme import CalendarMonth, Quarter, TierProgramme
from fxcrm_core.loyalty.segments import ActivityFigures

__all__ = [
    "CohortValue",
    "KpiReport",
    "LifetimeValue",
    "LoyaltyKpis",
    "PointsFlows",
    "TierDistribution",
]

_ZERO = Decimal(0)
_TICK = timedelta(microseconds=1)
_RATIO = Decimal("0.0001")
_CENT = Decimal("0.01")
# Ratios and averages are worked out exactly enough in a context of their own (never the
# caller's) and rounded once, half-even, in the answer.
_DIVISION = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)
# Points flows kept per client and trading day, in this order.
_EARNED, _REDEEMED, _EXPIRED, _REVERSED, _ADJUSTED = range(5)


# -- the answers --------------------------------------------------------------------------------


@attrs.frozen
class TierDistribution:
    """Clients per tier of one programme at the period's end, lowest tier first (every tier of
    the version in force then, zero counts included); ``clients`` is their sum."""

    programme: str
    version: int
    counts: tuple[tuple[str, int], ...]
    clients: int


@attrs.frozen
class PointsFlows:
    """Points moved in the period: ``earned`` (awards and re-pricing up), ``redeemed``,
    ``expired``, ``reversed`` (taken back by a deleted deal, a chargeback or re-pricing down)
    and ``adjusted`` (manual adjustments, signed)."""

    earned: Decimal
    redeemed: Decimal
    expired: Decimal
    reversed: Decimal
    adjusted: Decimal


@attrs.frozen
class CohortValue:
    """Lifetime value of the clients whose first activity was in ``cohort`` (``YYYY-MM``), up to
    the period's end: how many, their total, average and median contribution (USD)."""

    cohort: str
    clients: int
    total: Decimal
    average: Decimal
    median: Decimal


@attrs.frozen
class LifetimeValue:
    """Cumulative contribution (revenue less rebates, USD) up to the period's end: the average
    and median over the clients active in the period (None when none was), and per cohort."""

    clients: int
    average: Decimal | None
    median: Decimal | None
    cohorts: tuple[CohortValue, ...]


@attrs.frozen
class KpiReport:
    """The loyalty KPIs of one period (``label``: ``2026-07`` or ``2026-Q3``), whose trading days
    run from ``first_day`` to ``last_day``, from the rollover ``start`` to the rollover ``end``
    (UTC, 17:00 New York). Rates are Decimals quantized to 4 places (half-even), None when their
    base is zero."""

    label: str
    start: datetime
    end: datetime
    first_day: date
    last_day: date
    active_clients: int
    previous_active_clients: int
    churned_clients: int
    churn_rate: Decimal | None
    warnings_raised: int
    warnings_cleared: int
    tiers: tuple[TierDistribution, ...]
    points: PointsFlows
    redemption_rate: Decimal | None
    participants: int
    participation_rate: Decimal | None
    lifetime_value: LifetimeValue


# -- the read model -----------------------------------------------------------------------------


@attrs.frozen
class _Span:
    label: str
    start: datetime
    end: datetime
    first: date
    last: date
    days: int  # trading days in it

    @property
    def at(self) -> datetime:
        """An instant inside the span's last trading day."""
        return self.end - _TICK


def _check_year(year: int) -> None:
    # A period's neighbours (the one before, the trading day after) must be dates too.
    if not 1900 <= year <= 9000:
        raise ValidationError("a KPI period's year is from 1900 to 9000")


class LoyaltyKpis:
    """Loyalty KPIs per calendar month or quarter (of the trading day, 17:00 New York).

    * **Active** in a period: a trade deal or money deposited (net of chargebacks, above zero)
      on one of its trading days, as the activity read model counts them.
    * **Churn rate**: of the clients active in the previous period, the share not active in this
      one. Warnings raised and cleared count the churn warnings whose instant (``at``) falls in
      the period.
    * **Tier distribution** per programme at the period's ``end`` (the rollover), as
      ``Tiers.standing`` answers then: an override in force counts as its tier, else the last
      decision effective by then; a tier name the version in force drops counts as the base
      tier. A client with no decision effective by then counts in the base tier only if it had
      activity (a trade or a deposit) from ``since`` to the period's end.
    * **Points** earned (``PointsEarned`` by ``earned_at``, re-pricing up by its recording),
      redeemed and reversed (by recording), expired and adjusted (by their ``at``), per
      trading day. Redemption rate = redeemed / earned (None when nothing was earned; above 1
      when older points are spent). Participation = clients active in the period who earned or
      redeemed in it / clients active.
    * **Lifetime value**: a client's contribution (``Measure.CONTRIBUTION``: revenue less
      rebates, USD) from ``since`` to the period's end, one window, rounded to the cent by the
      activity model. Average and median (of an even count, the mean of the two middle
      values) are rounded to the cent, half-even; the cohort is the month of the client's first
      active trading day from ``since`` on, and a cohort's figures cover all its clients.

    ``since`` is the first month counted for lifetime value and cohorts (activity before it is
    outside them); ``calendar`` must be the activity model's. ``programmes`` names the client
    tier programmes to report (None: every programme in the log; an IB rank programme, whose
    decisions are the same events about IBs, should be left out).
    """

    name = "loyalty-kpis"
    event_types: frozenset[str] | None = frozenset(
        {
            "TierProgrammeRecorded",
            "TierChanged",
            "TierOverrideSet",
            "TierOverrideEnded",
            "PointsEarned",
            "PointsRepriced",
            "PointsReversed",
            "PointsRedeemed",
            "PointsExpired",
            "PointsAdjusted",
            "ChurnWarningRaised",
            "ChurnWarningCleared",
        }
    )

    def __init__(
        self,
        projections: ProjectionRunner,
        activity: ActivityFigures,
        *,
        since: date,
        calendar: TradingCalendar | None = None,
        programmes: Collection[str] | None = None,
    ) -> None:
        if not isinstance(projections, ProjectionRunner):
            raise ArgumentTypeError("LoyaltyKpis reads through a ProjectionRunner")
        if not isinstance(since, date) or isinstance(since, datetime):
            raise ArgumentTypeError("since is a date (the first month counted)")
        if calendar is not None and not isinstance(calendar, TradingCalendar):
            raise ArgumentTypeError("calendar is a TradingCalendar")
        self.projections = projections
        self.activity = activity
        self.calendar = calendar or TradingCalendar()
        self.since = since.replace(day=1)
        if programmes is not None and (
            isinstance(programmes, str) or not all(isinstance(p, str) for p in programmes)
        ):
            raise ArgumentTypeError("programmes is a collection of programme ids")
        self.programmes = None if programmes is None else frozenset(programmes)
        self._lock = threading.RLock()
        self.reset()

    # -- the projection -------------------------------------------------------------------------
    def reset(self) -> None:
        self._programmes: dict[str, list[TierProgramme]] = {}
        # (programme, client) -> [(effective_at, tier)] and request id -> (tier, starts, expires)
        self._changes: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
        self._overrides: dict[tuple[str, str], dict[str, tuple[str, datetime, datetime]]] = {}
        self._points: dict[date, dict[str, list[Decimal]]] = {}
        self._warnings: dict[date, list[int]] = {}  # day -> [raised, cleared]

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        at = recorded.recorded_at
        match event:
            case PointsEarned():
                self._flow(event.client_id, event.earned_at, _EARNED, event.points)
            case PointsRedeemed():
                self._flow(event.client_id, at, _REDEEMED, event.points)
            case PointsExpired():
                self._flow(event.client_id, event.at, _EXPIRED, _taken(event.taken))
            case PointsReversed():
                self._flow(event.client_id, at, _REVERSED, _taken(event.taken))
            case PointsRepriced():
                self._flow(event.client_id, at, _EARNED, event.added)
                self._flow(event.client_id, at, _REVERSED, _taken(event.taken))
            case PointsAdjusted():
                change = event.points if event.points > 0 else -_taken(event.taken)
                self._flow(event.client_id, event.at, _ADJUSTED, change)
            case ChurnWarningRaised() | ChurnWarningCleared():
                day = self.calendar.trading_day(event.at)
                counts = self._warnings.setdefault(day, [0, 0])
                counts[0 if isinstance(event, ChurnWarningRaised) else 1] += 1
            case TierProgrammeRecorded():
                programme = event.programme
                if self._reported(programme.programme_id):
                    self._programmes.setdefault(programme.programme_id, []).append(programme)
            case TierChanged():
                key = (_programme_of(recorded.stream_id), event.client_id)
                if not self._reported(key[0]):
                    return
                changes = self._changes.setdefault(key, [])
                changes.append((event.effective_at, event.to_tier))
                changes.sort(key=lambda c: c[0])  # stable: the later decision wins a tie
            case TierOverrideSet():
                key = (_programme_of(recorded.stream_id), event.client_id)
                if not self._reported(key[0]):
                    return
                self._overrides.setdefault(key, {})[event.request_id] = (
                    event.tier, event.starts_at, event.expires_at
                )  # fmt: skip
            case TierOverrideEnded():
                key = (_programme_of(recorded.stream_id), event.client_id)
                found = self._overrides.get(key, {}).get(event.request_id)
                if found is not None:
                    tier, starts, expires = found
                    self._overrides[key][event.request_id] = (tier, starts, min(expires, event.at))

    def _reported(self, programme: str) -> bool:
        return self.programmes is None or programme in self.programmes

    def _flow(self, client: str, at: datetime, kind: int, points: Decimal) -> None:
        if not points:
            return
        day = self.calendar.trading_day(at)
        row = self._points.setdefault(day, {}).setdefault(client, [_ZERO] * 5)
        row[kind] += points

    # -- answers --------------------------------------------------------------------------------
    def month(self, year: int, month: int) -> KpiReport:
        """The KPIs of a calendar month's trading days."""
        if type(year) is not int or type(month) is not int or not 1 <= month <= 12:
            raise ValidationError("a month is a year and a month number from 1 to 12")
        _check_year(year)
        return self.report(self._inside(date(year, month, 1)), Period.MONTH)

    def quarter(self, year: int, quarter: int) -> KpiReport:
        """The KPIs of a calendar quarter's trading days."""
        if type(year) is not int or type(quarter) is not int or not 1 <= quarter <= 4:
            raise ValidationError("a quarter is a year and a quarter number from 1 to 4")
        _check_year(year)
        return self.report(self._inside(date(year, 3 * quarter - 2, 1)), Period.QUARTER)

    def report(self, at: datetime, period: Period = Period.MONTH) -> KpiReport:
        """The KPIs of the month (or quarter) holding the trading day of ``at``; deterministic
        in what the log holds (a period still running counts what is recorded so far)."""
        if not isinstance(period, Period):
            raise ArgumentTypeError("period is a Period")
        if not isinstance(at, datetime):
            raise ArgumentTypeError("at is an aware datetime")
        _check_year(at.year)
        span = self._span(at, period)
        if span.last < self.since:
            raise ValidationError("that period ends before the first month the KPIs count")
        previous = self._span(span.start - _TICK, period)
        cumulative = self._days(self._inside(self.since), span.last)
        months = self._months(span.last)
        with self._lock:
            self.projections.catch_up(self)
            active: set[str] = set()
            before: set[str] = set()
            seen: dict[str, str] = {}  # client with activity by the end -> its cohort
            for client in self.activity.clients():
                if self._active(client, span):
                    active.add(client)
                if self._active(client, previous):
                    before.add(client)
                cohort = self._cohort(client, months)
                if cohort is not None:
                    seen[client] = cohort
            values = {
                c: self.activity.window(c, Measure.CONTRIBUTION, days=cumulative, at=span.at).value
                for c in seen
            }
            flows, earners = self._points_in(span)
            warned = [0, 0]
            for day, counts in self._warnings.items():
                if span.first <= day <= span.last:
                    warned = [warned[0] + counts[0], warned[1] + counts[1]]
            churned = len(before - active)
            participants = len(active & earners)
            return KpiReport(
                span.label, span.start, span.end, span.first, span.last,
                active_clients=len(active),
                previous_active_clients=len(before),
                churned_clients=churned,
                churn_rate=_ratio(Decimal(churned), Decimal(len(before))),
                warnings_raised=warned[0],
                warnings_cleared=warned[1],
                tiers=self._tiers(span.end, set(seen)),
                points=flows,
                redemption_rate=_ratio(flows.redeemed, flows.earned),
                participants=participants,
                participation_rate=_ratio(Decimal(participants), Decimal(len(active))),
                lifetime_value=_lifetime(values, active, seen),
            )  # fmt: skip

    # -- the parts ------------------------------------------------------------------------------
    def _inside(self, day: date) -> datetime:
        """An instant whose trading day is the first trading day on or after ``day``."""
        while not self.calendar.is_trading_day(day):
            day += timedelta(days=1)
        return self.calendar.session(day)[1] - _TICK

    def _days(self, first: datetime, last: date) -> int:
        day, count = self.calendar.trading_day(first), 0
        while day <= last:
            count += self.calendar.is_trading_day(day)
            day += timedelta(days=1)
        return count

    def _span(self, at: datetime, period: Period) -> _Span:
        window = CalendarMonth() if period is Period.MONTH else Quarter()
        found = window.period(self.calendar, at)
        first = self.calendar.trading_day(found.start)
        last = self.calendar.trading_day(found.end - _TICK)
        return _Span(found.label, found.start, found.end, first, last,
                     self._days(found.start, last))  # fmt: skip

    def _active(self, client: str, span: _Span) -> bool:
        window = self.activity.window
        return (
            window(client, Measure.TRADES, days=span.days, at=span.at).value > 0
            or window(client, Measure.DEPOSITS, days=span.days, at=span.at).value > 0
        )

    def _months(self, last: date) -> list[_Span]:
        """The calendar months from ``since`` to the one holding ``last``."""
        months = [self._span(self._inside(self.since), Period.MONTH)]
        while months[-1].last < last:
            months.append(self._span(months[-1].end + _TICK, Period.MONTH))
        return months

    def _cohort(self, client: str, months: list[_Span]) -> str | None:
        """The month of the client's first active trading day (None: none in ``months``)."""
        for month in months:
            if self._active(client, month):
                return month.label
        return None

    def _points_in(self, span: _Span) -> tuple[PointsFlows, set[str]]:
        totals = [_ZERO] * 5
        earners: set[str] = set()
        for day, rows in self._points.items():
            if not span.first <= day <= span.last:
                continue
            for client, row in rows.items():
                totals = [t + r for t, r in zip(totals, row, strict=True)]
                if row[_EARNED] > 0 or row[_REDEEMED] > 0:
                    earners.add(client)
        return PointsFlows(*totals), earners

    def _tiers(self, end: datetime, seen: set[str]) -> tuple[TierDistribution, ...]:
        out = []
        for programme_id in sorted(self._programmes):
            versions = [p for p in self._programmes[programme_id] if p.effective_from <= end]
            if not versions:
                continue
            programme = versions[-1]
            names = [t.name for t in programme.tiers]
            counts = dict.fromkeys(names, 0)
            counted: set[str] = set()
            keys = {k for k in (*self._changes, *self._overrides) if k[0] == programme_id}
            for _, client in keys:
                tier = self._tier_at(programme_id, client, end)
                if tier is None:
                    continue
                counts[tier if tier in counts else names[0]] += 1
                counted.add(client)
            counts[names[0]] += len(seen - counted)
            out.append(
                TierDistribution(programme_id, programme.version, tuple(counts.items()),
                                 sum(counts.values()))
            )  # fmt: skip
        return tuple(out)

    def _tier_at(self, programme: str, client: str, at: datetime) -> str | None:
        key = (programme, client)
        for tier, starts, expires in self._overrides.get(key, {}).values():
            if starts <= at < expires:
                return tier
        found = None
        for effective, tier in self._changes.get(key, ()):
            if effective > at:
                break
            found = tier
        return found


def _programme_of(stream_id: str) -> str:
    """``clienttier-<programme>/<client>``: the programme (its id holds no ``/``)."""
    return stream_id.partition("-")[2].partition("/")[0]


def _taken(taken: Iterable[tuple[str, Decimal]]) -> Decimal:
    return sum((points for _, points in taken), _ZERO)


def _ratio(part: Decimal, whole: Decimal) -> Decimal | None:
    if not whole:
        return None
    return _DIVISION.divide(part, whole).quantize(_RATIO, rounding=decimal.ROUND_HALF_EVEN)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=decimal.ROUND_HALF_EVEN)


def _average(values: list[Decimal]) -> Decimal:
    return _cents(_DIVISION.divide(sum(values, _ZERO), Decimal(len(values))))


def _median(values: list[Decimal]) -> Decimal:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return _cents(ordered[middle])
    return _cents(_DIVISION.divide(ordered[middle - 1] + ordered[middle], Decimal(2)))


def _lifetime(values: dict[str, Decimal], active: set[str], seen: dict[str, str]) -> LifetimeValue:
    mine = [values[c] for c in sorted(active) if c in values]
    by_cohort: dict[str, list[Decimal]] = {}
    for client, cohort in seen.items():
        by_cohort.setdefault(cohort, []).append(values[client])
    cohorts = tuple(
        CohortValue(cohort, len(v), _cents(sum(v, _ZERO)), _average(v), _median(v))
        for cohort, v in sorted(by_cohort.items())
    )
    if not mine:
        return LifetimeValue(0, None, None, cohorts)
    return LifetimeValue(len(mine), _average(mine), _median(mine), cohorts)
