"""Segmentation: RFM scores (recency, frequency, monetary) from the client activity read model,
with cut points, segment rules and value tiers as data, answered per client or for all at once.

A read, not a decision: nothing is recorded, so a new :class:`RfmModel` applies at once to every
client. Each :class:`RfmScore` carries the figures it was scored on.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Protocol

import attrs

from fxcrm_core.activity import ClientActivity, Figure, Measure
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import ArgumentTypeError, ValidationError
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.kernel.trading_day import TradingCalendar

__all__ = [
    "DEFAULT_SEGMENTS",
    "DEFAULT_VALUE_TIERS",
    "ActivityFigures",
    "CutPoints",
    "Recency",
    "RfmModel",
    "RfmScore",
    "ScoreRule",
    "Segment",
    "Segmentation",
]


class ActivityFigures(Protocol):
    """What segmentation and churn warnings read of the client activity read model
    (:class:`~fxcrm_core.activity.ClientActivity` answers it; tests may use a fake)."""

    def clients(self) -> list[str]: ...
    def window(
        self, client_id: str, measure: Measure, *, days: int, at: datetime
    ) -> Figure: ...  # fmt: skip
    def last_trade(self, client_id: str) -> datetime | None: ...
    def last_deposit(self, client_id: str) -> datetime | None: ...


#: (client_id, measure, days, at) -> the window's value
ValueReader = Callable[[str, Measure, int, datetime], Decimal]


def _reader(activity: ActivityFigures) -> ValueReader:
    """How a scan reads a window's value: the read model's own fast path (no Figure built),
    or ``window(...).value`` of any other source."""
    if isinstance(activity, ClientActivity):
        return activity._value

    def value(client_id: str, measure: Measure, days: int, at: datetime) -> Decimal:
        return activity.window(client_id, measure, days=days, at=at).value

    return value


def _held(activity: ActivityFigures) -> contextlib.AbstractContextManager[None]:
    """A scan of many clients: the read model caught up once for all of them (any other
    source: as it is)."""
    if isinstance(activity, ClientActivity):
        return activity._batch()
    return contextlib.nullcontext()


class Segment(enum.Enum):
    """Where a client stands by its RFM scores."""

    LOYAL = "loyal"  # recent, frequent
    POTENTIAL = "potential"  # recent, not frequent yet
    AT_RISK = "at_risk"  # slipping away
    LOST = "lost"  # gone quiet for longer than the last recency cut


class Recency(enum.Enum):
    """Which activity recency counts from."""

    TRADE = "trade"
    DEPOSIT = "deposit"
    EITHER = "either"  # the later of the two


def _cuts(value: Iterable[int | Decimal]) -> tuple[Decimal, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError("cut points are four ascending numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | Decimal):
            raise ValidationError("cut points are whole numbers or Decimals")
        d = Decimal(v)
        if not d.is_finite():
            raise ValidationError("cut points are finite")
        out.append(d)
    if len(out) != 4 or any(a >= b for a, b in itertools.pairwise(out)):
        raise ValidationError("cut points are four strictly ascending numbers (scores 1 to 5)")
    return tuple(out)


@attrs.frozen
class CutPoints:
    """Four ascending cut points giving scores 1 to 5. For frequency and monetary, a value at
    or above the k-th cut scores k + 1; for recency (trading days since), a value at or below
    the k-th cut scores 5 - (k - 1), anything longer than the last scores 1."""

    points: tuple[Decimal, ...] = attrs.field(converter=_cuts)

    def score_up(self, value: Decimal) -> int:
        return 1 + sum(1 for p in self.points if value >= p)

    def score_down(self, value: Decimal | None) -> int:
        if value is None:
            return 1
        return 1 + sum(1 for p in self.points if value <= p)


def _range(value: tuple[int, int]) -> tuple[int, int]:
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(type(v) is int for v in value)
        or not 1 <= value[0] <= value[1] <= 5
    ):
        raise ValidationError("a score range is (low, high) with 1 <= low <= high <= 5")
    return value


@attrs.frozen
class ScoreRule:
    """Scores in these ranges (both ends included) give ``outcome`` (a Segment or a value tier
    name). Rules are tried in order; the first that matches wins."""

    outcome: str
    recency: tuple[int, int] = attrs.field(default=(1, 5), converter=_range)
    frequency: tuple[int, int] = attrs.field(default=(1, 5), converter=_range)
    monetary: tuple[int, int] = attrs.field(default=(1, 5), converter=_range)

    def __attrs_post_init__(self) -> None:
        checked_text(self.outcome, "a rule's outcome", 64)

    def matches(self, r: int, f: int, m: int) -> bool:
        return (
            self.recency[0] <= r <= self.recency[1]
            and self.frequency[0] <= f <= self.frequency[1]
            and self.monetary[0] <= m <= self.monetary[1]
        )


DEFAULT_SEGMENTS = (
    ScoreRule(Segment.LOYAL.value, recency=(4, 5), frequency=(4, 5)),
    ScoreRule(Segment.POTENTIAL.value, recency=(4, 5), frequency=(1, 3)),
    ScoreRule(Segment.AT_RISK.value, recency=(2, 3)),
    ScoreRule(Segment.LOST.value, recency=(1, 1)),
)
DEFAULT_VALUE_TIERS = (
    ScoreRule("high", monetary=(5, 5)),
    ScoreRule("medium", monetary=(3, 4)),
    ScoreRule("low"),
)

_SCORES = tuple((r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6))


def _rules(value: Iterable[ScoreRule]) -> tuple[ScoreRule, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError("rules are a collection of ScoreRule values")
    rules = tuple(value)
    if not rules or not all(isinstance(r, ScoreRule) for r in rules):
        raise ValidationError("rules are a collection of ScoreRule values")
    if not all(any(rule.matches(*s) for rule in rules) for s in _SCORES):
        raise ValidationError("the rules must give an outcome for every score (1 to 5 each)")
    return rules


def _segment_rules(value: Iterable[ScoreRule]) -> tuple[ScoreRule, ...]:
    rules = _rules(value)
    names = {s.value for s in Segment}
    if any(r.outcome not in names for r in rules):
        raise ValidationError("a segment rule's outcome is a Segment's value")
    return rules


_FREQUENCY = frozenset({Measure.ACTIVE_DAYS, Measure.TRADES, Measure.LOTS})
_MONETARY = frozenset(
    {Measure.NET_DEPOSITS, Measure.DEPOSITS, Measure.CONTRIBUTION, Measure.REVENUE,
     Measure.VOLUME_USD}
)  # fmt: skip


@attrs.frozen
class RfmModel:
    """How RFM is scored, as data.

    - **Recency**: trading days from the last trade, deposit or either (``recency_from``) to the
      asked day (0: the same trading day); scored down by ``recency_cuts``; none ever: 1.
    - **Frequency**: ``frequency`` (active days, trades or lots) over the ``window_days``
      trading days ending with the asked day, scored up by ``frequency_cuts``.
    - **Monetary**: ``monetary`` (net deposits, deposits, contribution, revenue or volume, USD)
      over the same window, scored up by ``monetary_cuts``.
    - ``segments`` and ``value_tiers``: ordered :class:`ScoreRule` lists covering every score.
    """

    window_days: int = 90
    recency_from: Recency = Recency.EITHER
    recency_cuts: CutPoints = CutPoints((5, 20, 45, 90))
    frequency: Measure = Measure.ACTIVE_DAYS
    frequency_cuts: CutPoints = CutPoints((1, 5, 15, 40))
    monetary: Measure = Measure.NET_DEPOSITS
    monetary_cuts: CutPoints = CutPoints((1, 1000, 5000, 25000))
    segments: tuple[ScoreRule, ...] = attrs.field(
        default=DEFAULT_SEGMENTS, converter=_segment_rules
    )
    value_tiers: tuple[ScoreRule, ...] = attrs.field(default=DEFAULT_VALUE_TIERS, converter=_rules)

    def __attrs_post_init__(self) -> None:
        if type(self.window_days) is not int or not 1 <= self.window_days <= 400:
            raise ValidationError("an RFM window is 1 to 400 trading days")
        if not isinstance(self.recency_from, Recency):
            raise ValidationError("recency_from is a Recency")
        for cuts in (self.recency_cuts, self.frequency_cuts, self.monetary_cuts):
            if not isinstance(cuts, CutPoints):
                raise ValidationError("cut points are CutPoints")
        if self.recency_cuts.points[0] < 0 or self.recency_cuts.points[-1] > 2000:
            raise ValidationError("recency cut points are 0 to 2,000 trading days")
        if self.frequency not in _FREQUENCY:
            raise ValidationError("frequency is active days, trades or lots")
        if self.monetary not in _MONETARY:
            raise ValidationError("monetary is a USD measure of money or volume")

    def outcome(self, rules: tuple[ScoreRule, ...], r: int, f: int, m: int) -> str:
        for rule in rules:
            if rule.matches(r, f, m):
                return rule.outcome
        raise AssertionError("rules cover every score")  # checked when the model is built


@attrs.frozen
class RfmScore:
    """A client's RFM scores at ``at`` with the figures used: ``days_since`` (trading days since
    ``last_activity``, counted up to one past the last recency cut; None: never),
    ``frequency_value`` and ``monetary_value`` over the window
    from ``window_start`` to ``window_end`` (trading days)."""

    client_id: str
    at: datetime
    recency: int
    frequency: int
    monetary: int
    segment: Segment
    value_tier: str
    last_activity: datetime | None
    days_since: int | None
    frequency_value: Decimal
    monetary_value: Decimal
    window_start: date
    window_end: date

    @property
    def code(self) -> str:
        """The scores as the usual three digits (``"545"``)."""
        return f"{self.recency}{self.frequency}{self.monetary}"


class _Days:
    """Trading days counted back from one asked day, computed once for a batch of clients."""

    def __init__(self, calendar: TradingCalendar, at: datetime, window: int, reach: int) -> None:
        self.last = calendar.trading_day(at)
        back: dict[date, int] = {}
        day, seen = self.last, 0
        first = self.last
        # Walk back far enough for the window and one past the last recency cut.
        self.reach = max(window - 1, reach)
        while seen <= self.reach:
            if calendar.is_trading_day(day):
                back[day] = seen
                if seen < window:
                    first = day
                seen += 1
            day -= timedelta(days=1)
        self.first = first
        self.back = back

    def since(self, when: datetime | None, calendar: TradingCalendar) -> int | None:
        """Trading days from ``when`` to the asked day, counted up to the reach (one past the
        last recency cut, or the window; a longer silence reads as the reach and scores 1)."""
        if when is None:
            return None
        day = calendar.trading_day(when)  # always a day with a session
        if day >= self.last:
            return 0
        return self.back.get(day, self.reach)


class Segmentation:
    """RFM scores, segments and value tiers of clients under one :class:`RfmModel`."""

    def __init__(
        self,
        activity: ActivityFigures,
        model: RfmModel | None = None,
        *,
        calendar: TradingCalendar | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not all(callable(getattr(activity, n, None)) for n in ("window", "clients")):
            raise ArgumentTypeError("segmentation reads an activity read model")
        if model is not None and not isinstance(model, RfmModel):
            raise ArgumentTypeError("the model is an RfmModel")
        self.activity = activity
        self.model = model or RfmModel()
        self.calendar = calendar or TradingCalendar()
        self.clock = clock or SystemClock()

    def _days(self, at: datetime) -> _Days:
        reach = int(self.model.recency_cuts.points[-1]) + 1
        return _Days(self.calendar, at, self.model.window_days, reach)

    def score(self, client_id: str, at: datetime | None = None) -> RfmScore:
        """The client's scores at ``at`` (default: now); a client with no activity scores 111."""
        when = self.clock.now() if at is None else to_utc(at, "at")
        return self._score(checked_text(client_id, "client id", 100), when, self._days(when))

    def score_all(self, at: datetime | None = None) -> list[RfmScore]:
        """Every client with any activity, in id order, scored at ``at`` (default: now)."""
        when = self.clock.now() if at is None else to_utc(at, "at")
        days = self._days(when)
        with _held(self.activity):
            return [self._score(c, when, days) for c in self.activity.clients()]

    def segments(self, at: datetime | None = None) -> dict[Segment, list[str]]:
        """The clients of each segment at ``at``, in id order."""
        out: dict[Segment, list[str]] = {s: [] for s in Segment}
        for score in self.score_all(at):
            out[score.segment].append(score.client_id)
        return out

    def _last(self, client_id: str, at: datetime) -> datetime | None:
        m = self.model.recency_from
        times = []
        if m is not Recency.DEPOSIT:
            times.append(self.activity.last_trade(client_id))
        if m is not Recency.TRADE:
            times.append(self.activity.last_deposit(client_id))
        known = [t for t in times if t is not None]
        # Activity after `at` counts as of `at` (recency 0): the read model knows the latest only.
        return min(max(known), at) if known else None

    def _score(self, client_id: str, at: datetime, days: _Days) -> RfmScore:
        model = self.model
        last = self._last(client_id, at)
        since = days.since(last, self.calendar)
        value = _reader(self.activity)
        freq = value(client_id, model.frequency, model.window_days, at)
        money = value(client_id, model.monetary, model.window_days, at)
        r = model.recency_cuts.score_down(None if since is None else Decimal(since))
        f = model.frequency_cuts.score_up(freq)
        m = model.monetary_cuts.score_up(money)
        return RfmScore(
            client_id, at, r, f, m,
            Segment(model.outcome(model.segments, r, f, m)),
            model.outcome(model.value_tiers, r, f, m),
            last, since, freq, money, days.first, days.last,
        )  # fmt: skip
