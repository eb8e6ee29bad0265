"""Time: aware only, UTC storage, the 17:00 New York trading day across DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.kernel import (
    ArgumentTypeError,
    FixedClock,
    IdGenerator,
    NaiveDatetimeError,
    SystemClock,
    TradingCalendar,
    ValidationError,
    to_utc,
)

cal = TradingCalendar()


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# 2026: DST starts Sunday 8 March, ends Sunday 1 November (America/New_York).
@pytest.mark.parametrize(
    ("instant", "day"),
    [
        # Friday 6 March, winter (EST, UTC-5): the roll is 22:00 UTC and Friday's roll closes.
        (utc(2026, 3, 6, 21, 59, 59), date(2026, 3, 6)),
        (utc(2026, 3, 6, 22, 0), date(2026, 3, 9)),  # closed: counts for Monday
        # Sunday 8 March, the first day of EDT (UTC-4): the week opens at 21:00 UTC.
        (utc(2026, 3, 8, 20, 59), date(2026, 3, 9)),  # closed, next session is Monday
        (utc(2026, 3, 8, 21, 0), date(2026, 3, 9)),
        # Monday 9 March, summer: the roll is 21:00 UTC, no longer 22:00.
        (utc(2026, 3, 9, 20, 59, 59), date(2026, 3, 9)),
        (utc(2026, 3, 9, 21, 0), date(2026, 3, 10)),
        (utc(2026, 3, 9, 21, 30), date(2026, 3, 10)),
        # Friday 30 October, still EDT.
        (utc(2026, 10, 30, 20, 59), date(2026, 10, 30)),
        # Sunday 1 November, the first day of EST again: the week opens at 22:00 UTC.
        (utc(2026, 11, 1, 21, 30), date(2026, 11, 2)),
        (utc(2026, 11, 1, 22, 0), date(2026, 11, 2)),
        # Monday 2 November, winter: the roll is back at 22:00 UTC.
        (utc(2026, 11, 2, 21, 0), date(2026, 11, 2)),
        (utc(2026, 11, 2, 21, 59, 59), date(2026, 11, 2)),
        (utc(2026, 11, 2, 22, 0), date(2026, 11, 3)),
    ],
)
def test_trading_day_around_dst_changes(instant: datetime, day: date) -> None:
    assert cal.trading_day(instant) == day


@pytest.mark.parametrize(
    ("instant", "is_open"),
    [
        (utc(2026, 3, 6, 21, 59), True),  # Friday 16:59 EST
        (utc(2026, 3, 6, 22, 0), False),  # Friday 17:00 EST: weekend
        (utc(2026, 3, 7, 12, 0), False),  # Saturday
        (utc(2026, 3, 8, 20, 59), False),  # Sunday 16:59 EDT
        (utc(2026, 3, 8, 21, 0), True),  # Sunday 17:00 EDT: open
        (utc(2026, 11, 1, 21, 0), False),  # Sunday 16:00 EST: still closed
        (utc(2026, 11, 1, 22, 0), True),  # Sunday 17:00 EST
    ],
)
def test_weekend_is_closed_from_friday_to_sunday_17h_new_york(
    instant: datetime, is_open: bool
) -> None:
    assert cal.is_open(instant) is is_open


def test_session_bounds_move_with_dst() -> None:
    assert cal.session(date(2026, 3, 9)) == (utc(2026, 3, 8, 21), utc(2026, 3, 9, 21))
    assert cal.session(date(2026, 3, 6)) == (utc(2026, 3, 5, 22), utc(2026, 3, 6, 22))
    with pytest.raises(ValidationError):
        cal.session(date(2026, 3, 7))


def test_closed_days_are_skipped() -> None:
    xmas = TradingCalendar(closed_days={date(2026, 12, 25)})
    assert xmas.trading_day(utc(2026, 12, 24, 22, 30)) == date(2026, 12, 28)
    assert not xmas.is_open(utc(2026, 12, 24, 22, 30))


def test_same_instant_in_any_zone_gives_the_same_day() -> None:
    tokyo = timezone(timedelta(hours=9))
    instant = utc(2026, 7, 1, 20, 59)
    assert cal.trading_day(instant.astimezone(tokyo)) == cal.trading_day(instant)


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2040, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    )
)
def test_trading_day_is_never_a_weekend_and_inside_its_session(instant: datetime) -> None:
    day = cal.trading_day(instant)
    assert day.weekday() < 5
    start, end = cal.session(day)
    if cal.is_open(instant):
        assert start <= instant < end
    else:
        assert instant < start


def test_next_rollover() -> None:
    assert cal.next_rollover(utc(2026, 3, 7, 23)) == utc(2026, 3, 8, 21)
    assert cal.next_rollover(utc(2026, 3, 9, 21)) == utc(2026, 3, 10, 21)


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2026, 1, 1, 12)  # noqa: DTZ001
    with pytest.raises(NaiveDatetimeError):
        cal.trading_day(naive)
    with pytest.raises(NaiveDatetimeError):
        to_utc(naive)
    with pytest.raises(NaiveDatetimeError):
        FixedClock(naive)


def test_clocks_are_aware_utc() -> None:
    assert SystemClock().now().utcoffset() == timedelta(0)
    clock = FixedClock(datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=8))))
    assert clock.now() == utc(2026, 1, 1, 1)
    clock.set(utc(2026, 2, 1))
    assert clock.advance(timedelta(minutes=5)) == utc(2026, 2, 1, 0, 5)


def test_ids_sort_in_creation_order_even_within_a_millisecond() -> None:
    gen = IdGenerator(FixedClock(utc(2026, 1, 1)), seed=7)
    ids = [gen() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    later = IdGenerator(FixedClock(utc(2026, 1, 2)), seed=7)()
    assert later > ids[-1]
    assert IdGenerator(FixedClock(utc(2026, 1, 1)), seed=7)() == ids[0]


@given(
    st.lists(
        st.datetimes(
            min_value=datetime(2026, 10, 20),  # noqa: DTZ001 - hypothesis bounds are naive
            max_value=datetime(2027, 1, 10),  # noqa: DTZ001
            timezones=st.sampled_from([UTC, timezone(timedelta(hours=9))]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_a_calendar_answers_the_same_however_often_it_is_asked(instants: list[datetime]) -> None:
    # One calendar keeps what it worked out (per UTC hour); a fresh one per question cannot.
    closed = [date(2026, 12, 25), date(2027, 1, 1)]
    kept = TradingCalendar(closed_days=closed)
    for instant in instants + instants[::-1]:
        assert kept.trading_day(instant) == TradingCalendar(closed_days=closed).trading_day(instant)


# -- the edges of the calendar: year 1, year 9999, things that are not dates (issue 14 item 6) --
EAST = timezone(timedelta(hours=1))
WEST = timezone(-timedelta(hours=1))
EDGE_INSTANTS = [
    datetime.min.replace(tzinfo=UTC),
    datetime.max.replace(tzinfo=UTC),
    datetime.min.replace(tzinfo=EAST),
    datetime.max.replace(tzinfo=WEST),
]


@pytest.mark.parametrize(
    "at", [datetime.min.replace(tzinfo=EAST), datetime.max.replace(tzinfo=WEST)]
)
def test_to_utc_refuses_an_instant_outside_the_utc_years_with_a_typed_error(at: datetime) -> None:
    with pytest.raises(ValidationError, match="years 1 to 9999"):
        to_utc(at)


@pytest.mark.parametrize("at", EDGE_INSTANTS)
def test_the_calendar_at_year_1_and_9999_answers_or_raises_a_validation_error(
    at: datetime,
) -> None:
    calendar = TradingCalendar()
    for call in (calendar.trading_day, calendar.is_open, calendar.next_rollover):
        with pytest.raises(ValidationError, match="1 to 9999"):
            call(at)


def test_the_calendar_answers_near_the_edges() -> None:
    calendar = TradingCalendar()
    assert calendar.trading_day(utc(1, 1, 3, 12)) == date(1, 1, 3)
    assert calendar.trading_day(utc(9999, 12, 30, 12)) == date(9999, 12, 30)
    with pytest.raises(ValidationError):
        calendar.session(date.min)  # its session would start on 31 Dec of year 0


@pytest.mark.parametrize("day", ["2026-01-01", None, 5, 1.5, [date(2026, 1, 1)]])
def test_the_calendar_refuses_a_day_that_is_not_a_date_with_a_typed_error(day: object) -> None:
    calendar = TradingCalendar()
    with pytest.raises(ArgumentTypeError):
        calendar.is_trading_day(day)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        calendar.session(day)  # type: ignore[arg-type]


@pytest.mark.parametrize("closed", [5, None, "2026-12-25", ["2026-12-25"], [None]])
def test_closed_days_must_be_dates(closed: object) -> None:
    with pytest.raises(ArgumentTypeError):
        TradingCalendar(closed_days=closed)  # type: ignore[arg-type]
