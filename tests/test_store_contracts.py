"""Our adapters run the same contract suites a host's adapter would."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from fxcrm_core.events import CheckpointStore, EventStore, SnapshotStore
from fxcrm_core.kernel import FixedClock
from fxcrm_core.stores import (
    MemoryCheckpointStore,
    MemoryEventStore,
    MemorySnapshotStore,
    SqliteDatabase,
    SqliteEventStore,
)
from fxcrm_core.testing import (
    CheckpointStoreContract,
    EventStoreContract,
    SharedEventStoreContract,
    SnapshotStoreContract,
)


class TestMemoryEventStore(EventStoreContract):
    def make_store(self, directory: Path, clock: FixedClock) -> EventStore:
        return MemoryEventStore(clock)


class TestSqliteEventStore(SharedEventStoreContract):
    def make_store(self, directory: Path, clock: FixedClock) -> EventStore:
        return SqliteEventStore(directory / "events.sqlite", clock=clock)

    def opener(self, directory: Path) -> Callable[[], EventStore]:
        return functools.partial(SqliteEventStore, directory / "events.sqlite")


class TestSqliteEventStoreNormalSync(EventStoreContract):
    def make_store(self, directory: Path, clock: FixedClock) -> EventStore:
        return SqliteEventStore(directory / "events.sqlite", clock=clock, synchronous="NORMAL")


class TestMemoryCheckpoints(CheckpointStoreContract):
    def make_checkpoints(self, directory: Path) -> CheckpointStore:
        return MemoryCheckpointStore()


class TestSqliteCheckpoints(CheckpointStoreContract):
    def make_checkpoints(self, directory: Path) -> CheckpointStore:
        return SqliteDatabase(directory / "cp.sqlite")


class TestMemorySnapshots(SnapshotStoreContract):
    def make_snapshots(self, directory: Path) -> SnapshotStore:
        return MemorySnapshotStore()


class TestSqliteSnapshots(SnapshotStoreContract):
    def make_snapshots(self, directory: Path) -> SnapshotStore:
        return SqliteDatabase(directory / "snap.sqlite")
