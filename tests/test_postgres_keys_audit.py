"""The PostgreSQL key store and audit log keep the contracts and behaviour of the SQLite ones;
two processes racing for one subject's key get the same key; of two racing audit appends
exactly one is written and the other raises ConcurrencyError, leaving nothing of its own; a
destroyed key's bytes stay in the table's file until purge() rewrites it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fxcrm_core.access import AuditFinding, AuditRecord, AuditTrail, MemoryAuditLog
from fxcrm_core.broker import Broker
from fxcrm_core.kernel import ConcurrencyError, StoreError, ValidationError
from fxcrm_core.kernel.time import to_micros
from fxcrm_core.privacy import FieldEncryption, KeyStore, MasterKeyring
from fxcrm_core.privacy.keys import WrappedKey
from fxcrm_core.stores.postgres import PostgresDatabase
from fxcrm_core.stores.postgres.audit import COPY_FROM, PostgresAuditLog
from fxcrm_core.stores.postgres.events import PostgresEventStore
from fxcrm_core.stores.postgres.keys import PostgresKeyStore
from fxcrm_core.testing import KeyStoreContract
from tests.pg import pg_dsn
from tests.test_audit import busy_broker

__all__ = ["pg_dsn"]

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 8, 20, 59, 59, 123456, tzinfo=UTC)
Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def two_dbs(pg_dsn: str) -> Iterator[tuple[PostgresDatabase, PostgresDatabase]]:
    """Two pools on one database, as two processes would hold."""
    one, two = PostgresDatabase(pg_dsn), PostgresDatabase(pg_dsn)
    yield one, two
    one.close()
    two.close()


def _wait_for_a_lock_wait(dsn: str, timeout: float = 10.0) -> None:
    """Until some session of the database waits for a lock (the racing statement is blocked)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.01)
    pytest.fail("the racing statement never waited for the first transaction")


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(work())
        except Exception as exc:  # handed to the test to assert on
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


# -- the key store --------------------------------------------------------------------------
class TestPostgresKeyStore(KeyStoreContract):
    db: PostgresDatabase

    @pytest.fixture(autouse=True)
    def _database(self, pg_dsn: str) -> Iterator[None]:
        self.db = PostgresDatabase(pg_dsn)
        yield
        self.db.close()

    def make_keystore(self, directory: Path) -> KeyStore:
        return PostgresKeyStore(self.db)


def _wrapped(subject: str, n: int) -> WrappedKey:
    return WrappedKey(subject, f"k{n}", "m1", f"wrapped-{n}".encode(), T0 + timedelta(seconds=n))


def test_a_store_opened_from_a_dsn_is_a_key_store_and_closes_its_own_pool(pg_dsn: str) -> None:
    ks = PostgresKeyStore(pg_dsn)
    assert isinstance(ks, KeyStore)
    ks.put_new(_wrapped("c-1", 1))
    ks.close()
    with pytest.raises(StoreError, match="closed"):
        ks.get("c-1")
    again = PostgresKeyStore(pg_dsn)
    assert again.get("c-1") == _wrapped("c-1", 1)  # it was committed, not just cached
    again.close()


def test_put_new_waits_out_a_racing_insert_and_returns_its_key(
    pg_dsn: str, two_dbs: tuple[PostgresDatabase, PostgresDatabase]
) -> None:
    first = _wrapped("c-1", 1)
    with psycopg.connect(pg_dsn) as other:  # another process, its insert not yet committed
        other.execute(
            "INSERT INTO fx_data_keys (subject_id, key_id, master_key_id, wrapped, created_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            (first.subject_id, first.key_id, first.master_key_id, first.wrapped, to_micros(T0)),
        )
        thread, out = _in_thread(lambda: PostgresKeyStore(two_dbs[0]).put_new(_wrapped("c-1", 2)))
        _wait_for_a_lock_wait(pg_dsn)
        other.commit()
        thread.join(10)
    assert out == [WrappedKey("c-1", "k1", "m1", b"wrapped-1", T0)]


