"""The rebate book: entries kept in the event log; a restored engine gives the same statements
and resumes exactly where the first one stopped."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.commissions import (
    REBATE_EVENTS,
    CapPeriod,
    EngineChanges,
    EntryKind,
    FixedShares,
    IbTree,
    PeriodCap,
    PlanKind,
    RebateBook,
    RebateEngine,
    RebateEntriesRecorded,
    RebateEntry,
    Rule,
    Schedule,
    ScheduleBook,
    build_statement,
)
from fxcrm_core.commissions.engine import RebateEntries, TradeFact
from fxcrm_core.events import EventCodec, EventMetadata, EventRegistry, Repository, StoredEvent
from fxcrm_core.kernel import (
    CodecError,
    Currency,
    FixedClock,
    Money,
    RateTable,
    TradingCalendar,
    UnroundedMoney,
    ValidationError,
)
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import (
    BalanceOperation,
    DealChange,
    DealEntry,
    FeedItem,
    NewTradingAccount,
    SimulatedTradingServer,
)
from tests.test_rebate_engine import LOGINS, T0, make, usd

USD = Currency.of("USD")
NAMES = {"c-0": "Ana Lima", "c-1": "Bo Chen", "c-2": "Cy Diaz"}


def repository(path: Path) -> Repository:
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    return Repository(SqliteEventStore(path, synchronous="NORMAL"), EventCodec(registry))


def server() -> SimulatedTradingServer:
    s = SimulatedTradingServer(seed=9, clock=FixedClock(T0))
    for n in range(3):
        login = s.create_account(NewTradingAccount("std", 100, "USD", f"c-{n}"))
        s.balance_operation(login, BalanceOperation.DEPOSIT, usd(50_000), comment="d",
                            idempotency_key=f"d{n}")  # fmt: skip
    return s


def statement(entries: list[RebateEntry], ib: str) -> tuple[object, object]:
    year = (date(2026, 1, 1), date(2026, 12, 31))
    s = build_statement(
        entries, ib, *year, currency=Currency.of("USD"), rates=RateTable(), client_names=NAMES
    )
    return s.lines, s.total


def test_replay_from_events_equals_the_live_statements(tmp_path: Path) -> None:
    sim = server()
    sim.simulate_trading(250)
    feed = sim.deal_feed(limit=100_000)
    live_engine, _ = make(logins=LOGINS)
    book = RebateBook(repository(tmp_path / "r.sqlite"), live_engine)
    live: list[RebateEntry] = []
    for start in range(0, len(feed), 40):
        live += book.process(sim.name, feed[start : start + 40])
    assert book.process(sim.name, feed) == []  # the cursor is stored: nothing twice
    assert live

    restored_engine, _ = make(logins=LOGINS)
    restored = RebateBook(repository(tmp_path / "r.sqlite"), restored_engine)
    replayed = restored.restore(restored.repository.store, restored.repository.codec)
    assert replayed == live
    for ib in ("sub", "master"):
        assert statement(replayed, ib) == statement(live, ib)
    assert restored_engine.totals() == live_engine.totals()

    # Both carry on with more trading: the restored one pays exactly what the first would.
    sim.simulate_trading(120)
    more = sim.deal_feed(limit=100_000)
    continued = restored.process(sim.name, more)
    uninterrupted_engine, _ = make(logins=LOGINS)
    uninterrupted_engine.process(more)
    assert continued
    assert restored_engine.totals() == uninterrupted_engine.totals()


def test_a_malformed_entry_row_is_a_typed_error_that_does_not_echo_it() -> None:
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    codec = EventCodec(registry)
    payload = b'{"server":"mt5","upto_cursor":1,"entries":[["accrual","mt5","x"]],"cursors":[]}'
    with pytest.raises(CodecError) as raised:
        codec.decode_event("rebatefeed-mt5", "RebateEntriesRecorded", payload)
    assert "accrual" not in str(raised.value)


@pytest.mark.parametrize("ib_id", ["ib-7", "ib|7"])
def test_entries_survive_the_log_whatever_their_text(ib_id: str) -> None:
    # Entries are stored as '|'-joined lines; text holding a '|' is stored field by field.
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    codec = EventCodec(registry)
    entry = RebateEntry(
        kind=EntryKind.REVERSAL, server="mt5", ticket=42, ib_id=ib_id, component="rebate",
        amount=UnroundedMoney(Decimal("-1.2345"), USD), level=2, client_id="c-1",
        symbol="XAUUSD.m", lots=Decimal("0.25"), trading_day=date(2026, 3, 9),
        explanation="schedule s v1; level 2: x", direct_ib_id="sub",
    )  # fmt: skip
    event = RebateEntriesRecorded("mt5", 9, (entry,), ((42, 9),))
    stored = codec.encode("rebatefeed-mt5", event, EventMetadata("system:test"))
    assert codec.decode_event("rebatefeed-mt5", stored.event_type, stored.data) == event
    assert (b'"entries":["' in stored.data) is ("|" not in ib_id)


def test_a_line_with_too_few_fields_is_a_typed_error() -> None:
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    payload = b'{"server":"mt5","upto_cursor":1,"entries":["accrual|mt5|1"],"cursors":[]}'
    with pytest.raises(CodecError):
        EventCodec(registry).decode_event("rebatefeed-mt5", "RebateEntriesRecorded", payload)


def test_an_entry_round_trips_the_log_and_refuses_control_characters_in_ids() -> None:
    entry = RebateEntry(
        kind=EntryKind.ACCRUAL, server="mt5", ticket=7, ib_id="ib-1", component="rebate",
        amount=UnroundedMoney(Decimal("0.1"), USD), level=1, client_id="c-1", symbol="EURUSD",
        lots=Decimal(1), trading_day=date(2026, 3, 9), explanation="why\x1fnot",
        direct_ib_id="ib-1",
    )  # fmt: skip
    # An explanation's control character becomes a space; everything else is kept.
    event = RebateEntriesRecorded("mt5", 7, (entry,), ((7, 7),))
    stored = CODEC.encode("rebatefeed-mt5", event, EventMetadata("system:test"))
    decoded = CODEC.decode_event("rebatefeed-mt5", stored.event_type, stored.data)
    assert isinstance(decoded, RebateEntriesRecorded)
    assert list(decoded.entries) == [attrs.evolve(entry, explanation="why not")]
    with pytest.raises(ValidationError, match="control characters"):
        RebateEntriesRecorded("mt5", 7, (attrs.evolve(entry, ib_id="ib\x1f1"),), ())


def test_entries_as_the_engine_keeps_them_read_as_the_objects_they_stand_for() -> None:
    sim = server()
    sim.simulate_trading(80)
    engine, _ = make(logins=LOGINS)
    entries = engine.process(sim.deal_feed(limit=100_000))
    assert entries
    objects = [attrs.evolve(entry) for entry in entries]  # each made from its compact form
    assert entries == objects
    assert RebateEntriesRecorded("mt5", 1, tuple(objects), ()).entries == entries
    assert entries[1:3] == objects[1:3]
    sums: dict[tuple[str, date, str], Decimal] = {}
    for e in objects:
        key = (e.ib_id, e.trading_day, e.amount.currency.code)
        sums[key] = sums.get(key, Decimal(0)) + e.amount.amount
    assert entries.sums() == sums


def test_restoring_twice_or_after_processing_counts_nothing_twice(tmp_path: Path) -> None:
    sim = server()
    sim.simulate_trading(150)
    feed = sim.deal_feed(limit=100_000)
    first_engine, _ = make(logins=LOGINS)
    book = RebateBook(repository(tmp_path / "r.sqlite"), first_engine)
    live = book.process(sim.name, feed[:70]) + book.process(sim.name, feed[70:])
    totals = first_engine.totals()
    assert book.restore(book.repository.store, book.repository.codec) == live
    assert first_engine.totals() == totals  # the engine held every batch already

    engine, _ = make(logins=LOGINS)
    again = RebateBook(repository(tmp_path / "r.sqlite"), engine)
    for _ in range(2):
        assert again.restore(again.repository.store, again.repository.codec) == live
        assert engine.totals() == totals


# -- an engine restored after any batch decides as the live one -----------------------------------
START = T0 - timedelta(days=30)
PER_LOT = Rule(PlanKind.PER_LOT, usd(10))  # above the $3.50 a lot commission: revenue-limited
HOLD = attrs.evolve(PER_LOT, min_hold=timedelta(seconds=20))
CPA = Rule(PlanKind.CPA, usd(150), min_deposit=usd(1000), min_lots=Decimal("0.5"))
CAP = PeriodCap(usd(400), CapPeriod.DAY)
SCHEDULES: dict[str, Callable[[], Schedule]] = {
    "revenue-limited": lambda: Schedule("std", 1, START, USD, default=PER_LOT),
    # A minimum holding time without a CPA: closing deals leave no facts, only their cursors.
    "holding-time": lambda: Schedule("std", 1, START, USD, default=HOLD),
    "every-rule": lambda: Schedule("std", 1, START, USD, default=HOLD, cpa=CPA, period_cap=CAP),
}


def rule_engine(kind: str, logins: dict[int, str] = LOGINS) -> RebateEngine:
    tree = IbTree()
    tree.add_ib("master", None, START)
    tree.add_ib("sub", "master", START)
    for client in sorted(set(LOGINS.values())):
        tree.attribute(client, "sub", START)
    book = ScheduleBook()
    book.add(SCHEDULES[kind]())
    calendar = TradingCalendar()
    return RebateEngine(
        tree, book, FixedShares((Decimal("0.6"), Decimal("0.4"))),
        client_of=lambda server, login: logins.get(login),
        account_group_of=lambda server, login: "std",
        trading_day_of=lambda deal: calendar.trading_day(deal.time),
    )  # fmt: skip


def troubled_feed(seed: int) -> list[FeedItem]:
    """A session whose later deals depend on earlier ones in every way: close-by deals that
    earn nothing (no commission, so no revenue) until a correction gives them some, updates and
    deletes, and the openings of a third of the positions arriving last, so their closes wait
    across batches, some of them updated or deleted while they wait."""
    sim = SimulatedTradingServer(seed=seed, clock=FixedClock(T0))
    for n in range(3):
        login = sim.create_account(NewTradingAccount("std", 100, "USD", f"c-{n}"))
        sim.balance_operation(login, BalanceOperation.DEPOSIT, usd(50_000 if n else 700),
                              comment="d", idempotency_key=f"d{n}")  # fmt: skip
    sim.simulate_trading(220)
    items = sim.deal_feed(limit=100_000)
    late = [i for i in items if i.deal.entry is DealEntry.IN and i.deal.position_id % 3 == 0]
    held = {i.deal.position_id for i in late}
    feed = [i for i in items if i not in late]
    cursor = items[-1].cursor
    waiting = [i.deal for i in feed if i.deal.entry.closes and i.deal.position_id in held]
    unpaid = [i.deal for i in feed if i.deal.action.is_trade and not i.deal.commission.amount]
    fixes = [(DealChange.UPDATED, attrs.evolve(d, commission=Money.of("-0.50", "USD")))
             for d in unpaid[::2]]  # fmt: skip
    fixes += [(DealChange.DELETED, d) for d in waiting[::4]]
    fixes += [
        (DealChange.UPDATED, attrs.evolve(d, profit=d.profit + usd(1))) for d in waiting[1::4]
    ]
    for n, (change, deal) in enumerate(fixes + [(i.change, i.deal) for i in late], start=1):
        feed.append(FeedItem(cursor + n, change, deal))
    return feed


FEEDS = {seed: troubled_feed(seed) for seed in (11, 12)}
CODEC = EventCodec(EventRegistry())
CODEC.registry.register_all(REBATE_EVENTS)


def test_the_troubled_feed_has_what_restoring_must_get_right() -> None:
    for feed in FEEDS.values():
        engine = rule_engine("holding-time")
        first = len(feed) // 2
        engine.process(feed[:first])
        waiting = {d.ticket for d in engine.waiting()}
        later: dict[DealChange, set[int]] = {change: set() for change in DealChange}
        for item in feed[first:]:
            later[item.change].add(item.deal.ticket)
        assert waiting & later[DealChange.DELETED]
        assert waiting & later[DealChange.UPDATED]
        unpaid = {i.deal.ticket for i in feed[:first] if i.deal.entry is DealEntry.OUT_BY}
        assert unpaid & later[DealChange.UPDATED]  # a deal that earned nothing earns later


Batch = tuple[RebateEntries, RebateEntriesRecorded]


def process_live(engine: RebateEngine, batches: list[list[FeedItem]]) -> list[Batch]:
    """Each batch's entries, and the event a rebate book records for it (through the codec)."""
    out = []
    for batch in batches:
        entries = engine.process(batch)
        changes = engine.take_changes()
        event = RebateEntriesRecorded(
            "sim-mt5", batch[-1].cursor, tuple(entries),
            tuple((i.deal.ticket, i.cursor) for i in batch), changes.facts, changes.parked,
        )  # fmt: skip
        stored = CODEC.encode("rebatefeed-sim-mt5", event, EventMetadata("system:test"))
        decoded = CODEC.decode_event("rebatefeed-sim-mt5", stored.event_type, stored.data)
        assert isinstance(decoded, RebateEntriesRecorded)
        out.append((entries, decoded))
    return out


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(sorted(SCHEDULES)),
    seed=st.sampled_from(sorted(FEEDS)),
    cuts=st.lists(st.integers(1, 399), max_size=6, unique=True),
)
def test_an_engine_restored_after_any_batch_decides_as_the_live_one(
    kind: str, seed: int, cuts: list[int]
) -> None:
    feed = FEEDS[seed]
    bounds = [0, *sorted(c for c in cuts if c < len(feed)), len(feed)]
    batches = [feed[a:b] for a, b in itertools.pairwise(bounds)]
    live = rule_engine(kind)
    recorded = process_live(live, batches)
    for restart in range(1, len(batches)):
        restored = rule_engine(kind)
        for _, event in recorded[:restart]:
            changes = EngineChanges(event.facts, event.parked)
            restored.restore(event.entries, event.server, event.cursors, changes)
        # From here on the restored engine pays exactly what the live one paid, entry by entry
        # (kinds included: an adjustment stays an adjustment), and ends in the same state.
        again = process_live(restored, batches[restart:])
        assert [entries for entries, _ in again] == [entries for entries, _ in recorded[restart:]]
        assert [e for _, e in again] == [e for _, e in recorded[restart:]]
        assert restored.waiting() == live.waiting()
        assert restored.totals() == live.totals()


