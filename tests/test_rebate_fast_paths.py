"""Private fast paths decide exactly as the general ones: FixedShares paid without its Share
objects writes the same entries (amounts, explanations, keys) as the strategy's own shares, on
any chain, rule, ceiling and lot size; an IB account's one-day accrual merges as the rule does."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fxcrm_core.commissions import (
    FixedShares,
    IbTree,
    PlanKind,
    RebateEngine,
    Revenue,
    Rule,
    Schedule,
    ScheduleBook,
)
from fxcrm_core.commissions._rows import lines
from fxcrm_core.commissions.payouts import Sum, _merged
from fxcrm_core.kernel import Currency, Money, TradingCalendar
from fxcrm_core.trading import Deal, DealChange, FeedItem

T0 = datetime(2026, 3, 9, 8, tzinfo=UTC)
CAL = TradingCalendar()
SHARES = (Decimal("0.5"), Decimal("0.2"), Decimal("0.1"), Decimal("0.1"), Decimal("0.05"))


class GeneralShares(FixedShares):
    """The same strategy, not the exact type: the engine takes its general path."""


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def schedules(uncapped: bool) -> ScheduleBook:
    book = ScheduleBook()
    book.add(
        Schedule(
            "std", 1, T0 - timedelta(days=30), Currency.of("USD"),
            by_symbol={"EURUSD": Rule(PlanKind.PER_LOT, usd("3.00")),
                       "XAUUSD": Rule(PlanKind.PER_LOT, usd("7.25"), cap_per_deal=usd("9.00"))},
            symbol_groups={"US30": "indices"},
            by_symbol_group={"indices": Rule(PlanKind.COMMISSION_SHARE, share=Decimal("0.5"))},
            default=Rule(PlanKind.PER_LOT, usd("2.00")),
            lot_modifiers={"vip": Decimal("0.5")},
            revenue=Revenue.uncapped() if uncapped else Revenue.commission(),
        )
    )  # fmt: skip
    book.add(
        Schedule(
            "std", 2, T0 + timedelta(hours=12), Currency.of("USD"),
            default=Rule(PlanKind.PER_LOT, usd("1.10")),
            revenue=Revenue.uncapped() if uncapped else Revenue.commission(),
        )
    )  # fmt: skip
    return book


def engine(strategy: FixedShares, uncapped: bool) -> RebateEngine:
    tree = IbTree()
    start = T0 - timedelta(days=30)
    parent = None
    for n in range(6):  # a chain of six; the schedule shares five levels
        tree.add_ib(f"ib{n}", parent, start)
        parent = f"ib{n}"
    tree.add_ib("solo", None, start)
    tree.attribute("c-deep", "ib5", start)
    tree.attribute("c-mid", "ib2", start)
    tree.attribute("c-solo", "solo", start)
    tree.reparent("ib3", "solo", T0 + timedelta(hours=6))  # the chain changes during the day
    clients = {1: "c-deep", 2: "c-mid", 3: "c-solo"}
    groups = {1: "std", 2: "vip", 3: "std"}
    return RebateEngine(
        tree, schedules(uncapped), strategy,
        client_of=lambda server, login: clients.get(login),
        account_group_of=lambda server, login: groups[login],
        trading_day_of=lambda deal: CAL.trading_day(deal.time),
    )  # fmt: skip


def deal(ticket: int, login: int, symbol: str, units: int, minor: int, hours: int) -> Deal:
    record: dict[str, Any] = {
        "Deal": ticket, "Login": login, "Action": 0, "Entry": 1, "Symbol": symbol,
        "Volume": units, "VolumeClosed": units, "Commission": str(Decimal(-minor) / 100),
        "Time": int((T0 + timedelta(hours=hours)).timestamp()) + 7200,
    }  # fmt: skip
    return Deal.from_mt5(record, server="mt5", currency="USD", utc_offset=timedelta(hours=2))


items = st.lists(
    st.tuples(
        st.integers(1, 6),  # ticket (repeats are updates)
        st.sampled_from([1, 2, 3, 4]),  # login (4: no client)
        st.sampled_from(["EURUSD", "EURUSD.m", "XAUUSD", "US30", "GBPUSD"]),
        st.integers(1, 500_000),  # volume (1/10,000 lot)
        st.integers(0, 100_000),  # commission charged, cents
        st.integers(0, 23),  # hour of the day
        st.booleans(),  # deleted
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(items, st.booleans())
def test_fixed_shares_fast_path_writes_what_the_shares_write(
    feed: list[tuple[int, int, str, int, int, int, bool]], uncapped: bool
) -> None:
    fast, general = engine(FixedShares(SHARES), uncapped), engine(GeneralShares(SHARES), uncapped)
    assert fast._fixed
    assert not general._fixed
    for cursor, (ticket, login, symbol, units, minor, hours, deleted) in enumerate(feed, 1):
        change = DealChange.DELETED if deleted else DealChange.ADDED
        item = FeedItem(cursor, change, deal(ticket, login, symbol, units, minor, hours))
        assert lines(fast.process([item])) == lines(general.process([item]))
    assert fast.totals() == general.totals()


def test_a_chain_shorter_than_the_shares_and_one_longer_pay_as_the_strategy_does() -> None:
    fast, general = engine(FixedShares(SHARES), False), engine(GeneralShares(SHARES), False)
    feed = [FeedItem(n, DealChange.ADDED, deal(n, login, "EURUSD", 30_000, 5_000, 1))
            for n, login in ((1, 1), (2, 2), (3, 3))]  # fmt: skip
    out = fast.process(feed)
    assert lines(out) == lines(general.process(feed))
    # six IBs above c-deep, five shares: the sixth earns nothing and has no entry
    assert sorted(e.ib_id for e in out if e.ticket == 1) == ["ib1", "ib2", "ib3", "ib4", "ib5"]
    assert [e.amount.amount for e in out if e.ticket == 3] == [Decimal("4.50")]  # 50% of 9.00


def merged_by_the_rule(pending: tuple[Sum, ...], sums: tuple[Sum, ...]) -> tuple[Sum, ...]:
    out = {(day, code): amount for day, code, amount in pending}
    for day, code, amount in sums:
        out[(day, code)] = out.get((day, code), Decimal(0)) + amount
    return tuple(sorted((d, c, a) for (d, c), a in out.items() if a))


amounts = st.sampled_from(["0", "0.00", "-1.25", "1.25", "5E+1", "0.0001", "-0.0001", "3.10"])
one_sum = st.tuples(
    st.sampled_from([date(2026, 3, 9), date(2026, 3, 10)]),
    st.sampled_from(["USD", "EUR"]),
    amounts.map(Decimal),
)


@given(st.lists(one_sum, max_size=1).map(tuple), one_sum)
@example((), (date(2026, 3, 10), "USD", Decimal("5E+1")))  # (kept as 50, as the rule adds it)
def test_one_days_accrual_onto_one_day_owed_merges_by_the_rule(
    pending: tuple[Sum, ...], accrued: Sum
) -> None:
    # (the same digits, not only the same value: the sums are stored when paid)
    got = _merged(pending, (accrued,))
    want = merged_by_the_rule(pending, (accrued,))
    assert [tuple(map(str, s)) for s in got] == [tuple(map(str, s)) for s in want]
