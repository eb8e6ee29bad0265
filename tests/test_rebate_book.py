"""The rebate book: entries kept in the event log; a restored engine gives the same statements
and resumes exactly where the first one stopped."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from fxcrm_core.commissions import REBATE_EVENTS, RebateBook, RebateEntry, build_statement
from fxcrm_core.events import EventCodec, EventRegistry, Repository
from fxcrm_core.kernel import CodecError, Currency, FixedClock, RateTable
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import BalanceOperation, NewTradingAccount, SimulatedTradingServer
from tests.test_rebate_engine import LOGINS, T0, make, usd

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
