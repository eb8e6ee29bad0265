"""Churn warnings: a client who fades against its own baseline is warned with reasons and
figures; a steady client never is (hypothesis); at most one warning per client and period,
cleared on recovery; a host's model plugs in; through a broker, a restart gives the same
warnings and a policy on the closed trading day raises them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.activity import ClientActivity, Measure
from fxcrm_core.broker import Broker
from fxcrm_core.events import EventCodec, EventRegistry, ProjectionRunner, Repository
from fxcrm_core.kernel import FixedClock, ValidationError
from fxcrm_core.loyalty import (
    CHURN_EVENTS,
    BaselineChurnModel,
    ChurnAssessment,
    ChurnReason,
    ChurnSignal,
    ChurnWarningCleared,
    ChurnWarningRaised,
    ChurnWatch,
    register_events,
)
from fxcrm_core.loyalty.segments import ActivityFigures
from fxcrm_core.reactions import TradingDayClosed
from fxcrm_core.stores import MemoryEventStore
from tests.activity_world import World
from tests.segment_world import CAL, D, DailyActivity, noon, trading_days

START = date(2026, 1, 5)  # a Monday
DAYS = trading_days(START, 140)


def watch(activity: DailyActivity, *, read_model: bool = False, **kwargs: object) -> ChurnWatch:
    registry = EventRegistry()
    register_events(registry)
    clock = FixedClock(datetime(2026, 6, 1, tzinfo=UTC))
    store = MemoryEventStore(clock)
    codec = EventCodec(registry)
    projections = ProjectionRunner(store, codec) if read_model else None
    return ChurnWatch(
        Repository(store, codec), activity, calendar=CAL, clock=clock, projections=projections,
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def raised(w: ChurnWatch, client_id: str) -> list[ChurnWarningRaised]:
    return [r.event for r in w.history(client_id) if isinstance(r.event, ChurnWarningRaised)]


def test_a_client_who_fades_is_warned_with_reasons_and_figures_once() -> None:
    activity = DailyActivity()
    for day in DAYS[:70]:
        activity.trade("c1", day, "2")
    for day in DAYS[70:80]:
        if day in (DAYS[72],):
            activity.trade("c1", day, "1")
    w = watch(activity)
    at = noon(DAYS[79])
    events = w.evaluate("c1", at)
    assert [type(e) for e in events] == [ChurnWarningRaised]
    warning = events[0]
    assert isinstance(warning, ChurnWarningRaised)
    assert warning.reasons == ("frequency_drop", "volume_drop")
    figures = {(code, name): value for code, name, value in warning.figures}
    assert figures[("frequency_drop", "recent_active_days")] == "1"
    assert figures[("frequency_drop", "baseline_active_days")] == "60"
    assert figures[("frequency_drop", "share_of_baseline")] == "0.1000"
    assert figures[("volume_drop", "recent_volume_usd")] == "108000"
    assert figures[("volume_drop", "share_of_baseline")] == "0.0500"  # 1 lot vs 2 a day
    assert warning.period == f"{DAYS[79]:%Y-%m}"
    # Re-evaluation the same day and later in the month records nothing new.
    assert w.evaluate("c1", at) == []
    assert w.evaluate("c1", at + timedelta(hours=1)) == []
    assert w.evaluate_all(at + timedelta(hours=2)) == 0
    assert len(raised(w, "c1")) == 1
    assert w.warning("c1") == warning
    # An evaluation before the last decision records nothing (decisions go forward).
    assert w.evaluate("c1", at - timedelta(days=3)) == []


def test_recovery_clears_and_a_second_fade_in_the_same_period_is_not_repeated() -> None:
    activity = DailyActivity()
    for day in DAYS[:60]:
        activity.trade("c1", day)
    w = watch(activity)
    fade = DAYS[69]  # ten quiet days
    assert [type(e) for e in w.evaluate("c1", noon(fade))] == [ChurnWarningRaised]
    for day in DAYS[70:76]:
        activity.trade("c1", day)
    back = DAYS[75]
    assert [type(e) for e in w.evaluate("c1", noon(back))] == [ChurnWarningCleared]
    assert w.warning("c1") is None
    # Quiet again: in the same month no second warning; in the next month one.
    quiet = [d for d in DAYS[76:] if d.month == back.month]
    later = [d for d in DAYS[76:] if d.month != back.month]
    assert quiet
    assert later
    for day in quiet:
        assert not [e for e in w.evaluate("c1", noon(day)) if isinstance(e, ChurnWarningRaised)]
    w.evaluate("c1", noon(later[0]))
    assert len(raised(w, "c1")) == 2


def test_deposits_stopped_names_each_cycle() -> None:
    activity = DailyActivity()
    for i, day in enumerate(DAYS[:80]):
        activity.trade("c1", day)
        if i % 10 == 0 and i < 60:  # the last on DAYS[50]
            activity.deposit("c1", day, "500")
    w = watch(activity)
    # At DAYS[79] the current cycle (DAYS[60..79]) has no deposit; the three before have two.
    (warning,) = w.evaluate("c1", noon(DAYS[79]))
    assert isinstance(warning, ChurnWarningRaised)
    assert warning.reasons == ("deposits_stopped",)
    figures = {name: value for _, name, value in warning.figures}
    assert [figures[f"deposits_cycle_minus_{k}"] for k in (1, 2, 3)] == ["1000", "1000", "1000"]
    # Ten trading days earlier the deposit of DAYS[50] is inside the current cycle: no reason.
    other = watch(activity)
    assert other.evaluate("c1", noon(DAYS[69])) == []


def test_a_drained_balance_is_a_reason() -> None:
    activity = DailyActivity()
    activity.deposit("c1", DAYS[5], "5000")
    activity.withdraw("c1", DAYS[75], "4200")
    w = watch(activity)
    (warning,) = w.evaluate("c1", noon(DAYS[79]))
    assert isinstance(warning, ChurnWarningRaised)
    assert warning.reasons == ("balance_drained",)
    figures = {name: value for _, name, value in warning.figures}
    assert (figures["balance_before_usd"], figures["balance_now_usd"]) == ("5000", "800")
    # Taking out less than the drained share is no reason.
    calm = DailyActivity()
    calm.deposit("c1", DAYS[5], "5000")
    calm.withdraw("c1", DAYS[75], "3000")
    assert watch(calm).evaluate("c1", noon(DAYS[79])) == []


@settings(max_examples=40, deadline=None)
@given(
    every=st.integers(1, 10),
    phase=st.integers(0, 9),
    lots=st.sampled_from(["0.1", "1", "2.5"]),
    deposit_every=st.integers(5, 20),
    amount=st.sampled_from(["100", "2500"]),
)
def test_a_steady_client_is_never_warned(
    every: int, phase: int, lots: str, deposit_every: int, amount: str
) -> None:
    activity = DailyActivity()
    for i, day in enumerate(DAYS):
        if (i + phase) % every == 0:
            activity.trade("c1", day, lots)
        if (i + phase) % deposit_every == 0:
            activity.deposit("c1", day, amount)
            activity.withdraw("c1", day, str(D(amount) / 2))
    w = watch(activity)
    for day in DAYS[70:]:
        assert w.evaluate("c1", noon(day)) == [], day


@settings(max_examples=30, deadline=None)
@given(kept=st.integers(0, 4), lots=st.sampled_from(["0.1", "1", "2.5"]))
def test_a_client_whose_trading_falls_below_the_threshold_is_warned(kept: int, lots: str) -> None:
    activity = DailyActivity()
    for day in DAYS[:70]:
        activity.trade("c1", day, lots)
    for day in DAYS[70 : 70 + kept]:
        activity.trade("c1", day, lots)
    (warning,) = watch(activity).evaluate("c1", noon(DAYS[79]))
    assert isinstance(warning, ChurnWarningRaised)
    assert "frequency_drop" in warning.reasons


def test_a_client_without_a_habit_is_not_judged() -> None:
    activity = DailyActivity()
    for day in DAYS[:70:20]:  # four trades in 70 days: below the baseline's minimum
        activity.trade("c1", day)
    assert watch(activity).evaluate("c1", noon(DAYS[79])) == []


def test_the_read_model_skips_streams_and_decides_the_same() -> None:
    activity = DailyActivity()
    for i in range(30):
        client = f"c{i:02d}"
        for k, day in enumerate(DAYS[:120]):
            fades = i % 3 == 0 and 60 <= k < 75  # a quiet spell, then back
            if not fades and (k + i) % (1 + i % 4) == 0:
                activity.trade(client, day)
    plain, fast = watch(activity), watch(activity, read_model=True)
    loads = 0
    load = fast.repository.load

    def counted(*args: object) -> object:
        nonlocal loads
        loads += 1
        return load(*args)  # type: ignore[arg-type]

    fast.repository.load = counted  # type: ignore[method-assign,assignment]
    for day in DAYS[60:120]:
        assert plain.evaluate_all(noon(day)) == fast.evaluate_all(noon(day))
    for i in range(30):
        history = [r.event for r in plain.history(f"c{i:02d}")]
        assert history == [r.event for r in fast.history(f"c{i:02d}")]
        assert bool(history) == (i % 3 == 0)
    # Only the clients with something to record had their stream loaded.
    assert loads == sum(len(plain.history(f"c{i:02d}")) for i in range(30))


@attrs.frozen
class NoLoginModel:
    """A host's model: warns any client with no trade in the last five trading days."""

    @property
    def name(self) -> str:
        return "host-no-login"

    def assess(
        self, client_id: str, at: datetime, activity: ActivityFigures
    ) -> ChurnAssessment | None:
        trades = activity.window(client_id, Measure.TRADES, days=5, at=at).value
        if trades:
            return None
        return ChurnAssessment(client_id, at, (ChurnReason("quiet", (("trades_5d", "0"),)),),
                               self.name)  # fmt: skip


