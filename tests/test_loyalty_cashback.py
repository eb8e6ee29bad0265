"""Cashback per lot (issue 15, item 4): closing deals counted per client and trading day, the day
fixed at its close (lots, rates, deals), paid the next trading day through the ledger once per
client and day; excluded groups and symbols earn nothing; a deal deleted or changed after its
day was fixed adjusts the next fixed day (a negative is carried, never clawed back); a second
process on one SQLite file answers the same."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast

import attrs
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from fxcrm_core.events import (
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    Policy,
    PolicyError,
    PolicyRunner,
    Repository,
    UnitOfWork,
)
from fxcrm_core.events import register_events as register_core_events
from fxcrm_core.kernel import Currency, FixedClock, Money
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.ledger import Ledger
from fxcrm_core.ledger import register_events as register_ledger_events
from fxcrm_core.loyalty.cashback import (
    CASHBACK_EVENTS,
    CASHBACK_POLICY,
    Cashback,
    CashbackDayFixed,
    CashbackPaid,
    CashbackPlan,
)
from fxcrm_core.reactions import TradingDayClosed, TradingDays
from fxcrm_core.reactions import register_events as register_reaction_events
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore
from fxcrm_core.trading import (
    Deal,
    DealAction,
    DealChange,
    DealEntry,
    DealFeeds,
    DealsReceived,
    FeedItem,
    TradingServer,
)
from fxcrm_core.trading import register_events as register_trading_events

DAY1 = date(2026, 3, 2)  # a Monday
T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)  # in DAY1's session (it ends 22:00 UTC)
SERVER = "mt5"
USD = Currency.of("USD")
LOGINS = {1001: "c1", 1002: "c2", 1003: "c3"}
GROUPS = {1001: "real\\std", 1002: "real\\std", 1003: "real\\ecn"}


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


PLAN = CashbackPlan(
    "USD",
    per_symbol={"XAUUSD": usd(10)},
    default_rate=usd(5),
    excluded_symbols={"BTCUSD"},
    excluded_groups={"real\\ecn"},
)


def session(day: date) -> datetime:
    """Noon UTC of a weekday: inside that day's session."""
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def next_weekday(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


class Feed:
    name = SERVER

    def __init__(self) -> None:
        self.items: list[FeedItem] = []

    def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
        return [i for i in self.items if i.cursor > after_cursor][:limit]


class World:
    """A cashback service on a log, as one process builds it, with its policy run by a
    PolicyRunner on deal batches and closed trading days."""

    def __init__(
        self,
        store: EventStore | None = None,
        *,
        feed: Feed | None = None,
        plan: CashbackPlan = PLAN,
        rate_of: Callable[[str, datetime], Money | None] | None = None,
    ) -> None:
        self.clock = FixedClock(T0)
        registry = EventRegistry()
        for register in (register_core_events, register_ledger_events, register_trading_events,
                         register_reaction_events):  # fmt: skip
            register(registry)
        registry.register_all(CASHBACK_EVENTS)
        self.repository = Repository(store or MemoryEventStore(self.clock), EventCodec(registry))
        self.ledger = Ledger(self.repository, clock=self.clock)
        self.cashback = Cashback(
            self.repository, self.ledger, plan,
            client_of=lambda server, login: LOGINS.get(login) if server == SERVER else None,
            group_of=lambda server, login: GROUPS.get(login),
            rate_of=rate_of, clock=self.clock,
        )  # fmt: skip
        self.runner = PolicyRunner(
            self.repository,
            [Policy(CASHBACK_POLICY, (DealsReceived, TradingDayClosed), self.cashback.handle)],
        )
        self.feed = feed or Feed()

    def deal(
        self, lots: str, *, login: int = 1001, symbol: str = "EURUSD", day: date = DAY1,
        entry: DealEntry = DealEntry.OUT, ticket: int | None = None,
    ) -> Deal:  # fmt: skip
        ticket = ticket or len(self.feed.items) + 1
        closed = Decimal(lots) if entry.closes else Decimal(0)
        deal = Deal(
            SERVER, ticket, login, DealAction.SELL, entry, symbol, Decimal(lots), closed,
            Decimal("1.1"), ticket, ticket, usd(0), usd(0), usd(0), usd(0), session(day),
            timedelta(hours=2),
        )  # fmt: skip
        self.feed.items.append(FeedItem(len(self.feed.items) + 1, DealChange.ADDED, deal))
        return deal

    def change(self, deal: Deal, change: DealChange, lots: str | None = None) -> None:
        if lots is not None:
            deal = attrs.evolve(deal, volume=Decimal(lots), volume_closed=Decimal(lots))
        self.feed.items.append(FeedItem(len(self.feed.items) + 1, change, deal))

    def pull(self) -> None:
        DealFeeds(self.repository).pull(cast(TradingServer, self.feed))
        self.runner.run()

    def close(self, day: date) -> None:
        """Record the day's close as the broker's clock does, and run the policy."""
        days = self.repository.load(TradingDays, "main") or TradingDays.blank("main")
        if days.last_closed is None or days.last_closed < day:
            with UnitOfWork(self.repository, EventMetadata("system:calendar")) as uow:
                uow.record(days, TradingDayClosed(day, days.last_closed))
                uow.commit()
        self.runner.run()

    def wallet(self, client_id: str) -> Money:
        b = self.ledger.balance(self.cashback.money.wallet(client_id, USD))
        return b.credits_posted - b.debits_posted


# -- the plan -----------------------------------------------------------------------------------


def test_a_plan_refuses_bad_rates_and_exclusions() -> None:
    with pytest.raises(ValidationError):
        CashbackPlan("USD", per_symbol={"EURUSD": usd(-1)})
    with pytest.raises(ValidationError):
        CashbackPlan("USD", default_rate=Money.of(1, "EUR"))
    with pytest.raises(ValidationError):
        CashbackPlan("USD", per_symbol={"EURUSD": Decimal(1)})  # type: ignore[dict-item]
    with pytest.raises(ValidationError):
        CashbackPlan("USD", excluded_symbols="BTCUSD")
    with pytest.raises(ValidationError):
        CashbackPlan("USD", excluded_groups={""})
    world = World()
    with pytest.raises(ValidationError):
        world.cashback.day("c1", T0)
    with pytest.raises(ValidationError):
        Cashback(world.repository, world.ledger, "5 USD", client_of=LOGINS.get)  # type: ignore[arg-type]


def test_a_rate_from_the_tier_in_another_currency_stops_the_policy_with_a_typed_error() -> None:
    world = World(plan=CashbackPlan("USD"), rate_of=lambda c, at: Money.of(1, "EUR"))
    world.deal("1")
    with pytest.raises(PolicyError) as caught:
        world.pull()
    assert isinstance(caught.value.__cause__, ValidationError)


# -- counting, fixing, paying -------------------------------------------------------------------


def test_a_day_is_fixed_at_its_close_with_its_figures_and_paid_the_next_trading_day() -> None:
    world = World()
    world.deal("2")  # 2 lots EURUSD at the default 5 USD
    world.deal("0.5", symbol="XAUUSD")  # 0.5 lot at 10 USD
    world.deal("3", entry=DealEntry.IN)  # opens: nothing
    world.deal("1", entry=DealEntry.INOUT)  # a reversal closes: counts
    world.deal("4", symbol="BTCUSD")  # an excluded symbol
    world.deal("4", login=1003)  # an excluded group
    world.deal("1", login=1002, day=next_weekday(DAY1))  # tomorrow's
    world.pull()
    assert world.cashback.day("c1", DAY1) is None  # not fixed before the close
    world.close(DAY1)
    fixed = world.cashback.day("c1", DAY1)
    assert fixed is not None
    assert (fixed.deals, fixed.lots, fixed.amount) == (3, Decimal("3.5"), Decimal("20.0"))
    assert fixed.rates == (("5.00 USD", "3"), ("10.00 USD", "0.5"))
    assert fixed.payable == usd("20.00")
    assert fixed.pay_on == next_weekday(DAY1)
    assert world.cashback.day("c3", DAY1) is None
    assert world.cashback.day("c2", DAY1) is None  # its deal is for the next day

    assert world.cashback.pay_due(datetime(2026, 3, 2, 21, 59, tzinfo=UTC)) == []  # still DAY1
    paid = world.cashback.pay_due(datetime(2026, 3, 2, 22, 30, tzinfo=UTC))
    assert [(p.client_id, p.amount) for p in paid] == [("c1", usd(20))]
    assert world.cashback.pay_due(datetime(2026, 3, 3, 12, tzinfo=UTC)) == []
    assert world.wallet("c1") == usd(20)
    world.close(next_weekday(DAY1))
    second = world.cashback.day("c2", next_weekday(DAY1))
    assert second is not None
    assert second.payable == usd(5)


def test_friday_is_paid_on_monday_and_a_tier_rate_counts_where_the_plan_names_none() -> None:
    friday = date(2026, 3, 6)
    rates = {"c1": usd(7)}
    world = World(plan=CashbackPlan("USD", per_symbol={"XAUUSD": usd(10)}),
                  rate_of=lambda client, at: rates.get(client))  # fmt: skip
    world.deal("1", day=friday)
    world.deal("1", day=friday, symbol="XAUUSD")  # the plan's symbol rate wins
    world.deal("1", day=friday, login=1002)  # no tier rate, no default: nothing
    world.pull()
    world.close(friday)
    fixed = world.cashback.day("c1", friday)
    assert fixed is not None
    assert fixed.payable == usd(17)
    assert fixed.pay_on == date(2026, 3, 9)
    assert world.cashback.day("c2", friday) is None
    assert world.cashback.pay_due(datetime(2026, 3, 6, 21, 59, tzinfo=UTC)) == []  # Friday
    # The weekend counts for Monday's trading day (the calendar's rule): due from then.
    assert len(world.cashback.pay_due(datetime(2026, 3, 7, 12, tzinfo=UTC))) == 1


def test_a_deal_deleted_after_its_day_was_paid_lowers_the_next_payment_and_carries_the_rest() -> (
    None
):
    world = World()
    day2, day3 = next_weekday(DAY1), next_weekday(next_weekday(DAY1))
    first = world.deal("2")
    world.pull()
    world.close(DAY1)
    world.cashback.pay_due(session(day2))
    assert world.wallet("c1") == usd(10)
    world.change(first, DealChange.DELETED)
    world.deal("1", day=day2)
    world.pull()
    world.close(day2)
    fixed = world.cashback.day("c1", day2)
    assert fixed is not None
    assert (fixed.amount, fixed.adjustment, fixed.payable) == (Decimal(5), Decimal(-10), usd(0))
    assert fixed.carried_out == Decimal(-5)
    world.cashback.pay_due(session(day3))
    assert world.wallet("c1") == usd(10)  # nothing clawed back
    world.deal("2", day=day3)
    world.pull()
    world.close(day3)
    world.cashback.pay_due(session(next_weekday(day3)))
    assert world.wallet("c1") == usd(15)  # 5 lots live at 5 USD, paid once


def test_an_update_after_the_fix_pays_the_difference_once_and_fractions_carry() -> None:
    world = World(plan=CashbackPlan("USD", default_rate=usd("0.03")))
    day2 = next_weekday(DAY1)
    deal = world.deal("0.5")  # 0.015 USD: 0.01 paid, 0.005 carried
    world.pull()
    world.close(DAY1)
    fixed = world.cashback.day("c1", DAY1)
    assert fixed is not None
    assert fixed.payable == usd("0.01")
    assert fixed.carried_out == Decimal("0.005")
    world.change(deal, DealChange.UPDATED, lots="1.5")  # +1 lot: +0.03
    world.change(deal, DealChange.UPDATED, lots="1.5")  # the same update again: nothing
    world.pull()
    world.close(day2)
    again = world.cashback.day("c1", day2)
    assert again is not None
    assert (again.deals, again.adjustment, again.payable) == (0, Decimal("0.03"), usd("0.03"))
    world.cashback.pay_due(session(next_weekday(day2)))
    assert world.wallet("c1") == usd("0.04")  # 1.5 lots x 0.03 = 0.045, 0.005 carried


def test_a_second_process_on_one_sqlite_file_answers_the_same(tmp_path: Path) -> None:
    feed = Feed()
    first = World(SqliteEventStore(tmp_path / "events.db"), feed=feed)
    first.deal("2")
    first.deal("1", login=1002)
    first.pull()
    first.close(DAY1)
    second = World(SqliteEventStore(tmp_path / "events.db"), feed=feed)
    assert second.cashback.account("c1") == first.cashback.account("c1")
    paid = second.cashback.pay_due(session(next_weekday(DAY1)))
    assert sorted(p.client_id for p in paid) == ["c1", "c2"]
    assert first.cashback.pay_due(session(next_weekday(DAY1))) == []  # the first sees them paid
    third = World(SqliteEventStore(tmp_path / "events.db"), feed=feed)
    third.runner.run()
    assert third.cashback.paid_total("c1") == usd(10) == first.wallet("c1")
    assert third.cashback.account("c2") == second.cashback.account("c2")


# -- the law: paid once per client and day, and nothing lost or made up -------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("deal"),
            st.sampled_from(sorted(LOGINS)),
            st.sampled_from(["EURUSD", "EURUSD", "XAUUSD", "BTCUSD"]),
            st.decimals("0.01", "5", places=2),
            st.sampled_from([0, 0, 0, 1, 2]),
        ),
        st.tuples(st.just("update"), st.integers(0, 30), st.decimals("0.01", "5", places=2)),
        st.tuples(st.just("delete"), st.integers(0, 30)),
        st.tuples(st.just("close")),
        st.tuples(st.just("close")),
        st.tuples(st.just("pay"), st.booleans()),
        st.tuples(st.just("pay"), st.booleans()),
        st.tuples(st.just("replay")),
    ),
    min_size=6,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ops)
