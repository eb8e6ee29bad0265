"""Engagement rules as data: which message goes to which clients, on what, once per what.

A broker configures :class:`EngagementRule` values (validated: bad data is a
:class:`~fxcrm_core.kernel.errors.ValidationError`, never a builtin exception). Each rule has a
trigger (:class:`OnEvent`: an upstream event such as a registration, a first deposit, a tier
upgrade; or :class:`Scheduled`: a daily check such as a birthday or a KYC document about to
expire), an :class:`Audience` (countries, languages, segments, tiers, a consent), and a
:class:`RulePeriod` that names the outbox key's period (``once``, ``2026``, ``2026-03``,
``2026-03-05``) so a rule sends at most one message per client and period.

:class:`EngagementRules` evaluates them: ``on_event`` is a policy handler (the broker's
``EVENT_HANDLERS`` row), ``run_day`` the scheduled triggers of one local day. Both queue into
the caller's unit of work through the :class:`~fxcrm_core.engagement.outbox.Outbox`, whose key
makes a replay, a retry or a second process queue nothing twice. A rule decides by the event's
own instant and the log as it stood at the event (never the process clock), so an inline
broker and a late worker decide the same.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import attrs
import babel

from fxcrm_core.clients import Client, ClientRegistered, Consent, Stage, StageChanged
from fxcrm_core.engagement.notifier import Channel, MessageKind
from fxcrm_core.engagement.outbox import MAX_PARAMS, Outbox
from fxcrm_core.events import DomainEvent, RecordedEvent, Repository, StoredEvent, UnitOfWork
from fxcrm_core.kernel.clock import Clock
from fxcrm_core.kernel.errors import ArgumentTypeError, FxCrmError, ValidationError
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc, zone_info
from fxcrm_core.kernel.trading_day import TradingCalendar
from fxcrm_core.loyalty.churn import ChurnWarningRaised
from fxcrm_core.loyalty.events import TierChanged
from fxcrm_core.payments.withdrawals import Withdrawal, WithdrawalPaid
from fxcrm_core.privacy.pii import BirthDate

__all__ = [
    "CATCH_UP_DAYS",
    "ENGAGEMENT_POLICY",
    "ENGAGEMENT_UPSTREAM",
    "Always",
    "Audience",
    "AudienceSource",
    "ClientAudience",
    "Condition",
    "EngagementRule",
    "EngagementRules",
    "HolidayData",
    "LeapDay",
    "OnEvent",
    "RulePeriod",
    "Profile",
    "ScheduleKind",
    "Scheduled",
    "StageIs",
    "TierUp",
    "observed_birthday",
]

#: The policy's name (its row in the broker's EVENT_HANDLERS).
ENGAGEMENT_POLICY = "engagement-rules"

#: The upstream events the built-in event triggers react to.
ENGAGEMENT_UPSTREAM: tuple[type[DomainEvent], ...] = (
    ClientRegistered,
    StageChanged,
    TierChanged,
    ChurnWarningRaised,
    WithdrawalPaid,
)

_MAX_ITEMS = 500  # entries in one filter or one trigger's event list
_MAX_DELAY = timedelta(days=3660)
_MAX_DAYS = 3660
_MAX_TRADING_DAYS = 2600
_NAME = 64
#: How many days after a birthday (or a days-after target day) a daily run still sends it: a
#: host's daily job at a fixed time in another zone can skip a client's local date (New York
#: falling back moves a 17:05 run from 23:05 to 00:05 the next day in Johannesburg).
CATCH_UP_DAYS = 3


# -- small validated values ------------------------------------------------------------------
def _text(value: object, what: str, limit: int = _NAME) -> str:
    return checked_text(value, what, limit)


def _texts(value: object, what: str) -> frozenset[str]:
    """A set of short texts from a set, list or tuple of text (a single text is refused: it
    would be read as its letters)."""
    if isinstance(value, str) or not isinstance(value, frozenset | set | list | tuple):
        raise ArgumentTypeError(f"the {what} are a set of text")
    if len(value) > _MAX_ITEMS:
        raise ValidationError(f"at most {_MAX_ITEMS} {what}")
    return frozenset(_text(v, what[:-1] if what.endswith("s") else what) for v in value)


def _whole(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int:
        raise ArgumentTypeError(f"the {what} is a whole number")
    if not low <= value <= high:
        raise ValidationError(f"the {what} is from {low} to {high}")
    return value


def _instance(cls: type[Any] | tuple[type[Any], ...], what: str) -> Callable[[Any, Any, Any], None]:
    def check(_: Any, __: Any, value: Any) -> None:
        if not isinstance(value, cls):
            raise ArgumentTypeError(f"the {what} has the wrong type")

    return check


def _zone(value: object) -> ZoneInfo:
    return zone_info(value)


_COUNTRY = re.compile(r"[A-Za-z]{2}")
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,4}")


def _language(value: object) -> str:
    """A locale such as ``de``, ``pt_BR`` or ``en-GB`` (checked against Babel's locale data),
    kept as given (the text an :class:`Audience` filter and the outbox see)."""
    name = _text(value, "language", 35)
    if not _LOCALE.fullmatch(name):
        raise ValidationError("a language is a locale such as 'de', 'pt_BR' or 'en-GB'")
    try:
        babel.Locale.parse(name.replace("-", "_"))
    except (ValueError, TypeError, babel.UnknownLocaleError):
        raise ValidationError("not a known locale") from None
    return name


def _by_country(value: object, what: str, check: Callable[[object], Any]) -> dict[str, Any]:
    """A mapping of two-letter country code (upper-cased) -> ``check``'s value."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentTypeError(f"the {what} map a country code to a value")
    if len(value) > _MAX_ITEMS:
        raise ValidationError(f"at most {_MAX_ITEMS} {what}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        country = _text(key, "country code", 2)
        if not _COUNTRY.fullmatch(country):
            raise ValidationError("a country code is two letters (ISO 3166-1 alpha-2)")
        out[country.upper()] = check(item)
    return out


class RulePeriod(enum.Enum):
    """How often a rule may send to one client: the outbox key's period label."""

    ONCE = "once"
    YEAR = "year"
    MONTH = "month"
    DAY = "day"

    def label(self, day: date) -> str:
        """``once``, ``2026``, ``2026-03`` or ``2026-03-05`` for the (local) ``day``.

        >>> RulePeriod.MONTH.label(date(2026, 3, 5))
        '2026-03'
        """
        if self is RulePeriod.ONCE:
            return "once"
        if self is RulePeriod.YEAR:
            return f"{day.year:04d}"
        if self is RulePeriod.MONTH:
            return f"{day.year:04d}-{day.month:02d}"
        return day.isoformat()


class LeapDay(enum.Enum):
    """When a 29 February birthday is celebrated in a year without one."""

    FEB_28 = "feb_28"
    MAR_1 = "mar_1"


def observed_birthday(born: date, year: int, leap_day: LeapDay = LeapDay.FEB_28) -> date:
    """The day ``born``'s birthday falls on in ``year``.

    >>> observed_birthday(date(2000, 2, 29), 2027)
    datetime.date(2027, 2, 28)
    >>> observed_birthday(date(2000, 2, 29), 2027, LeapDay.MAR_1)
    datetime.date(2027, 3, 1)
    """
    try:
        return born.replace(year=year)
    except ValueError:  # 29 February in a common year
        return date(year, 3, 1) if leap_day is LeapDay.MAR_1 else date(year, 2, 28)


# -- conditions on an event (data) -------------------------------------------------------------
@attrs.frozen
class Always:
    """Every event of the trigger's types."""

    def matches(self, event: DomainEvent) -> bool:
        return True


@attrs.frozen
class StageIs:
    """A lifecycle move (``StageChanged``) into ``stage`` (FUNDED: the first deposit credited
    to a verified client; DORMANT: no trade nor deposit for the dormancy window)."""

    stage: Stage = attrs.field(validator=_instance(Stage, "stage"))

    def matches(self, event: DomainEvent) -> bool:
        return isinstance(event, StageChanged) and event.stage is self.stage


def _order(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ArgumentTypeError("a tier order is a list of tier names, lowest first")
    if not 1 <= len(value) <= _MAX_ITEMS:
        raise ValidationError(f"a tier order names 1 to {_MAX_ITEMS} tiers")
    names = tuple(_text(v, "tier") for v in value)
    if len(set(names)) != len(names):
        raise ValidationError("a tier order names each tier once")
    return names


@attrs.frozen
class TierUp:
    """A tier upgrade (``TierChanged``): ``to_tier`` ranked above ``from_tier`` in ``order``
    (lowest first). A first tier (no ``from_tier``) counts when ``from_none`` (default); a tier
    the order does not name never counts."""

    order: tuple[str, ...] = attrs.field(converter=_order)
    from_none: bool = attrs.field(default=True, validator=_instance(bool, "from_none"))

    def matches(self, event: DomainEvent) -> bool:
        if not isinstance(event, TierChanged) or event.to_tier not in self.order:
            return False
        if event.from_tier is None:
            return self.from_none
        if event.from_tier not in self.order:
            return False
        return self.order.index(event.to_tier) > self.order.index(event.from_tier)


Condition = Always | StageIs | TierUp


def _event_names(value: object) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str | type) else value
    if not isinstance(items, list | tuple | frozenset | set):
        raise ArgumentTypeError("a trigger's event types are event classes or their names")
    if not 1 <= len(items) <= _MAX_ITEMS:
        raise ValidationError(f"a trigger names 1 to {_MAX_ITEMS} event types")
    names = []
    for item in items:
        if isinstance(item, type):
            if not issubclass(item, DomainEvent):
                raise ArgumentTypeError("a trigger's event type is a DomainEvent class")
            item = item.__name__
        names.append(_text(item, "event type", 100))
    return tuple(sorted(set(names)))


def _delay(value: object) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise ArgumentTypeError("a delay is a timedelta")
    if not timedelta(0) <= value <= _MAX_DELAY:
        raise ValidationError("a delay is from 0 to 3660 days")
    return value


def _trading_days(value: object) -> int | None:
    return None if value is None else _whole(value, "trading days", 0, _MAX_TRADING_DAYS)


@attrs.frozen
class OnEvent:
    """Fires on an upstream event of ``event_types`` (classes or names) that meets
    ``condition``; the message is due ``after`` the event's instant, or at the start of the
    session ``trading_days`` trading days after the event's trading day (not both)."""

    event_types: tuple[str, ...] = attrs.field(converter=_event_names)
    condition: Condition = attrs.field(
        default=Always(), validator=_instance((Always, StageIs, TierUp), "condition")
    )
    after: timedelta | None = attrs.field(default=None, converter=_delay)
    trading_days: int | None = attrs.field(default=None, converter=_trading_days)

    def __attrs_post_init__(self) -> None:
        if self.after is not None and self.trading_days is not None:
            raise ValidationError("a trigger is delayed by a time or by trading days, not both")

    # The triggers the SDK's own events give, by name.
    @classmethod
    def registered(cls, **delay: Any) -> OnEvent:
        return cls((ClientRegistered,), **delay)

    @classmethod
    def funded(cls, **delay: Any) -> OnEvent:
        return cls((StageChanged,), StageIs(Stage.FUNDED), **delay)

    @classmethod
    def dormant(cls, **delay: Any) -> OnEvent:
        return cls((StageChanged,), StageIs(Stage.DORMANT), **delay)

    @classmethod
    def tier_up(cls, order: tuple[str, ...] | list[str], **delay: Any) -> OnEvent:
        return cls((TierChanged,), TierUp(tuple(order)), **delay)

    @classmethod
    def churn_warning(cls, **delay: Any) -> OnEvent:
        return cls((ChurnWarningRaised,), **delay)

    @classmethod
    def withdrawal_paid(cls, **delay: Any) -> OnEvent:
        return cls((WithdrawalPaid,), **delay)


class ScheduleKind(enum.Enum):
    BIRTHDAY = "birthday"  # on the client's birthday, in the client's local date
    DOCUMENT_EXPIRING = "document_expiring"  # ``days`` before a KYC document expires (service)
    DAYS_AFTER = "days_after"  # ``days`` after the client's ``event_type`` milestone
    HOLIDAY = "holiday"  # on a named holiday of the client's country (the host's data)


@attrs.frozen
class Scheduled:
    """A trigger the daily run evaluates for each client's local day.

    BIRTHDAY: the local day is the birthday (29 February: ``leap_day`` in common years) or
    one of the :data:`CATCH_UP_DAYS` (3) days after it, so a run that skipped the client's
    local date catches up; the period is taken from the observed birthday, so a ``YEAR`` rule
    sends once per birthday (key ``<rule>:<birthday's year>:<client>``) however many runs
    see it. DOCUMENT_EXPIRING: an approved document expires within ``days`` days from the
    local day (checked on each of those days, so a missed run catches up; the period is taken
    from the expiry date, so one message per expiry). DAYS_AFTER: the local day is ``days``
    days after the local date of the client's ``event_type`` milestone, or one of the
    :data:`CATCH_UP_DAYS` days after that (the period taken from that target day). HOLIDAY:
    the local day is a date of the ``holiday_name`` (a name such as ``new-year``; None: any holiday)
    in the host's holiday data for the client's country (``EngagementRules(holidays=...)``), or
    one of the :data:`CATCH_UP_DAYS` days after it; the period is taken from the holiday's date
    (``YEAR``: one message per year, key ``<rule>:<holiday's year>:<client>``), and the message
    carries the parameters ``holiday`` (its name) and ``holiday_date`` (ISO date).

    A catch-up also means a rule added, or a birth date recorded, up to three days after the
    day still sends (late)."""

    kind: ScheduleKind = attrs.field(validator=_instance(ScheduleKind, "schedule kind"))
    days: int = attrs.field(default=0)
    event_type: str | None = attrs.field(default=None)
    leap_day: LeapDay = attrs.field(
        default=LeapDay.FEB_28, validator=_instance(LeapDay, "leap-day setting")
    )
    holiday_name: str | None = attrs.field(default=None)

    @days.validator
    def _days(self, _: Any, value: object) -> None:
        _whole(value, "days", 0, _MAX_DAYS)

    @event_type.validator
    def _event_type(self, _: Any, value: object) -> None:
        if self.kind is ScheduleKind.DAYS_AFTER:
            _text(value, "milestone", 100)
        elif value is not None:
            raise ValidationError("only a days-after trigger names a milestone")

    @holiday_name.validator
    def _holiday(self, _: Any, value: object) -> None:
        if value is None:
            return
        if self.kind is not ScheduleKind.HOLIDAY:
            raise ValidationError("only a holiday trigger names a holiday")
        _holiday_name(value)

    @classmethod
    def birthday(cls, leap_day: LeapDay = LeapDay.FEB_28) -> Scheduled:
        return cls(ScheduleKind.BIRTHDAY, leap_day=leap_day)

    @classmethod
    def document_expiring(cls, days: int) -> Scheduled:
        return cls(ScheduleKind.DOCUMENT_EXPIRING, days)

    @classmethod
    def days_after(cls, event_type: str, days: int) -> Scheduled:
        return cls(ScheduleKind.DAYS_AFTER, days, event_type)

    @classmethod
    def holiday(cls, name: str) -> Scheduled:
        """On the holiday ``name`` (``new-year``, ``chinese-new-year``, ``eid-al-fitr``) of the
        client's country."""
        if name is None:
            raise ArgumentTypeError("a holiday's name is text")
        return cls(ScheduleKind.HOLIDAY, holiday_name=name)

    @classmethod
    def holidays(cls) -> Scheduled:
        """On any holiday of the client's country in the host's data (one message per day
        with a ``DAY`` period; the names on one date give one message, the first name)."""
        return cls(ScheduleKind.HOLIDAY)


# -- holidays per country (host data) ------------------------------------------------------------
_HOLIDAY = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_MAX_HOLIDAY_DATES = 1000  # dates of one holiday in one country (a millennium of yearly dates)
_MAX_COUNTRY_DATES = 20_000  # dates of all holidays of one country


def _holiday_name(value: object) -> str:
    name = _text(value, "holiday name")
    if not _HOLIDAY.fullmatch(name):
        raise ValidationError(
            "a holiday name is lower-case letters and digits in words joined by '-'"
        )
    return name


def _holiday_dates(value: object) -> frozenset[date]:
    if isinstance(value, str | bytes) or not isinstance(value, frozenset | set | list | tuple):
        raise ArgumentTypeError("a holiday's dates are a set, list or tuple of dates")
    if len(value) > _MAX_HOLIDAY_DATES:
        raise ValidationError(f"a holiday has at most {_MAX_HOLIDAY_DATES} dates in a country")
    # Checked before hashing: an unhashable item (a list) is refused typed here.
    if not all(isinstance(d, date) and not isinstance(d, datetime) for d in value):
        raise ArgumentTypeError("a holiday's dates are dates (not datetimes)")
    return frozenset(value)


def _holiday_data(
    value: object,
) -> tuple[dict[str, dict[str, frozenset[date]]], dict[str, dict[date, tuple[str, ...]]]]:
    """The holidays per country, checked and normalised, and their by-date index."""
    if not isinstance(value, Mapping):
        raise ArgumentTypeError("holidays map a country code to {holiday name: dates}")
    if len(value) > _MAX_ITEMS:
        raise ValidationError(f"holidays for at most {_MAX_ITEMS} countries")
    countries: dict[str, dict[str, frozenset[date]]] = {}
    by_date: dict[str, dict[date, tuple[str, ...]]] = {}
    for key, names in value.items():
        country = _text(key, "country code", 2)
        if not _COUNTRY.fullmatch(country):
            raise ValidationError("a country code is two letters (ISO 3166-1 alpha-2)")
        country = country.upper()
        if country in countries:
            raise ValidationError("a country is named twice in the holidays")
        if not isinstance(names, Mapping):
            raise ArgumentTypeError("a country's holidays map a holiday name to its dates")
        if len(names) > _MAX_ITEMS:
            raise ValidationError(f"at most {_MAX_ITEMS} holidays in a country")
        held: dict[str, frozenset[date]] = {}
        total = 0
        for raw_name, dates in names.items():
            name = _holiday_name(raw_name)
            if name in held:
                raise ValidationError("a holiday is named twice in a country")
            held[name] = _holiday_dates(dates)
            total += len(held[name])
            if total > _MAX_COUNTRY_DATES:
                raise ValidationError(f"at most {_MAX_COUNTRY_DATES} holiday dates in a country")
        countries[country] = held
        days: dict[date, list[str]] = {}
        for name in sorted(held):
            for day in held[name]:
                days.setdefault(day, []).append(name)
        by_date[country] = {d: tuple(n) for d, n in days.items()}
    return countries, by_date


@attrs.frozen
class HolidayData:
    """The host's holidays per country, validated: ``by_country`` maps a two-letter country
    code (upper-cased) to {holiday name -> dates}. Built from a mapping such as
    ``{"DE": {"new-year": [date(2027, 1, 1)]}, "JP": {...}}``; a wrong type is an
    :class:`~fxcrm_core.kernel.errors.ArgumentTypeError`, a wrong value a ValidationError.

    >>> data = HolidayData.of({"de": {"new-year": [date(2027, 1, 1)]}})
    >>> data.on("DE", date(2027, 1, 1))
    ('new-year',)
    """

    by_country: Mapping[str, Mapping[str, frozenset[date]]]
    _by_date: Mapping[str, Mapping[date, tuple[str, ...]]] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Validated however it is built (``of`` or the class itself): the holidays normalised
        # and the by-date index derived from them, never taken as given.
        countries, by_date = _holiday_data(self.by_country)
        object.__setattr__(self, "by_country", countries)
        object.__setattr__(self, "_by_date", by_date)

    @classmethod
    def of(cls, value: object) -> HolidayData:
        if isinstance(value, HolidayData):
            return value
        return cls({} if value is None else value)  # type: ignore[arg-type]

    def names(self) -> frozenset[str]:
        """Every holiday name some country holds."""
        return frozenset(n for held in self.by_country.values() for n in held)

    def on(self, country: str | None, day: date) -> tuple[str, ...]:
        """The names of ``country``'s holidays on ``day`` (sorted; empty when none)."""
        if country is None:
            return ()
        return self._by_date.get(country.upper(), {}).get(day, ())


def _countries(value: object) -> frozenset[str]:
    return _texts(value, "countries")


def _languages(value: object) -> frozenset[str]:
    return _texts(value, "languages")


def _segments(value: object) -> frozenset[str]:
    return _texts(value, "segments")


def _tiers(value: object) -> frozenset[str]:
    return _texts(value, "tiers")


def _template(value: object) -> str:
    return _text(value, "template", 100)


# -- audience -----------------------------------------------------------------------------------
@attrs.frozen
class Audience:
    """Who a rule speaks to: an empty filter admits everyone; a client whose value is unknown
    is not admitted by a non-empty filter. ``consent``: a consent the client must have given."""

    countries: frozenset[str] = attrs.field(default=frozenset(), converter=_countries)
    languages: frozenset[str] = attrs.field(default=frozenset(), converter=_languages)
    segments: frozenset[str] = attrs.field(default=frozenset(), converter=_segments)
    tiers: frozenset[str] = attrs.field(default=frozenset(), converter=_tiers)
    consent: Consent | None = attrs.field(
        default=None, validator=attrs.validators.optional(_instance(Consent, "consent"))
    )

    def admits(self, profile: Profile) -> bool:
        for allowed, value in (
            (self.countries, profile.country),
            (self.languages, profile.language),
            (self.segments, profile.segment),
            (self.tiers, profile.tier),
        ):
            if allowed and value not in allowed:
                return False
        return self.consent is None or self.consent in profile.consents


@attrs.frozen(kw_only=True)
class Profile:
    """What the rules ask about a client. ``documents``: (document id, type, expiry) of the
    approved documents that expire; ``milestones``: (name, first instant) of the client's
    milestones (an event type's name, or ``stage:<stage>`` for a lifecycle move)."""

    client_id: str
    country: str | None = None
    language: str | None = None
    time_zone: ZoneInfo = attrs.field(default=ZoneInfo("UTC"), converter=_zone)
    segment: str | None = None
    tier: str | None = None
    birth_date: date | None = None
    consents: frozenset[Consent] = frozenset()
    documents: tuple[tuple[str, str, date], ...] = ()
    milestones: tuple[tuple[str, datetime], ...] = ()

    def milestone(self, name: str) -> datetime | None:
        return next((at for n, at in self.milestones if n == name), None)


class AudienceSource(Protocol):
    """Answers what the rules need about a client as the log stood when an event was
    recorded: its ``position`` and ``recorded_at`` (what its commit held: the events up to that
    position and the rest of that commit, never a later commit recorded at the same instant),
    so a late worker reads what an inline one read. Both None: as it stands now. None: no such
    client."""

    def profile(
        self, client_id: str, *, position: int | None = None, recorded_at: datetime | None = None
    ) -> Profile | None: ...


class ClientAudience:
    """The log-backed :class:`AudienceSource`: reads the client's own stream (``client-<id>``)
    as the log stood at the position asked (and the rest of that position's commit, never a
    later commit, even one recorded at the same instant) and folds it into the Client
    aggregate.

    The log keeps no commit id: the rest of the commit is told by the rows that follow the
    position in the global log with the same recording instant and the same metadata bytes
    (one unit of work writes one metadata record), each stream in one block. Two commits by
    the same actor, with the same reason and correlation id, at the same clock instant, one
    right after the other, are taken for one; broker commands carry a fresh correlation id.

    It answers from the log: the country (registration), the consents in force, the birth date
    (profile), and the milestones (``ClientRegistered`` and ``stage:<stage>`` for each
    lifecycle move, at their recording time). From the host's settings: the language and time
    zone by country (``languages``, ``zones``; else the defaults), and the segment, tier and
    KYC documents through optional callables (``segment_of``, ``tier_of``, ``documents_of``:
    client id -> value; the documents as (document id, type, expiry) of approved ones, e.g. from
    ``kyc.DocumentRegister``).

    ``zones`` and ``languages`` map a two-letter country code (upper-cased here) to an IANA
    zone name and a locale (``de``, ``pt_BR``, ``en-GB``, checked against Babel's data); a
    wrong type is an :class:`~fxcrm_core.kernel.errors.ArgumentTypeError`, a wrong value a
    ValidationError, at construction (never inside a policy).

    Limit: ``segment_of``, ``tier_of`` and ``documents_of`` answer as of now, not as of
    ``position``. A late policy worker (``policies="worker"``) therefore decides an audience
    filtered by segment or tier (and a document-expiry reminder) by the client's segment or
    tier when the worker runs, which may differ from what an inline run would have read at the
    event; only the country, language, consents, birth date and milestones are read as the
    log stood at the event."""

    def __init__(
        self,
        repository: Repository,
        *,
        zones: Mapping[str, str] | None = None,
        default_zone: str = "UTC",
        languages: Mapping[str, str] | None = None,
        default_language: str | None = None,
        segment_of: Callable[[str], str | None] | None = None,
        tier_of: Callable[[str], str | None] | None = None,
        documents_of: Callable[[str], Iterable[tuple[str, str, date]]] | None = None,
    ) -> None:
        self.repository = repository
        self.zones: dict[str, ZoneInfo] = _by_country(zones, "client zones", _zone)
        self.default_zone = _zone(default_zone)
        self.languages: dict[str, str] = _by_country(languages, "client languages", _language)
        self.default_language = None if default_language is None else _language(default_language)
        for name, hook in (
            ("segment_of", segment_of),
            ("tier_of", tier_of),
            ("documents_of", documents_of),
        ):
            if hook is not None and not callable(hook):
                raise ArgumentTypeError(f"{name} is a callable (client id -> value)")
        self.segment_of = segment_of
        self.tier_of = tier_of
        self.documents_of = documents_of

    def profile(
        self, client_id: str, *, position: int | None = None, recorded_at: datetime | None = None
    ) -> Profile | None:
        stream = Client.stream_id_for(client_id)
        decode = self.repository.codec.decode_event
        client = Client.blank(client_id)
        milestones: dict[str, datetime] = {}
        rows = self.repository.store.read_stream(stream)
        if position is not None:
            end = self._commit_end(rows, position, recorded_at)
            rows = [r for r in rows if r.position <= end]
        for stored in rows:
            event = decode(stored.stream_id, stored.event_type, stored.data)
            client = client.fold((event,))
            if isinstance(event, ClientRegistered):
                milestones.setdefault("ClientRegistered", stored.recorded_at)
            elif isinstance(event, StageChanged):
                milestones.setdefault(f"stage:{event.stage.value}", stored.recorded_at)
        if client.stage is None:
            return None
        born = client.birth_date
        return Profile(
            client_id=client_id,
            country=client.country or None,
            language=self.languages.get(client.country, self.default_language),
            time_zone=self.zones.get(client.country, self.default_zone),
            segment=self.segment_of(client_id) if self.segment_of else None,
            tier=self.tier_of(client_id) if self.tier_of else None,
            birth_date=None if born is None else _stored_date(born),
            consents=frozenset(c for c, _ in client.consents),
            documents=tuple(self.documents_of(client_id)) if self.documents_of else (),
            milestones=tuple(sorted(milestones.items())),
        )

    def _commit_end(
        self, rows: list[StoredEvent], position: int, recorded_at: datetime | None
    ) -> int:
        """The last position of ``position``'s commit that ``rows`` (the client's stream)
        could reach: ``position`` itself unless some row after it shares the commit's
        recording instant, then the end of the commit in the global log."""
        later = [r.position for r in rows if r.position > position]
        if recorded_at is None or not later:
            return position
        if not any(r.recorded_at == recorded_at for r in rows if r.position > position):
            return position
        reach = max(later)
        store = self.repository.store
        first = store.read_all(after_position=position - 1, limit=1)
        if not first or first[0].position != position or first[0].recorded_at != recorded_at:
            return position  # the event is not stored there: nothing else of its commit known
        metadata = first[0].metadata
        seen = {first[0].stream_id}
        block = first[0].stream_id
        end = position
        while end < reach:
            page = store.read_all(after_position=end, limit=min(1000, reach - end))
            if not page:
                break
            for row in page:
                if row.recorded_at != recorded_at or row.metadata != metadata:
                    return end
                if row.stream_id != block:
                    if row.stream_id in seen:  # a stream's rows of one commit are one block
                        return end
                    seen.add(row.stream_id)
                    block = row.stream_id
                end = row.position
        return end


def _stored_date(value: BirthDate) -> date | None:
    if value.erased:  # an erased subject's birth date reads as "[erased]"
        return None
    try:
        return date.fromisoformat(value.value)
    except ValueError:
        return None


# -- the rule -----------------------------------------------------------------------------------
def _rule_id(value: object) -> str:
    text = _text(value, "rule id")
    if ":" in text:
        raise ValidationError("a rule id holds no ':'")
    return text


def _params(value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ArgumentTypeError("a rule's parameters are (name, text) pairs")
    if len(value) > MAX_PARAMS // 2:
        raise ValidationError(f"a rule has at most {MAX_PARAMS // 2} parameters")
    out = []
    for pair in value:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ArgumentTypeError("a rule parameter is a (name, text) pair")
        out.append((_text(pair[0], "parameter name"), _text(pair[1], "parameter", 1000)))
    return tuple(out)


@attrs.frozen(kw_only=True)
class EngagementRule:
    """One rule: ``trigger`` -> ``template`` on ``channel`` to the ``audience``, at most once
    per client and ``period``. A DOCUMENT_EXPIRING rule is a SERVICE message."""

    rule_id: str = attrs.field(converter=_rule_id)
    trigger: OnEvent | Scheduled = attrs.field(validator=_instance((OnEvent, Scheduled), "trigger"))
    template: str = attrs.field(converter=_template)
    channel: Channel = attrs.field(validator=_instance(Channel, "channel"))
    audience: Audience = attrs.field(default=Audience(), validator=_instance(Audience, "audience"))
    kind: MessageKind = attrs.field(
        default=MessageKind.MARKETING, validator=_instance(MessageKind, "message kind")
    )
    priority: int = attrs.field(default=0)
    period: RulePeriod = attrs.field(
        default=RulePeriod.ONCE, validator=_instance(RulePeriod, "period")
    )
    params: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_params)
    send_at: time = attrs.field(default=time(9), validator=_instance(time, "send time"))

    @priority.validator
    def _priority(self, _: Any, value: object) -> None:
        _whole(value, "priority", -100, 100)

    def __attrs_post_init__(self) -> None:
        if self.send_at.tzinfo is not None:
            raise ValidationError("a send time is a local time of day, without a zone")
        trigger = self.trigger
        if (
            isinstance(trigger, Scheduled)
            and trigger.kind is ScheduleKind.DOCUMENT_EXPIRING
            and self.kind is not MessageKind.SERVICE
        ):
            raise ValidationError("a document-expiry reminder is a service message")


def _locale(profile: Profile) -> str:
    language = profile.language
    if not language or len(language) > 35:
        return "en"
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in language):
        return "en"
    return language


# -- evaluation -----------------------------------------------------------------------------------
class EngagementRules:
    """Evaluates ``rules`` and queues their messages through ``outbox`` into the caller's
    unit of work. ``clock`` gives only the queuing time of the daily run (the decision itself
    reads the event's instant and the day asked)."""

    def __init__(
        self,
        outbox: Outbox,
        rules: Iterable[EngagementRule],
        audience: AudienceSource,
        *,
        clock: Clock,
        calendar: TradingCalendar | None = None,
        holidays: HolidayData | Mapping[str, Mapping[str, Iterable[date]]] | None = None,
    ) -> None:
        if not isinstance(outbox, Outbox):
            raise ArgumentTypeError("an Outbox is required")
        if isinstance(rules, str | bytes):
            raise ArgumentTypeError("rules are EngagementRule values")
        listed = tuple(rules)
        if not all(isinstance(r, EngagementRule) for r in listed):
            raise ArgumentTypeError("rules are EngagementRule values")
        ids = [r.rule_id for r in listed]
        if len(set(ids)) != len(ids):
            raise ValidationError("two rules share an id")
        self.outbox = outbox
        self.rules = listed
        self.audience = audience
        self.clock = clock
        self.calendar = calendar or TradingCalendar()
        self.holidays = HolidayData.of(holidays)
        known = self.holidays.names()
        any_date = any(d for held in self.holidays.by_country.values() for d in held.values())
        for rule in listed:
            trigger = rule.trigger
            holiday = isinstance(trigger, Scheduled) and trigger.kind is ScheduleKind.HOLIDAY
            if holiday and not any_date:  # it would never fire: the holiday data was forgotten
                raise ValidationError("a holiday rule needs holiday data (dates per country)")
            if (
                isinstance(trigger, Scheduled)
                and trigger.holiday_name is not None
                and trigger.holiday_name not in known
            ):
                raise ValidationError(
                    "a holiday rule names a holiday no country holds in the holiday data"
                )
        self._by_type: dict[str, list[EngagementRule]] = {}
        for rule in listed:
            if isinstance(rule.trigger, OnEvent):
                for name in rule.trigger.event_types:
                    self._by_type.setdefault(name, []).append(rule)

    @property
    def event_types(self) -> frozenset[str]:
        """The names of the events some rule reacts to."""
        return frozenset(self._by_type)

    # -- events ------------------------------------------------------------------------------
    def on_event(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> int:
        """The policy handler: queue the messages the event triggers; returns how many were
        recorded (0 on a replay)."""
        rules = self._by_type.get(type(recorded.event).__name__)
        if not rules:
            return 0
        event: DomainEvent = recorded.event
        matching = [r for r in rules if _on_event(r).condition.matches(event)]
        if not matching:
            return 0
        client_id = self._client_of(recorded, uow)
        if client_id is None:
            return 0
        profile = self.audience.profile(
            client_id, position=recorded.position, recorded_at=recorded.recorded_at
        )
        if profile is None:
            return 0
        instant = _instant(recorded)
        local_day = instant.astimezone(profile.time_zone).date()
        extra = _event_params(event)
        queued = 0
        for rule in matching:
            if not rule.audience.admits(profile):
                continue
            trigger = _on_event(rule)
            queued += self._queue(
                uow, rule, profile, rule.period.label(local_day), extra,
                at=instant, not_before=self._due(trigger, instant),
            )  # fmt: skip
        return queued

    def _due(self, trigger: OnEvent, instant: datetime) -> datetime:
        if trigger.after is not None:
            try:
                return instant + trigger.after
            except OverflowError:
                raise ValidationError("the delay ends after the year 9999") from None
        if trigger.trading_days:
            day = self.calendar.trading_day(instant)
            for _ in range(trigger.trading_days):
                day += timedelta(days=1)
                while not self.calendar.is_trading_day(day):
                    day += timedelta(days=1)
            return self.calendar.session(day)[0]
        return instant

    @staticmethod
    def _client_of(recorded: RecordedEvent[Any], uow: UnitOfWork) -> str | None:
        event = recorded.event
        found = getattr(event, "client_id", None)
        if isinstance(found, str) and found:
            return found
        stream = recorded.stream_id
        if stream.startswith("client-"):
            return stream.removeprefix("client-")
        if isinstance(event, WithdrawalPaid):
            withdrawal = uow.load(Withdrawal, stream.removeprefix("withdrawal-"))
            return withdrawal.client_id if withdrawal is not None and withdrawal.client_id else None
        return None

    # -- the daily run --------------------------------------------------------------------------
    def run_day(self, day: date, uow: UnitOfWork, clients: Iterable[str]) -> int:
        """The scheduled triggers for each of ``clients`` on the local day ``day`` (each
        client's own calendar day: a message is due at the rule's ``send_at`` in the client's
        zone). Returns how many messages were recorded (0 when run again)."""
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ArgumentTypeError("the day is a date")
        scheduled = [r for r in self.rules if isinstance(r.trigger, Scheduled)]
        queued = 0
        for client_id in clients:
            if not scheduled:
                break
            profile = self.audience.profile(client_id)
            if profile is not None:
                queued += self._scheduled(day, uow, profile, scheduled)
        return queued

    def run_due(self, now: datetime, uow: UnitOfWork, clients: Iterable[str]) -> int:
        """Like :meth:`run_day` for each client's own local date at the instant ``now`` (a
        client in Kiritimati is a day ahead of one in Honolulu)."""
        instant = to_utc(now, "now")
        scheduled = [r for r in self.rules if isinstance(r.trigger, Scheduled)]
        queued = 0
        for client_id in clients:
            if not scheduled:
                break
            profile = self.audience.profile(client_id)
            if profile is not None:
                day = instant.astimezone(profile.time_zone).date()
                queued += self._scheduled(day, uow, profile, scheduled)
        return queued

    def _scheduled(
        self, day: date, uow: UnitOfWork, profile: Profile, rules: list[EngagementRule]
    ) -> int:
        queued = 0
        now = to_utc(self.clock.now(), "clock")
        for rule in rules:
            if not rule.audience.admits(profile):
                continue
            trigger = rule.trigger
            assert isinstance(trigger, Scheduled)
            for label_day, extra in _fires(trigger, day, profile, self.holidays):
                due = _local(label_day if trigger.kind is not ScheduleKind.DOCUMENT_EXPIRING
                             else day, rule.send_at, profile.time_zone)  # fmt: skip
                queued += self._queue(
                    uow, rule, profile, rule.period.label(label_day), extra, at=now, not_before=due
                )
        return queued

    def _queue(
        self,
        uow: UnitOfWork,
        rule: EngagementRule,
        profile: Profile,
        period: str,
        extra: tuple[tuple[str, str], ...],
        *,
        at: datetime,
        not_before: datetime,
    ) -> int:
        recorded = self.outbox.queue(
            uow,
            rule_id=rule.rule_id,
            client_id=profile.client_id,
            period=period,
            channel=rule.channel,
            template=rule.template,
            params=(*rule.params, *extra),
            locale=_locale(profile),
            kind=rule.kind,
            priority=rule.priority,
            at=at,
            not_before=not_before,
        )
        return 1 if recorded else 0


def _on_event(rule: EngagementRule) -> OnEvent:
    trigger = rule.trigger
    assert isinstance(trigger, OnEvent)
    return trigger


def _instant(recorded: RecordedEvent[Any]) -> datetime:
    """The event's own instant: its ``effective_at`` or ``at`` when it carries one, else when
    it was recorded."""
    event = recorded.event
    for name in ("effective_at", "at"):
        value = getattr(event, name, None)
        if isinstance(value, datetime):
            return to_utc(value, name)
    return to_utc(recorded.recorded_at, "recorded_at")


def _event_params(event: DomainEvent) -> tuple[tuple[str, str], ...]:
    if isinstance(event, TierChanged):
        return (("tier", event.to_tier),)
    return ()


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    try:
        return to_utc(datetime.combine(day, at, tzinfo=zone), "send time")
    except (OverflowError, FxCrmError):
        return datetime.combine(day, at, tzinfo=UTC)


def _fires(
    trigger: Scheduled, day: date, profile: Profile, holidays: HolidayData | None = None
) -> list[tuple[date, tuple[tuple[str, str], ...]]]:
    """(the day the period is taken from, extra parameters) for each message the trigger
    gives on the client's local ``day``."""
    if trigger.kind is ScheduleKind.HOLIDAY:
        return _holiday_fires(trigger, day, profile, holidays)
    if trigger.kind is ScheduleKind.BIRTHDAY:
        born = profile.birth_date
        if born is None or born > day:
            return []
        for year in (day.year, day.year - 1):  # a birthday on 31 December caught up in January
            if not born.year <= year <= 9999:
                continue
            observed = observed_birthday(born, year, trigger.leap_day)
            if 0 <= (day - observed).days <= CATCH_UP_DAYS:
                return [(observed, ())]
        return []
    if trigger.kind is ScheduleKind.DOCUMENT_EXPIRING:
        out: list[tuple[date, tuple[tuple[str, str], ...]]] = []
        for _, doc_type, expires_on in sorted(profile.documents, key=lambda d: (d[2], d[0])):
            if day < expires_on and (expires_on - day).days <= trigger.days:
                params = (("document_type", doc_type), ("expires_on", expires_on.isoformat()))
                out.append((expires_on, params))
        return out
    name = trigger.event_type
    first = profile.milestone(name) if name is not None else None
    if first is None:
        return []
    start = first.astimezone(profile.time_zone).date()
    try:
        target = start + timedelta(days=trigger.days)
    except OverflowError:
        return []
    return [(target, ())] if 0 <= (day - target).days <= CATCH_UP_DAYS else []


def _holiday_fires(
    trigger: Scheduled, day: date, profile: Profile, holidays: HolidayData | None
) -> list[tuple[date, tuple[tuple[str, str], ...]]]:
    """The holiday dates of the client's country from ``day`` back :data:`CATCH_UP_DAYS`
    days, oldest first (one per date: the trigger's holiday, or the first name on it)."""
    if holidays is None or profile.country is None:
        return []
    out: list[tuple[date, tuple[tuple[str, str], ...]]] = []
    for back in range(CATCH_UP_DAYS, -1, -1):
        try:
            held = day - timedelta(days=back)
        except OverflowError:
            continue
        names = holidays.on(profile.country, held)
        if trigger.holiday_name is not None:
            names = tuple(n for n in names if n == trigger.holiday_name)
        if names:
            out.append((held, (("holiday", names[0]), ("holiday_date", held.isoformat()))))
    return out
