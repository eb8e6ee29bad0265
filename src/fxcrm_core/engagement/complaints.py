"""Client complaints under a regulator's clock: opened, acknowledged, assigned, resolved with a
final reply, reopened, and escalated once per deadline when the clock runs out.

A :class:`Complaint` lives on its ``complaint-<id>`` stream. Its deadlines are counted in
business days of a :class:`BusinessCalendar` (weekends and the host's holidays per country
skipped) and fall at the end of the business day in the broker's zone; they are written into the
events that start each clock, so a later change of policy or holidays never moves a deadline
already given. The complaint's text and the final reply are personal data, sealed per client.
"""

from __future__ import annotations

import enum
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any, Self
from zoneinfo import ZoneInfo

import attrs

from fxcrm_core.access.control import AccessControl, Actor
from fxcrm_core.engagement._clients import live_client
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel.clock import Clock
from fxcrm_core.kernel.errors import (
    ArgumentTypeError,
    ConcurrencyError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc, zone_info

__all__ = [
    "COMPLAINT_EVENTS",
    "COMPLAINT_PERMISSIONS",
    "BusinessCalendar",
    "Complaint",
    "ComplaintAcknowledged",
    "ComplaintAssigned",
    "ComplaintBook",
    "ComplaintEscalated",
    "ComplaintOpened",
    "ComplaintOutcome",
    "ComplaintPolicy",
    "ComplaintReopened",
    "ComplaintResolved",
    "ComplaintStatus",
    "Complaints",
    "SlaStage",
    "complaint_text",
]

#: The permissions this module checks, and the roles the default policy should grant them to
#: (``complaint.open`` and ``complaint.read`` on the client's own rows for the client role).
COMPLAINT_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "client": frozenset({"complaint.open", "complaint.read"}),
    "support": frozenset({"complaint.open", "complaint.read", "complaint.handle"}),
    "compliance": frozenset({"complaint.read", "complaint.handle"}),
}

_SYSTEM = "system:complaints"
_TEXT_LIMIT = 10_000
_MAX_DAYS = 400
_MAX_CLOSED = 3661  # days a calendar may stay closed in a row
#: A text may hold line breaks and tabs; other control and format characters are refused.
_ALLOWED_CONTROLS = frozenset("\n\r\t")