def test_lots_traded_before_the_login_had_a_client_count_for_nobody_once_restored() -> None:
    sim = SimulatedTradingServer(seed=3, clock=FixedClock(T0))
    login = sim.create_account(NewTradingAccount("std", 100, "USD", "c-1"))
    sim.balance_operation(login, BalanceOperation.DEPOSIT, usd(50_000), comment="d",
                          idempotency_key="d0")  # fmt: skip
    sim.simulate_trading(60)
    feed = sim.deal_feed(limit=100_000)
    logins: dict[int, str] = {}  # the login is not linked to its client yet
    live = rule_engine("every-rule", logins)
    ((before, event),) = process_live(live, [feed])
    assert before == []
    assert any(isinstance(f, TradeFact) for f in event.facts)
    logins[login] = "c-1"  # linked now, before a restore asks
    restored = rule_engine("every-rule", logins)
    restored.restore(event.entries, event.server, event.cursors, EngineChanges(event.facts))
    # Its first deposit the engines see qualifies; the lots traded before the link never
    # counted for the live engine, so they do not for the restored one: no CPA for either.
    sim.balance_operation(login, BalanceOperation.DEPOSIT, usd(5_000), comment="d",
                          idempotency_key="d1")  # fmt: skip
    deposit = sim.deal_feed(after_cursor=feed[-1].cursor)
    ((live_after, _),) = process_live(live, [deposit])
    ((restored_after, _),) = process_live(restored, [deposit])
    assert restored_after == live_after == []
    # Lots traded from now on count for both alike.
    sim.simulate_trading(40)
    more = sim.deal_feed(after_cursor=deposit[-1].cursor, limit=100_000)
    ((live_more, _),) = process_live(live, [more])
    ((restored_more, _),) = process_live(restored, [more])
    assert restored_more == live_more
    assert "cpa" in {e.component for e in live_more}


