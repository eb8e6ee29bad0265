"""Hardening of the rebate engine and book (issue 13's review): the settlement horizon cannot be
bent by a correction that moves a settled deal's time or by a deal dated in the future, and a
book refusing a bad server name keeps working. Each test failed on the code as first built."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.trading import DealChange, FeedItem
from tests.test_rebate_engine import deal
from tests.test_rebate_horizon import chunks, day_feed, engine


def test_a_correction_moving_a_settled_deal_into_the_open_days_is_not_paid_twice() -> None:
    feed = day_feed(8, 2)
    bounded, unbounded = engine(3), engine(None)
    for day in chunks(feed, 2):
        bounded.process(day)
        unbounded.process(day)
    first = feed[0].deal  # settled and forgotten by the bounded engine
    moved = attrs.evolve(first, time=feed[-1].deal.time)  # a dealer moves its time
    fix = FeedItem(feed[-1].cursor + 1, DealChange.UPDATED, moved)
    paid = bounded.process([fix])
    assert unbounded.process([fix]) == []  # the deal was paid: nothing more is due
    # Refused as a late correction (for review), or at least not paid a second time.
    assert paid == []
    assert bounded.totals() == unbounded.totals()


def test_one_deal_dated_far_in_the_future_does_not_close_settlement_for_every_deal() -> None:
    feed = day_feed(3, 2)
    clock = FixedClock(feed[-1].deal.time)  # the broker's clock: the deals are of today
    live = engine(3, clock=clock)
    for day in chunks(feed, 2):
        live.process(day)
    last = feed[-1]
    typo = FeedItem(
        last.cursor + 1,
        DealChange.ADDED,
        deal(Deal=999, Login=999, Time=4_102_444_800, PositionID=999),  # year 2100
    )
    live.process([typo])
    live.take_changes()
    next_hour = last.deal.time + timedelta(hours=1)
    normal = attrs.evolve(last.deal, ticket=1000, login=1000, time=next_hour)
    paid = live.process([FeedItem(last.cursor + 2, DealChange.ADDED, normal)])
    assert paid != []  # today's deal is paid, not refused as beyond the horizon
    assert live.take_changes().late == ()


@pytest.mark.parametrize("server", [None, "", 5, "mt\x005"])
def test_a_book_refusing_a_bad_server_name_keeps_working_for_good_ones(server: object) -> None:
    from fxcrm_core.commissions import REBATE_EVENTS, RebateBook
    from fxcrm_core.events import EventCodec, EventRegistry, Repository
    from fxcrm_core.stores import MemoryEventStore

    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    book = RebateBook(Repository(MemoryEventStore(), EventCodec(registry)), engine(3))
    item = FeedItem(1, DealChange.ADDED, deal())
    with pytest.raises(ValidationError):
        book.process(server, [item])  # type: ignore[arg-type]
    assert len(book.process("mt5", [item])) == 2  # the book is not poisoned by the refusal


def test_a_restored_book_refuses_the_same_moved_correction() -> None:
    from fxcrm_core.commissions import REBATE_EVENTS, RebateBook
    from fxcrm_core.events import EventCodec, EventRegistry, Repository
    from fxcrm_core.stores import MemoryEventStore

    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    repository = Repository(MemoryEventStore(), EventCodec(registry))
    feed = day_feed(8, 2)
    live = RebateBook(repository, engine(3))
    for day in chunks(feed, 2):
        live.process("mt5", day)
    moved = attrs.evolve(feed[0].deal, time=feed[-1].deal.time)
    fix = FeedItem(feed[-1].cursor + 1, DealChange.UPDATED, moved)
    restarted = RebateBook(repository, engine(3))  # a second process on the same log
    restarted.catch_up()
    assert restarted.engine.totals() == live.engine.totals()
    assert restarted.process("mt5", [fix]) == []
    [late] = restarted.late_corrections()
    assert late.deal.ticket == feed[0].deal.ticket
