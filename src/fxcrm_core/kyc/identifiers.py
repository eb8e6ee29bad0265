"""National identity numbers through python-stdnum: one table of which standard each country
uses, and one function. Errors name the country and the standard, never the number."""

from __future__ import annotations

from typing import Any

from stdnum.exceptions import ValidationError as StdnumError
from stdnum.util import get_cc_module

from fxcrm_core.kernel.errors import ValidationError

__all__ = [
    "NATIONAL_IDS",
    "InvalidIdentifierError",
    "UnsupportedIdentifierError",
    "validate_national_id",
]

#: Country (ISO 3166 alpha-2) -> the python-stdnum module of its personal identity number.
NATIONAL_IDS: dict[str, str] = {
    "AR": "dni",
    "BG": "egn",
    "BR": "cpf",
    "CH": "ssn",
    "CN": "ric",
    "DE": "idnr",
    "DK": "cpr",
    "EE": "ik",
    "ES": "dni",
    "FI": "hetu",
    "FR": "nir",
    "ID": "nik",
    "IN": "aadhaar",
    "IT": "codicefiscale",
    "KR": "rrn",
    "MX": "curp",
    "MY": "nric",
    "NL": "bsn",
    "NO": "fodselsnummer",
    "PL": "pesel",
    "RO": "cnp",
    "SE": "personnummer",
    "TH": "pin",
    "TR": "tckimlik",
    "US": "ssn",
    "ZA": "idnr",
}


class InvalidIdentifierError(ValidationError):
    default_message = "not a valid identity number"


class UnsupportedIdentifierError(ValidationError):
    default_message = "no identity-number standard is known for that country"


def _module(country: str) -> tuple[str, Any]:
    name = NATIONAL_IDS.get(country.upper())
    module = get_cc_module(country.lower(), name) if name else None
    if name is None or module is None:
        raise UnsupportedIdentifierError(f"no identity-number standard known for {country.upper()}")
    return name, module


def validate_national_id(country: str, number: str) -> str:
    """The number in its compact form if valid for the country's standard, else a typed error.

    >>> validate_national_id("ES", "54362315-k")
    '54362315K'
    """
    name, module = _module(country)
    try:
        return str(module.validate(number))
    except StdnumError:
        raise InvalidIdentifierError(
            f"not a valid {country.upper()} {name} (check digits or format)"
        ) from None
