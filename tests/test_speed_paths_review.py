"""A review of the private speed paths (the codec's reuse of a written event, a batch's kept
sums, the tree's cached client chains): each answers what a fresh process reading the log
answers, under threads, odd values and any order of changes."""

from __future__ import annotations

import sys
import tempfile
import threading
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.commissions import (
    PAYOUT_EVENTS,
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
    accrual_policy,
)
from fxcrm_core.commissions._rows import from_lines, lines, sums
from fxcrm_core.commissions.book import RebateEntriesRecorded
from fxcrm_core.commissions.payouts import JOURNAL_ID, AccrualJournal, RebatesJournaled
from fxcrm_core.events import (
    POLICY_EVENTS,
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventRegistry,
    PolicyRunner,
    Repository,
)
from fxcrm_core.kernel import Currency, Money, TradingCalendar
from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import Deal, DealChange, FeedItem

T0 = datetime(2026, 3, 9, 8, tzinfo=UTC)
META = EventMetadata("tester")
BIG = "x" * 70_000
PLUS3 = timezone(timedelta(hours=3))


@attrs.frozen
class Reused(DomainEvent):
    text: str
    __reuse_decoded__ = True


def _codec() -> EventCodec:
    registry = EventRegistry()
    registry.register(Reused)
    return EventCodec(registry)


# -- the codec under threads -----------------------------------------------------------------
class _Switching(str):
    """A stream id whose comparison lets another writer in (as a thread switch would)."""

    codec: EventCodec | None = None

    def __eq__(self, other: object) -> bool:
        if self.codec is not None:
            codec, self.codec = self.codec, None
            codec.encode("other", Reused(BIG + "!"), META)
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_a_write_landing_while_a_reader_looks_for_its_bytes_is_no_crash() -> None:
    codec = _codec()
    stored = codec.encode("s-1", Reused(BIG), META)
    codec.encode("s-2", Reused(BIG), META)  # the same bytes on another stream
    reader = _Switching("s-1")
    reader.codec = codec  # a write lands while the reader compares the stream ids
    back = codec.decode_event(reader, stored.event_type, stored.data)
    assert back == Reused(BIG)


def test_threads_writing_and_reading_big_events_on_one_codec_never_crash() -> None:
    codec = _codec()
    stored = codec.encode("s-0", Reused(BIG), META)
    other = Reused(BIG[:-1] + "o")
    errors: list[BaseException] = []
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            codec.encode(f"w-{n % 3}", other, META)
            n += 1

    def read() -> None:
        try:
            for _ in range(3_000):
                # a stream no writer uses: every kept entry is compared
                assert codec.decode_event("r", stored.event_type, stored.data) == Reused(BIG)
        except BaseException as exc:  # (what a host would see)
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        writer = threading.Thread(target=write)
        readers = [threading.Thread(target=read) for _ in range(2)]
        writer.start()
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        stop.set()
        writer.join()
    finally:
        sys.setswitchinterval(interval)
    assert [type(e).__name__ for e in errors] == []


# -- the codec: a reused event is what a fresh process decodes --------------------------------
def _engine(
    *, horizon: timedelta | None = None, cap: str | None = None, cpa: bool = False
) -> RebateEngine:
    usd = Currency.of("USD")
    tree = IbTree()
    tree.add_ib("m", None, T0 - timedelta(days=30))
    tree.add_ib("s", "m", T0 - timedelta(days=30))
    tree.attribute("c1", "s", T0 - timedelta(days=30))
    tree.attribute("c2", "m", T0 - timedelta(days=30))
    tree.reparent("s", None, T0 + timedelta(days=2))  # (a deal at that very instant too)
    book = ScheduleBook()
    book.add(
        Schedule("std", 1, T0 - timedelta(days=30), usd,
                 default=Rule(PlanKind.PER_LOT, Money.of("3.00", usd)),
                 by_symbol={"GBPUSD": Rule(PlanKind.PER_LOT, Money.of("5.00", usd),
                                           min_hold=timedelta(minutes=30))},
                 cpa=None if not cpa else Rule(PlanKind.CPA, Money.of("50.00", usd),
                                               min_deposit=Money.of("100.00", usd),
                                               min_lots=Decimal("0.5")),
                 period_cap=None if cap is None else PeriodCap(Money.of(cap, usd), CapPeriod.DAY))
    )  # fmt: skip
    calendar = TradingCalendar()
    return RebateEngine(
        tree, book, FixedShares((Decimal("0.7"), Decimal("0.3"))),
        client_of=lambda server, login: {1: "c1", 2: "c2"}.get(login),
        account_group_of=lambda server, login: "std",
        trading_day_of=lambda deal: calendar.trading_day(deal.time),
        horizon=horizon,
    )  # fmt: skip


