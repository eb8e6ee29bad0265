"""Engagement: messages to clients, decided by rules as data, recorded in a transactional outbox
in the deciding commit (once per rule, period and client), and handed to a ``Notifier`` by a
relay that checks consent at send time, quiet hours and caps, and retries with backoff.

Depends on the clients (consents, profile), loyalty (tier changes, churn warnings) and payments
contexts, whose events its rules react to. The RabbitMQ adapter is
``fxcrm_core.engagement.amqp`` (the ``amqp`` extra), imported only by hosts that use it."""

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
from fxcrm_core.engagement.relay import (
    Backoff,
    Courtesy,
    DueMessage,
    DueMessages,
    FrequencyCap,
    OutboxRelay,
    RelayLookupError,
    RelayReport,
    SentMessages,
)
from fxcrm_core.engagement.rules import (
    CATCH_UP_DAYS,
    ENGAGEMENT_POLICY,
    ENGAGEMENT_UPSTREAM,
    Always,
    Audience,
    AudienceSource,
    ClientAudience,
    Condition,
    EngagementRule,
    EngagementRules,
    LeapDay,
    OnEvent,
    Profile,
    RulePeriod,
    Scheduled,
    ScheduleKind,
    StageIs,
    TierUp,
    observed_birthday,
)
from fxcrm_core.events import EventRegistry

__all__ = [
    "CATCH_UP_DAYS",
    "ENGAGEMENT_POLICY",
    "ENGAGEMENT_UPSTREAM",
    "MAX_PARAMS",
    "OUTBOX_EVENTS",
    "Always",
    "Audience",
    "AudienceSource",
    "Backoff",
    "ClientAudience",
    "Condition",
    "Courtesy",
    "DueMessage",
    "DueMessages",
    "EngagementRule",
    "EngagementRules",
    "FrequencyCap",
    "LeapDay",
    "OnEvent",
    "OutboxRelay",
    "Profile",
    "RelayLookupError",
    "RelayReport",
    "RulePeriod",
    "ScheduleKind",
    "Scheduled",
    "SentMessages",
    "StageIs",
    "TierUp",
    "observed_birthday",
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
