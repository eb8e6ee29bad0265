"""The EventStore port and the small, boring rows it stores.

A store keeps (stream id, version, type, bytes, metadata bytes, recorded-at) and a global
position; it never looks inside the bytes. Appends are atomic across streams, checked against
expected versions, and optionally idempotent by a caller-given key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol, runtime_checkable

import attrs

from fxcrm_core.kernel.errors import IdempotencyConflictError, ValidationError

__all__ = [
    "AppendResult",
    "CheckpointStore",
    "EventStore",
    "NewEvent",
    "Snapshot",
    "SnapshotStore",
    "StoredEvent",
    "StreamAppend",
    "append_digest",
    "replay_result",
    "check_appends",
    "iter_all",
    "read_types",
    "TypeCursor",
]


class NewEvent(NamedTuple):
    """An encoded event waiting to be appended."""

    event_type: str
    data: bytes
    metadata: bytes


class StoredEvent(NamedTuple):
    """An event as stored: its place in its stream and in the whole log."""

    position: int
    stream_id: str
    version: int
    event_type: str
    data: bytes
    metadata: bytes
    recorded_at: datetime


def _event_tuple(events: Iterable[NewEvent]) -> tuple[NewEvent, ...]:
    return tuple(events)


@attrs.frozen(slots=True)
class StreamAppend:
    """Events for one stream, appended only if the stream is at ``expected_version``.

    ``expected_version`` is the number of events the writer saw (0: the stream must not exist);
    ``None`` skips the check (for append-only streams such as an audit log).
    """

    stream_id: str
    expected_version: int | None
    events: tuple[NewEvent, ...] = attrs.field(converter=_event_tuple)


@attrs.frozen(slots=True)
class AppendResult:
    """Where an append landed; ``replayed`` is True when an idempotency key matched."""

    last_position: int
    versions: Mapping[str, int]
    replayed: bool = False


#: The longest stream id or event type any adapter stores (PostgreSQL indexes them, and a btree
#: entry holds about 2.7 kB: at most 4 bytes a character keeps a 512-character id under it).
MAX_NAME_LENGTH = 512


def check_name(value: str, what: str) -> None:
    """A stream id or event type every adapter can hold and read back alike: not empty, at most
    :data:`MAX_NAME_LENGTH` characters, no NUL (PostgreSQL text cannot hold one) and valid
    Unicode (no lone surrogate, which no UTF-8 store can encode). ValidationError otherwise,
    naming ``what``, never the value."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{what} must be non-empty text")
    if len(value) > MAX_NAME_LENGTH:
        raise ValidationError(f"{what} is at most {MAX_NAME_LENGTH} characters")
    if "\x00" in value:
        raise ValidationError(f"{what} must not hold a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} must be valid Unicode text") from None


def check_appends(appends: Sequence[StreamAppend]) -> None:
    """Shared argument checks for every adapter (so they all refuse the same things)."""
    if not appends:
        raise ValidationError("append needs at least one stream")
    seen: set[str] = set()
    for a in appends:
        if not a.stream_id:
            raise ValidationError("stream id must not be empty")
        check_name(a.stream_id, "a stream id")
        if a.stream_id in seen:
            raise ValidationError("a stream may appear only once in one append")
        seen.add(a.stream_id)
        if a.expected_version is not None and a.expected_version < 0:
            raise ValidationError("expected version must be >= 0")
        if not a.events:
            raise ValidationError("a stream append needs at least one event")
        for event_type in {e.event_type for e in a.events}:
            check_name(event_type, "an event type")


def append_digest(appends: Sequence[StreamAppend]) -> bytes:
    """What an idempotency key is bound to: the streams, types and payloads, in order.

    Metadata (correlation ids, reasons) and expected versions are left out on purpose: a retry
    of the same command may carry a fresh request id or see a newer stream version.
    """
    h = hashlib.sha256()
    for a in appends:
        h.update(a.stream_id.encode())
        h.update(b"\0")
        for e in a.events:
            h.update(e.event_type.encode())
            h.update(b"\0")
            h.update(len(e.data).to_bytes(8, "big"))
            h.update(e.data)
        h.update(b"\1")
    return h.digest()


