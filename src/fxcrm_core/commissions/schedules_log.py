"""Schedule versions kept in the event log: each new version is a recorded event on the
schedule's own stream (``ibschedule-<id>``) with who recorded it and why, so "the schedule as of
T" and "who changed this rate, and when" are answered from the log, the same in every process.

A stored version is a :class:`ScheduleVersionRecorded` event holding the whole
:class:`~fxcrm_core.commissions.Schedule`; its rules are stored through the plan registry
(:func:`~fxcrm_core.commissions.plans.plan_to_data`), so a new plan kind stores without codec
edits, and a kind this code does not know reads as a CodecError.

:class:`RecordedScheduleBook` is a :class:`~fxcrm_core.commissions.ScheduleBook` fed from one
schedule's stream: the engine holds one and calls ``catch_up()`` to see versions recorded since
(by any process). :class:`ScheduleService` records versions (permission ``ib.schedule``) and
reads the stream up to its end before every answer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Self

import attrs

from fxcrm_core.access import AccessControl, Actor
from fxcrm_core.commissions.network import service_parts
from fxcrm_core.commissions.plans import plan_from_data, plan_to_data
from fxcrm_core.commissions.schedule import (
    CapPeriod,
    Ceiling,
    PeriodCap,
    Revenue,
    Rule,
    Schedule,
    ScheduleBook,
    Trigger,
    _schedule_id,
)
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    RecordedEvent,
    Repository,
    UnitOfWork,
    ValueCodec,
)
from fxcrm_core.kernel.clock import Clock
from fxcrm_core.kernel.errors import (
    CodecError,
    FxCrmError,
    IdempotencyConflictError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.kernel.time import to_utc

__all__ = [
    "SCHEDULE_EVENTS",
    "SCHEDULE_PERMISSION",
    "RecordedScheduleBook",
    "ScheduleConflictError",
    "ScheduleService",
    "ScheduleStream",
    "ScheduleVersionRecorded",
    "schedule_from_data",
    "schedule_to_data",
]

#: The permission to record a schedule version.
SCHEDULE_PERMISSION = "ib.schedule"


class ScheduleConflictError(IdempotencyConflictError):
    """A configured schedule version differs from the version of that number in the log."""

    default_message = "a configured schedule version differs from the recorded one"


# -- the stored form ----------------------------------------------------------------------------


def _rule_data(rule: Rule | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {
        "plan": plan_to_data(rule.plan),
        "trigger": rule.trigger.value,
        "cap_per_deal": None if rule.cap_per_deal is None else str(rule.cap_per_deal),
        "min_hold_us": None if rule.min_hold is None else rule.min_hold // _MICROSECOND,
    }


def _rule_of(data: Any) -> Rule | None:
    if data is None:
        return None
    cap, hold = data["cap_per_deal"], data["min_hold_us"]
    if hold is not None and (type(hold) is not int or not 0 < hold < _MAX_HOLD_US):
        raise CodecError("a stored minimum holding time is malformed")
    return Rule(
        plan_from_data(data["plan"]),
        trigger=Trigger(data["trigger"]),
        cap_per_deal=None if cap is None else Money.parse(cap),
        min_hold=None if hold is None else timedelta(microseconds=hold),
    )


def _rules_data(rules: Mapping[str, Rule]) -> dict[str, Any]:
    return {name: _rule_data(rule) for name, rule in rules.items()}


def _rules_of(data: Any) -> dict[str, Rule]:
    if not isinstance(data, dict):
        raise CodecError("stored rules are an object")
    out = {}
    for name, rule_data in data.items():
        rule = _rule_of(rule_data)
        if rule is None:
            raise CodecError("a stored rule is missing")
        out[name] = rule
    return out


def schedule_to_data(schedule: Schedule) -> dict[str, Any]:
    """The JSON-ready form of one schedule version (rules through the plan registry)."""
    revenue = schedule.revenue
    cap = schedule.period_cap
    return {
        "schedule_id": schedule.schedule_id,
        "version": schedule.version,
        "effective_from": to_utc(schedule.effective_from).isoformat(),
        "currency": schedule.currency.code,
        "by_symbol": _rules_data(schedule.by_symbol),
        "symbol_groups": dict(schedule.symbol_groups),
        "by_symbol_group": _rules_data(schedule.by_symbol_group),
        "by_account_group": _rules_data(schedule.by_account_group),
        "default": _rule_data(schedule.default),
        "lot_modifiers": {g: str(f) for g, f in schedule.lot_modifiers.items()},
        "revenue": {
            "ceiling": revenue.ceiling.value,
            "markups": {s: str(m) for s, m in revenue.markups.items()},
        },
        "cpa": _rule_data(schedule.cpa),
        "period_cap": None
        if cap is None
        else {"amount": str(cap.amount), "period": cap.period.value},
    }


def schedule_from_data(data: object) -> Schedule:
    """A schedule version from its stored form; anything malformed (an unknown plan kind, a
    value out of range) is a CodecError that never echoes the stored values."""
    if not isinstance(data, dict):
        raise CodecError("a stored schedule is an object")
    try:
        revenue, cap = data["revenue"], data["period_cap"]
        return Schedule(
            data["schedule_id"],
            data["version"],
            datetime.fromisoformat(data["effective_from"]),
            Currency.of(data["currency"]),
            by_symbol=_rules_of(data["by_symbol"]),
            symbol_groups=data["symbol_groups"],
            by_symbol_group=_rules_of(data["by_symbol_group"]),
            by_account_group=_rules_of(data["by_account_group"]),
            default=_rule_of(data["default"]),
            lot_modifiers={g: Decimal(f) for g, f in data["lot_modifiers"].items()},
            revenue=Revenue(
                Ceiling(revenue["ceiling"]),
                {s: Money.parse(m) for s, m in revenue["markups"].items()},
            ),
            cpa=_rule_of(data["cpa"]),
            period_cap=None
            if cap is None
            else PeriodCap(Money.parse(cap["amount"]), CapPeriod(cap["period"])),
        )
    except CodecError:
        raise
    except FxCrmError as error:
        raise CodecError(f"a stored schedule is invalid: {type(error).__name__}") from None
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError):
        raise CodecError("a stored schedule is malformed") from None


_MICROSECOND = timedelta(microseconds=1)
_MAX_HOLD_US = 10**15
SCHEDULE_FORM = ValueCodec(Schedule, schedule_to_data, schedule_from_data)


@attrs.frozen
class ScheduleVersionRecorded(DomainEvent):
    """A new version of a schedule (its id and number are the schedule's own)."""

    schedule: Schedule

    __value_codecs__ = (SCHEDULE_FORM,)


SCHEDULE_EVENTS: tuple[type[DomainEvent], ...] = (ScheduleVersionRecorded,)


@attrs.frozen(kw_only=True)
class ScheduleStream(Aggregate):
    """The stream one schedule's versions go to (id: the schedule id); version n of the stream
    is version n of the schedule."""

    category = "ibschedule"

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, ScheduleVersionRecorded):
            return self
        raise ValidationError(f"ScheduleStream cannot apply {type(event).__name__}")


