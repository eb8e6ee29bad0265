"""Importer of MT5 deal-history exports (CSV, as the Manager terminal's Deals report saves them).

Columns: Time, Deal, Login, Action, Entry, Symbol, Volume (lots), Price, Order, Position,
Commission, Fee, Swap, Profit, Comment. Times are server time (``2026.03.09 14:30:15.123``).
Every row is checked and every problem reported (row number and reason), not just the first:
a malformed row is a problem of its own and the import carries on.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import attrs

from fxcrm_core.kernel._decimal import EXACT
from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.kernel.money import Currency
from fxcrm_core.trading.deal import (
    Deal,
    DealAction,
    DealEntry,
    UnknownServerResponseError,
    check_origin,
)

__all__ = ["ACTION_NAMES", "ENTRY_NAMES", "ImportProblem", "ImportResult", "read_mt5_deals"]

ACTION_NAMES: dict[str, DealAction] = {
    "buy": DealAction.BUY,
    "sell": DealAction.SELL,
    "balance": DealAction.BALANCE,
    "credit": DealAction.CREDIT,
    "charge": DealAction.CHARGE,
    "correction": DealAction.CORRECTION,
    "bonus": DealAction.BONUS,
    "commission": DealAction.COMMISSION,
    "daily commission": DealAction.COMMISSION_DAILY,
    "monthly commission": DealAction.COMMISSION_MONTHLY,
    "daily agent commission": DealAction.AGENT_DAILY,
    "monthly agent commission": DealAction.AGENT_MONTHLY,
    "interest rate": DealAction.INTEREST,
    "canceled buy": DealAction.BUY_CANCELED,
    "canceled sell": DealAction.SELL_CANCELED,
    "dividend": DealAction.DIVIDEND,
    "franked dividend": DealAction.DIVIDEND_FRANKED,
    "tax": DealAction.TAX,
    "agent commission": DealAction.AGENT,
    "so compensation": DealAction.SO_COMPENSATION,
    "so credit compensation": DealAction.SO_COMPENSATION_CREDIT,
}
ENTRY_NAMES: dict[str, DealEntry] = {
    "": DealEntry.IN,
    "in": DealEntry.IN,
    "out": DealEntry.OUT,
    "in/out": DealEntry.INOUT,
    "out by": DealEntry.OUT_BY,
}
# A volume is at most 32 characters and below 10^11 lots: MT5 keeps it as a UINT64 count of
# 1/100,000,000 lot (about 1.8 * 10^11 lots), and the bounds keep the arithmetic exact.
_MAX_NUMBER_TEXT = 32
_MAX_LOTS_DIGITS = 11
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_COLUMNS = (
    "Time", "Deal", "Login", "Action", "Entry", "Symbol", "Volume", "Price", "Order",
    "Position", "Commission", "Fee", "Swap", "Profit", "Comment",
)  # fmt: skip


@attrs.frozen
class ImportProblem:
    row: int  # 1-based, counting the header as row 1
    reason: str


@attrs.frozen
class ImportResult:
    deals: tuple[Deal, ...]
    problems: tuple[ImportProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def header_problem(
    line: int,
    names: list[str],
    required: Iterable[str],
    unique: Iterable[str],
    *,
    also_missing: Iterable[str] = (),
) -> ImportProblem | None:
    """What is wrong with a file's header row: ``required`` columns (and ``also_missing``)
    missing, or ``unique`` ones named twice; None when nothing is (the file's readers share
    it)."""
    missing = [name for name in required if name not in names] + list(also_missing)
    if missing:
        return ImportProblem(line, f"missing columns: {', '.join(missing)}")
    twice = [name for name in unique if names.count(name) > 1]
    if twice:
        return ImportProblem(line, f"columns named twice: {', '.join(twice)}")
    return None


def _server_ms(text: str) -> int:
    for fmt in ("%Y.%m.%d %H:%M:%S.%f", "%Y.%m.%d %H:%M:%S", "%Y.%m.%d %H:%M"):
        try:
            wall = datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC)  # server wall clock
        except (ValueError, OverflowError):
            continue
        server_ms = (wall - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        if server_ms < 0:
            raise UnknownServerResponseError("time is outside MT5's range (1970 to 3000)")
        return server_ms
    raise UnknownServerResponseError("time is not in MT5's YYYY.MM.DD HH:MM:SS format")


def _volume_units(text: str) -> int:
    text = text.strip() or "0"
    if len(text) > _MAX_NUMBER_TEXT:
        raise UnknownServerResponseError("volume has more digits than MT5 writes")
    try:
        lots = Decimal(text)
    except InvalidOperation:
        raise UnknownServerResponseError("volume is not a number") from None
    if not lots.is_finite() or lots < 0:
        raise UnknownServerResponseError("volume is not a finite, non-negative number")
    if lots.adjusted() >= _MAX_LOTS_DIGITS:
        raise UnknownServerResponseError("volume is larger than an MT5 server holds")
    try:
        # Exact: at most _MAX_NUMBER_TEXT digits in a 60-digit context (Inexact is trapped).
        units = lots.scaleb(8, EXACT)
        whole = units == units.to_integral_value(context=EXACT)
    except ArithmeticError:  # an exponent far below any volume underflows
        whole = False
    if not whole:
        raise UnknownServerResponseError("volume is finer than 1/100,000,000 lot")
    return int(units)


def _decode(data: bytes) -> str | ImportProblem:
    """The text of an export saved as UTF-8 (with or without a BOM) or UTF-16 with a BOM."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return ImportProblem(1, "the export is UTF-32: save it as UTF-8 or UTF-16")
    bom, encoding = next(((b, e) for b, e in _BOMS if data.startswith(b)), (b"", "utf-8"))
    if not bom and b"\x00" in data:
        return ImportProblem(
            1, "the export holds NUL bytes (UTF-16 without a byte-order mark?): "
            "save it as UTF-8 or as UTF-16 with a byte-order mark",
        )  # fmt: skip
    body = data[len(bom) :]
    try:
        return body.decode(encoding)
    except UnicodeDecodeError as error:
        # The prefix before the bad byte decodes by definition: count its lines.
        row = body[: error.start].decode(encoding).count("\n") + 1
        name = "UTF-8" if encoding == "utf-8" else "UTF-16"
        return ImportProblem(
            row, f"the export is not valid {name} text from this row on: save it as UTF-8 "
            "(MT5's own UTF-16 exports with a byte-order mark are read as they are)",
        )  # fmt: skip


