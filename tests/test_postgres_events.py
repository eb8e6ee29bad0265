"""The PostgreSQL event store keeps the same contract as memory and SQLite; its positions are
gapless and in commit order under concurrent writers; a connection lost mid-append leaves
nothing and a retry with the same idempotency key records once."""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.events import (
    CheckpointStore,
    EventStore,
    NewEvent,
    SnapshotStore,
    StoredEvent,
    StreamAppend,
)
from fxcrm_core.events.store import TypeCursor
from fxcrm_core.kernel import ConcurrencyError, FixedClock, StoreError, ValidationError
from fxcrm_core.stores.postgres import PostgresDatabase
from fxcrm_core.stores.postgres.events import APPEND_LOCK, COPY_FROM, PostgresEventStore
from fxcrm_core.testing import (
    CheckpointStoreContract,
    SharedEventStoreContract,
    SnapshotStoreContract,
)
from tests.pg import drop_database, new_database, pg_dsn
from tests.typed_reads import check_typed_read_race

__all__ = ["pg_dsn"]

pytestmark = pytest.mark.postgres

Rows = list[tuple[int, str, int, str, bytes, bytes, int]]


# -- the shared contracts -------------------------------------------------------------------
class TestPostgresEventStore(SharedEventStoreContract):
    dsn: str

    def make_store(self, directory: Path, clock: FixedClock) -> EventStore:
        self.dsn = new_database()
        return PostgresEventStore(self.dsn, clock=clock)

    def close_store(self, store: EventStore) -> None:
        super().close_store(store)
        drop_database(self.dsn)

    def opener(self, directory: Path) -> Callable[[], EventStore]:
        # Another process opening the same database, as a second worker would.
        return functools.partial(PostgresEventStore, self.dsn)


class _OnOwnDatabase:
    db: PostgresDatabase

    @pytest.fixture(autouse=True)
    def _database(self, pg_dsn: str) -> Iterator[None]:
        self.db = PostgresDatabase(pg_dsn)
        yield
        self.db.close()


class TestPostgresCheckpoints(_OnOwnDatabase, CheckpointStoreContract):
    def make_checkpoints(self, directory: Path) -> CheckpointStore:
        return self.db


class TestPostgresSnapshots(_OnOwnDatabase, SnapshotStoreContract):
    def make_snapshots(self, directory: Path) -> SnapshotStore:
        return self.db


# -- the typed read: exactly what read_all gives, filtered ----------------------------------
TYPE_NAMES = ("A", "B", "C", "D")


@pytest.fixture
def pg_store(pg_dsn: str) -> Iterator[PostgresEventStore]:
    store = PostgresEventStore(pg_dsn)
    yield store
    store.close()


def _wipe(store: PostgresEventStore) -> None:
    with store.db.transaction() as conn:
        conn.execute("TRUNCATE fx_events, fx_idempotency")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
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
    pg_store: PostgresEventStore,
    log: list[list[tuple[str, str]]],
    types: frozenset[str],
    many: bool,
    after: int,
    limit: int,
) -> None:
    _wipe(pg_store)
    if many:  # hundreds of types: still one statement
        types |= {f"Other{i}" for i in range(300)}
    for commit in log:
        by_stream: dict[str, list[NewEvent]] = {}
        for stream, event_type in commit:
            by_stream.setdefault(stream, []).append(NewEvent(event_type, b"{}", b"{}"))
        pg_store.append(*(StreamAppend(s, None, e) for s, e in by_stream.items()))
    wanted = [
        s for s in pg_store.read_all(after_position=after, limit=10_000) if s.event_type in types
    ]
    events, upto = pg_store.read_all_of_types(after, types, limit)
    assert events == wanted[:limit]
    if len(events) == limit:
        assert upto == events[-1].position
    else:
        assert upto == max(pg_store.last_position(), after)
    walked: list[StoredEvent] = []
    position = after
    while True:
        events, upto = pg_store.read_all_of_types(position, types, limit)
        assert upto >= position
        walked += events
        if len(events) < limit:
            break
        position = upto
    assert walked == wanted


