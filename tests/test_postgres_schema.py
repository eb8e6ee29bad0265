"""The PostgreSQL schema is made by an explicit, versioned migration, never by opening a store;
a store refuses a schema it does not know; migrations run once from many processes at once."""

from __future__ import annotations

import threading

import psycopg
import pytest

from fxcrm_core.kernel import StoreError, ValidationError
from fxcrm_core.stores.postgres import SCHEMA_VERSION, PostgresDatabase, migrate, schema_version
from tests.pg import pg_blank_dsn, pg_dsn

__all__ = ["pg_blank_dsn", "pg_dsn"]

pytestmark = pytest.mark.postgres


def test_opening_a_store_on_a_blank_database_is_refused_and_creates_nothing(
    pg_blank_dsn: str,
) -> None:
    with pytest.raises(StoreError, match="migrate"):
        PostgresDatabase(pg_blank_dsn)
    with psycopg.connect(pg_blank_dsn) as conn:
        assert schema_version(conn) == 0
        row = conn.execute("SELECT to_regclass('fx_events')").fetchone()
        assert row == (None,)


def test_migrate_brings_the_schema_to_the_current_version_once(pg_blank_dsn: str) -> None:
    assert migrate(pg_blank_dsn) == 0
    assert migrate(pg_blank_dsn) == SCHEMA_VERSION  # already there: nothing done
    db = PostgresDatabase(pg_blank_dsn)
    try:
        db.set_checkpoint("projection-a", 7)
        assert db.get_checkpoint("projection-a") == 7
    finally:
        db.close()


def test_migrations_started_at_once_from_many_threads_apply_once(pg_blank_dsn: str) -> None:
    found: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            found.append(migrate(pg_blank_dsn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(found) == [0] + [SCHEMA_VERSION] * 5
    with psycopg.connect(pg_blank_dsn) as conn:
        rows = conn.execute("SELECT version FROM fx_schema ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))


def test_a_schema_newer_than_the_code_is_refused(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO fx_schema (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer"):
        PostgresDatabase(pg_dsn)
    with pytest.raises(StoreError, match="newer"):
        migrate(pg_dsn)


def test_pool_settings_are_checked_and_applied(pg_dsn: str) -> None:
    with pytest.raises(ValidationError):
        PostgresDatabase(pg_dsn, max_size=0)
    with pytest.raises(ValidationError):
        PostgresDatabase(pg_dsn, min_size=5, max_size=2)
    with pytest.raises(ValidationError):
        PostgresDatabase(pg_dsn, statement_timeout_ms=-1)
    db = PostgresDatabase(pg_dsn, max_size=2, statement_timeout_ms=1000)
    try:
        with db.transaction() as conn:
            row = conn.execute("SHOW statement_timeout").fetchone()
        assert row == ("1s",)
        with pytest.raises(StoreError, match="statement timeout"), db.transaction() as conn:
            conn.execute("SELECT pg_sleep(10)")
    finally:
        db.close()


def test_an_unreachable_server_is_a_store_error_naming_no_secret() -> None:
    dsn = "postgresql://postgres:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(StoreError) as caught:
        PostgresDatabase(dsn, connect_timeout=1)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(StoreError) as again:
        migrate(dsn)
    assert "s3cret" not in str(again.value)
