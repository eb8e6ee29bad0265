"""Engine snapshots: a cache of the rebate engine's state in the repository's snapshot store. A
restart reads only the batches recorded after it; deleting it, or one that cannot be read,
changes nothing but speed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fxcrm_core.commissions import REBATE_EVENTS, RebateBook
from fxcrm_core.events import EventCodec, EventRegistry, Repository, Snapshot, StoredEvent
from fxcrm_core.stores import MemorySnapshotStore, SqliteEventStore
from fxcrm_core.trading import FeedItem
from tests.test_rebate_book import FEEDS, rule_engine

SNAPSHOT = "rebatebook-engine"


class CountingStore(SqliteEventStore):
    """Counts the events of the book's feed streams read."""

    read = 0

    def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        out = super().read_stream(stream_id, after_version=after_version)
        if stream_id.startswith("rebatefeed-"):
            CountingStore.read += len(out)
        return out


def repository(path: Path, snapshots: MemorySnapshotStore) -> Repository:
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    return Repository(CountingStore(path), EventCodec(registry), snapshots)


def batches(feed: list[FeedItem], size: int) -> list[list[FeedItem]]:
    return [feed[n : n + size] for n in range(0, len(feed), size)]


def restarted(path: Path, snapshots: MemorySnapshotStore) -> tuple[RebateBook, int]:
    CountingStore.read = 0
    book = RebateBook(repository(path, snapshots), rule_engine("every-rule"))
    book.catch_up()
    return book, CountingStore.read


def test_a_restart_from_the_snapshot_reads_only_later_batches_and_holds_the_same(
    tmp_path: Path,
) -> None:
    feed = FEEDS[11]
    parts = batches(feed, 40)
    path = tmp_path / "r.sqlite"
    snapshots = MemorySnapshotStore()
    live = RebateBook(repository(path, snapshots), rule_engine("every-rule"))
    for batch in parts[:-3]:
        live.process("sim-mt5", batch)
    assert live.snapshot()
    for batch in parts[-3:-1]:
        live.process("sim-mt5", batch)

    from_snapshot, read = restarted(path, snapshots)
    assert read == 2  # the two batches recorded after the snapshot
    snapshots.delete_snapshot(SNAPSHOT)
    from_log, read_all = restarted(path, snapshots)
    assert read_all == len(parts) - 1
    for book in (from_snapshot, from_log):
        assert book.engine.totals() == live.engine.totals()
        assert book.engine.waiting() == live.engine.waiting()
    # And each pays what the live book pays on the last batch.
    paid = live.process("sim-mt5", parts[-1])
    assert paid
    assert from_snapshot.process("sim-mt5", parts[-1]) == []  # recorded by the live book
    assert from_snapshot.engine.totals() == live.engine.totals()
    fresh, _ = restarted(path, snapshots)
    assert fresh.engine.totals() == live.engine.totals()


def test_an_unreadable_snapshot_is_ignored(tmp_path: Path) -> None:
    feed = FEEDS[12]
    path = tmp_path / "r.sqlite"
    snapshots = MemorySnapshotStore()
    live = RebateBook(repository(path, snapshots), rule_engine("every-rule"))
    for batch in batches(feed, 60):
        live.process("sim-mt5", batch)
    engine_damaged = (
        b'{"format":"rebate-book/1","versions":{"sim-mt5":1},"cursors":{},"index":1,'
        b'"servers":["sim-mt5"],"engine":{"format":"rebate-engine/1","settings":["rebate",null],'
        b'"paid":{"k":1}}}'
    )
    for damaged in (
        b"not json",
        b'{"format":"rebate-book/0"}',
        b'{"format":"rebate-book/1"}',
        engine_damaged,
    ):
        snapshots.save_snapshot(Snapshot(SNAPSHOT, 1, damaged))
        book, read = restarted(path, snapshots)
        assert read == len(batches(feed, 60))
        assert book.engine.totals() == live.engine.totals()
        assert book.engine.waiting() == live.engine.waiting()
    # A snapshot of an engine with other settings (here: no settlement horizon) is not taken.
    assert live.snapshot()
    same, read = restarted(path, snapshots)
    assert read == 0
    CountingStore.read = 0
    other = RebateBook(repository(path, snapshots), rule_engine("every-rule"))
    other.engine.horizon = timedelta(days=3)
    other.catch_up()
    assert CountingStore.read == len(batches(feed, 60))
    assert other.engine.totals() == same.engine.totals() == live.engine.totals()


def test_no_snapshot_store_no_snapshot(tmp_path: Path) -> None:
    registry = EventRegistry()
    registry.register_all(REBATE_EVENTS)
    book = RebateBook(
        Repository(SqliteEventStore(tmp_path / "r.sqlite"), EventCodec(registry)),
        rule_engine("every-rule"),
    )
    book.process("sim-mt5", FEEDS[11][:50])
    assert book.snapshot() is False


def test_a_snapshot_keeps_what_the_settlement_horizon_forgot(tmp_path: Path) -> None:
    from tests.test_rebate_horizon import corrections, day_feed
    from tests.test_rebate_horizon import engine as horizon_engine

    base = day_feed(8, 10)
    feed = base + corrections(base, 9)
    path = tmp_path / "r.sqlite"
    snapshots = MemorySnapshotStore()
    live = RebateBook(repository(path, snapshots), horizon_engine(2))
    parts = batches(feed, 10)
    for batch in parts[:5]:
        live.process("mt5", batch)
    assert live.snapshot()
    for batch in parts[5:]:
        live.process("mt5", batch)
    assert live.late_corrections()
    restored = RebateBook(repository(path, snapshots), horizon_engine(2))
    restored.catch_up()
    snapshots.delete_snapshot(SNAPSHOT)
    rebuilt = RebateBook(repository(path, snapshots), horizon_engine(2))
    rebuilt.catch_up()
    for book in (restored, rebuilt):
        assert book.engine._cursor == live.engine._cursor  # (private) the same deals forgotten
        assert book.engine._paid == live.engine._paid
        assert book.engine.totals() == live.engine.totals()
        assert book.late_corrections() == live.late_corrections()
