"""The ``fxcrm`` command: the demo recreates only files it made itself; a user's database and
its key file are refused (untouched) unless ``--force`` says to replace them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fxcrm_core import demo
from fxcrm_core.cli import main
from fxcrm_core.kernel import FxCrmError


def users_files(tmp_path: Path) -> dict[Path, bytes]:
    """A host's own database and key file, as the demo finds them."""
    files = {
        tmp_path / "prod.sqlite": b"SQLite format 3\x00 the broker's real book",
        tmp_path / "prod.sqlite.keys": b"SQLite format 3\x00 the only copy of the data keys",
    }
    for path, content in files.items():
        path.write_bytes(content)
    return files


def test_the_demo_refuses_a_database_it_did_not_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = users_files(tmp_path)
    assert main(["demo", "--db", str(tmp_path / "prod.sqlite")]) == 1
    err = capsys.readouterr().err
    assert "not created by the demo" in err
    assert "--force" in err
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in files} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prod.sqlite", "prod.sqlite.keys"]


@pytest.mark.parametrize("left", ["prod.sqlite.keys", "prod.sqlite-wal", "prod.sqlite.server.json"])
def test_any_file_the_demo_would_delete_counts(tmp_path: Path, left: str) -> None:
    # The database is gone but a file beside it is not: a key file may be the only copy.
    (tmp_path / left).write_bytes(b"a host's file")
    with pytest.raises(demo.DemoFileError) as refused:
        demo.run_demo(tmp_path / "prod.sqlite", lambda _: None)
    assert isinstance(refused.value, FxCrmError)
    assert isinstance(refused.value, FileExistsError)
    assert (tmp_path / left).read_bytes() == b"a host's file"
    assert [p.name for p in tmp_path.iterdir()] == [left]


def test_a_directory_is_refused_even_with_force(tmp_path: Path) -> None:
    (tmp_path / "prod.sqlite").mkdir()
    with pytest.raises(demo.DemoFileError, match="not a file"):
        demo.run_demo(tmp_path / "prod.sqlite", lambda _: None, force=True)
    assert (tmp_path / "prod.sqlite").is_dir()


def test_a_marker_that_is_not_the_demos_counts_for_nothing(tmp_path: Path) -> None:
    files = users_files(tmp_path)
    (tmp_path / "prod.sqlite.demo").write_text("my notes on the demo")
    with pytest.raises(demo.DemoFileError):
        demo.run_demo(tmp_path / "prod.sqlite", lambda _: None)
    assert {p: p.read_bytes() for p in files} == files


def test_the_demo_runs_twice_in_a_row_and_force_replaces_a_users_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What `make demo` does, twice: the second run recreates the first run's files.
    db = tmp_path / ".demo" / "broker.sqlite"
    for _ in range(2):
        assert main(["demo", "--db", str(db)]) == 0
        assert "answered again from the log alone: equal" in capsys.readouterr().out
    assert (tmp_path / ".demo" / "broker.sqlite.demo").is_file()
    users_files(tmp_path)
    assert main(["demo", "--db", str(tmp_path / "prod.sqlite"), "--force"]) == 0
    assert "equal" in capsys.readouterr().out
    # Now the demo's own: a second run needs no --force.
    assert main(["demo", "--db", str(tmp_path / "prod.sqlite")]) == 0
