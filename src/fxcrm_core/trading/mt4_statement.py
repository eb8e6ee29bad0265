"""Reader of MT4 account statements (HTML): each closed order becomes an opening and a closing deal.

The header gives ``Account:``, ``Name:`` and ``Currency:``; "Closed Transactions" holds one row
per closed order (open and close in one row) and balance/credit rows whose comment spans the
middle columns. Deal tickets are derived: ``2 * ticket`` opens (and is a balance or credit
deal), ``2 * ticket + 1`` closes; both carry ``position_id = ticket``, so importing the same
statement twice gives the same deal keys. Symbols are kept as the file writes them
(``eurgbp-2``): a schedule's alias rules map broker suffixes. Needs the ``reports`` extra.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import attrs

from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.kernel.money import Currency
from fxcrm_core.trading._encoding import UndecodableTextError, decode_text
from fxcrm_core.trading.deal import Deal, DealAction, UnknownServerResponseError, check_origin
from fxcrm_core.trading.mt5_csv import ImportProblem, _deal
from fxcrm_core.trading.mt5_report import (
    _GROUPING,
    ReportImportResult,
    _html_rows,
    _number,
)

__all__ = ["Mt4StatementResult", "read_mt4_statement"]

_ACCOUNT = re.compile(r"Account:\s*([0-9]{1,20})(?![0-9])")
_CURRENCY = re.compile(r"Currency:\s*([A-Za-z]{3})(?![A-Za-z])")
_NAME = re.compile(r"Name:\s*(.+)")
_TICKET = re.compile(r"[0-9]{1,19}")
_WIDTH = 14  # Ticket .. Profit
# Columns of a closed order: ticket, open time, type, size, item, price, S/L, T/P, close time,
# price, commission, taxes, swap, profit. A balance or credit row: ticket, time, type, the
# comment spanning 3..12, the amount under Profit.
_MONEY = {"Commission": 10, "Taxes": 11, "Swap": 12, "Profit": 13}
_TRADES = {"buy": (DealAction.BUY, DealAction.SELL), "sell": (DealAction.SELL, DealAction.BUY)}
_MOVES = {"balance": DealAction.BALANCE, "credit": DealAction.CREDIT}
# Cancelled pending orders sit in the same table but never traded: no deal, no problem.
_PENDING = frozenset(f"{side} {kind}" for side in ("buy", "sell") for kind in ("limit", "stop"))


@attrs.frozen
class Mt4StatementResult(ReportImportResult):
    """What :func:`read_mt4_statement` read; ``name`` is the account holder's, as printed."""

    name: str | None = None


def _refused(problem: ImportProblem, **header: object) -> Mt4StatementResult:
    return Mt4StatementResult((), (problem,), **header)  # type: ignore[arg-type]


def read_mt4_statement(
    source: bytes | Path, *, server: str | None = None, utc_offset: timedelta
) -> Mt4StatementResult:
    """Read an MT4 account statement saved as HTML (UTF-8 or UTF-16, with or without a BOM).

    An MT4 statement does not name its server: ``server`` is required (ValidationError when
    missing). Each bad row is a problem named by its HTML source line and the other rows are
    read; a file that cannot be decoded, has no account line or no Closed Transactions, or whose
    totals row (when there is one) disagrees with the sum of the rows' commission, taxes, swap
    and profit (balance and credit amounts included) imports nothing.
    """
    if not isinstance(source, bytes | bytearray | Path):
        raise ValidationError("source must be the statement's bytes or a path to it")
    check_origin(server, None, utc_offset)
    if server is None:
        raise ValidationError("an MT4 statement does not name its server: pass server=")
    if isinstance(source, Path):
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise ValidationError(
                f"cannot read the statement file ({type(exc).__name__})"
            ) from None
    else:
        data = bytes(source)
    try:
        text = decode_text(data)
    except UndecodableTextError as error:
        return _refused(ImportProblem(error.line, str(error)))
    rows = [(n, [c.strip() for c in cells]) for n, cells in _html_rows(text)]
    return _read_rows(rows, server=server, utc_offset=utc_offset)


