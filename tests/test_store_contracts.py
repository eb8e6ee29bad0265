"""Our adapters run the same contract suites a host's adapter would."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.events import (
    CheckpointStore,
    EventStore,
    NewEvent,
    Snapshot,
    SnapshotStore,
    StreamAppend,
)
from fxcrm_core.kernel import FixedClock, StoreError, ValidationError
from fxcrm_core.stores import (
    MemoryCheckpointStore,
    MemoryEventStore,
    MemorySnapshotStore,
    SqliteDatabase,
    SqliteEventStore,
)
from fxcrm_core.testing import (
    CheckpointStoreContract,
    EventStoreContract,
    SharedEventStoreContract,
    SnapshotStoreContract,
)
from tests.typed_reads import check_typed_read_race


class TestMemoryEventStore(EventStoreContract):
    def make_store(self, directory: Path, clock: FixedClock) -> EventStore:
        return MemoryEventStore(clock)


class TestSqliteEventStore(SharedEventStoreContract):
    def make_store(self, directory: Path, clock: FixedClock) -> EventStore:
        return SqliteEventStore(directory / "events.sqlite", clock=clock)

    def opener(self, directory: Path) -> Callable[[], EventStore]:
        return functools.partial(SqliteEventStore, directory / "events.sqlite")


class TestSqliteEventStoreNormalSync(EventStoreContract):
    def make_store(self, directory: Path, clock: FixedClock) -> EventStore:
        return SqliteEventStore(directory / "events.sqlite", clock=clock, synchronous="NORMAL")


class TestMemoryCheckpoints(CheckpointStoreContract):
    def make_checkpoints(self, directory: Path) -> CheckpointStore:
        return MemoryCheckpointStore()


class TestSqliteCheckpoints(CheckpointStoreContract):
    def make_checkpoints(self, directory: Path) -> CheckpointStore:
        return SqliteDatabase(directory / "cp.sqlite")


class TestMemorySnapshots(SnapshotStoreContract):
    def make_snapshots(self, directory: Path) -> SnapshotStore:
        return MemorySnapshotStore()


class TestSqliteSnapshots(SnapshotStoreContract):
    def make_snapshots(self, directory: Path) -> SnapshotStore:
        return SqliteDatabase(directory / "snap.sqlite")


# -- the optional typed read: exactly what read_all gives, filtered -----------------------------

TYPE_NAMES = ("A", "B", "C", "D")


def _typed_store(kind: str, directory: Path) -> EventStore:
    return SqliteEventStore(directory / "typed.sqlite") if kind == "sqlite" else MemoryEventStore()


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["memory", "sqlite"]),
    log=st.lists(
        st.lists(st.tuples(st.sampled_from("xyz"), st.sampled_from(TYPE_NAMES)), min_size=1),
        max_size=12,
    ),
    types=st.frozensets(st.sampled_from((*TYPE_NAMES, "E"))),
    many=st.booleans(),
    after=st.integers(-2, 40),
    limit=st.integers(1, 6),
)
def test_typed_reads_return_exactly_the_rows_read_all_would_after_filtering(
    kind: str,
    log: list[list[tuple[str, str]]],
    types: frozenset[str],
    many: bool,
    after: int,
    limit: int,
) -> None:
    if many:  # more types than one statement takes as parameters
        types |= {f"Other{i}" for i in range(300)}
    with tempfile.TemporaryDirectory() as directory:
        store = _typed_store(kind, Path(directory))
        for commit in log:
            by_stream: dict[str, list[NewEvent]] = {}
            for stream, event_type in commit:
                by_stream.setdefault(stream, []).append(NewEvent(event_type, b"{}", b"{}"))
            store.append(*(StreamAppend(s, None, e) for s, e in by_stream.items()))
        typed = getattr(store, "read_all_of_types")  # noqa: B009
        wanted = [
            s for s in store.read_all(after_position=after, limit=10_000) if s.event_type in types
        ]
        events, upto = typed(after, types, limit)
        assert events == wanted[:limit]
        if len(events) == limit:
            assert upto == events[-1].position
        else:
            assert upto == max(store.last_position(), after)
        # Reading on from each position read up to walks the same rows, none twice.
        walked, position = [], after
        while True:
            events, upto = typed(position, types, limit)
            assert upto >= position
            walked += events
            if len(events) < limit:
                break
            position = upto
        assert walked == wanted
        if isinstance(store, SqliteEventStore):
            store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_typed_reads_refuse_a_limit_below_one(kind: str, tmp_path: Path) -> None:
    typed = getattr(_typed_store(kind, tmp_path), "read_all_of_types")  # noqa: B009
    with pytest.raises(ValidationError):
        typed(0, frozenset({"A"}), 0)


def test_a_typed_read_never_skips_a_commit_made_while_it_reads(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "race.sqlite")
    check_typed_read_race(store, store)  # (one store: a connection per thread)
    store.close()


# -- a full disk, a damaged file: StoreError with the cause (issue 14 item 6) -------------------
def _one(stream: str, size: int = 10) -> StreamAppend:
    return StreamAppend(stream, 0, [NewEvent("Opened", b"{" + b" " * size + b"}", b"{}")])


def _full_store(directory: Path) -> SqliteEventStore:
    """A store whose file can grow no more: SQLite answers SQLITE_FULL, as on a full disk."""
    store = SqliteEventStore(directory / "full.sqlite")
    store.append(_one("warm-up"))
    conn = store.db.connection()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {int(pages)}")
    return store


def test_a_full_disk_surfaces_as_a_store_error_naming_the_cause(tmp_path: Path) -> None:
    store = _full_store(tmp_path)
    before = store.last_position()
    with pytest.raises(StoreError, match="full") as raised:
        store.append(_one("big", 200_000))
    assert "rollback" not in str(raised.value)
    assert store.last_position() == before  # nothing half-written
    assert store.read_stream("big") == []
    # The connection is usable afterwards: a small write still fits.
    store.db.connection().execute("PRAGMA max_page_count = 1000000")
    assert store.append(_one("small")).versions == {"small": 1}
    store.close()


def test_a_full_disk_on_snapshots_and_checkpoints_is_a_store_error(tmp_path: Path) -> None:
    store = _full_store(tmp_path)
    with pytest.raises(StoreError, match="full"):
        store.db.save_snapshot(Snapshot("s-1", 1, b"x" * 200_000))
    assert store.db.load_snapshot("s-1") is None
    store.close()


def test_a_file_that_is_no_database_is_refused_with_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database" * 500)
    with pytest.raises(StoreError):
        SqliteEventStore(path)


def test_reading_a_damaged_page_raises_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.sqlite"
    store = SqliteEventStore(path)
    for i in range(200):
        store.append(_one(f"s-{i}", 500))
    store.db.checkpoint()
    store.close()
    raw = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page, len(raw), page):  # keep the header and schema page
        raw[offset : offset + 16] = b"\xa5" * 16
    path.write_bytes(bytes(raw))
    damaged = SqliteEventStore(path)
    for read in (
        lambda: damaged.read_all(limit=10_000),
        lambda: damaged.read_stream("s-150"),
        lambda: damaged.read_all_of_types(0, frozenset({"Opened"}), 10_000),
    ):
        with pytest.raises(StoreError):
            read()
    damaged.close()


def test_a_row_with_an_impossible_time_reads_as_a_store_error(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.sqlite")
    store.append(_one("s-1"))
    with store.db.write() as conn:
        conn.execute("UPDATE fx_events SET recorded_at = ?", (2**62,))
    with pytest.raises(StoreError):
        store.read_stream("s-1")
    with pytest.raises(StoreError):
        store.read_all()
    store.close()
