"""A second review of the private speed paths: the FixedShares fast path's lines due (a list in
key order with each line's IB), a trade deal's fact kept as its stored row, and the codec's
per-type memory of the big events it wrote. Each must answer what the general path, a fresh
process reading the log and the code before them answer, byte for byte."""

from __future__ import annotations

import hashlib
import sys
import tempfile
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
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
    Revenue,
    Rule,
    Schedule,
    ScheduleBook,
    _rows,
    accrual_policy,
)
from fxcrm_core.commissions._rows import lines, sums
from fxcrm_core.commissions.engine import DepositFact, PositionOpened, TradeFact
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
from fxcrm_core.events import codec as codec_module
from fxcrm_core.kernel import Currency, Money, TradingCalendar, UnroundedMoney
from fxcrm_core.kernel.errors import CodecError, FxCrmError, ValidationError
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import Deal, DealChange, FeedItem

T0 = datetime(2026, 3, 9, 8, tzinfo=UTC)
START = T0 - timedelta(days=30)
USD = Currency.of("USD")
CAL = TradingCalendar()
META = EventMetadata("reviewer")
# IB ids whose chain order is not their key order, with '|', blanks and non-ASCII text
IBS = ("z|9", "a|b", "Ω x", "0")
CLIENTS = {1: "c1", 2: "c2", 3: "c3", 4: "c|4", 5: "lost"}  # 5: a client with no IB


class GeneralShares(FixedShares):
    """The same strategy, not the exact type: the engine takes its general path."""


def _schedules(*, cap: bool = False, revenue: bool = False, cpa: bool = False) -> ScheduleBook:
    book = ScheduleBook()
    book.add(
        Schedule(
            "std", 1, START, USD,
            default=Rule(PlanKind.PER_LOT, Money.of("3.00", USD)),
            by_symbol={
                "GBPUSD": Rule(PlanKind.PER_LOT, Money.of("5.00", USD),
                               min_hold=timedelta(minutes=30)),
                "XAUUSD": Rule(PlanKind.PER_LOT, Money.of("7.25", USD),
                               cap_per_deal=Money.of("9.00", USD)),
                "BIG": Rule(PlanKind.PER_LOT, Money.of("123456789012345.67", USD)),
            },
            cpa=None if not cpa else Rule(PlanKind.CPA, Money.of("50.00", USD),
                                          min_deposit=Money.of("100.00", USD),
                                          min_lots=Decimal("0.5")),
            period_cap=PeriodCap(Money.of("400.00", USD), CapPeriod.DAY) if cap else None,
            revenue=Revenue.commission() if revenue else Revenue.uncapped(),
        )
    )  # fmt: skip
    return book


def _tree() -> IbTree:
    tree = IbTree()
    parent = None
    for ib in IBS:  # a line: z|9 <- a|b <- Ω x <- 0
        tree.add_ib(ib, parent, START)
        parent = ib
    tree.add_ib("solo", None, START)
    tree.attribute("c1", "0", START)  # four levels
    tree.attribute("c2", "a|b", START)  # two
    tree.attribute("c3", "z|9", START)  # one
    tree.attribute("c|4", "Ω x", START)  # three
    tree.reparent("Ω x", "solo", T0 + timedelta(days=1))  # chains change on day two
    return tree


def _engine(
    strategy: FixedShares,
    *,
    cap: bool = False,
    revenue: bool = False,
    cpa: bool = False,
    horizon: timedelta | None = None,
) -> RebateEngine:
    return RebateEngine(
        _tree(), _schedules(cap=cap, revenue=revenue, cpa=cpa), strategy,
        client_of=lambda server, login: CLIENTS.get(login),
        account_group_of=lambda server, login: "std",
        trading_day_of=lambda deal: CAL.trading_day(deal.time),
        horizon=horizon,
    )  # fmt: skip


