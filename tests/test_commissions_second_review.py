"""Second review of IB commissions (issue 13): money within the ceiling and the cap per deal
whatever the strategy, a restart that pays as the live book did, a changed configuration never
silently ignored, no payout stuck. Each test failed on the code as first mended."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.trading import DealChange, FeedItem
from tests.test_rebate_engine import deal

# -- (c) the revenue ceiling -----------------------------------------------------------------------


def test_a_differential_of_shares_and_rates_a_lot_stays_within_the_commission_ceiling() -> None:
    """The docs: 'a strategy that pays its own rates stays within the schedule's revenue
    ceiling'. A Differential with DifferentialRate (item 7 of the issue) has uses_pool=True, so
    the engine never scales it, and its per-lot parts are paid on top of the pool."""
    from fxcrm_core.commissions import Differential, DifferentialRate
    from tests.test_rebate_strategies_in_engine import engine, usd

    strategy = Differential(
        {
            "sub": DifferentialRate(Decimal("0.5"), usd(3)),
            "master": DifferentialRate(Decimal(1), usd(10)),
        }
    )
    made, _ = engine(strategy)  # Revenue.commission(): the broker earned 7.00 on the deal
    paid = made.process([FeedItem(1, DealChange.ADDED, deal(Commission="-7.00"))])
    total = sum((e.amount.amount for e in paid), Decimal(0))
    assert total <= Decimal("7.00")  # today: 26.00 (sub 9.00, master 17.00)


def test_a_commission_credited_to_the_client_is_not_revenue_to_share() -> None:
    """A deal whose commission is positive (the broker credits the client: a commission refund)
    earned the broker nothing; the ceiling takes its absolute value and pays the IBs 4.50."""
    from fxcrm_core.commissions import PassThrough
    from tests.test_rebate_strategies_in_engine import engine, usd

    made, _ = engine(PassThrough(usd(3), {"sub": usd(1)}))
    paid = made.process([FeedItem(1, DealChange.ADDED, deal(Commission="4.50"))])
    assert sum((e.amount.amount for e in paid), Decimal(0)) == 0


# -- (a) the settlement horizon ------------------------------------------------------------------


def test_a_restarted_book_with_two_servers_refuses_the_correction_the_live_one_refused() -> None:
    """The book restores server by server (sorted names), not in the log's order, so the deals
    of a later-named server are tagged with a newer day than the live engine gave them and are
    forgotten later. A far-future deal (the dealer's typo the clock limit is for) on server
    'mt5b' is forgotten by the live engine, whose correction it then refuses as late; the
    restarted engine still holds it and pays the correction."""
    from fxcrm_core.commissions import REBATE_EVENTS, RebateBook
    from fxcrm_core.events import EventCodec, EventRegistry, Repository
    from fxcrm_core.stores import MemoryEventStore
    from tests.test_rebate_horizon import DAY, engine

    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    repository = Repository(MemoryEventStore(), EventCodec(registry))
    start = 1_772_445_600  # Monday 2026-03-02 10:00 UTC
    clock = FixedClock(datetime(2026, 3, 16, 12, tzinfo=UTC))
    live = RebateBook(repository, engine(2, clock=clock))
    a0 = attrs.evolve(deal(Deal=1, Login=1, Time=start, PositionID=1), server="mt5a")
    typo = attrs.evolve(deal(Deal=2, Login=2, Time=start + 100 * DAY, PositionID=2), server="mt5b")
    a1 = attrs.evolve(deal(Deal=3, Login=1, Time=start + 14 * DAY, PositionID=3), server="mt5a")
    live.process("mt5a", [FeedItem(1, DealChange.ADDED, a0)])
    live.process("mt5b", [FeedItem(1, DealChange.ADDED, typo)])
    live.process("mt5a", [FeedItem(2, DealChange.ADDED, a1)])
    restarted = RebateBook(repository, engine(2, clock=clock))
    restarted.catch_up()
    doubled = attrs.evolve(typo, volume=typo.volume * 2, volume_closed=typo.volume_closed * 2)
    fix = FeedItem(2, DealChange.UPDATED, doubled)
    by_live = live.engine.process([fix])
    by_restarted = restarted.engine.process([fix])
    assert by_live == []  # refused as late: the live engine forgot the deal
    assert by_restarted == by_live  # today: the restarted engine pays 20.00 more


def test_a_restored_engine_keeps_waiting_for_the_same_closes_after_a_refused_correction() -> None:
    """A closing deal waiting for its opening deal, then a correction of it refused as late:
    the live engine keeps it waiting; restore() takes it off the waiting list (_unpark_handled
    looks at every cursor of the batch, the refused ones too)."""
    from fxcrm_core.commissions import (
        FixedShares,
        IbTree,
        PlanKind,
        RebateEngine,
        Rule,
        Schedule,
        ScheduleBook,
    )
    from fxcrm_core.kernel import Currency
    from tests.test_rebate_engine import CAL, usd
    from tests.test_rebate_horizon import DAY, START

    def make() -> RebateEngine:
        tree = IbTree()
        tree.add_ib("sub", None, START)
        tree.attribute("c-1", "sub", START)
        book = ScheduleBook()
        rule = Rule(PlanKind.PER_LOT, usd(10), min_hold=timedelta(minutes=1))
        book.add(Schedule("std", 1, START, Currency.of("USD"), default=rule,
                          allow_above_revenue=True))  # fmt: skip
        return RebateEngine(
            tree, book, FixedShares((Decimal(1),)),
            client_of=lambda s, login: "c-1", account_group_of=lambda s, login: "std",
            trading_day_of=lambda d: CAL.trading_day(d.time), horizon=timedelta(days=2),
        )  # fmt: skip

    start = 1_772_445_600
    close = deal(Deal=1, Login=1, Entry=1, Time=start, PositionID=500)  # its opening unknown
    batches = [[FeedItem(1, DealChange.ADDED, close)]]
    cursor, ticket = 2, 10
    for day in (1, 2, 3, 4, 7, 8):
        o = deal(Deal=ticket, Login=1, Entry=0, Time=start + day * DAY, PositionID=ticket)
        c = deal(Deal=ticket + 1, Login=1, Entry=1, Time=start + day * DAY + 600,
                 PositionID=ticket)  # fmt: skip
        batches.append(
            [FeedItem(cursor, DealChange.ADDED, o), FeedItem(cursor + 1, DealChange.ADDED, c)]
        )
        cursor, ticket = cursor + 2, ticket + 2
    batches.append([FeedItem(cursor, DealChange.UPDATED, close)])  # refused as late
    live = make()
    restored = make()
    for batch in batches:
        entries = live.process(batch)
        changes = live.take_changes()
        restored.restore(entries, "mt5", [(i.deal.ticket, i.cursor) for i in batch], changes)
    assert [d.ticket for d in live.waiting()] == [1]
    assert [d.ticket for d in restored.waiting()] == [d.ticket for d in live.waiting()]


# -- (b) payouts -----------------------------------------------------------------------------------


def test_a_rejected_payout_is_owed_again_even_when_the_configured_currency_changed() -> None:
    """An approval rejected, then the host moves the IB to EUR wallets in its configuration:
    every run seeds the configured policy first (refused: a payout is held in USD) and never
    reaches the step that puts the rejected amount back, so the 1,500 USD stays held for ever
    and every run fails with 'settle it first', which nothing can do."""
    from fxcrm_core.commissions import PayoutPolicy
    from fxcrm_core.kernel import Money
    from tests.test_payouts import CHECKER, EUR, MON, RUNNER, USD, Env, entry, memory

    policy = PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(1000, "USD"))
    env = Env(memory(), {"ib-1": policy})
    env.accrue(entry("1500"))
    held = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert held.approval_id is not None
    env.approvals.reject(CHECKER, held.approval_id, reason="wrong bank details")
    env.payouts.policies["ib-1"] = PayoutPolicy(EUR, Money.of(1, "EUR"))
    for day in (2, 3):
        with contextlib.suppress(FxCrmError):
            env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=day))
    assert env.payouts.account("ib-1").held == ()  # the rejected 1,500 USD is owed again


# -- (d) the broker's configuration --------------------------------------------------------------


def test_a_changed_configured_schedule_is_not_silently_paid_at_the_recorded_rates(
    tmp_path: Path,
) -> None:
    """Process A records the configured schedule (v1: 2.00 a lot). A redeploy edits v1 to
    5.00 a lot instead of adding v2: record_configuration() raises ScheduleConflictError, but
    pull_deals() (which calls it only when fewer versions are recorded than configured) and the
    rebates policy (which compares counts only) run on, paying 2.00 while the deployed
    configuration says 5.00, with no error anywhere."""
    from fxcrm_core.broker import Broker
    from fxcrm_core.commissions import PlanKind, Rule, Schedule, ScheduleBook
    from fxcrm_core.kernel import Currency, Money
    from fxcrm_core.trading import SimulatedTradingServer

    t0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
    clock = FixedClock(t0)
    path = tmp_path / "broker.db"

    def open_broker(rate: str) -> Broker:
        book = ScheduleBook()
        book.add(
            Schedule("std", 1, t0 - timedelta(days=30), Currency.of("USD"),
                     default=Rule(PlanKind.PER_LOT, Money.of(rate, "USD")),
                     allow_above_revenue=True)
        )  # fmt: skip
        server = SimulatedTradingServer(
            "sim", seed=1, clock=clock, state_path=f"{path}.server.json"
        )
        return Broker.sqlite(
            path, clock=clock, allow_clear_pii=True, identity_key=b"k" * 32, schedules=book,
            trading_server=server,
        )  # fmt: skip

    first = open_broker("2.00")
    first.record_configuration()
    first.close()
    redeployed = open_broker("5.00")
    with pytest.raises(FxCrmError):
        redeployed.pull_deals()


def test_a_payout_run_on_the_first_day_of_the_calendar_is_a_typed_error() -> None:
    """date(1, 1, 1) is a date, so _check_run lets it through; the cadence's cut-off then
    subtracts a day and an OverflowError (a builtin) reaches the host, from run and run_all."""
    from datetime import date

    from fxcrm_core.commissions import PayoutPolicy
    from fxcrm_core.kernel import Money
    from tests.test_payouts import RUNNER, USD, entry, make

    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    env.accrue(entry("10"))
    with pytest.raises(FxCrmError):
        env.payouts.run(RUNNER, "ib-1", date(1, 1, 1))
    with pytest.raises(FxCrmError):
        env.payouts.run_all(RUNNER, date(1, 1, 1))


def test_a_book_refuses_items_whose_deals_are_of_another_server() -> None:
    """RebateBook.process checks the server name and that the items are FeedItems, not that
    their deals are of that server: the engine keys the deal on deal.server, the recorded batch
    (and so a restore: cursors, forgetting, the highest ticket forgotten) on the book's server,
    so a restarted engine holds other state than the live one."""
    from fxcrm_core.commissions import REBATE_EVENTS, RebateBook
    from fxcrm_core.events import EventCodec, EventRegistry, Repository
    from fxcrm_core.stores import MemoryEventStore
    from tests.test_rebate_horizon import engine

    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    book = RebateBook(Repository(MemoryEventStore(), EventCodec(registry)), engine(3))
    item = FeedItem(1, DealChange.ADDED, deal())  # a deal of server "mt5"
    with pytest.raises(FxCrmError):
        book.process("mt5-live-2", [item])


def test_a_strategy_paying_rates_in_another_currency_is_not_compared_with_the_revenue() -> None:
    """_within compares the strategy's amounts with the revenue as bare decimals: a pass-through
    in JPY on a USD schedule is 'scaled to stay within the broker's revenue 7.00' (7 JPY
    against 7 USD), and entries in JPY come out of a USD schedule. Refused (typed) when the
    deal is priced, or paid in the schedule's currency within its revenue."""
    from fxcrm_core.commissions import PassThrough
    from fxcrm_core.kernel import Currency, Money
    from tests.test_rebate_strategies_in_engine import engine

    made, _ = engine(PassThrough(Money.of(300, "JPY"), {"sub": Money.of(100, "JPY")}))
    try:
        paid = made.process([FeedItem(1, DealChange.ADDED, deal(Commission="-7.00"))])
    except FxCrmError:
        return
    assert all(e.amount.currency == Currency.of("USD") for e in paid)


