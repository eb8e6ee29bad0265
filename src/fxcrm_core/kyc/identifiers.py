"""National identity numbers through python-stdnum: one table of which standard each country
uses, and one function. Errors name the country, the standard and one reason (format, length,
checksum, birth date, region or another part), never the number.

A wrong check digit is most likely a typo; a number whose check digit is right but whose birth
date or region cannot exist is told apart (:class:`ImpossibleIdentifierError`): retyping it
will not help.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import pycountry
from stdnum import ean, luhn
from stdnum.bg import egn
from stdnum.ee import ik
from stdnum.exceptions import InvalidChecksum, InvalidFormat, InvalidLength
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.kr import rrn
from stdnum.ro import cnp
from stdnum.util import get_cc_module

from fxcrm_core.kernel.errors import ValidationError

__all__ = [
    "NATIONAL_IDS",
    "IdentifierChecksumError",
    "IdentifierFormatError",
    "IdentifierReason",
    "ImpossibleIdentifierError",
    "InvalidIdentifierError",
    "UnsupportedIdentifierError",
    "check_national_id",
    "national_id_country",
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

_MAX_LENGTH = 64  # no national number is longer; longer input is refused before stdnum sees it


class IdentifierReason(enum.Enum):
    """Why a national identity number was refused (one reason per refusal)."""

    FORMAT = "format"
    LENGTH = "length"
    CHECKSUM = "checksum"
    BIRTH_DATE = "birth date"
    REGION = "region"
    COMPONENT = "component"


class InvalidIdentifierError(ValidationError):
    """A national identity number failed its standard's checks; ``reason`` says which one."""

    default_message = "not a valid identity number"
    reason: IdentifierReason = IdentifierReason.FORMAT

    def __init__(self, message: str | None = None, *, reason: IdentifierReason | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class IdentifierFormatError(InvalidIdentifierError):
    """Not the shape of the country's number (wrong characters or length)."""

    default_message = "not in the format of the country's identity number"


class IdentifierChecksumError(InvalidIdentifierError):
    """The check digit does not match: most likely a typo."""

    default_message = "the identity number's check digit does not match (a typo?)"
    reason = IdentifierReason.CHECKSUM


class ImpossibleIdentifierError(InvalidIdentifierError):
    """The check digit is right (or the standard has none) but a part of the number cannot
    exist: a birth date that is not a date, a region that is not assigned."""

    default_message = "the identity number encodes an impossible birth date or region"
    reason = IdentifierReason.COMPONENT

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: IdentifierReason | None = None,
        checksum_valid: bool | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        #: True: the check digit is right; None: the standard has no check digit.
        self.checksum_valid = checksum_valid


class UnsupportedIdentifierError(ValidationError):
    default_message = "no identity-number standard is known for that country"


# Standards whose ``validate`` judges the check digit before the birth date or region: a
# component error from them comes with a right check digit.
_CHECK_FIRST = frozenset({"cn.ric", "pl.pesel", "no.fodselsnummer", "th.pin"})
# The others: is the check digit right, on the compact number (None: the standard has none).
_CHECKSUMS: dict[str, Callable[[str], bool] | None] = {
    "bg.egn": lambda n: egn.calc_check_digit(n[:-1]) == n[-1],
    "ro.cnp": lambda n: cnp.calc_check_digit(n[:-1]) == n[-1],
    "kr.rrn": lambda n: rrn.calc_check_digit(n[:-1]) == n[-1],
    "ee.ik": lambda n: ik.calc_check_digit(n) == n[-1],
    "se.personnummer": lambda n: luhn.is_valid((n[:-5] + n[-4:])[-10:]),
    "za.idnr": luhn.is_valid,
    "ch.ssn": ean.is_valid,
    "my.nric": None,
    "id.nik": None,
    "dk.cpr": None,
    "us.ssn": None,
}
# Functions of a standard that read one part of the number, and the reason when they fail.
_PARTS = (
    ("get_birth_date", IdentifierReason.BIRTH_DATE),
    ("get_birth_place", IdentifierReason.REGION),
    ("get_county", IdentifierReason.REGION),
    ("_check_registration_place", IdentifierReason.REGION),
)


def national_id_country(country: str) -> str | None:
    """The alpha-2 code of ``country`` (alpha-2 or alpha-3) if it has a known national-number
    standard, else None.

    >>> national_id_country("esp"), national_id_country("GB")
    ('ES', None)
    """
    if not isinstance(country, str) or not country.isascii() or not country.isalpha():
        return None
    code = country.upper()
    if len(code) == 3:
        found = pycountry.countries.get(alpha_3=code)
        code = found.alpha_2 if found is not None else ""
    return code if code in NATIONAL_IDS else None


def _module(country: str) -> tuple[str, str, Any]:
    if not isinstance(country, str):
        raise UnsupportedIdentifierError("the country must be an ISO 3166 code")
    code = national_id_country(country)
    name = NATIONAL_IDS.get(code) if code else None
    module = get_cc_module(code.lower(), name) if code and name else None
    if code is None or name is None or module is None:
        shown = country.upper() if country.isascii() and country.isalpha() else "that country"
        raise UnsupportedIdentifierError(f"no identity-number standard known for {shown[:3]}")
    return code, name, module


def _component_reason(module: Any, compact: str, exc: BaseException) -> IdentifierReason:
    if "birth" in str(exc).lower():
        return IdentifierReason.BIRTH_DATE
    for function, reason in _PARTS:
        read = getattr(module, function, None)
        if read is None:
            continue
        try:
            read(compact)
        except Exception:
            return reason
    return IdentifierReason.COMPONENT


def _checksum_valid(key: str, compact: str) -> bool | None:
    if key in _CHECK_FIRST:
        return True
    check = _CHECKSUMS.get(key)
    if check is None:
        return None
    try:
        return check(compact)
    except Exception:
        return False


def validate_national_id(country: str, number: str) -> str:
    """The number in its compact form if valid for the country's standard, else a typed error
    with one reason.

    >>> validate_national_id("ES", "54362315-k")
    '54362315K'
    >>> validate_national_id("CN", "110105194912310021")
    Traceback (most recent call last):
    ...
    fxcrm_core.kyc.identifiers.IdentifierChecksumError: not a valid CN ric: the check digit does not match (a typo?)
    """  # noqa: E501
    code, name, module = _module(country)
    label = f"{code} {name}"
    if not isinstance(number, str) or not number.strip():
        raise IdentifierFormatError(f"not a valid {label}: give the number as text")
    if len(number) > _MAX_LENGTH:
        raise IdentifierFormatError(
            f"not a valid {label}: wrong length (too long)", reason=IdentifierReason.LENGTH
        )
    try:
        return str(module.validate(number))
    except InvalidChecksum:
        raise IdentifierChecksumError(
            f"not a valid {label}: the check digit does not match (a typo?)"
        ) from None
    except InvalidLength:
        raise IdentifierFormatError(
            f"not a valid {label}: wrong length", reason=IdentifierReason.LENGTH
        ) from None
    except InvalidFormat:
        raise IdentifierFormatError(
            f"not a valid {label}: wrong format (characters or layout)",
            reason=IdentifierReason.FORMAT,
        ) from None
    except (StdnumError, KeyError, ValueError, IndexError, TypeError) as exc:
        # InvalidComponent, or a lookup of a part that does not exist (stdnum's KeyError)
        problem: BaseException = exc
    key = f"{code.lower()}.{name}"
    try:
        compact = str(module.compact(number))
    except Exception:
        compact = number
    reason = _component_reason(module, compact, problem)
    valid = _checksum_valid(key, compact)
    if valid is False:
        raise IdentifierChecksumError(
            f"not a valid {label}: the check digit does not match (a typo?)"
        )
    what = {
        IdentifierReason.BIRTH_DATE: "the birth date it encodes is impossible",
        IdentifierReason.REGION: "the region it encodes does not exist",
    }.get(reason, "a component of it cannot exist")
    why = "the check digit is right" if valid else f"the {name} has no check digit"
    raise ImpossibleIdentifierError(
        f"not a valid {label}: {what} ({why})", reason=reason, checksum_valid=valid
    )


def check_national_id(country: str, number: str) -> str | None:
    """Like :func:`validate_national_id` where the country has a known standard; None where it
    has none (the number is then some other document's, checked elsewhere). This is the
    check registration uses (``Clients(national_ids=...)``).

    >>> check_national_id("ES", "54362315-k"), check_national_id("GB", "X1234567")
    ('54362315K', None)
    """
    if national_id_country(country) is None:
        return None
    return validate_national_id(country, number)
