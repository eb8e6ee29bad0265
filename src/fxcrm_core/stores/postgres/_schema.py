"""The PostgreSQL schema, created and upgraded by an explicit, versioned migration command
(:func:`migrate`), never as a side effect of importing or building a store. A store checks the
version when it opens (:func:`check_schema`) and refuses one it does not know.

The pending migrations run in one transaction under an advisory lock, so two deployments
starting at once apply them once, and a failure leaves the schema where it was; ``fx_schema``
holds the versions applied. Add a migration by appending a
step to :data:`MIGRATIONS`; never edit one already released.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from fxcrm_core.kernel.errors import StoreError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "check_encoding",
    "check_schema",
    "migrate",
    "schema_version",
]

# (version, statements): applied in order, each version in one transaction.
MIGRATIONS: Sequence[tuple[int, Sequence[str]]] = (
    (
        1,
        (
            # Events. ``position`` is handed out under the append lock (see events.py), so
            # positions are gapless and in commit order: a follower never skips a late commit.
            """CREATE TABLE fx_events (
                position    bigint  PRIMARY KEY,
                stream_id   text    NOT NULL,
                version     integer NOT NULL,
                event_type  text    NOT NULL,
                data        bytea   NOT NULL,
                metadata    bytea   NOT NULL,
                recorded_at bigint  NOT NULL,
                UNIQUE (stream_id, version)
            )""",
            "CREATE INDEX fx_events_type ON fx_events (event_type, position)",
            # ``created_at`` lets a host delete keys no client could still retry (docs/postgres.md).
            """CREATE TABLE fx_idempotency (
                key        text        PRIMARY KEY,
                digest     bytea       NOT NULL,
                result     text        NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )""",
            # One event on one stream (most commands) in one statement: the append lock, then
            # (a later statement in a volatile function: a later snapshot, which sees every
            # append committed before the lock was granted) the head read, the version check
            # and the insert. No row back: the stream was not at the version expected.
            """CREATE OR REPLACE FUNCTION fx_append_one(
                p_stream text, p_type text, p_data bytea, p_meta bytea, p_at bigint,
                p_expected integer, p_lock bigint
            ) RETURNS TABLE (out_position bigint, out_version integer)
            LANGUAGE plpgsql VOLATILE AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock(p_lock);
                RETURN QUERY
                INSERT INTO fx_events AS e
                    (position, stream_id, version, event_type, data, metadata, recorded_at)
                SELECT h.p + 1, p_stream, h.v + 1, p_type, p_data, p_meta, p_at
                FROM (SELECT (SELECT coalesce(max(position), 0) FROM fx_events) AS p,
                             (SELECT coalesce(max(version), 0) FROM fx_events
                              WHERE stream_id = p_stream) AS v) AS h
                WHERE p_expected IS NULL OR h.v = p_expected
                RETURNING e.position, e.version;
            END
            $$""",
            """CREATE TABLE fx_checkpoints (
                name     text   PRIMARY KEY,
                position bigint NOT NULL
            )""",
            """CREATE TABLE fx_snapshots (
                stream_id text    PRIMARY KEY,
                version   integer NOT NULL,
                state     bytea   NOT NULL
            )""",
            # Wrapped data keys (keep them in a database of their own where backups differ).
            """CREATE TABLE fx_data_keys (
                subject_id    text   PRIMARY KEY,
                key_id        text   NOT NULL,
                master_key_id text   NOT NULL,
                wrapped       bytea  NOT NULL,
                created_at    bigint NOT NULL,
                destroyed_at  bigint
            )""",
            """CREATE TABLE fx_audit (
                row            bigserial PRIMARY KEY,
                seq            bigint    NOT NULL UNIQUE,
                position       bigint    NOT NULL,
                at             bigint    NOT NULL,
                actor          text      NOT NULL,
                action         text      NOT NULL,
                target         text      NOT NULL,
                correlation_id text,
                prev_hash      text      NOT NULL,
                hash           text      NOT NULL,
                event_hash     text
            )""",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1][0]
_LOCK = 0x66786372_6D000001  # the advisory lock migrations take ("fxcrm" + 1)


def schema_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """The version the database's schema is at (0: none of ours yet)."""
    row = conn.execute("SELECT to_regclass('fx_schema') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute("SELECT coalesce(max(version), 0) FROM fx_schema").fetchone()
    return int(str(found[0])) if found is not None else 0


def migrate(dsn: str, *, connect_timeout: float = 10.0) -> int:
    """Bring the database at ``dsn`` to :data:`SCHEMA_VERSION`; returns the version it was at.
    Safe to run from several processes at once; a database at a newer version than this code
    knows is refused (StoreError); a server that does not answer within ``connect_timeout``
    seconds too."""
    try:
        with (
            psycopg.connect(
                dsn, autocommit=True, connect_timeout=max(1, int(connect_timeout))
            ) as conn,
            conn.transaction(),
        ):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            check_encoding(conn)
            conn.execute("CREATE TABLE IF NOT EXISTS fx_schema (version integer PRIMARY KEY)")
            before = schema_version(conn)
            if before > SCHEMA_VERSION:
                raise StoreError(_newer(before))
            for version, statements in MIGRATIONS:
                if version > before:
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute("INSERT INTO fx_schema (version) VALUES (%s)", (version,))
        return before
    except psycopg.Error as exc:
        raise StoreError(f"cannot migrate the PostgreSQL database: {type(exc).__name__}") from None


def check_encoding(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Refuse a database that does not store text as UTF-8: on SQL_ASCII psycopg reads text
    columns back as bytes (stream ids and event types that match nothing: policies and read
    models would skip every event), on LATIN1 and the like most scripts cannot be stored."""
    row = conn.execute("SELECT current_setting('server_encoding')").fetchone()
    found = str(row[0]) if row is not None else "unknown"
    if found != "UTF8":
        raise StoreError(
            f"the PostgreSQL database's encoding is {found}; fxcrm needs UTF8 (CREATE DATABASE "
            "... ENCODING 'UTF8' TEMPLATE template0)"
        )


def check_schema(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Refuse a database whose schema this code does not run on, or that is not UTF-8
    (StoreError saying what to do)."""
    check_encoding(conn)
    found = schema_version(conn)
    if found == SCHEMA_VERSION:
        return
    if found > SCHEMA_VERSION:
        raise StoreError(_newer(found))
    raise StoreError(
        f"the PostgreSQL schema is at version {found}, this code needs {SCHEMA_VERSION}: run "
        "`fxcrm migrate --db postgresql://...` (or fxcrm_core.stores.postgres.migrate(dsn)) first"
    )


def _newer(found: int) -> str:
    return (
        f"the PostgreSQL schema is at version {found}, newer than this code knows "
        f"({SCHEMA_VERSION}): upgrade fxcrm_core"
    )