def test_a_host_model_plugs_in() -> None:
    activity = DailyActivity()
    activity.trade("c1", DAYS[0])
    activity.trade("c2", DAYS[9])
    w = watch(activity, model=NoLoginModel())
    assert w.evaluate_all(noon(DAYS[9])) == 1
    (warning,) = raised(w, "c1")
    assert (warning.model, warning.reasons, warning.figures) == (
        "host-no-login",
        ("quiet",),
        (("quiet", "trades_5d", "0"),),
    )
    assert raised(w, "c2") == []


def test_bad_models_and_answers_are_refused() -> None:
    with pytest.raises(ValidationError):
        BaselineChurnModel(fall_below=D("1.5"))
    with pytest.raises(ValidationError):
        BaselineChurnModel(recent_days=0)
    with pytest.raises(ValidationError):
        ChurnAssessment("c1", noon(DAYS[0]), (), "m")

    @attrs.frozen
    class Wrong:
        name: str = "wrong"

        def assess(self, client_id: str, at: datetime, activity: object) -> object:
            return ChurnAssessment("someone-else", at, (ChurnReason("x"),), "wrong")

    activity = DailyActivity()
    activity.trade("c1", DAYS[0])
    w = watch(activity, model=Wrong())
    with pytest.raises(ValidationError):
        w.evaluate("c1", noon(DAYS[1]))
    assert w.history("c1") == []
    assert ChurnSignal("balance_drained") is ChurnSignal.BALANCE_DRAINED


