"""Cashback after the adversarial review of issue 15: a deal's rate, and its exclusion, are judged
once, when it is first counted (the login's group as the policy read it then), whatever group
the login moves to before an update; the excluded deals of a client with no day to fix stay
bounded by the correction horizon; ``close_day`` refuses a day that has not ended by the
service's clock and records nothing then."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.events import EventStore, Policy, PolicyRunner
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.loyalty.cashback import (
    CASHBACK_POLICY,
    Cashback,
    CashbackDayFixed,
    CashbackPlan,
)
from fxcrm_core.reactions import TradingDayClosed
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import Deal, DealChange, DealsReceived
from tests.test_loyalty_cashback import (
    DAY1,
    LOGINS,
    PLAN,
    SERVER,
    T0,
    Feed,
    World,
    next_weekday,
    session,
    usd,
)

STD, ECN = "real\\std", "real\\ecn"  # the plan excludes ECN; EURUSD earns 5 USD a lot
LONG = attrs.evolve(PLAN, correction_days=3650)


class GroupWorld(World):
    """The cashback test world, with groups a dealer can change (``groups[login]``)."""

    def __init__(self, store: EventStore | None = None,
                 feed: Feed | None = None, plan: CashbackPlan = PLAN) -> None:  # fmt: skip
        super().__init__(store, feed=feed, plan=plan)
        self.groups = dict.fromkeys(LOGINS, STD)
        self.cashback = Cashback(
            self.repository, self.ledger, plan,
            client_of=lambda server, login: LOGINS.get(login) if server == SERVER else None,
            group_of=lambda server, login: self.groups.get(login),
            clock=self.clock,
        )  # fmt: skip
        self.runner = PolicyRunner(
            self.repository,
            [Policy(CASHBACK_POLICY, (DealsReceived, TradingDayClosed), self.cashback.handle)],
        )


def fixed_total(world: World, client_id: str) -> Decimal:
    """What the client's fixed days took in (amounts and adjustments), from its history."""
    return sum(
        (
            e.event.amount + e.event.adjustment
            for e in world.cashback.history(client_id)
            if isinstance(e.event, CashbackDayFixed)
        ),
        Decimal(0),
    )


# -- the law: judged once, at the first count ---------------------------------------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("deal"), st.decimals("0.01", "5", places=2)),
        st.tuples(st.just("move"), st.sampled_from([STD, ECN])),
        st.tuples(st.just("update"), st.integers(0, 30), st.decimals("0.01", "5", places=2)),
        st.tuples(st.just("delete"), st.integers(0, 30)),
        st.tuples(st.just("pull")),
        st.tuples(st.just("close")),
    ),
    min_size=4,
    max_size=40,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ops)
def test_a_deal_earns_by_the_group_it_was_first_counted_in_whatever_moves_follow(
    ops: list[tuple[object, ...]],
) -> None:
    world = GroupWorld(plan=LONG)  # nothing forgotten in the run: every deal is checked
    deals: list[Deal] = []
    pending: list[Deal] = []  # added to the feed, not pulled yet
    first_group: dict[str, str] = {}  # deal key -> group when the policy first counted it
    last_lots: dict[str, Decimal] = {}
    deleted: set[str] = set()
    today = DAY1

    def pull() -> None:
        world.pull()
        for d in pending:
            first_group.setdefault(d.key, world.groups[1001])
        pending.clear()

    for op in ops:
        match op:
            case ("deal", lots):
                deal = world.deal(str(lots), day=today)
                deals.append(deal)
                pending.append(deal)
                last_lots[deal.key] = Decimal(str(lots))
            case ("move", group):
                pull()  # the dealer's move comes after what the feed already sent
                world.groups[1001] = str(group)
            case ("update", i, lots) if deals:
                deal = deals[int(str(i)) % len(deals)]
                world.change(deal, DealChange.UPDATED, str(lots))
                if deal.key not in deleted:
                    last_lots[deal.key] = Decimal(str(lots))
            case ("delete", i) if deals:
                deal = deals[int(str(i)) % len(deals)]
                world.change(deal, DealChange.DELETED)
                deleted.add(deal.key)
            case ("pull",):
                pull()
            case ("close",):
                pull()
                world.close(today)
                today = next_weekday(today)
    pull()
    world.close(today)
    state = world.cashback.account("c1")
    expected = Decimal(0)
    for key, group in first_group.items():
        counted = state.deals.get(key)
        earns = group == STD and key not in deleted
        amount = last_lots[key] * 5 if earns else Decimal(0)
        expected += amount
        if group == ECN:  # remembered as excluded, whatever came after
            assert counted is not None
            assert counted.rate is None
        if counted is not None:
            assert counted.amount == amount
    # Every day is closed: what the fixed days took in is what the live deals earn.
    assert state.open == {}
    assert fixed_total(world, "c1") + state.adjustment == expected
    fresh = GroupWorld(world.repository.store, feed=world.feed, plan=LONG)
    assert fresh.cashback.account("c1") == state