def complaint_text(value: object, what: str) -> str:
    """A complaint's or a reply's text: stripped, not empty, at most 10,000 characters, line
    breaks allowed but no other control or format character. Messages name ``what`` only."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"the {what} is text")
    if len(value) > 4 * _TEXT_LIMIT:
        raise ValidationError(f"the {what} is longer than {_TEXT_LIMIT} characters")
    if any(
        unicodedata.category(ch) in ("Cc", "Cf", "Cs") and ch not in _ALLOWED_CONTROLS
        for ch in value
    ):
        raise ValidationError(f"the {what} holds a control character")
    value = value.strip()
    if not value:
        raise ValidationError(f"the {what} is empty")
    if len(value) > _TEXT_LIMIT:
        raise ValidationError(f"the {what} is longer than {_TEXT_LIMIT} characters")
    return value


def _zone(value: object) -> ZoneInfo:
    return zone_info(value, "zone")


def _maybe_country(value: object) -> str | None:
    return None if value is None else _country(value)


def _country(value: object) -> str:
    text = checked_text(value, "country code", 2).upper()
    if len(text) != 2 or not text.isascii() or not text.isalpha():
        raise ValidationError("a country code is two letters")
    return text


def _holidays(value: object) -> Mapping[str, frozenset[date]]:
    if not isinstance(value, Mapping):
        raise ArgumentTypeError("holidays map a country code to its dates")
    out: dict[str, frozenset[date]] = {}
    for country, days in value.items():
        if isinstance(days, str | bytes) or not isinstance(days, Iterable):
            raise ArgumentTypeError("a country's holidays are a collection of dates")
        items = list(days)
        # Checked before hashing: an unhashable item (a list) is refused typed here.
        if not all(isinstance(d, date) and not isinstance(d, datetime) for d in items):
            raise ArgumentTypeError("holidays are dates (not datetimes)")
        dates = frozenset(items)
        code = _country(country)
        out[code] = out.get(code, frozenset()) | dates
    return out


def _weekend(value: object) -> frozenset[int]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ArgumentTypeError("the weekend is a collection of weekday numbers")
    items = list(value)
    if not all(type(d) is int and 0 <= d <= 6 for d in items):
        raise ValidationError("the weekend is at most five weekday numbers, 0 (Monday) to 6")
    days = frozenset(items)
    if len(days) > 5:
        raise ValidationError("the weekend is at most five weekday numbers, 0 (Monday) to 6")
    return days


def _day_end(day: date, zone: ZoneInfo) -> datetime:
    """The instant ``day`` ends in ``zone`` (its next midnight, in UTC). A midnight skipped by
    a DST jump is the first instant after the gap; a midnight repeated is the later one, so the
    day keeps every hour it has."""
    try:
        after = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
        return max(to_utc(after), to_utc(after.replace(fold=1)))
    except OverflowError:
        raise _past_last_day() from None


def _past_last_day() -> ValidationError:
    return ValidationError("the deadline falls outside the days a date can hold (years 1 to 9999)")


@attrs.frozen
class BusinessCalendar:
    """Business days: every day but the ``weekend`` (Saturday and Sunday by default) and the
    holidays the host gives per country (two-letter code → dates).

    >>> cal = BusinessCalendar({"GB": [date(2026, 4, 3), date(2026, 4, 6)]}, country="GB")
    >>> cal.add_business_days(datetime(2026, 4, 2, 15, tzinfo=ZoneInfo("UTC")), 1,
    ...                       "Europe/London").isoformat()
    '2026-04-07T23:00:00+00:00'
    """

    holidays: Mapping[str, frozenset[date]] = attrs.field(factory=dict, converter=_holidays)
    country: str | None = attrs.field(default=None, converter=_maybe_country)
    weekend: frozenset[int] = attrs.field(default=frozenset({5, 6}), converter=_weekend)

    def _closed(self, country: str | None) -> frozenset[date]:
        code = self.country if country is None else _country(country)
        return self.holidays.get(code, frozenset()) if code is not None else frozenset()

    def is_business_day(self, day: date, country: str | None = None) -> bool:
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ArgumentTypeError("a business day is a date")
        return day.weekday() not in self.weekend and day not in self._closed(country)

    def business_day_of(self, start: datetime, zone: str | ZoneInfo, n: int = 0,
                        country: str | None = None) -> date:  # fmt: skip
        """The business day ``n`` business days after the day ``start`` falls on in ``zone``
        (a start on a closed day counts from the next business day)."""
        if type(n) is not int or not 0 <= n <= _MAX_DAYS:
            raise ValidationError(f"a number of business days is 0 to {_MAX_DAYS}")
        instant = to_utc(start, "start")
        zone_info = _zone(zone)
        closed = self._closed(country)

        def open_(d: date) -> bool:
            return d.weekday() not in self.weekend and d not in closed

        def next_open(d: date) -> date:
            """The first business day from ``d`` (``d`` itself when open)."""
            for _ in range(_MAX_CLOSED):  # a calendar closed for ten years is a host's mistake
                if open_(d):
                    return d
                d += timedelta(days=1)
            raise ValidationError("the calendar has no business day within ten years")

        try:
            local = next_open(instant.astimezone(zone_info).date())
            for _ in range(n):
                local = next_open(local + timedelta(days=1))
        except OverflowError:  # past date.max (9999-12-31)
            raise _past_last_day() from None
        return local

    def add_business_days(
        self, start: datetime, n: int, zone: str | ZoneInfo, country: str | None = None
    ) -> datetime:
        """The end (in UTC) of the business day ``n`` business days after ``start``'s day in
        ``zone``: a deadline "within ``n`` business days". A start on a weekend or a holiday
        counts as received on the next business day; ``n`` = 0 is the end of that day."""
        zone_info = _zone(zone)
        return _day_end(self.business_day_of(start, zone_info, n, country), zone_info)


def _categories(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ArgumentTypeError("categories are a list of names")
    names = tuple(checked_text(v, "complaint category", 64) for v in value)
    if not names or len(set(names)) != len(names):
        raise ValidationError("categories are one or more distinct names")
    return names


def _policy_days(value: object) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_DAYS:
        raise ValidationError(f"an SLA is 0 to {_MAX_DAYS} business days")
    return value


@attrs.frozen
class ComplaintPolicy:
    """What the broker's regulator sets: the complaint categories, acknowledgement within
    ``acknowledge_days`` and resolution within ``resolve_days`` business days, counted in the
    broker's ``zone`` on the holidays of ``country`` (None: the calendar's own country)."""

    categories: tuple[str, ...] = attrs.field(converter=_categories)
    acknowledge_days: int = attrs.field(default=3, validator=lambda _, __, v: _policy_days(v))
    resolve_days: int = attrs.field(default=15, validator=lambda _, __, v: _policy_days(v))
    zone: str = attrs.field(default="UTC")
    country: str | None = attrs.field(default=None, converter=_maybe_country)

    def __attrs_post_init__(self) -> None:
        _zone(self.zone)
        if self.acknowledge_days > self.resolve_days:
            raise ValidationError("acknowledgement is due no later than resolution")


class ComplaintStatus(enum.Enum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class ComplaintOutcome(enum.Enum):
    UPHELD = "upheld"
    PARTLY_UPHELD = "partly_upheld"
    REJECTED = "rejected"


class SlaStage(enum.Enum):
    """The deadline that ran out."""

    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


# What ``pii()`` makes, spelled as attrs.field so that type checkers see the types.
_PII: Any = {"metadata": {"pii": True}, "repr": False}


@attrs.frozen
class ComplaintOpened(DomainEvent):
    """``client_id`` complained (``text``) in ``category`` at ``opened_at``; acknowledgement
    is due by ``acknowledge_by`` and resolution by ``resolve_by`` (ends of business days)."""

    __subject__ = "client_id"
    complaint_id: str
    client_id: str
    category: str
    owner_id: str | None
    opened_at: datetime
    acknowledge_by: datetime
    resolve_by: datetime
    text: str = attrs.field(**_PII)


@attrs.frozen
class ComplaintAcknowledged(DomainEvent):
    complaint_id: str
    client_id: str
    by: str
    at: datetime


@attrs.frozen
class ComplaintAssigned(DomainEvent):
    """The complaint's owner became ``owner_id`` (``previous``: None on the first assignment)."""

    complaint_id: str
    client_id: str
    owner_id: str
    previous: str | None
    by: str
    at: datetime


