"""The MRZ parser under hostile input: wrong argument types and arbitrary text are typed errors."""

from __future__ import annotations

from contextlib import suppress
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.kernel import FxCrmError, ValidationError
from fxcrm_core.kyc.mrz import MrzFormatError, parse_mrz

TD3 = (
    "P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<",
    "L898902C36UTO7408122F1204159ZE184226B<<<<<10",
)


@pytest.mark.parametrize(
    "text",
    [
        None,
        5,
        1.5,
        b"P<UTO",
        bytearray(b"P"),
        [None],
        [b"P<UTO"],
        [TD3[0], 7],
        {"a": 1},
        date(2026, 1, 1),
    ],
)
def test_text_of_the_wrong_type_is_a_format_error(text: Any) -> None:
    with pytest.raises(MrzFormatError):
        parse_mrz(text)


@pytest.mark.parametrize("today", ["2026-01-01", 2026, 1767225600.0])
def test_today_of_the_wrong_type_is_a_validation_error(today: Any) -> None:
    with pytest.raises(ValidationError):
        parse_mrz(TD3, today=today)


def test_the_extreme_todays_still_parse() -> None:
    for today in (date.min, date.max):
        assert parse_mrz(TD3, today=today).check_digits_valid


_MRZ_CHARS = st.sampled_from(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789<<<<<<<<<< ßﬁıİ²٣\n"))


def _zone(width: int, lines: int) -> st.SearchStrategy[str]:
    line = st.text(_MRZ_CHARS, min_size=width - 1, max_size=width + 1)
    return st.lists(line, min_size=lines, max_size=lines).map("\n".join)


@given(
    st.one_of(
        _zone(30, 3),
        _zone(36, 2),
        _zone(44, 2),
        st.text(),
        st.lists(st.one_of(st.text(_MRZ_CHARS), st.none(), st.integers(), st.binary())),
    ),
    st.one_of(st.none(), st.dates()),
)
def test_any_text_parses_or_is_a_typed_error(text: Any, today: date | None) -> None:
    with suppress(FxCrmError):
        parse_mrz(text, today=today)