def _deal(
    ticket: int,
    at: datetime,
    units: int,
    login: int,
    *,
    symbol: str = "EURUSD",
    entry: int = 1,
    position: int = 0,
    deposit: int = 0,
    commission: str = "-9.99",
) -> Deal:
    record: dict[str, Any] = {
        "Deal": ticket, "Login": login, "Action": 2 if deposit else 1,
        "Entry": 0 if deposit else entry, "PositionID": position,
        "Symbol": "" if deposit else symbol, "Volume": units, "VolumeClosed": units,
        "Commission": commission, "Profit": str(deposit), "Time": int(at.timestamp()),
    }  # fmt: skip
    return Deal.from_mt5(record, server="mt5", currency="USD", utc_offset=timedelta(0))


def _fact_text(facts: Any) -> list[str]:
    return [f"{type(f).__name__}:{f!r}" for f in facts]


def _key(line: str) -> tuple[str, ...]:
    f = line.split("\x1f")
    return (f[1], f[2], f[3], f[4])


# -- the fast path against the general path, batch by batch ----------------------------------
share_lists = st.lists(
    st.sampled_from(["0.4", "0.25", "0.15", "0.1", "0.05", "0.333", "0", "0.0001"]).map(Decimal),
    min_size=1,
    max_size=5,
).filter(lambda s: sum(s) <= 1)

one_item = st.tuples(
    st.integers(1, 8),  # ticket: repeats update or delete a deal paid before
    st.sampled_from([1, 2, 3, 4, 5, 6]),  # login (6: no client at all)
    st.sampled_from(["EURUSD", "XAUUSD", "BIG", "GBPUSD"]),
    st.integers(1, 400_000),  # volume (1/10,000 lot)
    st.integers(0, 100_000),  # commission, cents
    st.integers(0, 40),  # hours after T0 (the chains change at 24)
    st.sampled_from(["add", "add", "update", "delete"]),
    st.sampled_from([0, 1, 1, 2]),  # entry: in, out, in/out
)


@settings(max_examples=120, deadline=None)
@given(
    share_lists,
    st.lists(st.lists(one_item, min_size=1, max_size=8), min_size=1, max_size=5),
    st.booleans(),
    st.booleans(),
)
def test_fast_path_batches_write_what_the_general_path_writes(
    shares: list[Decimal],
    batches: list[list[tuple[int, int, str, int, int, int, str, int]]],
    revenue: bool,
    cpa: bool,
) -> None:
    fast = _engine(FixedShares(tuple(shares)), revenue=revenue, cpa=cpa)
    general = _engine(GeneralShares(tuple(shares)), revenue=revenue, cpa=cpa)
    assert fast._fixed
    assert not general._fixed
    cursor = 0
    for batch in batches:
        items = []
        for ticket, login, symbol, units, cents, hours, change, entry in batch:
            cursor += 1
            kind = {"add": DealChange.ADDED, "update": DealChange.UPDATED}.get(
                change, DealChange.DELETED
            )
            at = T0 + timedelta(hours=hours, minutes=ticket)
            commission = str(Decimal(-cents) / 100)
            deal = _deal(ticket, at, units, login, symbol=symbol, entry=entry,
                         position=ticket, commission=commission)  # fmt: skip
            items.append(FeedItem(cursor, kind, deal))
        got = fast.process(items)
        want = general.process(items)
        assert lines(got) == lines(want)  # the very text, in the very order
        assert {k: str(v) for k, v in got.sums().items()} == {
            k: str(v) for k, v in want.sums().items()
        }
        assert got.sums() == sums(lines(got))
        changes, expected = fast.take_changes(), general.take_changes()
        assert _fact_text(changes.facts) == _fact_text(expected.facts)
        assert changes.parked == expected.parked
    assert fast.totals() == general.totals()