@example(  # two updates of a fixed day's deal in one feed batch: both changes count
    [("deal", 1001, "EURUSD", Decimal("0.01"), 0), ("deal", 1001, "EURUSD", Decimal("0.01"), 0),
     ("close",), ("update", 0, Decimal("0.02")), ("update", 0, Decimal("0.01"))]
)  # fmt: skip
def test_cashback_is_paid_once_per_client_and_day_and_sums_to_the_live_deals(
    ops: list[tuple[object, ...]],
) -> None:
    store = MemoryEventStore(FixedClock(T0))
    feed = Feed()
    world = World(store, feed=feed)
    other = World(store, feed=feed)  # a second process on the same log
    deals: list[Deal] = []
    today = DAY1
    for op in ops:
        match op:
            case ("deal", login, symbol, lots, ahead):
                day = today
                for _ in range(cast(int, ahead)):  # a deal of a later day, early in the feed
                    day = next_weekday(day)
                deals.append(world.deal(str(lots), login=cast(int, login),
                                        symbol=cast(str, symbol), day=day))  # fmt: skip
            case ("update", i, lots) if deals:
                world.change(deals[cast(int, i) % len(deals)], DealChange.UPDATED, str(lots))
            case ("delete", i) if deals:
                world.change(deals[cast(int, i) % len(deals)], DealChange.DELETED)
            case ("close",):
                world.pull()
                world.close(today)
                today = next_weekday(today)
            case ("pay", twice):
                world.pull()
                world.cashback.pay_due(session(today))
                if twice:
                    other.cashback.pay_due(session(today))
            case ("replay",):
                other.pull()  # the other process's runner finds nothing left to do
    world.pull()
    for client_id in sorted(set(LOGINS.values())):
        state = other.cashback.account(client_id)
        assert state == world.cashback.account(client_id)
        decode = world.repository.codec.decode
        stream = world.repository.store.read_stream(f"cashback-{client_id}")
        history = [decode(row).event for row in stream]
        paid = [e for e in history if isinstance(e, CashbackPaid)]
        assert len({p.trading_day for p in paid}) == len(paid)  # once per client and day
        total_paid = sum((p.amount for p in paid), usd(0))
        assert world.wallet(client_id) == total_paid
        assert all(p.amount == state.fixed[p.trading_day].payable for p in paid)
        # Conservation: what the live deals earned = paid + due + carried + waiting.
        live = sum((d.amount for d in state.deals.values() if not d.deleted), Decimal(0))
        due = sum((f.payable.amount for f in state.unpaid), Decimal(0))
        waiting = sum(
            (state.deals[k].amount for keys in state.open.values() for k in keys), Decimal(0)
        )
        event("paid" if paid else "none paid")
        if state.adjustment or state.carry < 0:
            event("adjusted")
        assert live == total_paid.amount + due + state.carry + state.adjustment + waiting


