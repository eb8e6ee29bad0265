"""Tier programmes as data: tiers with thresholds on activity measures over a window aligned to
the forex trading day, upgrade and downgrade rules, a combination rule and benefits per tier.

A :class:`TierProgramme` is a frozen, validated value; :func:`programme_to_data` and
:func:`programme_from_data` are its stored form (a programme version is recorded as an event).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from fxcrm_core.kernel._decimal import to_decimal
from fxcrm_core.kernel.errors import (
    AmountOutOfRangeError,
    CodecError,
    FxCrmError,
    ValidationError,
)
from fxcrm_core.kernel.money import Money
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.kernel.trading_day import TradingCalendar

__all__ = [
    "MAX_CASHBACK_PER_LOT",
    "MAX_LEVERAGE_CAP",
    "MAX_PLACES",
    "MAX_POINTS_MULTIPLIER",
    "MAX_THRESHOLD",
    "Benefits",
    "CalendarMonth",
    "Combination",
    "DowngradeRule",
    "Measure",
    "Period",
    "Quarter",
    "RollingTradingDays",
    "Threshold",
    "Tier",
    "TierProgramme",
    "UpgradeTiming",
    "Window",
    "programme_from_data",
    "programme_to_data",
]


class Measure(enum.Enum):
    """An activity measure a threshold is set on; the activity source answers it per window."""

    LOTS = "lots"
    VOLUME_USD = "volume_usd"
    NET_DEPOSITS = "net_deposits"
    ACTIVE_DAYS = "active_days"
    EQUITY = "equity"  # a level, not a sum: the source answers the equity at the window's end
    TRADES = "trades"
    # An IB's measure (see ``loyalty.ib_ranks``): its downline clients with a trade in the span.
    ACTIVE_CLIENTS = "active_clients"


class UpgradeTiming(enum.Enum):
    AT_ONCE = "at_once"
    NEXT_TRADING_DAY = "next_trading_day"


class Combination(enum.Enum):
    """How the tier a client qualifies for follows from the periods' qualifications."""

    CURRENT_PERIOD = "current_period"
    LOWER_OF_LAST_TWO = "lower_of_last_two"  # an upgrade needs two good periods
    HIGHER_OF_LAST_TWO = "higher_of_last_two"  # a downgrade needs two weak periods


