"""In-memory adapters of the storage ports: for tests, demos and hosts that persist elsewhere."""

from __future__ import annotations

import threading

from fxcrm_core.events.store import (
    AppendResult,
    Snapshot,
    StoredEvent,
    StreamAppend,
    append_digest,
    check_appends,
    replay_result,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import ConcurrencyError, ValidationError
from fxcrm_core.kernel.time import to_utc

__all__ = ["MemoryCheckpointStore", "MemoryEventStore", "MemorySnapshotStore"]


class MemoryEventStore:
    """An EventStore in a list; one lock makes each append atomic."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._log: list[StoredEvent] = []
        self._streams: dict[str, list[StoredEvent]] = {}
        self._keys: dict[str, tuple[bytes, AppendResult]] = {}
        self._lock = threading.Lock()

    def append(self, *appends: StreamAppend, idempotency_key: str | None = None) -> AppendResult:
        check_appends(appends)
        digest = append_digest(appends) if idempotency_key is not None else b""
        with self._lock:
            if idempotency_key is not None and idempotency_key in self._keys:
                return replay_result(*self._keys[idempotency_key], digest)
            # Check every stream before writing any, so a conflict writes nothing.
            current = {a.stream_id: len(self._streams.get(a.stream_id, ())) for a in appends}
            for a in appends:
                if a.expected_version is not None and current[a.stream_id] != a.expected_version:
                    raise ConcurrencyError(
                        f"stream {a.stream_id} is at version {current[a.stream_id]}, "
                        f"expected {a.expected_version}; nothing was written"
                    )
            now = to_utc(self._clock.now())
            position = len(self._log)
            versions: dict[str, int] = {}
            for a in appends:
                stream = self._streams.setdefault(a.stream_id, [])
                for e in a.events:
                    position += 1
                    stored = StoredEvent(
                        position,
                        a.stream_id,
                        len(stream) + 1,
                        e.event_type,
                        e.data,
                        e.metadata,
                        now,
                    )
                    stream.append(stored)
                    self._log.append(stored)
                versions[a.stream_id] = len(stream)
            result = AppendResult(position, versions)
            if idempotency_key is not None:
                self._keys[idempotency_key] = (digest, result)
            return result

    def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        with self._lock:
            return list(self._streams.get(stream_id, ())[max(after_version, 0) :])

    def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        with self._lock:
            start = max(after_position, 0)
            return self._log[start : start + limit]

    def read_all_of_types(
        self, after_position: int, types: frozenset[str], limit: int
    ) -> tuple[list[StoredEvent], int]:
        """The events of ``types`` after ``after_position`` (at most ``limit``) and the
        position read up to; see :meth:`SqliteEventStore.read_all_of_types`."""
        if limit < 1:
            raise ValidationError("limit must be at least 1")
        with self._lock:  # appends take the lock too: the head and the rows agree
            start = max(after_position, 0)
            found = []
            for stored in self._log[start:] if types else ():
                if stored.event_type in types:
                    found.append(stored)
                    if len(found) == limit:
                        return found, stored.position
            return found, max(len(self._log), after_position)

    def stream_version(self, stream_id: str) -> int:
        with self._lock:
            return len(self._streams.get(stream_id, ()))

    def last_position(self) -> int:
        with self._lock:
            return len(self._log)


class MemoryCheckpointStore:
    def __init__(self) -> None:
        self._positions: dict[str, int] = {}

    def get_checkpoint(self, name: str) -> int:
        return self._positions.get(name, 0)

    def set_checkpoint(self, name: str, position: int) -> None:
        self._positions[name] = position


class MemorySnapshotStore:
    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshots[snapshot.stream_id] = snapshot

    def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return self._snapshots.get(stream_id)

    def delete_snapshot(self, stream_id: str) -> None:
        self._snapshots.pop(stream_id, None)
