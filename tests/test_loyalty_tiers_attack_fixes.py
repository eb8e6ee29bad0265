"""The tier fixes of the issue-15 review: no tier decision is dated after the service's clock
(refused, nothing recorded); a programme's numbers are bounded when it is recorded; the stored
form takes numbers as decimal text, never floats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fxcrm_core.kernel import FixedClock, Money
from fxcrm_core.kernel.errors import AmountOutOfRangeError, CodecError
from fxcrm_core.loyalty import (
    Benefits,
    Measure,
    Threshold,
    Tier,
    TierChanged,
    TierPeriodClosed,
    programme_from_data,
    programme_to_data,
)
from fxcrm_core.loyalty.tiers import DecisionInTheFutureError
from fxcrm_core.stores import SqliteEventStore
from tests.loyalty_world import (
    ADMIN,
    BRONZE,
    SILVER,
    MemoryActivity,
    World,
    build,
    ny,
    programme,
    usd,
    world,
)

JUL = datetime(2026, 7, 1, tzinfo=UTC)


def _types(w: World, client_id: str) -> list[str]:
    return [type(r.event).__name__ for r in w.fresh().history(client_id)]


# -- decisions are never dated after the clock --------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(ahead=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=4000)))
@example(ahead=timedelta(microseconds=1))
def test_a_decision_dated_after_the_clock_is_refused_and_records_nothing(
    ahead: timedelta,
) -> None:
    w = world(programme(JUL))
    w.clock.set(ny(2026, 7, 2, 12))
    w.activity.trade("c1", ny(2026, 7, 2, 11), "15")
    for decide in (
        lambda: w.tiers.evaluate("c1", w.clock.now() + ahead),
        lambda: w.tiers.close_period(w.clock.now() + ahead, ["c1"]),
    ):
        with pytest.raises(DecisionInTheFutureError) as refused:
            decide()
        assert "c1" not in str(refused.value)
    assert _types(w, "c1") == []
    # At the clock's now, the same evaluation is decided as usual.
    [change] = w.tiers.evaluate("c1", w.clock.now())
    assert isinstance(change, TierChanged)
    assert change.to_tier == "silver"


def test_a_period_is_closed_once_the_clock_has_passed_its_end_and_counts_all_its_activity(
    tmp_path: Path,
) -> None:
    # Two processes on one SQLite file, their clocks at the same instants: a close asked early
    # by one is refused, the real close by the other sees the whole month.
    activity = MemoryActivity()
    first = build(SqliteEventStore(tmp_path / "events.db"), activity, _clock_at(JUL))
    first.tiers.record_programme(ADMIN, programme(JUL), reason="the VIP programme")
    first.clock.set(ny(2026, 7, 2, 12))
    activity.trade("c1", ny(2026, 7, 2, 11), "5")
    with pytest.raises(DecisionInTheFutureError):
        first.tiers.close_period(ny(2026, 8, 3, 12), ["c1"])
    activity.trade("c1", ny(2026, 7, 20, 11), "10")
    second = build(SqliteEventStore(tmp_path / "events.db"), activity, _clock_at(JUL))
    second.clock.set(ny(2026, 7, 31, 17, 5))
    assert second.tiers.close_period(second.clock.now(), ["c1"]) == 1
    events = [r.event for r in first.fresh().history("c1")]
    [closed] = [e for e in events if isinstance(e, TierPeriodClosed)]
    assert (closed.period, closed.verdict) == ("2026-07", "silver")
    assert ("2026-07", "lots", "15") in closed.figures
    assert first.fresh().tier("c1", ny(2026, 7, 31, 17)) == "silver"


def _clock_at(at: datetime) -> FixedClock:
    return FixedClock(at - timedelta(days=1))


def test_a_late_evaluation_before_the_clock_still_decides() -> None:
    # A worker that runs late evaluates an old event: dated before the clock, so decided.
    w = world(programme(JUL))
    w.activity.trade("c1", ny(2026, 7, 6, 10), "12")
    w.clock.set(ny(2026, 7, 9, 12))
    [change] = w.tiers.evaluate("c1", ny(2026, 7, 6, 10))
    assert isinstance(change, TierChanged)
    assert change.effective_at == ny(2026, 7, 6, 10)


# -- a programme's numbers are bounded when it is recorded --------------------------------------


def _with(benefits: Benefits | None = None, minimum: Decimal | None = None) -> Any:
    silver = SILVER
    if benefits is not None:
        silver = attrs.evolve(silver, benefits=benefits)
    if minimum is not None:
        silver = attrs.evolve(silver, all_of=(Threshold(Measure.LOTS, minimum),))
    return programme(JUL, tiers=(BRONZE, silver))


WITHIN = [
    _with(Benefits(points_multiplier=Decimal(1000))),
    _with(Benefits(points_multiplier=Decimal("0.000000000000000001"))),
    _with(Benefits(cashback_per_lot=Money.of(10**9, "USD"))),
    _with(Benefits(leverage_cap=10_000)),
    _with(Benefits(commission_discount=Decimal(1))),
    _with(minimum=Decimal(10**15)),
    _with(minimum=Decimal(-(10**15))),
    _with(minimum=Decimal("1E+15")),
]
# Past the limits, yet numbers the SDK's codec reads (within 10**-100 and 10**101) ...
PAST = [
    _with(Benefits(points_multiplier=Decimal("1000.000000000000000001"))),
    _with(Benefits(points_multiplier=Decimal("1E-19"))),
    _with(Benefits(points_multiplier=Decimal("1E+100"))),
    _with(Benefits(cashback_per_lot=Money.of(10**9 + 1, "USD"))),
    _with(Benefits(leverage_cap=10_001)),
    _with(minimum=Decimal(10**15 + 1)),
    _with(minimum=Decimal("-1E+16")),
]
# ... and absurd ones, past what any stored number may be.
ABSURD = [
    _with(Benefits(points_multiplier=Decimal("1E+999999999"))),
    _with(Benefits(points_multiplier=Decimal("0E+999999999"))),
    _with(Benefits(points_multiplier=Decimal("0E-999999999"))),
    _with(minimum=Decimal("1E-999999")),
]


@pytest.mark.parametrize("prog", WITHIN)
def test_a_programme_within_the_limits_is_recorded_and_round_trips(prog: Any) -> None:
    w = world(prog)
    assert w.fresh().programmes() == [prog]
    assert programme_from_data(json.loads(json.dumps(programme_to_data(prog)))) == prog


@pytest.mark.parametrize("prog", PAST + ABSURD)
def test_a_programme_past_the_limits_is_refused_and_records_nothing(prog: Any) -> None:
    good = world(programme(JUL))
    with pytest.raises(AmountOutOfRangeError):
        good.tiers.record_programme(ADMIN, attrs.evolve(prog, version=2), reason="typo")
    assert len(good.fresh().programmes()) == 1
    if prog in PAST:
        # A log recorded under wider limits keeps decoding: the limits are the recorder's.
        assert programme_from_data(programme_to_data(prog)) == prog
    else:
        with pytest.raises(CodecError):
            programme_from_data(programme_to_data(prog))


@settings(max_examples=60, deadline=None)
@given(
    multiplier=st.decimals(min_value=0, max_value=2000, places=3, allow_nan=False),
    cap=st.integers(1, 20_000),
)
def test_the_limits_are_the_documented_bounds(multiplier: Decimal, cap: int) -> None:
    prog = _with(Benefits(points_multiplier=multiplier, leverage_cap=cap))
    within = multiplier <= 1000 and cap <= 10_000
    try:
        prog.check_limits()
    except AmountOutOfRangeError:
        assert not within
    else:
        assert within


# -- the stored form takes numbers as text ------------------------------------------------------


def _stored() -> dict[str, Any]:
    return programme_to_data(programme(JUL))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("points_multiplier", 1.5),
        ("commission_discount", 0.1),
        ("points_multiplier", True),
        ("points_multiplier", None),
        ("points_multiplier", ["1"]),
        ("leverage_cap", 500.0),
        ("all_of", [["lots", 10.0]]),
        ("all_of", [["lots", 1e300]]),
    ],
)
def test_a_stored_number_that_is_not_decimal_text_is_a_codec_error(
    field: str, value: object
) -> None:
    data = _stored()
    data["tiers"][1][field] = value
    with pytest.raises(CodecError):
        programme_from_data(data)


def test_a_whole_number_is_read_as_its_decimal() -> None:
    data = _stored()
    data["tiers"][1]["points_multiplier"] = 2
    data["tiers"][1]["all_of"] = [["lots", 10]]
    read = programme_from_data(data)
    assert read.tiers[1].benefits.points_multiplier == Decimal(2)
    assert read.tiers[1].all_of == (Threshold(Measure.LOTS, Decimal(10)),)
    assert programme_from_data(json.loads(json.dumps(programme_to_data(read)))) == read


def test_stored_cashback_and_version_refuse_floats() -> None:
    for field, value in (("version", 1.0), ("grace_trading_days", 0.0), ("cashback_per_lot", 1.0)):
        data = _stored()
        (data["tiers"][1] if field == "cashback_per_lot" else data)[field] = value
        with pytest.raises(CodecError):
            programme_from_data(data)
    assert programme_from_data(_stored()).tiers[1].benefits.cashback_per_lot == usd("1.00")


def test_a_tier_name_is_kept_when_its_benefits_are_bounded() -> None:
    # The bounds do not change what a valid tier is: Tier and Benefits still build the value.
    tier = Tier("platinum", benefits=Benefits(points_multiplier=Decimal(5000)))
    assert tier.benefits.points_multiplier == Decimal(5000)
