"""Engagement: messages to clients through a transactional outbox and a ``Notifier`` port."""

from __future__ import annotations

from fxcrm_core.engagement.notifier import (
    Channel,
    DeliveryError,
    Envelope,
    MemoryNotifier,
    MessageKind,
    Notifier,
    Receipt,
)
from fxcrm_core.engagement.outbox import (
    MAX_PARAMS,
    OUTBOX_EVENTS,
    MessageCancelled,
    MessageDeferred,
    MessageFailed,
    MessageQueued,
    MessageSent,
    MessageStatus,
    Outbox,
    OutboxMessage,
    message_key,
)
from fxcrm_core.events import EventRegistry

__all__ = [
    "MAX_PARAMS",
    "OUTBOX_EVENTS",
    "Channel",
    "DeliveryError",
    "Envelope",
    "MemoryNotifier",
    "MessageCancelled",
    "MessageDeferred",
    "MessageFailed",
    "MessageKind",
    "MessageQueued",
    "MessageSent",
    "MessageStatus",
    "Notifier",
    "Outbox",
    "OutboxMessage",
    "Receipt",
    "message_key",
    "register_events",
]


def register_events(registry: EventRegistry) -> None:
    """Register the engagement events with a codec's registry."""
    registry.register_all(OUTBOX_EVENTS)