def test_typed_reads_refuse_a_limit_below_one(pg_store: PostgresEventStore) -> None:
    with pytest.raises(ValidationError):
        pg_store.read_all_of_types(0, frozenset({"A"}), 0)


def test_a_type_cursor_catches_up_through_the_typed_read(pg_store: PostgresEventStore) -> None:
    for i in range(25):
        kind = "A" if i % 5 == 0 else "B"
        pg_store.append(StreamAppend(f"s{i % 3}", None, [NewEvent(kind, b"{}", b"{}")]))
    cursor = TypeCursor(pg_store, frozenset({"A"}), batch=2)
    assert [e.position for e in cursor.new_rows()] == [1, 6, 11, 16, 21]
    assert cursor.position == 25
    pg_store.append(StreamAppend("s9", 0, [NewEvent("A", b"{}", b"{}")]))
    assert [e.position for e in cursor.new_rows()] == [26]
    assert list(cursor.new_rows()) == []


def test_a_typed_read_never_skips_a_commit_made_while_it_reads(pg_dsn: str) -> None:
    reader, writer = PostgresEventStore(pg_dsn), PostgresEventStore(pg_dsn)
    check_typed_read_race(reader, writer)  # (the writer on connections of its own)
    reader.close()
    writer.close()


# -- big appends (COPY) read back as written -------------------------------------------------
def test_an_append_big_enough_for_copy_reads_back_byte_for_byte(
    pg_store: PostgresEventStore,
) -> None:
    events = [
        NewEvent(f"T{i % 3}", bytes([i % 256]) * (i + 1) + b"\x00\xff", b'{"m":' + b"%d}" % i)
        for i in range(COPY_FROM * 3)
    ]
    pg_store.append(StreamAppend("small", 0, events[:2]))
    result = pg_store.append(
        StreamAppend("big-a", 0, events[: COPY_FROM * 2]),
        StreamAppend("big-b", 0, events[COPY_FROM * 2 :]),
    )
    assert result.versions == {"big-a": COPY_FROM * 2, "big-b": COPY_FROM}
    assert result.last_position == 2 + COPY_FROM * 3
    read = pg_store.read_all(after_position=2, limit=10_000)
    assert [NewEvent(e.event_type, e.data, e.metadata) for e in read] == events
    assert [e.position for e in read] == list(range(3, 3 + COPY_FROM * 3))
    assert [e.version for e in pg_store.read_stream("big-b")] == list(range(1, COPY_FROM + 1))


# -- the gap problem -------------------------------------------------------------------------
class _SlowCommits(PostgresEventStore):
    """Holds each append's transaction open for a random short time after its rows are in."""

    def __init__(self, dsn: str, seed: int) -> None:
        super().__init__(dsn)
        self._random = random.Random(seed)

    def _insert(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        rows: Rows,
        key_row: tuple[str, bytes, str] | None,
    ) -> None:
        super()._insert(conn, rows, key_row)
        time.sleep(self._random.uniform(0, 0.01))


class _SequenceNumbered(_SlowCommits):
    """What the append lock prevents: writers in parallel (each under a lock of its own),
    positions handed out by a sequence at insert time, commits in any order."""

    def __init__(self, dsn: str, seed: int) -> None:
        super().__init__(dsn, seed)
        self._append_lock = APPEND_LOCK + 1 + seed

    def _insert(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        rows: Rows,
        key_row: tuple[str, bytes, str] | None,
    ) -> None:
        numbers = conn.execute(
            "SELECT nextval('fx_gap_demo') FROM generate_series(1, %s)", (len(rows),)
        ).fetchall()
        renumbered = [(int(str(p[0])), *r[1:]) for p, r in zip(numbers, rows, strict=True)]
        super()._insert(conn, renumbered, key_row)


WRITERS, PER_WRITER = 4, 25
TOTAL = sum(1 + (1 + i % 3) for i in range(PER_WRITER)) * WRITERS


