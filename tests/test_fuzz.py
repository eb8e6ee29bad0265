"""Hostile input at the SDK's edges: parsers, value types, the MT5 importer, the codec's reading
of stored objects and policy definitions either answer or raise an ``FxCrmError``; no builtin
error (``TypeError``, ``KeyError``, ``decimal.InvalidOperation``, ``csv.Error``, ...) reaches a
host.

Each test hands one entry point junk from the strategies below (wrong types, odd Unicode,
extreme numbers and dates, malformed stored rows) and lets any error other than an FxCrmError
fail the test. The codec also meets stored rows that are not objects, a ``_v`` of the wrong
type, deep nesting, text columns and deep metadata; the trading calendar meets year 1, year
9999 and days that are not dates; a Broker meets options of the wrong type. Bounded time: the
dev profile runs 40 examples per test (a few seconds in all);
``CI=true`` loads the ci profile (300 per test).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from fxcrm_core.broker import Broker
from fxcrm_core.events import Policy, StoredEvent
from fxcrm_core.kernel import (
    Currency,
    ExchangeRate,
    FxCrmError,
    Money,
    TradingCalendar,
)
from fxcrm_core.kyc.identifiers import validate_national_id
from fxcrm_core.kyc.mrz import parse_mrz
from fxcrm_core.privacy.pii import DocumentNumber, Email, Iban, Pan, PersonName, Phone
from fxcrm_core.trading import Deal, VolumeUnits, read_mt5_deals


def only_typed_errors(call: Callable[[], object]) -> None:
    """Run ``call``: an answer or an FxCrmError pass, any other exception fails the test."""
    with suppress(FxCrmError):
        call()


# -- strategies: junk of every kind ---------------------------------------------------------------
NUMBER_TEXTS = st.sampled_from(
    [
        "nan", "NaN", "sNaN", "-sNaN", "inf", "-Infinity", "1e999999", "-1e999999",
        "1e-999999", "1E+1000000000", "1e-1000000000", "9" * 5000, "0." + "0" * 4000 + "1",
        "1_000", " 1 ", "\u0661\u0662", "\uff11", "0x10", "1,5", "1.5.5", "", "-0", "+", ".",
        "1e", "12.345678901234567890123456789012345678901234567890123456789",
        "100000000000000000000000000000.01",
    ]
)  # fmt: skip
WEIRD_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=10),
    st.sampled_from(["", " ", "\x00", "\u202e", "\ud7ff", "İ", "ß", "ﬁ", "\n\r", "١٢٣", "🙂"]),
    NUMBER_TEXTS,
)
ODD_ZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=23, minutes=59, seconds=59)),
        timezone(-timedelta(hours=23, minutes=59)),
        timezone(timedelta(microseconds=1)),
    ]
)
ODD_DATETIMES = st.one_of(
    st.datetimes(timezones=ODD_ZONES),
    st.datetimes(),  # naive
    st.sampled_from(
        [
            datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
            datetime.max.replace(tzinfo=timezone(-timedelta(hours=1))),
            datetime.min.replace(tzinfo=UTC),
            datetime.max.replace(tzinfo=UTC),
        ]
    ),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**64, -(2**63) - 1, 10**4000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.binary(max_size=20),
    WEIRD_TEXT,
    st.dates(),
    ODD_DATETIMES,
    st.timedeltas(),
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=8,
)
AMOUNTS = st.one_of(
    NUMBER_TEXTS,
    st.decimals(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.sampled_from([10**40, -(10**40), 10**4000, Decimal("1E+999999"), Decimal("-0E-1000")]),
    JUNK,
)
CURRENCIES = st.one_of(st.sampled_from(["USD", "EUR", "JPY", "BHD", "XAU", "usd"]), JUNK)
LOCALES = st.one_of(
    st.sampled_from(["en_US", "de_DE", "zh_CN", "ar_EG", "fr_CH", "hi_IN", "", "xx", "../en"]),
    JUNK,
)


# -- the kernel's value types ---------------------------------------------------------------------
@given(AMOUNTS, CURRENCIES)
@example("1e999999", "USD")
@example(Decimal("sNaN"), "USD")
def test_money_of(amount: Any, currency: Any) -> None:
    only_typed_errors(lambda: Money.of(amount, currency))


@given(
    st.one_of(
        st.builds(lambda a, c: f"{a} {c}", NUMBER_TEXTS, CURRENCIES),
        st.builds(lambda a, c: f"{c} {a}", NUMBER_TEXTS, CURRENCIES),
        JUNK,
    )
)
def test_money_parse(text: Any) -> None:
    only_typed_errors(lambda: Money.parse(text))


@given(st.one_of(NUMBER_TEXTS, WEIRD_TEXT, JUNK), CURRENCIES, LOCALES)
@example("1" * 200, "USD", "en_US")
@example("1,234.5" * 30, "USD", "en_US")
def test_money_parse_localized(text: Any, currency: Any, locale: Any) -> None:
    only_typed_errors(lambda: Money.parse_localized(text, currency, locale))


@given(JUNK)
@example([])
@example({})
def test_currency_of(code: Any) -> None:
    only_typed_errors(lambda: Currency.of(code))


@given(CURRENCIES, CURRENCIES, AMOUNTS, JUNK, st.one_of(ODD_DATETIMES, JUNK))
def test_exchange_rate_of(base: Any, quote: Any, rate: Any, source: Any, as_of: Any) -> None:
    only_typed_errors(lambda: ExchangeRate.of(base, quote, rate, source, as_of))


# -- personal data, identity documents ------------------------------------------------------------
@given(
    st.sampled_from([Pan, Iban, Email, Phone, PersonName, DocumentNumber]),
    st.one_of(WEIRD_TEXT, JUNK, st.from_regex(r"[0-9 \-]{8,24}", fullmatch=True)),
)
def test_pii_parse(kind: Any, text: Any) -> None:
    only_typed_errors(lambda: kind.parse(text))


@given(
    st.one_of(st.sampled_from(["ES", "CN", "IN", "BR", "US", "DE", "ae", "XX", ""]), JUNK),
    st.one_of(WEIRD_TEXT, JUNK, st.from_regex(r"[0-9Xx\-]{5,20}", fullmatch=True)),
)
def test_validate_national_id(country: Any, number: Any) -> None:
    only_typed_errors(lambda: validate_national_id(country, number))


@given(st.one_of(WEIRD_TEXT, JUNK), st.one_of(st.none(), st.dates(), JUNK))
def test_parse_mrz(text: Any, today: Any) -> None:
    only_typed_errors(lambda: parse_mrz(text, today=today))


# -- the MT5 importer and server records ----------------------------------------------------------
HEADER = (
    "Time,Deal,Login,Action,Entry,Symbol,Volume,Price,Order,Position,Commission,Fee,Swap,Profit,"
    "Comment"
)
GOOD = "2026.03.09 09:05:12.250,1003,500001,buy,in,EURUSD,1.00,1.08512,2001,1003,-3.50,0,0,0,x"
FIELD_JUNK = st.one_of(
    NUMBER_TEXTS,
    WEIRD_TEXT,
    st.sampled_from(
        ["0001.01.01 00:00", "9999.12.31 23:59:59.999", "2026.02.30 10:00", '"', '"a"b', "a\rb"]
    ),
)


@st.composite
def exports(draw: st.DrawFn) -> str:
    rows = [HEADER]
    for _ in range(draw(st.integers(1, 4))):
        fields = GOOD.split(",")
        for _ in range(draw(st.integers(0, 3))):
            fields[draw(st.integers(0, len(fields) - 1))] = draw(FIELD_JUNK)
        if draw(st.booleans()):
            del fields[draw(st.integers(0, len(fields) - 1)) :]
        rows.append(",".join(fields))
    return draw(st.sampled_from(["\n", "\r\n", "\r"])).join(rows)


@given(
    st.one_of(
        exports(),
        exports().map(lambda t: t.encode("utf-16")),
        exports().map(lambda t: t.encode("cp1252", errors="replace")),
        st.binary(max_size=200),
        st.lists(st.one_of(st.text(max_size=20), JUNK), max_size=4),
        JUNK,
    ),
    st.one_of(st.just("mt5"), JUNK),
    CURRENCIES,
    st.one_of(st.timedeltas(), JUNK),
    st.one_of(st.sampled_from([",", ";", "\t"]), JUNK),
)
@example(f'{HEADER}\n{GOOD},"{"y" * 200_000}"', "mt5", "USD", timedelta(hours=2), ",")
@example(f"{HEADER}\n{GOOD}\n".encode("cp1252"), "mt5", "USD", timedelta(hours=2), ",")
@example(f"{HEADER}\n2026.03.09 10:00,1\n", "mt5", "USD", timedelta(hours=2), ",")
def test_read_mt5_deals(
    source: Any, server: Any, currency: Any, offset: Any, delimiter: Any
) -> None:
    only_typed_errors(
        lambda: read_mt5_deals(
            source, server=server, currency=currency, utc_offset=offset, delimiter=delimiter
        )
    )


DEAL_FIELDS = st.sampled_from(
    ["Deal", "Login", "Action", "Entry", "Symbol", "Volume", "VolumeExt", "VolumeClosed",
     "Price", "PositionID", "Order", "Commission", "Fee", "Storage", "Profit", "Time",
     "TimeMsc", "Comment"]
)  # fmt: skip


@given(
    st.dictionaries(DEAL_FIELDS, st.one_of(AMOUNTS, st.integers(), JUNK), max_size=8),
    st.one_of(st.timedeltas(), JUNK),
    st.one_of(st.sampled_from(list(VolumeUnits)), JUNK),
)
def test_deal_from_mt5(changes: dict[str, Any], offset: Any, units: Any) -> None:
    record: dict[str, Any] = {"Deal": 1, "Login": 2, "Action": 0, "Time": 1_773_050_400}
    record.update(changes)
    only_typed_errors(
        lambda: Deal.from_mt5(
            record, server="mt5", currency="USD", utc_offset=offset, volume_units=units
        )
    )


# -- the codec reading a corrupt store ------------------------------------------------------------
CODEC = Broker.in_memory().codec
EVENT_NAMES = sorted(CODEC.registry.names())
GOOD_METADATA = json.dumps({"a": "system:test"}).encode()
FIELD_NAMES = st.sampled_from(
    ["client_id", "account_id", "amount", "currency", "at", "login", "server", "reason", "x"]
)


@given(
    st.sampled_from(EVENT_NAMES),
    st.dictionaries(FIELD_NAMES, JUNK, max_size=5).map(
        lambda d: json.dumps(d, default=str).encode()
    ),
    st.one_of(st.binary(max_size=30), st.just(b"\xff\xfe{}")),
)
def test_codec_decodes_a_stored_object_with_wrong_fields_or_raises_codec_errors(
    event_type: str, data: bytes, junk_bytes: bytes
) -> None:
    for payload in (data, junk_bytes):
        row = StoredEvent(1, "s-1", 1, event_type, payload, GOOD_METADATA, datetime.now(UTC))
        only_typed_errors(partial(CODEC.decode, row))


NESTED = st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
NOT_OBJECTS = st.one_of(
    st.sampled_from(["[]", "1", '"x"', "null", "true", "1e999", "-0"]),
    NESTED,
    JUNK.map(lambda v: json.dumps(v if isinstance(v, list) else [v], default=str)),
)
VERSIONS = st.one_of(
    st.sampled_from(["2", "1.5", "true", "false", "null", "[]", "{}", "0", "-1", "99", "1e3"]),
    st.integers().map(str),
)


@given(
    st.sampled_from(EVENT_NAMES),
    st.one_of(
        NOT_OBJECTS,
        VERSIONS.map(lambda v: '{"_v":' + v + "}"),
        NESTED.map(lambda n: '{"client_id":' + n + "}"),
        st.dictionaries(FIELD_NAMES, JUNK, max_size=5).map(lambda d: json.dumps(d, default=str)),
    ),
    st.booleans(),
)
@example("ClientRegistered", "[" * 100_000 + "]" * 100_000, False)
@example("ClientRegistered", '{"_v":"2"}', False)
@example("ClientRegistered", "[]", True)
def test_codec_reads_non_objects_wrong_versions_deep_nesting_and_text_columns(
    event_type: str, text: str, text_column: bool
) -> None:
    payload: Any = text if text_column else text.encode()  # a TEXT column reads as str
    row = StoredEvent(1, "s-1", 1, event_type, payload, GOOD_METADATA, datetime.now(UTC))
    only_typed_errors(partial(CODEC.decode, row))


@given(
    st.one_of(
        NOT_OBJECTS,
        NESTED.map(lambda n: '{"a":' + n + "}"),
        st.dictionaries(st.sampled_from(["a", "c", "k", "r", "x"]), JUNK, max_size=4).map(
            lambda d: json.dumps(d, default=str)
        ),
    ),
    st.booleans(),
)
@example('{"a":' + "[" * 100_000 + "]" * 100_000 + "}", False)
@example('{"a":"x"}', True)
def test_codec_reads_corrupt_metadata(text: str, text_column: bool) -> None:
    raw: Any = text if text_column else text.encode()
    only_typed_errors(partial(CODEC.decode_metadata, raw))


# -- the trading calendar -------------------------------------------------------------------------
CALENDAR_DAYS = st.one_of(st.dates(), st.sampled_from([date.min, date.max]), JUNK)


@given(
    st.one_of(ODD_DATETIMES, JUNK),
    CALENDAR_DAYS,
    st.one_of(st.lists(st.dates(), max_size=3), JUNK),
)
@example(datetime.min.replace(tzinfo=UTC), date.min, [])
@example(datetime.max.replace(tzinfo=timezone(-timedelta(hours=1))), date.max, [])
@example(datetime.max.replace(tzinfo=UTC), "2026-01-01", 5)
@example(  # found in CI: a datetime passed as a day reached pendulum's date arithmetic
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
    [],
)
def test_trading_calendar(at: Any, day: Any, closed: Any) -> None:
    calendar = TradingCalendar()
    only_typed_errors(lambda: TradingCalendar(closed_days=closed))
    only_typed_errors(lambda: calendar.trading_day(at))
    only_typed_errors(lambda: calendar.is_open(at))
    only_typed_errors(lambda: calendar.next_rollover(at))
    only_typed_errors(lambda: calendar.is_trading_day(day))
    only_typed_errors(lambda: calendar.session(day))


# -- configuration --------------------------------------------------------------------------------
@given(
    st.one_of(WEIRD_TEXT, JUNK), st.one_of(st.lists(st.text(max_size=8), max_size=2), JUNK), JUNK
)
def test_policy(name: Any, event_types: Any, handler: Any) -> None:
    only_typed_errors(lambda: Policy(name, event_types, handler))


BROKER_OPTIONS = st.sampled_from(
    ["dormant_after", "ib_max_depth", "events", "identity_key", "trading_server", "caps",
     "groups", "payout_policies", "daily_withdrawal_limits", "keyring"]
)  # fmt: skip


@given(BROKER_OPTIONS, JUNK)
@example("ib_max_depth", True)
@example("events", "ClientRegistered")
@example("groups", {"std": 1})
def test_broker_options_of_the_wrong_type(option: str, value: Any) -> None:
    only_typed_errors(lambda: Broker.in_memory(**{option: value}))
