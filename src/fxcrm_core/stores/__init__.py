"""Reference adapters of the storage ports: in memory, and SQLite (the embedded default)."""

from fxcrm_core.stores.memory import MemoryCheckpointStore, MemoryEventStore, MemorySnapshotStore
from fxcrm_core.stores.sqlite import SqliteDatabase, SqliteEventStore

__all__ = [
    "MemoryCheckpointStore",
    "MemoryEventStore",
    "MemorySnapshotStore",
    "SqliteDatabase",
    "SqliteEventStore",
]
