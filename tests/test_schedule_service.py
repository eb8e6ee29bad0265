"""Schedule versions as events (issue 13 item 1, the schedule part): recorded with who and why on
the schedule's own stream, the same answers from a second process, "the schedule as of T" and
"who changed this rate and when", a book the engine holds that catches up, the broker's
configured versions seeded idempotently, and hostile input refused with typed errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.access import DEFAULT_POLICY, AccessControl, Actor, Role, RowScope
from fxcrm_core.commissions import CapPeriod, PeriodCap, PlanKind, Rule, Schedule, Trigger
from fxcrm_core.commissions.plans import CommissionShare, PerLot, Pips, ProfitShare, SpreadShare
from fxcrm_core.commissions.schedule import Revenue
from fxcrm_core.commissions.schedules_log import (
    SCHEDULE_EVENTS,
    ScheduleConflictError,
    ScheduleService,
    ScheduleVersionRecorded,
    schedule_from_data,
    schedule_to_data,
)
from fxcrm_core.events import EventCodec, EventRegistry, EventStore, Repository
from fxcrm_core.events.store import NewEvent, StreamAppend
from fxcrm_core.kernel import Currency, FixedClock, Money
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    CodecError,
    ConcurrencyError,
    FxCrmError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore
from fxcrm_core.trading import Deal

JAN = datetime(2026, 1, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)
APR = datetime(2026, 4, 1, tzinfo=UTC)
USD = Currency.of("USD")
POLICY = DEFAULT_POLICY.with_role(
    Role.ADMIN, DEFAULT_POLICY.grants[Role.ADMIN] | {"ib.schedule"}, RowScope.ALL
)
ADMIN = Actor.staff("7", Role.ADMIN)
OTHER_ADMIN = Actor.staff("8", Role.ADMIN)


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def service(store: EventStore, now: datetime = JAN) -> ScheduleService:
    """A service as a fresh process builds it: its own registry, codec and repository."""
    registry = EventRegistry()
    registry.register_all(SCHEDULE_EVENTS)
    return ScheduleService(Repository(store, EventCodec(registry)), AccessControl(POLICY),
                           clock=FixedClock(now))  # fmt: skip


def version(number: int, at: datetime, eurusd: str = "3", **fields: Any) -> Schedule:
    base: dict[str, Any] = {
        "by_symbol": {"EURUSD": Rule(PlanKind.PER_LOT, usd(eurusd))},
        "symbol_groups": {"US30": "indices"},
        "by_symbol_group": {"indices": Rule(PlanKind.PER_LOT, usd(1), trigger=Trigger.BOTH)},
        "by_account_group": {"pro": Rule(PlanKind.COMMISSION_SHARE, share=Decimal("0.5"))},
        "default": Rule(PlanKind.PER_LOT, usd(2), min_hold=timedelta(minutes=2)),
        "lot_modifiers": {"cent": Decimal("0.01")},
        "cpa": Rule(PlanKind.CPA, usd(200), min_deposit=usd(500), min_lots=Decimal(2)),
        "period_cap": PeriodCap(usd(1000), CapPeriod.MONTH),
    }
    base.update(fields)
    return Schedule("std", number, at, USD, **base)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> EventStore:
    if request.param == "memory":
        return MemoryEventStore()
    return SqliteEventStore(tmp_path / "events.db")


def test_a_version_round_trips_through_its_stored_form() -> None:
    every_field = version(
        1, JAN, revenue=Revenue.commission_and_markup({"XAUUSD": usd("0.40")}),
        by_account_group={"spread": Rule(SpreadShare(usd(8), Decimal("0.5"), Decimal("0.0002")),
                                         cap_per_deal=usd(25))},
    )  # fmt: skip
    data = json.loads(json.dumps(schedule_to_data(every_field)))
    assert schedule_from_data(data) == every_field


def test_a_rate_change_is_recorded_with_who_why_and_when_and_answered_as_of(
    store: EventStore,
) -> None:
    ibs = service(store)
    ibs.record(ADMIN, version(1, JAN), reason="launch rates")
    ibs.clock = FixedClock(datetime(2026, 2, 20, 9, 30, tzinfo=UTC))
    ibs.record(OTHER_ADMIN, version(2, MAR, eurusd="3.50"), reason="EURUSD promotion")
    assert ibs.as_of("std", MAR - timedelta(microseconds=1)).version == 1
    assert ibs.as_of("std", MAR).by_symbol["EURUSD"] == Rule(PlanKind.PER_LOT, usd("3.50"))
    with pytest.raises(NotFoundError):
        ibs.as_of("std", JAN - timedelta(seconds=1))
    history = ibs.history("std")
    assert [(h.version, h.metadata.actor, h.metadata.reason) for h in history] == [
        (1, "staff:7", "launch rates"),
        (2, "staff:8", "EURUSD promotion"),
    ]
    assert all(h.recorded_at.tzinfo is not None for h in history)
    changed = ibs.rate_history("std", "EURUSD", "std")
    assert [(h.metadata.actor, h.metadata.reason, r) for h, r in changed] == [
        ("staff:7", "launch rates", Rule(PlanKind.PER_LOT, usd(3))),
        ("staff:8", "EURUSD promotion", Rule(PlanKind.PER_LOT, usd("3.50"))),
    ]
    assert len(ibs.rate_history("std", "GBPUSD", "std")) == 1  # the default never changed


def test_a_second_process_answers_the_same(tmp_path: Any) -> None:
    path = tmp_path / "events.db"
    first = service(SqliteEventStore(path))
    first.record(ADMIN, version(1, JAN), reason="launch rates")
    second = service(SqliteEventStore(path))  # another process on the same file
    held = second.book("std")  # the book an engine holds
    first.record(ADMIN, version(2, MAR, eurusd="4"), reason="raise")
    assert held.at(MAR).version == 1  # not read yet
    assert held.catch_up() == 1
    assert held.at(MAR) == first.as_of("std", MAR) == second.as_of("std", MAR)
    assert [h.metadata for h in second.history("std")] == [h.metadata for h in first.history("std")]
    assert second.versions("std") == first.versions("std")
    # A version recorded by the second process is refused to a first that would repeat it.
    second.record(ADMIN, version(3, APR), reason="back to 3")
    with pytest.raises(ValidationError, match="next version of this schedule is 4"):
        first.record(ADMIN, version(3, APR), reason="stale")


def test_the_engine_s_book_computes_deals_with_the_version_in_force(store: EventStore) -> None:
    ibs = service(store)
    ibs.record(ADMIN, version(1, JAN), reason="launch")
    ibs.record(ADMIN, version(2, MAR, eurusd="5"), reason="raise")
    book = service(store).book("std")
    deal = Deal.from_mt5(
        {"Deal": 1, "Login": 7, "Action": 0, "Entry": 1, "Symbol": "EURUSD", "Volume": 10_000,
         "VolumeClosed": 10_000, "Commission": "-9.00", "Time": 1_773_050_400},
        server="mt5", currency="USD", utc_offset=timedelta(hours=2),
    )  # fmt: skip
    line = book.at(deal.time).line(deal, "std")
    assert line is not None
    assert (book.at(deal.time).version, line.pool.amount) == (2, Decimal("5.00"))
    assert (book.pays_cpa, book.has_caps, book.needs_openings) == (True, True, True)


def test_ensure_records_configured_versions_once_and_refuses_a_contradiction(
    store: EventStore,
) -> None:
    configured = [version(1, JAN), version(2, MAR, eurusd="4")]
    ibs = service(store, now=APR)  # configured versions may lie in the past
    assert ibs.ensure(ADMIN, configured, reason="broker configuration") == configured
    assert service(store).ensure(ADMIN, configured, reason="restart") == []
    assert len(ibs.history("std")) == 2
    more = [*configured, version(3, APR + timedelta(days=1))]
    assert service(store).ensure(ADMIN, more, reason="new version") == more[2:]
    changed = [version(1, JAN, eurusd="9"), *more[1:]]
    with pytest.raises(ScheduleConflictError):
        service(store).ensure(ADMIN, changed, reason="edited config")
    assert len(ibs.history("std")) == 3


def test_a_backdated_version_a_wrong_number_or_order_writes_nothing(store: EventStore) -> None:
    ibs = service(store, now=MAR)
    with pytest.raises(ValidationError, match="no earlier than it is recorded"):
        ibs.record(ADMIN, version(1, JAN), reason="backdated")
    with pytest.raises(ValidationError, match="next version of this schedule is 1"):
        ibs.record(ADMIN, version(2, APR), reason="skips one")
    ibs.record(ADMIN, version(1, APR), reason="launch")
    with pytest.raises(ValidationError, match="after the previous one"):
        service(store, now=MAR).record(ADMIN, version(2, APR), reason="same start")
    assert len(ibs.history("std")) == 1


def test_recording_needs_the_permission(store: EventStore) -> None:
    with pytest.raises(AccessDeniedError):
        service(store).record(Actor.staff("9", Role.SUPPORT), version(1, JAN), reason="x")
    assert service(store).history("std") == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.record("staff:7", version(1, JAN), reason="r"),
        lambda s: s.record(ADMIN, version(1, JAN), reason="  "),
        lambda s: s.record(ADMIN, version(1, JAN), reason=None),
        lambda s: s.record(ADMIN, {"schedule_id": "std"}, reason="r"),
        lambda s: s.ensure(ADMIN, version(1, JAN), reason="r"),
        lambda s: s.ensure(ADMIN, ["std"], reason="r"),
        lambda s: s.as_of("std", "2026-01-01"),
        lambda s: s.as_of("std", datetime(2026, 1, 1)),  # noqa: DTZ001 (naive on purpose)
        lambda s: s.as_of(7, JAN),
        lambda s: s.history("x" * 5000),
        lambda s: s.rate_history("std", None, "std"),
        lambda s: version(1, JAN, default=Rule(PlanKind.PER_LOT, usd("1e17"))).line(None, 1),  # type: ignore[arg-type]
        lambda s: Rule(PlanKind.COMMISSION_SHARE, share=Decimal("-0.1")),
        lambda s: Rule(PlanKind.COMMISSION_SHARE, share=Decimal("sNaN")),
        lambda s: Rule(PlanKind.PER_LOT, Money.of("9" * 30, "USD")),
        lambda s: ScheduleService(None, AccessControl(POLICY)),  # type: ignore[arg-type]
    ],
)
def test_hostile_input_is_a_typed_error_and_writes_nothing(call: Any, store: EventStore) -> None:
    ibs = service(store)
    with pytest.raises(FxCrmError):
        call(ibs)
    assert store.read_stream("ibschedule-std") == []


def test_an_unknown_plan_kind_in_the_log_is_a_codec_error(store: EventStore) -> None:
    ibs = service(store)
    data = schedule_to_data(version(1, JAN))
    data["default"]["plan"] = {"kind": "from_a_newer_release", "rate": "1"}
    payload = json.dumps({"schedule": data}).encode()
    row = NewEvent("ScheduleVersionRecorded", payload, b'{"actor": "staff:7"}')
    store.append(StreamAppend("ibschedule-std", 0, [row]))
    with pytest.raises(CodecError):
        ibs.history("std")


def test_a_stored_version_is_a_typed_event_with_its_plans_by_kind(store: EventStore) -> None:
    ibs = service(store)
    ibs.record(ADMIN, version(1, JAN), reason="launch")
    [row] = store.read_stream("ibschedule-std")
    assert row.event_type == "ScheduleVersionRecorded"
    stored = json.loads(row.data)["schedule"]
    assert stored["by_symbol"]["EURUSD"]["plan"] == {"kind": "per_lot", "amount": "3.00 USD"}
    event = ibs.history("std")[0].event
    assert isinstance(event, ScheduleVersionRecorded)
    assert event.schedule == version(1, JAN)


money = st.integers(0, 10**9).map(lambda c: Money.from_minor(c, "USD"))
shares = st.integers(0, 10_000).map(lambda n: Decimal(n) / 10_000)
plans = st.one_of(
    st.builds(PerLot, money),
    st.builds(CommissionShare, shares),
    st.builds(SpreadShare, money, shares, st.none() | st.just(Decimal("0.00012"))),
    st.builds(Pips, shares, st.integers(1, 10**6).map(lambda n: Decimal(n) / 10**5), st.just(USD)),
    st.builds(ProfitShare, shares),
)
rules = st.builds(
    lambda plan, trigger, cap, hold: Rule(
        plan,
        trigger=Trigger.CLOSE if hold else trigger,
        cap_per_deal=cap,
        min_hold=timedelta(seconds=hold) if hold else None,
    ),
    plans,
    st.sampled_from(Trigger),
    st.none() | money,
    st.integers(0, 3600),
)
NAIVE_2000 = datetime(2000, 1, 1)  # noqa: DTZ001 (hypothesis takes naive bounds)
NAIVE_2100 = datetime(2100, 1, 1)  # noqa: DTZ001
names = st.text("ABCDEFGHXYZ.m", min_size=1, max_size=8)


@given(
    st.dictionaries(names, rules, max_size=3),
    st.dictionaries(names, rules, max_size=2),
    st.none() | rules,
    st.dictionaries(names, st.integers(1, 1000).map(lambda n: Decimal(n) / 100), max_size=2),
    st.datetimes(NAIVE_2000, NAIVE_2100, timezones=st.just(UTC)),
    st.none() | st.builds(PeriodCap, money, st.sampled_from(CapPeriod)),
)
def test_every_schedule_reads_back_equal_from_its_stored_form(
    by_symbol: dict[str, Rule],
    by_group: dict[str, Rule],
    default: Rule | None,
    modifiers: dict[str, Decimal],
    start: datetime,
    cap: PeriodCap | None,
) -> None:
    schedule = Schedule("std", 1, start, USD, by_symbol=by_symbol, by_account_group=by_group,
                        default=default, lot_modifiers=modifiers, period_cap=cap,
                        revenue=Revenue.uncapped())  # fmt: skip
    assert schedule_from_data(json.loads(json.dumps(schedule_to_data(schedule)))) == schedule


def test_of_two_processes_recording_at_once_one_wins_and_the_other_writes_nothing(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = service(store), service(store)
    stale = first._book("std")  # first read the stream (empty) ...
    monkeypatch.setattr(stale, "catch_up", lambda: 0)  # ... and reads no further before writing
    second.record(OTHER_ADMIN, version(1, JAN), reason="second wins")
    with pytest.raises(ConcurrencyError):
        first.record(ADMIN, version(1, JAN, eurusd="9"), reason="first loses")
    assert [h.metadata.reason for h in service(store).history("std")] == ["second wins"]
