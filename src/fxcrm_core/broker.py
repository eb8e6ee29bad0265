"""The composition root: the one object a host builds, wiring a store, the codec and the clock.

Each bounded context adds its events and services here as it lands; a host swaps any adapter
(its own event store, clock or ciphers) through the constructor.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal, TypedDict, Unpack

from fxcrm_core.events import (
    CheckpointStore,
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    FieldCipher,
    PayloadCipher,
    ProjectionRunner,
    Repository,
    SnapshotStore,
    UnitOfWork,
)
from fxcrm_core.kernel import Clock, IdGenerator, SystemClock, TradingCalendar
from fxcrm_core.stores import (
    MemoryCheckpointStore,
    MemoryEventStore,
    MemorySnapshotStore,
    SqliteDatabase,
    SqliteEventStore,
)

__all__ = ["Broker", "BrokerOptions"]


class BrokerOptions(TypedDict, total=False):
    """Optional adapters and settings shared by every way of building a Broker."""

    calendar: TradingCalendar
    events: Iterable[type[DomainEvent]]
    field_cipher: FieldCipher
    payload_cipher: PayloadCipher
    ids: IdGenerator


class Broker:
    """Everything a host needs to run commands and read models against one event log.

    >>> broker = Broker.in_memory()
    >>> broker.store.last_position()
    0
    """

    def __init__(
        self,
        store: EventStore,
        *,
        checkpoints: CheckpointStore,
        snapshots: SnapshotStore | None = None,
        clock: Clock | None = None,
        calendar: TradingCalendar | None = None,
        events: Iterable[type[DomainEvent]] = (),
        field_cipher: FieldCipher | None = None,
        payload_cipher: PayloadCipher | None = None,
        ids: IdGenerator | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.calendar = calendar or TradingCalendar()
        self.ids = ids or IdGenerator(self.clock)
        self.store = store
        self.registry = EventRegistry()
        self.registry.register_all(events)
        self.codec = EventCodec(
            self.registry, field_cipher=field_cipher, payload_cipher=payload_cipher
        )
        self.repository = Repository(store, self.codec, snapshots)
        self.projections = ProjectionRunner(store, self.codec, checkpoints)

    @classmethod
    def in_memory(cls, *, clock: Clock | None = None, **options: Unpack[BrokerOptions]) -> Broker:
        """A broker whose log lives in memory (tests, simulations)."""
        return cls(
            MemoryEventStore(clock),
            checkpoints=MemoryCheckpointStore(),
            snapshots=MemorySnapshotStore(),
            clock=clock,
            **options,
        )

    @classmethod
    def sqlite(
        cls,
        path: str | Path,
        *,
        clock: Clock | None = None,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        **options: Unpack[BrokerOptions],
    ) -> Broker:
        """A broker on one SQLite file: events, checkpoints and snapshots side by side."""
        db = SqliteDatabase(path, synchronous=synchronous)
        return cls(
            SqliteEventStore(db, clock=clock),
            checkpoints=db,
            snapshots=db,
            clock=clock,
            **options,
        )

    def unit_of_work(
        self,
        actor: str,
        *,
        reason: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> UnitOfWork:
        """A unit of work whose events carry ``actor`` and ``reason`` (who and why)."""
        metadata = EventMetadata(
            actor, correlation_id or self.ids(), causation_id=causation_id, reason=reason
        )
        return UnitOfWork(self.repository, metadata)

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if callable(close):
            close()
