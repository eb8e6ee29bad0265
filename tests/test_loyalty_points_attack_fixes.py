"""The rules behind the points fixes of the loyalty review: a deposit charged back in parts takes
back all its points and never more; expiry never runs ahead of the clock; a balance at an instant
is the account as the log stood then; points values are bounded (typed refusals, never a decimal
signal); a redemption retried with the same value written differently is replayed."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.kernel import FixedClock, Money
from fxcrm_core.kernel.errors import FxCrmError, IdempotencyConflictError, ValidationError
from fxcrm_core.loyalty import CashbackRate, InsufficientPointsError, PointsReversed
from fxcrm_core.loyalty.points import ExpiryInTheFutureError
from fxcrm_core.loyalty.points_rules import MAX_POINTS, check_points, earned
from fxcrm_core.stores import SqliteEventStore
from tests.test_loyalty_points import ADMIN, OTHER_ADMIN, T0, World, usd


def reversed_of(w: World, source: str) -> Decimal:
    """Every point the reversals of ``source`` took back (from any lot) or found missing."""
    total = Decimal(0)
    for row in w.points.history("c1"):
        e = row.event
        if isinstance(e, PointsReversed) and e.source == source:
            total += sum((part for _, part in e.taken), e.shortfall)
    return total


# -- a deposit charged back in parts ------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=5))
def test_a_deposit_charged_back_in_any_parts_takes_back_exactly_what_it_earned(
    parts: list[int],
) -> None:
    # 1,000 USD earn 100 points; a 30-point deal lot is there too. The parts charged back add
    # up to at most the deposit; at each step the points taken back are the share charged back
    # so far (rounded up to the point), and all 100 once the money is all back - never more.
    w = World()
    w.deal("3")
    w.pull()
    w.deposit("d1", "c1", 1000)
    charged = 0
    for n, part in enumerate(parts):
        part = min(part, 1000 - charged)
        if part == 0:
            break
        w.ledger.reverse("deposit:d1", f"cb-{n}", amount=usd(part))
        w.runner.run()
        charged += part
        assert reversed_of(w, "deposit:d1") == Decimal(charged) / 10
        assert w.balance("c1") == Decimal(30) + Decimal(100) - Decimal(charged) / 10
    lot = w.points.account("c1").lot("deposit:d1")
    assert lot is not None
    assert lot.reversed == (charged == 1000)
    if charged == 1000:  # and a part more is nothing to take (the ledger refuses it anyway)
        assert w.balance("c1") == Decimal(30)


def test_a_deposit_whose_points_were_spent_charged_back_in_thirds_takes_back_its_whole_award(
    tmp_path: Path,
) -> None:
    # The 100 points are spent but for 10 on cashback, a 50-point deal lot comes later; three
    # thirds of the money come back: the reversals take 100 in all (10 from its own lot, the
    # rest from the deal's), and a process over the same SQLite file answers the same.
    clock = FixedClock(T0)
    store = SqliteEventStore(tmp_path / "points.sqlite", clock=clock)
    w = World(store, clock=clock)
    w.deposit("d1", "c1", 900)  # 90 points
    w.points.redeem(ADMIN, "c1", Decimal(80), request_id="r1")
    w.deal("5")
    w.pull()
    for n, part in enumerate(("300", "300", "300")):
        w.ledger.reverse("deposit:d1", f"cb-{n}", amount=usd(part))
        w.runner.run()
    assert reversed_of(w, "deposit:d1") == Decimal(90)
    assert w.balance("c1") == Decimal(0)  # 30 from its lot and the deal's, then nothing left
    account = w.points.account("c1")
    assert account.shortfall == Decimal(30)
    again = World(SqliteEventStore(tmp_path / "points.sqlite", clock=clock), clock=clock)
    assert again.points.account("c1") == account
    assert again.balance("c1") == Decimal(0)


# -- expiry never runs ahead of the clock -------------------------------------------------------


def test_expiring_after_the_clock_is_refused_and_at_the_clock_records_what_is_due() -> None:
    w = World()
    w.deal("1", at=T0)  # 10 points until T0 + 30 days
    w.pull()
    before = w.repository.store.last_position()
    with pytest.raises(ExpiryInTheFutureError):
        w.points.expire(T0 + timedelta(days=31))
    assert w.repository.store.last_position() == before
    assert w.balance("c1") == Decimal(10)
    w.clock.set(T0 + timedelta(days=31))
    assert w.points.expire(w.clock.now()) == 1
    assert w.points.account("c1").balance == 0


# -- a balance at an instant is the account as the log stood then -------------------------------


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["deal", "redeem", "wait"]), st.integers(1, 9))))
def test_a_balance_at_a_past_instant_is_what_the_balance_was_then(
    steps: list[tuple[str, int]],
) -> None:
    # Whatever is earned, spent or expires later, balance(at) answers what balance() said at
    # that instant.
    w = World()
    seen: list[tuple[object, Decimal]] = []
    for n, (op, value) in enumerate(steps):
        if op == "deal":
            w.deal(str(value))
            w.pull()
        elif op == "redeem":
            with contextlib.suppress(InsufficientPointsError):
                w.points.redeem(ADMIN, "c1", Decimal(value), request_id=f"r{n}")
        else:
            w.clock.advance(timedelta(days=value))
        seen.append((w.clock.now(), w.balance("c1")))
        w.clock.advance(timedelta(seconds=1))
    for at, balance in seen:
        assert w.points.balance("c1", at) == balance  # type: ignore[arg-type]


# -- bounded points values ----------------------------------------------------------------------


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_any_decimal_is_a_points_value_or_a_validation_error(value: Decimal) -> None:
    try:
        checked = check_points(value, "points")
    except ValidationError:
        return
    assert Decimal(0) <= checked <= MAX_POINTS
    assert checked == checked.quantize(Decimal("0.01"))


@given(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=0),
    st.decimals(allow_nan=False, allow_infinity=False, min_value=0),
)
def test_an_award_is_always_two_decimal_points_within_the_bound(
    base: Decimal, multiplier: Decimal
) -> None:
    points = earned(base, multiplier)
    assert Decimal(0) <= points <= MAX_POINTS
    assert points == points.quantize(Decimal("0.01"))


@given(st.decimals(allow_nan=True, allow_infinity=True), st.integers(0, 3))
def test_cashback_of_any_value_is_money_or_a_typed_refusal(value: Decimal, scale: int) -> None:
    rate = CashbackRate(Decimal("0.01"), usd(10**15))  # an absurd rate: a cent buys a fortune
    try:
        bought = rate.cashback(value.scaleb(scale) if value.is_finite() else value)
    except FxCrmError:
        return
    assert bought == Money.of(value.scaleb(scale) * 10**17, "USD")


@pytest.mark.parametrize("points", ["1000000000000.01", "1E+13", "0.001", "1E-5000"])
def test_an_out_of_range_redemption_or_adjustment_is_refused_and_writes_nothing(
    points: str,
) -> None:
    w = World()
    w.deal("1")
    w.pull()
    before = w.repository.store.last_position()
    with pytest.raises(ValidationError):
        w.points.redeem(ADMIN, "c1", Decimal(points), request_id="r1")
    with pytest.raises(ValidationError):
        w.points.redeem_reward(ADMIN, "c1", Decimal(points), "tv", request_id="r2")
    with pytest.raises(ValidationError):
        w.points.request_adjustment(ADMIN, "c1", -Decimal(points), reason="typo")
    assert w.repository.store.last_position() == before


def test_an_adjustment_within_the_limit_is_recorded_once_approved() -> None:
    w = World()
    request = w.points.request_adjustment(ADMIN, "c1", Decimal("12.50"), reason="goodwill")
    w.approvals.approve(OTHER_ADMIN, request)
    assert w.balance("c1") == Decimal("12.50")


# -- a retried redemption is compared by value ---------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 50), st.integers(0, 4))
def test_a_retry_with_the_same_value_written_any_way_is_replayed_and_another_value_conflicts(
    points: int, zeros: int
) -> None:
    w = World()
    w.deal("10")  # 100 points
    w.pull()
    first = w.points.redeem(ADMIN, "c1", Decimal(points), request_id="r1")
    written = Decimal(points).quantize(Decimal(1).scaleb(-zeros))
    again = w.points.redeem(ADMIN, "c1", written, request_id="r1")
    assert again.replayed
    assert again.cashback == first.cashback
    w.points.redeem_reward(ADMIN, "c1", Decimal(points), "tv", request_id="r2")
    assert w.points.redeem_reward(ADMIN, "c1", written, "tv", request_id="r2").replayed
    with pytest.raises(IdempotencyConflictError):
        w.points.redeem(ADMIN, "c1", Decimal(f"{points + 1}.00"), request_id="r1")
    assert w.balance("c1") == Decimal(100 - 2 * points)