# -- reading the log ----------------------------------------------------------------------------


class RecordedScheduleBook(ScheduleBook):
    """The versions of one schedule as its stream holds them, with each version's record (who,
    when, why). :meth:`catch_up` reads versions recorded since (by any process)."""

    def __init__(self, repository: Repository, schedule_id: str) -> None:
        super().__init__()
        if not isinstance(repository, Repository):
            raise ValidationError("a recorded schedule book needs a repository")
        self.repository = repository
        self.schedule_id = _schedule_id(schedule_id)
        self.stream_id = ScheduleStream.stream_id_for(self.schedule_id)
        self.records: list[RecordedEvent[ScheduleVersionRecorded]] = []
        self._lock = threading.RLock()

    @property
    def recorded(self) -> int:
        """How many versions this book has read."""
        return len(self.records)

    def catch_up(self) -> int:
        """Read the versions recorded since the book last looked; returns how many."""
        with self._lock:
            stored = self.repository.store.read_stream(self.stream_id, after_version=self.recorded)
            decode = self.repository.codec.decode
            for row in stored:
                recorded = decode(row)
                event = recorded.event
                if not isinstance(event, ScheduleVersionRecorded):
                    raise CodecError("a schedule stream holds schedule versions only")
                if recorded.version != self.recorded + 1 or event.schedule.version != (
                    recorded.version
                ):
                    raise CodecError("a schedule stream's versions follow each other")
                self.add(event.schedule)
                self.records.append(
                    RecordedEvent(recorded.stream_id, recorded.version, recorded.position,
                                  recorded.recorded_at, event, recorded.metadata)
                )  # fmt: skip
            return len(stored)

    def versions(self) -> list[Schedule]:
        """Every version read so far, oldest first."""
        return [r.event.schedule for r in self.records]


