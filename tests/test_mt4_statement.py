"""The MT4 account statement reader, on statements the tests write (HTML, UTF-8 and UTF-16)."""

from __future__ import annotations

import codecs
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.trading.deal import DealAction, DealEntry
from fxcrm_core.trading.mt4_statement import Mt4StatementResult, read_mt4_statement

OFFSET = timedelta(hours=2)
SERVER = "Broker-Live"
HEADER = ["Ticket", "Open Time", "Type", "Size", "Item", "Price", "S / L", "T / P",
          "Close Time", "Price", "Commission", "Taxes", "Swap", "Profit"]  # fmt: skip
TRADES = [
    ("101", "2024.01.02 10:00:00", "buy", "1.00", "eurgbp-2", "0.86000", "0.00000", "0.00000",
     "2024.01.03 11:30:00", "0.86100", "-7.00", "-0.50", "-2.50", "115.00"),
    ("102", "2024.01.04 12:00:00", "sell", "0.50", "EURUSD", "1.10000", "0.00000", "0.00000",
     "2024.01.04 15:00:00", "1.10200", "-3.50", "0.00", "0.00", "-100.00"),
]  # fmt: skip
# (ticket, time, type, comment, amount): the comment spans the ten middle columns.
MOVES = [
    ("100", "2024.01.02 09:00:00", "balance", "Deposit", "1 000.00"),
    ("103", "2024.01.05 09:00:00", "credit", "Bonus", "50.00"),
]
# A row whose time is not a time: reported, its money still in the printed totals.
BAD = ("104", "yesterday", "buy", "0.10", "eurusd", "1.1", "0", "0", "2024.01.06 10:00:00",
       "1.2", "-1.00", "0.00", "0.00", "10.00")  # fmt: skip
CANCELLED = ("105", "2024.01.05 10:00:00", "buy limit", "0.10", "eurusd", "1.0", "0", "0",
             "2024.01.05 11:00:00", "1.0")  # fmt: skip
TOTALS = ("-11.50", "-0.50", "-2.50", "1 075.00")


def _statement(
    *, totals: tuple[str, ...] | None = TOTALS, bad: bool = True, closed: bool = True
) -> str:
    def row(cells: tuple[str, ...] | list[str]) -> str:
        return "<tr align=right>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>\n"

    parts = [
        "<html><head><title>Statement: 1234567 - A. Trader</title></head><body>\n",
        '<div style="font: 20pt Times New Roman"><b>Broker Ltd</b></div><br>\n<table>\n',
        "<tr align=left><td colspan=2><b>Account: 1234567</b></td>"
        "<td colspan=5><b>Name: A. Trader</b></td><td colspan=2><b>Currency: USD</b></td>"
        "<td colspan=2><b>Leverage: 1:100</b></td></tr>\n",
    ]
    if closed:
        parts.append("<tr align=left><td colspan=13><b>Closed Transactions:</b></td></tr>\n")
        parts.append(row(HEADER))
        parts.append(
            f"<tr><td>{MOVES[0][0]}</td><td>{MOVES[0][1]}</td><td>{MOVES[0][2]}</td>"
            f"<td colspan=10 align=left>{MOVES[0][3]}</td><td>{MOVES[0][4]}</td></tr>\n"
        )
        parts.extend(row(t) for t in TRADES)
        parts.append(row(CANCELLED)[:-6] + "<td colspan=4>cancelled</td></tr>\n")
        if bad:
            parts.append(row(BAD))
        m = MOVES[1]
        parts.append(
            f"<tr><td>{m[0]}</td><td>{m[1]}</td><td>{m[2]}</td>"
            f"<td colspan=10 align=left>{m[3]}</td><td>{m[4]}</td></tr>\n"
        )
        if totals is not None:
            parts.append(
                "<tr align=right><td colspan=10>&nbsp;</td>"
                + "".join(f"<td>{t}</td>" for t in totals) + "</tr>\n"
            )  # fmt: skip
            parts.append("<tr><td colspan=10><b>Closed P/L:</b></td><td colspan=4>5.00</td></tr>\n")
    parts.append("<tr align=left><td colspan=13><b>Open Trades:</b></td></tr>\n")
    parts.append("</table></body></html>\n")
    return "".join(parts)


def _read(data: bytes) -> Mt4StatementResult:
    return read_mt4_statement(data, server=SERVER, utc_offset=OFFSET)


