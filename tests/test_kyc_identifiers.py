"""ICAO 9303 machine-readable zones (specimens, generated, broken) and national IDs."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fxcrm_core.kernel import ValidationError
from fxcrm_core.kyc import (
    NATIONAL_IDS,
    IdentifierChecksumError,
    IdentifierFormatError,
    IdentifierReason,
    ImpossibleIdentifierError,
    InvalidIdentifierError,
    MrzFormatError,
    UnsupportedIdentifierError,
    check_digit,
    parse_mrz,
    validate_national_id,
)

TODAY = date(2026, 11, 22)
# The specimens of ICAO Doc 9303 (Parts 4, 5 and 6), issued by the fictional state of Utopia.
TD3 = "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\nL898902C36UTO7408122F1204159ZE184226B<<<<<10"
TD2 = "I<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<\nD231458907UTO7408122F1204159<<<<<<<6"
TD1 = (
    "I<UTOD231458907<<<<<<<<<<<<<<<\n7408122F1204159UTO<<<<<<<<<<<6\nERIKSSON<<ANNA<MARIA<<<<<<<<<<"
)
TD1_LONG = (
    "I<UTOD23145890<7349<<<<<<<<<<<\n3407127M9507122UTO<<<<<<<<<<<2\nSTEVENSON<<PETER<JOHN<<<<<<<<<"
)


@pytest.mark.parametrize(
    ("mrz", "fmt", "number", "surname", "given", "born", "expires"),
    [
        (TD3, "TD3", "L898902C3", "ERIKSSON", "ANNA MARIA", date(1974, 8, 12), date(2012, 4, 15)),
        (TD2, "TD2", "D23145890", "ERIKSSON", "ANNA MARIA", date(1974, 8, 12), date(2012, 4, 15)),
        (TD1, "TD1", "D23145890", "ERIKSSON", "ANNA MARIA", date(1974, 8, 12), date(2012, 4, 15)),
        (
            TD1_LONG,
            "TD1",
            "D23145890734",
            "STEVENSON",
            "PETER JOHN",
            date(1934, 7, 12),
            date(1995, 7, 12),
        ),
    ],
)
def test_icao_specimens(
    mrz: str, fmt: str, number: str, surname: str, given: str, born: date, expires: date
) -> None:
    r = parse_mrz(mrz, today=TODAY)
    assert r.format == fmt
    assert r.check_digits_valid, r.check_digits
    assert (r.document_number, r.surname, r.given_names) == (number, surname, given)
    assert (r.birth_date, r.expiry_date) == (born, expires)
    assert r.problems == ()
    # Check digits valid and issuing state known are separate findings: Utopia is not a state.
    assert (r.issuing_state, r.issuing_state_known, r.nationality_known) == ("UTO", False, False)
    assert not r.valid
    assert number not in repr(r)
    assert surname not in repr(r)


def test_a_real_state_is_known() -> None:
    real = TD3.replace("P<UTO", "P<DEU").replace("UTO7408", "DEU7408")
    lines = real.split("\n")
    r = parse_mrz(lines, today=TODAY)
    assert (r.issuing_state_known, r.nationality_known, r.check_digits_valid) == (True, True, True)
    assert r.valid
    german = parse_mrz(real.replace("P<DEU", "P<D<<"), today=TODAY)
    assert german.issuing_state == "D"
    assert german.issuing_state_known


@pytest.mark.parametrize(
    ("position", "field"),
    [(3, "document_number"), (15, "birth_date"), (24, "expiry_date"), (30, "personal_number")],
)
def test_each_broken_field_fails_its_own_check_digit(position: int, field: str) -> None:
    l1, l2 = TD3.split("\n")
    replacement = "7" if l2[position] != "7" else "8"
    broken = parse_mrz([l1, l2[:position] + replacement + l2[position + 1 :]], today=TODAY)
    assert not broken.check_digits[field]
    assert not broken.check_digits["composite"]
    assert not broken.check_digits_valid


@pytest.mark.parametrize(
    "text",
    ["", "P<UTO\nL898", TD3.replace("<", "-"), TD3 + "\nEXTRA", "a" * 44 + "\n" + "b" * 44],
)
def test_malformed_zones_are_typed_errors_without_echo(text: str) -> None:
    with pytest.raises(MrzFormatError) as info:
        parse_mrz(text, today=TODAY)
    assert isinstance(info.value, ValidationError)
    assert "ERIKSSON" not in str(info.value)


def test_impossible_dates_are_reported_not_guessed() -> None:
    l1, l2 = TD3.split("\n")
    bad = l2[:13] + "741332" + check_digit("741332") + l2[20:]
    r = parse_mrz([l1, bad], today=TODAY)
    assert r.birth_date is None
    assert "impossible date of birth" in r.problems
    assert r.check_digits["birth_date"]  # the digits are right; the date is not
    assert not r.valid


@given(
    number=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=9),
    born=st.dates(date(1930, 1, 1), date(2025, 12, 31)),
    expires=st.dates(date(2027, 1, 1), date(2060, 12, 31)),
    sex=st.sampled_from("MFX<"),
    personal=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", max_size=14),
)
def test_generated_td3_zones_round_trip(
    number: str, born: date, expires: date, sex: str, personal: str
) -> None:
    doc = number.ljust(9, "<")
    dob, exp = born.strftime("%y%m%d"), expires.strftime("%y%m%d")
    pers = personal.ljust(14, "<")
    pers_cd = check_digit(pers) if personal else "<"
    line2 = (
        doc + check_digit(doc) + "FRA" + dob + check_digit(dob) + sex + exp + check_digit(exp)
        + pers + pers_cd
    )  # fmt: skip
    line2 += check_digit(line2[0:10] + line2[13:20] + line2[21:43])
    line1 = "P<FRADOE<<JANE".ljust(44, "<")
    r = parse_mrz([line1, line2], today=TODAY)
    assert r.check_digits_valid, r.check_digits
    assert (r.document_number, r.birth_date, r.expiry_date) == (number, born, expires)
    assert r.optional_data == personal
    assert r.valid


@given(
    number=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=10, max_size=14),
    born=st.dates(date(1930, 1, 1), date(2025, 12, 31)),
)
def test_generated_td1_long_document_numbers(number: str, born: date) -> None:
    head, rest = number[:9], number[9:]
    line1 = ("I<FRA" + head + "<" + rest + check_digit(number)).ljust(30, "<")
    dob = born.strftime("%y%m%d")
    line2 = dob + check_digit(dob) + "F" + "300101" + check_digit("300101") + "FRA"
    line2 = line2.ljust(29, "<")
    line2 += check_digit(line1[5:30] + line2[0:7] + line2[8:15] + line2[18:29])
    r = parse_mrz([line1, line2, "DOE<<JANE".ljust(30, "<")], today=TODAY)
    assert r.check_digits_valid, r.check_digits
    assert r.document_number == number


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<", min_size=1, max_size=20), st.data()
)
def test_changing_one_character_changes_the_check_digit(field: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(field) - 1))
    other = data.draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<"))
    changed = field[:i] + other + field[i + 1 :]
    # The 7-3-1 scheme catches every change of one character whose values differ mod 10.
    values = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    value = {c: n for n, c in enumerate(values)} | {"<": 0}
    assume((value[field[i]] - value[other]) % 10 != 0)
    assert check_digit(changed) != check_digit(field)


@pytest.mark.parametrize(
    ("country", "number", "compact"),
    [
        ("ES", "54362315-K", "54362315K"),
        ("NL", "1112.22.333", "111222333"),
        ("BR", "390.533.447-05", "39053344705"),
    ],
)
def test_national_ids(country: str, number: str, compact: str) -> None:
    assert validate_national_id(country, number) == compact


def test_bad_national_ids_are_typed_errors_without_echo() -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        validate_national_id("ES", "54362315-Z")
    assert "54362315" not in str(info.value)
    with pytest.raises(UnsupportedIdentifierError):
        validate_national_id("XX", "123")


def _cn(body: str) -> str:
    """A Chinese resident identity number with its check digit computed (ISO 7064 MOD 11-2)."""
    from stdnum.cn import ric

    return body + ric.calc_check_digit(body + "0")


def _bg(body: str) -> str:
    from stdnum.bg import egn

    return body + egn.calc_check_digit(body)


@pytest.mark.parametrize(
    ("country", "number", "error", "reason", "checksum_valid"),
    [
        # A typo: the check digit does not match.
        ("CN", "110105194912310021", IdentifierChecksumError, IdentifierReason.CHECKSUM, None),
        # Check digit right, birth date 1975-13-31 impossible (stdnum judges the date first).
        ("BG", _bg("751331926"), ImpossibleIdentifierError, IdentifierReason.BIRTH_DATE, True),
        # A typo in the date digits: the check digit is wrong too, so it is a typo.
        ("BG", "7513319260", IdentifierChecksumError, IdentifierReason.CHECKSUM, None),
        # Check digit right, region 990105 not assigned (stdnum raised KeyError for some).
        ("CN", _cn("99010519491231002"), ImpossibleIdentifierError, IdentifierReason.REGION, True),
        ("CN", "455137310604228621", ImpossibleIdentifierError, IdentifierReason.REGION, True),
        (
            "CN", _cn("11010519491331002"), ImpossibleIdentifierError,
            IdentifierReason.BIRTH_DATE, True,
        ),
        # No check digit in the standard: impossible, and said so.
        ("MY", "770229-99-5033", ImpossibleIdentifierError, IdentifierReason.BIRTH_DATE, None),
        ("ES", "5436231", IdentifierFormatError, IdentifierReason.LENGTH, None),
        ("ES", "5436231x-!", IdentifierFormatError, IdentifierReason.FORMAT, None),
        ("ES", "1" * 10_000, IdentifierFormatError, IdentifierReason.LENGTH, None),
    ],
)  # fmt: skip
def test_each_refusal_names_one_reason(
    country: str,
    number: str,
    error: type[InvalidIdentifierError],
    reason: IdentifierReason,
    checksum_valid: bool | None,
) -> None:
    with pytest.raises(error) as info:
        validate_national_id(country, number)
    assert type(info.value) is error
    assert info.value.reason is reason
    assert isinstance(info.value, InvalidIdentifierError)
    if isinstance(info.value, ImpossibleIdentifierError):
        assert info.value.checksum_valid is checksum_valid
        assert "typo" not in str(info.value)
    assert number[:6] not in str(info.value)
    assert reason.value in str(info.value) or error is IdentifierChecksumError


def test_alpha3_countries_and_odd_arguments() -> None:
    assert validate_national_id("ESP", "54362315-K") == "54362315K"
    for country in ("", "GB", "1X", "ÉS", None, ["ES"]):
        with pytest.raises(UnsupportedIdentifierError):
            validate_national_id(country, "54362315K")  # type: ignore[arg-type]
    for number in (None, 54362315, "", "   "):
        with pytest.raises(IdentifierFormatError):
            validate_national_id("ES", number)  # type: ignore[arg-type]


@given(st.sampled_from(sorted(NATIONAL_IDS)), st.text(max_size=40))
def test_hostile_numbers_raise_only_typed_errors(country: str, number: str) -> None:
    refused: Exception | None = None
    try:
        validate_national_id(country, number)
    except Exception as caught:  # the law: nothing else escapes
        refused = caught
    assert refused is None or isinstance(refused, InvalidIdentifierError)
    if isinstance(refused, InvalidIdentifierError):
        assert isinstance(refused.reason, IdentifierReason)


@given(
    st.sampled_from(sorted(NATIONAL_IDS)),
    st.text(alphabet="0123456789", min_size=8, max_size=18),
)
def test_digit_strings_raise_only_typed_errors(country: str, number: str) -> None:
    refused: Exception | None = None
    try:
        validate_national_id(country, number)
    except Exception as caught:  # the law: nothing else escapes
        refused = caught
    assert refused is None or isinstance(refused, InvalidIdentifierError)
