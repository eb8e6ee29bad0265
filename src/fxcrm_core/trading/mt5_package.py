"""Deals as the ``MetaTrader5`` Python package gives them, live or saved as a pandas CSV dump.

``history_deals_get`` returns named tuples with lower-case fields (``ticket, order, time,
time_msc, type, entry, magic, position_id, reason, volume, price, commission, swap, profit,
fee, symbol, comment, external_id``), numeric ENUM_DEAL_TYPE / ENUM_DEAL_ENTRY codes, server
times as epoch numbers and binary floats for money. Hosts usually save them with
``pandas.DataFrame([d._asdict() for d in deals]).to_csv(path)``. The package runs only where the
terminal does, so this module accepts its shapes and does not import it.
"""

from __future__ import annotations

import csv
import io
import math
import operator
from collections.abc import Iterator, Mapping
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import SupportsIndex

from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.kernel.money import Currency
from fxcrm_core.trading._encoding import UndecodableTextError, decode_text
from fxcrm_core.trading.deal import (
    Deal,
    DealAction,
    DealEntry,
    UnknownServerResponseError,
    check_origin,
)
from fxcrm_core.trading.mt5_csv import ImportProblem, ImportResult, header_problem

__all__ = [
    "PACKAGE_DEAL_ENTRIES",
    "PACKAGE_DEAL_TYPES",
    "PACKAGE_FIELDS",
    "deal_from_mt5_package",
    "read_mt5_package_csv",
]

# ENUM_DEAL_TYPE as the MQL5 reference numbers it (DEAL_TYPE_BUY = 0 ... DEAL_TAX = 17): the
# same numbers as the server's IMTDeal::EnDealAction, written out so the mapping is explicit.
PACKAGE_DEAL_TYPES: dict[int, DealAction] = {
    0: DealAction.BUY,
    1: DealAction.SELL,
    2: DealAction.BALANCE,
    3: DealAction.CREDIT,
    4: DealAction.CHARGE,
    5: DealAction.CORRECTION,
    6: DealAction.BONUS,
    7: DealAction.COMMISSION,
    8: DealAction.COMMISSION_DAILY,
    9: DealAction.COMMISSION_MONTHLY,
    10: DealAction.AGENT_DAILY,
    11: DealAction.AGENT_MONTHLY,
    12: DealAction.INTEREST,
    13: DealAction.BUY_CANCELED,
    14: DealAction.SELL_CANCELED,
    15: DealAction.DIVIDEND,
    16: DealAction.DIVIDEND_FRANKED,
    17: DealAction.TAX,
}
# ENUM_DEAL_ENTRY: DEAL_ENTRY_IN, _OUT, _INOUT, _OUT_BY.
PACKAGE_DEAL_ENTRIES: dict[int, DealEntry] = {
    0: DealEntry.IN,
    1: DealEntry.OUT,
    2: DealEntry.INOUT,
    3: DealEntry.OUT_BY,
}
PACKAGE_FIELDS = (
    "ticket", "order", "time", "time_msc", "type", "entry", "magic", "position_id", "reason",
    "volume", "price", "commission", "swap", "profit", "fee", "symbol", "comment", "external_id",
)  # fmt: skip
# Fields a record (or a dump's header) must have; the others default to 0 or "" when absent
# (older package builds have no fee; a record may carry time or time_msc alone).
_REQUIRED = ("ticket", "type", "entry", "volume", "price", "commission", "swap", "profit")
_UINT64 = 2**64
_MAX_NUMBER_TEXT = 40
_MAX_FLOAT = Decimal(10) ** 15  # beyond, a double no longer holds cents exactly
_LOT_STEP = Decimal("1E-8")  # the SDK's finest lot: MT5's extended volume, 1/100,000,000 lot
_LOT_UNITS = 100_000_000
# A double carries 15 significant decimal digits faithfully; prices keep at most 12 decimals
# (deal.py's bound).
_PRICE_SIGNIFICANT = 15
_PRICE_DECIMALS = 12


