"""Reader of the MT5 terminal's History -> Report, saved as HTML (UTF-16 with a BOM) or .xlsx.

The Deals table is found whatever the terminal's language: by the position of its columns and
the English values its cells keep (``buy``/``sell``/``balance``, ``in``/``out``). Login,
currency and server come from the header's account line, ``12345 (USD, Server-Live, real,
Hedge)``. The table's totals row is checked against the deals read: a disagreement, a file
that cannot be read or a report without a Deals section imports nothing. Needs the ``reports``
extra (Beautiful Soup on the stdlib ``html.parser``, openpyxl).
"""

from __future__ import annotations

import io
import itertools
import re
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs

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
from fxcrm_core.trading.mt5_csv import (
    ACTION_NAMES,
    ENTRY_NAMES,
    ImportProblem,
    ImportResult,
    _deal,
    _volume_units,
)

__all__ = ["ReportImportResult", "ReportsExtraMissingError", "read_mt5_report"]

_ZIP_MAGIC = b"PK\x03\x04"
_ACCOUNT = re.compile(r"(?<![0-9])([0-9]{1,20})\s*\(\s*([A-Za-z]{3})\s*,\s*([^,()]+?)\s*[,)]")
_TICKET = re.compile(r"[0-9]{1,20}")
_TIME = re.compile(r"[0-9]{4}\.[0-9]{2}\.[0-9]{2} [0-9]{2}:[0-9]{2}")
# Thousands grouping the terminals write: space, no-break space, narrow no-break space.
_GROUPING = str.maketrans("", "", " \u00a0\u202f\u2009")
_MAX_COLSPAN = 64
_MAX_CELL = 256
_MAX_AMOUNT = Decimal(10) ** 15  # beyond any balance a report holds; sums stay in the context
# A workbook is a zip: its members' declared sizes (which zipfile enforces while reading) are
# capped before openpyxl inflates anything, so a zip bomb is a problem, not an exhausted host.
_MAX_XLSX_BYTES = 256 * 2**20
_MAX_XLSX_MEMBERS = 1000
# Columns after Order, by layout: (costs?, commission, fee?, swap, profit, balance, comment).
_MONEY = ("Commission", "Fee", "Swap", "Profit")


class ReportsExtraMissingError(FxCrmError, ImportError):
    """Reading terminal reports needs the ``reports`` extra (Beautiful Soup and openpyxl)."""

    default_message = "terminal reports need the reports extra: pip install 'fxcrm_core[reports]'"


@attrs.frozen
class ReportImportResult(ImportResult):
    """What :func:`read_mt5_report` read: the deals, every problem, and what the header said.

    ``unknown_positions`` lists the tickets of deals whose position the report does not tell
    (it has no Position column): their ``position_id`` is 0.
    """

    login: int | None = None
    currency: str | None = None
    server: str | None = None
    unknown_positions: tuple[int, ...] = ()


@attrs.frozen
class _Layout:
    width: int
    at: dict[str, int]  # column name -> index; Fee may be missing (merged into Commission)


def _layouts(header: list[str]) -> list[_Layout]:
    """Candidate layouts for a Deals header of this width, the most likely first."""
    base = {"Time": 0, "Deal": 1, "Symbol": 2, "Type": 3, "Direction": 4, "Volume": 5}
    base |= {"Price": 6, "Order": 7}

    def tail(start: int, fee: bool) -> dict[str, int]:
        names = ["Commission", *(["Fee"] if fee else []), "Swap", "Profit", "Balance", "Comment"]
        return base | {name: start + i for i, name in enumerate(names)}

    width = len(header)
    english = [cell.strip().lower() for cell in header]
    options = {
        15: [tail(9, fee=True)],
        14: [tail(8, fee=True), tail(9, fee=False)],  # the balance column decides, see below
        13: [tail(8, fee=False)],
    }.get(width, [])
    if width == 14 and "costs" in english:
        options = options[1:]
    elif width == 14 and "fee" in english:
        options = options[:1]
    return [_Layout(width, at) for at in options]


