"""Aware time only: helpers that reject naive datetimes and normalise to UTC for storage."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fxcrm_core.kernel.errors import ArgumentTypeError, NaiveDatetimeError, ValidationError

__all__ = ["ensure_aware", "from_micros", "to_micros", "to_utc", "zone_info"]


def ensure_aware(value: datetime, what: str = "datetime") -> datetime:
    """Return ``value`` if it carries a time zone, else raise :class:`NaiveDatetimeError`."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{what}: expected a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(f"{what}: naive datetime; pass a timezone-aware datetime")
    return value


def to_utc(value: datetime, what: str = "datetime") -> datetime:
    """The same instant as a plain ``datetime`` in UTC (the storage form).

    >>> from datetime import timedelta, timezone
    >>> to_utc(datetime(2026, 3, 8, 17, 0, tzinfo=timezone(timedelta(hours=-4)))).isoformat()
    '2026-03-08T21:00:00+00:00'
    """
    if type(value) is datetime and value.tzinfo is UTC:
        return value  # already the storage form
    aware = ensure_aware(value, what)
    try:
        utc = aware.astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of UTC, 9999-12-31 west of it
        raise ValidationError(
            f"{what}: the instant is outside the years 1 to 9999 in UTC"
        ) from None
    # pendulum returns its own subclass; storage and equality want the plain type.
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, UTC
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(when: datetime) -> int:
    """An aware datetime as whole microseconds since the epoch (compact storage form)."""
    return (to_utc(when) - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the epoch."""
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ValidationError("a time in microseconds is outside the years 1 to 9999") from None


def zone_info(value: object, what: str = "time zone") -> ZoneInfo:
    """``value`` as a :class:`~zoneinfo.ZoneInfo`: one already, or an IANA name (at most 64
    characters, no control characters); anything else a typed error that never echoes the
    name or the tz database's path.

    >>> zone_info("Europe/London").key
    'Europe/London'
    """
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str):
        raise ArgumentTypeError(f"a {what} is an IANA zone name")
    if not 1 <= len(value) <= 64 or any(unicodedata.category(c)[0] == "C" for c in value):
        raise ValidationError(f"the {what} is not a known IANA zone")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory, a long path
        raise ValidationError(f"the {what} is not a known IANA zone") from None
