"""KYC: identity documents and their review workflow, expiry and reminders, verification levels
that unlock rights, and identifier checks (ICAO 9303 machine-readable zones, national identity
numbers through python-stdnum; IBANs are ``fxcrm_core.privacy.Iban``).

Depends on ``kernel``, ``events`` and ``access``.
"""

from fxcrm_core.kyc.documents import (
    DEFAULT_LEVELS,
    DOCUMENT_EVENTS,
    DocumentRegister,
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
    InvalidIdentifierError,
    UnsupportedIdentifierError,
    validate_national_id,
)
from fxcrm_core.kyc.mrz import MrzFormatError, MrzResult, check_digit, parse_mrz
from fxcrm_core.kyc.service import InvalidDocumentError, KycLevelTooLowError, KycService

__all__ = [
    "DEFAULT_LEVELS",
    "DOCUMENT_EVENTS",
    "NATIONAL_IDS",
    "DocumentRegister",
    "DocumentStatus",
    "DocumentType",
    "InvalidDocumentError",
    "InvalidIdentifierError",
    "KycDocument",
    "KycLevelTooLowError",
    "KycService",
    "LevelPolicy",
    "MrzFormatError",
    "MrzResult",
    "Reminder",
    "Right",
    "UnknownDocumentTypeError",
    "UnsupportedIdentifierError",
    "check_digit",
    "parse_mrz",
    "validate_national_id",
]
