"""The event-sourcing core: events, aggregates, the EventStore port, codec, projections, units of
work.

Imports only ``fxcrm_core.kernel``.
"""

from fxcrm_core.events.aggregate import Aggregate
from fxcrm_core.events.codec import (
    EventCodec,
    EventRegistry,
    FieldCipher,
    PayloadCipher,
    Upcaster,
    ValueCodec,
    make_converter,
)
from fxcrm_core.events.event import (
    ERASED,
    DomainEvent,
    Erased,
    EventMetadata,
    RecordedEvent,
    pii,
)
from fxcrm_core.events.leases import Leases, LocalLeases
from fxcrm_core.events.policy import (
    POLICY_EVENTS,
    Handler,
    Policy,
    PolicyAdvanced,
    PolicyError,
    PolicyRunner,
    PolicyTracker,
    PolicyWaitingError,
)
from fxcrm_core.events.projection import Projection, ProjectionRunner
from fxcrm_core.events.repository import Repository
from fxcrm_core.events.store import (
    AppendResult,
    CheckpointStore,
    EventStore,
    NewEvent,
    Snapshot,
    SnapshotStore,
    StoredEvent,
    StreamAppend,
    iter_all,
)
from fxcrm_core.events.unit_of_work import UnitOfWork

__all__ = [
    "register_events",
    "ERASED",
    "POLICY_EVENTS",
    "Handler",
    "Leases",
    "LocalLeases",
    "Policy",
    "PolicyAdvanced",
    "PolicyError",
    "PolicyWaitingError",
    "PolicyRunner",
    "PolicyTracker",
    "Aggregate",
    "AppendResult",
    "CheckpointStore",
    "DomainEvent",
    "Erased",
    "EventCodec",
    "EventMetadata",
    "EventRegistry",
    "EventStore",
    "FieldCipher",
    "NewEvent",
    "PayloadCipher",
    "Projection",
    "ProjectionRunner",
    "RecordedEvent",
    "Repository",
    "Snapshot",
    "SnapshotStore",
    "StoredEvent",
    "StreamAppend",
    "UnitOfWork",
    "Upcaster",
    "ValueCodec",
    "iter_all",
    "make_converter",
    "pii",
]


def register_events(registry: EventRegistry) -> None:
    """Register the event core's own events (the policies' positions)."""
    registry.register_all(POLICY_EVENTS)
