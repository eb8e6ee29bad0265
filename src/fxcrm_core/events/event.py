"""Domain events and their envelope: what happened, who/when/why, and its place in the log."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

import attrs

__all__ = ["ERASED", "DomainEvent", "Erased", "EventMetadata", "RecordedEvent", "pii"]


class DomainEvent:
    """Base of every domain event: subclasses are ``@attrs.frozen`` classes named in past tense.

    ``__subject__`` names the field holding the data subject (client) id, required when the
    event has PII fields: the field cipher uses one key per subject. ``__value_codecs__`` lists
    :class:`~fxcrm_core.events.ValueCodec` entries for value types the event holds in bulk, when
    the generic field-by-field form is too slow or too big (registering the event brings them).
    ``__reuse_decoded__`` (for big events without PII whose decoding gives back an equal
    event) lets a codec hand a process's own freshly written event back to a reader of those
    very stored bytes instead of decoding them again.
    """

    __slots__ = ()
    __subject__: ClassVar[str | None] = None
    __value_codecs__: ClassVar[tuple[Any, ...]] = ()
    __reuse_decoded__: ClassVar[bool] = False


def pii(**kwargs: Any) -> Any:
    """An attrs field that holds personal data: encrypted per subject when a cipher is set.

    PII fields hold text (``str`` or ``str | None``); ``repr`` hides them.
    """
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["pii"] = True
    return attrs.field(metadata=metadata, repr=False, **kwargs)


class Erased(str):
    """The value a PII field reads as once its subject's key is destroyed."""

    __slots__ = ()


ERASED = Erased("[erased]")


@attrs.frozen(slots=True)
class EventMetadata:
    """Who caused an event and why, and how it links to the request that caused it."""

    actor: str
    correlation_id: str | None = None
    causation_id: str | None = None
    reason: str | None = None


E = TypeVar("E", bound=DomainEvent, covariant=True)


@attrs.frozen(slots=True)
class RecordedEvent(Generic[E]):
    """A decoded event in its envelope: stream, version, global position and recording time."""

    stream_id: str
    version: int
    position: int
    recorded_at: datetime
    event: E
    metadata: EventMetadata
