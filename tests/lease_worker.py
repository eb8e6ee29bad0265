"""A policy worker process for tests/test_postgres_leases.py: runs two policies over a shared
log (a SQLite file, or a PostgreSQL database) with PostgreSQL leases until SIGTERM.

    python -m tests.lease_worker sqlite|postgres LOG DSN WORKER TRACE [HOLD]

Each policy records a ``Handled`` marker (policy, upstream position, worker) per ``CashPaidIn``
in its unit of work, and writes ``start``/``end`` lines with wall-clock times to TRACE around
the handler, so a test can see who handled what, and when. While the file HOLD exists, a handler
waits after its ``start`` line: a test holds the worker mid-handler, at a point it chose, however
slow the machine.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

import attrs

from fxcrm_core.events import (
    POLICY_EVENTS,
    Aggregate,
    DomainEvent,
    EventCodec,
    EventRegistry,
    Handler,
    Policy,
    PolicyRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.stores import SqliteEventStore
from tests.sample_domain import EVENTS, CashPaidIn

POLICIES = ("marks-one", "marks-two")
PAUSE = 0.004  # seconds a handler takes, so a run lasts long enough to be killed mid-way


@attrs.frozen
class Handled(DomainEvent):
    policy: str
    upstream: int
    worker: str


@attrs.frozen(kw_only=True)
class Marks(Aggregate):
    """One stream of markers per policy and worker: a second handling shows, never conflicts."""

    category = "marks"
    count: int = 0

    def apply(self, event: DomainEvent) -> Self:
        assert isinstance(event, Handled)
        return self.evolve(count=self.count + 1)


def repository(where: str, log: str) -> Repository:
    """The log: on ``where`` "postgres", at connection string ``log``; else a SQLite file."""
    registry = EventRegistry()
    registry.register_all((*EVENTS, *POLICY_EVENTS, Handled))
    if where == "postgres":
        from fxcrm_core.stores.postgres.events import PostgresEventStore

        return Repository(PostgresEventStore(log), EventCodec(registry))
    return Repository(SqliteEventStore(Path(log)), EventCodec(registry))


def marking(policy: str, worker: str, trace: int, hold: Path | None) -> Handler:
    def handle(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        os.write(trace, f"start {policy} {recorded.position} {time.time():.6f}\n".encode())
        while hold is not None and hold.exists():
            time.sleep(0.01)
        time.sleep(PAUSE)
        stream = f"{policy}.{worker}"
        marks = uow.load(Marks, stream) or Marks.blank(stream)
        uow.record(marks, Handled(policy, recorded.position, worker))
        os.write(trace, f"end {policy} {recorded.position} {time.time():.6f}\n".encode())

    return handle


def main(
    where: str, log: str, dsn: str, worker: str, trace_path: str, hold: str | None = None
) -> None:
    from fxcrm_core.stores.postgres.leases import PostgresLeases

    trace = os.open(trace_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    leases = PostgresLeases(dsn, worker_id=worker)
    repo = repository(where, log)
    runner = PolicyRunner(
        repo,
        [
            Policy(name, (CashPaidIn,), marking(name, worker, trace, Path(hold) if hold else None))
            for name in POLICIES
        ],
        read_batch=50,
        leases=leases,
    )
    os.write(trace, f"ready - 0 {time.time():.6f}\n".encode())
    try:
        runner.follow(stop, interval=0.05)
    finally:
        leases.close()
        os.close(trace)


if __name__ == "__main__":
    main(*sys.argv[1:7])
