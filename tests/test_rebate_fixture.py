"""Books written by earlier code still restore: the fixture of stop 22's rebate book (see
tests/fixtures/rebate_book_stop22.py) restores into an engine that holds exactly what a live
engine that processed the same feed holds, and pays the same from there on."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import attrs

from fxcrm_core.commissions import REBATE_EVENTS, RebateBook, RebateEntry
from fxcrm_core.events import EventCodec, EventRegistry, NewEvent, Repository, StreamAppend
from fxcrm_core.kernel import Money
from fxcrm_core.kernel.time import from_micros
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import FEED_EVENTS, DealChange, DealsReceived, FeedItem
from tests.fixtures import rebate_book_stop22 as fixture


def codec() -> EventCodec:
    registry = EventRegistry()
    registry.register_all((*REBATE_EVENTS, *FEED_EVENTS))
    return EventCodec(registry)


def fixture_repository(path: Path) -> Repository:
    store = SqliteEventStore(path)
    for row in fixture.read():
        event = NewEvent(row["type"], row["data"].encode(), row["metadata"].encode())
        store.append(StreamAppend(row["stream"], row["version"] - 1, (event,)))
    return Repository(store, codec())


def feed_batches(repository: Repository) -> list[DealsReceived]:
    stored = repository.store.read_stream(f"dealfeed-{fixture.SERVER}")
    out = []
    for s in stored:
        event = repository.codec.decode(s).event
        assert isinstance(event, DealsReceived)
        out.append(event)
    return out


def logins(batches: list[DealsReceived]) -> dict[int, str]:
    # The simulator opens c-0, c-1, c-2 in order, from its first login.
    first = min(i.deal.login for b in batches for i in b.items)
    return {first + n: f"c-{n}" for n in range(3)}


def test_the_fixture_holds_every_stored_form_of_stop_22() -> None:
    books = [json.loads(r["data"]) for r in fixture.read() if r["type"] == "RebateEntriesRecorded"]
    rows = [e for b in books for e in b["entries"]]
    fields = [e.split("|") if isinstance(e, str) else e for e in rows]
    assert {f[0] for f in fields} == {"accrual", "adjustment", "reversal"}
    assert {f[4].split(":")[0] for f in fields} == {"rebate", "cpa", "cap"}
    assert any(isinstance(e, str) for e in rows)
    assert any(isinstance(e, list) and "|" in "".join(map(str, e)) for e in rows)
    assert any(isinstance(e, list) and isinstance(e[2], int) for e in rows)
    facts = [f for b in books for f in b["facts"]]
    for lead in ("t|", "d|", "open|"):
        assert any(f.startswith(lead) for f in facts)
    assert any(f.startswith("d|") and f.count("|") == 2 for f in facts)  # a deposit of nothing
    assert any(f.count("|") == 11 for f in facts)  # the 12-field form, trades and deposits
    assert any(b["parked"] for b in books)


def test_restores_the_fixture_book_written_by_stop_22_code(tmp_path: Path) -> None:
    repository = fixture_repository(tmp_path / "fixture.sqlite")
    batches = feed_batches(repository)
    first = min(i.deal.login for b in batches for i in b.items)
    known = logins(batches)
    assert known[first] == "c-0"

    restored = fixture.engine(known)
    book = RebateBook(repository, restored, servers=(fixture.SERVER,))  # (no list then)
    replayed = book.restore(repository.store, repository.codec)

    # The live engine learns the openings before the feed as the fixture's engine was told.
    live = fixture.engine(known)
    live.positions_opened(fixture.SERVER, _openings())
    entries: list[RebateEntry] = []
    for batch in batches:
        entries += live.process(batch.items)
    assert replayed == entries
    assert restored.totals() == live.totals()
    assert restored.waiting() == live.waiting()

    # What a further batch pays is the same: a correction of a paid close, a deleted qualifying
    # deposit (the CPA reversed), a deal deleted twice.
    items = [i for b in batches for i in b.items]
    cursor = items[-1].cursor
    closes = [i.deal for i in items if i.deal.action.is_trade and i.deal.entry.closes]
    deposit = next(
        i.deal for i in items if not i.deal.action.is_trade and i.deal.login == first + 2
    )
    more = [
        FeedItem(cursor + 1, DealChange.UPDATED,
                 attrs.evolve(closes[3], commission=Money.of("-9.00", "USD"))),
        FeedItem(cursor + 2, DealChange.DELETED, deposit),
        FeedItem(cursor + 3, DealChange.DELETED, closes[5]),
    ]  # fmt: skip
    paid = book.process(fixture.SERVER, more)
    assert paid == live.process(more)
    assert {e.component for e in paid} >= {"rebate", "cpa"}
    assert restored.totals() == live.totals()


def _openings() -> list[tuple[int, datetime]]:
    """The positions the fixture's engine was told of before the feed (opened before it, so
    their opening deals are not in the feed): as its first batch recorded them."""
    data = json.loads(
        next(r["data"] for r in fixture.read() if r["type"] == "RebateEntriesRecorded")
    )
    opened = [f.split("|") for f in data["facts"] if f.startswith("open|")]
    return [(int(position), from_micros(int(micros))) for _, position, micros in opened]