def test_a_deals_lines_come_in_key_order_not_chain_order() -> None:
    fast = _engine(FixedShares((Decimal("0.4"), Decimal("0.3"), Decimal("0.2"), Decimal("0.1"))))
    general = _engine(
        GeneralShares((Decimal("0.4"), Decimal("0.3"), Decimal("0.2"), Decimal("0.1")))
    )
    items = [
        FeedItem(n, DealChange.ADDED, _deal(n, T0 + timedelta(minutes=n), 30_000, login))
        for n, login in ((3, 1), (1, 4), (2, 2), (10, 1))
    ]
    out = lines(fast.process(items))
    assert out == lines(general.process(items))
    # per deal (in the items' order), its lines in the order of their keys
    by_deal: dict[str, list[str]] = {}
    for line in out:
        by_deal.setdefault(line.split("\x1f")[2], []).append(line)
    assert list(by_deal) == ["3", "1", "2", "10"]
    for group in by_deal.values():
        assert group == sorted(group, key=_key)
    assert [ln.split("\x1f")[3] for ln in by_deal["3"]] == ["0", "a|b", "z|9", "Ω x"]
    # the same deals again, once paid: updated (adjustments) and deleted (reversals)
    again = [
        FeedItem(20, DealChange.UPDATED, _deal(3, T0 + timedelta(minutes=3), 50_000, 1)),
        FeedItem(21, DealChange.DELETED, _deal(1, T0 + timedelta(minutes=1), 30_000, 4)),
    ]
    got = lines(fast.process(again))
    assert got == lines(general.process(again))
    assert [ln.split("\x1f")[0] for ln in got] == ["adjustment"] * 4 + ["reversal"] * 3
    assert fast.totals() == general.totals()


def test_a_control_character_in_a_deals_field_fails_alike_on_both_paths() -> None:
    outcomes = []
    for strategy in (FixedShares((Decimal("0.5"),)), GeneralShares((Decimal("0.5"),))):
        engine = _engine(strategy)
        record: dict[str, Any] = {
            "Deal": 1, "Login": 1, "Action": 1, "Entry": 1, "Symbol": "EUR\x1fUSD",
            "Volume": 10_000, "VolumeClosed": 10_000, "Commission": "-1",
            "Time": int(T0.timestamp()),
        }  # fmt: skip
        try:
            deal = Deal.from_mt5(record, server="mt5", currency="USD", utc_offset=timedelta(0))
            outcomes.append(repr(lines(engine.process([FeedItem(1, DealChange.ADDED, deal)]))))
        except FxCrmError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes[0] == outcomes[1]


def test_a_chain_with_an_ib_twice_is_refused_on_the_fast_path_every_time() -> None:
    engine = _engine(FixedShares((Decimal("0.5"), Decimal("0.5"))))
    pool = UnroundedMoney("10.00", "USD")
    for _ in range(2):  # (a refused chain is never cached)
        with pytest.raises(FxCrmError):
            engine._fixed_due(("a", "a"), pool, None, "mt5\x1f1", "x", "y", "z", "2026-03-09")


# -- what the engine learns: typed facts, stored rows ----------------------------------------
def test_take_changes_hands_typed_facts_equal_to_their_stored_rows() -> None:
    engine = _engine(FixedShares((Decimal("0.6"),)), cpa=True)
    items = [
        FeedItem(1, DealChange.ADDED, _deal(1, T0, 20_000, 1, symbol="GBPUSD", entry=0,
                                            position=7)),
        FeedItem(2, DealChange.ADDED, _deal(2, T0 + timedelta(hours=1), 20_000, 1,
                                            symbol="GBPUSD", entry=1, position=7)),
        FeedItem(3, DealChange.ADDED, _deal(3, T0, 0, 1, deposit=500)),
        FeedItem(4, DealChange.DELETED, _deal(4, T0, 30_000, 2, entry=2)),
        FeedItem(5, DealChange.ADDED, _deal(5, T0, 30_000, 6)),  # no client
    ]  # fmt: skip
    engine.process(items)
    stored = engine._take_stored_changes()[0]
    engine2 = _engine(FixedShares((Decimal("0.6"),)), cpa=True)
    engine2.process(items)
    facts = engine2.take_changes().facts
    assert all(type(f) in (TradeFact, DepositFact, PositionOpened) for f in facts)
    assert [_rows.fact_row(f) for f in facts] == _rows.fact_rows(stored)
    assert list(facts) == [_rows.fact_of(r) for r in _rows.fact_rows(stored)]
    trades = [f for f in facts if type(f) is TradeFact]
    assert [(t.ticket, t.opened_at, str(t.lots_opened), str(t.lots_closed)) for t in trades] == [
        (1, T0, "2", "0"), (2, None, "0", "2"), (4, None, "0", "0"), (5, None, "0", "0"),
    ]  # fmt: skip
    assert engine2.take_changes().facts == ()  # taken once


