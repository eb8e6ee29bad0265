"""Private speed paths answer exactly as the plain ones, and never shape what is stored:

- ``IbTree.client_chain`` (one cached step) is ``ib_of`` then ``chain`` whatever the changes of
  attribution and parents, and in whatever order they are asked;
- a codec hands back an event it just wrote only to a reader of those very bytes, only for an
  event class that allows it, and writes the same bytes either way;
- a batch's sums worked out while the engine wrote it are the sums of its entries as any
  other process reads them back.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
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
from fxcrm_core.commissions._rows import lines, sums
from fxcrm_core.commissions.book import RebateEntriesRecorded
from fxcrm_core.events import DomainEvent, EventCodec, EventMetadata, EventRegistry, Repository
from fxcrm_core.events import codec as codec_module
from fxcrm_core.kernel import Currency, Money, TradingCalendar
from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import Deal, DealChange, FeedItem

T0 = datetime(2026, 3, 9, 8, tzinfo=UTC)
IBS = ("m1", "m2", "a", "b", "c")
CLIENTS = ("x", "y", "z")

# -- the tree: client_chain is ib_of then chain -------------------------------------------------
_hours = st.integers(0, 200)
tree_steps = st.lists(
    st.one_of(
        st.tuples(st.just("attribute"), st.sampled_from(CLIENTS), st.sampled_from(IBS), _hours),
        st.tuples(st.just("reparent"), st.sampled_from(IBS[2:]), st.sampled_from(IBS), _hours),
        st.tuples(st.just("ask"), st.sampled_from(CLIENTS), st.just(""), st.integers(-10, 220)),
    ),
    max_size=40,
)


def plain_chain(tree: IbTree, client: str, at: datetime) -> tuple[str, ...] | None:
    ib = tree.ib_of(client, at)
    return None if ib is None else tuple(tree.chain(ib, at))


@settings(max_examples=200, deadline=None)
@given(tree_steps)
def test_a_clients_cached_chain_is_its_ib_then_that_ibs_chain(
    steps: list[tuple[str, str, str, int]],
) -> None:
    tree = IbTree(max_depth=4)
    tree.add_ib("m1", None, T0)
    tree.add_ib("m2", None, T0)
    tree.add_ib("a", "m1", T0)
    tree.add_ib("b", "a", T0)
    tree.add_ib("c", "m2", T0)
    latest = T0
    for kind, who, ib, hours in steps:
        at = T0 + timedelta(hours=hours)
        if kind == "ask":
            assert tree.client_chain(who, at) == plain_chain(tree, who, at)
            continue
        at = max(at, latest)  # (changes are recorded in time order)
        try:
            if kind == "attribute":
                tree.attribute(who, ib, at)
            else:
                tree.reparent(who, ib, at)
        except FxCrmError:
            continue  # refused by the tree's rules: nothing changed
        latest = at
        for client in CLIENTS:  # every answer, before and after the change, still agrees
            for probe in (T0, at - timedelta(minutes=1), at, at + timedelta(hours=5)):
                assert tree.client_chain(client, probe) == plain_chain(tree, client, probe)


def test_a_copied_tree_keeps_its_own_cached_chains() -> None:
    tree = IbTree()
    tree.add_ib("m1", None, T0)
    tree.add_ib("a", "m1", T0)
    tree.attribute("x", "a", T0)
    assert tree.client_chain("x", T0 + timedelta(hours=1)) == ("a", "m1")
    copy = tree.copy()
    copy.add_ib("m2", None, T0)
    copy.reparent("a", "m2", T0 + timedelta(minutes=30))
    assert copy.client_chain("x", T0 + timedelta(hours=1)) == ("a", "m2")
    assert tree.client_chain("x", T0 + timedelta(hours=1)) == ("a", "m1")


# -- the codec: a written event handed back only for its own bytes ------------------------------
@attrs.frozen
class BigReused(DomainEvent):
    text: str
    __reuse_decoded__ = True


@attrs.frozen
class BigPlain(DomainEvent):
    text: str


def _codec() -> EventCodec:
    registry = EventRegistry()
    registry.register(BigReused)
    registry.register(BigPlain)
    return EventCodec(registry)


META = EventMetadata("tester")
BIG = "x" * 70_000


def test_a_reader_of_the_very_bytes_written_gets_the_event_back() -> None:
    codec = _codec()
    event = BigReused(BIG)
    stored = codec.encode("big-1", event, META)
    assert codec.decode_event("big-1", stored.event_type, stored.data) is event
    # other bytes, another stream, or a codec that did not write it: decoded
    other = codec.encode("big-1", BigReused(BIG + "y"), META)
    again = codec.decode_event("big-1", other.event_type, other.data)
    assert again == BigReused(BIG + "y")
    assert codec.decode_event("big-2", stored.event_type, stored.data) is not event
    fresh = _codec().decode_event("big-1", stored.event_type, stored.data)
    assert fresh == event
    assert fresh is not event


def test_only_a_class_that_allows_it_and_only_big_payloads_are_handed_back() -> None:
    codec = _codec()
    plain = BigPlain(BIG)
    stored = codec.encode("big-1", plain, META)
    assert codec.decode_event("big-1", stored.event_type, stored.data) is not plain
    small = BigReused("short")
    stored = codec.encode("big-1", small, META)
    assert codec.decode_event("big-1", stored.event_type, stored.data) is not small


def test_reuse_never_shapes_the_stored_bytes() -> None:
    codec = _codec()
    reused = codec.encode("big-1", BigReused(BIG), META)
    plain = codec.encode("big-1", BigPlain(BIG), META)
    assert reused.data == plain.data


def test_only_the_last_few_written_are_kept() -> None:
    codec = _codec()
    first = BigReused(BIG + "0")
    stored = codec.encode("big-1", first, META)
    for n in range(1, 40):
        codec.encode("big-1", BigReused(BIG + str(n)), META)
    back = codec.decode_event("big-1", stored.event_type, stored.data)
    assert back == first
    assert back is not first


@attrs.frozen
class OtherReused(DomainEvent):
    text: str
    __reuse_decoded__ = True


def test_each_event_type_keeps_its_own_last_few() -> None:
    codec = _codec()
    codec.registry.register(OtherReused)
    lines_written = [OtherReused(BIG + str(n)) for n in range(15)]
    stored = []
    for n, line in enumerate(lines_written):  # a journal line after each of many big batches
        stored.append(codec.encode("journal-1", line, META))
        for m in range(3):
            codec.encode("big-1", BigReused(f"{BIG}{n}-{m}"), META)
    back = [codec.decode_event("journal-1", s.event_type, s.data) for s in stored]
    assert all(b is e for b, e in zip(back, lines_written, strict=True))
    first = BigReused(BIG + "first")  # the type's own limit still holds
    first_batch = codec.encode("big-1", first, META)
    for n in range(codec_module._REUSE_KEPT):
        codec.encode("big-1", BigReused(BIG + f"later-{n}"), META)
    again = codec.decode_event("big-1", first_batch.event_type, first_batch.data)
    assert again == first
    assert again is not first


def test_a_journal_line_read_back_inline_is_what_a_fresh_process_decodes() -> None:
    from fxcrm_core.commissions import PAYOUT_EVENTS
    from fxcrm_core.commissions.payouts import RebatesJournaled

    registry = EventRegistry()
    registry.register_all(PAYOUT_EVENTS)
    codec = EventCodec(registry)
    usd_day = T0.date()
    rows = tuple(
        (f"ib{n:05d}", usd_day - timedelta(days=n % 3), "USD", Decimal(n) / 7 - 40)
        for n in range(3_000)
    )
    line = RebatesJournaled("main", rows)
    stored = codec.encode("ibaccruals-main", line, META)
    assert len(stored.data) >= codec_module._REUSE_MIN
    assert codec.decode_event("ibaccruals-main", stored.event_type, stored.data) is line
    fresh = EventCodec(registry).decode_event("ibaccruals-main", stored.event_type, stored.data)
    assert fresh == line
    assert [tuple(map(str, r)) for r in fresh.rows] == [tuple(map(str, r)) for r in rows]


# -- the batch's sums ------------------------------------------------------------------------
class _General(FixedShares):
    """The same strategy, not the exact type: the engine takes its general path."""


def _engine(cap: str, general: bool = False) -> RebateEngine:
    usd = Currency.of("USD")
    tree = IbTree()
    tree.add_ib("m", None, T0 - timedelta(days=30))
    tree.add_ib("s", "m", T0 - timedelta(days=30))
    tree.attribute("c1", "s", T0 - timedelta(days=30))
    tree.attribute("c2", "m", T0 - timedelta(days=30))
    book = ScheduleBook()
    book.add(
        Schedule(
            "std", 1, T0 - timedelta(days=30), usd,
            default=Rule(PlanKind.PER_LOT, Money.of("3.00", usd)),
            cpa=Rule(PlanKind.CPA, Money.of("50.00", usd), min_deposit=Money.of("100.00", usd),
                     min_lots=Decimal("0.5")),
            period_cap=PeriodCap(Money.of(cap, usd), CapPeriod.DAY),
        )
    )  # fmt: skip
    calendar = TradingCalendar()
    return RebateEngine(
        tree, book, (_General if general else FixedShares)((Decimal("0.7"), Decimal("0.3"))),
        client_of=lambda server, login: {1: "c1", 2: "c2"}.get(login),
        account_group_of=lambda server, login: "std",
        trading_day_of=lambda deal: calendar.trading_day(deal.time),
    )  # fmt: skip


def _deal(ticket: int, login: int, units: int, hours: int, *, deposit: int = 0) -> Deal:
    record: dict[str, Any] = {
        "Deal": ticket, "Login": login, "Action": 2 if deposit else 1, "Entry": 0 if deposit else 1,
        "Symbol": "" if deposit else "EURUSD", "Volume": units, "VolumeClosed": units,
        "Commission": "-9.99", "Profit": str(deposit),
        "Time": int((T0 + timedelta(hours=hours)).timestamp()),
    }  # fmt: skip
    return Deal.from_mt5(record, server="mt5", currency="USD", utc_offset=timedelta(0))


batch_items = st.lists(
    st.tuples(st.integers(1, 12), st.sampled_from([1, 2, 3]), st.integers(1, 90_000),
              st.integers(0, 40), st.sampled_from([0, 0, 0, 500]), st.booleans()),
    min_size=1, max_size=20,
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(
    st.lists(batch_items, min_size=1, max_size=4),
    st.sampled_from(["5.00", "40.00", "900"]),
    st.booleans(),
)
def test_a_batchs_sums_are_the_sums_of_its_entries_as_read_back(
    batches: list[list[tuple[int, int, int, int, int, bool]]], cap: str, general: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _sums_read_back(Path(tmp) / "book.sqlite", batches, cap, general)


def _sums_read_back(
    path: Path, batches: list[list[tuple[int, int, int, int, int, bool]]], cap: str, general: bool
) -> None:
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    store = SqliteEventStore(path)
    writer = Repository(store, EventCodec(registry))
    book = RebateBook(writer, _engine(cap, general))
    cursor = 0
    for batch in batches:
        items = []
        for ticket, login, units, hours, deposit, deleted in batch:
            cursor += 1
            change = DealChange.DELETED if deleted else DealChange.UPDATED
            items.append(FeedItem(cursor, change, _deal(ticket, login, units, hours,
                                                        deposit=deposit)))  # fmt: skip
        entries = book.process("mt5", items)
        assert entries.sums() == sums(lines(entries))
    # Another process reads the batches back: the same sums, batch by batch.
    reader = EventCodec(registry)
    written = RebateBook.recorded(writer.store, writer.codec)
    for stored, event in zip(writer.store.read_stream("rebatefeed-mt5"), written, strict=True):
        decoded = reader.decode_event(stored.stream_id, stored.event_type, stored.data)
        assert isinstance(decoded, RebateEntriesRecorded)
        assert decoded.entries.sums() == event.entries.sums()
    store.close()


def test_the_events_kept_stay_within_a_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec_module, "_REUSE_BYTES", 200_000)
    codec = _codec()
    events = [BigReused(BIG + str(n)) for n in range(3)]  # about 70 kB each
    stored = [codec.encode("big-1", e, META) for e in events]
    back = [codec.decode_event("big-1", s.event_type, s.data) for s in stored]
    assert back == events
    assert [b is e for b, e in zip(back, events, strict=True)] == [False, True, True]
    huge = BigReused("y" * 300_000)  # over the budget alone: the newest is still kept
    written = codec.encode("big-1", huge, META)
    assert codec.decode_event("big-1", written.event_type, written.data) is huge
    assert codec.decode_event("big-1", stored[2].event_type, stored[2].data) is not events[2]