def test_two_processes_racing_put_new_for_one_subject_get_the_same_key(
    two_dbs: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    stores = [PostgresKeyStore(two_dbs[0]), PostgresKeyStore(two_dbs[1])]
    subjects = [f"c-{i}" for i in range(20)]
    start = threading.Barrier(4)
    got: dict[int, list[WrappedKey]] = {}

    def worker(n: int) -> None:
        store = stores[n % 2]
        start.wait()
        got[n] = [store.put_new(_wrapped(s, n)) for s in subjects]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == [0, 1, 2, 3]
    stored = {k.subject_id: k for k in stores[0].all_keys()}
    assert sorted(stored) == sorted(subjects)
    for i, subject in enumerate(subjects):
        answers = {got[n][i] for n in range(4)}
        assert answers == {stored[subject]}  # every caller uses the one key that is stored


def test_of_racing_destroys_exactly_one_destroys(
    two_dbs: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    stores = [PostgresKeyStore(two_dbs[0]), PostgresKeyStore(two_dbs[1])]
    stores[0].put_new(_wrapped("c-1", 1))
    start = threading.Barrier(6)
    results: list[bool] = []
    lock = threading.Lock()

    def worker(n: int, subject: str) -> None:
        start.wait()
        done = stores[n % 2].destroy(subject, T0 + timedelta(days=n))
        with lock:
            results.append(done)

    threads = [
        threading.Thread(target=worker, args=(n, "c-1" if n < 3 else "never-had-one"))
        for n in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False, False, False, False, True, True]
    for subject in ("c-1", "never-had-one"):
        tomb = stores[1].get(subject)
        assert tomb is not None
        assert tomb.destroyed
        assert tomb.wrapped == b""


def test_rewrap_by_another_process_of_a_key_destroyed_meanwhile_changes_nothing(
    two_dbs: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    rotating, erasing = PostgresKeyStore(two_dbs[0]), PostgresKeyStore(two_dbs[1])
    for n in range(40):
        rotating.put_new(_wrapped(f"c-{n}", n))
    plan = [
        WrappedKey(k.subject_id, k.key_id, "m2", b"re-" + k.wrapped, k.created_at)
        for k in rotating.all_keys()
    ]
    erasing.destroy("c-39", T0)
    with pytest.raises(ValidationError, match="live keys only"):
        rotating.rewrap(plan)
    assert {k.master_key_id for k in rotating.all_keys() if not k.destroyed} == {"m1"}
    rotating.rewrap([k for k in plan if k.subject_id != "c-39"])
    keys = rotating.all_keys()
    assert len(keys) == 40
    assert {k.master_key_id for k in keys if not k.destroyed} == {"m2"}
    assert all(k.wrapped.startswith(b"re-wrapped-") for k in keys if not k.destroyed)
    rotating.rewrap([])


def _table_file_holds(dsn: str, secret: bytes) -> bool:
    """True if any 16-byte piece of ``secret`` is in the key table's file on the server."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CHECKPOINT")  # write the table's pages to its file
            row = conn.execute("SELECT pg_relation_filepath('fx_data_keys')").fetchone()
            assert row is not None
            raw = conn.execute("SELECT pg_read_binary_file(%s)", (row[0],)).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("reading the table's file needs a superuser (or pg_read_server_files)")
    assert raw is not None
    data = bytes(raw[0])
    return any(secret[i : i + 16] in data for i in range(len(secret) - 15))


def test_a_destroyed_keys_bytes_stay_in_the_table_file_until_purge(pg_dsn: str) -> None:
    ks = PostgresKeyStore(pg_dsn)
    secret = bytes(range(7, 7 + 60))  # as long as a wrapped key
    ks.put_new(WrappedKey("victim", "k1", "m1", secret, T0))
    for n in range(30):  # neighbours on the same page, live and staying
        ks.put_new(_wrapped(f"c-{n}", n))
    assert _table_file_holds(pg_dsn, secret)
    assert ks.destroy("victim", T0) is True
    assert ks.get("victim") == WrappedKey("victim", "k1", "m1", b"", T0, T0)
    assert _table_file_holds(pg_dsn, secret)  # the dead row version: what the docs warn of
    ks.purge()
    assert not _table_file_holds(pg_dsn, secret)
    assert len(ks.all_keys()) == 31
    assert ks.get("c-7") == _wrapped("c-7", 7)
    ks.close()


def test_purge_refuses_while_an_open_transaction_still_sees_the_destroyed_key(pg_dsn: str) -> None:
    """VACUUM FULL copies a row version that an open snapshot may still read: while a report
    or a backup (pg_dump) in this database began before the erasure, a rewrite would carry the
    destroyed key's bytes into the new file, and a purge that said nothing would be a lie."""
    ks = PostgresKeyStore(pg_dsn)
    secret = bytes(range(70, 70 + 60))
    ks.put_new(WrappedKey("victim", "k1", "m1", secret, T0))
    for n in range(5):
        ks.put_new(_wrapped(f"c-{n}", n))
    with psycopg.connect(pg_dsn, autocommit=True) as report:
        report.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        report.execute("SELECT 1")  # its snapshot, from before the erasure; no lock on the keys
        assert ks.destroy("victim", T0) is True
        with pytest.raises(ConcurrencyError, match="purge again later") as caught:
            ks.purge(lock_wait=0.5)
        assert "victim" not in str(caught.value)
        assert _table_file_holds(pg_dsn, secret)  # not purged, and it said so
        report.execute("COMMIT")
    ks.purge()
    assert not _table_file_holds(pg_dsn, secret)
    assert len(ks.all_keys()) == 6
    ks.close()


def test_purge_gives_up_rather_than_queue_readers_behind_a_long_transaction(
    pg_dsn: str,
) -> None:
    ks = PostgresKeyStore(pg_dsn)
    ks.put_new(_wrapped("c-1", 1))
    for bad in (0, -1, 3601, True, "1", Decimal("1"), float("nan")):
        with pytest.raises(ValidationError):
            ks.purge(lock_wait=bad)  # type: ignore[arg-type]
    with psycopg.connect(pg_dsn) as reader:
        reader.execute("SELECT count(*) FROM fx_data_keys")  # holds the table until it ends
        began = time.monotonic()
        with pytest.raises(ConcurrencyError, match="purge again later"):
            ks.purge(lock_wait=0.2)
        with pytest.raises(ConcurrencyError):  # under a millisecond is still a limit
            ks.purge(lock_wait=0.0001)
        assert time.monotonic() - began < 5
        assert ks.get("c-1") == _wrapped("c-1", 1)  # readers were not left queued
    ks.purge()
    assert ks.get("c-1") == _wrapped("c-1", 1)
    ks.close()


def test_the_audit_secret_lives_in_the_postgres_key_store_for_every_process(
    two_dbs: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    ring = MasterKeyring.generate()
    log = PostgresAuditLog(two_dbs[0])
    broker = busy_broker()
    first = AuditTrail.keyed_from(log, FieldEncryption(PostgresKeyStore(two_dbs[0]), ring))
    assert first.keyed
    assert first.catch_up(broker.store, broker.codec) == 8
    # Another process, its own pools and encryption: the same secret, the same chain.
    other_log = PostgresAuditLog(two_dbs[1])
    other = AuditTrail.keyed_from(other_log, FieldEncryption(PostgresKeyStore(two_dbs[1]), ring))
    assert other.verify(broker.store) is None
    assert other.head() == first.head()
    assert other.head().signature is not None
    # Under any other key the chain does not verify.
    stranger = AuditTrail(other_log, key=b"k" * 32)
    assert stranger.verify() == AuditFinding(1, "edited")


# -- the audit log ----------------------------------------------------------------------------
def _records(start: int, count: int, tag: str = "a") -> list[AuditRecord]:
    return [
        AuditRecord(
            seq,
            seq * 10,
            T0 + timedelta(microseconds=seq),
            f"staff:{tag}",
            "host.TillOpened",
            f"till-{seq}",
            None if seq % 2 else f"corr-{seq}",
            f"{seq - 1:064x}",
            f"{seq:064x}",
            None if seq % 3 == 0 else f"{seq + 7:064x}",
        )
        for seq in range(start, start + count)
    ]


@pytest.mark.parametrize("count", [3, COPY_FROM + 5])
def test_records_read_back_as_written(pg_dsn: str, count: int) -> None:
    log = PostgresAuditLog(pg_dsn)
    assert log.last() is None
    assert log.records() == []
    log.append([])
    batch = _records(1, count)
    log.append(batch)
    log.append(_records(count + 1, 2))
    assert log.records() == batch + _records(count + 1, 2)
    assert log.last() == _records(count + 1, 2)[-1]
    with pytest.raises(ConcurrencyError, match="nothing was written"):
        log.append(_records(count + 1, 1))  # does not continue the log
    assert len(log.records()) == count + 2
    log.close()


def test_audit_follows_the_log_as_in_memory(pg_dsn: str) -> None:
    broker = busy_broker()
    log = PostgresAuditLog(pg_dsn)
    trail = AuditTrail(log)
    assert trail.catch_up(broker.store, broker.codec) == 8
    assert trail.catch_up(broker.store, broker.codec) == 0
    memory = AuditTrail(MemoryAuditLog())
    memory.catch_up(broker.store, broker.codec)
    assert log.records() == memory.log.records()  # field for field, times and None alike
    assert trail.verify(broker.store) is None
    assert trail.head() == memory.head()
    log.close()


def test_tampering_in_the_postgres_table(pg_dsn: str) -> None:
    broker = busy_broker()
    log = PostgresAuditLog(pg_dsn)
    trail = AuditTrail(log)
    trail.catch_up(broker.store, broker.codec)
    assert trail.verify() is None
    with psycopg.connect(pg_dsn, autocommit=True) as raw:
        # Flip one byte of one field.
        row = raw.execute("SELECT actor FROM fx_audit WHERE seq = 5").fetchone()
        assert row is not None
        actor = str(row[0])
        raw.execute("UPDATE fx_audit SET actor = %s WHERE seq = 5", (actor[:-1] + "X",))
        assert trail.verify() == AuditFinding(5, "edited")
        raw.execute("UPDATE fx_audit SET actor = %s WHERE seq = 5", (actor,))
        assert trail.verify() is None
        # Swap the contents of two rows.
        cols = "seq, position, at, actor, action, target, correlation_id, prev_hash, hash"
        sets = ", ".join(f"{c.strip()} = %s" for c in cols.split(","))
        r3 = raw.execute(f"SELECT {cols} FROM fx_audit WHERE row = 3").fetchone()
        r4 = raw.execute(f"SELECT {cols} FROM fx_audit WHERE row = 4").fetchone()
        assert r3 is not None
        assert r4 is not None
        with raw.transaction():  # seq is unique: out of the way first
            raw.execute("UPDATE fx_audit SET seq = -seq WHERE row IN (3, 4)")
            raw.execute(f"UPDATE fx_audit SET {sets} WHERE row = 3", r4)
            raw.execute(f"UPDATE fx_audit SET {sets} WHERE row = 4", r3)
        assert trail.verify() == AuditFinding(3, "reordered")
        with raw.transaction():
            raw.execute("UPDATE fx_audit SET seq = -seq WHERE row IN (3, 4)")
            raw.execute(f"UPDATE fx_audit SET {sets} WHERE row = 3", r3)
            raw.execute(f"UPDATE fx_audit SET {sets} WHERE row = 4", r4)
        assert trail.verify() is None
        # Delete a row.
        raw.execute("DELETE FROM fx_audit WHERE seq = 2")
        assert trail.verify() == AuditFinding(2, "deleted")
    log.close()


def _copy_events(broker: Broker, dsn: str) -> None:
    """The broker's stored events, byte for byte, into the database's fx_events."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO fx_events (position, stream_id, version, event_type, data, metadata, "
            "recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    e.position,
                    e.stream_id,
                    e.version,
                    e.event_type,
                    e.data,
                    e.metadata,
                    to_micros(e.recorded_at),
                )
                for e in broker.store.read_all()
            ],
        )


def test_an_edited_amount_in_the_postgres_events_is_named(pg_dsn: str) -> None:
    broker = busy_broker()
    _copy_events(broker, pg_dsn)
    db = PostgresDatabase(pg_dsn)
    store = PostgresEventStore(db)
    trail = AuditTrail(PostgresAuditLog(db))
    assert trail.catch_up(store, broker.codec) == 8
    assert trail.verify(store) is None
    with psycopg.connect(pg_dsn, autocommit=True) as raw:
        raw.execute(
            "UPDATE fx_events SET data = convert_to(replace(convert_from(data, 'UTF8'), "
            "'11.00', '911.00'), 'UTF8') WHERE position = 4"
        )
        row = raw.execute("SELECT data FROM fx_events WHERE position = 4").fetchone()
        assert row is not None
        assert bytes(row[0]) == b'{"amount":"911.00 USD"}'
        assert trail.verify(store) == AuditFinding(4, "event-changed", 4)
        raw.execute("DELETE FROM fx_events WHERE position = 7")
        assert trail.verify(store) == AuditFinding(4, "event-changed", 4)
        raw.execute(
            "UPDATE fx_events SET data = convert_to(replace(convert_from(data, 'UTF8'), "
            "'911.00', '11.00'), 'UTF8') WHERE position = 4"
        )
        assert trail.verify(store) == AuditFinding(7, "event-missing", 7)
    db.close()


class _Stale(PostgresAuditLog):
    """A log whose first last() is read before another process appended (a race)."""

    stale = True

    def last(self) -> AuditRecord | None:
        if self.stale:
            self.stale = False
            return None
        return super().last()


def test_two_writers_never_fork_the_chain(
    two_dbs: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    broker = busy_broker()
    first = AuditTrail(PostgresAuditLog(two_dbs[0]))
    assert first.catch_up(broker.store, broker.codec) == 8
    with pytest.raises(ConcurrencyError):  # records that do not continue the log
        first.log.append([first.log.records()[0]])
    racing = AuditTrail(_Stale(two_dbs[1]))
    assert racing.catch_up(broker.store, broker.codec) == 0  # it re-reads and finds none due
    assert [r.seq for r in first.log.records()] == list(range(1, 9))
    assert first.verify(broker.store) is None


class _HeldOpen(PostgresAuditLog):
    """Holds its append's transaction open after the rows are in, until told to go on (or to
    fail, rolling back)."""

    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self.inserted = threading.Event()
        self.go = threading.Event()
        self.hold = False
        self.fail = False

    def _insert(self, conn: psycopg.Connection[tuple[Any, ...]], rows: list[Any]) -> None:
        super()._insert(conn, rows)
        if not self.hold:
            return
        self.inserted.set()
        assert self.go.wait(20)
        if self.fail:
            raise RuntimeError("the first writer fails before its commit")


@pytest.mark.parametrize("count", [2, COPY_FROM])
def test_of_two_racing_appends_one_wins_and_the_other_writes_nothing(
    pg_dsn: str, two_dbs: tuple[PostgresDatabase, PostgresDatabase], count: int
) -> None:
    winner, loser = _HeldOpen(two_dbs[0]), PostgresAuditLog(two_dbs[1])
    winner.append(_records(1, 1, "w"))
    ours, theirs = _records(2, count, "w"), _records(2, count + 1, "l")
    winner.hold = True
    first, first_out = _in_thread(lambda: winner.append(ours))
    assert winner.inserted.wait(10)
    # Both read the same end (seq 1): the second waits on the first's seq 2, uncommitted.
    second, second_out = _in_thread(lambda: loser.append(theirs))
    _wait_for_a_lock_wait(pg_dsn)
    winner.go.set()
    first.join(10)
    second.join(10)
    assert first_out == [None]
    assert len(second_out) == 1
    assert isinstance(second_out[0], ConcurrencyError)
    assert "nothing was written" in str(second_out[0])
    records = loser.records()
    assert records == _records(1, 1, "w") + ours  # none of the loser's, not one row
    with psycopg.connect(pg_dsn) as raw:
        assert raw.execute("SELECT count(*) FROM fx_audit WHERE actor = 'staff:l'").fetchone() == (
            0,
        )
    loser.append(_records(count + 2, 1, "l"))  # it goes on from the winner's end
    assert loser.last() == _records(count + 2, 1, "l")[0]


def test_a_racing_append_goes_through_when_the_first_rolls_back(
    pg_dsn: str, two_dbs: tuple[PostgresDatabase, PostgresDatabase]
) -> None:
    failing, other = _HeldOpen(two_dbs[0]), PostgresAuditLog(two_dbs[1])
    failing.hold = failing.fail = True
    first, first_out = _in_thread(lambda: failing.append(_records(1, 3, "f")))
    assert failing.inserted.wait(10)
    second, second_out = _in_thread(lambda: other.append(_records(1, 2, "o")))
    _wait_for_a_lock_wait(pg_dsn)
    failing.go.set()
    first.join(10)
    second.join(10)
    assert len(first_out) == 1
    assert isinstance(first_out[0], RuntimeError)
    assert second_out == [None]
    assert other.records() == _records(1, 2, "o")


def test_many_processes_appending_at_once_keep_one_unbroken_log(
    two_dbs: tuple[PostgresDatabase, PostgresDatabase],
) -> None:
    logs = [PostgresAuditLog(two_dbs[0]), PostgresAuditLog(two_dbs[1])]
    start = threading.Barrier(4)
    won: list[tuple[int, int, str]] = []
    lost: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        log = logs[n % 2]
        start.wait()
        for _ in range(15):
            last = log.last()
            seq = last.seq + 1 if last else 1
            size = 1 + (n * 7 + seq) % (COPY_FROM + 3)  # both ways in: executemany and COPY
            try:
                log.append(_records(seq, size, str(n)))
            except ConcurrencyError:
                with lock:
                    lost.append(n)
                continue
            with lock:
                won.append((seq, size, str(n)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    records = logs[0].records()
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert len(won) + len(lost) == 60
    assert lost  # they did race
    # Exactly the batches that were accepted, each whole, in order; nothing of a refused one.
    assert records == [r for batch in sorted(won) for r in _records(*batch)]
