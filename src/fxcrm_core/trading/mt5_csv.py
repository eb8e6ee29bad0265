"""Importer of MT5 deal-history exports (CSV, as the Manager terminal's Deals report saves them).

Columns: Time, Deal, Login, Action, Entry, Symbol, Volume (lots), Price, Order, Position,
Commission, Fee, Swap, Profit, Comment. Times are server time (``2026.03.09 14:30:15.123``).
Every row is checked and every problem reported (row number and reason), not just the first.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import attrs

from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.kernel.money import Currency
from fxcrm_core.trading.deal import Deal, DealAction, DealEntry, UnknownServerResponseError

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
_EXT_LOT = Decimal("0.00000001")
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


def _server_ms(text: str) -> int:
    for fmt in ("%Y.%m.%d %H:%M:%S.%f", "%Y.%m.%d %H:%M:%S", "%Y.%m.%d %H:%M"):
        try:
            wall = datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC)  # server wall clock
        except ValueError:
            continue
        return (wall - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    raise UnknownServerResponseError("time is not in MT5's YYYY.MM.DD HH:MM:SS format")


def _volume_units(text: str) -> int:
    try:
        lots = Decimal(text.strip() or "0")
    except InvalidOperation:
        raise UnknownServerResponseError("volume is not a number") from None
    if lots < 0 or lots % _EXT_LOT:
        raise UnknownServerResponseError("volume is negative or finer than 1/100,000,000 lot")
    return int(lots / _EXT_LOT)


def read_mt5_deals(
    source: str | Path | Iterable[str],
    *,
    server: str,
    currency: str | Currency,
    utc_offset: timedelta,
    delimiter: str = ",",
) -> ImportResult:
    """Read an export; ``source`` is a path, the CSV text, or lines of it."""
    if isinstance(source, Path):
        lines: Iterable[str] = source.read_text(encoding="utf-8-sig").splitlines()
    elif isinstance(source, str):
        lines = io.StringIO(source.lstrip("\ufeff"))
    else:
        lines = source
    reader = csv.DictReader(lines, delimiter=delimiter)
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        return ImportResult((), (ImportProblem(1, f"missing columns: {', '.join(missing)}"),))
    deals: list[Deal] = []
    problems: list[ImportProblem] = []
    seen: set[int] = set()
    for row_no, row in enumerate(reader, start=2):
        try:
            action = ACTION_NAMES.get(row["Action"].strip().lower())
            entry = ENTRY_NAMES.get(row["Entry"].strip().lower())
            if action is None:
                raise UnknownServerResponseError("unknown action")
            if entry is None:
                raise UnknownServerResponseError("unknown entry")
            deal = Deal.from_mt5(
                {
                    "Deal": row["Deal"],
                    "Login": row["Login"],
                    "Action": int(action),
                    "Entry": int(entry),
                    "Symbol": row["Symbol"].strip(),
                    "VolumeExt": _volume_units(row["Volume"]),
                    "Price": row["Price"].strip() or "0",
                    "Order": row["Order"] or 0,
                    "PositionID": row["Position"] or 0,
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
            if deal.ticket in seen:
                raise UnknownServerResponseError("the same deal ticket appears twice")
            seen.add(deal.ticket)
            deals.append(deal)
        except FxCrmError as problem:
            problems.append(ImportProblem(row_no, str(problem)))
    return ImportResult(tuple(deals), tuple(problems))
