"""A differential of a share of the commission as well as an amount a lot (issue 13 item 7)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.commissions import (
    Differential,
    FixedShares,
    KeepAndPassUp,
    PassThrough,
    RankSlices,
)
from fxcrm_core.commissions.distribution import DifferentialRate
from fxcrm_core.kernel import FxCrmError, Money, ValidationError


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def test_a_parent_at_100_percent_plus_10_over_a_sub_at_50_percent_plus_3() -> None:
    # The deal's commission is $14 on 2 lots. The sub earns 50% of 14 + $3 x 2 = $13; the
    # parent's override is (100% - 50%) of 14 + ($10 - $3) x 2 = 7 + 14 = $21.
    plan = Differential(
        {
            "sub": DifferentialRate(Decimal("0.5"), usd(3)),
            "parent": DifferentialRate(Decimal(1), usd(10)),
        }
    )
    shares = plan.distribute(["sub", "parent"], Decimal(2), usd(14))
    assert [s.amount.amount for s in shares] == [Decimal("13.00"), Decimal("21.00")]
    assert "rate 100% + 10.00 USD/lot - child's 50% + 3.00 USD/lot" in shares[1].step
    assert "= 50% of 14.00 + 7.00 USD/lot x 2 lots" in shares[1].step


def test_per_lot_rates_mix_with_share_rates_and_a_child_above_earns_its_parent_nothing() -> None:
    plan = Differential({"sub": DifferentialRate(Decimal("0.8"), usd(5)), "master": usd(4)})
    shares = plan.distribute(["sub", "master"], Decimal(1), usd(10))
    assert [s.amount.amount for s in shares] == [Decimal("13.00"), Decimal("0.00")]


@pytest.mark.parametrize(
    "build",
    [
        lambda: DifferentialRate(Decimal("1.5"), usd(1)),
        lambda: DifferentialRate(Decimal("NaN"), usd(1)),
        lambda: DifferentialRate(0.5, usd(1)),
        lambda: DifferentialRate(Decimal("0.5"), usd(-1)),
        lambda: Differential({"sub": "3 USD"}),
        lambda: Differential([("sub", usd(1))]),
        lambda: Differential({"sub": DifferentialRate(Decimal(0), Money.of(1, "EUR"))}).distribute(
            ["sub"], Decimal(1), usd(1)
        ),
        lambda: Differential({"sub": DifferentialRate(Decimal(0), usd(1))}).distribute(
            ["sub", "up"], Decimal(1), usd(1)
        ),
    ],
)
def test_bad_rates_are_typed_errors(build: object) -> None:
    with pytest.raises(FxCrmError):
        build()  # type: ignore[operator]


rates = st.builds(
    DifferentialRate,
    st.integers(0, 100).map(lambda p: Decimal(p) / 100),
    st.integers(0, 5_000).map(lambda c: Money.from_minor(c, "USD")),
)


@given(
    st.lists(rates, min_size=1, max_size=6),
    st.integers(1, 10_000).map(lambda n: Decimal(n) / 100),
    st.integers(0, 1_000_000).map(lambda c: Money.from_minor(c, "USD")),
)
def test_a_differential_pays_the_highest_share_and_the_highest_rate_never_negative(
    chain_rates: list[DifferentialRate], lots: Decimal, pool: Money
) -> None:
    chain = [f"ib{i}" for i in range(len(chain_rates))]
    shares = Differential(dict(zip(chain, chain_rates, strict=True))).distribute(chain, lots, pool)
    assert all(s.amount.amount >= 0 for s in shares)
    top_share = max(r.share for r in chain_rates)
    top_per_lot = max(r.per_lot.amount for r in chain_rates)
    assert sum(s.amount.amount for s in shares) == top_share * pool.amount + top_per_lot * lots


def test_a_missing_rate_is_refused() -> None:
    with pytest.raises(ValidationError):
        Differential({"sub": DifferentialRate(Decimal(1), usd(1))}).distribute(
            ["sub", "master"], Decimal(1), usd(1)
        )


def test_a_strategy_says_whether_it_pays_from_the_pool() -> None:
    # A pass-through pays its own rates whatever the pool: a ceiling on the pool does not bound
    # it (the engine must not state a "limited to" pool next to the rates it pays).
    assert FixedShares((Decimal(1),)).uses_pool
    assert KeepAndPassUp({}).uses_pool
    assert not PassThrough(usd(3), {}).uses_pool
    assert not RankSlices({1: usd(1)}, {}).uses_pool
    assert not Differential({"a": usd(3)}).uses_pool
    assert not Differential({"a": DifferentialRate(Decimal(0), usd(3))}).uses_pool
    assert Differential({"a": DifferentialRate(Decimal("0.5"), usd(3))}).uses_pool
    shares = PassThrough(usd(3), {}).distribute(["a"], Decimal(1), usd(0))
    assert shares[0].amount.amount == Decimal(3)  # what "uses_pool = False" means