@pytest.mark.parametrize(
    "data",
    [
        _statement().encode("utf-8"),
        codecs.BOM_UTF8 + _statement().encode("utf-8"),
        codecs.BOM_UTF16_LE + _statement().encode("utf-16-le"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-bom"],
)
def test_closed_orders_become_linked_deal_pairs(data: bytes) -> None:
    result = _read(data)
    assert (result.login, result.currency, result.server, result.name) == (
        1234567, "USD", SERVER, "A. Trader"
    )  # fmt: skip
    # 2 closed orders x 2 deals + a balance + a credit; the cancelled order makes none.
    assert len(result.deals) == 6
    assert [p.reason for p in result.problems] == [
        "time is not in MT5's YYYY.MM.DD HH:MM:SS format"
    ]
    bad_line = _statement().splitlines().index(
        "<tr align=right>" + "".join(f"<td>{c}</td>" for c in BAD) + "</tr>"
    ) + 1  # fmt: skip
    assert result.problems[0].row == bad_line
    by_ticket = {d.ticket: d for d in result.deals}
    assert set(by_ticket) == {200, 202, 203, 204, 205, 206}
    opening, closing = by_ticket[202], by_ticket[203]
    assert (opening.action, opening.entry, closing.action, closing.entry) == (
        DealAction.BUY, DealEntry.IN, DealAction.SELL, DealEntry.OUT
    )  # fmt: skip
    assert opening.position_id == closing.position_id == 101 == closing.order
    assert opening.symbol == closing.symbol == "eurgbp-2"
    assert opening.price == Decimal("0.86000")
    assert closing.price == Decimal("0.86100")
    assert opening.volume == closing.volume == Decimal("1.00")
    assert opening.profit.amount == opening.commission.amount == 0
    assert opening.time == datetime(2024, 1, 2, 8, tzinfo=UTC)
    assert closing.time == datetime(2024, 1, 3, 9, 30, tzinfo=UTC)
    assert (closing.commission.amount, closing.fee.amount, closing.swap.amount) == (
        Decimal("-7.00"), Decimal("-0.50"), Decimal("-2.50")
    )  # fmt: skip
    assert closing.profit.amount == Decimal("115.00")
    sell_in, sell_out = by_ticket[204], by_ticket[205]
    assert (sell_in.action, sell_out.action) == (DealAction.SELL, DealAction.BUY)
    assert sell_in.position_id == sell_out.position_id == 102
    balance, credit = by_ticket[200], by_ticket[206]
    assert (balance.action, balance.profit.amount, balance.comment) == (
        DealAction.BALANCE, Decimal("1000.00"), "Deposit"
    )  # fmt: skip
    assert (credit.action, credit.profit.amount, credit.comment) == (
        DealAction.CREDIT, Decimal("50.00"), "Bonus"
    )  # fmt: skip
    # Imported totals equal the totals row, less the reported row's printed money.
    assert sum((d.profit.amount for d in result.deals), Decimal(0)) == Decimal("1065.00")
    assert sum((d.commission.amount for d in result.deals), Decimal(0)) == Decimal("-10.50")
    assert sum((d.fee.amount for d in result.deals), Decimal(0)) == Decimal("-0.50")
    assert sum((d.swap.amount for d in result.deals), Decimal(0)) == Decimal("-2.50")


def test_totals_equal_the_totals_row_without_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "statement.htm"
    text = _statement(totals=("-10.50", "-0.50", "-2.50", "1 065.00"), bad=False)
    path.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    first = read_mt4_statement(path, server=SERVER, utc_offset=OFFSET)
    again = read_mt4_statement(path, server=SERVER, utc_offset=OFFSET)
    assert first.ok
    assert len(first.deals) == 6
    assert [d.key for d in first.deals] == [d.key for d in again.deals]  # idempotent keys
    assert sum((d.profit.amount for d in first.deals), Decimal(0)) == Decimal("1065.00")


def test_a_totals_row_that_disagrees_imports_nothing() -> None:
    result = _read(_statement(totals=("-11.50", "-0.50", "-2.50", "1 076.00")).encode())
    assert result.deals == ()
    assert any("Profit disagrees" in p.reason for p in result.problems)
    assert result.login == 1234567


def test_without_a_totals_row_the_rows_are_read() -> None:
    result = _read(_statement(totals=None, bad=False).encode())
    assert result.ok
    assert len(result.deals) == 6


def test_bad_files_are_refused_whole() -> None:
    no_section = _read(_statement(closed=False).encode())
    assert no_section.deals == ()
    assert "no Closed Transactions" in no_section.problems[0].reason
    undecodable = _read(b"<html>\xff\xff\xfe</html>")
    assert undecodable.deals == ()
    assert undecodable.problems[0].row == 1
    no_account = _read(_statement().replace("Account: 1234567", "").encode())
    assert no_account.deals == ()
    assert "no Account" in no_account.problems[0].reason


def test_arguments_are_checked() -> None:
    with pytest.raises(ValidationError):
        read_mt4_statement(_statement().encode(), utc_offset=OFFSET)  # no server
    with pytest.raises(ValidationError):
        read_mt4_statement("text", server=SERVER, utc_offset=OFFSET)  # type: ignore[arg-type]


def test_a_suffixed_lower_case_symbol_takes_the_schedules_rule_through_its_alias() -> None:
    """MT4 writes ``eurgbp-2``; the rebate schedule lists ``EURGBP``: the alias rule maps it."""
    from fxcrm_core.commissions import PlanKind, Rule, Schedule
    from fxcrm_core.kernel import Currency, Money

    usd = Currency.of("USD")
    result = _read(_statement().encode())
    symbols = {d.symbol for d in result.deals if d.symbol}
    assert "eurgbp-2" in symbols
    schedule = Schedule(
        "std", 1, datetime(2020, 1, 1, tzinfo=UTC), usd,
        by_symbol={"EURGBP": Rule(PlanKind.PER_LOT, Money.of("3.00", usd))},
        allow_above_revenue=True,
    )  # fmt: skip
    found = schedule.resolve("eurgbp-2", "std")
    assert found is not None
    assert found[1] == "alias eurgbp-2 of EURGBP"
