"""`fxcrm migrate` and `fxcrm demo --db postgresql://...`: the schema made on request, a
database holding someone's rows never dropped, a connection string never taken for a file."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from fxcrm_core.cli import main
from fxcrm_core.stores.postgres import SCHEMA_VERSION, schema_version
from tests.pg import pg_blank_dsn

__all__ = ["pg_blank_dsn"]


def test_a_key_value_connection_string_is_refused_and_no_file_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--db", "host=127.0.0.1 password=s3cret dbname=x"]) == 1
    assert main(["migrate", "--db", "host=127.0.0.1 password=s3cret dbname=x"]) == 1
    err = capsys.readouterr().err
    assert "postgresql://" in err
    assert "s3cret" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_migrate_then_the_demo_on_postgres_and_a_database_with_rows_is_kept(
    pg_blank_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--db", pg_blank_dsn]) == 0
    assert f"from version 0 to {SCHEMA_VERSION}" in capsys.readouterr().out
    assert main(["migrate", "--db", pg_blank_dsn]) == 0
    assert "nothing to do" in capsys.readouterr().out
    with psycopg.connect(pg_blank_dsn, autocommit=True) as conn:
        assert schema_version(conn) == SCHEMA_VERSION
        conn.execute("INSERT INTO fx_checkpoints (name, position) VALUES ('host', 1)")
    assert main(["demo", "--db", pg_blank_dsn]) == 1  # a host's row: refused, nothing dropped
    assert "nothing was dropped" in capsys.readouterr().err
    with psycopg.connect(pg_blank_dsn) as conn:
        row = conn.execute("SELECT position FROM fx_checkpoints WHERE name = 'host'").fetchone()
    assert row == (1,)


@pytest.mark.postgres
def test_the_demo_day_runs_on_postgres_and_a_new_process_agrees(
    pg_blank_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # (the simulated server's state file goes under .demo/)
    assert main(["demo", "--db", pg_blank_dsn]) == 0
    out = capsys.readouterr().out
    assert "answered again from the log alone: equal" in out
    assert "audit trail:" in out
    assert "chain intact" in out
    assert main(["demo", "--db", pg_blank_dsn]) == 0  # its own tables: made again