def _number(text: str) -> Decimal:
    text = text.translate(_GROUPING) or "0"
    if len(text) > _MAX_CELL or not text.isascii() or "_" in text:
        raise UnknownServerResponseError("a money or price cell is not a number MT5 writes")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UnknownServerResponseError("a money or price cell is not a number") from None
    if not value.is_finite() or value.copy_abs() >= _MAX_AMOUNT:
        raise UnknownServerResponseError("a money or price cell is not a number below 10^15")
    return value


def _price_text(text: str) -> str:
    """The price without trailing zeros, as the package reader gives it: "1.10000" in HTML and
    1.1 in a workbook (or from the package) are then one deal, not two contents under one key."""
    value = _number(text)
    if not value:
        return "0"
    exponent = int(value.normalize().as_tuple().exponent)
    return str(value.quantize(Decimal(1).scaleb(min(0, exponent))))


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):  # openpyxl's reading of a numeric cell: its shortest repr
        return repr(value)
    if isinstance(value, int | Decimal):
        return str(value)
    if hasattr(value, "strftime"):  # a date cell: the terminal's own format
        return str(value.strftime("%Y.%m.%d %H:%M:%S"))
    return " ".join(str(value).split())[: _MAX_CELL * 4]


def _html_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    try:
        from bs4 import BeautifulSoup
    except ImportError:  # pragma: no cover - the extra is installed in CI
        raise ReportsExtraMissingError() from None
    soup = BeautifulSoup(text, "html.parser")
    for index, tr in enumerate(soup.find_all("tr"), start=1):
        cells: list[str] = []
        for cell in tr.find_all(["td", "th"], recursive=False):
            span_text = str(cell.get("colspan") or "1")
            span = int(span_text) if _TICKET.fullmatch(span_text) else 1
            cells.append(_cell_text(cell.get_text(" ")))
            cells.extend([""] * (min(max(span, 1), _MAX_COLSPAN) - 1))
        yield (tr.sourceline or index), cells


def _xlsx_rows(data: bytes) -> Iterator[tuple[int, list[str]]] | ImportProblem:
    try:
        import openpyxl
    except ImportError:  # pragma: no cover - the extra is installed in CI
        raise ReportsExtraMissingError() from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
        if len(members) > _MAX_XLSX_MEMBERS or sum(m.file_size for m in members) > _MAX_XLSX_BYTES:
            return ImportProblem(1, "the workbook unpacks to more than this reader takes")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return ImportProblem(1, "the workbook cannot be read (a truncated or damaged .xlsx)")
    try:
        # Formulas are read as their text (not their cached values, which a writer sets at
        # will): the terminal writes none, and a formula in a money cell is that row's problem.
        book: Any = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=False)
        rows = [
            (number, [_cell_text(v) for v in values])
            for number, values in enumerate(book.worksheets[0].iter_rows(values_only=True), 1)
        ]
        book.close()
    except Exception:  # zipfile, XML and openpyxl errors alike: the file is the problem
        return ImportProblem(1, "the workbook cannot be read (a truncated or damaged .xlsx)")
    return iter(rows)


def _is_deal_row(cells: list[str]) -> bool:
    """A Deals data row: a ticket, a time, and English type and direction at their places."""
    if len(cells) < 13 or not _TICKET.fullmatch(cells[1]) or not _TIME.match(cells[0]):
        return False
    action = ACTION_NAMES.get(cells[3].lower())
    entry = ENTRY_NAMES.get(cells[4].lower())
    if action is None or entry is None:
        return False
    return bool(cells[4]) or not action.is_trade


def _is_data_like(cells: list[str]) -> bool:
    return len(cells) > 1 and bool(_TICKET.fullmatch(cells[1])) and bool(_TIME.match(cells[0]))


def _header(rows: list[tuple[int, list[str]]], end: int) -> tuple[int, str, str] | None:
    for _, cells in rows[:end]:
        for cell in cells:
            match = _ACCOUNT.search(cell)
            if match:
                return int(match[1]), match[2].upper(), match[3]
    return None


def _balance_fit(layout: _Layout, table: list[list[str]]) -> int:
    """How many consecutive rows' balances move by their commission, fee, swap and profit."""
    fits = 0
    for before, after in itertools.pairwise(table):
        try:
            move = sum(
                (_number(after[layout.at[name]]) for name in _MONEY if name in layout.at),
                Decimal(0),
            )
            if _number(after[layout.at["Balance"]]) - _number(before[layout.at["Balance"]]) == move:
                fits += 1
        except (FxCrmError, IndexError):
            continue
    return fits