def _deal(
    ticket: int,
    at: datetime,
    units: int = 10_000,
    login: int = 1,
    *,
    deposit: int = 0,
    symbol: str = "EURUSD",
    entry: int = 1,
    position: int = 0,
) -> Deal:
    record: dict[str, Any] = {
        "Deal": ticket, "Login": login, "Action": 2 if deposit else 1,
        "Entry": 0 if deposit else entry, "PositionID": position,
        "Symbol": "" if deposit else symbol, "Volume": units, "VolumeClosed": units,
        "Commission": "-9.99", "Profit": str(deposit),
        "Time": int(at.timestamp()),
    }  # fmt: skip
    return Deal.from_mt5(record, server="mt5", currency="USD", utc_offset=timedelta(0))


def _big_entries() -> Any:
    engine = _engine()
    items = [FeedItem(n, DealChange.UPDATED, _deal(n, T0 + timedelta(minutes=n)))
             for n in range(1, 400)]  # fmt: skip
    return engine.process(items)


def _registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    return registry


def test_a_reused_batch_shows_its_parked_deals_as_a_fresh_process_reads_them() -> None:
    entries = _big_entries()
    local = attrs.evolve(_deal(9_999, T0), time=T0.astimezone(PLUS3))
    event = RebateEntriesRecorded("mt5", 1, entries, ((9_999, 1),), parked=(local,))
    codec = EventCodec(_registry())
    stored = codec.encode("rebatefeed-mt5", event, META)
    assert len(stored.data) >= 1 << 16
    live = codec.decode_event("rebatefeed-mt5", stored.event_type, stored.data)
    fresh = EventCodec(_registry()).decode_event("rebatefeed-mt5", stored.event_type, stored.data)
    assert isinstance(live, RebateEntriesRecorded)
    assert isinstance(fresh, RebateEntriesRecorded)
    assert live.parked[0].time.isoformat() == fresh.parked[0].time.isoformat()


def test_late_corrections_read_alike_in_the_live_book_and_after_a_restart() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "book.sqlite"
        store = SqliteEventStore(path)
        live = RebateBook(Repository(store, EventCodec(_registry())),
                          _engine(horizon=timedelta(days=1)))  # fmt: skip
        later = T0 + timedelta(days=10)
        live.process("mt5", [FeedItem(1, DealChange.UPDATED, _deal(1, later))])
        late = attrs.evolve(_deal(2, T0), time=T0.astimezone(PLUS3))
        items = [FeedItem(2, DealChange.UPDATED, late)]
        items += [FeedItem(n, DealChange.UPDATED, _deal(n, later + timedelta(minutes=n)))
                  for n in range(3, 900)]  # fmt: skip
        live.process("mt5", items)
        assert max(len(s.data) for s in store.read_stream("rebatefeed-mt5")) >= 1 << 16
        seen = [c.deal.time.isoformat() for c in live.late_corrections()]
        assert len(seen) == 1
        store2 = SqliteEventStore(path)
        restarted = RebateBook(Repository(store2, EventCodec(_registry())),
                               _engine(horizon=timedelta(days=1)))  # fmt: skip
        again = [c.deal.time.isoformat() for c in restarted.late_corrections()]
        store.close()
        store2.close()
        assert seen == again


