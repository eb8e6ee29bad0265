"""A review of the PostgreSQL stores as a broker's engineer and an attacker would use them:
hostile texts, oversized values, a server that restarts under the pool, a connection string
that must not leak, a migration against a server that never answers, and what the docs promise.

Every error reaching a host is an FxCrmError subclass (ValidationError for a value the store
cannot hold: nothing was written and a retry cannot help), never a builtin or psycopg error."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from fxcrm_core.events.store import NewEvent, Snapshot, StreamAppend
from fxcrm_core.kernel import StoreError, ValidationError
from fxcrm_core.kernel.errors import ConcurrencyError, FxCrmError
from fxcrm_core.stores.postgres import (
    PostgresDatabase,
    PostgresEventStore,
    PostgresKeyStore,
    migrate,
)
from fxcrm_core.stores.postgres._schema import MIGRATIONS
from fxcrm_core.stores.postgres.leases import lease_key
from fxcrm_core.stores.sqlite import SqliteEventStore
from tests.pg import _admin, drop_database, dsn_of, pg_dsn

__all__ = ["pg_dsn"]

pytestmark = pytest.mark.postgres

EVENT = NewEvent("Paid", b'{"amount": "10.00"}', b"{}")


@pytest.fixture
def db(pg_dsn: str) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(pg_dsn, min_size=2, max_size=2)
    try:
        yield database
    finally:
        database.close()


def _raises_typed(call: Callable[[], object]) -> FxCrmError:
    """Run ``call``: it must raise an FxCrmError (a builtin or psycopg error fails the test)."""
    try:
        call()
    except FxCrmError as exc:
        return exc
    except Exception as exc:  # the finding: a builtin reached the host
        pytest.fail(f"{type(exc).__module__}.{type(exc).__name__} reached the host")
    pytest.fail("no error at all")


# -- hostile texts -------------------------------------------------------------------------------
SURROGATE = "client-\ud800"  # a lone surrogate: a str Python holds, no UTF-8 can encode


@pytest.mark.parametrize("events", [1, 2, 40], ids=["one", "pipelined", "copy"])
def test_a_stream_id_with_a_lone_surrogate_is_a_validation_error_not_unicode_encode_error(
    db: PostgresDatabase, events: int
) -> None:
    store = PostgresEventStore(db)
    exc = _raises_typed(lambda: store.append(StreamAppend(SURROGATE, None, [EVENT] * events)))
    assert isinstance(exc, ValidationError)
    assert "\ud800" not in str(exc)
    assert store.last_position() == 0


def test_lone_surrogates_in_keys_reads_checkpoints_and_subjects_are_validation_errors(
    db: PostgresDatabase,
) -> None:
    store, keys = PostgresEventStore(db), PostgresKeyStore(db)
    calls: list[Callable[[], object]] = [
        lambda: store.append(StreamAppend("s", None, [EVENT]), idempotency_key=SURROGATE),
        lambda: store.append(StreamAppend("s", None, [NewEvent(SURROGATE, b"", b"")])),
        lambda: store.read_stream(SURROGATE),
        lambda: store.read_all_of_types(0, frozenset({SURROGATE}), 10),
        lambda: db.set_checkpoint(SURROGATE, 1),
        lambda: db.load_snapshot(SURROGATE),
        lambda: keys.get(SURROGATE),
        lambda: keys.destroy(SURROGATE, datetime.now(UTC)),
    ]
    for call in calls:
        assert isinstance(_raises_typed(call), ValidationError)
    assert store.last_position() == 0


def test_a_lease_name_with_a_lone_surrogate_has_a_key_as_in_local_leases() -> None:
    # LocalLeases takes any non-empty name of up to 200 characters; so does the PostgreSQL key.
    assert lease_key(SURROGATE) == lease_key(SURROGATE)
    assert lease_key(SURROGATE) != lease_key("client-")


def test_a_nul_character_is_a_validation_error_with_nothing_written(db: PostgresDatabase) -> None:
    store = PostgresEventStore(db)
    calls: list[Callable[[], object]] = [
        lambda: store.append(StreamAppend("a\x00b", None, [EVENT])),
        lambda: store.append(StreamAppend("a\x00b", 0, [EVENT, EVENT])),
        lambda: store.append(StreamAppend("a\x00b", None, [EVENT] * 40)),
        lambda: store.append(StreamAppend("s", None, [EVENT]), idempotency_key="k\x00"),
        lambda: db.set_checkpoint("p\x00", 1),
        lambda: db.save_snapshot(Snapshot("s\x00", 1, b"state")),
    ]
    for call in calls:
        exc = _raises_typed(call)
        assert isinstance(exc, ValidationError), f"{type(exc).__name__}: {exc}"
    assert store.last_position() == 0


def test_a_stream_id_postgresql_cannot_hold_is_refused_by_sqlite_too(tmp_path: Path) -> None:
    """Parity: a stream id with a NUL goes into SQLite (and reads back) but not into
    PostgreSQL, so a log cannot move from one to the other. The shared argument checks
    (events/store.py check_appends) should refuse what any adapter cannot hold."""
    sqlite = SqliteEventStore(tmp_path / "events.db")
    try:
        with pytest.raises(ValidationError):
            sqlite.append(StreamAppend("a\x00b", None, [EVENT]))
    finally:
        sqlite.close()


@pytest.mark.parametrize("what", ["stream", "key", "checkpoint"])
def test_an_oversized_indexed_text_is_refused_not_reported_as_an_unknown_outcome(
    db: PostgresDatabase, what: str
) -> None:
    """A text over the btree limit (~2.7 kB, random so it does not compress) is refused by the
    server (ProgramLimitExceeded, an OperationalError to psycopg): nothing was written. It
    must not say "connection failed ... outcome unknown; retry with its idempotency key",
    which sends a host into retrying a write that can never succeed."""
    store = PostgresEventStore(db)
    long = os.urandom(4000).hex()
    call: Callable[[], object] = {
        "stream": lambda: store.append(StreamAppend(long, None, [EVENT])),
        "key": lambda: store.append(StreamAppend("s", None, [EVENT]), idempotency_key=long),
        "checkpoint": lambda: db.set_checkpoint(long, 1),
    }[what]
    exc = _raises_typed(call)
    assert isinstance(exc, ValidationError), f"{type(exc).__name__}: {exc}"
    assert "unknown" not in str(exc)
    assert store.last_position() == 0


def test_limits_and_positions_out_of_range_are_validation_errors(db: PostgresDatabase) -> None:
    store = PostgresEventStore(db)
    store.append(StreamAppend("s", None, [EVENT]))
    for call in (
        lambda: store.read_all(limit=-1),
        lambda: store.read_all(limit=2**70),
        lambda: store.read_all_of_types(0, frozenset({"Paid"}), 2**70),
        lambda: db.set_checkpoint("p", 2**70),
    ):
        assert isinstance(_raises_typed(call), ValidationError)
    assert store.read_all(after_position=2**70) == []
    assert [e.position for e in store.read_all(after_position=-5)] == [1]


# -- a server that restarts under the pool --------------------------------------------------------
def test_pooled_connections_ended_by_the_server_are_replaced_not_failed(
    db: PostgresDatabase, pg_dsn: str
) -> None:
    """A restart, a failover or a proxy's idle timeout ends every pooled session. The next
    commands must get fresh connections: without a check, each dead pooled connection fails one
    command with "outcome unknown" although nothing was ever sent."""
    store = PostgresEventStore(db)
    store.append(StreamAppend("s", None, [EVENT]))
    with db.pool.connection(), db.pool.connection():
        pass  # both pooled connections exist
    name = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with _admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
            (name,),
        )
    for _ in range(3):
        store.append(StreamAppend("s", None, [EVENT]))  # no StoreError
    assert store.stream_version("s") == 4


def test_a_pool_full_of_connections_ended_by_the_server_recovers_at_once(pg_dsn: str) -> None:
    """Each dead connection handed out and refused costs the pool a growing back-off (0, 1, 2,
    4 s...): a pool of eight must sweep them all at the first one, not make one command wait
    out seven back-offs (and past connect_timeout, fail)."""
    database = PostgresDatabase(pg_dsn, min_size=8, max_size=8, connect_timeout=10)
    try:
        store = PostgresEventStore(database)
        store.append(StreamAppend("s", None, [EVENT]))
        database.pool.wait(timeout=10)  # all eight open and idle
        name = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
        with _admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        time.sleep(0.2)  # the goodbyes arrive
        began = time.monotonic()
        store.append(StreamAppend("s", None, [EVENT]))
        assert time.monotonic() - began < 5  # (one back-off per dead connection: 0+1+2+4+8...)
        assert store.stream_version("s") == 2
    finally:
        database.close()


def test_a_pool_with_no_free_connection_says_so_not_outcome_unknown(pg_dsn: str) -> None:
    """PoolTimeout is an OperationalError to psycopg: caught as one, it told the host a write's
    outcome was unknown although nothing was ever sent."""
    database = PostgresDatabase(pg_dsn, min_size=1, max_size=1, connect_timeout=10)
    database.connect_timeout = 0.5  # (opened with time to spare; the checkout is what is tested)
    try:
        store = PostgresEventStore(database)
        with database.pool.connection():  # the only connection, taken
            exc = _raises_typed(lambda: store.append(StreamAppend("s", None, [EVENT])))
        assert isinstance(exc, StoreError)
        assert "unknown" not in str(exc)
        assert "free" in str(exc)
        assert store.last_position() == 0
    finally:
        database.close()


# -- connection strings never leak ----------------------------------------------------------------
def test_a_malformed_connection_string_is_refused_without_echoing_any_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """libpq echoes the token it choked on ('missing "=" after "PW"'): logged by the pool's
    threads it puts a fragment of the password in the host's logs."""
    dsn = "host=127.0.0.1 dbname=x user=app password=hunter2 TAILOFSECRET"
    with caplog.at_level(logging.DEBUG):
        exc = _raises_typed(lambda: PostgresDatabase(dsn, connect_timeout=2))
    assert isinstance(exc, ValidationError)
    assert "TAILOFSECRET" not in str(exc)
    assert "TAILOFSECRET" not in caplog.text
    assert "hunter2" not in caplog.text


