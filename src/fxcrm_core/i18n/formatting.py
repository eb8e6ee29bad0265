"""Values in a client's locale, by Babel: money (through :meth:`Money.format`), numbers, dates,
and instants in the client's own time zone."""

from __future__ import annotations

import decimal
import functools
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal

import babel
import babel.dates
import babel.numbers

from fxcrm_core.kernel.errors import ArgumentTypeError, FloatNotAllowedError, ValidationError
from fxcrm_core.kernel.money import Money
from fxcrm_core.kernel.time import ensure_aware, zone_info

__all__ = [
    "DATETIME_FORMAT",
    "DATE_FORMAT",
    "format_date",
    "format_datetime",
    "format_money",
    "format_number",
    "parse_locale",
    "time_zone",
]

#: Babel's named formats used for dates and instants in messages.
DATE_FORMAT = "long"
DATETIME_FORMAT = "medium"
_FORMATS = ("short", "medium", "long", "full")
#: The longest IANA zone name accepted (the longest real one has 32 characters).
#: A number shown in a message has at most this many digits before, and after, the point.
_MAX_DIGITS = 100
_LIMIT = 10**_MAX_DIGITS


def parse_locale(name: object) -> babel.Locale:
    """The Babel locale for ``zh_CN``, ``zh-CN``, ``zh_Hans_CN``...; a ValidationError for
    anything Babel does not know (the message does not echo the value)."""
    if not isinstance(name, str):
        raise ArgumentTypeError("a locale is text such as 'en' or 'zh_CN'")
    return _parse(name.strip())


@functools.lru_cache(maxsize=256)
def _parse(name: str) -> babel.Locale:
    if not 2 <= len(name) <= 35 or not name.replace("_", "").replace("-", "").isalnum():
        raise ValidationError("unknown locale")
    try:
        return babel.Locale.parse(name, sep="-" if "-" in name else "_")
    except (ValueError, TypeError, babel.UnknownLocaleError):
        raise ValidationError("unknown locale") from None


def time_zone(zone: tzinfo | str | None) -> tzinfo:
    """``zone`` as a tzinfo: an IANA name is looked up; None is UTC."""
    if zone is None:
        return UTC
    if isinstance(zone, tzinfo):
        return zone
    if not isinstance(zone, str):
        raise ArgumentTypeError("a time zone is an IANA name or a tzinfo")
    return zone_info(zone)  # the kernel's check: typed, never the tzdata path


def format_money(money: Money, locale: str) -> str:
    """``money`` in ``locale``'s currency format, at the currency's ISO 4217 decimal places.

    >>> format_money(Money.of("1234.5", "USD"), "zh_CN")
    'US$1,234.50'
    """
    if not isinstance(money, Money):
        raise ArgumentTypeError("format_money formats a Money")
    parse_locale(locale)
    return money.format(locale)


def format_number(number: Decimal | int, locale: str) -> str:
    """A Decimal or an int with ``locale``'s separators, every digit kept; a ValidationError
    for more than 100 digits before or after the point."""
    if isinstance(number, float):
        raise FloatNotAllowedError()
    if isinstance(number, bool) or not isinstance(number, Decimal | int):
        raise ArgumentTypeError("format_number formats a Decimal or an int")
    if isinstance(number, Decimal):
        if not number.is_finite():
            raise ValidationError("a number to show is finite")
        exponent = int(number.as_tuple().exponent)  # an int: the number is finite
        too_big = number.adjusted() >= _MAX_DIGITS or -exponent > _MAX_DIGITS
    else:
        too_big = not -_LIMIT < number < _LIMIT  # compared, never turned into text first
    if too_big:
        raise ValidationError(
            f"a number to show has at most {_MAX_DIGITS} digits before and after the point"
        )
    with decimal.localcontext() as ctx:
        ctx.prec = 4 * _MAX_DIGITS
        return babel.numbers.format_decimal(
            number, locale=parse_locale(locale), decimal_quantization=False
        )


def format_date(day: date, locale: str, fmt: str = DATE_FORMAT) -> str:
    """A calendar date (a birthday, a document's expiry) in ``locale``; no zone applies."""
    if isinstance(day, datetime) or not isinstance(day, date):
        raise ArgumentTypeError("format_date formats a date (format_datetime an instant)")
    return babel.dates.format_date(day, _format(fmt), locale=parse_locale(locale))


def format_datetime(
    when: datetime, locale: str, zone: tzinfo | str | None = None, fmt: str = DATETIME_FORMAT
) -> str:
    """An instant as the wall time in ``zone`` (the client's; UTC when None), in ``locale``."""
    if not isinstance(when, datetime):
        raise ArgumentTypeError("format_datetime formats a datetime")
    aware = ensure_aware(when, "the instant to show")
    shown_in, pattern, loc = time_zone(zone), _format(fmt), parse_locale(locale)
    try:
        return babel.dates.format_datetime(aware, pattern, tzinfo=shown_in, locale=loc)
    except OverflowError:  # 31 Dec 9999 in UTC+14, 1 Jan 0001 in UTC-12: off the calendar
        raise ValidationError("the instant falls outside the calendar in that zone") from None


def _format(fmt: str) -> str:
    if fmt not in _FORMATS:
        raise ValidationError(f"a date format is one of {', '.join(_FORMATS)}")
    return fmt
