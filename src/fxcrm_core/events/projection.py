"""Read models held in memory, fed from the global log.

A memory read model is rebuilt from position 0 in every process: its position lives beside its
rows (in this runner, in memory), never in a shared checkpoint table, so a second process or a
restart can never start past events it has not seen. A read model that keeps its rows in a
database stores its position in the same transaction as its rows, and needs no runner.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from fxcrm_core.events.codec import EventCodec
from fxcrm_core.events.event import DomainEvent, RecordedEvent
from fxcrm_core.events.store import EventStore, read_types
from fxcrm_core.kernel.errors import ValidationError

__all__ = ["Projection", "ProjectionRunner"]


@runtime_checkable
class Projection(Protocol):
    """A read model. ``event_types`` (None: all) lets the runner skip decoding the rest."""

    name: str
    event_types: frozenset[str] | None

    def handle(self, event: RecordedEvent[DomainEvent]) -> None: ...

    def reset(self) -> None: ...


class ProjectionRunner:
    """Feeds memory read models from the event store, each exactly once per event.

    The runner remembers how far each read model has read (per object, in memory): the first
    :meth:`catch_up` of a read model in a process reads the log from the start. Call
    :meth:`catch_up` before every answer that must see what other processes wrote.
    """

    def __init__(self, store: EventStore, codec: EventCodec, *, batch_size: int = 1000) -> None:
        self.store = store
        self.codec = codec
        self.batch_size = batch_size
        self._positions: dict[int, tuple[Projection, int]] = {}
        self._lock = threading.RLock()

    def position(self, projection: Projection) -> int:
        """The last global position ``projection`` has read (0: not yet fed in this process)."""
        known = self._positions.get(id(projection))
        return known[1] if known is not None and known[0] is projection else 0

    def catch_up(self, projection: Projection, *, upto: int | None = None) -> int:
        """Handle every event after the read model's position (with ``upto``: only those at or
        before that global position, so the read model answers as the log stood there);
        returns how many it handled. A read model already past ``upto`` is left as it is."""
        if upto is not None and (isinstance(upto, bool) or not isinstance(upto, int) or upto < 0):
            raise ValidationError("upto is a log position (a whole number from 0)")
        with self._lock:  # one reader at a time, so no event is handled twice
            position = self.position(projection)
            wanted = projection.event_types
            handled = 0
            if upto is not None and position >= upto:
                return 0
            # A store that can read only some types (optional, see store.py) spares a read
            # model of a few types the rows of all the others; the result is the same.
            while True:
                events, read_to, done = read_types(self.store, position, wanted, self.batch_size)
                for stored in events:
                    if upto is not None and stored.position > upto:
                        done = True
                        break
                    projection.handle(self.codec.decode(stored))
                    handled += 1
                if upto is not None and read_to >= upto:
                    read_to, done = upto, True
                if read_to > position:
                    position = read_to
                    self._positions[id(projection)] = (projection, position)
                if done:
                    return handled

    def rebuild(self, projection: Projection) -> int:
        """Forget the read model's rows and position, then replay the whole log into it."""
        with self._lock:
            projection.reset()
            self._positions.pop(id(projection), None)
            return self.catch_up(projection)
