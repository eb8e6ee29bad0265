"""The rebate book: the engine's output kept in the event log, one event per processed batch,
so a restarted engine resumes where it stopped and a replay gives the same statements; fed by
the host (:meth:`RebateBook.process`) or by a policy on the recorded deal feed
(:meth:`RebateBook.on_deals`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Self

import attrs

from fxcrm_core.commissions import _rows
from fxcrm_core.commissions._rows import RebateFacts
from fxcrm_core.commissions.engine import (
    EngineChanges,
    Fact,
    LateCorrection,
    RebateEngine,
    RebateEntries,
    RebateEntry,
)
from fxcrm_core.commissions.tree import check_id
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventStore,
    RecordedEvent,
    Repository,
    Snapshot,
    StoredEvent,
    UnitOfWork,
    ValueCodec,
)
from fxcrm_core.kernel.errors import CodecError, FxCrmError, ValidationError
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.trading import Deal, DealsReceived, FeedItem

__all__ = ["REBATE_EVENTS", "RebateBook", "RebateEntriesRecorded", "RebateFeedOpened"]


# Entries are stored as lines of text, not objects, a batch at a time (a broker's day holds
# millions); facts as short lines of text. Both codecs also read every form books wrote before.
ENTRY_ROWS = ValueCodec(RebateEntries, _rows.rows_of, _rows.entries_of_rows)
FACT_ROWS = ValueCodec(RebateFacts, _rows.fact_rows, _rows.facts_of_rows)
# A batch's (deal ticket, feed cursor) pairs: the JSON the generic codec writes, read in one pass.
CURSOR_ROWS = ValueCodec(tuple[tuple[int, int], ...], _rows.cursor_rows, _rows.cursors_of_rows)


def _entries(entries: Iterable[RebateEntry]) -> RebateEntries:
    return RebateEntries.of(entries)


def _facts(facts: Iterable[Fact | str]) -> RebateFacts:
    if isinstance(facts, RebateFacts):
        return facts
    return RebateFacts(EngineChanges(tuple(facts)).facts)


def _utc_deal(deal: Deal) -> Deal:
    """The deal with its time in UTC, as the log keeps it (a host may give another zone)."""
    when = to_utc(deal.time, "time")
    return deal if when is deal.time else attrs.evolve(deal, time=when)


def _utc_deals(deals: Iterable[Deal]) -> tuple[Deal, ...]:
    return tuple([_utc_deal(d) for d in deals])


def _utc_late(late: Iterable[LateCorrection]) -> tuple[LateCorrection, ...]:
    return tuple([attrs.evolve(x, deal=_utc_deal(x.deal)) for x in late])


@attrs.frozen
class RebateEntriesRecorded(DomainEvent):
    server: str
    upto_cursor: int
    entries: RebateEntries = attrs.field(converter=_entries)
    cursors: tuple[tuple[int, int], ...]  # (deal ticket, feed cursor) handled in this batch
    # What later deals depend on (recorded only when a schedule pays a CPA or has a minimum
    # holding time): facts of this batch's deals and the closes left waiting.
    facts: RebateFacts = attrs.field(factory=RebateFacts, converter=_facts)
    parked: tuple[Deal, ...] = attrs.field(default=(), converter=_utc_deals)
    # With a settlement horizon (absent from books written before): the newest trading day
    # processed as of this batch, and the items refused as beyond the horizon, for review.
    newest_day: date | None = None
    late: tuple[LateCorrection, ...] = attrs.field(default=(), converter=_utc_late)

    __value_codecs__ = (ENTRY_ROWS, FACT_ROWS, CURSOR_ROWS)
    # A batch is big and decodes to an equal event (its entries are rows, its facts and
    # deals' times in UTC as stored): a policy run inline (the accrual) takes this process's
    # batch as written.
    __reuse_decoded__ = True


@attrs.frozen
class RebateFeedOpened(DomainEvent):
    """A server's first batch was recorded: the book's own list of its streams, so a restore
    reads those streams and never the whole log (books written before this event name their
    servers: ``RebateBook(..., servers=...)``)."""

    server: str


REBATE_EVENTS = (RebateEntriesRecorded, RebateFeedOpened)


@attrs.frozen(kw_only=True)
class RebateServers(Aggregate):
    """The servers whose feeds the book has recorded (stream ``rebatebook-servers``)."""

    category = "rebatebook"
    servers: tuple[str, ...] = ()

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, RebateFeedOpened):
            return self.evolve(servers=(*self.servers, event.server))
        raise ValidationError(f"RebateServers cannot apply {type(event).__name__}")


_INDEX = "servers"
_SNAPSHOT = "rebate-book/1"
_SNAPSHOT_STREAM = "rebatebook-engine"


@attrs.frozen(kw_only=True)
class RebateFeed(Aggregate):
    """How far the feed of one server has been processed."""

    category = "rebatefeed"
    cursor: int = 0

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, RebateEntriesRecorded):
            return self.evolve(cursor=event.upto_cursor)
        raise ValidationError(f"RebateFeed cannot apply {type(event).__name__}")


@attrs.frozen
class _Staged:
    """A batch recorded into a unit of work the book does not commit (a policy's): the engine
    already holds it, so until the same batch is seen in the stream the engine is ahead of the
    log."""

    version: int
    event: RebateEntriesRecorded
    uow: UnitOfWork


class RebateBook:
    """The engine fed from the log: :meth:`process` (items the host passes) or :meth:`on_deals`
    (a policy on :class:`~fxcrm_core.trading.DealsReceived`).

    The engine's memory always equals the fold of the book's streams (``rebatefeed-<server>``):
    before a batch, the engine restores the batches any process recorded since it last looked;
    a batch whose commit failed (a conflict, a crash of the caller) is never kept: the engine
    forgets everything and restores from the streams, so nothing is ever counted twice.
    """

    def __init__(
        self, repository: Repository, engine: RebateEngine, *, servers: Iterable[str] = ()
    ) -> None:
        self.repository = repository
        self.engine = engine
        self._index_version = 0  # how much of the book's list of servers has been read
        self._versions: dict[str, int] = {}  # per server: the stream version the engine holds
        self._cursors: dict[str, int] = {}  # ... and the feed cursor at that version
        self._staged: dict[str, list[_Staged]] = {}  # per server, in version order
        # every server whose stream the engine follows: the given ones (a book written before
        # its list of servers was kept), the ones listed, the ones seen
        self._servers: set[str] = set(servers)
        self._stale = False  # the engine processed a batch that was never recorded
        self._fresh = True  # the engine holds nothing yet: a snapshot may stand for the log
        self._lock = threading.RLock()

    def process(self, server: str, items: Sequence[FeedItem]) -> RebateEntries:
        """Process feed items past the stored cursor and record the entries, atomically with
        the new cursor (a concurrent worker on the same feed gets a ConcurrencyError, and this
        book restores what that worker recorded before its next batch)."""
        check_id(server, "a server name")
        if isinstance(items, str | bytes) or not isinstance(items, Sequence):
            raise ValidationError("feed items come as a sequence of FeedItem")
        if not all(isinstance(i, FeedItem) and i.deal.server == server for i in items):
            raise ValidationError("feed items are FeedItems of deals on the book's server")
        with self._lock:
            feed = self._catch_up(server, None)
            fresh = [i for i in items if i.cursor > feed.cursor]
            if not fresh:
                return RebateEntries()
            event = self._run(server, fresh)
            try:
                with UnitOfWork(self.repository, EventMetadata("system:rebates")) as uow:
                    uow.record(feed, event)
                    _list_server(uow, feed)
                    uow.commit()
            except BaseException:
                self._stale = True
                raise
            self._held(server, feed.version + 1, event)
            return event.entries

    def on_deals(self, recorded: RecordedEvent[DealsReceived], uow: UnitOfWork) -> None:
        """Policy handler: the entries of a recorded batch of deals, recorded into ``uow`` (the
        :class:`~fxcrm_core.events.PolicyRunner` commits it with its position). Register it as
        ``Policy("rebates", (DealsReceived,), book.on_deals)``."""
        event = recorded.event
        if not isinstance(event, DealsReceived):
            raise ValidationError(f"the rebate book cannot handle {type(event).__name__}")
        with self._lock:
            feed = self._catch_up(event.server, uow)
            fresh = [i for i in event.items if i.cursor > feed.cursor]
            if not fresh:
                return
            out = self._run(event.server, fresh)
            uow.record(feed, out)
            _list_server(uow, feed)
            staged = _Staged(feed.version + 1, out, uow)
            self._staged.setdefault(event.server, []).append(staged)

    def _run(self, server: str, fresh: list[FeedItem]) -> RebateEntriesRecorded:
        try:
            entries = self.engine.process(fresh)
            facts, parked, newest_day, late = self.engine._take_stored_changes()
        except BaseException:
            self._stale = True  # a batch half processed is in the engine's memory
            raise
        cursors = tuple([(i.deal.ticket, i.cursor) for i in fresh])
        return RebateEntriesRecorded(
            server, fresh[-1].cursor, entries, cursors, facts, parked, newest_day, late
        )

    # -- the engine in step with the log -------------------------------------------------------
    def _catch_up(self, server: str, uow: UnitOfWork | None) -> RebateFeed:
        """Bring the engine level with every server's stream (a cap counts all of a period's
        entries, whatever server paid them); returns ``server``'s feed state to record on."""
        self._servers.add(server)
        self._from_snapshot()
        self._follow_index()
        if self._stale:
            self._rebuild()
        self._read_all(uow)
        if self._stale:  # a staged batch turned out never recorded
            self._rebuild()
        staged = self._staged.get(server)
        if staged:  # still in flight in this same unit of work
            last = staged[-1]
            return RebateFeed(id=server, version=last.version, cursor=last.event.upto_cursor)
        version = self._versions.get(server, 0)
        return RebateFeed(id=server, version=version, cursor=self._cursors.get(server, 0))

    def _read_all(self, uow: UnitOfWork | None) -> None:
        """Restore the batches of every server's stream that the engine has not seen, in the
        order the log recorded them (what the engine forgets depends on that order, so a
        restored engine holds exactly what the live one held)."""
        new: list[tuple[int, str, StoredEvent]] = []
        for name in sorted(self._servers):
            found = self._unseen(name, uow)
            if found is None:
                return  # a staged batch never recorded: the caller rebuilds
            new += [(s.position, name, s) for s in found]
        codec = self.repository.codec
        for _, name, s in sorted(new, key=lambda t: t[0]):
            event = codec.decode_event(s.stream_id, s.event_type, s.data)
            if not isinstance(event, RebateEntriesRecorded):
                raise CodecError(f"{s.stream_id} holds a {type(event).__name__}")
            self._restore(event)
            self._held(name, s.version, event)

    def _unseen(self, server: str, uow: UnitOfWork | None) -> list[StoredEvent] | None:
        """The batches recorded on ``server``'s stream that the engine has not seen (none while
        its own batches are in flight in ``uow``); None, and the engine marked stale, when a
        batch it staged was not recorded."""
        staged = self._staged.get(server)
        if staged and staged[-1].uow is uow:
            return []
        stream = RebateFeed.stream_id_for(server)
        stored = self.repository.store.read_stream(
            stream, after_version=self._versions.get(server, 0)
        )
        if staged:
            del self._staged[server]
            for at, batch in enumerate(staged):
                if at >= len(stored) or not self._is_staged(stored[at], batch):
                    self._stale = True  # its commit failed: the engine holds it, the log not
                    return None
                self._held(server, batch.version, batch.event)
            stored = stored[len(staged) :]
        return list(stored)

    def _is_staged(self, stored: StoredEvent, staged: _Staged) -> bool:
        """Whether the event at the staged version is the staged batch, by content. Metadata
        cannot tell: every worker handling one upstream event records under the same actor,
        correlation and cause, yet their batches differ when what the engine reads (the IB
        tree, a client's login) changed between them; the loser of that race must restore the
        winner's batch, not keep its own. The stored payload is compared with the staged
        batch's encoding (the codec is deterministic, and entries keep their encoded lines, so
        this is cheap); a payload that differs (another batch, or one sealed by a payload
        cipher) is decoded and compared."""
        if stored.version != staged.version:
            return False
        codec = self.repository.codec
        ours = codec.encode(stored.stream_id, staged.event, staged.uow.metadata)
        if stored.event_type != ours.event_type:
            return False
        if stored.data == ours.data:
            return True
        return codec.decode_event(stored.stream_id, stored.event_type, stored.data) == staged.event

    def _held(self, server: str, version: int, event: RebateEntriesRecorded) -> None:
        self._fresh = False
        self._versions[server] = version
        self._cursors[server] = event.upto_cursor

    def _restore(self, event: RebateEntriesRecorded) -> None:
        changes = EngineChanges(event.facts, event.parked, event.newest_day, event.late)
        self.engine.restore(event.entries, event.server, event.cursors, changes)

    def _rebuild(self) -> None:
        """Forget the engine's memory and restore it from the streams of the servers known."""
        _forget(self.engine)
        self._versions.clear()
        self._cursors.clear()
        self._staged.clear()
        self._stale = False
        self._fresh = True
        self._from_snapshot()
        self._read_all(None)

    def _follow_index(self) -> None:
        """Learn the servers any process listed since the book last looked."""
        stored = self.repository.store.read_stream(
            RebateServers.stream_id_for(_INDEX), after_version=self._index_version
        )
        for s in stored:
            event = self.repository.codec.decode_event(s.stream_id, s.event_type, s.data)
            if isinstance(event, RebateFeedOpened):
                self._servers.add(event.server)
            self._index_version = s.version

    # -- reading the book ----------------------------------------------------------------------
    @staticmethod
    def recorded(
        store: EventStore, codec: EventCodec, *, servers: Iterable[str] = ()
    ) -> list[RebateEntriesRecorded]:
        """Every batch recorded, server by server (in the order of the servers' names), each
        server's in its stream's order: read from the book's own streams, the servers listed
        and ``servers`` (those of a book written before its list was kept)."""
        names = set(servers) | set(_listed(store, codec))
        out = []
        for name in sorted(names):
            for stored in store.read_stream(RebateFeed.stream_id_for(name)):
                event = codec.decode(stored).event
                if not isinstance(event, RebateEntriesRecorded):
                    raise CodecError(f"{stored.stream_id} holds a {type(event).__name__}")
                out.append(event)
        return out

    def restore(
        self, store: EventStore | None = None, codec: EventCodec | None = None
    ) -> list[RebateEntry]:
        """Bring the engine level with the book's streams; returns every entry recorded so far
        (server by server, as :meth:`recorded`). Batches the engine already holds are not
        applied again (restoring twice changes nothing). ``store`` and ``codec``, if given, are
        the repository's."""
        repository = self.repository
        if (store is not None and store is not repository.store) or (
            codec is not None and codec is not repository.codec
        ):
            raise ValidationError("a rebate book restores from its own repository")
        with self._lock:
            self._from_snapshot()
            self._follow_index()
            self._catch_up_all()
            entries: list[RebateEntry] = []
            for event in self._all():  # (caught up above: each batch is held already)
                entries.extend(event.entries)
            return entries

    # -- snapshots: a cache of the engine's state ----------------------------------------------
    def catch_up(self) -> None:
        """Bring the engine level with the book's streams, from the book's snapshot if the
        repository keeps one (see :meth:`snapshot`), so a restart takes the time of the
        batches recorded since, not of the whole history."""
        with self._lock:
            self._from_snapshot()
            self._follow_index()
            self._catch_up_all()

    def snapshot(self) -> bool:
        """Save the engine's state, level with the book's streams, in the repository's
        snapshot store (False, and nothing saved, without one). A snapshot is only a cache:
        deleting it changes nothing but the time a restart takes; one the engine cannot read
        (another format or engine settings, damaged) is ignored."""
        snapshots = self.repository.snapshots
        if snapshots is None:
            return False
        with self._lock:
            self._follow_index()
            self._catch_up_all()
            if self._stale or self._staged:
                return False  # the engine holds batches the log may not (a policy's, in flight)
            state = {
                "format": _SNAPSHOT,
                "versions": self._versions,
                "cursors": self._cursors,
                "index": self._index_version,
                "servers": sorted(self._servers),
                "engine": self.engine._dump(),
            }
            data = json.dumps(state, separators=(",", ":")).encode()
            snapshots.save_snapshot(Snapshot(_SNAPSHOT_STREAM, sum(self._versions.values()), data))
            return True

    def _from_snapshot(self) -> None:
        """While the engine holds nothing, take the book's snapshot if there is a readable one."""
        snapshots = self.repository.snapshots
        if not self._fresh or snapshots is None:
            return
        self._fresh = False
        try:
            found = snapshots.load_snapshot(_SNAPSHOT_STREAM)
        except FxCrmError:
            return  # (an unreadable snapshot store: the streams rebuild the state)
        if found is None:
            return
        try:
            state = json.loads(found.state)
            if state["format"] != _SNAPSHOT:
                return
            versions = {str(k): int(v) for k, v in state["versions"].items()}
            cursors = {str(k): int(v) for k, v in state["cursors"].items()}
            index = int(state["index"])
            servers = {str(s) for s in state["servers"]}
            engine = state["engine"]
        except (ValueError, TypeError, KeyError, AttributeError):
            return
        if not self.engine._load(engine):
            return
        self._versions.update(versions)
        self._cursors.update(cursors)
        self._index_version = index
        self._servers |= servers

    def late_corrections(self) -> list[LateCorrection]:
        """Feed items refused as beyond the engine's settlement horizon, for manual review, in
        the order recorded: each says which deal, its trading day, and the
        newest trading day then; :meth:`LateCorrection.error` is the typed refusal."""
        with self._lock:
            self._follow_index()
            return [late for event in self._all() for late in event.late]

    def _all(self) -> list[RebateEntriesRecorded]:
        """Every batch of the book's streams, in the order the log recorded them."""
        rows: list[StoredEvent] = []
        repository = self.repository
        for name in sorted(self._servers):
            rows += repository.store.read_stream(RebateFeed.stream_id_for(name))
        out = []
        for stored in sorted(rows, key=lambda r: r.position):
            event = repository.codec.decode(stored).event
            if not isinstance(event, RebateEntriesRecorded):
                raise CodecError(f"{stored.stream_id} holds a {type(event).__name__}")
            out.append(event)
        return out

    def _catch_up_all(self) -> None:
        if self._stale:
            self._rebuild()
        self._read_all(None)
        if self._stale:
            self._rebuild()


def _list_server(uow: UnitOfWork, feed: RebateFeed) -> None:
    """On a server's first batch, add the server to the book's list (in the same unit)."""
    if feed.version:
        return
    index = uow.load(RebateServers, _INDEX) or RebateServers.blank(_INDEX)
    if feed.id not in index.servers:
        uow.record(index, RebateFeedOpened(feed.id))


def _listed(store: EventStore, codec: EventCodec) -> list[str]:
    out = []
    for stored in store.read_stream(RebateServers.stream_id_for(_INDEX)):
        event = codec.decode(stored).event
        if isinstance(event, RebateFeedOpened):
            out.append(event.server)
    return out


def _forget(engine: RebateEngine) -> None:
    """Drop all the engine has learned, keeping its configuration and identity (a host holding
    it sees the restored state)."""
    engine.reset()
