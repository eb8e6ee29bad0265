"""The ``fxcrm`` command: ``fxcrm demo`` runs the demo broker day on SQLite."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fxcrm_core import __version__
from fxcrm_core.demo import DEFAULT_DB, run_demo
from fxcrm_core.kernel import FxCrmError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fxcrm", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fxcrm_core {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the demo broker day on a SQLite file")
    demo.add_argument(
        "--db", type=Path, default=DEFAULT_DB,
        help="SQLite file, recreated if an earlier demo made it (default: %(default)s)",
    )  # fmt: skip
    demo.add_argument(
        "--force", action="store_true",
        help="replace files at --db (and its key file) that the demo did not create",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            run_demo(args.db, force=args.force)
    except FxCrmError as exc:  # a typed refusal: its message is for the user, not a traceback
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
