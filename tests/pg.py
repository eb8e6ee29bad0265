"""PostgreSQL for tests: each test gets a database of its own, created on the server at
``FXCRM_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``), migrated, and dropped
afterwards. Without a server the tests skip, saying why; with ``FXCRM_REQUIRE_PG=1`` (CI) they
fail instead."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from fxcrm_core.stores.postgres import migrate

SERVER = os.environ.get("FXCRM_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE = os.environ.get("FXCRM_REQUIRE_PG") == "1"


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(SERVER, autocommit=True, connect_timeout=30)
    except psycopg.OperationalError as exc:
        reason = f"no PostgreSQL server at {SERVER} ({type(exc).__name__}); set FXCRM_PG_DSN"
        if REQUIRE:
            pytest.fail(f"FXCRM_REQUIRE_PG=1: {reason}")
        pytest.skip(reason)


def dsn_of(name: str) -> str:
    """The URL of database ``name`` on the test server (a ``postgresql://`` URL, as the SDK's
    own entry points take: ``FXCRM_PG_DSN`` is a URL too)."""
    parts = urlsplit(SERVER)
    if parts.scheme not in ("postgresql", "postgres"):
        pytest.fail("FXCRM_PG_DSN must be a postgresql:// URL")
    return urlunsplit(parts._replace(path=f"/{name}"))


def new_database(*, migrated: bool = True) -> str:
    """A fresh database on the test server (dropped by :func:`drop_database`); its DSN."""
    name = f"fxcrm_t_{uuid.uuid4().hex[:16]}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = dsn_of(name)
    if migrated:
        migrate(dsn)
    return dsn


def drop_database(dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with _admin() as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A migrated database of this test's own."""
    dsn = new_database()
    try:
        yield dsn
    finally:
        drop_database(dsn)


@pytest.fixture
def pg_blank_dsn() -> Iterator[str]:
    """A database of this test's own with no schema yet."""
    dsn = new_database(migrated=False)
    try:
        yield dsn
    finally:
        drop_database(dsn)