@attrs.frozen
class ComplaintEscalated(DomainEvent):
    """The ``stage`` deadline ``due`` of clock ``cycle`` (0, then one more per reopening) ran
    out; seen at ``at``. Recorded once per deadline."""

    complaint_id: str
    client_id: str
    stage: SlaStage
    cycle: int
    due: datetime
    at: datetime
    owner_id: str | None


@attrs.frozen
class ComplaintResolved(DomainEvent):
    """The final reply (``reply``, personal data) with its ``outcome``."""

    __subject__ = "client_id"
    complaint_id: str
    client_id: str
    outcome: ComplaintOutcome
    by: str
    at: datetime
    reply: str = attrs.field(**_PII)


@attrs.frozen
class ComplaintReopened(DomainEvent):
    """The resolved complaint is open again (clock ``cycle``), to be resolved by
    ``resolve_by``; ``reason`` (personal data) may say why."""

    __subject__ = "client_id"
    complaint_id: str
    client_id: str
    cycle: int
    by: str
    at: datetime
    resolve_by: datetime
    reason: str | None = attrs.field(default=None, **_PII)


COMPLAINT_EVENTS: tuple[type[DomainEvent], ...] = (
    ComplaintOpened,
    ComplaintAcknowledged,
    ComplaintAssigned,
    ComplaintEscalated,
    ComplaintResolved,
    ComplaintReopened,
)