def _read_rows(
    rows: list[tuple[int, list[str]]], *, server: str, utc_offset: timedelta
) -> Mt4StatementResult:
    title = next(
        (i for i, (_, cells) in enumerate(rows)
         if [c for c in cells if c][:1] and cells[0].lower().startswith("closed transactions")),
        None,
    )  # fmt: skip
    if title is None:
        return _refused(ImportProblem(1, "the statement has no Closed Transactions section"))
    found: dict[str, object] = {"server": server}
    for _, cells in rows[:title]:
        for cell in cells:
            if (match := _ACCOUNT.search(cell)) and "login" not in found:
                found["login"] = int(match[1])
            if (match := _CURRENCY.search(cell)) and "currency" not in found:
                found["currency"] = match[1].upper()
            if (match := _NAME.match(cell)) and "name" not in found:
                found["name"] = match[1].strip()
    if "login" not in found or "currency" not in found:
        return _refused(ImportProblem(1, "the statement's header has no Account or Currency"))
    try:
        Currency.of(str(found["currency"]))
    except FxCrmError:
        return _refused(ImportProblem(1, "the header names an unknown currency"), **found)
    deals: list[Deal] = []
    problems: list[ImportProblem] = []
    sums = dict.fromkeys(_MONEY, Decimal(0))
    seen: set[int] = set()
    totals: tuple[int, list[str]] | None = None
    for number, cells in rows[title + 2 :]:  # the title, then the column header
        filled = [c for c in cells if c]
        if not filled:
            continue
        if not cells[0]:  # no ticket: the totals row under the money columns
            totals = (number, cells)
            break
        if len(filled) == 1:  # the next section's title
            break
        try:
            kind = cells[2].lower() if len(cells) > 2 else ""
            if kind in _PENDING:
                continue
            if len(cells) < _WIDTH:
                raise UnknownServerResponseError(f"the row has {len(cells)} cells, not {_WIDTH}")
            money = {name: cells[at].translate(_GROUPING) or "0" for name, at in _MONEY.items()}
            for name, text in money.items():
                sums[name] += _number(text)
            made = _row_deals(cells, kind, money, found, utc_offset=utc_offset)
            if seen & {d.ticket for d in made}:
                raise UnknownServerResponseError("the same ticket appears twice")
        except FxCrmError as problem:
            problems.append(ImportProblem(number, str(problem)))
            continue
        seen.update(d.ticket for d in made)
        deals.extend(made)
    if totals is not None:
        number, cells = totals
        stated_problems = [
            ImportProblem(
                number, f"the totals row's {name} disagrees with the sum of the rows' {name}"
            )
            for name, at in _MONEY.items()
            if _stated(cells, at) != sums[name]
        ]
        if stated_problems:
            problems.extend(stated_problems)
            return Mt4StatementResult((), tuple(problems), **found)  # type: ignore[arg-type]
    return Mt4StatementResult(tuple(deals), tuple(problems), **found)  # type: ignore[arg-type]


def _stated(cells: list[str], at: int) -> Decimal | None:
    """A totals row's amount (0 where the row stops short; None when it is not a number)."""
    try:
        return _number(cells[at]) if at < len(cells) else Decimal(0)
    except FxCrmError:
        return None


def _row_deals(
    cells: list[str],
    kind: str,
    money: dict[str, str],
    found: dict[str, object],
    *,
    utc_offset: timedelta,
) -> list[Deal]:
    ticket_text = cells[0].translate(_GROUPING)
    if not _TICKET.fullmatch(ticket_text):
        raise UnknownServerResponseError("the ticket is not a number")
    ticket = int(ticket_text)
    base = {"Login": str(found["login"]), "Order": ticket_text, "Position": ticket_text}

    def deal(**row: str) -> Deal:
        full = {"Symbol": "", "Volume": "", "Price": "", "Comment": "", "Commission": "",
                "Fee": "", "Swap": "", "Profit": ""} | base | row  # fmt: skip
        return _deal(full, server=str(found["server"]), currency=str(found["currency"]),
                     utc_offset=utc_offset)  # fmt: skip

    if kind in _MOVES:
        comment = " ".join(c for c in cells[3:13] if c)
        return [deal(Deal=str(2 * ticket), Time=cells[1], Action=kind, Entry="",
                     Comment=comment, Profit=money["Profit"])]  # fmt: skip
    if kind not in _TRADES:
        raise UnknownServerResponseError("unknown type (not buy, sell, balance or credit)")
    opening, closing = _TRADES[kind]
    trade = {"Symbol": cells[4], "Volume": cells[3].translate(_GROUPING)}
    return [
        deal(Deal=str(2 * ticket), Time=cells[1], Action=opening.name.lower(), Entry="in",
             Price=cells[5].translate(_GROUPING), **trade),
        deal(Deal=str(2 * ticket + 1), Time=cells[8], Action=closing.name.lower(), Entry="out",
             Price=cells[9].translate(_GROUPING), Commission=money["Commission"],
             Fee=money["Taxes"], Swap=money["Swap"], Profit=money["Profit"], **trade),
    ]  # fmt: skip
