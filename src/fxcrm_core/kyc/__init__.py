"""KYC: identity-document checks (ICAO 9303 machine-readable zones, national identity numbers
through python-stdnum; IBANs are ``fxcrm_core.privacy.Iban``).

Depends on ``kernel`` only (the document review workflow will add ``events`` and ``privacy``).
"""

from fxcrm_core.kyc.identifiers import (
    NATIONAL_IDS,
    InvalidIdentifierError,
    UnsupportedIdentifierError,
    validate_national_id,
)
from fxcrm_core.kyc.mrz import MrzFormatError, MrzResult, check_digit, parse_mrz

__all__ = [
    "NATIONAL_IDS",
    "InvalidIdentifierError",
    "MrzFormatError",
    "MrzResult",
    "UnsupportedIdentifierError",
    "check_digit",
    "parse_mrz",
    "validate_national_id",
]