def _decimal(value: object, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValidationError(f"{what} is a finite Decimal")
    return value


#: The limits a programme is held to when recorded (:meth:`TierProgramme.check_limits`), so
#: whatever a tier gives stays computable exactly by the points, cashback and commission
#: engines: every number has at most MAX_PLACES decimal places ...
MAX_PLACES = 18
#: ... a points multiplier is 0 to this ...
MAX_POINTS_MULTIPLIER = Decimal(1000)
#: ... a cashback per lot 0 to this many units of its currency (ample even for IDR or VND) ...
MAX_CASHBACK_PER_LOT = Decimal(10) ** 9
#: ... a leverage cap 1 to this (1:10,000) ...
MAX_LEVERAGE_CAP = 10_000
#: ... and a threshold this at most, in absolute value (a net-deposits minimum may be negative).
MAX_THRESHOLD = Decimal(10) ** 15
_MAX_EXPONENT = 15


def _bounded(value: Decimal, what: str, low: Decimal, high: Decimal) -> None:
    """Refuse ``value`` unless it lies from ``low`` to ``high`` with at most MAX_PLACES decimal
    places and no exponent past the bounds (``0E+999999999`` is refused too)."""
    exponent = value.as_tuple().exponent
    if (
        not isinstance(exponent, int)
        or not -MAX_PLACES <= exponent <= _MAX_EXPONENT
        or not low <= value <= high
    ):
        raise AmountOutOfRangeError(
            f"{what} is from {low} to {high}, with at most {MAX_PLACES} decimal places"
        )


@attrs.frozen
class Threshold:
    """At least ``minimum`` of ``measure`` over the programme's window."""

    measure: Measure = attrs.field(validator=attrs.validators.instance_of(Measure))
    minimum: Decimal = attrs.field()

    @minimum.validator
    def _check(self, _: object, value: object) -> None:
        _decimal(value, "a threshold's minimum")

    def met(self, figures: Mapping[Measure, Decimal]) -> bool:
        return figures[self.measure] >= self.minimum


@attrs.frozen
class Benefits:
    """What a tier gives, read by the other contexts through ``Tiers.benefits``."""

    cashback_per_lot: Money | None = None
    points_multiplier: Decimal = Decimal(1)
    leverage_cap: int | None = None
    commission_discount: Decimal = Decimal(0)  # a share of the commission, 0 to 1

    def __attrs_post_init__(self) -> None:
        if self.cashback_per_lot is not None and (
            not isinstance(self.cashback_per_lot, Money) or self.cashback_per_lot.amount < 0
        ):
            raise ValidationError("cashback per lot is Money of zero or more")
        if _decimal(self.points_multiplier, "a points multiplier") < 0:
            raise ValidationError("a points multiplier is zero or more")
        if self.leverage_cap is not None and (
            type(self.leverage_cap) is not int or self.leverage_cap < 1
        ):
            raise ValidationError("a leverage cap is a whole number, at least 1")
        if not 0 <= _decimal(self.commission_discount, "a commission discount") <= 1:
            raise ValidationError("a commission discount is a share from 0 to 1")

    def check_limits(self) -> None:
        """Refuse (AmountOutOfRangeError) a benefit past the limits a recorded programme is
        held to: cashback per lot up to MAX_CASHBACK_PER_LOT, points multiplier up to
        MAX_POINTS_MULTIPLIER, leverage cap up to MAX_LEVERAGE_CAP, at most MAX_PLACES
        decimal places."""
        if self.cashback_per_lot is not None:
            _bounded(self.cashback_per_lot.amount, "cashback per lot", Decimal(0),
                     MAX_CASHBACK_PER_LOT)  # fmt: skip
        _bounded(self.points_multiplier, "a points multiplier", Decimal(0), MAX_POINTS_MULTIPLIER)
        _bounded(self.commission_discount, "a commission discount", Decimal(0), Decimal(1))
        if self.leverage_cap is not None and self.leverage_cap > MAX_LEVERAGE_CAP:
            raise AmountOutOfRangeError(f"a leverage cap is at most {MAX_LEVERAGE_CAP}")


def short_name(value: object, what: str) -> str:
    """A name in a loyalty rule (a tier, a symbol group): printable text of 1 to 64 characters."""
    if not isinstance(value, str) or not value or not value.isprintable() or len(value) > 64:
        raise ValidationError(f"{what} is a short printable name")
    return value


_name = short_name


def _tier_name(value: object) -> str:
    return _name(value, "a tier name")


def _thresholds(value: Iterable[Threshold]) -> tuple[Threshold, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError("thresholds are a collection of Threshold values")
    return tuple(value)


@attrs.frozen
class Tier:
    """A named tier: reached when every ``all_of`` threshold is met and, if ``any_of`` is not
    empty, at least one of those."""

    name: str = attrs.field(converter=_tier_name)
    all_of: tuple[Threshold, ...] = attrs.field(default=(), converter=_thresholds)
    any_of: tuple[Threshold, ...] = attrs.field(default=(), converter=_thresholds)
    benefits: Benefits = attrs.field(factory=Benefits)

    def __attrs_post_init__(self) -> None:
        if not all(isinstance(t, Threshold) for t in (*self.all_of, *self.any_of)):
            raise ValidationError("a tier's thresholds are Threshold values")
        if not isinstance(self.benefits, Benefits):
            raise ValidationError("a tier's benefits are a Benefits value")

    @functools.cached_property
    def measures(self) -> frozenset[Measure]:
        return frozenset(t.measure for t in (*self.all_of, *self.any_of))

    def reached(self, figures: Mapping[Measure, Decimal]) -> bool:
        if not all(t.met(figures) for t in self.all_of):
            return False
        return not self.any_of or any(t.met(figures) for t in self.any_of)


# -- windows and periods ------------------------------------------------------------------------


@attrs.frozen
class Period:
    """One period of a window: the trading days it holds run from ``start`` (the rollover that
    ended the previous period) to ``end`` (the rollover that ends its last trading day), UTC."""

    label: str
    start: datetime
    end: datetime


def _close(cal: TradingCalendar, day: date) -> datetime:
    return cal.session(day)[1]


def _last_trading_day(cal: TradingCalendar, day: date) -> date:
    """``day`` if it has a session, else the last one before it."""
    for _ in range(366):
        if cal.is_trading_day(day):
            return day
        day -= timedelta(days=1)
    raise ValidationError("the calendar has no trading day in a year")


def _months_period(cal: TradingCalendar, label: str, first: date, after: date) -> Period:
    """The period of the trading days dated from ``first`` to the day before ``after``."""
    start = _close(cal, _last_trading_day(cal, first - timedelta(days=1)))
    end = _close(cal, _last_trading_day(cal, after - timedelta(days=1)))
    return Period(label, start, end)


def _month_start(year: int, month: int) -> date:
    return date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


@attrs.frozen
class CalendarMonth:
    """The trading days dated in one calendar month (a Saturday deal counts for Monday)."""

    def period(self, cal: TradingCalendar, at: datetime) -> Period:
        day = cal.trading_day(at)
        return _months_period(
            cal,
            f"{day.year:04d}-{day.month:02d}",
            date(day.year, day.month, 1),
            _month_start(day.year, day.month + 1),
        )

    def measured_from(self, cal: TradingCalendar, period: Period) -> datetime:
        return period.start


@attrs.frozen
class Quarter:
    """The trading days dated in one calendar quarter."""

    def period(self, cal: TradingCalendar, at: datetime) -> Period:
        day = cal.trading_day(at)
        q = (day.month - 1) // 3
        return _months_period(
            cal,
            f"{day.year:04d}-Q{q + 1}",
            date(day.year, 3 * q + 1, 1),
            _month_start(day.year, 3 * q + 4),
        )

    def measured_from(self, cal: TradingCalendar, period: Period) -> datetime:
        return period.start


@attrs.frozen
class RollingTradingDays:
    """The last ``days`` trading days; its period is one trading day (a tier may fall at each
    day's close), its measurements span the ``days`` trading days ending with that day."""

    days: int = attrs.field()

    @days.validator
    def _check(self, _: object, value: object) -> None:
        if type(value) is not int or not 1 <= value <= 400:
            raise ValidationError("a rolling window is 1 to 400 trading days")

    def period(self, cal: TradingCalendar, at: datetime) -> Period:
        day = cal.trading_day(at)
        before = _last_trading_day(cal, day - timedelta(days=1))
        return Period(day.isoformat(), _close(cal, before), _close(cal, day))

    def measured_from(self, cal: TradingCalendar, period: Period) -> datetime:
        day = cal.trading_day(period.start)
        for _ in range(self.days):
            day = _last_trading_day(cal, day - timedelta(days=1))
        return _close(cal, day)


Window = CalendarMonth | Quarter | RollingTradingDays


def previous_period(window: Window, cal: TradingCalendar, period: Period) -> Period:
    return window.period(cal, period.start - timedelta(microseconds=1))


# -- the programme ------------------------------------------------------------------------------


@attrs.frozen
class DowngradeRule:
    """Downgrades happen only at a period's end; with ``grace_trading_days`` the client keeps
    the tier that many trading days more, and keeps it for good by qualifying again meanwhile."""

    grace_trading_days: int = 0

    def __attrs_post_init__(self) -> None:
        if type(self.grace_trading_days) is not int or not 0 <= self.grace_trading_days <= 400:
            raise ValidationError("a grace period is 0 to 400 trading days")

    def grace_until(self, cal: TradingCalendar, period_end: datetime) -> datetime:
        """The rollover that ends the grace, from the period end."""
        day = cal.trading_day(period_end)
        for _ in range(self.grace_trading_days - 1):
            day = cal.trading_day(_close(cal, day))
        return _close(cal, day) if self.grace_trading_days else period_end


_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def programme_id(value: object) -> str:
    """A programme id: 1 to 40 letters, digits, ``_`` or ``-`` (it is part of stream ids)."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValidationError("a programme id is 1 to 40 letters, digits, _ or -")
    return value


def _effective_from(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise ValidationError("effective_from is an aware datetime")
    return to_utc(value, "effective_from")


def _tiers(value: Iterable[Tier]) -> tuple[Tier, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError("a programme's tiers are a collection of Tier values")
    tiers = tuple(value)
    if not tiers or not all(isinstance(t, Tier) for t in tiers):
        raise ValidationError("a programme has at least one tier (Tier values, lowest first)")
    if tiers[0].all_of or tiers[0].any_of:
        raise ValidationError("a programme's first tier is its base: no thresholds")
    if len({t.name for t in tiers}) != len(tiers):
        raise ValidationError("a programme's tier names are unique")
    return tiers


@attrs.frozen
class TierProgramme:
    """One version of a tier programme, in force from ``effective_from``: tiers lowest first
    (the first is the base tier, reached by everyone)."""

    programme_id: str = attrs.field(converter=programme_id)
    version: int = attrs.field()
    effective_from: datetime = attrs.field(converter=_effective_from)
    tiers: tuple[Tier, ...] = attrs.field(converter=_tiers)
    window: Window = attrs.field(factory=CalendarMonth)
    upgrade: UpgradeTiming = UpgradeTiming.AT_ONCE
    downgrade: DowngradeRule = attrs.field(factory=DowngradeRule)
    combination: Combination = Combination.CURRENT_PERIOD

    def __attrs_post_init__(self) -> None:
        if type(self.version) is not int or self.version < 1:
            raise ValidationError("a programme version is a whole number, at least 1")
        if not isinstance(self.window, CalendarMonth | Quarter | RollingTradingDays):
            raise ValidationError("a window is CalendarMonth, Quarter or RollingTradingDays")
        if not isinstance(self.upgrade, UpgradeTiming):
            raise ValidationError("an upgrade timing is an UpgradeTiming")
        if not isinstance(self.downgrade, DowngradeRule):
            raise ValidationError("a downgrade rule is a DowngradeRule")
        if not isinstance(self.combination, Combination):
            raise ValidationError("a combination is a Combination")

    def check_limits(self) -> None:
        """Refuse (AmountOutOfRangeError) a programme with a number past the SDK's limits: a
        threshold past MAX_THRESHOLD, a benefit past :meth:`Benefits.check_limits`, any number
        with more than MAX_PLACES decimal places. :meth:`Tiers.record_programme` checks this:
        a recorded multiplier of ``1E+999999999`` would stop the points policy at the first
        deal. (A value past the limits is still a valid value: a log recorded under wider
        limits keeps decoding.)"""
        for tier in self.tiers:
            for threshold in (*tier.all_of, *tier.any_of):
                _bounded(threshold.minimum, "a threshold", -MAX_THRESHOLD, MAX_THRESHOLD)
            tier.benefits.check_limits()

    @functools.cached_property
    def measures(self) -> tuple[Measure, ...]:
        """The measures any tier names, in :class:`Measure` order (worked out once)."""
        used = frozenset().union(*(t.measures for t in self.tiers))
        return tuple(m for m in Measure if m in used)

    def rank(self, name: str | None) -> int:
        """A tier's place (0: the base); a name this version does not hold ranks below all."""
        for i, tier in enumerate(self.tiers):
            if tier.name == name:
                return i
        return -1

    def qualified(self, figures: Mapping[Measure, Decimal]) -> int:
        """The highest tier the figures reach."""
        best = 0
        for i, tier in enumerate(self.tiers):
            if tier.reached(figures):
                best = i
        return best

    def combine(self, previous: int, current: int) -> int:
        if self.combination is Combination.LOWER_OF_LAST_TWO:
            return min(previous, current)
        if self.combination is Combination.HIGHER_OF_LAST_TWO:
            return max(previous, current)
        return current

    def benefits_of(self, name: str | None) -> Benefits:
        rank = self.rank(name)
        return self.tiers[max(rank, 0)].benefits


# -- the stored form ----------------------------------------------------------------------------


def _thresholds_data(thresholds: tuple[Threshold, ...]) -> list[list[str]]:
    return [[t.measure.value, str(t.minimum)] for t in thresholds]


def _window_data(window: Window) -> dict[str, Any]:
    if isinstance(window, RollingTradingDays):
        return {"kind": "rolling", "days": window.days}
    return {"kind": "quarter" if isinstance(window, Quarter) else "month"}


def programme_to_data(programme: TierProgramme) -> dict[str, Any]:
    """The JSON-ready form of one programme version."""
    return {
        "programme_id": programme.programme_id,
        "version": programme.version,
        "effective_from": programme.effective_from.isoformat(),
        "tiers": [
            {
                "name": t.name,
                "all_of": _thresholds_data(t.all_of),
                "any_of": _thresholds_data(t.any_of),
                "cashback_per_lot": None
                if t.benefits.cashback_per_lot is None
                else str(t.benefits.cashback_per_lot),
                "points_multiplier": str(t.benefits.points_multiplier),
                "leverage_cap": t.benefits.leverage_cap,
                "commission_discount": str(t.benefits.commission_discount),
            }
            for t in programme.tiers
        ],
        "window": _window_data(programme.window),
        "upgrade": programme.upgrade.value,
        "grace_trading_days": programme.downgrade.grace_trading_days,
        "combination": programme.combination.value,
    }


def _number_of(value: object, what: str) -> Decimal:
    """A stored number: decimal text or a whole number, never a float (it would turn 1.1 into
    a long binary fraction) nor anything else."""
    if type(value) is not str and type(value) is not int:
        raise CodecError(f"{what} is stored as decimal text")
    return to_decimal(value, what)


def _thresholds_of(data: Any) -> tuple[Threshold, ...]:
    if not isinstance(data, list):
        raise CodecError("stored thresholds are a list")
    return tuple(Threshold(Measure(m), _number_of(v, "a threshold")) for m, v in data)


def _window_of(data: Any) -> Window:
    kind = data["kind"]
    if kind == "rolling":
        return RollingTradingDays(data["days"])
    if kind == "quarter":
        return Quarter()
    if kind == "month":
        return CalendarMonth()
    raise CodecError("a stored window is of an unknown kind")


def programme_from_data(data: object) -> TierProgramme:
    """A programme version from its stored form; anything malformed is a CodecError that never
    echoes the stored values."""
    if not isinstance(data, dict):
        raise CodecError("a stored programme is an object")
    try:
        cashback = [t["cashback_per_lot"] for t in data["tiers"]]
        return TierProgramme(
            data["programme_id"],
            data["version"],
            datetime.fromisoformat(data["effective_from"]),  # naive: refused by to_utc
            tuple(
                Tier(
                    t["name"],
                    _thresholds_of(t["all_of"]),
                    _thresholds_of(t["any_of"]),
                    Benefits(
                        None if c is None else Money.parse(c),
                        _number_of(t["points_multiplier"], "a points multiplier"),
                        t["leverage_cap"],
                        _number_of(t["commission_discount"], "a commission discount"),
                    ),
                )
                for t, c in zip(data["tiers"], cashback, strict=True)
            ),
            _window_of(data["window"]),
            UpgradeTiming(data["upgrade"]),
            DowngradeRule(data["grace_trading_days"]),
            Combination(data["combination"]),
        )
    except CodecError:
        raise
    except FxCrmError as error:
        raise CodecError(f"a stored programme is invalid: {type(error).__name__}") from None
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError):
        raise CodecError("a stored programme is malformed") from None