def replay_result(stored_digest: bytes, stored: AppendResult, digest: bytes) -> AppendResult:
    """What a retried append gets back: the first result, or a conflict if the content differs."""
    if stored_digest != digest:
        raise IdempotencyConflictError(
            "idempotency key already used for a different operation; nothing was written"
        )
    return AppendResult(stored.last_position, stored.versions, replayed=True)


@runtime_checkable
class EventStore(Protocol):
    """Append-only log of streams. Adapters: memory, SQLite, PostgreSQL, or the host's own.

    Run ``fxcrm_core.testing.EventStoreContract`` against an adapter to show it keeps the rules.

    An adapter may also offer ``read_all_of_types(after_position, types, limit)`` returning
    ``(events, read_up_to)``: the events of those types that :meth:`read_all` would return from
    ``after_position`` on (at most ``limit``), and a position such that every event of those
    types up to it is in the list (the last one's when ``limit`` is reached, else the head at
    the time of the read). It is not part of the port: the projection and policy runners use
    it when a store has it, to skip the other types without fetching them, and read_all else.
    """

    def append(self, *appends: StreamAppend, idempotency_key: str | None = None) -> AppendResult:
        """Append atomically to one or more streams.

        Raises ConcurrencyError (nothing written) if a stream is not at its expected version,
        and IdempotencyConflictError if the key was used for different content.
        """
        ...

    def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        """The stream's events with version > ``after_version``, in version order."""
        ...

    def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Up to ``limit`` events with position > ``after_position``, in position order."""
        ...

    def stream_version(self, stream_id: str) -> int:
        """How many events the stream holds (0 if none)."""
        ...

    def last_position(self) -> int:
        """The global position of the newest event (0 if the log is empty)."""
        ...


def read_types(
    store: EventStore, after_position: int, types: frozenset[str] | None, limit: int
) -> tuple[list[StoredEvent], int, bool]:
    """One page of the events of ``types`` (None: all) after a position: the events, the
    position read up to, and whether the read reached the head. A store with the optional
    ``read_all_of_types`` is asked for those types alone; any other is read whole and filtered
    (then the head is known reached when a read comes back empty)."""
    typed = getattr(store, "read_all_of_types", None)
    if types is not None and typed is not None:
        events, upto = typed(after_position, types, limit)
        return events, upto, len(events) < limit
    batch = store.read_all(after_position=after_position, limit=limit)
    if not batch:
        return [], after_position, True
    if types is not None:
        return [s for s in batch if s.event_type in types], batch[-1].position, False
    return batch, batch[-1].position, False


class TypeCursor:
    """Reads the events of some types after the position it last read up to: what a memory
    index of the log (the holders of something, what is still unpaid) needs to catch up.
    Not thread-safe by itself: its owner reads under its own lock."""

    def __init__(self, store: EventStore, types: frozenset[str], *, batch: int = 1000) -> None:
        self.store, self.types, self.batch = store, types, batch
        self.position = 0  # read up to here

    def new_rows(self) -> Iterator[StoredEvent]:
        """The events of the types recorded since the last read, in log order."""
        while True:
            rows, upto, done = read_types(self.store, self.position, self.types, self.batch)
            yield from rows
            self.position = max(self.position, upto)
            if done:
                return


def iter_all(
    store: EventStore, *, after_position: int = 0, batch: int = 1000
) -> Iterator[StoredEvent]:
    """Every event after a position, read in batches (for projections and full replays)."""
    position = after_position
    while True:
        chunk = store.read_all(after_position=position, limit=batch)
        if not chunk:
            return
        yield from chunk
        position = chunk[-1].position


@runtime_checkable
class CheckpointStore(Protocol):
    """Where projections remember the last global position they handled."""

    def get_checkpoint(self, name: str) -> int: ...

    def set_checkpoint(self, name: str, position: int) -> None: ...


class Snapshot(NamedTuple):
    stream_id: str
    version: int
    state: bytes


@runtime_checkable
class SnapshotStore(Protocol):
    """Optional cache of aggregate states; always rebuildable from the log, so deletable."""

    def save_snapshot(self, snapshot: Snapshot) -> None: ...

    def load_snapshot(self, stream_id: str) -> Snapshot | None: ...

    def delete_snapshot(self, stream_id: str) -> None: ...
