"""The settlement horizon: per-deal state is forgotten once a deal's trading day is beyond the
horizon and its cap period is over; what it paid still counts in the totals; an item for a deal
that far back is refused and recorded for review, never paid nor dropped; a restored engine
forgets and refuses exactly as the live one."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.commissions import (
    REBATE_EVENTS,
    CapPeriod,
    FixedShares,
    IbTree,
    PeriodCap,
    PlanKind,
    RebateBook,
    RebateEngine,
    Rule,
    Schedule,
    ScheduleBook,
)
from fxcrm_core.commissions.engine import SettlementClosedError
from fxcrm_core.events import EventCodec, EventRegistry, Repository
from fxcrm_core.kernel import Clock, Currency, ValidationError
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import DealChange, FeedItem
from tests.test_rebate_engine import CAL, T0, deal, usd

DAY = 86_400
START = T0 - timedelta(days=60)


def engine(
    horizon: int | None, cap: CapPeriod | None = None, clock: Clock | None = None
) -> RebateEngine:
    tree = IbTree()
    tree.add_ib("master", None, START)
    tree.add_ib("sub", "master", START)
    for n in range(3):
        tree.attribute(f"c-{n}", "sub", START)
    book = ScheduleBook()
    period_cap = PeriodCap(usd(500), cap) if cap is not None else None
    book.add(
        Schedule("std", 1, START, Currency.of("USD"), default=Rule(PlanKind.PER_LOT, usd(10)),
                 allow_above_revenue=True, period_cap=period_cap)
    )  # fmt: skip
    return RebateEngine(
        tree, book, FixedShares((Decimal("0.6"), Decimal("0.4"))),
        client_of=lambda server, login: f"c-{login % 3}",
        account_group_of=lambda server, login: "std",
        trading_day_of=lambda d: CAL.trading_day(d.time),
        horizon=timedelta(days=horizon) if horizon is not None else None, clock=clock,
    )  # fmt: skip


def day_feed(days: int, per_day: int) -> list[FeedItem]:
    """Closing deals over ``days`` weekdays from 2026-03-02, then corrections of deals of every
    day (an update and a delete) at the end."""
    items = []
    cursor = itertools.count(1)
    start = 1_772_445_600  # 2026-03-02 10:00 UTC, a Monday
    weekdays = [d for d in range(days + days // 5 * 2 + 2) if (d % 7) < 5][:days]
    for n, d in enumerate(weekdays):
        for i in range(per_day):
            ticket = n * per_day + i + 1
            made = deal(Deal=ticket, Login=ticket, Time=start + d * DAY + i * 60, PositionID=ticket)
            items.append(FeedItem(next(cursor), DealChange.ADDED, made))
    return items


def chunks(items: list[FeedItem], size: int) -> list[list[FeedItem]]:
    return [items[n : n + size] for n in range(0, len(items), size)]


def corrections(items: list[FeedItem], every: int) -> list[FeedItem]:
    last = items[-1].cursor
    out = []
    for n, item in enumerate(items[::every], start=1):
        change = DealChange.DELETED if n % 2 else DealChange.UPDATED
        out.append(FeedItem(last + n, change, item.deal))
    return out


def test_a_horizon_is_a_whole_number_of_days() -> None:
    with pytest.raises(ValidationError):
        engine(None).__class__(
            IbTree(), ScheduleBook(), FixedShares((Decimal(1),)),
            client_of=lambda s, lg: None, account_group_of=lambda s, lg: "",
            trading_day_of=lambda d: CAL.trading_day(d.time), horizon=timedelta(hours=36),
        )  # fmt: skip


def test_forgetting_pays_the_same_and_keeps_the_state_of_recent_days_only() -> None:
    feed = day_feed(12, 20)
    bounded, unbounded = engine(3), engine(None)
    for day in chunks(feed, 20):
        assert bounded.process(day) == unbounded.process(day)
        assert bounded.totals() == unbounded.totals()
        assert len(bounded._cursor) <= 5 * 20  # (private) at most the days within the horizon
    assert len(unbounded._cursor) == len(feed)
    assert bounded.take_changes().late == ()


def test_a_correction_beyond_the_horizon_is_refused_and_recorded_the_rest_processed(
    tmp_path: Path,
) -> None:
    feed = day_feed(8, 10)
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    repository = Repository(SqliteEventStore(tmp_path / "r.sqlite"), EventCodec(registry))
    live = engine(3)
    book = RebateBook(repository, live)
    for day in chunks(feed, 10):
        book.process("mt5", day)
    totals = live.totals()
    old, recent = feed[2], feed[-3]  # a deal of the first days, one of the last
    last = feed[-1].cursor
    fixes = [
        FeedItem(last + 1, DealChange.DELETED, old.deal),
        FeedItem(last + 2, DealChange.DELETED, recent.deal),
    ]
    paid = book.process("mt5", fixes)
    assert [(e.ticket, e.kind.value) for e in paid] == [(recent.deal.ticket, "reversal")] * 2
    assert live.totals() != totals  # the recent deal's reversal counted; the old one's not
    (late,) = book.late_corrections()
    assert (late.deal.ticket, late.change, late.cursor) == (old.deal.ticket, DealChange.DELETED,
                                                             last + 1)  # fmt: skip
    assert late.trading_day == CAL.trading_day(old.deal.time)
    assert isinstance(late.error(), SettlementClosedError)
    assert str(old.deal.ticket) in str(late.error())

    # A restart lists it too, and its engine refuses the same.
    again = RebateBook(repository, engine(3))
    again.restore()
    assert again.late_corrections() == [late]
    assert again.engine.totals() == live.totals()


def test_a_deal_stays_open_while_its_cap_period_runs() -> None:
    feed = day_feed(8, 10)
    capped = engine(1, CapPeriod.MONTH)  # all of March is one period: nothing settles
    capped.process(feed)
    fix = FeedItem(feed[-1].cursor + 1, DealChange.DELETED, feed[0].deal)
    assert [e.kind.value for e in capped.process([fix]) if e.component == "rebate"] == [
        "reversal", "reversal",
    ]  # fmt: skip
    assert capped.take_changes().late == ()
    daily = engine(1, CapPeriod.DAY)
    daily.process(feed)
    assert daily.process([fix]) == []
    assert len(daily.take_changes().late) == 1


@settings(max_examples=20, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 130), max_size=8, unique=True),
    cap=st.sampled_from([None, CapPeriod.DAY, CapPeriod.WEEK]),
)
def test_a_restored_engine_forgets_and_refuses_exactly_as_the_live_one(
    cuts: list[int], cap: CapPeriod | None
) -> None:
    base = day_feed(9, 12)
    feed = base + corrections(base, 7)
    bounds = [0, *sorted(c for c in cuts if c < len(feed)), len(feed)]
    batches = [feed[a:b] for a, b in itertools.pairwise(bounds)]
    live = engine(2, cap)
    recorded = []
    for batch in batches:
        entries = live.process(batch)
        recorded.append((entries, live.take_changes(), batch))
    for restart in range(1, len(batches)):
        restored = engine(2, cap)
        for entries, changes, batch in recorded[:restart]:
            cursors = [(i.deal.ticket, i.cursor) for i in batch]
            restored.restore(entries, "mt5", cursors, changes)
        replay = engine(2, cap)
        for _, _, batch in recorded[:restart]:
            replay.process(batch)
            replay.take_changes()
        assert restored._cursor == replay._cursor  # (private) the same deals forgotten
        assert restored._paid == replay._paid
        for entries, changes, batch in recorded[restart:]:
            assert restored.process(batch) == entries
            assert restored.take_changes() == changes
        assert restored.totals() == live.totals()
