"""Privacy: field encryption of PII with per-subject keys, crypto-shredding erasure, masking by
role, and PII value types with masked reprs.

Depends on ``kernel``, ``events`` and ``access`` (erasure checks permissions).
"""

from fxcrm_core.events import EventRegistry
from fxcrm_core.privacy.encryption import FieldEncryption
from fxcrm_core.privacy.erasure import (
    ERASURE_EVENTS,
    Erasure,
    ErasureBlockedError,
    ErasureChecks,
    ErasureReceipt,
    RetentionPolicy,
    SubjectErased,
)
from fxcrm_core.privacy.keys import KeyStore, MasterKeyring, MemoryKeyStore, WrappedKey
from fxcrm_core.privacy.masking import DEFAULT_MASKING, HIDDEN, MaskingPolicy, PiiKind, Reveal, mask
from fxcrm_core.privacy.pii import (
    PII_VALUE_TYPES,
    REVEAL_EVENTS,
    Address,
    BirthDate,
    DocumentNumber,
    Email,
    Iban,
    Pan,
    PersonName,
    Phone,
    PiiExported,
    PiiRevealed,
    PiiReveals,
    PiiValue,
)

__all__ = [
    "register_events",
    "DEFAULT_MASKING",
    "ERASURE_EVENTS",
    "HIDDEN",
    "PII_VALUE_TYPES",
    "REVEAL_EVENTS",
    "Address",
    "BirthDate",
    "DocumentNumber",
    "Email",
    "Erasure",
    "ErasureBlockedError",
    "ErasureChecks",
    "ErasureReceipt",
    "FieldEncryption",
    "Iban",
    "KeyStore",
    "MaskingPolicy",
    "MasterKeyring",
    "MemoryKeyStore",
    "Pan",
    "PersonName",
    "Phone",
    "PiiKind",
    "PiiExported",
    "PiiRevealed",
    "PiiReveals",
    "PiiValue",
    "RetentionPolicy",
    "Reveal",
    "SubjectErased",
    "WrappedKey",
    "mask",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all(ERASURE_EVENTS)
    registry.register_all(REVEAL_EVENTS)
