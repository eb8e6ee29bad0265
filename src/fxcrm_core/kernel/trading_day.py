"""The forex trading-day calendar: days roll at 17:00 New York; the week is Sun 17:00 to Fri 17:00.

Summer and winter are handled by the America/New_York zone (pendulum), so the roll is 21:00 UTC
while New York is on daylight time and 22:00 UTC otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import attrs
import pendulum

from fxcrm_core.kernel.errors import ArgumentTypeError, ValidationError
from fxcrm_core.kernel.time import ensure_aware, to_utc

__all__ = ["NEW_YORK", "ROLLOVER_HOUR", "TradingCalendar"]

NEW_YORK = pendulum.timezone("America/New_York")
ROLLOVER_HOUR = 17
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)


_OUT_OF_RANGE = "the trading day of that instant is outside the years 1 to 9999"


def _raw_day(at: datetime) -> date:
    """The trading day an instant belongs to, before weekends and closed days are skipped."""
    try:
        ny = pendulum.instance(at).in_timezone(NEW_YORK)
        day = date(ny.year, ny.month, ny.day)
        return day + timedelta(days=1) if ny.hour >= ROLLOVER_HOUR else day
    except (
        OverflowError,
        ValueError,
    ):  # New York time, or the next day, before year 1 or past 9999
        raise ValidationError(_OUT_OF_RANGE) from None


def _check_day(day: object) -> date:
    if not isinstance(day, date) or isinstance(day, datetime):
        raise ArgumentTypeError("a trading day is a date (not a datetime)")
    return day


def _date_set(days: Iterable[date]) -> frozenset[date]:
    if isinstance(days, str | bytes) or not isinstance(days, Iterable):
        raise ArgumentTypeError("closed_days is a collection of dates")
    return frozenset(_check_day(d) for d in days)


@attrs.frozen
class TradingCalendar:
    """Which trading day an instant belongs to, and whether the market is open then.

    ``closed_days`` lists extra trading days with no session (25 Dec, 1 Jan, ...): the host's
    choice, as brokers differ.

    >>> cal = TradingCalendar()
    >>> cal.trading_day(datetime(2026, 7, 1, 20, 59, tzinfo=UTC))  # 16:59 in New York (EDT)
    datetime.date(2026, 7, 1)
    >>> cal.trading_day(datetime(2026, 7, 1, 21, 0, tzinfo=UTC))   # 17:00 in New York: rolled
    datetime.date(2026, 7, 2)
    """

    closed_days: frozenset[date] = attrs.field(default=frozenset(), converter=_date_set)
    _by_hour: dict[int, date] = attrs.field(factory=dict, init=False, eq=False, repr=False)
    _trading_by_hour: dict[int, date] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    def _day_of(self, at: datetime) -> date:
        # 17:00 New York is always a whole UTC hour, so the day is constant within a UTC hour:
        # caching by hour keeps the hot path (one call per deal) off the tz database.
        hour = (ensure_aware(at, "at") - _EPOCH) // _HOUR
        day = self._by_hour.get(hour)
        if day is None:
            try:
                start = _EPOCH + timedelta(hours=hour)
            except OverflowError:  # the UTC hour begins before the year 1
                raise ValidationError(_OUT_OF_RANGE) from None
            day = _raw_day(start)
            self._by_hour[hour] = day
        return day

    def is_trading_day(self, day: date) -> bool:
        """True for a weekday that is not one of the closed days."""
        return _check_day(day).weekday() < 5 and day not in self.closed_days

    def is_open(self, at: datetime) -> bool:
        """True while a session runs (Sunday 17:00 to Friday 17:00 New York, less closed days)."""
        return self.is_trading_day(self._day_of(at))

    def trading_day(self, at: datetime) -> date:
        """The trading day ``at`` counts for; when closed, the next day that has a session."""
        if type(at) is datetime and at.tzinfo is UTC:  # the storage form: no checks needed
            hour = (at - _EPOCH) // _HOUR
            day = self._trading_by_hour.get(hour)
            if day is not None:
                return day
        else:
            hour = (ensure_aware(at, "at") - _EPOCH) // _HOUR
        day = self._day_of(at)
        while not self.is_trading_day(day):
            if day == date.max:
                raise ValidationError(_OUT_OF_RANGE)
            day += timedelta(days=1)
        self._trading_by_hour[hour] = day  # constant within a UTC hour, as the raw day is
        return day

    def session(self, day: date) -> tuple[datetime, datetime]:
        """Start and end (UTC) of a trading day's session: 17:00 NY the day before to 17:00 NY."""
        if not self.is_trading_day(day):
            raise ValidationError("that date has no trading session")
        if day == date.min:
            raise ValidationError("the session of that date starts before the year 1")
        try:
            end = pendulum.datetime(day.year, day.month, day.day, ROLLOVER_HOUR, tz=NEW_YORK)
            start = end.subtract(days=1)
            return to_utc(start), to_utc(end)
        except (OverflowError, ValueError):
            raise ValidationError("that session is outside the years 1 to 9999") from None

    def next_rollover(self, at: datetime) -> datetime:
        """The first 17:00 New York strictly after ``at`` (UTC)."""
        try:
            ny = pendulum.instance(ensure_aware(at, "at")).in_timezone(NEW_YORK)
            roll = ny.set(hour=ROLLOVER_HOUR, minute=0, second=0, microsecond=0)
            if roll <= ny:
                roll = roll.add(days=1)
        except (OverflowError, ValueError):
            raise ValidationError("the next rollover is outside the years 1 to 9999") from None
        return to_utc(roll)