# -- migration against a server that never answers ------------------------------------------------
def test_migrate_gives_up_on_a_server_that_never_answers() -> None:
    """`fxcrm migrate` against a host that accepts TCP and says nothing (a wedged proxy, a
    firewall's tarpit) must end with StoreError, not hang a deployment forever."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    port = silent.getsockname()[1]
    outcome: list[BaseException | int] = []

    def run() -> None:
        try:
            outcome.append(migrate(f"postgresql://postgres@127.0.0.1:{port}/x", connect_timeout=2))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    try:
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), "migrate still waits on a silent server"
    finally:
        silent.close()
    assert len(outcome) == 1
    assert isinstance(outcome[0], StoreError)


# -- what docs/postgres.md promises ---------------------------------------------------------------
def test_idempotency_keys_can_be_deleted_by_age_as_the_docs_say(
    db: PostgresDatabase,
) -> None:
    """docs/postgres.md: "old keys can be deleted once no client could retry them (after a
    week, say)": the table must say when each key was recorded."""
    store = PostgresEventStore(db)
    store.append(StreamAppend("s", None, [EVENT]), idempotency_key="cmd-1")
    with db.transaction() as conn:
        conn.execute(
            "UPDATE fx_idempotency SET created_at = now() - interval '8 days' WHERE key = 'cmd-1'"
        )
    store.append(StreamAppend("t", None, [EVENT]), idempotency_key="cmd-2")
    with db.transaction() as conn:
        deleted = conn.execute(
            "DELETE FROM fx_idempotency WHERE created_at < now() - interval '7 days'"
        ).rowcount
    assert deleted == 1
    replay = store.append(StreamAppend("t", None, [EVENT]), idempotency_key="cmd-2")
    assert replay.replayed
    assert replay.last_position == 2


