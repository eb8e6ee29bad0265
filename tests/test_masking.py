"""Masking by role and kind, failing closed; PII types validate and hide themselves."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from stdnum import luhn

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


@given(st.text(alphabet="0123456789", min_size=11, max_size=18))
def test_pan_partial_mask_law(body: str) -> None:
    digits = body + luhn.calc_check_digit(body)
    shown = mask(PiiKind.PAN, digits, Reveal.PARTIAL)
    assert len(shown) == len(digits)
    assert shown[-4:] == digits[-4:]
    # PCI DSS's most (BIN and last four), and at least five digits hidden: a number shorter
    # than 15 digits shows its last four only.
    head = 6 if len(digits) >= 15 else 0
    assert shown[:head] == digits[:head]
    assert set(shown[head:-4]) == {"*"}
    assert sum(ch == "*" for ch in shown) >= 5


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1111 exp 12/27",
        "4111111111111111 1227",
        "card 4111-1111-1111-1111, cvv 123",
        "4111 1111 1111 1111 12",
        "411111111111111 1227",
        "4111111111111112",  # not a card number (Luhn)
        "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦",  # not ASCII digits
        "4111 1111-1111 1111",  # mixed separators
    ],
)
@pytest.mark.parametrize("reveal", [Reveal.PARTIAL, Reveal.FULL])
def test_free_text_is_not_a_card_number_and_is_hidden(text: str, reveal: Reveal) -> None:
    assert mask(PiiKind.PAN, text, reveal) == HIDDEN


@pytest.mark.parametrize(
    "text", ["4111 1111 1111 1111", "4111-1111-1111-1111", " 4111111111111111 "]
)
def test_a_card_number_written_in_groups_is_masked(text: str) -> None:
    assert mask(PiiKind.PAN, text, Reveal.PARTIAL) == "411111******1111"
    assert mask(PiiKind.PAN, "3782 822463 10005", Reveal.PARTIAL) == "378282*****0005"


@given(st.text(min_size=1).filter(lambda t: any(c.isdigit() for c in t)))
@example(" 12/27")
@example("3")  # 41111111111111113 passes the Luhn check
def test_no_digits_next_to_a_card_number_pass_for_its_last_four(suffix: str) -> None:
    shown = mask(PiiKind.PAN, PAN + suffix, Reveal.PARTIAL)
    longer = (PAN + suffix).strip()
    if longer.isdigit() and len(longer) <= 19 and luhn.is_valid(longer):
        # The digits make a longer card number of their own (4111...1113 is one): its view.
        assert shown == longer[:6] + "*" * (len(longer) - 10) + longer[-4:]
    else:
        assert shown == HIDDEN or shown == "411111******1111"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("王小明", "王**"),
        ("王明", "王**"),
        ("王 小明", "王**"),
        ("欧阳娜娜", "欧阳**"),
        ("欧阳修", "欧阳**"),
        ("司马相如", "司马**"),
        ("诸葛亮", "诸葛**"),
        ("歐陽修", "歐陽**"),
        ("上官婉儿", "上官**"),
        ("欧阳", "欧**"),  # two characters: a one-character family name and a given name
        ("王", HIDDEN),
        ("Ana Maria Lima", "A. M. L."),
    ],
)
def test_chinese_names_keep_the_family_name_and_mask_the_given_name(name: str, shown: str) -> None:
    assert mask(PiiKind.NAME, name, Reveal.PARTIAL) == shown
    assert DEFAULT_MASKING.show({"ib"}, PiiKind.NAME, name) == shown


def test_a_chinese_person_name_value_masks_itself_in_its_convention() -> None:
    name = PersonName.parse("王小明")
    assert (str(name), repr(name)) == ("王**", "PersonName('王**')")
    assert "小" not in repr(PersonName.parse("欧阳小明"))


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