@attrs.frozen(kw_only=True)
class Complaint(Aggregate):
    """One complaint's state (id: the complaint id), without its texts (read them from its
    events): status, owner, the deadlines of the current clock and those already escalated."""

    category = "complaint"
    client_id: str = ""
    kind: str = ""  # the complaint's category (``category`` is the stream prefix)
    owner_id: str | None = None
    status: ComplaintStatus = ComplaintStatus.OPEN
    opened_at: datetime | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    outcome: ComplaintOutcome | None = None
    acknowledge_by: datetime | None = None
    resolve_by: datetime | None = None
    cycle: int = 0
    escalated: tuple[tuple[SlaStage, int], ...] = ()

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, ComplaintOpened):
            return self.evolve(
                client_id=event.client_id,
                kind=event.category,
                owner_id=event.owner_id,
                opened_at=event.opened_at,
                acknowledge_by=event.acknowledge_by,
                resolve_by=event.resolve_by,
            )
        if isinstance(event, ComplaintAcknowledged):
            return self.evolve(status=ComplaintStatus.ACKNOWLEDGED, acknowledged_at=event.at)
        if isinstance(event, ComplaintAssigned):
            return self.evolve(owner_id=event.owner_id)
        if isinstance(event, ComplaintEscalated):
            return self.evolve(escalated=(*self.escalated, (event.stage, event.cycle)))
        if isinstance(event, ComplaintResolved):
            return self.evolve(
                status=ComplaintStatus.RESOLVED,
                resolved_at=event.at,
                outcome=event.outcome,
                acknowledged_at=self.acknowledged_at or event.at,
            )
        if isinstance(event, ComplaintReopened):
            return self.evolve(
                status=ComplaintStatus.ACKNOWLEDGED,
                resolved_at=None,
                outcome=None,
                resolve_by=event.resolve_by,
                cycle=event.cycle,
            )
        raise ValidationError(f"Complaint cannot apply {type(event).__name__}")

    def overdue(self, now: datetime) -> list[tuple[SlaStage, datetime]]:
        """The deadlines past at ``now`` and not escalated yet (none once resolved)."""
        if self.status is ComplaintStatus.RESOLVED or self.opened_at is None:
            return []
        found: list[tuple[SlaStage, datetime]] = []
        ack, res = self.acknowledge_by, self.resolve_by
        if (
            self.acknowledged_at is None
            and ack is not None
            and now >= ack
            and (SlaStage.ACKNOWLEDGE, 0) not in self.escalated
        ):
            found.append((SlaStage.ACKNOWLEDGE, ack))
        if res is not None and now >= res and (SlaStage.RESOLVE, self.cycle) not in self.escalated:
            found.append((SlaStage.RESOLVE, res))
        return found


class ComplaintBook:
    """A memory read model of every complaint's state (no texts), rebuilt from the log: lets
    :meth:`Complaints.check_deadlines` find the complaints with a deadline past."""

    name = "complaint-book"
    event_types: frozenset[str] | None = frozenset(c.__name__ for c in COMPLAINT_EVENTS)

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.states: dict[str, Complaint] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        key = getattr(event, "complaint_id", None)
        if isinstance(event, COMPLAINT_EVENTS) and isinstance(key, str):
            state = self.states.get(key) or Complaint.blank(key)
            self.states[key] = state.apply(event).evolve(version=recorded.version)

    def open_due(self, now: datetime) -> list[Complaint]:
        """Complaints with a deadline past at ``now`` not yet escalated."""
        return [s for s in self.states.values() if s.overdue(now)]


def _staff_id(value: object) -> str:
    owner = checked_text(value, "owner id", 100)
    if not owner.startswith("staff:"):
        raise ValidationError("an owner is a staff id (staff:<id>)")
    return owner


