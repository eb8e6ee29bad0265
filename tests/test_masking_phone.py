"""The phone mask's speed path is a private shortcut: it answers what the parser would."""

from __future__ import annotations

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.privacy import HIDDEN, PiiKind, Reveal, mask


def parsed_mask(value: str) -> str:
    """The mask as the parser reads the number (what the mask was before the speed path)."""
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return HIDDEN
    national = str(number.national_number)
    return f"+{number.country_code} {'*' * max(len(national) - 2, 1)}{national[-2:]}"


@settings(max_examples=2000)
@given(st.from_regex(r"\A\+[1-9][0-9]{6,14}\Z"))
def test_an_e164_looking_phone_masks_as_the_parser_reads_it(value: str) -> None:
    assert mask(PiiKind.PHONE, value, Reveal.PARTIAL) == parsed_mask(value)


@given(
    st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    st.integers(0, 999),
)
def test_a_valid_stored_phone_masks_as_the_parser_reads_it(region: str, tail: int) -> None:
    example = phonenumbers.example_number(region)
    if example is None:
        return
    text = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    value = f"{text[:-3]}{tail:03d}"
    shown = mask(PiiKind.PHONE, value, Reveal.PARTIAL)
    assert shown == parsed_mask(value)
    assert value[-2:] in shown or shown == HIDDEN


@given(st.text(max_size=20))
def test_any_text_as_a_phone_masks_as_the_parser_reads_it(value: str) -> None:
    assert mask(PiiKind.PHONE, value, Reveal.PARTIAL) == parsed_mask(value)
