"""A CPA is a function of each client's first deposit and lots, whatever batches the feed comes
in: a deposit that leaves the first deposit as it is settles nothing again (the engine skips
it), and the amounts agree with one batch of everything."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.commissions import PlanKind, RebateEntry, Rule
from fxcrm_core.trading import Deal, DealChange, FeedItem
from tests.test_rebate_rules import T0, deal, deposit, engine, schedule, usd

CPA = Rule(PlanKind.CPA, usd(200), min_deposit=usd(500), min_lots=Decimal(2))
AMOUNTS = ("100.00", "600.00", "1000.00")


@st.composite
def feeds(draw: st.DrawFn) -> list[FeedItem]:
    """Deposits (some backdated, some later deleted) and 1-lot closes of two clients."""
    items: list[FeedItem] = []
    made: list[Deal] = []
    for n in range(1, draw(st.integers(1, 14)) + 1):
        login = draw(st.sampled_from((7, 8)))
        at = T0 + timedelta(minutes=draw(st.integers(-600, 600)))
        if made and draw(st.integers(0, 5)) == 0:  # a correction: an earlier deal deleted
            items.append(FeedItem(n, DealChange.DELETED, draw(st.sampled_from(made))))
            continue
        if draw(st.booleans()):
            one = deposit(n, at, draw(st.sampled_from(AMOUNTS)), login=login)
        else:
            one = deal(n, at, Login=login, PositionID=1000 + n)
        made.append(one)
        items.append(FeedItem(n, DealChange.ADDED, one))
    return items


def totals(entries: list[RebateEntry]) -> dict[tuple[str, str, int], Decimal]:
    out: dict[tuple[str, str, int], Decimal] = {}
    for e in entries:
        key = (e.ib_id, e.component, e.ticket)
        out[key] = out.get(key, Decimal(0)) + e.amount.amount
    return {k: v for k, v in out.items() if v}


@settings(max_examples=150, deadline=None)
@given(feeds(), st.lists(st.integers(1, 4), min_size=1, max_size=14))
def test_a_cpa_does_not_depend_on_how_the_feed_is_batched(
    items: list[FeedItem], sizes: list[int]
) -> None:
    whole = engine(schedule(cpa=CPA, default=None))
    expected = totals(list(whole.process(items)))
    batched = engine(schedule(cpa=CPA, default=None))
    got: list[RebateEntry] = []
    at, k = 0, 0
    while at < len(items):
        size = sizes[k % len(sizes)]
        got.extend(batched.process(items[at : at + size]))
        at, k = at + size, k + 1
    assert totals(got) == expected
    assert batched.totals() == whole.totals()
