"""Complaints: business-day SLAs (weekends, holidays, DST), escalation once per deadline (however
often and by however many processes checked), access, and the texts kept out of errors."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fxcrm_core.access import DEFAULT_POLICY, AccessControl, AccessPolicy, Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.engagement.complaints import (
    COMPLAINT_EVENTS,
    COMPLAINT_PERMISSIONS,
    BusinessCalendar,
    Complaint,
    ComplaintEscalated,
    ComplaintOpened,
    ComplaintOutcome,
    ComplaintPolicy,
    ComplaintResolved,
    Complaints,
    ComplaintStatus,
    SlaStage,
)
from fxcrm_core.events import EventCodec, EventRegistry, Repository
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    ArgumentTypeError,
    FxCrmError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.stores import MemoryEventStore

LONDON = "Europe/London"
GB_EASTER = {"GB": [date(2026, 4, 3), date(2026, 4, 6)]}
SUPPORT = Actor.staff("sup-1", Role.SUPPORT)
COMPLIANCE = Actor.staff("cmp-1", Role.COMPLIANCE)
IDKEY = b"k" * 32
SECRET = "my account 4111 1111 1111 1111 was robbed by Ana Lima"


def policy_with_complaints() -> AccessPolicy:
    policy = DEFAULT_POLICY
    for role, perms in COMPLAINT_PERMISSIONS.items():
        policy = policy.with_role(role, policy.grants.get(role, frozenset()) | perms,
                                  policy.scopes[role])  # fmt: skip
    return policy


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


class World:
    """A memory log (PII in clear: the fast set-up for the laws) and the service."""

    def __init__(self, start: datetime, policy: ComplaintPolicy | None = None) -> None:
        registry = EventRegistry()
        registry.register_all(COMPLAINT_EVENTS)
        self.clock = FixedClock(start)
        self.store = MemoryEventStore(self.clock)
        self.repository = Repository(self.store, EventCodec(registry))
        self.complaints = Complaints(
            self.repository,
            AccessControl(policy_with_complaints()),
            self.clock,
            policy or ComplaintPolicy(("trading", "payments"), 1, 3, LONDON, "GB"),
            BusinessCalendar(GB_EASTER),
        )

    def check(self, when: datetime) -> list[ComplaintEscalated]:
        """Move the clock to ``when`` and run the scheduler job (a later ``now`` is refused)."""
        self.clock.set(when)
        return self.complaints.check_deadlines()

    def escalations(self) -> list[ComplaintEscalated]:
        rows = self.store.read_all()
        decoded = [self.repository.codec.decode(r).event for r in rows]
        return [e for e in decoded if isinstance(e, ComplaintEscalated)]


# -- the business calendar ------------------------------------------------------------------------


def test_a_deadline_skips_the_weekend_and_ends_with_the_day_in_the_zone() -> None:
    cal = BusinessCalendar()
    friday = utc(2026, 3, 6, 15)
    assert cal.add_business_days(friday, 1, LONDON) == utc(2026, 3, 10)  # Monday's end (GMT)
    assert cal.add_business_days(friday, 0, LONDON) == utc(2026, 3, 7)  # Friday's end
    saturday = utc(2026, 3, 7, 10)  # received on a weekend: counted from Monday
    assert cal.add_business_days(saturday, 0, LONDON) == utc(2026, 3, 10)
    assert cal.add_business_days(saturday, 1, LONDON) == utc(2026, 3, 11)
    # Late Friday in New York is Saturday in London: the zone decides the day.
    assert cal.add_business_days(utc(2026, 3, 7, 1), 0, "America/New_York") == utc(2026, 3, 7, 5)


def test_holidays_are_per_country() -> None:
    cal = BusinessCalendar(GB_EASTER, country="GB")
    thursday = utc(2026, 4, 2, 12)
    # Good Friday, the weekend and Easter Monday skipped; Tuesday ends at 23:00 UTC (BST).
    assert cal.add_business_days(thursday, 1, LONDON) == utc(2026, 4, 7, 23)
    assert cal.add_business_days(thursday, 1, LONDON, "US") == utc(2026, 4, 3, 23)
    assert not cal.is_business_day(date(2026, 4, 6))
    assert cal.is_business_day(date(2026, 4, 6), "DE")


def test_dst_moves_the_end_of_the_day_not_the_day() -> None:
    cal = BusinessCalendar()
    # London springs forward on Sunday 29 March 2026: Friday ends at 00:00Z, Monday at 23:00Z.
    assert cal.add_business_days(utc(2026, 3, 27, 9), 0, LONDON) == utc(2026, 3, 28)
    assert cal.add_business_days(utc(2026, 3, 27, 9), 1, LONDON) == utc(2026, 3, 30, 23)
    # New York springs forward on 8 March and falls back on 1 November 2026.
    assert cal.add_business_days(utc(2026, 3, 6, 15), 1, "America/New_York") == utc(2026, 3, 10, 4)
    assert cal.add_business_days(utc(2026, 10, 30, 15), 1, "America/New_York") == utc(
        2026, 11, 3, 5
    )


def test_a_midnight_skipped_or_repeated_keeps_the_whole_day() -> None:
    cal = BusinessCalendar()
    # Santiago: clocks jump from 00:00 to 01:00 on Sunday 6 September 2026 (UTC-4 → UTC-3) and
    # back from 00:00 to 23:00 on Sunday 5 April 2026 (UTC-3 → UTC-4).
    santiago = "America/Santiago"
    friday = cal.add_business_days(utc(2026, 9, 4, 15), 0, santiago)
    assert friday == utc(2026, 9, 5, 4)
    # Saturday 4 April ends at the second midnight: 04:00 UTC, after the repeated hour.
    weekend = BusinessCalendar(weekend=())
    assert weekend.add_business_days(utc(2026, 4, 4, 15), 0, santiago) == utc(2026, 4, 5, 4)


def _model_deadline(start: datetime, n: int, zone: str, closed: set[date]) -> date:
    """The trivial model: walk the days, counting open ones."""
    day = start.astimezone(ZoneInfo(zone)).date()
    while day.weekday() >= 5 or day in closed:
        day += timedelta(days=1)
    left = n
    while left:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in closed:
            left -= 1
    return day


@settings(max_examples=150, deadline=None)
@given(
    start=st.datetimes(
        min_value=datetime(2024, 1, 1),  # noqa: DTZ001 (hypothesis bounds are naive)
        max_value=datetime(2030, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    n=st.integers(0, 40),
    zone=st.sampled_from(["UTC", LONDON, "America/New_York", "Asia/Tokyo", "Australia/Sydney"]),
    closed=st.sets(st.dates(date(2024, 1, 1), date(2030, 6, 1)), max_size=30),
)
def test_a_deadline_is_the_end_of_the_nth_business_day(
    start: datetime, n: int, zone: str, closed: set[date]
) -> None:
    cal = BusinessCalendar({"XX": closed}, country="XX")
    due = cal.add_business_days(start, n, zone)
    day = _model_deadline(start, n, zone, closed)
    local = due.astimezone(ZoneInfo(zone))
    assert local.time().hour == 0
    assert local.minute == 0
    assert (local - timedelta(microseconds=1)).date() == day  # ... ending that day
    assert due > start
    assert cal.is_business_day(day)


def test_calendar_and_policy_inputs_are_checked() -> None:
    with pytest.raises(ValidationError):
        BusinessCalendar({"GBR": []})
    with pytest.raises(ArgumentTypeError):
        BusinessCalendar({"GB": [datetime(2026, 1, 1, tzinfo=UTC)]})
    with pytest.raises(ValidationError):
        BusinessCalendar(weekend=range(7))
    with pytest.raises(ValidationError):
        BusinessCalendar().add_business_days(utc(2026, 1, 1), -1, "UTC")
    with pytest.raises(ValidationError):
        BusinessCalendar().add_business_days(utc(2026, 1, 1), 1, "Mars/Olympus")
    with pytest.raises(ValidationError):
        BusinessCalendar().add_business_days(datetime(2026, 1, 1), 1, "UTC")  # noqa: DTZ001
    with pytest.raises(ValidationError):
        ComplaintPolicy(())
    with pytest.raises(ValidationError):
        ComplaintPolicy(("a", "a"))
    with pytest.raises(ValidationError):
        ComplaintPolicy(("a",), acknowledge_days=10, resolve_days=5)
    with pytest.raises(ValidationError):
        ComplaintPolicy(("a",), zone="Nowhere/Land")


# -- the complaint's life -------------------------------------------------------------------------


def test_open_acknowledge_assign_resolve_reopen() -> None:
    w = World(utc(2026, 4, 2, 12))
    c = w.complaints.open(Actor.client("c-1"), "c-1", "payments", SECRET)
    assert c.status is ComplaintStatus.OPEN
    assert c.owner_id is None
    assert c.acknowledge_by == utc(2026, 4, 7, 23)  # Easter skipped
    assert c.resolve_by == utc(2026, 4, 9, 23)
    w.complaints.assign(SUPPORT, c.id, "staff:sup-1")
    c = w.complaints.assign(COMPLIANCE, c.id, "staff:cmp-2")
    assert c.owner_id == "staff:cmp-2"
    with pytest.raises(IllegalTransitionError):
        w.complaints.assign(COMPLIANCE, c.id, "staff:cmp-2")
    with pytest.raises(ValidationError):
        w.complaints.assign(COMPLIANCE, c.id, "client:c-1")
    c = w.complaints.acknowledge(SUPPORT, c.id)
    with pytest.raises(IllegalTransitionError):
        w.complaints.acknowledge(SUPPORT, c.id)
    c = w.complaints.resolve(SUPPORT, c.id, ComplaintOutcome.UPHELD, "We refunded you.")
    assert c.status is ComplaintStatus.RESOLVED
    assert c.outcome is ComplaintOutcome.UPHELD
    with pytest.raises(IllegalTransitionError):
        w.complaints.resolve(SUPPORT, c.id, ComplaintOutcome.UPHELD, "again")
    w.clock.set(utc(2026, 4, 10, 9))  # Friday
    c = w.complaints.reopen(Actor.client("c-1"), c.id, "Not refunded yet")
    assert c.status is ComplaintStatus.ACKNOWLEDGED
    assert c.cycle == 1
    assert c.resolve_by == utc(2026, 4, 15, 23)  # three business days after Friday
    thread = w.complaints.thread(Actor.client("c-1"), c.id)
    opened = thread[0].event
    assert isinstance(opened, ComplaintOpened)
    assert opened.text == SECRET
    assert any(isinstance(r.event, ComplaintResolved) for r in thread)
    with pytest.raises(NotFoundError):
        w.complaints.get(SUPPORT, "nope")
    with pytest.raises(IllegalTransitionError):
        w.complaints.open(SUPPORT, "c-1", "payments", "dup", complaint_id=c.id)
    with pytest.raises(ValidationError):
        w.complaints.open(SUPPORT, "c-1", "bonus", "not a listed category")


def test_a_resolved_complaint_is_not_escalated_and_reopening_starts_a_new_clock() -> None:
    w = World(utc(2026, 3, 2, 9))  # Monday; ack due Tue end, resolve due Thu end
    c = w.complaints.open(SUPPORT, "c-1", "trading", "slippage")
    first = w.check(utc(2026, 3, 4, 0))  # Tuesday ended: ack late
    assert [(e.stage, e.cycle) for e in first] == [(SlaStage.ACKNOWLEDGE, 0)]
    w.complaints.resolve(SUPPORT, c.id, ComplaintOutcome.REJECTED, "No slippage found.")
    assert w.check(utc(2026, 3, 30)) == []
    w.clock.set(utc(2026, 3, 31, 10))
    w.complaints.reopen(Actor.client("c-1"), c.id)
    later = w.check(utc(2026, 4, 30))
    assert [(e.stage, e.cycle) for e in later] == [(SlaStage.RESOLVE, 1)]
    assert w.check(utc(2026, 5, 30)) == []
    assert w.complaints.get(SUPPORT, c.id).escalated == (
        (SlaStage.ACKNOWLEDGE, 0),
        (SlaStage.RESOLVE, 1),
    )


@settings(max_examples=60, deadline=None)
@given(
    checks=st.lists(st.integers(0, 14 * 24), min_size=1, max_size=12),
    acknowledged_at=st.one_of(st.none(), st.integers(0, 14 * 24)),
)
@example(checks=[72, 72], acknowledged_at=None)  # exactly at the deadline, twice
def test_each_deadline_escalates_once_however_often_checked(
    checks: list[int], acknowledged_at: int | None
) -> None:
    start = utc(2026, 3, 2, 9)  # Monday, London in GMT
    w = World(start)
    c = w.complaints.open(SUPPORT, "c-1", "trading", "late fill")
    assert c.acknowledge_by == utc(2026, 3, 4)
    assert c.resolve_by == utc(2026, 3, 6)
    events = sorted(
        [(h, "check") for h in checks]
        + ([] if acknowledged_at is None else [(acknowledged_at, "ack")]),
        key=lambda x: (x[0], x[1] == "check"),  # an acknowledgement in that hour comes first
    )
    for hour, what in events:
        when = start + timedelta(hours=hour)
        if what == "ack":
            w.clock.set(when)
            w.complaints.acknowledge(SUPPORT, c.id)
        else:
            w.check(when)
    late = max(checks)
    seen = [(e.stage, e.due) for e in w.escalations()]
    ack_escalates = any(
        start + timedelta(hours=h) >= c.acknowledge_by
        and (acknowledged_at is None or h < acknowledged_at)
        for h in checks
    )
    expected = ([(SlaStage.ACKNOWLEDGE, c.acknowledge_by)] if ack_escalates else []) + (
        [(SlaStage.RESOLVE, c.resolve_by)] if start + timedelta(hours=late) >= c.resolve_by else []
    )
    assert sorted(seen, key=lambda x: x[0].value) == sorted(expected, key=lambda x: x[0].value)


def test_two_services_checking_at_once_escalate_once() -> None:
    w = World(utc(2026, 3, 2, 9))
    other = Complaints(
        w.repository, w.complaints.access, w.clock, w.complaints.policy, w.complaints.calendar
    )
    ids = [w.complaints.open(SUPPORT, f"c-{i}", "trading", "x").id for i in range(30)]
    results: list[int] = []
    barrier = threading.Barrier(2)
    w.clock.set(utc(2026, 4, 1))

    def run(svc: Complaints) -> None:
        barrier.wait()
        results.append(len(svc.check_deadlines()))

    threads = [threading.Thread(target=run, args=(s,)) for s in (w.complaints, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 2 * len(ids) == len(w.escalations())


# -- access and personal data ---------------------------------------------------------------------


def test_access_is_refused_with_a_typed_error() -> None:
    w = World(utc(2026, 3, 2, 9))
    with pytest.raises(AccessDeniedError):
        w.complaints.open(Actor.client("c-2"), "c-1", "trading", "not mine")
    with pytest.raises(AccessDeniedError):
        w.complaints.open(Actor.staff("s-1", Role.SALES), "c-1", "trading", "sales")
    c = w.complaints.open(Actor.client("c-1"), "c-1", "trading", "mine")
    for actor in (Actor.client("c-1"), Actor.staff("f-1", Role.FINANCE)):
        with pytest.raises(AccessDeniedError):
            w.complaints.acknowledge(actor, c.id)
        with pytest.raises(AccessDeniedError):
            w.complaints.resolve(actor, c.id, ComplaintOutcome.UPHELD, "done")
    with pytest.raises(AccessDeniedError):
        w.complaints.thread(Actor.client("c-2"), c.id)
    default = Complaints(  # the SDK's default policy: a client for itself, never an IB
        w.repository, AccessControl(), w.clock, w.complaints.policy, w.complaints.calendar
    )
    assert default.open(Actor.client("c-1"), "c-1", "trading", "x").client_id == "c-1"
    with pytest.raises(AccessDeniedError):
        default.open(Actor.ib("ib-1"), "c-1", "trading", "x")
    with pytest.raises(ArgumentTypeError):
        w.complaints.open("client:c-1", "c-1", "trading", "x")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        w.complaints.resolve(SUPPORT, c.id, "upheld", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [SECRET + "\x1b[2J", SECRET * 300, SECRET + "\u202e", "  "],
)
def test_a_refused_text_is_not_echoed(text: str) -> None:
    w = World(utc(2026, 3, 2, 9))
    with pytest.raises(ValidationError) as err:
        w.complaints.open(SUPPORT, "c-1", "trading", text)
    assert "4111" not in str(err.value)
    assert "Ana" not in str(err.value)
    c = w.complaints.open(SUPPORT, "c-1", "trading", "a\nmulti-line\ttext")
    with pytest.raises(ValidationError) as err:
        w.complaints.resolve(SUPPORT, c.id, ComplaintOutcome.UPHELD, text)
    assert "4111" not in str(err.value)


def _broker(path: Path, clock: FixedClock, keyring: MasterKeyring) -> Broker:
    broker = Broker.sqlite(
        path, clock=clock, keyring=keyring, policy=policy_with_complaints(), identity_key=IDKEY
    )
    broker.registry.register_all(COMPLAINT_EVENTS)  # the integrator's line in the broker
    return broker


def _service(broker: Broker) -> Complaints:
    return Complaints(
        broker.repository,
        broker.access,
        broker.clock,
        ComplaintPolicy(("trading", "payments"), 1, 3, LONDON, "GB"),
        BusinessCalendar(GB_EASTER),
    )


def test_a_second_process_and_a_restart_answer_the_same(tmp_path: Path) -> None:
    clock = FixedClock(utc(2026, 4, 2, 12))
    keyring = MasterKeyring.generate()
    path = tmp_path / "b.sqlite"
    first = _broker(path, clock, keyring)
    a = _service(first)
    opened = [a.open(SUPPORT, f"c-{i}", "payments", f"{SECRET} #{i}").id for i in range(6)]
    second = _broker(path, clock, keyring)
    b = _service(second)
    assert b.get(SUPPORT, opened[0]) == a.get(SUPPORT, opened[0])
    got: dict[str, int] = {}
    barrier = threading.Barrier(2)
    clock.set(utc(2026, 4, 20))

    def run(name: str, svc: Complaints) -> None:
        barrier.wait()
        got[name] = len(svc.check_deadlines())

    threads = [threading.Thread(target=run, args=p) for p in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got["a"] + got["b"] == 12
    clock.set(utc(2026, 5, 1))
    assert a.check_deadlines() == [] == b.check_deadlines()
    restarted = _service(_broker(path, clock, keyring))
    clock.set(utc(2026, 6, 1))
    assert restarted.check_deadlines() == []
    state = restarted.get(COMPLIANCE, opened[3])
    assert isinstance(state, Complaint)
    assert len(state.escalated) == 2
    opened_event = restarted.thread(COMPLIANCE, opened[3])[0].event
    assert isinstance(opened_event, ComplaintOpened)
    assert opened_event.text == f"{SECRET} #3"
    # Sealed at rest: the text is not in the file.
    assert b"4111" not in path.read_bytes()
    for broker in (first, second):
        broker.close()


def test_errors_reaching_a_host_are_fxcrm_errors() -> None:
    w = World(utc(2026, 3, 2, 9))
    for bad in (None, 3, b"x"):
        with pytest.raises(FxCrmError):
            w.complaints.open(SUPPORT, "c-1", "trading", bad)  # type: ignore[arg-type]
    with pytest.raises(FxCrmError):
        w.complaints.check_deadlines(datetime(2026, 3, 2))  # noqa: DTZ001
    with pytest.raises(ValidationError):  # not escalated before it passed on the clock
        w.complaints.check_deadlines(utc(2026, 4, 1))
    assert w.escalations() == []