def _str_lines(lines: Iterable[object]) -> Iterator[str]:
    for line in lines:
        if not isinstance(line, str):
            raise ValidationError("lines of an export must be str; pass the whole file as bytes")
        yield line


def _csv_reason(error: csv.Error) -> str:
    # csv's own messages talk about opening files; say what is wrong with the row instead.
    if "field limit" in str(error):
        return f"a field is longer than {csv.field_size_limit()} characters"
    if "end of data" in str(error):
        return "not well-formed CSV: a quoted field is never closed"
    return "not well-formed CSV: a stray quote or an unquoted line break"


def _check_arguments(
    source: object, server: object, currency: object, utc_offset: object, delimiter: object
) -> None:
    if not isinstance(source, str | bytes | bytearray | Path | Iterable):
        raise ValidationError("source must be a path, the export's text or bytes, or its lines")
    if server is None or currency is None:
        raise ValidationError("an export's deals need their server and currency")
    check_origin(server, currency, utc_offset)
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise ValidationError("delimiter must be one character, not a quote or a line break")


def _records(
    lines: Iterable[str], delimiter: str
) -> Iterator[tuple[int, list[str] | ImportProblem]]:
    """Each CSV record with the line it starts on; a malformed record becomes its problem."""
    # strict: a quote in the wrong place is an error, not silently glued into a field.
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield start, ImportProblem(start, _csv_reason(error))
            if reader.line_num < start:  # nothing consumed: the input is exhausted
                return
            continue
        if any(field.strip() for field in fields):  # blank lines and rows of commas carry nothing
            yield start, fields