# -- a fresh process reading the log answers as the live one ---------------------------------
def _registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register_all((*REBATE_EVENTS, *POLICY_EVENTS, *PAYOUT_EVENTS))
    return registry


def _batch(b: int, cursor: int) -> tuple[list[FeedItem], int]:
    """The b-th batch of a busy feed: new deals, deals paid before updated and deleted, deposits,
    closes waiting for their opening; every fifth batch is big (its events are reused)."""
    items = []
    symbols = ["EURUSD", "GBPUSD", "XAUUSD", "BIG", "EURUSD"]
    for n in range(300 if b % 5 == 0 else 9):
        cursor += 1
        ticket = (b * 3 + n) % 40 + 1 if b % 3 else b * 1000 + n + 100
        login = 1 + (n + b) % 6
        at = T0 + timedelta(hours=b * 7 + n % 13, minutes=n)
        symbol = symbols[(n + b) % 5]
        change = DealChange.DELETED if (n + b) % 11 == 0 else DealChange.UPDATED
        if n % 17 == 5:
            deal = _deal(ticket, at, 1000, login, deposit=150 + n)
        elif symbol == "GBPUSD":
            deal = _deal(ticket, at, 10_000 + n, login, symbol=symbol, position=ticket)
            if n % 2:
                items.append(FeedItem(cursor, change, deal))
                cursor += 1
                change = DealChange.UPDATED
                deal = _deal(900_000 + ticket, at - timedelta(hours=1), 10_000, login,
                             symbol=symbol, entry=0, position=ticket)  # fmt: skip
        else:
            deal = _deal(ticket, at, 1 + n * 997 % 200_000, login, symbol=symbol,
                         entry=0 if n % 9 == 2 else 1,
                         commission=str(-Decimal(n * 7919 % 100_000) / 100))  # fmt: skip
        items.append(FeedItem(cursor, change, deal))
    return items, cursor


def _stored(path: Path) -> list[tuple[str, int, str, bytes, bytes]]:
    store = SqliteEventStore(path)
    try:
        return [
            (s.stream_id, s.version, s.event_type, bytes(s.data), bytes(s.metadata))
            for s in store.read_all(limit=1_000_000)
        ]
    finally:
        store.close()


def _run_book(path: Path, variant: str, batches: range) -> RebateBook:
    store = SqliteEventStore(path)
    repo = Repository(store, EventCodec(_registry()))
    engine = _engine(
        FixedShares((Decimal("0.4"), Decimal("0.25"), Decimal("0.15"))),
        cap=variant == "cap", revenue=variant == "rev", cpa=True,
        horizon=timedelta(days=2) if variant == "horizon" else None,
    )  # fmt: skip
    book = RebateBook(repo, engine)
    runner = PolicyRunner(repo, [accrual_policy()])
    cursor = 0
    for b in range(batches.stop):
        items, cursor = _batch(b, cursor)
        if b in batches:
            book.process("mt5", items)
            runner.run()
    return book