def _follow_while_writing(
    dsn: str, writer: Callable[[str, int], PostgresEventStore]
) -> list[StoredEvent]:
    """Writer threads (a store and connections each) append while a follower thread reads on
    from the last position it saw, as a projection does; what the follower saw."""
    failures: list[BaseException] = []
    writing = threading.Event()
    seen: list[StoredEvent] = []

    def write(n: int) -> None:
        store = writer(dsn, n)
        try:
            for i in range(PER_WRITER):
                events = [
                    NewEvent("Wrote", f"{n}:{i}:{k}".encode(), b"{}") for k in range(1 + i % 3)
                ]
                store.append(
                    StreamAppend(f"w{n}", i, events[:1]), StreamAppend(f"w{n}-{i}", 0, events)
                )
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)
        finally:
            store.close()

    def follow() -> None:
        follower = PostgresEventStore(dsn)
        last = 0
        try:
            while True:
                finished = not writing.is_set()
                batch = follower.read_all(after_position=last, limit=5)
                seen.extend(batch)
                if batch:
                    last = batch[-1].position
                elif finished:
                    return
        except BaseException as exc:
            failures.append(exc)
        finally:
            follower.close()

    writing.set()
    writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    follower = threading.Thread(target=follow)
    for t in (*writers, follower):
        t.start()
    for t in writers:
        t.join()
    writing.clear()
    follower.join()
    assert failures == []
    return seen


def test_a_follower_sees_every_event_once_in_position_order_while_writers_commit_late(
    pg_dsn: str,
) -> None:
    seen = _follow_while_writing(pg_dsn, lambda dsn, n: _SlowCommits(dsn, seed=n))
    assert [e.position for e in seen] == list(range(1, TOTAL + 1))
    assert len({(e.stream_id, e.version) for e in seen}) == TOTAL
    store = PostgresEventStore(pg_dsn)
    assert seen == store.read_all(limit=10_000)
    store.close()


def test_without_the_append_lock_the_same_follower_skips_late_commits(pg_dsn: str) -> None:
    """The check above can fail: positions from a sequence, writers in parallel, and the
    follower misses events committed after a later position was read."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE fx_gap_demo")
    seen = _follow_while_writing(pg_dsn, lambda dsn, n: _SequenceNumbered(dsn, seed=n))
    store = PostgresEventStore(pg_dsn)
    everything = store.read_all(limit=10_000)
    store.close()
    assert [e.position for e in everything] == list(range(1, TOTAL + 1))
    assert len(seen) < TOTAL  # skipped
    assert set(seen) < set(everything)


class _HeldOpen(PostgresEventStore):
    """Keeps its next append's transaction open, rows inserted, until released."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.inside, self.release = threading.Event(), threading.Event()

    def _insert(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        rows: Rows,
        key_row: tuple[str, bytes, str] | None,
    ) -> None:
        super()._insert(conn, rows, key_row)
        self.inside.set()
        self.release.wait(timeout=30)


def test_reads_never_wait_for_an_open_append_and_appends_wait_their_turn(pg_dsn: str) -> None:
    holder, other, reader = (
        _HeldOpen(pg_dsn),
        PostgresEventStore(pg_dsn),
        PostgresEventStore(pg_dsn),
    )
    reader.append(StreamAppend("before", 0, [NewEvent("A", b"{}", b"{}")]))
    held = threading.Thread(
        target=holder.append, args=(StreamAppend("held", 0, [NewEvent("A", b"{}", b"{}")] * 3),)
    )
    held.start()
    try:
        assert holder.inside.wait(timeout=30)
        # The append holds the lock with its rows in: every read answers at once, without them.
        started = time.monotonic()
        assert [e.stream_id for e in reader.read_all()] == ["before"]
        assert reader.last_position() == 1
        assert reader.read_all_of_types(0, frozenset({"A"}), 10)[1] == 1
        assert reader.read_stream("held") == []
        assert time.monotonic() - started < 5
        # Another append waits for the lock, then lands after the held one.
        late = threading.Thread(
            target=other.append, args=(StreamAppend("late", 0, [NewEvent("B", b"{}", b"{}")]),)
        )
        late.start()
        late.join(timeout=0.3)
        assert late.is_alive()
        holder.release.set()
        held.join(timeout=30)
        late.join(timeout=30)
        assert [(e.position, e.stream_id) for e in reader.read_all()] == [
            (1, "before"),
            (2, "held"),
            (3, "held"),
            (4, "held"),
            (5, "late"),
        ]
    finally:
        holder.release.set()
        for store in (holder, other, reader):
            store.close()