def test_a_cap_per_deal_bounds_a_strategy_paying_its_own_rates() -> None:
    """A rule's cap_per_deal caps the pool; a pass-through ignores the pool, so a 5.00 cap pays
    30.00 on a 10-lot deal while every explanation says 'capped at 5.00 USD' (with or without a
    revenue ceiling: the commission, 70.00, is above what the strategy pays)."""
    from fxcrm_core.commissions import (
        IbTree,
        PassThrough,
        PlanKind,
        RebateEngine,
        Revenue,
        Rule,
        Schedule,
        ScheduleBook,
    )
    from fxcrm_core.kernel import Currency, Money
    from tests.test_rebate_engine import CAL, T0

    usd = Currency.of("USD")
    start = T0 - timedelta(days=30)
    tree = IbTree()
    tree.add_ib("master", None, start)
    tree.add_ib("sub", "master", start)
    tree.attribute("c-1", "sub", start)
    book = ScheduleBook()
    rule = Rule(PlanKind.PER_LOT, Money.of(3, usd), cap_per_deal=Money.of(5, usd))
    book.add(Schedule("std", 1, start, usd, default=rule, revenue=Revenue.uncapped()))
    made = RebateEngine(
        tree, book, PassThrough(Money.of(3, usd), {"sub": Money.of(1, usd)}),
        client_of=lambda server, login: "c-1", account_group_of=lambda server, login: "std",
        trading_day_of=lambda d: CAL.trading_day(d.time),
    )  # fmt: skip
    ten_lots = deal(Commission="-70.00", Volume=100_000, VolumeClosed=100_000)
    paid = made.process([FeedItem(1, DealChange.ADDED, ten_lots)])
    assert sum((e.amount.amount for e in paid), Decimal(0)) <= 5


def test_a_deal_dated_within_the_clock_slack_does_not_refuse_todays_deals() -> None:
    """The clock limit lets a deal dated up to two days past the broker's clock move the newest
    trading day; a horizon may be one day. With horizon=1, one deal dated the day after
    tomorrow (a typo) makes every new deal of today 'beyond the settlement horizon'."""
    from tests.test_rebate_horizon import DAY, engine

    monday = 1_772_445_600  # Monday 2026-03-02 10:00 UTC
    clock = FixedClock(datetime(2026, 3, 2, 12, tzinfo=UTC))
    live = engine(1, clock=clock)
    assert live.process([FeedItem(1, DealChange.ADDED, deal(Deal=1, Login=1, Time=monday))])
    typo = deal(Deal=2, Login=2, Time=monday + 2 * DAY, PositionID=2)  # Wednesday
    live.process([FeedItem(2, DealChange.ADDED, typo)])
    live.take_changes()
    today = deal(Deal=3, Login=1, Time=monday + 3600, PositionID=3)  # Monday 11:00
    paid = live.process([FeedItem(3, DealChange.ADDED, today)])
    assert live.take_changes().late == ()
    assert paid != []
