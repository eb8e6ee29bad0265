"""The engine with strategies that pay their own rates: held within the schedule's revenue
ceiling (explanations agree with the amounts), and rank slices on the ranks recorded as of the
deal."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.commissions import (
    FixedShares,
    IbTree,
    PassThrough,
    PlanKind,
    RankSlices,
    RebateEngine,
    Revenue,
    Rule,
    Schedule,
    ScheduleBook,
)
from fxcrm_core.commissions.distribution import Distribution
from fxcrm_core.kernel import Currency, Money
from fxcrm_core.trading import DealChange, FeedItem
from tests.test_rebate_engine import CAL, T0, deal

USD = Currency.of("USD")


def usd(amount: str | int) -> Money:
    return Money.of(amount, USD)


def engine(
    distribution: Distribution, revenue: Revenue | None = None
) -> tuple[RebateEngine, IbTree]:
    tree = IbTree()
    start = T0 - timedelta(days=30)
    tree.add_ib("master", None, start)
    tree.add_ib("sub", "master", start)
    tree.attribute("c-1", "sub", start)
    book = ScheduleBook()
    book.add(
        Schedule(
            "std", 1, start, USD, default=Rule(PlanKind.PER_LOT, usd(3)),
            revenue=revenue or Revenue.commission(),
        )
    )  # fmt: skip
    made = RebateEngine(
        tree,
        book,
        distribution,
        client_of=lambda server, login: "c-1",
        account_group_of=lambda server, login: "std",
        trading_day_of=lambda d: CAL.trading_day(d.time),
    )
    return made, tree


PASS = PassThrough(usd(3), {"sub": usd(1)})  # sub nets 2.00 a lot, master 1.00


def test_a_pass_through_on_a_spread_only_account_pays_nothing_and_says_so() -> None:
    made, _ = engine(PASS)
    paid = made.process([FeedItem(1, DealChange.ADDED, deal(Commission="0.00"))])
    assert paid == []  # the broker earned nothing on the deal: nothing to share


def test_a_pass_through_above_the_commission_is_scaled_to_it_and_explained() -> None:
    made, _ = engine(PASS)
    # 2 lots: the pass-through would pay 6.00 in all; the commission is 4.50.
    paid = made.process([FeedItem(1, DealChange.ADDED, deal(Commission="-4.50"))])
    assert sum(e.amount.amount for e in paid) == Decimal("4.50")
    assert [(e.ib_id, e.amount.amount) for e in paid] == [
        ("master", Decimal("1.50")),
        ("sub", Decimal("3.00")),
    ]
    for e in paid:
        assert "to stay within 4.50 USD for the deal" in e.explanation


def test_without_a_ceiling_a_pass_through_pays_its_rates() -> None:
    made, _ = engine(PASS, Revenue.uncapped())
    paid = made.process([FeedItem(1, DealChange.ADDED, deal(Commission="0.00"))])
    assert [(e.ib_id, e.amount.amount) for e in paid] == [
        ("master", Decimal(2)),
        ("sub", Decimal(4)),
    ]


@given(
    commission=st.decimals(min_value=0, max_value=50, places=2),
    lots=st.integers(min_value=1, max_value=9),
)
def test_a_strategy_at_its_own_rates_never_pays_more_than_the_revenue(
    commission: Decimal, lots: int
) -> None:
    made, _ = engine(PASS)
    item = FeedItem(
        1, DealChange.ADDED,
        deal(Commission=str(-commission), Volume=lots * 10_000, VolumeClosed=lots * 10_000),
    )  # fmt: skip
    paid = made.process([item])
    total = sum((e.amount.amount for e in paid), Decimal(0))
    assert total <= commission
    assert total == min(commission, Decimal(3 * lots)) or commission - total < Decimal("1e-20")


def test_rank_slices_follow_the_ranks_recorded_as_of_each_deal() -> None:
    slices = RankSlices({1: usd(1), 2: usd(2)})  # no fixed ranks: the recorded ones
    made, tree = engine(slices, Revenue.uncapped())
    tree.set_rank("master", 2, T0 - timedelta(days=20))
    tree.set_rank("sub", 2, T0 + timedelta(hours=1))  # sub is promoted an hour after T0
    before = made.process([FeedItem(1, DealChange.ADDED, deal(Deal=1))])
    after = made.process([FeedItem(2, DealChange.ADDED, deal(Deal=2, Time=1_773_050_400 + 7200))])
    assert {e.ib_id: e.amount.amount for e in before} == {"master": Decimal(6)}  # both slices
    assert {e.ib_id: e.amount.amount for e in after} == {"sub": Decimal(6)}


def test_fixed_shares_are_not_scaled() -> None:
    made, _ = engine(FixedShares((Decimal("0.5"), Decimal("0.5"))))
    paid = made.process([FeedItem(1, DealChange.ADDED, deal(Commission="-4.50"))])
    assert sum(e.amount.amount for e in paid) == Decimal("4.50")
    assert all("to stay within" not in e.explanation for e in paid)