@pytest.mark.parametrize("variant", ["plain", "cap", "rev", "horizon"])
def test_a_fresh_process_restored_from_the_log_writes_what_the_live_one_writes(
    variant: str,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        live_path, fresh_path = Path(tmp) / "live.sqlite", Path(tmp) / "fresh.sqlite"
        live = _run_book(live_path, variant, range(11))
        # another process on the same log (written again: it is the same, byte for byte)
        _run_book(fresh_path, variant, range(11)).repository.store.close()  # type: ignore[attr-defined]
        assert _stored(fresh_path) == _stored(live_path)
        fresh_store = SqliteEventStore(fresh_path)
        fresh_repo = Repository(fresh_store, EventCodec(_registry()))
        fresh = RebateBook(
            fresh_repo,
            _engine(
                FixedShares((Decimal("0.4"), Decimal("0.25"), Decimal("0.15"))),
                cap=variant == "cap", revenue=variant == "rev", cpa=True,
                horizon=timedelta(days=2) if variant == "horizon" else None,
            ),
        )  # fmt: skip
        restored = fresh.restore()
        assert [_rows.line_of(e) for e in restored] == [
            ln for ev in RebateBook.recorded(live.repository.store, EventCodec(_registry()))
            for ln in lines(ev.entries)
        ]  # fmt: skip
        assert fresh.engine.totals() == live.engine.totals()
        runner = PolicyRunner(fresh_repo, [accrual_policy()])
        live_runner = PolicyRunner(live.repository, [accrual_policy()])
        cursor = 0
        for b in range(20):
            items, cursor = _batch(b, cursor)
            if b >= 11:
                a = live.process("mt5", items)
                c = fresh.process("mt5", items)
                assert lines(a) == lines(c)
                assert a.sums() == c.sums()
                live_runner.run()
                runner.run()
        assert fresh.engine.totals() == live.engine.totals()
        live.repository.store.close()  # type: ignore[attr-defined]
        fresh_store.close()
        assert _stored(live_path) == _stored(fresh_path)


# The same busy feed recorded by the code before these speed paths (26edf01): every payload and
# metadata record, in log order. (What is stored must not depend on the speed paths.)
BEFORE = {
    "plain": "18483ceec24559b568c6bb7f12aa7e89670e317ccc61a21165759bf6a5c25a18",
    "horizon": "3c9115f35424a4793b20b42cf41befa55fe86a4e13e01069ea68d50f5b5a97f5",
    "cap": "31421f74c53c83e6302e7e938024a1c21a59773595f8cb4d9ef3f09d0d3a3fd9",
    "rev": "bf4f9e02b0e924f4a15b6ab0cb445603132f34eff4025d3670c6fab6672f1045",
}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for stream, version, kind, data, meta in _stored(path):
        h.update(f"{stream}\x00{version}\x00{kind}\x00".encode())
        h.update(data + b"\x00" + meta + b"\x00")
    return h.hexdigest()


@pytest.mark.parametrize("variant", sorted(BEFORE))
def test_the_log_holds_the_very_bytes_the_code_before_wrote(variant: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "book.sqlite"
        book = _run_book(path, variant, range(20))
        book.repository.store.close()  # type: ignore[attr-defined]
        assert _digest(path) == BEFORE[variant]


# -- the codec's per-type memory of the events it wrote ---------------------------------------
BIG = "x" * 70_000


@attrs.frozen
class ReusedA(DomainEvent):
    text: str
    __reuse_decoded__ = True


@attrs.frozen
class ReusedB(DomainEvent):
    text: str
    __reuse_decoded__ = True


def _codec() -> EventCodec:
    registry = EventRegistry()
    registry.register_all((ReusedA, ReusedB, *PAYOUT_EVENTS))
    return EventCodec(registry)


def _check_books(codec: EventCodec) -> None:
    with codec._written_lock:
        for name, kept in codec._written.items():
            assert 1 <= len(kept) <= codec_module._REUSE_KEPT
            assert all(w[1] == name for w in kept)
            assert codec._written_bytes[name] == sum(len(w[2]) for w in kept)


def test_threads_writing_two_types_keep_each_types_books_straight() -> None:
    codec = _codec()
    first = codec.encode("s", ReusedA(BIG), META)
    errors: list[BaseException] = []

    def write(cls: type[ReusedA] | type[ReusedB], tag: str) -> None:
        try:
            for n in range(300):
                event = cls(f"{BIG}{tag}{n}")
                stored = codec.encode(f"s-{tag}", event, META)
                back = codec.decode_event(f"s-{tag}", stored.event_type, stored.data)
                assert back == event
                assert codec.decode_event("s", first.event_type, first.data) == ReusedA(BIG)
        except BaseException as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [
            threading.Thread(target=write, args=(cls, f"{cls.__name__}{k}"))
            for k in range(2)
            for cls in (ReusedA, ReusedB)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert [type(e).__name__ for e in errors] == []
    _check_books(codec)
    assert set(codec._written) == {"ReusedA", "ReusedB"}


def test_an_event_is_handed_back_only_on_its_own_stream_and_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec_module, "_REUSE_BYTES", 3 * 70_020)
    codec = _codec()
    stored = codec.encode("s", ReusedA(BIG), META)
    mine = codec.decode_event("s", stored.event_type, stored.data)
    other = codec.decode_event("t", stored.event_type, stored.data)
    assert mine == other == ReusedA(BIG)
    assert codec.decode_event("s", stored.event_type, stored.data) is mine
    assert other is not mine  # another stream decodes afresh
    # the same bytes under the other type's name are the other type's
    b = codec.decode_event("s", "ReusedB", stored.data)
    assert type(b) is ReusedB
    # a byte budget per type: the other type's writes never push this one out
    for n in range(10):
        codec.encode("s", ReusedB(f"{BIG}{n}"), META)
    assert codec.decode_event("s", stored.event_type, stored.data) is mine
    for n in range(3):
        codec.encode("s", ReusedA(f"{BIG}{n}"), META)
    _check_books(codec)
    assert len(codec._written["ReusedA"]) == 3
    assert len(codec._written["ReusedB"]) == 3
    assert codec.decode_event("s", stored.event_type, stored.data) is not mine


def _rows_of(n: int, amount: Decimal, day: date = date(2026, 3, 9)) -> tuple[Any, ...]:
    return tuple((f"ib-{k:05}", day, "USD", amount) for k in range(n))


def test_a_journal_line_no_fresh_process_can_read_is_no_line_live_either() -> None:
    with pytest.raises(ValidationError):  # never built, so never written nor handed back
        RebatesJournaled(JOURNAL_ID, _rows_of(2_000, Decimal("1E+150")))
    for bad in (
        _rows_of(3, Decimal("NaN")),
        ((1, date(2026, 3, 9), "USD", Decimal(1)),),
        (("ib-1", datetime(2026, 3, 9, tzinfo=UTC), "USD", Decimal(1)),),
        (["ib-1", date(2026, 3, 9), "USD", Decimal(1)],),
        (("ib-1", date(2026, 3, 9), "USD", 1.5),),
        (("ib-1", date(2026, 3, 9), "USD"),),
    ):
        with pytest.raises(ValidationError):
            RebatesJournaled(JOURNAL_ID, bad)
    # An amount in range but too long to store is refused when written: nothing kept.
    long = RebatesJournaled(JOURNAL_ID, _rows_of(2_000, Decimal("1." + "3" * 250)))
    writer = _codec()
    with pytest.raises(CodecError):
        writer.encode(AccrualJournal.stream_id_for(JOURNAL_ID), long, META)
    assert not writer._written
    # Bytes forged in the store: every process refuses them, the writer's too.
    good = RebatesJournaled(JOURNAL_ID, _rows_of(2_000, Decimal("1.5")))
    codec = _codec()
    stream = AccrualJournal.stream_id_for(JOURNAL_ID)
    stored = codec.encode(stream, good, META)
    forged = stored.data.replace(b'"1.5"', b'"1E+150"')
    assert forged != stored.data
    for reader in (codec, _codec()):
        with pytest.raises(CodecError):
            reader.decode_event(stream, stored.event_type, forged)
    assert codec.decode_event(stream, stored.event_type, stored.data) is good


def test_a_journal_line_handed_back_live_reads_as_a_fresh_process_reads_it() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "book.sqlite"
        book = _run_book(path, "plain", range(17))
        repo = book.repository
        fresh = EventCodec(_registry())
        for s in repo.store.read_stream(AccrualJournal.stream_id_for(JOURNAL_ID)):
            live = repo.codec.decode_event(s.stream_id, s.event_type, s.data)
            again = repo.codec.decode_event(s.stream_id, s.event_type, s.data)
            assert live is again or len(s.data) < 1 << 16
            read = fresh.decode_event(s.stream_id, s.event_type, s.data)
            assert isinstance(live, RebatesJournaled)
            assert isinstance(read, RebatesJournaled)
            assert live == read
            assert [tuple(map(str, r)) for r in live.rows] == [
                tuple(map(str, r)) for r in read.rows
            ]
        repo.store.close()  # type: ignore[attr-defined]
