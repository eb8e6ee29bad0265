"""Masking by role and kind, failing closed; PII types validate and hide themselves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.events import ERASED
from fxcrm_core.kernel import ValidationError
from fxcrm_core.privacy import (
    DEFAULT_MASKING,
    HIDDEN,
    DocumentNumber,
    Email,
    Iban,
    Pan,
    PersonName,
    Phone,
    PiiKind,
    Reveal,
    mask,
)

PAN = "4111111111111111"
IBAN = "DE89370400440532013000"


@pytest.mark.parametrize("reveal", list(Reveal))
def test_a_pan_never_shows_more_than_bin_and_last_four(reveal: Reveal) -> None:
    shown = mask(PiiKind.PAN, PAN, reveal)
    assert PAN[6:12] not in shown
    assert shown in (HIDDEN, "411111******1111")


@given(st.text(alphabet="0123456789", min_size=12, max_size=19))
def test_pan_partial_mask_law(digits: str) -> None:
    shown = mask(PiiKind.PAN, digits, Reveal.PARTIAL)
    assert shown[:6] == digits[:6]
    assert shown[-4:] == digits[-4:]
    assert set(shown[6:-4]) <= {"*"}
    assert len(shown) == len(digits)


def test_partial_masks_per_kind() -> None:
    assert mask(PiiKind.IBAN, IBAN, Reveal.PARTIAL) == "DE" + "*" * 16 + "3000"
    assert mask(PiiKind.EMAIL, "ana@example.com", Reveal.PARTIAL) == "a***@e***.com"
    assert mask(PiiKind.PHONE, "+447911123456", Reveal.PARTIAL) == "+44 ********56"
    assert mask(PiiKind.NAME, "Ana Lima", Reveal.PARTIAL) == "A. L."
    assert mask(PiiKind.DOCUMENT, "X1234567", Reveal.PARTIAL) == "******67"
    assert mask(PiiKind.BIRTH_DATE, "1990-05-17", Reveal.PARTIAL) == "1990-**-**"
    assert mask(PiiKind.ADDRESS, "1 Main St", Reveal.PARTIAL) == HIDDEN
    assert mask(PiiKind.EMAIL, "not-an-email", Reveal.PARTIAL) == HIDDEN
    assert mask(PiiKind.NAME, ERASED, Reveal.FULL) is ERASED


def test_roles_see_what_the_policy_gives_them_and_unknown_roles_nothing() -> None:
    show = DEFAULT_MASKING.show
    assert show({"compliance"}, PiiKind.IBAN, IBAN) == IBAN
    assert show({"support"}, PiiKind.IBAN, IBAN) == "DE" + "*" * 16 + "3000"
    assert show({"sales"}, PiiKind.IBAN, IBAN) == HIDDEN
    assert show({"intern"}, PiiKind.NAME, "Ana Lima") == HIDDEN
    assert show(set(), PiiKind.NAME, "Ana Lima") == HIDDEN
    assert show({"ib", "support"}, PiiKind.NAME, "Ana Lima") == "Ana Lima"  # most of its roles


def test_records_mask_unknown_fields() -> None:
    record = {"client_id": "c-1", "name": "Ana Lima", "iban": IBAN, "notes": "VIP, call Ana"}
    shown = DEFAULT_MASKING.show_record(
        {"support"},
        record,
        {"name": PiiKind.NAME, "iban": PiiKind.IBAN},
        public={"client_id"},
    )
    assert shown == {
        "client_id": "c-1",
        "name": "Ana Lima",
        "iban": "DE" + "*" * 16 + "3000",
        "notes": HIDDEN,
    }


def test_pii_types_normalise_and_hide_in_repr_and_str() -> None:
    values = {
        Pan.parse("4111 1111 1111 1111"): PAN,
        Iban.parse("de89 3704 0044 0532 0130 00"): IBAN,
        Email.parse(" Ana.Lima@EXAMPLE.com "): "Ana.Lima@example.com",
        Phone.parse("+44 7911 123456"): "+447911123456",
        PersonName.parse("  Ana   Lima "): "Ana Lima",
        DocumentNumber.parse("x123 4567"): "X1234567",
    }
    for value, clear in values.items():
        assert value.reveal() == clear
        assert clear not in repr(value)
        assert clear not in str(value)
        assert clear not in f"{value!r} {value}"


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        (Pan, "4111111111111112"),
        (Pan, "4111-abc"),
        (Iban, "DE89370400440532013001"),
        (Email, "ana@"),
        (Phone, "07911 123456"),
        (Phone, "+44 1"),
        (DocumentNumber, "X12-345"),
        (PersonName, "   "),
    ],
)
def test_bad_pii_is_a_typed_error_that_does_not_echo_it(kind: type[Pan], bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        kind.parse(bad)
    assert bad.strip() not in str(info.value) or not bad.strip()
