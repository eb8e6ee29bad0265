"""Machine-readable zones of travel documents (ICAO Doc 9303): TD1 (ID cards, 3 lines of 30),
TD2 (2 lines of 36) and TD3 (passports, 2 lines of 44).

Parsing reports every check digit separately, and separately again whether the issuing state
and nationality are known codes: a specimen from "Utopia" (UTO) has valid check digits and an
unknown state. Names and document numbers are personal data: hidden from reprs and errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

import attrs
import pycountry

from fxcrm_core.kernel.errors import ValidationError

__all__ = ["MrzFormatError", "MrzResult", "check_digit", "parse_mrz"]

_WEIGHTS = (7, 3, 1)
_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<")
# ICAO codes that are not ISO 3166 alpha-3 but are valid on documents (Doc 9303 Part 3).
_ICAO_EXTRA = frozenset(
    {"D", "EUE", "GBD", "GBN", "GBO", "GBP", "GBS", "RKS", "UNA", "UNK", "UNO", "XBA", "XIM",
     "XCC", "XCE", "XCO", "XEC", "XPO", "XES", "XMP", "XOM", "XDC", "XXA", "XXB", "XXC", "XXX"}
)  # fmt: skip


class MrzFormatError(ValidationError):
    """The text is not a machine-readable zone of a known format (the text is not echoed)."""

    default_message = "not a machine-readable zone"


def _value(char: str) -> int:
    if char.isdigit():
        return int(char)
    if char == "<":
        return 0
    return ord(char) - 55  # A=10 ... Z=35


def check_digit(field: str) -> str:
    """The ICAO 9303 check digit of a field (weights 7, 3, 1; A=10..Z=35; < = 0).

    >>> check_digit("L898902C3"), check_digit("740812")
    ('6', '2')
    """
    if any(c not in _ALLOWED for c in field):
        raise MrzFormatError("MRZ fields hold A-Z, 0-9 and < only")
    return str(sum(_value(c) * _WEIGHTS[i % 3] for i, c in enumerate(field)) % 10)


def _known_state(code: str) -> bool:
    code = code.replace("<", "")
    return code in _ICAO_EXTRA or pycountry.countries.get(alpha_3=code) is not None


def _date(yymmdd: str, *, birth: bool, today: date) -> date | None:
    if not yymmdd.isdigit():
        return None
    yy, mm, dd = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:])
    century = 2000
    if birth and 2000 + yy > today.year:
        century = 1900  # nobody is born in the future
    elif not birth and 2000 + yy > today.year + 50:
        century = 1900  # expiries more than 50 years ahead belong to the last century
    try:
        return date(century + yy, mm, dd)
    except ValueError:
        return None


def _name(field: str) -> tuple[str, str]:
    surname, _, given = field.partition("<<")
    return surname.replace("<", " ").strip(), given.replace("<", " ").strip()


@attrs.frozen
class MrzResult:
    """What a machine-readable zone says, and what was found checking it."""

    format: str
    document_code: str
    issuing_state: str
    document_number: str = attrs.field(repr=False)
    surname: str = attrs.field(repr=False)
    given_names: str = attrs.field(repr=False)
    nationality: str
    birth_date: date | None = attrs.field(repr=False)
    sex: str
    expiry_date: date | None
    optional_data: str = attrs.field(repr=False)
    check_digits: Mapping[str, bool]
    problems: tuple[str, ...]

    @property
    def check_digits_valid(self) -> bool:
        return all(self.check_digits.values())

    @property
    def issuing_state_known(self) -> bool:
        return _known_state(self.issuing_state)

    @property
    def nationality_known(self) -> bool:
        return _known_state(self.nationality)

    @property
    def valid(self) -> bool:
        """Check digits right, dates possible, states known."""
        return (
            self.check_digits_valid
            and not self.problems
            and self.issuing_state_known
            and self.nationality_known
        )


def _lines(text: object) -> list[str]:
    if isinstance(text, str):
        lines = text.split()
    elif isinstance(text, Sequence) and all(isinstance(line, str) for line in text):
        lines = [line.strip() for line in text]
    else:
        raise MrzFormatError("an MRZ is a str or a sequence of str lines")
    lines = [line.upper() for line in lines if line]
    if any(set(line) - _ALLOWED for line in lines):
        raise MrzFormatError("MRZ lines hold A-Z, 0-9 and < only")
    return lines


def parse_mrz(text: str | Sequence[str], *, today: date | None = None) -> MrzResult:
    """Parse a TD1, TD2 or TD3 zone (lines separated by whitespace, or a list of lines).

    Anything that is not such a zone, of any type, raises :class:`MrzFormatError`.

    >>> r = parse_mrz('''P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<
    ...                  L898902C36UTO7408122F1204159ZE184226B<<<<<10''')
    >>> r.format, r.check_digits_valid, r.issuing_state_known, r.expiry_date
    ('TD3', True, False, datetime.date(2012, 4, 15))
    """
    lines = _lines(text)
    if today is not None and not isinstance(today, date):
        raise ValidationError("today must be a date")
    today = today or date.today()  # noqa: DTZ011 - a calendar date for the century guess
    shape = (len(lines), len(lines[0]) if lines else 0)
    if shape == (3, 30) and all(len(x) == 30 for x in lines):
        _digits_at(lines[1], (6, 14, 29))
        return _td1(lines, today)
    if shape == (2, 36) and len(lines[1]) == 36:
        _digits_at(lines[1], (19, 27, 35))
        return _td2_td3(lines, "TD2", today)
    if shape == (2, 44) and len(lines[1]) == 44:
        _digits_at(lines[1], (9, 19, 27, 43))
        return _td2_td3(lines, "TD3", today)
    raise MrzFormatError("expected 3 lines of 30, 2 of 36 or 2 of 44 characters")


def _digits_at(line: str, positions: tuple[int, ...]) -> None:
    if not all(line[i].isdigit() for i in positions):
        raise MrzFormatError("check digit positions must hold digits")


def _common(
    fmt: str,
    code: str,
    state: str,
    number: str,
    names: str,
    nationality: str,
    birth: str,
    sex: str,
    expiry: str,
    optional: str,
    checks: dict[str, bool],
    today: date,
) -> MrzResult:
    problems: list[str] = []
    birth_date = _date(birth, birth=True, today=today)
    expiry_date = _date(expiry, birth=False, today=today)
    if birth_date is None:
        problems.append("impossible date of birth")
    if expiry_date is None:
        problems.append("impossible date of expiry")
    if sex not in ("M", "F", "<", "X"):
        problems.append("unknown sex marker")
    surname, given = _name(names)
    return MrzResult(
        fmt,
        code.replace("<", ""),
        state.replace("<", ""),
        number,
        surname,
        given,
        nationality.replace("<", ""),
        birth_date,
        sex,
        expiry_date,
        optional.rstrip("<"),
        checks,
        tuple(problems),
    )


def _td1(lines: list[str], today: date) -> MrzResult:
    l1, l2, l3 = lines
    number, number_cd, optional1 = l1[5:14], l1[14], l1[15:30]
    if number_cd == "<":
        # Long document number: the rest of it, then its check digit, open the optional data.
        rest = optional1.rstrip("<")
        number, number_cd, optional1 = number + rest[:-1], rest[-1:], ""
    checks = {
        "document_number": number_cd == check_digit(number),
        "birth_date": l2[6] == check_digit(l2[0:6]),
        "expiry_date": l2[14] == check_digit(l2[8:14]),
        "composite": l2[29] == check_digit(l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29]),
    }
    return _common(
        "TD1", l1[0:2], l1[2:5], number.replace("<", ""), l3, l2[15:18], l2[0:6], l2[7],
        l2[8:14], optional1 + l2[18:29], checks, today,
    )  # fmt: skip


def _td2_td3(lines: list[str], fmt: str, today: date) -> MrzResult:
    l1, l2 = lines
    checks = {
        "document_number": l2[9] == check_digit(l2[0:9]),
        "birth_date": l2[19] == check_digit(l2[13:19]),
        "expiry_date": l2[27] == check_digit(l2[21:27]),
    }
    if fmt == "TD3":
        personal = l2[28:42]
        # An empty personal number may carry a filler instead of a check digit.
        checks["personal_number"] = l2[42] == check_digit(personal) or (
            set(personal) == {"<"} and l2[42] == "<"
        )
        composite_source, composite_digit, optional = (
            l2[0:10] + l2[13:20] + l2[21:43], l2[43], personal,
        )  # fmt: skip
    else:
        composite_source, composite_digit, optional = (
            l2[0:10] + l2[13:20] + l2[21:35], l2[35], l2[28:35],
        )  # fmt: skip
    checks["composite"] = composite_digit == check_digit(composite_source)
    number = l2[0:9]
    if fmt == "TD2" and l2[9] == "<" and optional.rstrip("<"):
        # Long document number in TD2: continued in the optional data, then its check digit.
        rest = optional.rstrip("<")
        number, optional = number + rest[:-1], ""
        checks["document_number"] = rest[-1] == check_digit(l2[0:9] + rest[:-1])
    return _common(
        fmt, l1[0:2], l1[2:5], number.replace("<", ""), l1[5:], l2[10:13], l2[13:19], l2[20],
        l2[21:27], optional, checks, today,
    )  # fmt: skip
