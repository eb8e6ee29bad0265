"""Plan kinds behind a protocol: one class and one registration per kind, the revenue a schedule's
ceiling compares with, explanations that agree with the pools, and the plan shapes of issue 13
item 7 (a spread share reduced on a wide spread, pip values finer than a cent)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fxcrm_core.commissions import PlanKind, Rule, Schedule
from fxcrm_core.commissions.plans import (
    COMMISSION,
    CommissionShare,
    Cpa,
    PerLot,
    Pips,
    ProfitShare,
    SpreadShare,
    plan_from_data,
    plan_kinds,
    plan_to_data,
    register_plan,
)
from fxcrm_core.commissions.schedule import Ceiling, Revenue, UnfundedPlanError
from fxcrm_core.kernel import CodecError, Currency, FxCrmError, Money, ValidationError
from fxcrm_core.kernel.money import UnroundedMoney
from fxcrm_core.trading import Deal
from fxcrm_core.trading.deal import UnknownServerResponseError
from tests.test_schedules import T0, USD, deal, usd


def schedule(default: Rule, **fields: Any) -> Schedule:
    return Schedule("std", 1, T0, USD, default=default, **fields)


# -- the registry -------------------------------------------------------------------------------


@attrs.frozen
class Flat:
    """A test kind: a flat amount a deal, whatever its volume."""

    kind: ClassVar[str] = "test_flat"
    funded_by: ClassVar[frozenset[str]] = frozenset((COMMISSION,))
    per_client: ClassVar[bool] = False
    explains: ClassVar[bool] = False

    amount: Money

    def pool(self, deal: Deal, lots: Decimal, currency: Currency) -> UnroundedMoney:
        return self.amount.to_unrounded()

    def note(self, deal: Deal) -> str:
        return ""


def test_a_new_kind_is_one_class_and_one_registration() -> None:
    register_plan(Flat)
    register_plan(Flat)  # registering the same class again is harmless
    line = schedule(Rule(Flat(usd("1.25")))).line(deal(Volume=50_000, VolumeClosed=50_000), "g")
    assert line is not None
    assert (line.pool.amount, line.rule_level) == (Decimal("1.25"), "default")
    assert line.explanation.startswith("default: test_flat, 5 lots")
    assert plan_from_data(plan_to_data(Flat(usd(2)))) == Flat(usd(2))


def test_a_kind_name_is_taken_once() -> None:
    @attrs.frozen
    class Other(Flat):
        pass

    with pytest.raises(ValidationError):
        register_plan(Other)  # "test_flat" names Flat already
    with pytest.raises(ValidationError):
        register_plan(int)


@pytest.mark.parametrize(
    "plan",
    [
        PerLot(usd("3.50")),
        CommissionShare(Decimal("0.4")),
        SpreadShare(usd(8), Decimal("0.25"), Decimal("0.00012")),
        Pips(Decimal("0.3"), Decimal("0.0125"), USD),
        ProfitShare(Decimal("0.1")),
        Cpa(usd(200), usd(500), Decimal(2)),
    ],
)
def test_every_built_in_kind_round_trips_through_its_stored_form(plan: Any) -> None:
    data = plan_to_data(plan)
    assert data["kind"] == plan.kind
    assert plan_kinds()[plan.kind] is type(plan)
    assert plan_from_data(data) == plan


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "no_such_kind", "amount": "1.00 USD"},
        {"amount": "1.00 USD"},
        {"kind": "per_lot"},
        {"kind": "per_lot", "amount": "-1.00 USD"},
        {"kind": "commission_share", "share": "NaN"},
        {"kind": "commission_share", "share": "2"},
        {"kind": "pips", "pips": "1", "pip_value": "1e30", "currency": "USD"},
        ["per_lot"],
    ],
)
def test_a_stored_plan_that_cannot_be_read_is_a_codec_error(data: Any) -> None:
    with pytest.raises(CodecError):
        plan_from_data(data)


def test_the_short_spellings_build_the_plan_classes() -> None:
    assert Rule(PlanKind.PER_LOT, usd(2)).plan == PerLot(usd(2))
    assert Rule(PlanKind.COMMISSION_SHARE, share=Decimal("0.5")).plan == CommissionShare(
        Decimal("0.5")
    )
    cpa = Rule(PlanKind.CPA, usd(200), min_deposit=usd(500), min_lots=Decimal(2))
    assert cpa.plan == Cpa(usd(200), usd(500), Decimal(2))
    assert (cpa.kind, cpa.amount, cpa.min_deposit, cpa.min_lots) == (
        PlanKind.CPA, usd(200), usd(500), Decimal(2)
    )  # fmt: skip
    assert Rule(PlanKind.PER_LOT, usd(2)) == Rule(PerLot(usd(2)))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Rule(PlanKind.PER_LOT, Decimal(2)),  # type: ignore[arg-type]
        lambda: Rule(PlanKind.PER_LOT, usd(-2)),
        lambda: Rule(PerLot(usd(1)), usd(1)),  # amounts twice
        lambda: Rule("per_lot"),  # type: ignore[arg-type]
        lambda: Rule(PlanKind.COMMISSION_SHARE, share=Decimal("NaN")),
        lambda: Rule(PlanKind.COMMISSION_SHARE, share=0.5),  # type: ignore[arg-type]
        lambda: Rule(PlanKind.PER_LOT, usd(1), min_lots=Decimal(1)),
        lambda: Rule(PlanKind.PER_LOT, usd(1), trigger="close"),  # type: ignore[arg-type]
        lambda: Rule(PlanKind.PER_LOT, usd(1), cap_per_deal=usd(-1)),
        lambda: Rule(PlanKind.PER_LOT, usd(1), min_hold=60),  # type: ignore[arg-type]
        lambda: Pips(Decimal(1), Decimal("1e40"), USD),
        lambda: Pips(Decimal(-1), Decimal(1), USD),
        lambda: SpreadShare(usd(1), Decimal(1), Decimal(0)),
        lambda: Schedule("std", True, T0, USD),
        lambda: Schedule("", 1, T0, USD),
        lambda: Schedule("std", 1, datetime(2026, 3, 1), USD),  # noqa: DTZ001 (naive on purpose)
        lambda: Schedule("std", 1, T0, USD, lot_modifiers={"cent": Decimal("1e9")}),
        lambda: Schedule("std", 1, T0, USD, by_symbol={"EURUSD": "3 USD"}),
        lambda: Schedule("std", 1, T0, USD, default=Rule(PlanKind.PER_LOT, Money.of(1, "EUR"))),
        lambda: Schedule("std", 1, T0, USD, allow_above_revenue=1),
        lambda: Schedule("std", 1, T0, USD, revenue=Revenue.commission(), allow_above_revenue=True),
    ],
)
def test_hostile_definitions_are_typed_errors(build: Any) -> None:
    with pytest.raises(FxCrmError):
        build()


# -- revenue ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        Rule(PlanKind.SPREAD_SHARE, usd(8), share=Decimal("0.25")),
        Rule(PlanKind.PIPS, usd(10), pips=Decimal("0.3")),
        Rule(PlanKind.PROFIT_SHARE, share=Decimal("0.1")),
    ],
)
def test_a_plan_the_commission_cannot_pay_is_refused_when_defined(rule: Rule) -> None:
    with pytest.raises(UnfundedPlanError, match="cannot be paid from the commission revenue"):
        schedule(rule)
    with pytest.raises(UnfundedPlanError):
        Schedule("std", 1, T0, USD, by_symbol={"XAUUSD": rule}, revenue=Revenue.commission())
    assert schedule(rule, revenue=Revenue.uncapped()).revenue.ceiling is Ceiling.NONE


def test_allow_above_revenue_is_the_older_spelling_of_no_ceiling() -> None:
    rule = Rule(PlanKind.PER_LOT, usd(3))
    old = schedule(rule, allow_above_revenue=True)
    assert old == schedule(rule, revenue=Revenue.uncapped())
    assert old.revenue == Revenue.uncapped()
    assert schedule(rule).revenue == Revenue.commission()


def test_a_spread_share_is_limited_by_commission_plus_markup() -> None:
    # $8 markup a lot x 2 lots x 100% = $16 due; the broker earned $7 commission and the table's
    # $1.50 a lot of markup on 2 lots: $10.00 in all.
    revenue = Revenue.commission_and_markup({"EURUSD": usd("1.50")})
    s = schedule(Rule(PlanKind.SPREAD_SHARE, usd(8)), revenue=revenue)
    line = s.line(deal(Volume=20_000, VolumeClosed=20_000), "std")
    assert line is not None
    assert line.pool.amount == Decimal("10.00")
    assert "limited to the broker's revenue 10.00 USD (commission 7.00 + markup 3.00)" in (
        line.explanation
    )
    # An alias counts its base symbol's markup.
    aliased = s.line(deal(Symbol="EURUSD.m", Volume=20_000, VolumeClosed=20_000), "std")
    assert aliased is not None
    assert aliased.pool.amount == Decimal("10.00")


def test_without_a_table_the_deals_own_markup_counts() -> None:
    s = schedule(Rule(PlanKind.PER_LOT, usd(5)), revenue=Revenue.commission_and_markup())
    spread_only = attrs.evolve(deal(Commission="0"), markup=usd("2.40"))
    line = s.line(spread_only, "std")
    assert line is not None
    assert line.pool.amount == Decimal("2.40")
    nothing_known = s.line(deal(Commission="0"), "std")
    assert nothing_known is not None
    assert nothing_known.pool.amount == Decimal(0)


REVENUES = [
    Revenue.commission(),
    Revenue.commission_and_markup({"EURUSD": usd("0.70")}),
    Revenue.commission_and_markup(),
    Revenue.uncapped(),
]


@given(
    per_lot=st.integers(0, 5_000),
    cap=st.none() | st.integers(0, 5_000),
    commission=st.integers(0, 5_000),
    markup=st.none() | st.integers(0, 500),
    units=st.integers(1, 2_000_000),
    revenue=st.sampled_from(REVENUES),
)
@example(per_lot=300, cap=None, commission=0, markup=None, units=10_000, revenue=REVENUES[0])
def test_an_amount_stated_in_an_explanation_is_the_pool(
    per_lot: int, cap: int | None, commission: int, markup: int | None, units: int, revenue: Revenue
) -> None:
    rule = Rule(
        PlanKind.PER_LOT,
        Money.from_minor(per_lot, "USD"),
        cap_per_deal=None if cap is None else Money.from_minor(cap, "USD"),
    )
    d = deal(Volume=units, VolumeClosed=units, Commission=str(-Decimal(commission) / 100))
    if markup is not None:
        d = attrs.evolve(d, markup=Money.from_minor(markup, "USD"))
    line = schedule(rule, revenue=revenue).line(d, "std")
    assert line is not None
    stated = re.findall(r"(?:capped at|revenue) (-?[0-9.]+) USD", line.explanation)
    if stated:
        assert Decimal(stated[-1]) == line.pool.amount
    due = Money.from_minor(per_lot, "USD").amount * d.volume_closed
    assert line.pool.amount <= due
    assert bool(stated) == (line.pool.amount != due)


# -- plan shapes --------------------------------------------------------------------------------


def test_a_spread_share_is_reduced_when_the_spread_is_above_average() -> None:
    plan = SpreadShare(usd(8), Decimal("0.5"), average_spread=Decimal("0.00012"))
    s = schedule(Rule(plan), revenue=Revenue.uncapped())
    wide = deal(MarketBid="1.08000", MarketAsk="1.08018")  # 1.8 pips against 1.2 on average
    assert wide.spread == Decimal("0.00018")
    line = s.line(wide, "std")
    assert line is not None
    # $8 x 1 lot x 50% = $4, x 1.2 / 1.8 = $2.666...
    assert line.pool.amount.quantize(Decimal("0.000001")) == Decimal("2.666667")
    assert "spread 0.00018 above the average 0.00012" in line.explanation
    narrow = s.line(deal(MarketBid="1.08000", MarketAsk="1.08006"), "std")
    unknown = s.line(deal(), "std")
    assert narrow is not None
    assert unknown is not None
    assert narrow.pool.amount == unknown.pool.amount == Decimal("4.00")  # never increased


def test_a_pip_value_finer_than_a_cent() -> None:
    # 0.3 pips x 0.0125 USD a pip and lot x 3 lots = 0.01125 USD, exact.
    s = schedule(Rule(Pips(Decimal("0.3"), Decimal("0.0125"), USD)), revenue=Revenue.uncapped())
    line = s.line(deal(Volume=30_000, VolumeClosed=30_000), "std")
    assert line is not None
    assert line.pool == UnroundedMoney(Decimal("0.01125"), USD)


def test_a_deals_market_prices_out_of_order_are_refused() -> None:
    with pytest.raises(UnknownServerResponseError):
        deal(MarketBid="1.1", MarketAsk="1.0")
    assert deal(MarketBid="0", MarketAsk="0").spread is None
