"""The rebate engine: explained entries, exactly once per (server, deal, IB, component),
adjustments and reversals, the tree as it stood, and stable totals however the feed arrives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.commissions import (
    EntryKind,
    FixedShares,
    IbTree,
    PlanKind,
    RebateEngine,
    Rule,
    Schedule,
    ScheduleBook,
)
from fxcrm_core.kernel import Currency, FixedClock, Money, TradingCalendar
from fxcrm_core.trading import (
    BalanceOperation,
    Deal,
    DealChange,
    FeedItem,
    NewTradingAccount,
    SimulatedTradingServer,
)

T0 = datetime(2026, 3, 9, 8, tzinfo=UTC)
CAL = TradingCalendar()


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def make(
    rule: Rule | None = None, logins: dict[int, str] | None = None
) -> tuple[RebateEngine, IbTree]:
    tree = IbTree()
    tree.add_ib("master", None, T0 - timedelta(days=30))
    tree.add_ib("sub", "master", T0 - timedelta(days=30))
    tree.add_ib("other", None, T0 - timedelta(days=30))
    clients = logins or {7: "c-1"}
    for client in set(clients.values()):
        tree.attribute(client, "sub", T0 - timedelta(days=30))
    book = ScheduleBook()
    default = rule or Rule(PlanKind.PER_LOT, usd(10))
    start = T0 - timedelta(days=30)
    book.add(
        Schedule("std", 1, start, Currency.of("USD"), default=default, allow_above_revenue=True)
    )
    engine = RebateEngine(
        tree,
        book,
        FixedShares((Decimal("0.6"), Decimal("0.4"))),
        client_of=lambda server, login: clients.get(login),
        account_group_of=lambda server, login: "std",
        trading_day_of=lambda deal: CAL.trading_day(deal.time),
    )
    return engine, tree


def deal(**fields: Any) -> Deal:
    record: dict[str, Any] = {
        "Deal": 1, "Login": 7, "Action": 0, "Entry": 1, "Symbol": "XAUUSD.m", "Volume": 20_000,
        "VolumeClosed": 20_000, "Commission": "-7.00", "Time": 1_773_050_400,
    }  # fmt: skip
    record.update(fields)
    return Deal.from_mt5(record, server="mt5", currency="USD", utc_offset=timedelta(hours=2))


def test_a_closing_deal_pays_up_the_chain_with_an_explanation() -> None:
    # 2 lots x $10 = $20 pool; the direct IB (sub) gets 60% = 12, its parent (master) 40% = 8.
    engine, _ = make()
    entries = engine.process([FeedItem(1, DealChange.ADDED, deal())])
    assert [(e.ib_id, e.kind, e.amount.amount) for e in entries] == [
        ("master", EntryKind.ACCRUAL, Decimal("8.0000")),
        ("sub", EntryKind.ACCRUAL, Decimal("12.0000")),
    ]
    sub = next(e for e in entries if e.ib_id == "sub")
    assert "schedule std v1" in sub.explanation
    assert "2 lots" in sub.explanation
    assert "level 1: 60" in sub.explanation
    assert (sub.client_id, sub.symbol, sub.lots) == ("c-1", "XAUUSD.m", Decimal(2))


def test_reprocessing_pays_nothing_twice() -> None:
    engine, _ = make()
    item = FeedItem(1, DealChange.ADDED, deal())
    engine.process([item])
    assert engine.process([item, item]) == []
    assert {k: v.amount for k, v in engine.totals().items()} == {
        "sub": Decimal("12.0000"),
        "master": Decimal("8.0000"),
    }


def test_updates_adjust_and_deletes_reverse() -> None:
    engine, _ = make(Rule(PlanKind.COMMISSION_SHARE, share=Decimal("0.5")))
    engine.process([FeedItem(1, DealChange.ADDED, deal(Commission="-7.00"))])  # pool 3.50
    adjusted = engine.process([FeedItem(2, DealChange.UPDATED, deal(Commission="-9.00"))])  # 4.50
    assert [(e.ib_id, e.kind, e.amount.amount) for e in adjusted] == [
        ("master", EntryKind.ADJUSTMENT, Decimal("0.4000")),
        ("sub", EntryKind.ADJUSTMENT, Decimal("0.6000")),
    ]
    reversed_ = engine.process([FeedItem(3, DealChange.DELETED, deal(Commission="-9.00"))])
    assert {e.kind for e in reversed_} == {EntryKind.REVERSAL}
    assert sum(e.amount.amount for e in reversed_) == Decimal("-4.50")
    assert engine.totals() == {}
    # A stale copy of the update arriving after the delete changes nothing.
    assert engine.process([FeedItem(2, DealChange.UPDATED, deal(Commission="-9.00"))]) == []


def test_nothing_due_is_nothing_paid_and_what_comes_due_later_accrues() -> None:
    # A key's state is the sum of its entries, so an engine restored from them holds the same:
    # no entry of zero, and a key brought back to zero pays as a new one when it earns again.
    engine, _ = make(Rule(PlanKind.COMMISSION_SHARE, share=Decimal("0.5")))
    assert engine.process([FeedItem(1, DealChange.ADDED, deal(Commission="0"))]) == []
    paid = engine.process([FeedItem(2, DealChange.UPDATED, deal(Commission="-7.00"))])
    assert [(e.ib_id, e.kind, e.amount.amount) for e in paid] == [
        ("master", EntryKind.ACCRUAL, Decimal("1.4000")),
        ("sub", EntryKind.ACCRUAL, Decimal("2.1000")),
    ]
    cut = engine.process([FeedItem(3, DealChange.UPDATED, deal(Commission="0"))])
    assert [(e.kind, e.amount.amount) for e in cut] == [
        (EntryKind.REVERSAL, Decimal("-1.4000")),
        (EntryKind.REVERSAL, Decimal("-2.1000")),
    ]
    assert cut[0].explanation.endswith("level 2: 40% of 0.000")  # why: the line due now
    assert engine.totals() == {}
    again = engine.process([FeedItem(4, DealChange.UPDATED, deal(Commission="-9.00"))])
    assert {e.kind for e in again} == {EntryKind.ACCRUAL}


def test_past_deals_keep_the_tree_they_were_made_under() -> None:
    engine, tree = make()
    tree.reparent("sub", "other", T0 + timedelta(days=1))
    before = engine.process([FeedItem(1, DealChange.ADDED, deal())])  # made at T0
    assert {e.ib_id for e in before} == {"sub", "master"}
    after = engine.process(
        [FeedItem(2, DealChange.ADDED, deal(Deal=2, Time=1_773_050_400 + 2 * 86_400))]
    )
    assert {e.ib_id for e in after} == {"sub", "other"}


def test_clients_without_an_ib_and_non_trades_earn_nothing() -> None:
    engine, _ = make()
    assert engine.process([FeedItem(1, DealChange.ADDED, deal(Login=99))]) == []
    assert engine.process([FeedItem(2, DealChange.ADDED, deal(Action=2))]) == []


def _session(seed: int) -> list[FeedItem]:
    server = SimulatedTradingServer(seed=seed, clock=FixedClock(T0))
    for n in range(3):
        login = server.create_account(NewTradingAccount("std", 100, "USD", f"c-{n}"))
        server.balance_operation(login, BalanceOperation.DEPOSIT, usd(50_000), comment="d",
                                 idempotency_key=f"d{n}")  # fmt: skip
    server.simulate_trading(300)
    return server.deal_feed(limit=100_000)


SESSION = _session(5)
LOGINS = {500_000: "c-0", 500_001: "c-1", 500_002: "c-2"}


def _totals(items: list[FeedItem]) -> dict[str, Decimal]:
    engine, _ = make(logins=LOGINS)
    engine.process(items)
    return {ib: total.amount for ib, total in engine.totals().items()}


EXPECTED = _totals(SESSION)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_any_order_of_duplicates_pays_exactly_the_same(data: st.DataObject) -> None:
    # Re-deliver random earlier items at random later points (duplicates and stale replays).
    items = list(SESSION)
    for _ in range(data.draw(st.integers(0, 40))):
        src = data.draw(st.integers(0, len(SESSION) - 1))
        at = data.draw(st.integers(src, len(items)))
        items.insert(at, SESSION[src])
    assert _totals(items) == EXPECTED
    assert _totals(SESSION + SESSION) == EXPECTED


def test_the_total_paid_on_a_deal_never_exceeds_its_pool() -> None:
    engine, _ = make(logins=LOGINS)
    entries = engine.process(SESSION)
    per_deal: dict[int, Decimal] = {}
    for e in entries:
        per_deal[e.ticket] = per_deal.get(e.ticket, Decimal(0)) + e.amount.amount
    assert EXPECTED
    for item in SESSION:
        if item.change is not DealChange.DELETED and item.deal.ticket in per_deal:
            pool = Decimal(10) * item.deal.volume_closed
            assert per_deal[item.deal.ticket] <= pool