def test_a_reused_event_cannot_be_changed_through_its_sums() -> None:
    entries = _big_entries()
    event = RebateEntriesRecorded("mt5", 1, entries, ())
    codec = EventCodec(_registry())
    stored = codec.encode("rebatefeed-mt5", event, META)
    live = codec.decode_event("rebatefeed-mt5", stored.event_type, stored.data)
    assert isinstance(live, RebateEntriesRecorded)
    before = live.entries.sums()
    got = live.entries.sums()
    for key in got:
        got[key] += Decimal(1000)
    got[("intruder", date(2026, 1, 1), "USD")] = Decimal(1)
    assert live.entries.sums() == before == sums(lines(live.entries))


# -- the sums kept with the entries ------------------------------------------------------------
def test_kept_sums_are_the_lines_sums_whatever_the_caller_does_with_its_fold() -> None:
    entries = _big_entries()
    text = lines(entries)
    folded: dict[tuple[str, str, str], Decimal] = {}
    for line in text:
        parts = line.split("\x1f")
        key = (parts[3], parts[11], parts[6])
        folded[key] = folded.get(key, Decimal(0)) + Decimal(parts[5])
    kept = from_lines(list(text), folded)
    folded.clear()  # the caller reuses its dict
    assert kept.sums() == sums(text)
    assert kept == entries


# -- the tree: every order of restored changes, boundaries, None, copies -----------------------
IBS = ("m1", "m2", "a", "b")
CLIENTS = ("x", "y")
_at = st.integers(0, 12)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("attr"), st.sampled_from(CLIENTS), st.sampled_from((*IBS, None)), _at),
        st.tuples(st.just("parent"), st.sampled_from(IBS[2:]), st.sampled_from((*IBS, None)), _at),
        st.tuples(st.just("copy"), st.just(""), st.just(None), _at),
        st.tuples(st.just("ask"), st.sampled_from(CLIENTS), st.just(None), st.integers(-1, 14)),
    ),
    max_size=40,
)


def _plain(tree: IbTree, client: str, at: datetime) -> Any:
    try:
        ib = tree.ib_of(client, at)
        return None if ib is None else tuple(tree.chain(ib, at))
    except FxCrmError as exc:
        return type(exc)


def _cached(tree: IbTree, client: str, at: datetime) -> Any:
    try:
        return tree.client_chain(client, at)
    except FxCrmError as exc:
        return type(exc)


@settings(max_examples=300, deadline=None)
@given(steps, st.booleans())
def test_cached_chains_hold_for_restored_logs_in_any_order_and_at_every_boundary(
    changes: list[tuple[str, str, str | None, int]], local_times: bool
) -> None:
    tree = IbTree(max_depth=3)
    tree.restore_ib("m1", None, T0)
    tree.restore_ib("m2", None, T0 + timedelta(hours=2))
    tree.restore_ib("a", "m1", T0 + timedelta(hours=1))
    tree.restore_ib("b", "a", T0 + timedelta(hours=3))
    trees = [tree]
    for kind, who, target, hours in changes:
        at = T0 + timedelta(hours=hours)
        if local_times:
            at = at.astimezone(PLUS3)
        if kind == "copy":
            trees.append(trees[-1].copy())
            continue
        for t in trees:
            if kind == "ask":
                for probe in (at, at - timedelta(microseconds=1), at + timedelta(microseconds=1)):
                    assert _cached(t, who, probe) == _plain(t, who, probe)
                continue
            try:  # restored facts: no checks of the rules, only time order per key
                if kind == "attr":
                    t.restore_attribution(who, target, at)
                else:
                    t.restore_parent(who, target, at)
            except FxCrmError:
                continue
        for t in trees:  # after every change, at every change's instant and around it
            for client in CLIENTS:
                for h in range(-1, 14):
                    probe = T0 + timedelta(hours=h)
                    for p in (probe, probe - timedelta(microseconds=1)):
                        assert _cached(t, client, p) == _plain(t, client, p)