# -- erasure ------------------------------------------------------------------------------------
def _snapshot_file_holds(dsn: str, secret: bytes) -> bool:
    """True if any 16-byte piece of ``secret`` is in the snapshot table's file on the server."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CHECKPOINT")
            row = conn.execute("SELECT pg_relation_filepath('fx_snapshots')").fetchone()
            assert row is not None
            raw = conn.execute("SELECT pg_read_binary_file(%s)", (row[0],)).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            pytest.skip("reading the table's file needs a superuser (or pg_read_server_files)")
    assert raw is not None
    data = bytes(raw[0])
    return any(secret[i : i + 16] in data for i in range(len(secret) - 15))


def test_an_erased_subjects_snapshot_leaves_the_table_file_when_purged(
    db: PostgresDatabase, pg_dsn: str
) -> None:
    """Erasure deletes the snapshots that may hold a subject's PII in clear
    (privacy/erasure.py, ``snapshot_streams``). On PostgreSQL a DELETE leaves the row's bytes
    in the table's file; PostgresKeyStore.purge rewrites only the key table (perhaps in
    another database), so the snapshot table needs a purge of its own."""
    pii = b'{"name": "Ana Victim", "passport": "X1234567", "iban": "DE89370400440532013000"}'
    db.save_snapshot(Snapshot("client-victim", 3, pii))
    for n in range(30):  # neighbours on the same page, live and staying
        db.save_snapshot(Snapshot(f"client-{n}", 1, f'{{"n": {n}}}'.encode()))
    db.delete_snapshot("client-victim")  # what Erasure.erase does for snapshot_streams
    assert db.load_snapshot("client-victim") is None
    assert _snapshot_file_holds(pg_dsn, pii)  # the dead row version
    db.purge_snapshots()
    assert not _snapshot_file_holds(pg_dsn, pii)
    assert db.load_snapshot("client-7") == Snapshot("client-7", 1, b'{"n": 7}')
    with pytest.raises(ValidationError):
        db.purge_snapshots(lock_wait=0)


def test_a_snapshot_purge_waits_out_a_transaction_that_still_sees_the_erased_rows(
    db: PostgresDatabase, pg_dsn: str
) -> None:
    """A rewrite copies the deleted rows an open snapshot may still read: the purge waits for it
    (within lock_wait) and purges, or says it could not."""
    pii = b'{"name": "Bea Victim", "passport": "Y7654321", "iban": "GB82WEST12345698765432"}'
    db.save_snapshot(Snapshot("client-victim", 3, pii))
    db.save_snapshot(Snapshot("client-1", 1, b'{"n": 1}'))
    report = psycopg.connect(pg_dsn, autocommit=True)
    report.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    report.execute("SELECT 1")  # a snapshot from before the erasure
    db.delete_snapshot("client-victim")
    with pytest.raises(ConcurrencyError, match="purge again later"):
        db.purge_snapshots(lock_wait=0.3)
    assert _snapshot_file_holds(pg_dsn, pii)
    ended = threading.Timer(0.5, report.close)  # the report ends while the purge waits
    ended.start()
    try:
        db.purge_snapshots(lock_wait=30)
    finally:
        ended.join()
    assert not _snapshot_file_holds(pg_dsn, pii)
    assert db.load_snapshot("client-1") == Snapshot("client-1", 1, b'{"n": 1}')


def test_a_closed_database_purges_nothing(pg_dsn: str) -> None:
    database = PostgresDatabase(pg_dsn)
    database.close()
    with pytest.raises(StoreError, match="closed"):
        database.purge_snapshots()


# -- a database that does not store UTF-8 ---------------------------------------------------------
@pytest.fixture(params=["SQL_ASCII", "LATIN1"])
def non_utf8_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    encoding = str(request.param)
    name = f"fxcrm_t_{encoding.lower()}_{os.urandom(6).hex()}"
    with _admin() as admin:
        admin.execute(
            sql.SQL(
                "CREATE DATABASE {} ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
            ).format(sql.Identifier(name), sql.Literal(encoding))
        )
    dsn = dsn_of(name)
    try:
        yield dsn
    finally:
        drop_database(dsn)


def test_migrate_refuses_a_database_that_is_not_utf8(non_utf8_dsn: str) -> None:
    """On SQL_ASCII, text comes back as bytes: a stream id b'client-\\xc3\\xa9' and an event
    type that is no str, so a policy's ``event_type not in types`` skips every event in
    silence; on LATIN1 a client named in Cyrillic cannot be stored at all."""
    with pytest.raises(StoreError, match="UTF8"):
        migrate(non_utf8_dsn)
    with psycopg.connect(non_utf8_dsn) as conn:
        assert conn.execute("SELECT to_regclass('fx_events')").fetchone() == (None,)


def test_a_store_refuses_a_database_made_elsewhere_that_is_not_utf8(non_utf8_dsn: str) -> None:
    with psycopg.connect(non_utf8_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE TABLE fx_schema (version integer PRIMARY KEY)")
        for version, statements in MIGRATIONS:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO fx_schema (version) VALUES (%s)", (version,))
    with pytest.raises(StoreError, match="UTF8"):
        PostgresDatabase(non_utf8_dsn, connect_timeout=5)