class _Positions:
    """Position ids from the order/deal link: MT5 gives a position its opening order's ticket.

    A closing deal belongs to the one open position on its symbol it can close; with none or
    several, the report cannot tell and the position stays unknown (0).
    """

    def __init__(self) -> None:
        self._open: dict[str, list[list[Any]]] = {}  # symbol -> [id, action, lots]

    def position(self, action: DealAction, entry: DealEntry, symbol: str, order: int,
                 lots: Decimal) -> int:  # fmt: skip
        if action not in (DealAction.BUY, DealAction.SELL):
            return 0
        book = self._open.setdefault(symbol, [])
        if entry is DealEntry.IN:
            if not order:
                return 0
            book.append([order, action, lots])
            return order
        closable = [p for p in book if p[1] is not action]
        if len(closable) != 1:
            return 0
        held = closable[0]
        if entry is DealEntry.INOUT:
            held[1], held[2] = action, lots - held[2]
        else:
            held[2] -= lots
        if held[2] <= 0:
            book.remove(held)
        return int(held[0])


def _check_arguments(source: object, server: object, utc_offset: object) -> None:
    if not isinstance(source, bytes | bytearray | Path):
        raise ValidationError("source must be the report's bytes or a path to it")
    check_origin(server, None, utc_offset)  # (the report names its own currency)


def _refused(problem: ImportProblem, **header: Any) -> ReportImportResult:
    return ReportImportResult((), (problem,), **header)


def read_mt5_report(
    source: bytes | Path, *, server: str | None = None, utc_offset: timedelta
) -> ReportImportResult:
    """Read a terminal history report (HTML or .xlsx, told apart by the zip signature).

    Each bad row of the Deals table is a problem named by its row (the HTML source line, or the
    sheet row) and the others are read; a report that cannot be decoded or opened, has no
    account line or Deals section, or whose totals row disagrees with its deals imports
    nothing. A workbook is read as written: a formula is its text (so a formula in a money cell
    is that row's problem), and one that unpacks to more than 256 MiB is refused unread.
    ``server`` overrides the header's. Wrong argument types raise
    :class:`ValidationError`; a missing ``reports`` extra :class:`ReportsExtraMissingError`.
    """
    _check_arguments(source, server, utc_offset)
    if isinstance(source, Path):
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise ValidationError(f"cannot read the report file ({type(exc).__name__})") from None
    else:
        data = bytes(source)
    if data.startswith(_ZIP_MAGIC):
        read = _xlsx_rows(data)
        if isinstance(read, ImportProblem):
            return _refused(read)
        rows = list(read)
    else:
        try:
            text = decode_text(data)
        except UndecodableTextError as error:
            return _refused(ImportProblem(error.line, str(error)))
        rows = list(_html_rows(text))
    return _read_rows(rows, server=server, utc_offset=utc_offset)


def _read_rows(
    rows: list[tuple[int, list[str]]], *, server: str | None, utc_offset: timedelta
) -> ReportImportResult:
    rows = [(n, [c.strip() for c in cells]) for n, cells in rows]
    first = next((i for i, (_, cells) in enumerate(rows) if _is_deal_row(cells)), None)
    if first is None:
        return _refused(ImportProblem(1, "the report has no Deals section"))
    start = first
    while start > 0 and _is_data_like(rows[start - 1][1]):
        start -= 1
    if start == 0:
        return _refused(ImportProblem(rows[first][0], "the Deals table has no header row"))
    header_row, header = rows[start - 1]
    while header and not header[-1]:
        header.pop()
    account = _header(rows, start - 1)
    if account is None:
        return _refused(ImportProblem(1, "the report's header has no account line"))
    login, currency, header_server = account
    found = {"login": login, "currency": currency, "server": server or header_server}
    try:
        Currency.of(currency)
    except FxCrmError:
        return _refused(ImportProblem(1, "the account line names an unknown currency"), **found)
    table: list[tuple[int, list[str]]] = []
    totals: tuple[int, list[str]] | None = None
    for number, cells in rows[start:]:
        filled = [c for c in cells if c]
        if not filled:
            continue
        if not cells[0] and len(cells) > 1 and not cells[1]:
            totals = (number, cells)
            break
        if len(filled) == 1:  # the next section's title
            break
        table.append((number, cells))
    layouts = _layouts(header)
    if not layouts:
        problem = ImportProblem(
            header_row, f"the Deals header has {len(header)} columns, not 13-15"
        )
        return _refused(problem, **found)
    cells_only = [cells for _, cells in table]
    layout = max(layouts, key=lambda lay: _balance_fit(lay, cells_only))  # first wins a tie
    return _deals(table, totals, layout, found, utc_offset=utc_offset)