# -- a connection lost mid-append ------------------------------------------------------------
class _KilledMidAppend(PostgresEventStore):
    """Lets another connection terminate this one after the rows are in, before the commit."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.kill_next = False

    def _insert(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        rows: Rows,
        key_row: tuple[str, bytes, str] | None,
    ) -> None:
        super()._insert(conn, rows, key_row)
        if self.kill_next:
            self.kill_next = False
            pid = conn.info.backend_pid
            with psycopg.connect(self.db.dsn, autocommit=True) as killer:
                killer.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            time.sleep(0.05)


@pytest.mark.parametrize("rows", [2, COPY_FROM + 1])
def test_a_killed_connection_leaves_nothing_and_a_retry_with_its_key_records_once(
    pg_dsn: str, rows: int
) -> None:
    store = _KilledMidAppend(pg_dsn)
    store.append(StreamAppend("before", 0, [NewEvent("Opened", b"{}", b"{}")]))
    command = StreamAppend("wallet-1", 0, [NewEvent("Credited", b'{"n":1}', b"{}")] * rows)
    store.kill_next = True
    with pytest.raises(StoreError, match="outcome is unknown"):
        store.append(command, idempotency_key="psp:7")
    assert store.last_position() == 1
    assert store.read_stream("wallet-1") == []
    with store.db.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM fx_idempotency").fetchone() == (0,)
    # The outcome was unknown to the caller: it retries with the same key, twice.
    first = store.append(command, idempotency_key="psp:7")
    again = store.append(command, idempotency_key="psp:7")
    assert not first.replayed
    assert again.replayed
    assert first.last_position == again.last_position == 1 + rows
    assert store.stream_version("wallet-1") == rows
    assert [e.position for e in store.read_all(limit=10_000)] == list(range(1, rows + 2))
    store.close()


def test_a_shared_database_stays_open_when_a_store_on_it_closes(pg_dsn: str) -> None:
    db = PostgresDatabase(pg_dsn)
    store = PostgresEventStore(db)
    store.append(StreamAppend("s", 0, [NewEvent("A", b"{}", b"{}")]))
    store.close()
    assert db.get_checkpoint("nothing") == 0
    assert PostgresEventStore(db).stream_version("s") == 1
    db.close()
    with pytest.raises(StoreError):
        store.last_position()


# -- one event on one stream (the fused path) -------------------------------------------------
def test_single_event_appends_racing_on_one_stream_each_version_once_no_gap(pg_dsn: str) -> None:
    """Four writers append one event at a time to one stream, each at the version it read:
    every version is taken once, a loser gets ConcurrencyError and writes nothing, and a
    follower reading on by position sees every event once, positions 1..N."""
    stores = [PostgresEventStore(pg_dsn) for _ in range(4)]
    won: list[int] = []
    lost = [0]
    seen: list[int] = []
    stop = threading.Event()

    def write(store: PostgresEventStore, n: int) -> None:
        for i in range(25):
            version = store.stream_version("hot")
            try:
                result = store.append(
                    StreamAppend(
                        "hot", version, [NewEvent("Hit", f'{{"w":{n},"i":{i}}}'.encode(), b"{}")]
                    )
                )
                won.append(result.versions["hot"])
            except ConcurrencyError:
                lost[0] += 1

    def follow() -> None:
        reader = PostgresEventStore(pg_dsn)
        last = 0
        while not stop.is_set() or last < reader.last_position():
            for e in reader.read_all(after_position=last, limit=50):
                seen.append(e.position)
                last = e.position
        reader.close()

    follower = threading.Thread(target=follow)
    follower.start()
    writers = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    follower.join()
    assert sorted(won) == list(range(1, len(won) + 1))
    assert len(won) + lost[0] == 100
    assert stores[0].stream_version("hot") == len(won)
    assert seen == list(range(1, len(won) + 1))
    with pytest.raises(ConcurrencyError, match="is at version"):
        stores[0].append(StreamAppend("hot", 0, [NewEvent("Late", b"{}", b"{}")]))
    assert stores[0].last_position() == len(won)
    for s in stores:
        s.close()
