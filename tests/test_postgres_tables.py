"""Read models as PostgreSQL tables: rows equal a replay of the log, a failing page leaves
nothing, two runners in two "processes" (threads with pools of their own) apply each event once,
a rebuild gives the same rows; the log on PostgreSQL or elsewhere."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

import pytest

from fxcrm_core.events import DomainEvent, EventCodec, EventMetadata, RecordedEvent
from fxcrm_core.events.store import AppendResult, EventStore, StoredEvent, StreamAppend, iter_all
from fxcrm_core.kernel import Money, NotFoundError, ValidationError
from fxcrm_core.stores.memory import MemoryEventStore
from fxcrm_core.stores.postgres import PostgresDatabase, PostgresEventStore
from fxcrm_core.stores.postgres._db import Conn
from fxcrm_core.stores.postgres.tables import (
    TableProjection,
    TableProjectionError,
    TableProjectionRunner,
    checkpoint_name,
)
from tests.pg import pg_dsn
from tests.sample_domain import CashPaidIn, CashPaidOut, TillClosed, TillOpened, registry

__all__ = ["pg_dsn"]

pytestmark = pytest.mark.postgres

META = EventMetadata("test")
CODEC = EventCodec(registry())


class TillBalances:
    """Balance per till, from three of the four till event types (the typed read)."""

    name = "till-balances"
    event_types: frozenset[str] | None = frozenset({"TillOpened", "CashPaidIn", "CashPaidOut"})

    def schema(self, conn: Conn) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS t_balances (till_id text PRIMARY KEY, "
            "currency text NOT NULL, balance numeric NOT NULL)"
        )

    def handle(self, conn: Conn, recorded: RecordedEvent[DomainEvent]) -> None:
        match recorded.event:
            case TillOpened(currency=currency):
                conn.execute(
                    "INSERT INTO t_balances VALUES (%s, %s, 0)", (recorded.stream_id, currency.code)
                )
            case CashPaidIn(amount=amount) | CashPaidOut(amount=amount):
                sign = 1 if isinstance(recorded.event, CashPaidIn) else -1
                conn.execute(
                    "UPDATE t_balances SET balance = balance + %s WHERE till_id = %s",
                    (sign * amount.amount, recorded.stream_id),
                )

    def reset(self, conn: Conn) -> None:
        conn.execute("TRUNCATE t_balances")


class Counts:
    """Counts per event type and per stream, from every event; each applied position is a
    primary key (an event applied twice fails), with the runner that applied it."""

    name = "counts"
    event_types: frozenset[str] | None = None

    def __init__(self, who: str = "a", *, fail_at: int | None = None, pause: float = 0) -> None:
        self.who, self.fail_at, self.pause = who, fail_at, pause

    def schema(self, conn: Conn) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS t_by_type (event_type text PRIMARY KEY, n int NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS t_by_stream (stream_id text PRIMARY KEY, n int NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS t_applied (position bigint PRIMARY KEY, who text NOT NULL)"
        )

    def handle(self, conn: Conn, recorded: RecordedEvent[DomainEvent]) -> None:
        if recorded.position == self.fail_at:
            raise ValueError("Ana Lima's till is haunted")  # text a message must not repeat
        conn.execute("INSERT INTO t_applied VALUES (%s, %s)", (recorded.position, self.who))
        conn.execute(
            "INSERT INTO t_by_type VALUES (%s, 1) ON CONFLICT (event_type) "
            "DO UPDATE SET n = t_by_type.n + 1",
            (type(recorded.event).__name__,),
        )
        conn.execute(
            "INSERT INTO t_by_stream VALUES (%s, 1) ON CONFLICT (stream_id) "
            "DO UPDATE SET n = t_by_stream.n + 1",
            (recorded.stream_id,),
        )
        if self.pause:
            time.sleep(self.pause)

    def reset(self, conn: Conn) -> None:
        conn.execute("TRUNCATE t_by_type, t_by_stream, t_applied")


# -- the log and its replay in Python ---------------------------------------------------------
def write(store: EventStore, n: int, *, seed: int = 1, tills: int = 5) -> None:
    """``n`` events on ``tills`` tills (opened, paid in and out, some closed), one per append."""
    rnd = random.Random(seed)
    versions: dict[str, int] = {}
    for _ in range(n):
        till = f"till-{rnd.randrange(tills)}"
        version = versions.get(till)
        if version is None:
            version = versions[till] = store.stream_version(till)
        event: DomainEvent
        if version == 0:
            event = TillOpened(till, Money.of(0, "USD").currency, "Ana Lima")
        else:
            kind = rnd.random()
            amount = Money.of(Decimal(rnd.randrange(1, 100_000)) / 100, "USD")
            event = (
                CashPaidIn(amount)
                if kind < 0.6
                else CashPaidOut(amount)
                if kind < 0.95
                else TillClosed("end of day")
            )
        store.append(StreamAppend(till, version, (CODEC.encode(till, event, META),)))
        versions[till] = version + 1


def balance_events(store: EventStore) -> int:
    """How many events the balances read model takes (all but TillClosed)."""
    return sum(1 for s in iter_all(store) if s.event_type != "TillClosed")


def replay(store: EventStore, *, upto: int | None = None) -> dict[str, object]:
    """What the two read models' tables must hold after the log's events up to ``upto``."""
    balances: dict[str, tuple[str, Decimal]] = {}
    by_type: Counter[str] = Counter()
    by_stream: Counter[str] = Counter()
    positions: list[int] = []
    for stored in iter_all(store):
        if upto is not None and stored.position > upto:
            break
        recorded = CODEC.decode(stored)
        event = recorded.event
        by_type[type(event).__name__] += 1
        by_stream[recorded.stream_id] += 1
        positions.append(recorded.position)
        if isinstance(event, TillOpened):
            balances[recorded.stream_id] = (event.currency.code, Decimal(0))
        elif isinstance(event, CashPaidIn | CashPaidOut):
            code, balance = balances[recorded.stream_id]
            sign = 1 if isinstance(event, CashPaidIn) else -1
            balances[recorded.stream_id] = (code, balance + sign * event.amount.amount)
    return {
        "balances": balances,
        "by_type": dict(by_type),
        "by_stream": dict(by_stream),
        "applied": positions,
    }


def rows(db: PostgresDatabase) -> dict[str, object]:
    with db.transaction() as conn:
        balances = conn.execute("SELECT till_id, currency, balance FROM t_balances").fetchall()
        by_type = conn.execute("SELECT event_type, n FROM t_by_type").fetchall()
        by_stream = conn.execute("SELECT stream_id, n FROM t_by_stream").fetchall()
        applied = conn.execute("SELECT position FROM t_applied ORDER BY position").fetchall()
    return {
        "balances": {t: (c, b) for t, c, b in balances},
        "by_type": dict(by_type),
        "by_stream": dict(by_stream),
        "applied": [p for (p,) in applied],
    }


class JitteryLog:
    """A PostgreSQL log whose reads take a random extra 0-2 ms, as a process on another host
    would: without it one runner, always a commit ahead of the other, may win every page."""

    def __init__(self, store: PostgresEventStore, seed: int) -> None:
        self.store, self.random = store, random.Random(seed)

    def _wait(self) -> None:
        time.sleep(self.random.random() * 0.002)

    def append(self, *appends: StreamAppend, idempotency_key: str | None = None) -> AppendResult:
        return self.store.append(*appends, idempotency_key=idempotency_key)

    def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        return self.store.read_stream(stream_id, after_version=after_version)

    def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        self._wait()
        return self.store.read_all(after_position=after_position, limit=limit)

    def read_all_of_types(
        self, after_position: int, types: frozenset[str], limit: int
    ) -> tuple[list[StoredEvent], int]:
        self._wait()
        return self.store.read_all_of_types(after_position, types, limit)

    def stream_version(self, stream_id: str) -> int:
        return self.store.stream_version(stream_id)

    def last_position(self) -> int:
        return self.store.last_position()


@pytest.fixture
def db(pg_dsn: str) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(pg_dsn, max_size=2)
    yield database
    database.close()


@pytest.fixture
def log(db: PostgresDatabase) -> PostgresEventStore:
    return PostgresEventStore(db)


def runner(
    db: PostgresDatabase, store: EventStore, counts: Counts | None = None, *, page: int = 1000
) -> TableProjectionRunner:
    projections: list[TableProjection] = [TillBalances(), counts or Counts()]
    return TableProjectionRunner(db, store, CODEC, projections, page=page)


# -- tests ------------------------------------------------------------------------------------
def test_the_tables_equal_a_replay_of_the_log_and_advance_with_it(
    db: PostgresDatabase, log: PostgresEventStore
) -> None:
    write(log, 60)
    feeder = runner(db, log, page=7)
    assert feeder.catch_up() == 60 + balance_events(log)
    expected = replay(log)
    assert rows(db) == expected
    assert feeder.position("counts") == feeder.position("till-balances") == 60
    assert db.get_checkpoint(checkpoint_name("counts")) == 60
    assert feeder.catch_up() == 0  # nothing new
    write(log, 25, seed=2, tills=8)
    assert feeder.catch_up() > 0
    assert rows(db) == replay(log)
    assert feeder.position("counts") == 85
    # A new runner (a new process) on the same database starts from the stored positions.
    assert runner(db, log).catch_up() == 0


def test_the_log_may_live_elsewhere_and_the_pool_may_hold_one_connection(pg_dsn: str) -> None:
    memory = MemoryEventStore()
    write(memory, 40)
    one = PostgresDatabase(pg_dsn, max_size=1)
    try:
        feeder = runner(one, memory, page=6)
        feeder.catch_up()
        assert rows(one) == replay(memory)
        assert feeder.position("counts") == 40
    finally:
        one.close()


def test_a_failing_handler_keeps_nothing_of_its_page_and_the_next_catch_up_completes(
    db: PostgresDatabase, log: PostgresEventStore
) -> None:
    write(log, 45)
    broken = Counts(fail_at=17)
    feeder = runner(db, log, broken, page=10)
    with pytest.raises(TableProjectionError) as info:
        feeder.catch_up()
    message = str(info.value)
    assert "counts" in message
    assert "position 17" in message
    assert "ValueError" in message
    assert "Ana" not in message
    assert "haunted" not in message
    # The balances (listed first) are complete; counts kept pages 1..10 only: rows and position.
    assert db.get_checkpoint(checkpoint_name("counts")) == 10
    assert feeder.position("till-balances") == 45
    got, wanted = rows(db), replay(log, upto=10)
    assert got["applied"] == wanted["applied"] == list(range(1, 11))
    assert got["by_type"] == wanted["by_type"]
    assert got["by_stream"] == wanted["by_stream"]
    assert got["balances"] == replay(log)["balances"]
    broken.fail_at = None  # the handler fixed
    assert feeder.catch_up() == 35
    assert rows(db) == replay(log)


def test_two_runners_in_two_processes_apply_every_event_once_while_a_writer_appends(
    pg_dsn: str,
) -> None:
    writer_db = PostgresDatabase(pg_dsn)
    dbs = [PostgresDatabase(pg_dsn, max_size=2) for _ in range(2)]
    try:
        writer = PostgresEventStore(writer_db)
        feeders = [
            runner(d, JitteryLog(PostgresEventStore(d), i), Counts(who, pause=0.0005), page=5)
            for i, (d, who) in enumerate(zip(dbs, "ab", strict=True))
        ]
        writing = threading.Event()
        writing.set()
        applied = [0, 0]
        errors: list[BaseException] = []

        def feed(i: int) -> None:
            try:
                while writing.is_set():
                    applied[i] += feeders[i].catch_up()
                applied[i] += feeders[i].catch_up()  # after the last append
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        write(writer, 100, seed=3, tills=12)  # a backlog: both start on the same pages
        threads = [threading.Thread(target=feed, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        try:
            write(writer, 300, seed=4, tills=12)
        finally:
            writing.clear()
            for t in threads:
                t.join(timeout=120)
        assert not errors, errors
        expected = replay(writer)
        assert rows(writer_db) == expected  # t_applied's primary key: no position twice
        # Each event counted by exactly one runner, for each read model that takes it.
        assert sum(applied) == 400 + balance_events(writer)
        with writer_db.transaction() as conn:
            who = dict(conn.execute("SELECT who, count(*) FROM t_applied GROUP BY who").fetchall())
        assert set(who) == {"a", "b"}  # both runners did apply pages: they did race
    finally:
        for d in (*dbs, writer_db):
            d.close()


def test_rebuild_gives_the_same_rows(db: PostgresDatabase, log: PostgresEventStore) -> None:
    write(log, 50)
    feeder = runner(db, log, page=8)
    feeder.catch_up()
    before = rows(db)
    with db.transaction() as conn:  # a read model's rows drifted (a hand edit, a bug since fixed)
        conn.execute("UPDATE t_by_type SET n = n + 100")
        conn.execute("DELETE FROM t_balances")
    assert feeder.rebuild("counts") == 50
    assert feeder.rebuild("till-balances") == balance_events(log)
    assert rows(db) == before == replay(log)
    assert feeder.position("counts") == 50
    with pytest.raises(NotFoundError):
        feeder.rebuild("nope")


def test_a_runner_refuses_what_it_cannot_run(db: PostgresDatabase, log: PostgresEventStore) -> None:
    with pytest.raises(ValidationError):
        TableProjectionRunner(db, log, CODEC, [Counts(), Counts()])  # one name twice
    with pytest.raises(ValidationError):
        TableProjectionRunner(db, log, CODEC, [])
    with pytest.raises(ValidationError):
        TableProjectionRunner(db, log, CODEC, [Counts()], page=0)
    bad = TillBalances()
    bad.event_types = frozenset({"CashPaidIn", 1})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TableProjectionRunner(db, log, CODEC, [bad])


def test_a_rebuild_while_another_runner_catches_up_loses_and_repeats_nothing(pg_dsn: str) -> None:
    dbs = [PostgresDatabase(pg_dsn, max_size=2) for _ in range(2)]
    try:
        log = PostgresEventStore(dbs[0])
        write(log, 150, seed=5, tills=9)
        follower, rebuilder = (
            runner(d, JitteryLog(PostgresEventStore(d), i), Counts(who, pause=0.0003), page=4)
            for i, (d, who) in enumerate(zip(dbs, "ab", strict=True))
        )
        rebuilder.create_tables()
        stop = threading.Event()
        errors: list[BaseException] = []

        def follow() -> None:
            try:
                while not stop.is_set():
                    follower.catch_up()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=follow)
        thread.start()
        try:
            for n in range(3):
                time.sleep(0.05)
                write(log, 10, seed=10 + n, tills=9)
                rebuilder.rebuild("counts")
                rebuilder.rebuild("till-balances")
        finally:
            stop.set()
            thread.join(timeout=120)
        assert not errors, errors
        follower.catch_up()
        assert rows(dbs[0]) == replay(log)
        assert follower.position("counts") == 180
    finally:
        for d in dbs:
            d.close()