def read_mt5_deals(
    source: str | bytes | Path | Iterable[str],
    *,
    server: str,
    currency: str | Currency,
    utc_offset: timedelta,
    delimiter: str = ",",
) -> ImportResult:
    """Read an export: ``source`` is a path, the file's bytes, its text, or lines of it.

    Bytes (and files) are UTF-8, with or without a byte-order mark, or UTF-16 with one (what
    MT5 terminals save); anything else is refused as one problem and nothing is imported. Every
    other problem belongs to a row, named by the line it starts on (the header is line 1), and
    the remaining rows are still imported. Wrong argument types raise :class:`ValidationError`.
    """
    _check_arguments(source, server, currency, utc_offset, delimiter)
    lines: Iterable[str]
    if isinstance(source, Path | bytes | bytearray):
        if isinstance(source, Path):
            try:
                raw = source.read_bytes()
            except OSError as exc:  # missing, a directory, no permission: the host's to fix
                raise ValidationError(
                    f"cannot read the MT5 export file ({type(exc).__name__})"
                ) from None
        else:
            raw = bytes(source)
        text = _decode(raw)
        if isinstance(text, ImportProblem):
            return ImportResult((), (text,))
        lines = io.StringIO(text.removeprefix("\ufeff"), newline="")
    elif isinstance(source, str):
        lines = io.StringIO(source.removeprefix("\ufeff"), newline="")
    else:
        lines = _str_lines(source)
    records = _records(lines, delimiter)
    header_row, header = next(records, (1, []))
    if isinstance(header, ImportProblem):
        return ImportResult((), (ImportProblem(header_row, f"header: {header.reason}"),))
    names = [name.strip() for name in header]
    problem = header_problem(header_row, names, _COLUMNS, _COLUMNS)
    if problem is not None:
        return ImportResult((), (problem,))
    at = {name: names.index(name) for name in _COLUMNS}
    deals: list[Deal] = []
    problems: list[ImportProblem] = []
    seen: set[int] = set()
    for row_no, fields in records:
        if isinstance(fields, ImportProblem):
            problems.append(fields)
            continue
        if len(fields) != len(names):
            problems.append(
                ImportProblem(row_no, f"the row has {len(fields)} fields, the header {len(names)}")
            )
            continue
        row = {name: fields[i] for name, i in at.items()}
        try:
            deal = _deal(row, server=server, currency=currency, utc_offset=utc_offset)
            if deal.ticket in seen:
                raise UnknownServerResponseError("the same deal ticket appears twice")
            seen.add(deal.ticket)
            deals.append(deal)
        except FxCrmError as problem:
            problems.append(ImportProblem(row_no, str(problem)))
    return ImportResult(tuple(deals), tuple(problems))


def _deal(
    row: dict[str, str], *, server: str, currency: str | Currency, utc_offset: timedelta
) -> Deal:
    action = ACTION_NAMES.get(row["Action"].strip().lower())
    entry = ENTRY_NAMES.get(row["Entry"].strip().lower())
    if action is None:
        raise UnknownServerResponseError("unknown action")
    if entry is None:
        raise UnknownServerResponseError("unknown entry")
    return Deal.from_mt5(
        {
            "Deal": row["Deal"],
            "Login": row["Login"],
            "Action": int(action),
            "Entry": int(entry),
            "Symbol": row["Symbol"].strip(),
            "VolumeExt": _volume_units(row["Volume"]),
            "Price": row["Price"].strip() or "0",
            "Order": row["Order"].strip() or 0,
            "PositionID": row["Position"].strip() or 0,
            "Commission": row["Commission"].strip() or "0",
            "Fee": row["Fee"].strip() or "0",
            "Storage": row["Swap"].strip() or "0",
            "Profit": row["Profit"].strip() or "0",
            "TimeMsc": _server_ms(row["Time"]),
            "Comment": row["Comment"],
        },
        server=server,
        currency=currency,
        utc_offset=utc_offset,
    )