class NoGlobalReads(SqliteEventStore):
    """A store that refuses to read the whole log."""

    def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        raise AssertionError("the rebate book read the whole log")


def test_a_restore_reads_the_books_own_streams_never_the_whole_log(tmp_path: Path) -> None:
    sim = server()
    sim.simulate_trading(60)
    feed = sim.deal_feed(limit=100_000)
    path = tmp_path / "r.sqlite"
    first, _ = make(logins=LOGINS)
    book = RebateBook(repository(path), first)
    other = [  # the rest of the feed as another server's deals
        FeedItem(i.cursor, i.change, attrs.evolve(i.deal, server="other-mt5")) for i in feed[30:]
    ]
    live = list(book.process(sim.name, feed[:30])) + list(book.process("other-mt5", other))
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    strict = Repository(NoGlobalReads(path), EventCodec(registry))
    engine, _ = make(logins=LOGINS)
    again = RebateBook(strict, engine)  # the servers come from the book's own list
    assert sorted(again.restore(), key=repr) == sorted(live, key=repr)
    assert engine.totals() == first.totals()
    recorded = RebateBook.recorded(strict.store, strict.codec)
    assert {e.server for e in recorded} == {sim.name, "other-mt5"}
    with pytest.raises(ValidationError):
        again.restore(repository(tmp_path / "elsewhere.sqlite").store)