def test_a_scheduler_may_close_a_day_itself_once_and_the_policy_then_records_nothing_more() -> None:
    world = World()
    world.deal("2")
    world.pull()
    world.clock.set(session(next_weekday(DAY1)))
    assert world.cashback.close_day(DAY1) is True
    assert world.cashback.close_day(DAY1) is False
    before = world.repository.store.last_position()
    world.close(DAY1)  # the broker's TradingDayClosed for the same day
    stream = world.repository.store.read_stream("cashback-c1")
    assert len(stream) == 2  # counted, fixed: the policy fixed nothing again
    assert world.repository.store.last_position() > before  # the close and the policy's advance
    fixed = world.cashback.day("c1", DAY1)
    assert fixed is not None
    assert fixed.payable == usd(10)
    with pytest.raises(ValidationError):
        world.cashback.close_day(T0)


# -- the correction horizon ---------------------------------------------------------------------


def test_what_each_deal_counted_is_forgotten_after_the_correction_horizon() -> None:
    """Sixty trading days of deals: the client's state keeps only the deals of the last
    ``correction_days`` days; a correction of an older deal, and an older deal arriving late,
    count nothing; a correction inside the horizon still does; the total paid stays whole."""
    world = World(plan=attrs.evolve(PLAN, correction_days=10))
    day, days, first = DAY1, [], None
    for _ in range(60):
        deal = world.deal("1", day=day)
        first = first or deal
        world.pull()
        world.close(day)
        days.append(day)
        day = next_weekday(day)
    state = world.cashback.account("c1")
    assert state.forgotten_before == days[-1] - timedelta(days=10)
    assert all(d.trading_day >= state.forgotten_before for d in state.deals.values())
    assert len(state.deals) <= 9  # at most the weekdays of ten calendar days
    assert first is not None
    world.change(first, DealChange.DELETED)  # too old: not taken back
    world.deal("3", day=days[0], ticket=10_000)  # an old deal arriving late: not counted
    recent = world.deal("1", day=days[-2], ticket=10_001)  # inside the horizon: counted late
    world.pull()
    world.close(day)
    last = world.cashback.day("c1", day)
    assert last is not None
    assert last.adjustment == Decimal(5)  # only the recent late deal
    world.change(recent, DealChange.DELETED)  # and taken back while inside the horizon
    world.pull()
    world.close(next_weekday(day))
    taken = world.cashback.day("c1", next_weekday(day))
    assert taken is not None
    assert taken.adjustment == Decimal(-5)
    world.cashback.pay_due(datetime(2027, 1, 1, tzinfo=UTC))
    # the late deal was paid before its deletion: the -5 waits for later cashback (never
    # taken back from the wallet)
    assert world.cashback.paid_total("c1") == world.wallet("c1") == usd(60 * 5 + 5)
    assert world.cashback.account("c1").carry == Decimal(-5)
    fresh = World(
        world.repository.store, feed=world.feed, plan=attrs.evolve(PLAN, correction_days=10)
    )
    assert fresh.cashback.account("c1") == world.cashback.account("c1")


def test_a_plan_refuses_a_correction_horizon_that_is_not_whole_days() -> None:
    for bad in (0, -1, 3651, 1.5, True, "30"):
        with pytest.raises(ValidationError):
            CashbackPlan("USD", correction_days=bad)  # type: ignore[arg-type]


def test_the_history_keeps_every_fixed_day_and_payment_the_state_forgot() -> None:
    world = World(plan=attrs.evolve(PLAN, correction_days=5))
    day = DAY1
    for _ in range(15):
        world.deal("1", day=day)
        world.pull()
        world.close(day)
        world.cashback.pay_due(datetime.combine(next_weekday(day), time(23), UTC))
        day = next_weekday(day)
    history = world.cashback.history("c1")
    fixed = [r.event for r in history if isinstance(r.event, CashbackDayFixed)]
    paid = [r.event for r in history if isinstance(r.event, CashbackPaid)]
    assert len(fixed) == len(paid) == 15
    assert len(world.cashback.account("c1").fixed) < 15  # the state forgot the older days
    assert world.cashback.day("c1", DAY1) is None
    assert sum(p.amount.amount for p in paid) == world.cashback.paid_total("c1").amount == 75
    with pytest.raises(ValidationError):
        world.cashback.history("")