def _deals(
    table: list[tuple[int, list[str]]],
    totals: tuple[int, list[str]] | None,
    layout: _Layout,
    found: dict[str, Any],
    *,
    utc_offset: timedelta,
) -> ReportImportResult:
    at = layout.at
    deals: list[Deal] = []
    problems: list[ImportProblem] = []
    unknown: list[int] = []
    seen: set[int] = set()
    sums = dict.fromkeys(_MONEY, Decimal(0))
    positions = _Positions()
    for number, cells in table:
        if len(cells) < layout.width - 1:  # the comment may be cut off, nothing else
            problems.append(
                ImportProblem(number, f"the row has {len(cells)} cells, not {layout.width}")
            )
            continue
        cells = [*cells, *[""] * (layout.width - len(cells))]
        try:
            money = {name: cells[at[name]].translate(_GROUPING) if name in at else "0"
                     for name in _MONEY}  # fmt: skip
            # All four parsed before any is added: a row that fails half-way adds nothing.
            amounts = {name: _number(text) for name, text in money.items()}
            for name, amount in amounts.items():
                sums[name] += amount
            action = ACTION_NAMES.get(cells[at["Type"]].lower())
            entry = ENTRY_NAMES.get(cells[at["Direction"]].lower())
            if action is None or entry is None:
                raise UnknownServerResponseError("unknown type or direction")
            order = cells[at["Order"]].translate(_GROUPING)
            order_id = int(order) if _TICKET.fullmatch(order) else 0
            lots = Decimal(_volume_units(cells[at["Volume"]].translate(_GROUPING))).scaleb(-8)
            symbol = cells[at["Symbol"]]
            position = positions.position(action, entry, symbol, order_id, lots)
            row = {
                "Time": cells[at["Time"]], "Deal": cells[at["Deal"]].translate(_GROUPING),
                "Login": str(found["login"]), "Action": cells[at["Type"]],
                "Entry": cells[at["Direction"]], "Symbol": symbol,
                "Volume": cells[at["Volume"]].translate(_GROUPING),
                "Price": _price_text(cells[at["Price"]]), "Order": order,
                "Position": str(position) if position else "", "Comment": cells[at["Comment"]],
                "Commission": money["Commission"], "Fee": money["Fee"],
                "Swap": money["Swap"], "Profit": money["Profit"],
            }  # fmt: skip
            deal = _deal(row, server=found["server"], currency=found["currency"],
                         utc_offset=utc_offset)  # fmt: skip
            if deal.ticket in seen:
                raise UnknownServerResponseError("the same deal ticket appears twice")
        except FxCrmError as problem:
            problems.append(ImportProblem(number, str(problem)))
            continue
        seen.add(deal.ticket)
        if action.is_trade and not position:
            unknown.append(deal.ticket)
        deals.append(deal)
    if totals is None:
        problems.append(
            ImportProblem(table[-1][0] if table else 1, "the Deals table has no totals row")
        )
        return ReportImportResult((), tuple(problems), **found)
    number, cells = totals
    disagree = False
    for name in _MONEY:
        if name not in at:
            continue
        try:
            stated = _number(cells[at[name]]) if at[name] < len(cells) else Decimal(0)
        except FxCrmError:
            problems.append(ImportProblem(number, f"the totals row's {name} is not a number"))
            disagree = True
            continue
        if stated != sums[name]:
            problems.append(ImportProblem(
                number, f"the totals row's {name} disagrees with the sum of the deals' {name}"
            ))  # fmt: skip
            disagree = True
    if disagree:
        return ReportImportResult((), tuple(problems), **found)
    return ReportImportResult(
        tuple(deals), tuple(problems), **found, unknown_positions=tuple(unknown)
    )
