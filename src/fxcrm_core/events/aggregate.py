"""Aggregates: immutable states folded from their events; commands decide new events."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Self

import attrs

from fxcrm_core.events.event import DomainEvent
from fxcrm_core.kernel.errors import ValidationError

__all__ = ["Aggregate"]

_init_names: dict[type, tuple[str, ...]] = {}


@attrs.frozen(kw_only=True)
class Aggregate:
    """Base of aggregate states: ``@attrs.frozen`` subclasses whose fields all have defaults.

    A subclass sets ``category`` (the stream prefix) and implements :meth:`apply`, a pure
    function of (state, event) → state. Commands are methods that check the state and return
    the events to record; they never change the state themselves.
    """

    category: ClassVar[str]
    id: str
    version: int = 0

    @classmethod
    def stream_id_for(cls, aggregate_id: str) -> str:
        if not aggregate_id:
            raise ValidationError("aggregate id must not be empty")
        return f"{cls.category}-{aggregate_id}"

    @property
    def stream_id(self) -> str:
        return self.stream_id_for(self.id)

    def evolve(self, **changes: Any) -> Self:
        """A copy with ``changes`` (like ``attrs.evolve``, cheaper on the replay hot path)."""
        cls = type(self)
        names = _init_names.get(cls)
        if names is None:
            names = tuple(a.alias for a in attrs.fields(cls) if a.init)
            _init_names[cls] = names
        for name in names:
            if name not in changes:
                changes[name] = getattr(self, name)
        return cls(**changes)

    @classmethod
    def blank(cls, aggregate_id: str) -> Self:
        """The state before the first event (version 0)."""
        return cls(id=aggregate_id)

    def apply(self, event: DomainEvent) -> Self:
        """The state after ``event``; unknown events must raise, not be ignored."""
        raise NotImplementedError

    def fold(self, events: Iterable[DomainEvent]) -> Self:
        """Apply events in order; the version counts them."""
        state = self
        count = 0
        for event in events:
            state = state.apply(event)
            count += 1
        return state.evolve(version=self.version + count) if count else state
