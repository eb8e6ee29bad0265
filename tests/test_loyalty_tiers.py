"""Tier programmes as data (issue 15, item 2): windows on the forex trading day (17:00 New York,
DST weeks), upgrades at once or the next trading day, downgrades only at period ends or after a
grace, "lower of the last two periods", overrides through maker-checker that expire, no flip
inside a period, and programme versions recorded with who and why."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from fxcrm_core.access import SelfApprovalError
from fxcrm_core.events import DomainEvent, EventMetadata, RecordedEvent, UnitOfWork
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    CodecError,
    FxCrmError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.loyalty import (
    Benefits,
    CalendarMonth,
    Combination,
    Measure,
    Quarter,
    RollingTradingDays,
    Threshold,
    Tier,
    TierChanged,
    TierGraceCleared,
    TierGraceStarted,
    TierOverrideEnded,
    TierPeriodClosed,
    TierProgramme,
    UpgradeTiming,
    programme_from_data,
    programme_to_data,
)
from fxcrm_core.stores import SqliteEventStore
from tests.loyalty_world import (
    ADMIN,
    CAL,
    GOLD,
    OTHER_ADMIN,
    SILVER,
    SUPPORT,
    MemoryActivity,
    World,
    build,
    ny,
    programme,
    world,
)

JUL = datetime(2026, 7, 1, tzinfo=UTC)


def changes(history: list[RecordedEvent[DomainEvent]]) -> list[TierChanged]:
    return [r.event for r in history if isinstance(r.event, TierChanged)]


# -- windows on the trading day -----------------------------------------------------------------


def test_a_month_runs_from_one_month_end_rollover_to_the_next_across_dst() -> None:
    march = CalendarMonth().period(CAL, datetime(2026, 3, 15, tzinfo=UTC))
    assert march.label == "2026-03"
    # Fri 27 Feb 17:00 New York is 22:00 UTC (EST); Tue 31 Mar 17:00 is 21:00 UTC (EDT).
    assert march.start == datetime(2026, 2, 27, 22, tzinfo=UTC)
    assert march.end == datetime(2026, 3, 31, 21, tzinfo=UTC)
    november = CalendarMonth().period(CAL, datetime(2026, 11, 10, tzinfo=UTC))
    assert november.start == datetime(2026, 10, 30, 21, tzinfo=UTC)  # still EDT
    assert november.end == datetime(2026, 11, 30, 22, tzinfo=UTC)  # EST again


def test_a_deal_at_16_59_new_york_counts_for_the_month_one_at_17_00_for_the_next() -> None:
    month = CalendarMonth()
    assert month.period(CAL, ny(2026, 7, 31, 16, 59)).label == "2026-07"
    assert month.period(CAL, ny(2026, 7, 31, 17, 0)).label == "2026-08"
    # A Saturday belongs to Monday's trading day: 31 Oct 2026 is a Saturday, so November.
    assert month.period(CAL, datetime(2026, 10, 31, 12, tzinfo=UTC)).label == "2026-11"
    q = Quarter().period(CAL, ny(2026, 9, 30, 16, 59))
    assert (q.label, q.end) == ("2026-Q3", ny(2026, 9, 30, 17))
    assert Quarter().period(CAL, ny(2026, 9, 30, 17)).label == "2026-Q4"


def test_a_rolling_window_counts_trading_days_across_the_dst_week() -> None:
    window = RollingTradingDays(5)
    # Sunday 8 Mar 2026 New York moves to EDT: the same UTC hour is before 17:00 on the 5th
    # and after it on the 10th.
    assert window.period(CAL, datetime(2026, 3, 5, 21, 30, tzinfo=UTC)).label == "2026-03-05"
    day = window.period(CAL, datetime(2026, 3, 10, 21, 30, tzinfo=UTC))
    assert day.label == "2026-03-11"
    assert (day.start, day.end) == (ny(2026, 3, 10, 17), ny(2026, 3, 11, 17))
    # Five trading days ending Wed 11 Mar: Thu 5 .. Wed 11, from the close of Wed 4 (EST).
    assert window.measured_from(CAL, day) == datetime(2026, 3, 4, 22, tzinfo=UTC)


def test_a_deal_at_17_00_on_the_month_end_earns_nothing_for_the_month_that_ended() -> None:
    w = world(programme(JUL))
    w.activity.trade("c1", ny(2026, 7, 10, 12), "5")
    w.activity.trade("c1", ny(2026, 7, 31, 17, 0), "5")  # August's first trading day
    w.tiers.evaluate("c1", w.until(ny(2026, 7, 31, 17, 0)))
    w.tiers.close_period(w.until(ny(2026, 7, 31, 17, 5)), ["c1"])
    closed = [r.event for r in w.tiers.history("c1") if isinstance(r.event, TierPeriodClosed)]
    assert [(c.period, c.qualified) for c in closed] == [("2026-07", "bronze")]
    assert w.tiers.tier("c1", ny(2026, 8, 3, 12)) == "bronze"

    w2 = world(programme(JUL))
    w2.activity.trade("c1", ny(2026, 7, 10, 12), "5")
    w2.activity.trade("c1", ny(2026, 7, 31, 16, 59), "5")  # July's last minute
    w2.tiers.close_period(w2.until(ny(2026, 7, 31, 17, 5)), ["c1"])
    assert w2.tiers.tier("c1", ny(2026, 8, 3, 12)) == "silver"


# -- upgrades -----------------------------------------------------------------------------------


def test_an_upgrade_at_once_holds_from_the_deal_that_earned_it() -> None:
    w = world(programme(JUL))
    w.activity.trade("c1", ny(2026, 7, 6, 10), "9")
    assert changes(w.tiers.history("c1")) == []
    w.tiers.evaluate("c1", w.until(ny(2026, 7, 6, 10)))
    w.activity.trade("c1", ny(2026, 7, 7, 10), "1")
    [event] = w.tiers.evaluate("c1", w.until(ny(2026, 7, 7, 10)))
    assert isinstance(event, TierChanged)
    assert (event.from_tier, event.to_tier, event.rule) == ("bronze", "silver", "upgrade_at_once")
    assert event.effective_at == ny(2026, 7, 7, 10)
    assert ("2026-07", "lots", "10") in event.figures
    assert w.tiers.tier("c1", ny(2026, 7, 7, 9, 59)) == "bronze"
    assert w.tiers.standing("c1", ny(2026, 7, 7, 10)).benefits == SILVER.benefits


def test_an_upgrade_on_the_next_trading_day_starts_at_17_00_new_york() -> None:
    w = world(programme(JUL, upgrade=UpgradeTiming.NEXT_TRADING_DAY))
    w.activity.trade("c1", ny(2026, 7, 8, 11), "12")
    [event] = w.tiers.evaluate("c1", w.until(ny(2026, 7, 8, 11)))
    assert isinstance(event, TierChanged)
    assert event.rule == "upgrade_next_trading_day"
    assert event.effective_at == ny(2026, 7, 8, 17)
    assert w.tiers.tier("c1", ny(2026, 7, 8, 16, 59)) == "bronze"
    assert w.tiers.tier("c1", ny(2026, 7, 8, 17)) == "silver"
    # Evaluated again before it takes effect: nothing new to decide.
    assert w.tiers.evaluate("c1", w.until(ny(2026, 7, 8, 12))) == []


def test_gold_needs_all_of_and_one_of_any_of() -> None:
    w = world(programme(JUL))
    for day in (6, 7, 8, 9, 10):
        w.activity.trade("c1", ny(2026, 7, day, 10), "11")
    w.tiers.evaluate("c1", w.until(ny(2026, 7, 10, 11)))
    assert w.tiers.tier("c1", ny(2026, 7, 10, 12)) == "silver"  # 55 lots, 5 trades, no deposit
    w.activity.deposit("c1", ny(2026, 7, 13, 9), "5000")
    w.tiers.evaluate("c1", w.until(ny(2026, 7, 13, 9)))
    assert w.tiers.tier("c1", ny(2026, 7, 13, 10)) == "gold"


# -- downgrades ---------------------------------------------------------------------------------


def gold_in_july(grace: int = 0) -> World:
    w = world(programme(JUL, grace=grace))
    w.activity.trade("c1", ny(2026, 7, 6, 10), "60")
    w.activity.deposit("c1", ny(2026, 7, 6, 9), "6000")
    w.tiers.evaluate("c1", w.until(ny(2026, 7, 6, 10)))
    assert w.tiers.tier("c1", ny(2026, 7, 6, 11)) == "gold"
    return w


def test_a_downgrade_waits_for_the_period_end() -> None:
    w = gold_in_july()
    w.activity.deposit("c1", ny(2026, 7, 20, 9), "-5500")  # net deposits fall below Gold's
    assert w.tiers.evaluate("c1", w.until(ny(2026, 7, 20, 9))) == []
    assert w.tiers.tier("c1", ny(2026, 7, 31, 16, 59)) == "gold"
    assert w.tiers.close_period(w.until(ny(2026, 7, 31, 17, 1)), ["c1"]) == 1
    last = changes(w.tiers.history("c1"))[-1]
    assert (last.from_tier, last.to_tier, last.rule, last.period) == (
        "gold", "silver", "period_end", "2026-07"
    )  # fmt: skip
    assert last.effective_at == ny(2026, 7, 31, 17)
    assert ("2026-07", "net_deposits", "500") in last.figures
    assert w.tiers.tier("c1", ny(2026, 7, 31, 16, 59)) == "gold"
    assert w.tiers.tier("c1", ny(2026, 7, 31, 17)) == "silver"
    # Closing again is idempotent.
    before = len(w.tiers.history("c1"))
    assert w.tiers.close_period(w.until(ny(2026, 7, 31, 18)), ["c1"]) == 0
    assert len(w.tiers.history("c1")) == before


def test_a_grace_keeps_the_tier_then_ends_by_itself() -> None:
    w = gold_in_july(grace=3)
    w.tiers.close_period(w.until(ny(2026, 7, 31, 17, 1)), ["c1"])
    w.tiers.close_period(w.until(ny(2026, 8, 31, 17, 1)), ["c1"])
    events = [r.event for r in w.tiers.history("c1")]
    [grace] = [e for e in events if isinstance(e, TierGraceStarted)]
    # Three trading days after 31 Aug: Tue 1, Wed 2, Thu 3 Sep; it ends at the close of the 3rd.
    assert (grace.tier, grace.until, grace.period) == ("bronze", ny(2026, 9, 3, 17), "2026-08")
    assert w.tiers.tier("c1", ny(2026, 9, 3, 16, 59)) == "gold"
    assert w.tiers.tier("c1", ny(2026, 9, 3, 17)) == "bronze"  # read: due, not yet recorded
    [change] = w.tiers.evaluate("c1", w.until(ny(2026, 9, 4, 10)))
    assert isinstance(change, TierChanged)
    assert (change.rule, change.to_tier, change.effective_at) == (
        "grace_expired", "bronze", ny(2026, 9, 3, 17)
    )  # fmt: skip
    assert change.figures == grace.figures


def test_qualifying_again_during_the_grace_keeps_the_tier() -> None:
    w = gold_in_july(grace=3)
    w.tiers.close_period(w.until(ny(2026, 7, 31, 17, 1)), ["c1"])
    w.tiers.close_period(w.until(ny(2026, 8, 31, 17, 1)), ["c1"])
    w.activity.trade("c1", ny(2026, 9, 2, 10), "60")
    w.activity.deposit("c1", ny(2026, 9, 2, 9), "5000")
    [cleared] = w.tiers.evaluate("c1", w.until(ny(2026, 9, 2, 10)))
    assert isinstance(cleared, TierGraceCleared)
    assert w.tiers.tier("c1", ny(2026, 9, 10)) == "gold"
    assert w.tiers.evaluate("c1", w.until(ny(2026, 9, 10))) == []


def test_the_lower_of_the_last_two_periods() -> None:
    w = world(programme(JUL, combination=Combination.LOWER_OF_LAST_TWO))
    w.activity.trade("c1", ny(2026, 7, 6, 10), "20")  # silver in July
    w.tiers.evaluate("c1", w.until(ny(2026, 7, 6, 10)))
    assert w.tiers.tier("c1", ny(2026, 7, 7)) == "bronze"  # June had nothing
    w.tiers.close_period(w.until(ny(2026, 7, 31, 17, 1)), ["c1"])
    assert w.tiers.tier("c1", ny(2026, 8, 3)) == "bronze"
    w.activity.trade("c1", ny(2026, 8, 3, 10), "15")  # silver in August too: two good periods
    [up] = w.tiers.evaluate("c1", w.until(ny(2026, 8, 3, 10)))
    assert isinstance(up, TierChanged)
    assert up.to_tier == "silver"
    assert up.qualified == (("2026-07", "silver"), ("2026-08", "silver"))
    assert up.combination == "lower_of_last_two"
    assert ("2026-07", "lots", "20") in up.figures
    assert ("2026-08", "lots", "15") in up.figures
    # A weak September: the lower of August (silver) and September (bronze) is bronze.
    w.tiers.close_period(w.until(ny(2026, 8, 31, 17, 1)), ["c1"])
    w.tiers.close_period(w.until(ny(2026, 9, 30, 17, 1)), ["c1"])
    assert w.tiers.tier("c1", ny(2026, 9, 30, 16)) == "silver"
    assert w.tiers.tier("c1", ny(2026, 9, 30, 17)) == "bronze"


# -- no flip inside a period --------------------------------------------------------------------


def test_after_a_grace_downgrade_an_upgrade_waits_for_the_period_end() -> None:
    w = gold_in_july(grace=2)
    w.tiers.close_period(w.until(ny(2026, 7, 31, 17, 1)), ["c1"])
    w.tiers.close_period(w.until(ny(2026, 8, 31, 17, 1)), ["c1"])
    w.tiers.evaluate("c1", w.until(ny(2026, 9, 4, 10)))  # grace over: bronze
    w.activity.trade("c1", ny(2026, 9, 8, 10), "60")
    w.activity.deposit("c1", ny(2026, 9, 8, 9), "5000")
    assert w.tiers.evaluate("c1", w.until(ny(2026, 9, 8, 10))) == []
    assert w.tiers.tier("c1", ny(2026, 9, 20)) == "bronze"
    w.tiers.close_period(w.until(ny(2026, 9, 30, 17, 1)), ["c1"])
    assert w.tiers.tier("c1", ny(2026, 9, 30, 17)) == "gold"
    # Inside September the tier went one way only: gold through the grace, then bronze.
    tiers = [w.tiers.tier("c1", ny(2026, 9, d, 12)) for d in range(1, 31)]
    assert tiers == ["gold"] * 2 + ["bronze"] * 28  # the grace ended at the close of 2 Sep


# -- overrides ----------------------------------------------------------------------------------


def test_an_override_needs_a_second_person_and_ends_at_its_expiry() -> None:
    w = world(programme(JUL))
    w.clock.set(ny(2026, 7, 6, 9))
    expiry = ny(2026, 7, 20, 17)
    request = w.tiers.request_override(ADMIN, "c1", "gold", expiry)
    with pytest.raises(SelfApprovalError):
        w.approvals.approve(ADMIN, request)
    assert w.tiers.tier("c1", ny(2026, 7, 6, 10)) == "bronze"
    w.clock.set(ny(2026, 7, 6, 10))
    w.approvals.approve(OTHER_ADMIN, request)
    standing = w.tiers.standing("c1", ny(2026, 7, 6, 10))
    assert (standing.tier, standing.overridden) == ("gold", True)
    assert standing.benefits == GOLD.benefits
    assert w.tiers.tier("c1", expiry - timedelta(microseconds=1)) == "gold"
    assert w.tiers.standing("c1", expiry).overridden is False  # ends by itself on read
    [ended, *_] = w.tiers.evaluate("c1", w.until(expiry + timedelta(hours=1)))
    assert isinstance(ended, TierOverrideEnded)
    assert ended.request_id == request


def test_an_override_is_refused_without_the_permission_or_for_an_unknown_tier() -> None:
    w = world(programme(JUL))
    w.clock.set(ny(2026, 7, 6, 9))
    with pytest.raises(AccessDeniedError):
        w.tiers.request_override(SUPPORT, "c1", "gold", ny(2026, 7, 20, 17))
    with pytest.raises(ValidationError):
        w.tiers.request_override(ADMIN, "c1", "platinum", ny(2026, 7, 20, 17))
    with pytest.raises(ValidationError):  # already expired
        w.tiers.request_override(ADMIN, "c1", "gold", ny(2026, 7, 6, 8))
    request = w.tiers.request_override(ADMIN, "c1", "gold", ny(2026, 7, 20, 17))
    w.clock.set(ny(2026, 7, 21, 9))  # approved only after its expiry: refused
    with pytest.raises(ValidationError):
        w.approvals.approve(OTHER_ADMIN, request)
    with pytest.raises(AccessDeniedError):
        w.approvals.approve(SUPPORT, request)


# -- programme versions -------------------------------------------------------------------------


def test_programme_versions_are_recorded_with_who_and_why_and_read_by_a_new_process() -> None:
    w = world(programme(JUL))
    w.clock.set(datetime(2026, 9, 15, tzinfo=UTC))
    with pytest.raises(AccessDeniedError):
        w.tiers.record_programme(SUPPORT, programme(datetime(2026, 10, 1, tzinfo=UTC), version=2),
                                 reason="q4")  # fmt: skip
    with pytest.raises(ValidationError):  # back-dated
        w.tiers.record_programme(ADMIN, programme(datetime(2026, 9, 1, tzinfo=UTC), version=2),
                                 reason="q4")  # fmt: skip
    q4 = programme(datetime(2026, 10, 1, tzinfo=UTC), version=2, window=Quarter())
    w.tiers.record_programme(ADMIN, q4, reason="quarterly tiers from Q4")
    fresh = w.fresh()
    assert fresh.programmes() == [programme(JUL), q4]
    [_, second] = fresh.programme_history()
    assert (second.metadata.actor, second.metadata.reason) == (ADMIN.id, "quarterly tiers from Q4")
    assert fresh.programme_at(datetime(2026, 9, 30, tzinfo=UTC)).version == 1
    assert fresh.programme_at(datetime(2026, 10, 1, tzinfo=UTC)).window == Quarter()
    with pytest.raises(NotFoundError):
        fresh.programme_at(datetime(2026, 6, 1, tzinfo=UTC))


def test_a_programme_round_trips_through_its_stored_form_and_refuses_malformed_data() -> None:
    prog = programme(JUL, window=RollingTradingDays(20), grace=5,
                     combination=Combination.HIGHER_OF_LAST_TWO)  # fmt: skip
    data = json.loads(json.dumps(programme_to_data(prog)))
    assert programme_from_data(data) == prog
    data["tiers"][1]["all_of"] = [["lots", "NaN"]]
    with pytest.raises(CodecError):
        programme_from_data(data)
    with pytest.raises(CodecError):
        programme_from_data({"programme_id": "vip"})


def test_a_programme_refuses_bad_shapes() -> None:
    with pytest.raises(ValidationError):  # the base tier has thresholds
        TierProgramme("vip", 1, JUL, [Tier("x", all_of=[Threshold(Measure.LOTS, Decimal(1))])])
    with pytest.raises(ValidationError):
        TierProgramme("vip", 1, JUL, [Tier("a"), Tier("a")])
    with pytest.raises(ValidationError):
        TierProgramme("v/ip", 1, JUL, [Tier("a")])
    with pytest.raises(ValidationError):
        Benefits(commission_discount=Decimal("1.5"))
    with pytest.raises(ValidationError):
        RollingTradingDays(0)


def test_a_period_closed_late_starts_no_grace_after_the_client_moved_up_since() -> None:
    w = world(programme(JUL, grace=2))
    w.activity.trade("c1", ny(2026, 7, 6, 10), "12")
    w.tiers.evaluate("c1", w.until(ny(2026, 7, 6, 10)))
    w.tiers.close_period(
        w.until(ny(2026, 7, 31, 17, 1)), ["c1"]
    )  # silver for July; August is quiet
    w.activity.trade("c1", ny(2026, 9, 1, 10), "60")
    w.activity.deposit("c1", ny(2026, 9, 1, 9), "6000")
    w.tiers.evaluate("c1", w.until(ny(2026, 9, 1, 10)))  # gold, before August was closed
    w.tiers.close_period(w.until(ny(2026, 9, 1, 11)), ["c1"])  # August closed late: bronze
    events = [r.event for r in w.tiers.history("c1")]
    assert not [e for e in events if isinstance(e, TierGraceStarted)]
    assert [w.tiers.tier("c1", ny(2026, 9, d)) for d in (1, 4, 15)] == ["gold"] * 3


def test_a_policy_records_decisions_in_its_own_unit_of_work() -> None:
    w = world(programme(JUL))
    w.activity.trade("c1", ny(2026, 7, 6, 10), "12")
    repository = w.tiers.repository
    with UnitOfWork(repository, EventMetadata("system:policy")) as uow:
        staged = w.tiers.evaluate("c1", w.until(ny(2026, 7, 6, 10)), uow=uow)
        assert [type(e).__name__ for e in staged] == ["TierChanged"]
        assert w.tiers.history("c1") == []  # staged, not committed
        assert w.tiers.close_period(w.until(ny(2026, 7, 31, 17, 1)), ["c1"], uow=uow) == 1
        uow.commit()
    assert [type(r.event).__name__ for r in w.tiers.history("c1")] == [
        "TierChanged", "TierPeriodClosed"
    ]  # fmt: skip
    assert w.tiers.tier("c1", ny(2026, 8, 3)) == "silver"


def test_a_second_process_on_one_sqlite_file_answers_the_same(tmp_path: Path) -> None:
    clock = FixedClock(datetime(2026, 6, 30, tzinfo=UTC))
    activity = MemoryActivity()
    first = build(SqliteEventStore(tmp_path / "events.db"), activity, clock)
    first.tiers.record_programme(ADMIN, programme(JUL, grace=2), reason="vip")
    activity.trade("c1", ny(2026, 7, 6, 10), "60")
    activity.deposit("c1", ny(2026, 7, 6, 9), "6000")
    first.tiers.evaluate("c1", first.until(ny(2026, 7, 6, 10)))
    second = build(SqliteEventStore(tmp_path / "events.db"), activity, clock)
    second.tiers.close_period(
        second.until(ny(2026, 7, 31, 17, 1)), ["c1"]
    )  # the other process closes July
    second.tiers.close_period(second.until(ny(2026, 8, 31, 17, 1)), ["c1"])  # and August: a grace
    assert (
        first.tiers.close_period(first.until(ny(2026, 8, 31, 17, 2)), ["c1"]) == 0
    )  # already closed
    for at in (ny(2026, 7, 6, 11), ny(2026, 9, 2, 16, 59), ny(2026, 9, 2, 17)):
        assert first.tiers.standing("c1", at) == second.tiers.standing("c1", at)
    assert first.tiers.tier("c1", ny(2026, 9, 2, 17)) == "bronze"


class FloatActivity(MemoryActivity):
    def measure(self, client_id: str, measure: Measure, start: datetime, end: datetime) -> Decimal:
        return 1.5  # type: ignore[return-value]


def test_hostile_input_is_refused_with_typed_errors_that_echo_nothing() -> None:
    w = world(programme(JUL))
    with pytest.raises(ValidationError) as error:
        w.tiers.evaluate("ana\x00lima@example.com", ny(2026, 7, 6))
    assert "ana" not in str(error.value)
    with pytest.raises(FxCrmError):
        w.tiers.evaluate("c1", datetime(2026, 7, 6, 12))  # noqa: DTZ001 (naive on purpose)
    with pytest.raises(ValidationError):
        w.tiers.close_period(ny(2026, 8, 3), "c1")  # a string is not a collection of ids
    with pytest.raises(NotFoundError):
        w.tiers.evaluate("c1", ny(2026, 6, 15))  # before the programme
    data = programme_to_data(programme(JUL))
    data["effective_from"] = "2026-07-01T00:00:00"  # naive in storage
    with pytest.raises(CodecError):
        programme_from_data(data)
    floats = build(w.store, FloatActivity(), w.clock)
    with pytest.raises(ValidationError):
        floats.tiers.evaluate("c1", floats.until(ny(2026, 7, 6)))
    assert w.tiers.history("c1") == []  # nothing half-written


def test_a_deal_of_a_closed_month_pulled_late_upgrades_from_when_it_is_seen_never_back() -> None:
    """9 lots in July, July closed (bronze); a tenth July lot (16:59 New York on 31 July) is
    recorded on 3 August: silver from 3 August (not back-dated), with July's figures; a late
    deal never downgrades, an open period's day is evaluate()'s, and a restart agrees."""
    w = world(programme(JUL))
    w.activity.trade("c1", ny(2026, 7, 30, 10), "9")
    w.tiers.evaluate("c1", w.until(ny(2026, 7, 30, 10)))
    w.tiers.close_period(w.until(ny(2026, 7, 31, 17, 1)), ["c1"])
    assert w.tiers.tier("c1", ny(2026, 8, 1, 12)) == "bronze"
    w.activity.trade("c1", ny(2026, 7, 31, 16, 59), "1")
    assert w.tiers.reconsider("c1", date(2026, 8, 3), w.until(ny(2026, 8, 3, 9))) == []  # open
    [event] = w.tiers.reconsider("c1", date(2026, 7, 31), ny(2026, 8, 3, 9))
    assert isinstance(event, TierChanged)
    assert (event.from_tier, event.to_tier, event.rule) == ("bronze", "silver", "late_activity")
    assert (event.effective_at, event.period) == (ny(2026, 8, 3, 9), "2026-07")
    assert ("2026-07", "lots", "10") in event.figures
    assert w.tiers.tier("c1", ny(2026, 8, 3, 8, 59)) == "bronze"
    assert w.tiers.tier("c1", ny(2026, 8, 3, 9)) == "silver"
    assert w.tiers.reconsider("c1", date(2026, 7, 31), w.until(ny(2026, 8, 3, 10))) == []
    # A July deal deleted late (fewer lots than the tier needs) downgrades nothing.
    w.activity.deals["c1"].pop()
    assert w.tiers.reconsider("c1", date(2026, 7, 31), w.until(ny(2026, 8, 4, 9))) == []
    assert w.tiers.tier("c1", ny(2026, 8, 4, 9)) == "silver"
    assert w.fresh().history("c1") == w.tiers.history("c1")
    with pytest.raises(ValidationError):
        w.tiers.reconsider("c1", ny(2026, 7, 31, 12), ny(2026, 8, 4, 9))