# -- through a broker -----------------------------------------------------------------------------


class ChurnWorld(World):
    """The activity test broker with the churn events registered (the broker does not wire
    loyalty yet)."""

    def open(self) -> Broker:
        broker = super().open()
        if not broker.registry.knows(ChurnWarningRaised):
            broker.registry.register_all(CHURN_EVENTS)
        return broker


def _fading(w: World) -> datetime:
    """A deal a trading day for 70 days up to Friday 20 February 2026, then none; returns the
    end of Friday 6 March (ten quiet trading days)."""
    days = [d for d in trading_days(date(2025, 11, 1), 200) if d <= date(2026, 2, 20)][-70:]
    for day in days:
        w.trade(noon(day))
    w.pull()
    return CAL.session(date(2026, 3, 6))[1] - timedelta(microseconds=1)


def test_through_a_broker_a_restart_gives_the_same_warnings(tmp_path: Path) -> None:
    w = ChurnWorld(tmp_path / "crm.db")
    at = _fading(w)
    activity = ClientActivity(
        w.broker.projections, w.broker.calendar, rates=w.market, clock=w.clock
    )
    live = ChurnWatch(w.broker.repository, activity, calendar=w.broker.calendar, clock=w.clock)
    assert live.evaluate_all(at) == 1
    warning = live.warning(w.cid)
    assert warning is not None
    assert warning.reasons == ("frequency_drop", "volume_drop")
    before = [(r.version, r.event) for r in live.history(w.cid)]
    # A new process on the same file: the same warning, and evaluating again records nothing.
    again = w.open()
    fresh = ClientActivity(again.projections, again.calendar, rates=w.market, clock=w.clock)
    watch2 = ChurnWatch(again.repository, fresh, calendar=again.calendar, clock=w.clock,
                        projections=again.projections)  # fmt: skip
    assert [(r.version, r.event) for r in watch2.history(w.cid)] == before
    assert watch2.evaluate_all(at) == 0
    assert watch2.evaluate(w.cid, at + timedelta(days=1)) == []


def test_a_policy_on_the_closed_trading_day_raises_the_warning() -> None:
    w = ChurnWorld()
    _fading(w)
    b = w.broker
    watch_ = ChurnWatch(b.repository, w.activity, calendar=b.calendar, clock=w.clock,
                        projections=b.projections)  # fmt: skip
    b.add_policy("churn", [TradingDayClosed], watch_.on_trading_day_closed)
    assert b.close_trading_days() == [date(2026, 3, 6)]  # the clock is Monday 9 March
    b.run_policies()
    warning = watch_.warning(w.cid)
    assert warning is not None
    assert warning.at == CAL.session(date(2026, 3, 6))[1] - timedelta(microseconds=1)
    assert b.run_policies() == 0
    assert len(raised(watch_, w.cid)) == 1