class ScheduleService:
    """Records schedule versions and answers questions about them from the log, read up to its
    end first (so a version recorded by another process is seen at once).

    Recording needs the ``ib.schedule`` permission, an actor and a reason (both go into the
    event's metadata). A new version takes effect no earlier than it is recorded: deals already
    settled keep the rates they were paid under. Arguments of the wrong kind are refused with
    ValidationError before anything is read or written; nothing is half-written.
    """

    def __init__(
        self, repository: Repository, access: AccessControl, *, clock: Clock | None = None
    ) -> None:
        self.repository, self.access, self.clock = service_parts(
            repository, access, clock, "the schedule service"
        )
        self._books: dict[str, RecordedScheduleBook] = {}
        self._lock = threading.RLock()

    # -- commands -------------------------------------------------------------------------------
    def record(self, actor: Actor, schedule: Schedule, *, reason: str) -> None:
        """Record ``schedule`` as the next version of its schedule (version 1 first)."""
        self._allowed(actor, reason)
        if not isinstance(schedule, Schedule):
            raise ValidationError("a schedule version is a Schedule")
        if schedule.effective_from < self.clock.now():
            raise ValidationError(
                "a new schedule version takes effect no earlier than it is recorded"
            )
        with self._lock:
            self._append(actor, reason, [schedule])

    def ensure(self, actor: Actor, versions: Iterable[Schedule], *, reason: str) -> list[Schedule]:
        """Record the configured ``versions`` the log does not hold yet (any effective date for
        a schedule not recorded yet: the broker's configuration, the same in every process; a
        version added to a recorded schedule takes effect no earlier than now, as with
        :meth:`record`); returns those recorded now.

        Idempotent. A configured version that differs from the recorded version of that number
        raises ScheduleConflictError, and nothing is recorded."""
        self._allowed(actor, reason)
        if isinstance(versions, Schedule | str | bytes) or not isinstance(versions, Iterable):
            raise ValidationError("ensure takes the configured versions (Schedule objects)")
        configured = list(versions)
        if not all(isinstance(v, Schedule) for v in configured):
            raise ValidationError("ensure takes the configured versions (Schedule objects)")
        with self._lock:
            new: dict[str, list[Schedule]] = {}
            for version in sorted(configured, key=lambda v: (v.schedule_id, v.version)):
                book = self._book(version.schedule_id)
                if version.version <= book.recorded:
                    if book.version(version.version) != version:
                        raise ScheduleConflictError(
                            f"version {version.version} of a configured schedule differs from "
                            "the recorded one: record a new version instead"
                        )
                    continue
                if book.recorded and version.effective_from < self.clock.now():
                    # Seeding an empty schedule may date its versions freely; a version added
                    # to rates already in force may not reach back before it is recorded.
                    raise ValidationError(
                        "a new schedule version takes effect no earlier than it is recorded"
                    )
                new.setdefault(version.schedule_id, []).append(version)
            recorded = []
            for schedule_versions in new.values():
                self._append(actor, reason, schedule_versions)
                recorded.extend(schedule_versions)
            return recorded

    def _allowed(self, actor: Actor, reason: str) -> None:
        if not isinstance(actor, Actor):
            raise ValidationError("a schedule version needs an actor")
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationError("a schedule version needs a reason")
        self.access.require(actor, SCHEDULE_PERMISSION)

    def _append(self, actor: Actor, reason: str, versions: list[Schedule]) -> None:
        book = self._book(versions[0].schedule_id)
        check = ScheduleBook()
        for earlier in book.versions():
            check.add(earlier)
        for version in versions:
            if version.version != len(check) + 1:
                raise ValidationError(f"the next version of this schedule is {len(check) + 1}")
            check.add(version)  # the order of versions and effective dates, before writing
        stream = ScheduleStream(id=book.schedule_id, version=book.recorded)
        with UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason)) as uow:
            uow.record(stream, *(ScheduleVersionRecorded(v) for v in versions))
            uow.commit()
        book.catch_up()

    # -- questions ------------------------------------------------------------------------------
    def _book(self, schedule_id: str) -> RecordedScheduleBook:
        sid = _schedule_id(schedule_id)
        with self._lock:
            book = self._books.get(sid)
            if book is None:
                book = self._books[sid] = RecordedScheduleBook(self.repository, sid)
            book.catch_up()
            return book

    def book(self, schedule_id: str) -> RecordedScheduleBook:
        """A book of the schedule's versions for an engine to hold: its own object, caught up
        now; call its ``catch_up()`` to see versions recorded later."""
        book = RecordedScheduleBook(self.repository, _schedule_id(schedule_id))
        book.catch_up()
        return book

    def versions(self, schedule_id: str) -> list[Schedule]:
        """Every recorded version, oldest first (empty for a schedule never recorded)."""
        return self._book(schedule_id).versions()

    def as_of(self, schedule_id: str, at: datetime) -> Schedule:
        """The version in force at ``at`` (effective time), by every version recorded so far.
        NotFoundError: none was in force then."""
        if not isinstance(at, datetime):
            raise ValidationError("a time is an aware datetime")
        when = to_utc(at, "at")
        return self._book(schedule_id).at(when)

    def history(self, schedule_id: str) -> list[RecordedEvent[ScheduleVersionRecorded]]:
        """Every version as recorded, oldest first, each with who recorded it, when and why."""
        return list(self._book(schedule_id).records)

    def rate_history(
        self, schedule_id: str, symbol: str, account_group: str
    ) -> list[tuple[RecordedEvent[ScheduleVersionRecorded], Rule | None]]:
        """Who changed the rate a deal on ``symbol`` in ``account_group`` earns, and when: the
        records of the versions where the rule resolved for it changed (None: no rule), oldest
        first."""
        for value, what in ((symbol, "a symbol"), (account_group, "an account group")):
            if not isinstance(value, str) or not value.isprintable():
                raise ValidationError(f"{what} is a printable name")
        out: list[tuple[RecordedEvent[ScheduleVersionRecorded], Rule | None]] = []
        before: object = _NOTHING
        for record in self._book(schedule_id).records:
            found = record.event.schedule.resolve(symbol, account_group)
            rule = None if found is None else found[0]
            if rule != before:
                out.append((record, rule))
            before = rule
        return out


_NOTHING = object()