class Complaints:
    """The complaints service: open, acknowledge, assign, resolve, reopen, read; and
    :meth:`check_deadlines`, a scheduler job recording each escalation once.

    Permissions: ``complaint.open`` (the client on its own rows, support),
    ``complaint.handle`` (support, compliance), ``complaint.read`` (the client on its own rows,
    support, compliance).
    """

    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        clock: Clock,
        policy: ComplaintPolicy,
        calendar: BusinessCalendar,
        *,
        ids: IdGenerator | None = None,
        require_client: bool = False,
    ) -> None:
        if not isinstance(repository, Repository):
            raise ArgumentTypeError("complaints need a repository")
        if not isinstance(require_client, bool):
            raise ArgumentTypeError("require_client is True or False")
        if not isinstance(access, AccessControl):
            raise ArgumentTypeError("complaints need an AccessControl")
        if not callable(getattr(clock, "now", None)):
            raise ArgumentTypeError("complaints need a clock")
        if not isinstance(policy, ComplaintPolicy):
            raise ArgumentTypeError("policy is a ComplaintPolicy")
        if not isinstance(calendar, BusinessCalendar):
            raise ArgumentTypeError("calendar is a BusinessCalendar")
        self.repository = repository
        self.access = access
        self.clock = clock
        self.policy = policy
        self.calendar = calendar
        self.ids = ids or IdGenerator(clock)
        self.require_client = require_client
        self._projections = ProjectionRunner(repository.store, repository.codec)
        self._book = ComplaintBook()
        self._lock = threading.Lock()

    # -- commands -----------------------------------------------------------------------------
    def _deadline(self, start: datetime, days: int) -> datetime:
        return self.calendar.add_business_days(start, days, self.policy.zone, self.policy.country)

    def open(
        self,
        actor: Actor,
        client_id: str,
        category: str,
        text: str,
        *,
        owner_id: str | None = None,
        complaint_id: str | None = None,
    ) -> Complaint:
        """Record a complaint of ``client_id``; its SLA clock starts now. Naming its handler
        (``owner_id``) at opening needs ``complaint.handle`` too: a client does not route its
        own complaint. With ``require_client`` the client must be registered and not erased."""
        client = checked_text(client_id, "client id", 100)
        self.access.require(actor, "complaint.open", client_id=client)
        if owner_id is not None:
            self.access.require(actor, "complaint.handle", client_id=client)
        kind = checked_text(category, "complaint category", 64)
        if kind not in self.policy.categories:
            raise ValidationError("the complaint category is not one the broker lists")
        body = complaint_text(text, "complaint text")
        owner = None if owner_id is None else _staff_id(owner_id)
        key = self.ids() if complaint_id is None else checked_text(complaint_id, "complaint id")
        if self.require_client:
            live_client(self.repository, client)
        now = to_utc(self.clock.now(), "now")
        event = ComplaintOpened(
            key,
            client,
            kind,
            owner,
            now,
            self._deadline(now, self.policy.acknowledge_days),
            self._deadline(now, self.policy.resolve_days),
            body,
        )
        with UnitOfWork(self.repository, EventMetadata(actor.id)) as uow:
            if uow.load(Complaint, key) is not None:
                raise IllegalTransitionError("a complaint with that id exists")
            state = uow.record(Complaint.blank(key), event)
            uow.commit()
        return state

    def _change(
        self, actor: Actor, complaint_id: str, decide: Any, permission: str = "complaint.handle"
    ) -> Complaint:
        key = checked_text(complaint_id, "complaint id")
        with UnitOfWork(self.repository, EventMetadata(actor.id)) as uow:
            state = uow.load(Complaint, key)
            if state is None:
                raise NotFoundError("no complaint with that id")
            self.access.require(actor, permission, client_id=state.client_id)
            events = decide(state, to_utc(self.clock.now(), "now"))
            state = uow.record(state, *events)
            uow.commit()
        return state

    def acknowledge(self, actor: Actor, complaint_id: str) -> Complaint:
        def decide(state: Complaint, now: datetime) -> list[DomainEvent]:
            if state.status is not ComplaintStatus.OPEN:
                raise IllegalTransitionError("the complaint is acknowledged already")
            return [ComplaintAcknowledged(state.id, state.client_id, actor.id, now)]

        return self._change(actor, complaint_id, decide)

    def assign(self, actor: Actor, complaint_id: str, owner_id: str) -> Complaint:
        owner = _staff_id(owner_id)

        def decide(state: Complaint, now: datetime) -> list[DomainEvent]:
            if state.owner_id == owner:
                raise IllegalTransitionError("the complaint has that owner already")
            return [ComplaintAssigned(state.id, state.client_id, owner, state.owner_id,
                                      actor.id, now)]  # fmt: skip

        return self._change(actor, complaint_id, decide)

    def resolve(
        self, actor: Actor, complaint_id: str, outcome: ComplaintOutcome, reply: str
    ) -> Complaint:
        """Close the complaint with the final reply to the client."""
        if not isinstance(outcome, ComplaintOutcome):
            raise ArgumentTypeError("outcome is a ComplaintOutcome")
        body = complaint_text(reply, "final reply")

        def decide(state: Complaint, now: datetime) -> list[DomainEvent]:
            if state.status is ComplaintStatus.RESOLVED:
                raise IllegalTransitionError("the complaint is resolved already")
            return [ComplaintResolved(state.id, state.client_id, outcome, actor.id, now, body)]

        return self._change(actor, complaint_id, decide)

    def reopen(self, actor: Actor, complaint_id: str, reason: str | None = None) -> Complaint:
        """Open a resolved complaint again (the client, or support for it): a new resolution
        clock of the policy's ``resolve_days`` starts now."""
        why = None if reason is None else complaint_text(reason, "reopening reason")

        def decide(state: Complaint, now: datetime) -> list[DomainEvent]:
            if state.status is not ComplaintStatus.RESOLVED:
                raise IllegalTransitionError("only a resolved complaint is reopened")
            due = self._deadline(now, self.policy.resolve_days)
            return [ComplaintReopened(state.id, state.client_id, state.cycle + 1, actor.id,
                                      now, due, why)]  # fmt: skip

        return self._change(actor, complaint_id, decide, "complaint.open")

    # -- reading ------------------------------------------------------------------------------
    def get(self, actor: Actor, complaint_id: str) -> Complaint:
        key = checked_text(complaint_id, "complaint id")
        state = self.repository.load(Complaint, key)
        if state is None:
            raise NotFoundError("no complaint with that id")
        self.access.require(actor, "complaint.read", client_id=state.client_id)
        return state

    def thread(self, actor: Actor, complaint_id: str) -> list[RecordedEvent[DomainEvent]]:
        """The complaint's events, oldest first, texts decrypted (``ERASED`` once the client's
        key is shredded)."""
        state = self.get(actor, complaint_id)
        decode = self.repository.codec.decode
        return [decode(row) for row in self.repository.store.read_stream(state.stream_id)]

    # -- the scheduler job --------------------------------------------------------------------
    def check_deadlines(self, now: datetime | None = None) -> list[ComplaintEscalated]:
        """Record an escalation for every deadline past at ``now`` (default: the clock's now)
        not escalated yet; returns those recorded here. However often it runs, and in however
        many processes at once, each deadline is escalated once: the append names the
        version it decided on, and a complaint another process escalated first is re-read.

        ``now`` after the clock's now is refused (ValidationError, nothing recorded): a
        deadline is escalated once, so one escalated before it passed would never be again."""
        clock_now = to_utc(self.clock.now(), "now")
        when = clock_now if now is None else to_utc(now, "now")
        if when > clock_now:
            raise ValidationError("deadlines are checked at the clock's now or before, not later")
        with self._lock:
            self._projections.catch_up(self._book)
            due = self._book.open_due(when)
        recorded: list[ComplaintEscalated] = []
        for known in due:
            for _ in range(5):
                try:
                    recorded.extend(self._escalate(known.id, when))
                    break
                except ConcurrencyError:
                    continue  # another process wrote to it: decide again on its new state
        return recorded

    def _escalate(self, key: str, when: datetime) -> list[ComplaintEscalated]:
        with UnitOfWork(self.repository, EventMetadata(_SYSTEM, reason="complaint SLA")) as uow:
            state = uow.load(Complaint, key)
            if state is None:
                return []
            events = [
                ComplaintEscalated(state.id, state.client_id, stage,
                                   0 if stage is SlaStage.ACKNOWLEDGE else state.cycle,
                                   due, when, state.owner_id)
                for stage, due in state.overdue(when)
            ]  # fmt: skip
            if not events:
                return []
            uow.record(state, *events)
            uow.commit()
        return events
