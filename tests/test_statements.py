"""IB statements: by trading day, client, symbol and level; in the IB's currency; names masked
for parent IBs unless the sub-IB shares them; equal to what the engine accrued."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from fxcrm_core.commissions import (
    FixedShares,
    IbTree,
    PlanKind,
    RebateEngine,
    RebateEntry,
    Rule,
    Schedule,
    ScheduleBook,
    build_statement,
)
from fxcrm_core.kernel import Currency, ExchangeRate, Money, RateTable, TradingCalendar
from fxcrm_core.trading import Deal, DealChange, FeedItem

JAN = datetime(2026, 1, 1, tzinfo=UTC)
USD, EUR = Currency.of("USD"), Currency.of("EUR")
NAMES = {"c-1": "Ana Lima", "c-2": "Bo Chen"}
LOGINS = {11: "c-1", 22: "c-2"}


def deal(ticket: int, login: int, symbol: str, time: int, **fields: Any) -> Deal:
    record: dict[str, Any] = {
        "Deal": ticket, "Login": login, "Action": 1, "Entry": 1, "Symbol": symbol,
        "Volume": 10_000, "VolumeClosed": 10_000, "Commission": "-7.00", "Time": time,
    }  # fmt: skip
    record.update(fields)
    return Deal.from_mt5(record, server="mt5", currency="USD", utc_offset=timedelta(hours=2))


TWO_LOTS = {"Volume": 20_000, "VolumeClosed": 20_000}
THREE_LOTS = {"Volume": 30_000, "VolumeClosed": 30_000}


def run() -> tuple[RebateEngine, Sequence[RebateEntry]]:
    tree = IbTree()
    tree.add_ib("master", None, JAN)
    tree.add_ib("sub", "master", JAN)
    tree.attribute("c-1", "sub", JAN)  # a sub-IB's client
    tree.attribute("c-2", "master", JAN)  # the master's own client
    book = ScheduleBook()
    book.add(Schedule("std", 1, JAN, USD, default=Rule(PlanKind.PER_LOT, Money.of(10, "USD")),
                      allow_above_revenue=True))  # fmt: skip
    engine = RebateEngine(
        tree,
        book,
        FixedShares((Decimal("0.6"), Decimal("0.4"))),
        client_of=lambda server, login: LOGINS.get(login),
        account_group_of=lambda server, login: "std",
        trading_day_of=lambda d: TradingCalendar().trading_day(d.time),
    )
    monday, tuesday = 1_773_050_400, 1_773_050_400 + 86_400  # 9 and 10 March 2026
    items = [
        FeedItem(1, DealChange.ADDED, deal(1, 11, "EURUSD", monday)),  # c-1: sub 6, master 4
        FeedItem(2, DealChange.ADDED, deal(2, 22, "XAUUSD", monday)),  # c-2: master 6
        FeedItem(
            3, DealChange.ADDED, deal(3, 11, "XAUUSD", tuesday, Volume=20_000, VolumeClosed=20_000)
        ),
        FeedItem(
            4,
            DealChange.UPDATED,
            deal(3, 11, "XAUUSD", tuesday, Volume=30_000, VolumeClosed=30_000),
        ),
        FeedItem(5, DealChange.ADDED, deal(4, 22, "EURUSD", tuesday)),
        FeedItem(6, DealChange.DELETED, deal(4, 22, "EURUSD", tuesday)),
    ]
    return engine, engine.process(items)


RATES = RateTable([ExchangeRate.of("USD", "EUR", "0.9", "ecb", JAN)])


def test_the_masters_statement() -> None:
    engine, entries = run()
    s = build_statement(entries, "master", date(2026, 3, 9), date(2026, 3, 10),
                        currency=USD, rates=RATES, client_names=NAMES)  # fmt: skip
    # c-1 is the sub's client: the master sees initials. c-2 is the master's own: full name.
    assert {line.client for line in s.lines} == {"c-1 A. L.", "c-2 Bo Chen"}
    # Monday: c-1 EURUSD 1 lot -> 40% of 10 = 4; c-2 XAUUSD 1 lot -> 60% of 10 = 6.
    # Tuesday: c-1 XAUUSD 2 lots, then corrected to 3 lots -> 40% of 30 = 12; c-2's deal deleted.
    assert {k: v.amount for k, v in s.by_day().items()} == {
        date(2026, 3, 9): Decimal("10.0"),
        date(2026, 3, 10): Decimal("12.0"),
    }
    assert {k: v.amount for k, v in s.by_level().items()} == {1: Decimal("6.0"), 2: Decimal("16.0")}
    assert {k: v.amount for k, v in s.by_symbol().items()} == {
        "EURUSD": Decimal("4.0"),
        "XAUUSD": Decimal("18.0"),
    }
    assert s.total.amount == engine.totals()["master"].amount == Decimal(22)
    tuesday = [line for line in s.lines if line.trading_day == date(2026, 3, 10)]
    # The corrected deal shows its corrected volume; the deleted one is gone.
    assert [(line.symbol, line.lots) for line in tuesday] == [("XAUUSD", Decimal(3))]


def test_a_sub_ib_may_share_names_and_statements_convert_currency() -> None:
    _, entries = run()
    s = build_statement(
        entries, "master", date(2026, 3, 9), date(2026, 3, 10), currency=EUR, rates=RATES,
        client_names=NAMES, shares_names=lambda sub: sub == "sub",
    )  # fmt: skip
    assert "c-1 Ana Lima" in {line.client for line in s.lines}
    assert s.total.amount == Decimal("19.80")  # 22 USD x 0.9
    assert s.rates_used == ("USD/EUR 0.9 (ecb, 2026-01-01T00:00:00+00:00)",)


def test_the_period_bounds_and_the_sub_ibs_own_view() -> None:
    _, entries = run()
    monday = build_statement(entries, "master", date(2026, 3, 9), date(2026, 3, 9),
                             currency=USD, rates=RATES, client_names=NAMES)  # fmt: skip
    assert monday.total.amount == Decimal("10.0")
    sub = build_statement(entries, "sub", date(2026, 3, 9), date(2026, 3, 10),
                          currency=USD, rates=RATES, client_names=NAMES)  # fmt: skip
    assert {line.client for line in sub.lines} == {"c-1 Ana Lima"}  # its own client, level 1
    assert sub.total.amount == Decimal(6) + Decimal(18)
