"""The rebate book: the engine's output kept in the event log, one event per processed batch,
so a restarted engine resumes where it stopped and a replay gives the same statements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import attrs

from fxcrm_core.commissions.engine import EngineChanges, RebateEngine, RebateEntry
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventStore,
    Repository,
    UnitOfWork,
    ValueCodec,
    iter_all,
)
from fxcrm_core.kernel.errors import CodecError, FxCrmError, ValidationError
from fxcrm_core.trading import Deal, FeedItem

__all__ = ["REBATE_EVENTS", "RebateBook", "RebateEntriesRecorded"]


def _entry_row(e: RebateEntry) -> str | list[str]:
    """An entry as one line of text, its 14 fields joined by ``|`` (as the list of its fields
    where a field holds a ``|`` itself)."""
    line = e.line()
    return line.replace(_SEP, "|") if "|" not in line else line.split(_SEP)


def _entry_of(row: Any) -> RebateEntry:
    try:
        if isinstance(row, str):
            line = row.replace("|", _SEP)
        elif isinstance(row, list) and all(isinstance(f, str | int) for f in row):
            line = _SEP.join(map(str, row))  # also reads rows of earlier books
        else:
            raise TypeError
        return RebateEntry.from_line(line)
    except (TypeError, ValueError, KeyError, ArithmeticError, FxCrmError):
        raise CodecError("a rebate entry row is malformed") from None


_SEP = "\x1f"


def _entry_rows(entries: tuple[RebateEntry, ...]) -> list[str | list[str]]:
    return [_entry_row(e) for e in entries]


def _entries_of(rows: Any) -> tuple[RebateEntry, ...]:
    if not isinstance(rows, list):
        raise CodecError("rebate entries are stored as a list")
    return tuple([_entry_of(row) for row in rows])


# Entries are stored as lines of text, not objects, a batch at a time: a broker's day holds
# millions.
ENTRY_ROWS = ValueCodec(tuple[RebateEntry, ...], _entry_rows, _entries_of)


@attrs.frozen
class RebateEntriesRecorded(DomainEvent):
    server: str
    upto_cursor: int
    entries: tuple[RebateEntry, ...]
    cursors: tuple[tuple[int, int], ...]  # (deal ticket, feed cursor) handled in this batch
    # What later deals depend on (recorded only when a schedule pays a CPA or has a minimum
    # holding time): compact facts of this batch's deals and the closes left waiting.
    facts: tuple[str, ...] = ()
    parked: tuple[Deal, ...] = ()

    __value_codecs__ = (ENTRY_ROWS,)


REBATE_EVENTS = (RebateEntriesRecorded,)


@attrs.frozen(kw_only=True)
class RebateFeed(Aggregate):
    """How far the feed of one server has been processed."""

    category = "rebatefeed"
    cursor: int = 0

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, RebateEntriesRecorded):
            return self.evolve(cursor=event.upto_cursor)
        raise ValidationError(f"RebateFeed cannot apply {type(event).__name__}")


class RebateBook:
    def __init__(self, repository: Repository, engine: RebateEngine) -> None:
        self.repository = repository
        self.engine = engine

    def process(self, server: str, items: Sequence[FeedItem]) -> list[RebateEntry]:
        """Process feed items past the stored cursor and record the entries, atomically with
        the new cursor (a concurrent worker on the same feed gets a ConcurrencyError)."""
        feed = self.repository.load(RebateFeed, server) or RebateFeed.blank(server)
        fresh = [i for i in items if i.cursor > feed.cursor]
        if not fresh:
            return []
        entries = self.engine.process(fresh)
        changes = self.engine.take_changes()
        cursors = tuple([(i.deal.ticket, i.cursor) for i in fresh])
        event = RebateEntriesRecorded(
            server, fresh[-1].cursor, tuple(entries), cursors, changes.facts, changes.parked
        )
        with UnitOfWork(self.repository, EventMetadata("system:rebates")) as uow:
            uow.record(feed, event)
            uow.commit()
        return entries

    @staticmethod
    def recorded(store: EventStore, codec: EventCodec) -> list[RebateEntriesRecorded]:
        out = []
        for stored in iter_all(store):
            if stored.event_type == "RebateEntriesRecorded":
                event = codec.decode(stored).event
                assert isinstance(event, RebateEntriesRecorded)
                out.append(event)
        return out

    def restore(self, store: EventStore, codec: EventCodec) -> list[RebateEntry]:
        """Rebuild the engine's state from the log; returns every entry recorded so far."""
        entries: list[RebateEntry] = []
        for event in self.recorded(store, codec):
            changes = EngineChanges(event.facts, event.parked)
            self.engine.restore(event.entries, event.server, event.cursors, changes)
            entries.extend(event.entries)
        return entries
