"""The ``fxcrm`` command: ``fxcrm demo`` runs the demo broker day (on SQLite, or on PostgreSQL
with ``--db postgresql://...``); ``fxcrm migrate --db postgresql://...`` creates or upgrades a
PostgreSQL database's schema (never done as a side effect of opening a store)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fxcrm_core import __version__
from fxcrm_core.broker import ConfigurationError
from fxcrm_core.demo import DEFAULT_DB, is_postgres, run_demo
from fxcrm_core.kernel import FxCrmError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fxcrm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fxcrm_core {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo broker day on a SQLite file")
    demo.add_argument(
        "--db", default=str(DEFAULT_DB),
        help="SQLite file, or a postgresql:// URL, recreated if an earlier demo made it "
             "(default: %(default)s)",
    )  # fmt: skip
    demo.add_argument(
        "--force", action="store_true",
        help="replace files at --db (and its key file) that the demo did not create",
    )  # fmt: skip
    migrate = commands.add_parser(
        "migrate", help="create or upgrade the schema of a PostgreSQL database"
    )
    migrate.add_argument("--db", required=True, help="the database, as a postgresql:// URL")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            run_demo(args.db if is_postgres(args.db) else Path(args.db), force=args.force)
        elif args.command == "migrate":
            _migrate(args.db)
    except FxCrmError as exc:  # a typed refusal: its message is for the user, not a traceback
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _migrate(dsn: str) -> None:
    if not is_postgres(dsn):
        raise ConfigurationError("fxcrm migrate takes a postgresql:// URL")
    try:
        from fxcrm_core.stores.postgres import SCHEMA_VERSION, migrate
    except ImportError:
        raise ConfigurationError(
            "fxcrm migrate needs the postgres extra: pip install 'fxcrm_core[postgres]'"
        ) from None
    before = migrate(dsn)
    if before == SCHEMA_VERSION:
        print(f"the schema is at version {SCHEMA_VERSION}: nothing to do")
    else:
        print(f"the schema went from version {before} to {SCHEMA_VERSION}")


if __name__ == "__main__":
    raise SystemExit(main())
