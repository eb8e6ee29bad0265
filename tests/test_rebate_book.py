"""The rebate book: entries kept in the event log; a restored engine gives the same statements
and resumes exactly where the first one stopped."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from fxcrm_core.commissions import (
    REBATE_EVENTS,
    EntryKind,
    RebateBook,
    RebateEntriesRecorded,
    RebateEntry,
    build_statement,
)
from fxcrm_core.events import EventCodec, EventMetadata, EventRegistry, Repository
from fxcrm_core.kernel import (
    CodecError,
    Currency,
    FixedClock,
    RateTable,
    UnroundedMoney,
    ValidationError,
)
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import BalanceOperation, NewTradingAccount, SimulatedTradingServer
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
        EntryKind.REVERSAL, "mt5", 42, ib_id, "rebate", UnroundedMoney(Decimal("-1.2345"), USD),
        2, "c-1", "XAUUSD.m", Decimal("0.25"), date(2026, 3, 9), "schedule s v1; level 2: x",
        "sub",
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


def test_an_entry_line_round_trips_and_refuses_control_characters_in_ids() -> None:
    entry = RebateEntry(
        EntryKind.ACCRUAL, "mt5", 7, "ib-1", "rebate", UnroundedMoney(Decimal("0.1"), USD), 1,
        "c-1", "EURUSD", Decimal(1), date(2026, 3, 9), "why\x1fnot", "ib-1",
    )  # fmt: skip
    # An explanation's control character becomes a space; everything else is kept.
    assert RebateEntry.from_line(entry.line()) == attrs.evolve(entry, explanation="why not")
    with pytest.raises(ValidationError, match="control characters"):
        attrs.evolve(entry, ib_id="ib\x1f1").line()


def test_the_engine_keeps_the_same_line_an_entry_would_work_out() -> None:
    sim = server()
    sim.simulate_trading(80)
    engine, _ = make(logins=LOGINS)
    entries = engine.process(sim.deal_feed(limit=100_000))
    assert entries
    for entry in entries:
        fresh = attrs.evolve(entry)  # no line kept: worked out from the fields
        assert entry.line() == fresh.line()
        assert RebateEntry.from_line(entry.line()) == entry


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
