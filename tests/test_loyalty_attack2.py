"""Second adversarial review of issue 15 (after the fixes of ``test_loyalty_attack.py``): IB
ranks and the rebates that wait for them, tiers reconsidered, cashback, bonus, points, demo
accounts and KPIs. Each test names the behaviour it demands and says, in a comment, the attack
it makes; the failing ones show a defect in ``src/`` (see the review's report)."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal

import pytest

from fxcrm_core.activity import Measure as ActivityMeasure
from fxcrm_core.broker import Broker
from fxcrm_core.commissions import PlanKind, RankSlices, Revenue, Rule, Schedule, ScheduleBook
from fxcrm_core.commissions.book import RebateEntriesRecorded
from fxcrm_core.events import PolicyWaitingError
from fxcrm_core.kernel import Currency, FixedClock, Money
from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.privacy import MemoryKeyStore
from fxcrm_core.stores import MemoryEventStore
from fxcrm_core.trading import DealChange, DealsSetAside
from tests import loyalty_more_world as m
from tests import loyalty_wired_world as w
from tests.test_loyalty_attack import memory_broker


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


# -- IB ranks and the rebates that wait for them -------------------------------------------------


def rank_broker(
    clock: FixedClock, policies: Literal["inline", "worker"] = "inline"
) -> tuple[Broker, m.Member]:
    """A broker paying 3 USD a lot in rank slices (rank 1: 1 USD, rank 2: 2 USD) to the IB
    above ben (rank 1 from the start: every deal pays it), with the IB rank programme of
    ``loyalty_more_world`` (silver, rank 2, at 20 downline lots in a calendar month, from 1
    July)."""
    found = m.options(clock, policies)
    book = ScheduleBook()
    book.add(
        Schedule("std", 1, w.START, Currency.of("USD"), default=Rule(PlanKind.PER_LOT, usd(3)),
                 revenue=Revenue.uncapped())
    )  # fmt: skip
    found["schedules"] = book
    found["distribution"] = RankSlices({1: usd(1), 2: usd(2)})
    broker = Broker(MemoryEventStore(clock), keystore=MemoryKeyStore(), clock=clock, **found)
    ben = m.onboard(broker, "ben.lima@example.com")
    assert broker.ib_ranks is not None
    broker.ib_network.register_ib(w.ADMIN, m.IB, None, w.START, reason="signed")
    broker.ib_network.attribute(w.ADMIN, ben.client_id, m.IB, w.START, reason="referral")
    broker.ib_network.change_rank(w.ADMIN, m.IB, 1, w.START, reason="starts at rank 1")
    broker.ib_ranks.record_programme(w.ADMIN, m.ib_programme(), reason="IB ranks")
    broker.record_configuration()
    broker.run_policies()
    return broker, ben


def rebates_paid(broker: Broker) -> dict[int, Decimal]:
    """What the rebate engine recorded per ticket."""
    paid: dict[int, Decimal] = {}
    for row in broker.store.read_all(after_position=0, limit=1_000_000):
        event = broker.repository.codec.decode(row).event
        if isinstance(event, RebateEntriesRecorded):
            for entry in event.entries:
                paid[entry.ticket] = paid.get(entry.ticket, Decimal(0)) + entry.amount.amount
    return paid


def test_a_deal_stamped_in_the_future_stalls_no_other_deals_rebates() -> None:
    # Attack (a trading server whose clock is wrong, or a hostile feed item): one closing deal
    # arrives stamped 1 January 2030. The rebates policy waits for the close of the trading
    # day before it (31 December 2029), which end_of_day() records only in 2030; a policy
    # handles the log in order, so every deal pulled after it waits too: no IB is paid a
    # rebate for three years, while the scheduler runs every day.
    clock = FixedClock(w.START)
    broker, ben = rank_broker(clock)
    feed = w.Feed()
    ticket = 0
    for day in w.trading_days(date(2026, 7, 1), date(2026, 7, 10)):
        clock.set(w.noon(day))
        broker.end_of_day()
        ticket += 1
        feed.add(DealChange.ADDED, m.deal(ben.login, ticket, Decimal(1), w.noon(day)))
        broker.feeds.pull(w.cast_feed(feed))
        if day == date(2026, 7, 2):
            ticket += 1
            future = datetime(2030, 1, 1, 12, tzinfo=UTC)
            feed.add(DealChange.ADDED, m.deal(ben.login, ticket, Decimal(1), future))
            broker.feeds.pull(w.cast_feed(feed))
    clock.set(datetime(2026, 7, 13, 12, tzinfo=UTC))
    broker.end_of_day()
    with contextlib.suppress(PolicyWaitingError):
        broker.run_policies()
    paid = rebates_paid(broker)
    # every ticket of 1 July .. 10 July; ticket 3, the one stamped 2030, is set aside
    assert sorted(paid) == [t for t in range(1, ticket + 1) if t != 3]
    (aside,) = [r for r in broker.store.read_all(limit=10_000) if r.event_type == "DealsSetAside"]
    set_aside = broker.codec.decode(aside).event
    assert isinstance(set_aside, DealsSetAside)
    assert set_aside.items[0].deal.ticket == 3


def test_a_scheduler_that_starts_after_the_first_day_stalls_no_rebates() -> None:
    # Attack (no malice: a broker goes live on Friday 3 July, its IB rank programme in force
    # from 1 July; the host's scheduler first runs end_of_day() on Monday evening). The first
    # close records only the day before "now" (Monday 6 July): Friday is never closed. Deals
    # of Monday wait for the IB ranks decided at Friday's close, which never comes: every
    # rebate of the broker waits for ever.
    clock = FixedClock(w.START)
    broker, ben = rank_broker(clock)
    feed = w.Feed()
    made = [datetime(2026, 7, 3, 12, tzinfo=UTC), datetime(2026, 7, 6, 12, tzinfo=UTC)]
    for ticket, at in enumerate(made, start=1):
        clock.set(at + timedelta(minutes=5))
        feed.add(DealChange.ADDED, m.deal(ben.login, ticket, Decimal(1), at))
        broker.feeds.pull(w.cast_feed(feed))
    for day in (date(2026, 7, 6), date(2026, 7, 7), date(2026, 7, 8)):
        clock.set(datetime(day.year, day.month, day.day, 21, 5, tzinfo=UTC))
        broker.end_of_day()
    with contextlib.suppress(PolicyWaitingError):
        broker.run_policies()
    assert sorted(rebates_paid(broker)) == [1, 2]


def backdated_rank_payouts(policies: Literal["inline", "worker"]) -> dict[int, Decimal]:
    """Ben closes a lot at 11:00 on 2 July (pulled at 11:05); 1 July was closed at 21:05 and
    its rank decisions made. At 13:00 an admin sets rank 2 by hand *from 10:00*. A worker
    broker runs its policies only after that."""
    clock = FixedClock(w.START)
    broker, ben = rank_broker(clock, policies)
    clock.set(datetime(2026, 7, 1, 21, 5, tzinfo=UTC))
    assert broker.end_of_day()["closed"] == [date(2026, 7, 1)]
    broker.run_policies()  # the 1 July close decided: a rank by hand is allowed
    feed = w.Feed()
    clock.set(datetime(2026, 7, 2, 11, 5, tzinfo=UTC))
    feed.add(
        DealChange.ADDED, m.deal(ben.login, 1, Decimal(1), datetime(2026, 7, 2, 11, tzinfo=UTC))
    )
    broker.feeds.pull(w.cast_feed(feed))
    clock.set(datetime(2026, 7, 2, 13, tzinfo=UTC))
    with pytest.raises(ValidationError):  # with IB rank rules: from now on only
        broker.ib_network.change_rank(
            w.ADMIN, m.IB, 2, datetime(2026, 7, 2, 10, tzinfo=UTC), reason="promoted this morning"
        )
    broker.ib_network.change_rank(w.ADMIN, m.IB, 2, clock.now(), reason="promoted from now")
    broker.run_policies()
    assert broker.policy_failure is None
    return rebates_paid(broker)


def test_a_rank_set_by_hand_from_the_past_pays_a_late_worker_as_an_inline_broker() -> None:
    # Attack (an admin back-dating a promotion, or a friend's): change_rank takes any
    # effective time after the IB's last rank change, also one before deals already paid.
    # The broker's guard only waits for the day-close decisions. Inline, ben's 11:00 deal
    # was paid at rank 1 when pulled; a worker that runs its policies after the 13:00 change
    # pays the same deal at rank 2: two deployments pay the IB differently for one deal (and
    # the rank "in force at the deal's time" is not what the inline broker paid on).
    assert backdated_rank_payouts("worker") == backdated_rank_payouts("inline")


def test_an_ib_deal_made_before_a_month_end_rollover_and_pulled_after_it_counts_for_its_rank() -> (
    None
):
    # Attack (the first review's month-end race, on the IB side): ben (under the IB) closes
    # 19 lots on 30 July and the 20th at 16:59 New York on 31 July; the scheduler's
    # end_of_day() at 17:01 closes July (the IB's downline: 19 lots, no rank) before the
    # next pull records the 20th lot. Client tiers reconsider such a late deal
    # (Tiers.reconsider, rule late_activity); the IB rank policy reacts only to day closes,
    # so July is never reconsidered for the IB: its downline made 20 lots in July and it is
    # never made silver (rank 2), and the rank-slice payout of August stays at rank 1.
    clock = FixedClock(w.START)
    broker, ben = rank_broker(clock)
    assert broker.ib_ranks is not None
    feed = w.Feed()
    for day in w.trading_days(date(2026, 7, 1), date(2026, 7, 30)):
        clock.set(w.noon(day))
        broker.end_of_day()
    feed.add(
        DealChange.ADDED, m.deal(ben.login, 1, Decimal(19), datetime(2026, 7, 30, 11, tzinfo=UTC))
    )
    broker.feeds.pull(w.cast_feed(feed))
    clock.set(datetime(2026, 7, 31, 12, tzinfo=UTC))
    broker.end_of_day()
    feed.add(
        DealChange.ADDED,
        m.deal(ben.login, 2, Decimal(1), datetime(2026, 7, 31, 20, 59, tzinfo=UTC)),
    )
    clock.set(datetime(2026, 7, 31, 21, 1, tzinfo=UTC))
    assert broker.end_of_day()["closed"] == [date(2026, 7, 31)]
    clock.set(datetime(2026, 7, 31, 21, 2, tzinfo=UTC))
    broker.feeds.pull(w.cast_feed(feed))
    for day in (date(2026, 8, 3), date(2026, 8, 4)):
        clock.set(w.noon(day))
        broker.end_of_day()
    assert broker.policy_failure is None
    july = broker.activity.window(ben.client_id, ActivityMeasure.LOTS, days=2,
                                  at=datetime(2026, 7, 31, 20, 59, tzinfo=UTC))  # fmt: skip
    assert july.value == Decimal(20)  # the read model counts both days for July
    assert broker.ib_network.rank_of(m.IB, datetime(2026, 8, 4, 12, tzinfo=UTC)) == 2


# -- points -------------------------------------------------------------------------------------


def test_points_of_a_deal_stamped_in_the_future_expire_within_the_validity() -> None:
    # Attack (a trading server whose clock is years ahead, or a hostile feed item): a closing
    # deal of 10 lots stamped 1 January 2030 is pulled on 1 July 2026. Its lot is earned "at"
    # the deal's time and expires 30 days after it: the 100 points are held and redeemable at
    # once (held_balance ignores earned_at) and no day close expires them for three and a half
    # years, instead of the rules' 30 days.
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    ana = m.onboard(broker, "ana.lima@example.com")
    feed = w.Feed()
    clock.set(w.noon(date(2026, 7, 1)))
    future = datetime(2030, 1, 1, 12, tzinfo=UTC)
    feed.add(DealChange.ADDED, m.deal(ana.login, 1, Decimal(10), future))
    broker.feeds.pull(w.cast_feed(feed))
    for day in w.trading_days(date(2026, 7, 2), date(2026, 8, 14)):
        clock.set(w.noon(day))
        broker.end_of_day()
    assert broker.policy_failure is None
    assert broker.points.balance(ana.client_id) == Decimal(0)


# -- IB ranks: decisions ahead of the clock -----------------------------------------------------


def test_an_ib_period_closed_ahead_of_the_clock_freezes_no_ib() -> None:
    # Attack (the first review's "decision ahead of the clock", on the IB side; a backfill
    # script or a host's job with a wrong date): IbRanks.close_period (and evaluate) always
    # hand the tier engine a unit of work of their own, and a unit of work is what exempts the
    # policy path from the clock check (Tiers._decided_at). On 2 July, after the downline's 25
    # lots, close_period(2030) closes the periods up to December 2029; every real decision
    # "before the last one" then records nothing: the IB is not made silver (rank 2) at the
    # 2 July close, and its deals are paid at rank 1 until 2030.
    clock = FixedClock(w.START)
    broker, ben = rank_broker(clock)
    assert broker.ib_ranks is not None
    feed = w.Feed()
    feed.add(
        DealChange.ADDED, m.deal(ben.login, 1, Decimal(25), datetime(2026, 7, 2, 11, tzinfo=UTC))
    )
    clock.set(datetime(2026, 7, 2, 12, tzinfo=UTC))
    broker.end_of_day()
    broker.feeds.pull(w.cast_feed(feed))
    with contextlib.suppress(FxCrmError):  # refusing is fine
        broker.ib_ranks.close_period(datetime(2030, 1, 1, tzinfo=UTC))
    for day in (date(2026, 7, 3), date(2026, 7, 6)):
        clock.set(w.noon(day))
        broker.end_of_day()
    assert broker.policy_failure is None
    assert broker.ib_network.rank_of(m.IB, datetime(2026, 7, 6, 12, tzinfo=UTC)) == 2


# -- tiers: late deals of a closed period -------------------------------------------------------


def test_a_clients_first_deal_pulled_after_the_month_end_close_counts_for_that_month() -> None:
    # Attack (the first review's month-end race, for a client new that month): ana's first
    # deal ever, 10 lots at 16:59 New York on 31 July, is pulled after end_of_day() closed
    # July at 17:01. The close covered the clients with activity (ana had none yet), so her
    # July is never closed for her, and Tiers.reconsider records nothing for a client whose
    # state has no closed period ("day_end > closed_until"); evaluate reads August. A client
    # with one earlier lot in July is made silver by the same late deal; she stays bronze.
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    ana = m.onboard(broker, "ana.lima@example.com")
    broker.tiers.record_programme(w.ADMIN, w.programme(), reason="the programme")
    feed = w.Feed()
    for day in w.trading_days(date(2026, 7, 1), date(2026, 7, 31)):
        clock.set(w.noon(day))
        broker.end_of_day()
    feed.add(
        DealChange.ADDED,
        m.deal(ana.login, 1, Decimal(10), datetime(2026, 7, 31, 20, 59, tzinfo=UTC)),
    )
    clock.set(datetime(2026, 7, 31, 21, 1, tzinfo=UTC))
    assert broker.end_of_day()["closed"] == [date(2026, 7, 31)]
    clock.set(datetime(2026, 7, 31, 21, 2, tzinfo=UTC))
    broker.feeds.pull(w.cast_feed(feed))
    clock.set(datetime(2026, 8, 3, 12, tzinfo=UTC))
    broker.end_of_day()
    assert broker.policy_failure is None
    assert broker.tiers.tier(ana.client_id, datetime(2026, 8, 3, 12, tzinfo=UTC)) == "silver"


def test_an_update_of_an_old_deal_does_not_undo_a_later_downgrade() -> None:
    # Attack (routine, no malice: the server re-sends a July deal in September after a
    # commission or swap correction, same lots): ana made 10 lots in July (silver), nothing in
    # August (bronze from the August close: the programme downgrades at period ends). The
    # tier policy hands every deal of an earlier trading day to Tiers.reconsider, updates too,
    # and reconsider judges the deal's period (July: 10 lots, silver) against the tier held
    # now (bronze) without asking whether that period was already judged with the deal in it:
    # ana is made silver again in September on July's figures ("late_activity").
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    ana = m.onboard(broker, "ana.lima@example.com")
    broker.tiers.record_programme(w.ADMIN, w.programme(), reason="the programme")
    feed = w.Feed()
    july = m.deal(ana.login, 1, Decimal(10), datetime(2026, 7, 15, 11, tzinfo=UTC))
    for day in w.trading_days(date(2026, 7, 1), date(2026, 9, 1)):
        clock.set(w.noon(day))
        broker.end_of_day()
        if day == date(2026, 7, 15):
            feed.add(DealChange.ADDED, july)
            broker.feeds.pull(w.cast_feed(feed))
    assert broker.tiers.tier(ana.client_id, datetime(2026, 7, 20, tzinfo=UTC)) == "silver"
    assert broker.tiers.tier(ana.client_id, clock.now()) == "bronze"  # August: no lots
    feed.add(DealChange.UPDATED, july)  # the same deal again (a correction on the server)
    broker.feeds.pull(w.cast_feed(feed))
    clock.set(datetime(2026, 9, 2, 12, tzinfo=UTC))
    broker.end_of_day()
    assert broker.policy_failure is None
    assert broker.tiers.tier(ana.client_id, clock.now()) == "bronze"


# -- a deal at the edge of the calendar ---------------------------------------------------------


def test_a_deal_stamped_at_the_calendars_edge_stops_no_other_clients_loyalty() -> None:
    # Attack (a hostile or broken feed item: MT5 reports an unset time as its maximum, a
    # server clock set wrong): ana's deal is stamped 31 December 9999 22:00 UTC (New York
    # 17:00: its trading day would be in the year 10000). The feed records it; every policy
    # that asks the trading day of a deal (cashback, IB ranks, activity, churn) fails on it
    # with "outside the years 1 to 9999" and stops there for good, so ben's ordinary 10 lots
    # the same day earn no cashback and no points, nor anything after, for any client.
    clock = FixedClock(w.START)
    broker = memory_broker(clock)
    ana = m.onboard(broker, "ana.lima@example.com")
    ben = m.onboard(broker, "ben.lima@example.com")
    feed = w.Feed()
    clock.set(w.noon(date(2026, 7, 1)))
    edge = datetime(9999, 12, 31, 22, tzinfo=UTC)
    feed.add(DealChange.ADDED, m.deal(ana.login, 1, Decimal(1), edge))
    broker.feeds.pull(w.cast_feed(feed))
    feed.add(DealChange.ADDED, m.deal(ben.login, 2, Decimal(10), w.noon(date(2026, 7, 1))))
    broker.feeds.pull(w.cast_feed(feed))
    for day in (date(2026, 7, 2), date(2026, 7, 3)):
        clock.set(w.noon(day))
        broker.end_of_day()
    assert broker.cashback.paid_total(ben.client_id) == usd("5.00")  # 10 lots at 0.50 USD
    assert broker.points.balance(ben.client_id) == Decimal(100)  # 10 lots at 10 points
