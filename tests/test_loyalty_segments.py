"""RFM segmentation: scores from the activity read model with the figures used, recency in
trading days, cut points, segment and value-tier rules as data, one read for all clients, and
the same scores from the broker's own activity read model."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.activity import Measure
from fxcrm_core.kernel import ValidationError
from fxcrm_core.loyalty import (
    CutPoints,
    Recency,
    RfmModel,
    ScoreRule,
    Segment,
    Segmentation,
)
from tests.activity_world import World
from tests.segment_world import CAL, D, DailyActivity, noon, trading_days

DAYS = trading_days(date(2026, 1, 5), 200)
TODAY = DAYS[150]
AT = noon(TODAY)


def segmentation(activity: DailyActivity, model: RfmModel | None = None) -> Segmentation:
    return Segmentation(activity, model, calendar=CAL)


def test_a_loyal_client_scores_with_the_figures_it_was_scored_on() -> None:
    activity = DailyActivity()
    for day in DAYS[61:151]:  # every one of the last 90 trading days
        activity.trade("c1", day)
    activity.deposit("c1", DAYS[100], "8000")
    activity.withdraw("c1", DAYS[120], "2000")
    score = segmentation(activity).score("c1", AT)
    assert (score.recency, score.frequency, score.monetary) == (5, 5, 4)
    assert score.code == "554"
    assert score.segment is Segment.LOYAL
    assert score.value_tier == "medium"
    assert score.days_since == 0
    assert score.last_activity == AT
    assert (score.frequency_value, score.monetary_value) == (D(90), D(6000))
    assert (score.window_start, score.window_end) == (DAYS[61], TODAY)


def test_recency_counts_trading_days_and_sorts_the_segments() -> None:
    activity = DailyActivity()
    for k in range(10):
        activity.trade("potential", DAYS[148 - k * 3])  # recent, not frequent yet
    for day in DAYS[60:120]:
        activity.trade("at-risk", day)  # quiet for the last 30 trading days
    for day in DAYS[:40]:
        activity.trade("lost", day)  # quiet for 111 trading days
    activity.deposit("depositor", DAYS[149], "50")  # no trade, a deposit yesterday
    seg = segmentation(activity)
    scores = {s.client_id: s for s in seg.score_all(AT)}
    assert list(scores) == ["at-risk", "depositor", "lost", "potential"]
    assert (scores["potential"].days_since, scores["potential"].segment) == (2, Segment.POTENTIAL)
    assert (scores["at-risk"].days_since, scores["at-risk"].recency) == (31, 3)
    assert scores["at-risk"].segment is Segment.AT_RISK
    # Past the last cut (90) the count stops at 91: it scores 1 either way.
    assert (scores["lost"].days_since, scores["lost"].segment) == (91, Segment.LOST)
    assert (scores["depositor"].days_since, scores["depositor"].recency) == (1, 5)
    assert seg.segments(AT) == {
        Segment.LOYAL: [],
        Segment.POTENTIAL: ["depositor", "potential"],
        Segment.AT_RISK: ["at-risk"],
        Segment.LOST: ["lost"],
    }
    # A weekend is no trading day: Friday's trade is one day old on Monday.
    friday = date(2026, 3, 6)
    weekend = DailyActivity()
    weekend.trade("c1", friday)
    monday = datetime(2026, 3, 9, 12, tzinfo=UTC)
    assert segmentation(weekend).score("c1", monday).days_since == 1


def test_the_model_is_data() -> None:
    activity = DailyActivity()
    for day in DAYS[141:151]:
        activity.trade("c1", day)
        activity.trade("c1", day)
    activity.deposit("c1", DAYS[50], "100")  # outside a 90-day window
    default = segmentation(activity).score("c1", AT)
    assert (default.frequency, default.monetary) == (3, 1)  # 10 active days; no net deposit
    model = RfmModel(
        window_days=120,
        recency_from=Recency.DEPOSIT,
        recency_cuts=CutPoints((10, 50, 90, 120)),
        frequency=Measure.TRADES,
        frequency_cuts=CutPoints((1, 5, 10, 20)),
        monetary_cuts=CutPoints((1, 50, 100, 1000)),
        segments=(
            ScoreRule("loyal", frequency=(5, 5)),
            ScoreRule("lost"),
        ),
        value_tiers=(ScoreRule("vip", monetary=(4, 5)), ScoreRule("standard")),
    )
    score = segmentation(activity, model).score("c1", AT)
    # Recency from the deposit, 100 trading days back: score 2; 20 trades: 5; 100 USD: 4.
    assert (score.days_since, score.recency, score.frequency, score.monetary) == (100, 2, 5, 4)
    assert (score.segment, score.value_tier) == (Segment.LOYAL, "vip")


def test_bad_models_are_refused() -> None:
    with pytest.raises(ValidationError):
        CutPoints((1, 5, 5, 10))  # not strictly ascending
    with pytest.raises(ValidationError):
        CutPoints((1, 2, 3))
    with pytest.raises(ValidationError):
        CutPoints((1.5, 2, 3, 4))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):  # no rule for recency 1
        RfmModel(segments=(ScoreRule("loyal", recency=(2, 5)),))
    with pytest.raises(ValidationError):
        RfmModel(segments=(ScoreRule("gold"),))  # not a segment
    with pytest.raises(ValidationError):
        ScoreRule("x", recency=(4, 2))
    with pytest.raises(ValidationError):
        RfmModel(frequency=Measure.NET_DEPOSITS)
    with pytest.raises(ValidationError):
        RfmModel(window_days=0)


def test_one_read_for_all_clients_asks_two_windows_each() -> None:
    activity = DailyActivity()
    for i in range(50):
        for day in DAYS[150 - i : 151]:
            activity.trade(f"c{i:02d}", day)
    seg = segmentation(activity)
    activity.asked = 0
    scores = seg.score_all(AT)
    assert activity.asked == 2 * 50
    assert scores == [seg.score(s.client_id, AT) for s in scores]
    assert [s.frequency_value for s in scores[:3]] == [D(1), D(2), D(3)]


def test_a_client_without_activity_scores_one_one_one() -> None:
    score = segmentation(DailyActivity()).score("nobody", AT)
    assert (score.code, score.segment, score.days_since, score.last_activity) == (
        "111",
        Segment.LOST,
        None,
        None,
    )


@given(st.lists(st.integers(0, 3000), min_size=2, max_size=2))
def test_scores_move_with_the_figures(values: list[int]) -> None:
    low, high = sorted(Decimal(v) for v in values)
    cuts = CutPoints((10, 100, 500, 2000))
    assert 1 <= cuts.score_up(low) <= cuts.score_up(high) <= 5
    assert 5 >= cuts.score_down(low) >= cuts.score_down(high) >= 1


def test_from_the_broker_activity_read_model() -> None:
    w = World()
    monday = datetime(2026, 3, 9, 12, tzinfo=UTC)
    for k in range(1, 6):
        w.trade(monday - timedelta(days=7 * k))  # one deal each of the five Mondays before
    w.pull()
    w.deposit("6000", "ref-1")  # recorded at the clock's now (Monday 9 March)
    seg = Segmentation(w.activity, calendar=w.broker.calendar, clock=w.clock)
    score = seg.score(w.cid)
    assert (score.days_since, score.recency) == (0, 5)  # the deposit today
    assert (score.frequency_value, score.frequency) == (D(5), 3)
    assert (score.monetary_value, score.monetary) == (D("6000.00"), 4)
    assert score.segment is Segment.POTENTIAL
    assert [s.client_id for s in seg.score_all()] == [w.cid]
