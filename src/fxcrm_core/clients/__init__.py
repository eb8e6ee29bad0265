"""Clients: registration (individual and corporate) with deduplication on keyed hashes, contact
details as encrypted PII, consents, ownership, lifecycle stage and risk profile.

Depends on ``kernel``, ``events``, ``access`` (permissions) and ``privacy`` (PII types).
"""

from fxcrm_core.clients.identity import (
    IDENTITY_EVENTS,
    DuplicateClientError,
    IdentityClaim,
    IdentityClaimed,
    IdentityKeys,
    IdentityReleased,
    normalise_email,
    normalise_phone,
    register_identity_events,
)
from fxcrm_core.clients.model import (
    CLIENT_EVENTS,
    Client,
    ClientKind,
    ClientRegistered,
    Consent,
    IntroducerAssigned,
    RiskProfile,
    Stage,
    StageChanged,
)
from fxcrm_core.clients.service import (
    CLIENT_PII,
    AppropriatenessTest,
    Clients,
    ClientView,
    DedupPolicy,
    NationalIdCheck,
    Registration,
)
from fxcrm_core.events import EventRegistry
from fxcrm_core.kernel.errors import IllegalTransitionError

ALL_CLIENT_EVENTS = (*CLIENT_EVENTS, *IDENTITY_EVENTS)

__all__ = [
    "register_events",
    "ALL_CLIENT_EVENTS",
    "CLIENT_PII",
    "AppropriatenessTest",
    "Client",
    "ClientKind",
    "ClientRegistered",
    "ClientView",
    "Clients",
    "Consent",
    "DedupPolicy",
    "DuplicateClientError",
    "IdentityClaim",
    "IdentityClaimed",
    "IdentityKeys",
    "IdentityReleased",
    "IllegalTransitionError",
    "NationalIdCheck",
    "IntroducerAssigned",
    "Registration",
    "RiskProfile",
    "Stage",
    "StageChanged",
    "normalise_email",
    "normalise_phone",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all(CLIENT_EVENTS)
    register_identity_events(registry)  # version 2, with their upcasters