def _number(value: object, name: str) -> Decimal:
    """The decimal a package number stands for: a float's ``repr`` (the shortest text that
    round-trips, what pandas writes), an int, or that text read back from a dump."""
    if isinstance(value, bool):
        raise UnknownServerResponseError(f"deal record has a malformed {name}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnknownServerResponseError(f"deal record has a non-finite {name}")
        number = Decimal(repr(value))
    elif isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        # Decimal also reads "1_000" and non-ASCII digits ("١٢"): no dump writes those.
        if not text or len(text) > _MAX_NUMBER_TEXT or not text.isascii() or "_" in text:
            raise UnknownServerResponseError(f"deal record has a missing or malformed {name}")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise UnknownServerResponseError(f"deal record has a malformed {name}") from None
    elif isinstance(value, SupportsIndex):  # numpy's integers (a DataFrame's records)
        number = Decimal(operator.index(value))
    else:
        raise UnknownServerResponseError(f"deal record has a malformed {name}")
    # copy_abs, not abs(): abs() rounds in the context and raises decimal.Overflow on 1e999999999.
    if not number.is_finite() or number.copy_abs() >= _MAX_FLOAT:
        raise UnknownServerResponseError(f"deal record has a {name} beyond 10^15 or not finite")
    return number


def _whole(value: object, name: str) -> int:
    """A UINT64 field (ticket, order, times): an int, digits, or an integral float (pandas turns
    an int column with a gap into floats)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        number = int(value)
    else:
        exact = _number(value, name) if not isinstance(value, str) or value.strip() else None
        if exact is None or exact != exact.to_integral_value():
            raise UnknownServerResponseError(f"deal record has a malformed {name}")
        number = int(exact)
    if not 0 <= number < _UINT64:
        raise UnknownServerResponseError(f"deal record has {name} out of range")
    return number


def _code(
    table: Mapping[int, DealAction] | Mapping[int, DealEntry], value: object, name: str
) -> int:
    try:
        return int(table[_whole(value, name)])
    except (KeyError, UnknownServerResponseError):
        raise UnknownServerResponseError(f"unknown {name} code") from None


def _price(value: object) -> Decimal:
    number = _number(value, "price")
    if not number:
        return Decimal(0)
    # 15 significant digits (what a double holds), at most 12 decimals; trailing zeros dropped.
    places = min(_PRICE_DECIMALS, _PRICE_SIGNIFICANT - 1 - number.adjusted())
    rounded = number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    if rounded < 0:  # checked after rounding: noise below zero (-5e-324) is a zero price
        raise UnknownServerResponseError("deal record has a negative price")
    if not rounded:
        return Decimal(0)
    exponent = int(rounded.normalize().as_tuple().exponent)
    return rounded.quantize(Decimal(1).scaleb(min(0, exponent)))


def _volume_units(value: object) -> int:
    lots = _number(value, "volume").quantize(_LOT_STEP, rounding=ROUND_HALF_EVEN)
    if lots < 0:
        raise UnknownServerResponseError("deal record has a negative volume")
    return int(lots * _LOT_UNITS)


def _text(value: object, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or "\x00" in value:
        raise UnknownServerResponseError(f"deal record has a malformed {name}")
    return value


def _server_ms(fields: Mapping[str, object]) -> int:
    msc = fields.get("time_msc")
    secs = fields.get("time")
    has_msc = msc is not None and msc != ""
    has_secs = secs is not None and secs != ""
    if not has_msc and not has_secs:
        raise UnknownServerResponseError("deal record lacks time and time_msc")
    if has_msc:
        ms = _whole(msc, "time_msc")
        if has_secs and _whole(secs, "time") != ms // 1000:
            raise UnknownServerResponseError("deal record's time and time_msc disagree")
        return ms
    return _whole(secs, "time") * 1000


def _check_arguments(
    login: object, server: object, currency: object, utc_offset: object
) -> Currency:
    if isinstance(login, bool) or not isinstance(login, int) or not 0 <= login < _UINT64:
        raise ValidationError("login must be an MT5 login: a non-negative int below 2^64")
    if server is None or currency is None:
        raise ValidationError("the package's deals need their server and currency")
    check_origin(server, currency, utc_offset)
    assert isinstance(currency, str | Currency)  # (checked just above)
    return Currency.of(currency)


def _fields(record: object) -> Mapping[str, object]:
    asdict = getattr(record, "_asdict", None)
    if isinstance(record, tuple) and callable(asdict):
        fields = asdict()
        if isinstance(fields, Mapping):
            return fields
    if isinstance(record, Mapping):
        return record
    raise ValidationError("a package deal is a named tuple from history_deals_get or a mapping")


def _deal(
    fields: Mapping[str, object], login: int, server: str, cur: Currency, utc_offset: timedelta
) -> Deal:
    missing = [name for name in _REQUIRED if name not in fields]
    if missing:
        raise UnknownServerResponseError(f"deal record lacks {', '.join(missing)}")
    step = Decimal(1).scaleb(-cur.minor_units)

    def money(name: str) -> Decimal:
        value = fields.get(name, 0)
        return _number(value, name).quantize(step, rounding=ROUND_HALF_EVEN)

    return Deal.from_mt5(
        {
            "Deal": _whole(fields["ticket"], "ticket"),
            "Login": login,
            "Action": _code(PACKAGE_DEAL_TYPES, fields["type"], "deal type"),
            "Entry": _code(PACKAGE_DEAL_ENTRIES, fields["entry"], "deal entry"),
            "Symbol": _text(fields.get("symbol", ""), "symbol"),
            "VolumeExt": _volume_units(fields["volume"]),
            "Price": _price(fields["price"]),
            "Order": _whole(fields.get("order", 0), "order"),
            "PositionID": _whole(fields.get("position_id", 0), "position_id"),
            "Commission": money("commission"),
            "Fee": money("fee"),
            "Storage": money("swap"),
            "Profit": money("profit"),
            "TimeMsc": _server_ms(fields),
            "Comment": _text(fields.get("comment", ""), "comment"),
        },
        server=server,
        currency=cur,
        utc_offset=utc_offset,
    )


def deal_from_mt5_package(
    record: object,
    *,
    login: int,
    server: str,
    currency: str | Currency,
    utc_offset: timedelta,
) -> Deal:
    """A :class:`Deal` from one record of the ``MetaTrader5`` package's ``history_deals_get``.

    ``record`` is the package's named tuple (a ``TradeDeal``) or a mapping with its lower-case
    fields (a row of its pandas dump: numbers may be text). The package gives no login: the host
    says whose account it read. ``time_msc`` (server time in ms) is preferred to ``time``
    (seconds); when both are given they must agree. ``type`` and ``entry`` are ENUM_DEAL_TYPE and
    ENUM_DEAL_ENTRY codes (:data:`PACKAGE_DEAL_TYPES`, :data:`PACKAGE_DEAL_ENTRIES`).

    Floats are read through their ``repr`` (the shortest decimal that round-trips, which pandas
    also writes), then rounded ROUND_HALF_EVEN at this edge: money (commission, fee, swap,
    profit) to the currency's minor units; volume to 1/100,000,000 lot; price to 15 significant
    digits and at most 12 decimals. ``magic``, ``reason`` and ``external_id`` have no place in a
    Deal and are not kept. A malformed or unknown field raises
    :class:`UnknownServerResponseError` naming the field (never its value); wrong argument types
    raise :class:`ValidationError`.
    """
    cur = _check_arguments(login, server, currency, utc_offset)
    return _deal(_fields(record), login, server, cur, utc_offset)


def _rows(text: str) -> Iterator[tuple[int, list[str] | str]]:
    """Each CSV record with the line it starts on; a malformed record becomes its reason."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield start, "not well-formed CSV: a stray quote or an unquoted line break"
            if reader.line_num < start:
                return
            continue
        if any(field.strip() for field in fields):
            yield start, fields


def read_mt5_package_csv(
    source: str | bytes | Path,
    *,
    login: int,
    server: str,
    currency: str | Currency,
    utc_offset: timedelta,
) -> ImportResult:
    """Read a CSV dump of the package's deals: ``source`` is a path, the file's bytes or text.

    The header names the package's fields in any order; other columns (pandas' unnamed index
    column, anything a host added) are ignored. Bytes are decoded by
    :func:`~fxcrm_core.trading._encoding.decode_text` (UTF-8, UTF-16 LE/BE); a file it cannot
    decode, or a header without the needed fields, is one problem and nothing is imported. Each
    bad row is a problem with its line (the header is line 1) and reason, and the other rows are
    still imported; a ticket seen twice is a problem on its second line. Deals are rounded as
    :func:`deal_from_mt5_package` says, so importing the same file twice gives the same deals
    and the same keys. Wrong argument types raise :class:`ValidationError`.
    """
    cur = _check_arguments(login, server, currency, utc_offset)
    if isinstance(source, Path):
        try:
            raw = source.read_bytes()
        except OSError as exc:
            raise ValidationError(f"cannot read the deals file ({type(exc).__name__})") from None
        source = raw
    if isinstance(source, bytes | bytearray):
        try:
            text = decode_text(bytes(source))
        except UndecodableTextError as error:
            return ImportResult((), (ImportProblem(error.line, str(error)),))
    elif isinstance(source, str):
        text = source.removeprefix("\ufeff")
    else:
        raise ValidationError("source must be a path, the file's bytes or its text")
    rows = _rows(text)
    header_line, header = next(rows, (1, []))
    if isinstance(header, str):
        return ImportResult((), (ImportProblem(header_line, f"header: {header}"),))
    names = [name.strip().lower() for name in header]
    no_time = "time" not in names and "time_msc" not in names
    problem = header_problem(
        header_line, names, _REQUIRED, PACKAGE_FIELDS,
        also_missing=["time or time_msc"] if no_time else [],
    )  # fmt: skip
    if problem is not None:
        return ImportResult((), (problem,))
    at = [(name, names.index(name)) for name in PACKAGE_FIELDS if name in names]
    width = len(names)
    deals: list[Deal] = []
    problems: list[ImportProblem] = []
    seen: set[int] = set()
    for line, fields in rows:
        if isinstance(fields, str):
            problems.append(ImportProblem(line, fields))
            continue
        if len(fields) != width:
            problems.append(
                ImportProblem(line, f"the row has {len(fields)} fields, the header {width}")
            )
            continue
        try:
            deal = _deal({name: fields[i] for name, i in at}, login, server, cur, utc_offset)
        except FxCrmError as problem:
            problems.append(ImportProblem(line, str(problem)))
            continue
        if deal.ticket in seen:
            problems.append(ImportProblem(line, "the same deal ticket appears twice"))
            continue
        seen.add(deal.ticket)
        deals.append(deal)
    return ImportResult(tuple(deals), tuple(problems))