def test_an_update_after_a_move_keeps_the_rate_and_counts_its_new_lots_at_it() -> None:
    world = GroupWorld()
    deal = world.deal("2")  # 10 USD in the standard group
    world.pull()
    world.close(DAY1)
    world.groups[1001] = ECN
    world.change(deal, DealChange.UPDATED, "3")  # one more lot, corrected after the move
    world.pull()
    world.close(next_weekday(DAY1))
    later = world.cashback.day("c1", next_weekday(DAY1))
    assert later is not None
    assert later.adjustment == Decimal(5)  # the extra lot at the rate it was counted at
    assert world.cashback.account("c1").deals[deal.key].amount == Decimal(15)


def test_an_excluded_clients_deals_open_no_day_and_stay_bounded_by_the_horizon(
    tmp_path: Path,
) -> None:
    world = GroupWorld(SqliteEventStore(tmp_path / "events.db"))
    world.groups[1001] = ECN
    day, deals = DAY1, []
    for _ in range(60):
        world.clock.set(session(day))
        deals.append(world.deal("1", day=day))
        world.pull()
        world.close(day)
        day = next_weekday(day)
    state = world.cashback.account("c1")
    assert state.fixed == {}  # no day fixed for deals that earn nothing
    assert state.forgotten_before == deals[-1].time.date() - timedelta(days=30)
    assert len(state.deals) <= 23  # the weekdays of the horizon's 30 days, not 60 deals
    assert all(d.rate is None for d in state.deals.values())
    world.groups[1001] = STD  # back to the standard group, then corrections of old deals:
    world.change(deals[0], DealChange.UPDATED, "4")  # past the horizon: counts nothing
    world.change(deals[-2], DealChange.UPDATED, "4")  # inside it: still excluded
    world.pull()
    world.clock.set(session(day))
    world.close(day)
    after = world.cashback.account("c1")
    assert after.fixed == {}
    assert after.adjustment == 0
    assert deals[0].key not in after.deals
    assert after.deals[deals[-2].key].rate is None
    assert after.deals[deals[-2].key].lots == Decimal(4)
    fresh = GroupWorld(SqliteEventStore(tmp_path / "events.db"), feed=world.feed)
    assert fresh.cashback.account("c1") == world.cashback.account("c1")
    assert fresh.cashback.paid_total("c1") == usd(0)


def test_a_deal_whose_server_clock_is_years_ahead_forgets_nothing() -> None:
    world = GroupWorld()
    kept = world.deal("1")
    world.deal("1", day=date(2031, 3, 3))  # a server's bad clock
    world.pull()
    state = world.cashback.account("c1")
    assert kept.key in state.deals
    assert state.forgotten_before == DAY1 - timedelta(days=PLAN.correction_days)


# -- close_day: only a day that has ended -------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 20),
    st.integers(-3 * 24 * 60, 24 * 24 * 60).map(lambda m: timedelta(minutes=m)),
)
def test_close_day_closes_a_day_exactly_when_its_session_has_ended_by_the_clock(
    ahead: int, offset: timedelta
) -> None:
    world = GroupWorld()
    day = DAY1
    for _ in range(ahead):
        day = next_weekday(day)
    now = T0 + offset
    world.clock.set(now)
    before = world.repository.store.last_position()
    ended = world.cashback.calendar.session(day)[1] <= now
    if ended:
        assert world.cashback.close_day(day) is True
    else:
        with pytest.raises(ValidationError):
            world.cashback.close_day(day)
        assert world.repository.store.last_position() == before  # nothing recorded


def test_a_refused_close_leaves_the_policy_to_fix_and_pay_the_day() -> None:
    world = GroupWorld()
    with pytest.raises(ValidationError) as refused:
        world.cashback.close_day(date(2026, 12, 31))
    assert "ended" in str(refused.value)
    with pytest.raises(ValidationError):
        world.cashback.close_day(DAY1)  # the day still running
    world.deal("2")
    world.pull()
    world.close(DAY1)
    fixed = world.cashback.day("c1", DAY1)
    assert fixed is not None
    assert fixed.payable == usd(10)
    paid = world.cashback.pay_due(datetime(2026, 3, 3, 12, tzinfo=UTC))
    assert [p.amount for p in paid] == [usd(10)]
    world.clock.set(datetime(2026, 3, 3, 12, tzinfo=UTC))
    assert world.cashback.close_day(DAY1) is False  # ended, and closed by the policy already