# -- parity: the accrual run inline on reused batches, and a fresh process reading the log ------
def _all_registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register_all((*REBATE_EVENTS, *POLICY_EVENTS, *PAYOUT_EVENTS))
    return registry


batches = st.lists(
    st.tuples(
        st.integers(150, 450),  # deals (most batches are big enough to be reused)
        st.integers(-3, 12),  # their trading day, from T0 (a horizon refuses the oldest)
        st.sampled_from([1, 2, 3]),  # a login (3: no client)
        st.booleans(),  # deleted, or updated
        st.integers(0, 5),  # how far the tickets repeat an earlier batch's
    ),
    min_size=1,
    max_size=4,
)


assume_reused: list[bool] = []
seen_parked: list[bool] = []


@settings(max_examples=20, deadline=None)
@given(batches, st.sampled_from([None, timedelta(days=2)]), st.sampled_from([None, "40.00"]))
def test_the_accrual_journal_written_live_is_what_a_fresh_process_works_out(
    plan: list[tuple[int, int, int, bool, int]], horizon: timedelta | None, cap: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "book.sqlite"
        store = SqliteEventStore(path)
        repo = Repository(store, EventCodec(_all_registry()))
        book = RebateBook(repo, _engine(horizon=horizon, cap=cap, cpa=True))
        runner = PolicyRunner(repo, [accrual_policy()])
        cursor = 0
        opens: list[tuple[int, datetime]] = []  # closes parked: their openings come next batch
        for count, day, login, deleted, back in plan:
            items = []
            for position, closed_at in opens:
                cursor += 1
                opening = _deal(50_000_000 + position, closed_at - timedelta(hours=1), 10_000,
                                login, symbol="GBPUSD", entry=0, position=position)  # fmt: skip
                items.append(FeedItem(cursor, DealChange.UPDATED, opening))
            opens = []
            base = max(1, cursor - back * 100)
            for n in range(count):
                cursor += 1
                change = DealChange.DELETED if deleted and n % 7 == 0 else DealChange.UPDATED
                at = T0 + timedelta(days=day, minutes=n)
                deposit = 500 if n % 50 == 0 else 0
                if n % 10 == 3:  # a close held long enough, whose opening is not known yet
                    opens.append((base + n, at))
                    deal = _deal(base + n, at, 10_000, login, symbol="GBPUSD", position=base + n)
                else:
                    deal = _deal(base + n, at, 10_000 + n, login, deposit=deposit)
                items.append(FeedItem(cursor, change, deal))
            book.process("mt5", items)
            runner.run()
        store.close()
        # another process: fresh objects on the same file
        fresh_store = SqliteEventStore(path)
        codec = EventCodec(_all_registry())
        expected = []
        journaled = []
        big = False
        for s in fresh_store.read_stream("rebatefeed-mt5"):
            big = big or len(s.data) >= 1 << 16
            event = codec.decode_event(s.stream_id, s.event_type, s.data)
            assert isinstance(event, RebateEntriesRecorded)
            live = repo.codec.decode_event(s.stream_id, s.event_type, s.data)  # maybe reused
            assert live == event
            assert repr(live) == repr(event)
            assert list(live.facts) == list(event.facts)
            seen_parked.append(bool(event.parked))
            got = event.entries.sums().items()
            rows = tuple(sorted((ib, day, code, v) for (ib, day, code), v in got if v))
            if rows:
                expected.append(rows)
        for s in fresh_store.read_stream(AccrualJournal.stream_id_for(JOURNAL_ID)):
            line = codec.decode_event(s.stream_id, s.event_type, s.data)
            assert isinstance(line, RebatesJournaled)
            journaled.append(line.rows)
        fresh_store.close()
        assume_reused.append(big)
        assert journaled == expected
        assert [[str(v) for *_, v in r] for r in journaled] == [
            [str(v) for *_, v in r] for r in expected
        ]  # (the very text, 0.10 not 0.1)


def test_the_parity_runs_above_did_take_reused_batches() -> None:
    # (runs after the parity law in this file: some of its examples were big enough)
    assert any(assume_reused)
    assert any(seen_parked)
