"""Rebate rules that depend on more than one deal: a CPA on a qualified first deposit, a minimum
holding time (closes wait for their opening deal), and caps per IB and period. Each is a pure
function of the latest state of every deal, so any arrival order pays the same."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.commissions import (
    CapPeriod,
    EngineChanges,
    EntryKind,
    FixedShares,
    IbTree,
    PeriodCap,
    PlanKind,
    RebateBook,
    RebateEngine,
    RebateEntry,
    Rule,
    Schedule,
    ScheduleBook,
    Trigger,
)
from fxcrm_core.kernel import Currency, FixedClock, Money, TradingCalendar, ValidationError
from fxcrm_core.trading import (
    BalanceOperation,
    Deal,
    DealChange,
    FeedItem,
    NewTradingAccount,
    SimulatedTradingServer,
)
from tests.test_rebate_book import repository

T0 = datetime(2026, 3, 9, 8, tzinfo=UTC)  # a Monday
START = T0 - timedelta(days=30)
CAL = TradingCalendar()
USD = Currency.of("USD")


def usd(amount: str | int) -> Money:
    return Money.of(amount, USD)


def schedule(version: int = 1, start: datetime = START, **fields: Any) -> Schedule:
    fields.setdefault("default", Rule(PlanKind.PER_LOT, usd(10)))
    return Schedule("std", version, start, USD, allow_above_revenue=True, **fields)


def engine(
    *versions: Schedule, logins: dict[int, str] | None = None, **options: Any
) -> RebateEngine:
    tree = IbTree()
    tree.add_ib("master", None, START)
    tree.add_ib("sub", "master", START)
    clients = logins or {7: "c-1", 8: "c-2"}
    for client in sorted(set(clients.values())):
        tree.attribute(client, "sub", START)
    book = ScheduleBook()
    for v in versions or (schedule(),):
        book.add(v)
    return RebateEngine(
        tree,
        book,
        FixedShares((Decimal("0.6"), Decimal("0.4"))),
        client_of=lambda server, login: clients.get(login),
        account_group_of=lambda server, login: "std",
        trading_day_of=lambda deal: CAL.trading_day(deal.time),
        **options,
    )


def deal(ticket: int, at: datetime, **fields: Any) -> Deal:
    """A 1-lot closing trade by default (Entry 1 = out); pass Entry=0 for an opening."""
    record: dict[str, Any] = {
        "Deal": ticket, "Login": 7, "Action": 1, "Entry": 1, "Symbol": "EURUSD",
        "Volume": 10_000, "VolumeClosed": 10_000, "PositionID": 100, "Commission": "-7.00",
        "Time": int((at + timedelta(hours=2)).timestamp()),
    }  # fmt: skip
    if fields.get("Entry") == 0:
        record["VolumeClosed"] = 0
    record.update(fields)
    return Deal.from_mt5(record, server="mt5", currency="USD", utc_offset=timedelta(hours=2))


def deposit(ticket: int, at: datetime, amount: str, login: int = 7) -> Deal:
    return deal(ticket, at, Action=2, Entry=0, Symbol="", Volume=0, Login=login, Profit=amount,
                Commission="0")  # fmt: skip


def feed(*deals: Deal | tuple[DealChange, Deal]) -> list[FeedItem]:
    items = []
    for n, d in enumerate(deals, start=1):
        change, one = d if isinstance(d, tuple) else (DealChange.ADDED, d)
        items.append(FeedItem(n, change, one))
    return items


def by_ib(entries: Sequence[RebateEntry], component: str | None = None) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for e in entries:
        if component is None or e.component == component:
            out[e.ib_id] = out.get(e.ib_id, Decimal(0)) + e.amount.amount
    return out


CPA = Rule(PlanKind.CPA, usd(200), min_deposit=usd(500), min_lots=Decimal(2))


# -- CPA ------------------------------------------------------------------------------------
def test_a_cpa_is_paid_once_when_the_first_deposit_and_the_lots_qualify() -> None:
    e = engine(schedule(cpa=CPA, default=None))
    # A $1,000 first deposit (minimum $500), then 1 lot closed: not yet (minimum 2 lots).
    items = feed(deposit(1, T0, "1000.00"), deal(2, T0 + timedelta(hours=1)))
    assert e.process(items[:2]) == []
    # A second closed lot: 2 lots, qualified. The $200 CPA goes to the client's own IB (the
    # default CPA distribution), keyed on the first deposit, explained.
    second = FeedItem(3, DealChange.ADDED, deal(3, T0 + timedelta(hours=2), PositionID=101))
    paid = e.process([second])
    assert [(x.ib_id, x.component, x.ticket, x.amount.amount) for x in paid] == [
        ("sub", "cpa", 1, Decimal(200))
    ]
    assert "first deposit 1000.00 USD (minimum 500.00 USD), 2 lots close" in paid[0].explanation
    # More lots and more deposits change nothing: once per client.
    more_lots = deal(4, T0 + timedelta(hours=3), PositionID=102)
    more_money = deposit(5, T0 + timedelta(hours=4), "5000.00")
    later = [FeedItem(4, DealChange.ADDED, more_lots), FeedItem(5, DealChange.ADDED, more_money)]
    assert e.process(later) == []
    assert e.process([*items, second, *later]) == []


def test_a_cpa_may_count_opened_lots_instead() -> None:
    opened = Rule(PlanKind.CPA, usd(200), min_deposit=usd(500), min_lots=Decimal(2),
                  trigger=Trigger.OPEN)  # fmt: skip
    e = engine(schedule(cpa=opened, default=None))
    # 1.5 lots opened, then 1 lot more: 2.5 lots opened qualify; closing deals count nothing.
    first = deposit(1, T0, "1000.00")
    opening = deal(2, T0 + timedelta(hours=1), Entry=0, Volume=15_000)
    assert e.process(feed(first, opening, deal(3, T0 + timedelta(hours=2), Volume=90_000,
                                               VolumeClosed=90_000))) == []  # fmt: skip
    more = FeedItem(4, DealChange.ADDED, deal(4, T0 + timedelta(hours=3), Entry=0, Volume=10_000,
                                              PositionID=101))  # fmt: skip
    assert by_ib(e.process([more])) == {"sub": Decimal(200)}
    # Deleting the first opening leaves 1 lot opened: reversed.
    undone = e.process([FeedItem(5, DealChange.DELETED, opening)])
    assert [(x.kind, x.amount.amount) for x in undone] == [(EntryKind.REVERSAL, Decimal(-200))]


def test_a_small_first_deposit_never_qualifies_whatever_comes_after() -> None:
    e = engine(schedule(cpa=CPA, default=None))
    items = feed(
        deposit(1, T0, "100.00"),  # below the $500 minimum: this client brings no CPA
        deposit(2, T0 + timedelta(minutes=5), "9000.00"),
        deal(3, T0 + timedelta(hours=1)),
        deal(4, T0 + timedelta(hours=2), PositionID=101),
    )
    assert e.process(items) == []


def test_a_charged_back_deposit_or_deleted_lots_reverse_the_cpa() -> None:
    e = engine(schedule(cpa=CPA, default=None))
    first = deposit(1, T0, "1000.00")
    lots = [deal(2, T0 + timedelta(hours=1)), deal(3, T0 + timedelta(hours=2), PositionID=101)]
    assert by_ib(e.process(feed(first, *lots))) == {"sub": Decimal(200)}
    # A deleted closing deal leaves 1 lot: the client no longer qualifies.
    undone = e.process([FeedItem(4, DealChange.DELETED, lots[1])])
    assert [(x.kind, x.amount.amount) for x in undone] == [(EntryKind.REVERSAL, Decimal(-200))]
    # Trading again qualifies again; then the first deposit is charged back (deleted): the next
    # deposit is now the first, and it is too small.
    again = FeedItem(5, DealChange.ADDED, deal(6, T0 + timedelta(hours=3), PositionID=102))
    assert by_ib(e.process([again])) == {"sub": Decimal(200)}
    small = FeedItem(6, DealChange.ADDED, deposit(7, T0 + timedelta(hours=4), "50.00"))
    chargeback = FeedItem(7, DealChange.DELETED, first)
    assert by_ib(e.process([small, chargeback])) == {"sub": Decimal(-200)}


def test_an_earlier_deposit_arriving_late_moves_the_cpa_to_it() -> None:
    e = engine(schedule(cpa=CPA, default=None))
    paid = e.process(feed(deposit(5, T0, "800.00"), deal(6, T0 + timedelta(hours=1), Volume=20_000,
                                                           VolumeClosed=20_000)))  # fmt: skip
    assert [(x.ticket, x.amount.amount) for x in paid] == [(5, Decimal(200))]
    # The feed delivers an earlier deposit late: it is the first deposit, and it qualifies too.
    late = FeedItem(9, DealChange.ADDED, deposit(4, T0 - timedelta(hours=1), "600.00"))
    moved = e.process([late])
    assert sorted((x.ticket, x.kind, x.amount.amount) for x in moved) == [
        (4, EntryKind.ACCRUAL, Decimal(200)),
        (5, EntryKind.REVERSAL, Decimal(-200)),
    ]
    assert by_ib(list(paid) + moved) == {"sub": Decimal(200)}


def test_a_cpa_can_be_shared_up_the_chain() -> None:
    e = engine(
        schedule(cpa=CPA, default=None),
        cpa_distribution=FixedShares((Decimal("0.75"), Decimal("0.25"))),
    )
    # $200 shared 75% / 25%: the sub IB $150, the master $50.
    items = feed(deposit(1, T0, "500.00"), deal(2, T0 + timedelta(hours=1), Volume=30_000,
                                                VolumeClosed=30_000))  # fmt: skip
    assert by_ib(e.process(items)) == {"sub": Decimal(150), "master": Decimal(50)}


def test_rule_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValidationError, match="minimum first deposit"):
        Rule(PlanKind.CPA, usd(100))
    with pytest.raises(ValidationError, match=r"use Schedule\.cpa"):
        schedule(default=CPA)
    with pytest.raises(ValidationError, match="of kind CPA"):
        schedule(cpa=Rule(PlanKind.PER_LOT, usd(1)))
    with pytest.raises(ValidationError, match="paid on close"):
        Rule(PlanKind.PER_LOT, usd(1), trigger=Trigger.OPEN, min_hold=timedelta(minutes=1))
    with pytest.raises(ValidationError, match="positive"):
        Rule(PlanKind.PER_LOT, usd(1), min_hold=timedelta(0))
    with pytest.raises(ValidationError, match="not negative"):
        PeriodCap(usd(-1))


# -- minimum holding time ---------------------------------------------------------------------
HOLD = Rule(PlanKind.PER_LOT, usd(10), min_hold=timedelta(minutes=2))


def test_positions_held_shorter_than_the_minimum_earn_nothing() -> None:
    e = engine(schedule(default=HOLD))
    quick = feed(deal(1, T0, Entry=0), deal(2, T0 + timedelta(seconds=90)))
    assert e.process(quick) == []  # held 90 s, the minimum is 2 min
    opening = deal(3, T0, Entry=0, PositionID=200)
    closing = deal(4, T0 + timedelta(minutes=5), PositionID=200)
    held = [FeedItem(3, DealChange.ADDED, opening), FeedItem(4, DealChange.ADDED, closing)]
    paid = e.process(held)
    assert by_ib(paid) == {"sub": Decimal(6), "master": Decimal(4)}
    assert "held 0:05:00 (minimum 0:02:00)" in paid[0].explanation


def test_a_close_waits_for_its_opening_deal_then_settles() -> None:
    e = engine(schedule(default=HOLD))
    close = deal(2, T0 + timedelta(minutes=10))
    assert e.process([FeedItem(1, DealChange.ADDED, close)]) == []
    assert e.waiting() == [close]
    # The opening deal arrives: the close settles in the same call, and waits no more.
    settled = e.process([FeedItem(2, DealChange.ADDED, deal(1, T0, Entry=0))])
    assert [(x.ticket, x.amount.amount) for x in settled] == [
        (2, Decimal("4.0")),
        (2, Decimal("6.0")),
    ]
    assert e.waiting() == []
    assert e.process([FeedItem(2, DealChange.ADDED, deal(1, T0, Entry=0))]) == []


def test_a_waiting_close_that_is_deleted_is_never_paid() -> None:
    e = engine(schedule(default=HOLD))
    close = deal(2, T0 + timedelta(minutes=10))
    e.process(feed(close))
    assert e.process([FeedItem(5, DealChange.DELETED, close)]) == []
    assert e.waiting() == []
    assert e.process([FeedItem(6, DealChange.ADDED, deal(1, T0, Entry=0))]) == []


def test_openings_from_before_the_feed_can_be_told() -> None:
    e = engine(schedule(default=HOLD))
    e.positions_opened("mt5", [(100, T0 - timedelta(days=2))])
    assert by_ib(e.process(feed(deal(2, T0)))) == {"sub": Decimal(6), "master": Decimal(4)}
    e.process([FeedItem(9, DealChange.ADDED, deal(3, T0, PositionID=300))])
    with pytest.raises(ValidationError, match="before processing"):
        e.positions_opened("mt5", [(300, T0 - timedelta(days=1))])


# -- caps per period --------------------------------------------------------------------------
def test_a_monthly_cap_cuts_the_excess_and_gives_it_back_when_deals_go() -> None:
    # $10 a lot shared 60/40: each 1-lot deal pays the sub IB $6 and the master $4. A $15
    # monthly cap: after three deals the sub IB has accrued $18, cut by $3; the master, $12.
    e = engine(schedule(period_cap=PeriodCap(usd(15), CapPeriod.MONTH)))
    deals = [deal(n, T0 + timedelta(hours=n), PositionID=100 + n) for n in (1, 2, 3)]
    entries = e.process(feed(*deals))
    cap = [x for x in entries if x.component.startswith("cap:")]
    assert [(x.ib_id, x.component, x.amount.amount) for x in cap] == [
        ("sub", "cap:month:2026-03-01", Decimal(-3))
    ]
    assert "monthly cap 15.00 USD: accrued 18.000 USD, cut 3.000" in cap[0].explanation
    assert by_ib(entries) == {"sub": Decimal(15), "master": Decimal(12)}
    # One deal deleted: $12 accrued, under the cap again, and the cut is reversed.
    back = e.process([FeedItem(9, DealChange.DELETED, deals[0])])
    assert by_ib(entries + back) == {"sub": Decimal(12), "master": Decimal(8)}
    # April is another period.
    april = deal(10, datetime(2026, 4, 7, 9, tzinfo=UTC), PositionID=900)
    assert by_ib(e.process([FeedItem(10, DealChange.ADDED, april)])) == {
        "sub": Decimal(6),
        "master": Decimal(4),
    }


def test_a_new_version_cannot_raise_the_cap_of_a_period_under_way() -> None:
    mid_march = datetime(2026, 3, 16, tzinfo=UTC)
    e = engine(
        schedule(1, period_cap=PeriodCap(usd(10), CapPeriod.MONTH)),
        schedule(2, mid_march, period_cap=PeriodCap(usd(100), CapPeriod.MONTH)),
    )
    later = [deal(n, mid_march + timedelta(days=1, hours=n), PositionID=n) for n in (1, 2, 3)]
    assert by_ib(e.process(feed(*later)))["sub"] == Decimal(10)  # March: the strictest, $10
    april = [deal(n, datetime(2026, 4, 7, n, tzinfo=UTC), PositionID=n) for n in (4, 5, 6)]
    paid = e.process([FeedItem(10 + n, DealChange.ADDED, d) for n, d in enumerate(april)])
    assert by_ib(paid)["sub"] == Decimal(18)  # April: $100, not reached


@settings(max_examples=40, deadline=None)
@given(
    lots=st.lists(st.integers(1, 50), min_size=1, max_size=25),
    days=st.lists(st.integers(0, 40), min_size=25, max_size=25),
    cap=st.integers(0, 400),
    period=st.sampled_from(list(CapPeriod)),
)
def test_an_ib_never_earns_more_than_its_cap_in_any_period(
    lots: list[int], days: list[int], cap: int, period: CapPeriod
) -> None:
    e = engine(schedule(period_cap=PeriodCap(usd(cap), period)))
    deals = [
        deal(n, T0 + timedelta(days=days[n], minutes=n), PositionID=n, Volume=v * 1000,
             VolumeClosed=v * 1000)
        for n, v in enumerate(lots)
    ]  # fmt: skip
    entries = e.process(feed(*deals))
    uncapped: dict[tuple[str, date], Decimal] = {}
    paid: dict[tuple[str, date], Decimal] = {}
    for x in entries:
        start = period.start(x.trading_day)
        if not x.component.startswith("cap:"):
            key = (x.ib_id, start)
            uncapped[key] = uncapped.get(key, Decimal(0)) + x.amount.amount
        paid[(x.ib_id, start)] = paid.get((x.ib_id, start), Decimal(0)) + x.amount.amount
    assert paid == {k: min(v, Decimal(cap)) for k, v in uncapped.items()}


# -- all three together, in any order, and restored from the log -------------------------------
def full_schedule(trigger: Trigger = Trigger.CLOSE) -> Schedule:
    """Every rule on; ``trigger``: which lots the CPA counts."""
    cpa = Rule(PlanKind.CPA, usd(150), min_deposit=usd(1000), min_lots=Decimal("0.5"),
               trigger=trigger)  # fmt: skip
    return schedule(
        default=Rule(PlanKind.PER_LOT, usd(10), min_hold=timedelta(seconds=20)),
        cpa=cpa,
        period_cap=PeriodCap(usd(400), CapPeriod.DAY),
    )


def simulated(seed: int) -> SimulatedTradingServer:
    server = SimulatedTradingServer(seed=seed, clock=FixedClock(T0))
    for n in range(3):
        login = server.create_account(NewTradingAccount("std", 100, "USD", f"c-{n}"))
        amount = usd(50_000 if n else 700)  # c-0's first deposit is below the CPA minimum
        server.balance_operation(login, BalanceOperation.DEPOSIT, amount, comment="d",
                                 idempotency_key=f"d{n}")  # fmt: skip
    return server


LOGINS = {500_000: "c-0", 500_001: "c-1", 500_002: "c-2"}
SIM = simulated(11)
SIM.simulate_trading(300)
SESSION = SIM.deal_feed(limit=100_000)


def totals(
    items: Sequence[FeedItem], trigger: Trigger = Trigger.CLOSE
) -> dict[tuple[str, str], Decimal]:
    e = engine(full_schedule(trigger), logins=LOGINS)
    out: dict[tuple[str, str], Decimal] = {}
    for x in e.process(items):
        key = (x.ib_id, x.component.split(":")[0])
        out[key] = out.get(key, Decimal(0)) + x.amount.amount
    assert e.waiting() == []
    return out


EXPECTED = totals(SESSION)
EXPECTED_BY_TRIGGER = {trigger: totals(SESSION, trigger) for trigger in Trigger}


def test_the_session_exercises_every_rule() -> None:
    assert set(EXPECTED) == {(ib, c) for ib in ("sub", "master") for c in ("rebate", "cap")} | {
        ("sub", "cpa")
    }
    assert EXPECTED[("sub", "cpa")] == Decimal(300)  # c-1 and c-2 qualify, c-0 does not


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    duplicates=st.integers(0, 60),
    trigger=st.sampled_from(list(Trigger)),
)
def test_any_arrival_order_with_duplicates_pays_exactly_the_same(
    seed: int, duplicates: int, trigger: Trigger
) -> None:
    rng = random.Random(seed)
    items = list(SESSION) + [rng.choice(SESSION) for _ in range(duplicates)]
    rng.shuffle(items)
    assert totals(items, trigger) == EXPECTED_BY_TRIGGER[trigger]


def before_restart(seed: int) -> tuple[SimulatedTradingServer, list[FeedItem], list[FeedItem]]:
    """A simulated session's feed so far, split in the items seen before a restart and every
    opening deal of some positions, held back: their closes wait across the restart."""
    sim = simulated(seed)
    sim.simulate_trading(200)
    first = sim.deal_feed(limit=100_000)
    held_back = [i for i in first if i.deal.entry == 0 and i.deal.ticket % 3 == 0]
    return sim, [i for i in first if i not in held_back], held_back


def after_restart(
    sim: SimulatedTradingServer, seen: int, held_back: list[FeedItem]
) -> list[FeedItem]:
    """More trading after the restart, the held-back openings arriving late among it."""
    sim.simulate_trading(150)
    rest = sim.deal_feed(after_cursor=seen, limit=100_000)
    late = [FeedItem(i.cursor + 100_000, i.change, i.deal) for i in held_back] + rest
    return sorted(late, key=lambda i: i.cursor)


@pytest.mark.parametrize("trigger", list(Trigger))
def test_a_restored_engine_resumes_with_what_later_deals_depend_on(
    tmp_path: Path, trigger: Trigger
) -> None:
    sim, early, held_back = before_restart(12)
    live = engine(full_schedule(trigger), logins=LOGINS)
    book = RebateBook(repository(tmp_path / "r.sqlite"), live)
    recorded: list[RebateEntry] = []
    for start in range(0, len(early), 25):
        recorded += book.process(sim.name, early[start : start + 25])
    assert live.waiting()

    restored = engine(full_schedule(trigger), logins=LOGINS)
    again = RebateBook(repository(tmp_path / "r.sqlite"), restored)
    assert again.restore(again.repository.store, again.repository.codec) == recorded
    assert restored.waiting() == live.waiting()
    assert restored.totals() == live.totals()

    late = after_restart(sim, len(early) + len(held_back), held_back)
    again.process(sim.name, late)
    live.process(late)
    assert restored.waiting() == live.waiting() == []
    assert restored.totals() == live.totals()


def _legacy_fact(deal: Deal, deleted: bool) -> str:
    """A deal's fact in the form books kept before the short ``t|`` and ``d|`` forms."""
    micro = timedelta(microseconds=1)
    return (
        f"{deal.ticket}|{deal.login}|{int(deal.action)}|{int(deal.entry)}|{deal.position_id}|"
        f"{deal.volume}|{deal.volume_closed}|{(deal.time - EPOCH) // micro}|"
        f"{deal.profit.amount}|{deal.profit.currency.code}|{int(deleted)}|"
        f"{deal.server_offset // micro}"
    )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("trigger", list(Trigger))
def test_facts_in_the_form_of_earlier_books_restore_the_same_state(trigger: Trigger) -> None:
    sim, early, held_back = before_restart(13)
    live = engine(full_schedule(trigger), logins=LOGINS)
    entries = live.process(early)
    assert live.waiting()
    learned = [i for i in early if i.deal.action.is_trade or i.deal.action == 2]  # 2: balance
    legacy = tuple(_legacy_fact(i.deal, i.change is DealChange.DELETED) for i in learned)
    restored = engine(full_schedule(trigger), logins=LOGINS)
    cursors = [(i.deal.ticket, i.cursor) for i in early]
    restored.restore(entries, sim.name, cursors, EngineChanges(legacy, tuple(live.waiting())))
    assert restored.waiting() == live.waiting()

    late = after_restart(sim, len(early) + len(held_back), held_back)
    assert sorted(restored.process(late), key=_key) == sorted(live.process(late), key=_key)
    assert restored.waiting() == live.waiting() == []
    assert restored.totals() == live.totals()


def _key(entry: RebateEntry) -> tuple[str, int, str, str, str, str]:
    return (*entry.key, str(entry.amount), entry.explanation)
