"""PII value types validate when built, however built; stdnum and phonenumbers failures reach a
caller only as typed errors; a card number is shown whole only through an audited reveal."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.kernel import AccessDeniedError, ValidationError
from fxcrm_core.privacy import (
    DEFAULT_MASKING,
    DocumentNumber,
    Email,
    Iban,
    Pan,
    PersonName,
    Phone,
    PiiKind,
    PiiRevealed,
    PiiReveals,
    PiiValue,
)

PAN = "4111111111111111"
IBAN = "DE89370400440532013000"
FULLWIDTH_PAN = PAN.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})  # CJK keyboards
TYPES: list[type[PiiValue]] = [PiiValue, Pan, Iban, Email, Phone, PersonName, DocumentNumber]


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        (Iban, "garbage"),
        (Iban, "DE89370400440532013001"),  # checksum
        (Iban, "de89 3704 0044 0532 0130 00"),  # valid, but not in canonical form: use .parse
        (Pan, "1234"),
        (Pan, "4111111111111112"),  # Luhn
        (Pan, "4111 1111 1111 1111"),
        (Pan, FULLWIDTH_PAN),  # .parse accepts fullwidth digits, the constructor does not
        (Email, "ana"),
        (Email, "Ana@EXAMPLE.com"),
        (Phone, "07911 123456"),
        (Phone, "+44 7911 123456"),
        (PersonName, ""),
        (PersonName, "  Ana  Lima"),
        (DocumentNumber, "X12-345"),
        (DocumentNumber, "x1234567"),
        (PiiValue, ""),
        (PiiValue, " padded "),
    ],
)
def test_the_constructor_refuses_what_parse_would_not_produce(
    kind: type[PiiValue], bad: str
) -> None:
    with pytest.raises(ValidationError) as info:
        kind(bad)
    assert bad.strip() not in str(info.value) or not bad.strip()


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("bad", [None, 4111111111111111, b"DE89", ["x"]])
def test_a_value_that_is_not_text_is_a_typed_error(kind: type[PiiValue], bad: Any) -> None:
    with pytest.raises(ValidationError):
        kind(bad)
    with pytest.raises(ValidationError):
        kind.parse(bad)


def test_evolve_validates_too() -> None:
    with pytest.raises(ValidationError):
        attrs.evolve(Pan(PAN), value="1234")


def test_canonical_values_construct_directly() -> None:
    assert Pan(PAN).reveal() == PAN
    assert Iban(IBAN) == Iban.parse("de89 3704 0044 0532 0130 00")
    assert Pan.parse(FULLWIDTH_PAN) == Pan(PAN)
    assert Email("Ana.Lima@example.com").reveal() == "Ana.Lima@example.com"
    assert Phone("+447911123456").reveal() == "+447911123456"
    assert PersonName("王小明").reveal() == "王小明"
    assert DocumentNumber("X1234567").reveal() == "X1234567"


def _round_trip(kind: type[PiiValue], text: Any) -> None:
    """Parsing gives a ValidationError (anything else escapes and fails the test) or a value
    whose canonical text constructs it again."""
    refusal = ""
    try:
        parsed = kind.parse(text)
    except ValidationError as error:
        refusal = str(error)
    if refusal:
        if isinstance(text, str) and sum(c.isdigit() for c in text) >= 4:
            assert text not in refusal  # the refusal never echoes the input
    else:
        assert kind(parsed.reveal()) == parsed
        assert kind.parse(parsed.reveal()) == parsed  # normalising is idempotent
    with contextlib.suppress(ValidationError):
        kind(text)


hostile = st.one_of(
    st.text(),
    st.text(alphabet="0123456789 -", max_size=40),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -.", max_size=40),
    st.text(alphabet=st.characters(categories=["Nd", "No", "Zs", "Cc"]), max_size=30),
    st.from_regex(r"\A[A-Z]{2}[0-9]{2}[A-Z0-9]{8,30}\Z"),
    st.from_regex(r"\A\+[0-9 ]{1,30}\Z"),
)


@pytest.mark.parametrize("kind", TYPES)
@given(text=hostile)
@example(text="XK05" + "1" * 16)  # a country stdnum has an IBAN module for
@example(text="+" + "9" * 300)
@example(text="١٢٣٤٥٦٧٨٩٠١٢٣")  # Arabic-Indic digits: isdigit() but not card digits
@example(text="²" * 16)
@example(text="ß@EXAMPLE.İ")
def test_only_typed_errors_escape_parse_and_the_constructor(
    kind: type[PiiValue], text: str
) -> None:
    _round_trip(kind, text)


# -- a PAN in full: only through an audited reveal ---------------------------------------------


def test_no_role_of_the_default_policy_sees_more_than_bin_and_last_four() -> None:
    for role in DEFAULT_MASKING.rules:
        shown = DEFAULT_MASKING.show({role}, PiiKind.PAN, PAN)
        assert PAN[6:12] not in shown, role
    assert str(Pan(PAN)) == repr(Pan(PAN))[5:-2] == "411111******1111"


def _reveals() -> tuple[Broker, PiiReveals]:
    broker = Broker.in_memory()
    return broker, PiiReveals(broker.repository, broker.access)


def test_an_allowed_reveal_gives_the_number_and_records_who_saw_what() -> None:
    broker, reveals = _reveals()
    officer = Actor.staff("dpo", Role.COMPLIANCE)
    card = Pan.parse("4111 1111 1111 1111")

    assert reveals.reveal(officer, card, subject_id="c-1", reason="chargeback 77") == PAN

    [stored] = broker.store.read_all()
    assert stored.stream_id == "pii_reveal-c-1"
    assert PAN.encode() not in stored.data  # the record names the value by its mask
    recorded = broker.codec.decode(stored)
    assert recorded.event == PiiRevealed("c-1", PiiKind.PAN.value, "411111******1111")
    assert (recorded.metadata.actor, recorded.metadata.reason) == (officer.id, "chargeback 77")
    broker.audit.catch_up(broker.store, broker.codec)
    [record] = broker.audit.log.records()
    assert (record.actor, record.action, record.target) == (
        officer.id,
        "PiiRevealed",
        "pii_reveal-c-1",
    )


def test_a_second_reveal_of_the_same_client_is_recorded_too() -> None:
    broker, reveals = _reveals()
    officer = Actor.staff("dpo", Role.COMPLIANCE)
    for _ in range(2):
        reveals.reveal(officer, Iban(IBAN), subject_id="c-1", reason="payout check")
    assert [s.version for s in broker.store.read_stream("pii_reveal-c-1")] == [1, 2]


@pytest.mark.parametrize(
    "actor",
    [
        Actor.staff("s", Role.SUPPORT),
        Actor.staff("f", Role.FINANCE),
        Actor.client("c-2"),
        Actor.staff("x"),
    ],
)
def test_a_reveal_without_permission_is_refused_and_writes_nothing(actor: Actor) -> None:
    broker, reveals = _reveals()
    with pytest.raises(AccessDeniedError) as info:
        reveals.reveal(actor, Pan(PAN), subject_id="c-1", reason="curious")
    assert PAN not in str(info.value)
    assert broker.store.read_all() == []


def test_a_reveal_needs_a_reason() -> None:
    broker, reveals = _reveals()
    with pytest.raises(ValidationError):
        reveals.reveal(Actor.staff("dpo", Role.COMPLIANCE), Pan(PAN), subject_id="c-1", reason=" ")
    assert broker.store.read_all() == []
