"""KYC: identity documents and their review workflow, expiry and reminders, verification levels
that unlock rights, and identifier checks (ICAO 9303 machine-readable zones, national identity
numbers through python-stdnum; IBANs are ``fxcrm_core.privacy.Iban``).

Depends on ``kernel``, ``events`` and ``access``.
"""

from fxcrm_core.events import EventRegistry
from fxcrm_core.kyc.documents import (
    DEFAULT_LEVELS,
    DOCUMENT_EVENTS,
    DocumentApproved,
    DocumentExpired,
    DocumentRegister,
    DocumentRejected,
    DocumentReRequested,
    DocumentStatus,
    DocumentType,
    KycDocument,
    LevelPolicy,
    Reminder,
    Right,
    UnknownDocumentTypeError,
)
from fxcrm_core.kyc.identifiers import (
    NATIONAL_IDS,
    IdentifierChecksumError,
    IdentifierFormatError,
    IdentifierReason,
    ImpossibleIdentifierError,
    InvalidIdentifierError,
    UnsupportedIdentifierError,
    check_national_id,
    national_id_country,
    validate_national_id,
)
from fxcrm_core.kyc.levels import LEVEL_EVENTS, KycLevelChanged, KycStatus
from fxcrm_core.kyc.mrz import MrzFormatError, MrzResult, check_digit, parse_mrz
from fxcrm_core.kyc.service import InvalidDocumentError, KycLevelTooLowError, KycService

__all__ = [
    "register_events",
    "DEFAULT_LEVELS",
    "DOCUMENT_EVENTS",
    "LEVEL_EVENTS",
    "NATIONAL_IDS",
    "DocumentApproved",
    "DocumentExpired",
    "DocumentRegister",
    "DocumentRejected",
    "DocumentReRequested",
    "DocumentStatus",
    "DocumentType",
    "IdentifierChecksumError",
    "IdentifierFormatError",
    "IdentifierReason",
    "ImpossibleIdentifierError",
    "InvalidDocumentError",
    "InvalidIdentifierError",
    "KycDocument",
    "KycLevelChanged",
    "KycLevelTooLowError",
    "KycService",
    "KycStatus",
    "LevelPolicy",
    "MrzFormatError",
    "MrzResult",
    "Reminder",
    "Right",
    "UnknownDocumentTypeError",
    "UnsupportedIdentifierError",
    "check_digit",
    "check_national_id",
    "national_id_country",
    "parse_mrz",
    "validate_national_id",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all((*DOCUMENT_EVENTS, *LEVEL_EVENTS))
