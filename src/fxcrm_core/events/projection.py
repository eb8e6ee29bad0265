"""Projections: read models fed from the global log, resuming from a stored checkpoint."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from fxcrm_core.events.codec import EventCodec
from fxcrm_core.events.event import DomainEvent, RecordedEvent
from fxcrm_core.events.store import CheckpointStore, EventStore

__all__ = ["Projection", "ProjectionRunner"]


@runtime_checkable
class Projection(Protocol):
    """A read model. ``event_types`` (None: all) lets the runner skip decoding the rest.

    Delivery is at least once (a crash between handling and checkpointing repeats a batch), so
    ``handle`` must ignore positions it has already seen.
    """

    name: str
    event_types: frozenset[str] | None

    def handle(self, event: RecordedEvent[DomainEvent]) -> None: ...

    def reset(self) -> None: ...


class ProjectionRunner:
    """Feeds projections from the event store and stores their checkpoints."""

    def __init__(
        self,
        store: EventStore,
        codec: EventCodec,
        checkpoints: CheckpointStore,
        *,
        batch_size: int = 1000,
    ) -> None:
        self.store = store
        self.codec = codec
        self.checkpoints = checkpoints
        self.batch_size = batch_size

    def catch_up(self, projection: Projection) -> int:
        """Handle every event after the projection's checkpoint; returns how many it handled."""
        position = self.checkpoints.get_checkpoint(projection.name)
        wanted = projection.event_types
        handled = 0
        while True:
            batch = self.store.read_all(after_position=position, limit=self.batch_size)
            if not batch:
                return handled
            for stored in batch:
                if wanted is None or stored.event_type in wanted:
                    projection.handle(self.codec.decode(stored))
                    handled += 1
            position = batch[-1].position
            self.checkpoints.set_checkpoint(projection.name, position)

    def rebuild(self, projection: Projection) -> int:
        """Forget the read model and its checkpoint, then replay the whole log into it."""
        projection.reset()
        self.checkpoints.set_checkpoint(projection.name, 0)
        return self.catch_up(projection)
