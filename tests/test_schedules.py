"""Rebate schedules: resolution order, plan kinds, lot modifiers, triggers, caps, the ceiling."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from fxcrm_core.commissions import PlanKind, Rule, Schedule, ScheduleBook, Trigger
from fxcrm_core.kernel import Currency, Money, NotFoundError, ValidationError
from fxcrm_core.trading import Deal

T0 = datetime(2026, 3, 1, tzinfo=UTC)
USD = Currency.of("USD")


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def deal(**fields: Any) -> Deal:
    record: dict[str, Any] = {
        "Deal": 1, "Login": 7, "Action": 0, "Entry": 1, "Symbol": "EURUSD", "Volume": 10_000,
        "VolumeClosed": 10_000, "Commission": "-7.00", "Profit": "0", "Time": 1_773_050_400,
    }  # fmt: skip
    record.update(fields)
    return Deal.from_mt5(record, server="mt5", currency="USD", utc_offset=timedelta(hours=2))


TWO_LOTS = {"Volume": 20_000, "VolumeClosed": 20_000}
PROFIT_TENTH = Rule(PlanKind.PROFIT_SHARE, share=Decimal("0.1"))


def schedule(**overrides: Any) -> Schedule:
    base: dict[str, Any] = {
        "schedule_id": "std",
        "version": 1,
        "effective_from": T0,
        "currency": USD,
        "by_symbol": {"XAUUSD": Rule(PlanKind.PER_LOT, usd(5))},
        "symbol_groups": {"US30": "indices", "GER40": "indices"},
        "by_symbol_group": {"indices": Rule(PlanKind.PER_LOT, usd(1))},
        "by_account_group": {"pro": Rule(PlanKind.COMMISSION_SHARE, share=Decimal("0.5"))},
        "default": Rule(PlanKind.PER_LOT, usd(3)),
        "allow_above_revenue": True,
    }
    base.update(overrides)
    return Schedule(**base)


def test_a_100_lot_deal_under_a_04_modifier_counts_as_40_lots() -> None:
    # 100 lots = 1,000,000 MT5 units; the "cent" group counts 0.4 of a lot: 100 x 0.4 = 40 lots,
    # and at the default $3 a lot the pool is 40 x 3 = $120.
    s = schedule(lot_modifiers={"cent": Decimal("0.4")})
    line = s.line(deal(Volume=1_000_000, VolumeClosed=1_000_000), "cent")
    assert line is not None
    assert line.lots == Decimal(40)
    assert line.pool.amount == Decimal(120)
    assert "100 lots x 0.4 = 40" in line.explanation


@pytest.mark.parametrize(
    ("symbol", "group", "level", "pool"),
    [
        ("XAUUSD", "std", "symbol XAUUSD", Decimal("5.00")),
        ("XAUUSD.m", "std", "alias XAUUSD.m of XAUUSD", Decimal("5.00")),  # not skipped
        ("US30", "std", "symbol group indices", Decimal("1.00")),
        ("GER40", "pro", "symbol group indices", Decimal("1.00")),
        ("EURUSD", "pro", "account group pro", Decimal("3.500")),  # half of $7 commission
        ("EURUSD", "std", "default", Decimal("3.00")),
    ],
)
def test_rates_resolve_from_most_to_least_specific(
    symbol: str, group: str, level: str, pool: Decimal
) -> None:
    line = schedule().line(deal(Symbol=symbol), group)
    assert line is not None
    assert (line.rule_level, line.pool.amount) == (level, pool)


def test_no_rule_no_line_and_non_trades_earn_nothing() -> None:
    assert schedule(default=None).line(deal(Symbol="EURUSD"), "std") is None
    assert schedule().line(deal(Action=2), "std") is None  # a balance deal


@pytest.mark.parametrize(
    ("rule", "fields", "expected"),
    [
        (
            Rule(PlanKind.SPREAD_SHARE, usd(8), share=Decimal("0.25")),
            {"Volume": 20_000, "VolumeClosed": 20_000},
            Decimal("4.00"),
        ),
        (
            Rule(PlanKind.PIPS, usd(10), pips=Decimal("0.3")),
            {"Volume": 20_000, "VolumeClosed": 20_000},
            Decimal("6.00"),
        ),
        (
            Rule(PlanKind.PROFIT_SHARE, share=Decimal("0.1")),
            {"Profit": "250.00"},
            Decimal("25.000"),
        ),
        (Rule(PlanKind.PROFIT_SHARE, share=Decimal("0.1")), {"Profit": "-250.00"}, Decimal(0)),
    ],
)
def test_plan_kinds(rule: Rule, fields: dict[str, Any], expected: Decimal) -> None:
    # Spread: $8 mark-up a lot x 2 lots x 25% = $4. Pips: 0.3 pips x $10 x 2 lots = $6.
    # Profit share: 10% of a $250 profit; nothing on a loss.
    line = schedule(default=rule).line(deal(**fields), "std")
    amount = line.pool.amount if line else Decimal(0)
    assert amount == expected


@pytest.mark.parametrize(
    ("entry", "volume", "closed", "trigger", "lots"),
    [
        (0, 30_000, 0, Trigger.OPEN, Decimal(3)),
        (0, 30_000, 0, Trigger.CLOSE, None),
        (1, 10_000, 10_000, Trigger.CLOSE, Decimal(1)),  # a partial close: what it closed
        (2, 30_000, 10_000, Trigger.OPEN, Decimal(2)),  # in/out: closes 1, opens 2
        (2, 30_000, 10_000, Trigger.CLOSE, Decimal(1)),
        (2, 30_000, 10_000, Trigger.BOTH, Decimal(3)),
        (3, 5_000, 5_000, Trigger.CLOSE, Decimal("0.5")),  # close-by
        (3, 5_000, 5_000, Trigger.OPEN, None),
    ],
)
def test_triggers_count_opening_and_closed_volume(
    entry: int, volume: int, closed: int, trigger: Trigger, lots: Decimal | None
) -> None:
    s = schedule(default=Rule(PlanKind.PER_LOT, usd(1), trigger=trigger))
    line = s.line(deal(Entry=entry, Volume=volume, VolumeClosed=closed), "std")
    assert (line.lots if line else None) == lots


def test_caps_and_the_broker_revenue_ceiling() -> None:
    capped = schedule(default=Rule(PlanKind.PER_LOT, usd(3), cap_per_deal=usd(10)))
    line = capped.line(deal(Volume=100_000, VolumeClosed=100_000), "std")  # 10 lots x $3 = 30
    assert line is not None
    assert line.pool.amount == Decimal(10)
    ceiling = schedule(allow_above_revenue=False)
    line = ceiling.line(deal(Volume=100_000, VolumeClosed=100_000, Commission="-7.00"), "std")
    assert line is not None
    assert line.pool.amount == Decimal("7.00")  # $30 due, but the broker earned $7
    assert "limited to the broker's revenue" in line.explanation


def test_versions_take_effect_in_order() -> None:
    book = ScheduleBook()
    book.add(schedule())
    book.add(
        schedule(
            version=2,
            effective_from=T0 + timedelta(days=30),
            default=Rule(PlanKind.PER_LOT, usd(4)),
        )
    )
    assert book.at(T0 + timedelta(days=29)).version == 1
    assert book.at(T0 + timedelta(days=30)).version == 2
    with pytest.raises(NotFoundError):
        book.at(T0 - timedelta(seconds=1))
    with pytest.raises(ValidationError):
        book.add(schedule(version=4, effective_from=T0 + timedelta(days=90)))
    with pytest.raises(ValidationError):
        Rule(PlanKind.PER_LOT)
    with pytest.raises(ValidationError):
        Rule(PlanKind.COMMISSION_SHARE, share=Decimal("1.5"))


def test_versions_are_found_by_number() -> None:
    book = ScheduleBook()
    first = Schedule("std", 1, datetime(2026, 1, 1, tzinfo=UTC), Currency.of("USD"))
    book.add(first)
    assert book.version(1) is first
    for missing in (0, 2):
        with pytest.raises(NotFoundError):
            book.version(missing)
