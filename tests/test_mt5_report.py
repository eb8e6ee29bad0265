"""The MT5 terminal's History -> Report reader, on reports the tests write (HTML and .xlsx)."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest

from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.trading.deal import DealAction, DealEntry
from fxcrm_core.trading.mt5_report import ReportImportResult, read_mt5_report

NBSP = "\u00a0"
OFFSET = timedelta(hours=2)
EN = ["Time", "Deal", "Symbol", "Type", "Direction", "Volume", "Price", "Order",
      "Commission", "Fee", "Swap", "Profit", "Balance", "Comment"]  # fmt: skip
JA = ["時間", "約定", "銘柄", "タイプ", "方向", "数量", "価格", "注文",
      "手数料", "スワップ", "損益", "残高", "コメント"]  # fmt: skip
# (time, deal, symbol, type, direction, volume, price, order, commission, fee, swap, profit,
# balance, comment)
DEALS = [
    ("2024.01.02 09:00:00", "1001", "", "balance", "", "", "", "", "0.00", "0.00", "0.00",
     "3 000 000.00", "3 000 000.00", "deposit"),
    ("2024.01.02 10:00:00", "1002", "EURUSD", "buy", "in", "1.00", "1.10000", "2001",
     "-7.00", "0.00", "0.00", "0.00", "2 999 993.00", ""),
    ("2024.01.03 11:30:00", "1003", "EURUSD", "sell", "out", "1.00", "1.10100", "2002",
     "-7.00", "-1.00", "-2.50", "100.00", f"3{NBSP}000{NBSP}082.50", ""),
    ("2024.01.04 12:00:00", "1004", "GBPUSD", "sell", "in", "0.50", "1.27000", "2003",
     "-3.50", "0.00", "0.00", "0.00", f"3{NBSP}000{NBSP}079.00", "scalp"),
]  # fmt: skip
TOTALS = {"Commission": "-17.50", "Fee": "-1.00", "Swap": "-2.50", "Profit": "3 000 100.00"}
BALANCE = "3 000 079.00"


def _rows(merged: bool, totals: dict[str, str]) -> tuple[list[str], list[list[str]], list[str]]:
    header = JA if merged else EN
    rows = []
    for deal in DEALS:
        cells = list(deal)
        if merged:  # one column for commission and fee
            cells[8:10] = [f"{Decimal(cells[8]) + Decimal(cells[9]):.2f}"]
        rows.append(cells)
    money = [totals["Commission"], totals["Fee"], totals["Swap"], totals["Profit"], BALANCE]
    if merged:
        money[0:2] = [f"{Decimal(money[0]) + Decimal(money[1]):.2f}"]
    return header, rows, money


def _html(*, merged: bool = False, totals: dict[str, str] = TOTALS, deals: bool = True) -> bytes:
    header, rows, money = _rows(merged, totals)
    width = len(header)

    def row(cells: list[str], tag: str = "td") -> str:
        return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>\n"

    def title(text: str) -> str:
        return f'<tr><th colspan="{width}"><div><b>{text}</b></div></th></tr>\n'

    parts = [
        "<!DOCTYPE html>\n<html><head><title>Report</title></head><body>\n<table>\n",
        title("Trade History Report"),
        '<tr><th colspan="3">Name:</th><th colspan="10"><b>A. Trader</b></th></tr>\n',
        '<tr><th colspan="3">Account:</th>'
        '<th colspan="10"><b>51234567 (USD, Broker-Live, real, Hedge)</b></th></tr>\n',
        '<tr><th colspan="3">Company:</th><th colspan="10"><b>Broker Ltd</b></th></tr>\n',
        title("Positions"),
        row(
            [
                "Time",
                "Position",
                "Symbol",
                "Type",
                "Volume",
                "Price",
                "S / L",
                "T / P",
                "Time",
                "Price",
                "Commission",
                "Swap",
                "Profit",
            ],
            "th",
        ),
        row(
            [
                "2024.01.02 10:00:00",
                "2001",
                "EURUSD",
                "buy",
                "1",
                "1.10000",
                "",
                "",
                "2024.01.03 11:30:00",
                "1.10100",
                "-14.00",
                "-2.50",
                "100.00",
            ]
        ),
        title("Orders"),
        row(
            [
                "Open Time",
                "Order",
                "Symbol",
                "Type",
                "Volume",
                "Price",
                "S / L",
                "T / P",
                "Time",
                "State",
                "Comment",
            ],
            "th",
        ),
        row(
            [
                "2024.01.02 10:00:00",
                "2001",
                "EURUSD",
                "buy",
                "1 / 1",
                "market",
                "",
                "",
                "2024.01.02 10:00:00",
                "filled",
                "",
            ]
        ),
        title("Deals"),
    ]
    if deals:
        parts.append(row(header, "th"))
        parts.extend(row(cells) for cells in rows)
        lead = 8
        parts.append(f'<tr><td colspan="{lead}"></td>' + "".join(
            f"<td>{m}</td>" for m in money) + "<td></td></tr>\n")  # fmt: skip
    parts += [title("Summary"), "</table></body></html>\n"]
    return "\ufeff".encode("utf-16-le") + "".join(parts).encode("utf-16-le")


def _xlsx() -> bytes:
    header, rows, money = _rows(False, TOTALS)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Trade History Report"])
    sheet.append(["Account:", None, None, "51234567 (USD, Broker-Live, real, Hedge)"])
    sheet.append(["Positions"])
    sheet.append(["Time", "Position", "Symbol", "Type", "Volume", "Price"])
    sheet.append(["Deals"])
    sheet.append(header)
    for cells in rows:
        sheet.append(cells)
    sheet.append([None] * 8 + money)
    sheet.append(["Summary"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _money_totals(result: ReportImportResult) -> dict[str, Decimal]:
    return {
        "Commission": sum((d.commission.amount + d.fee.amount for d in result.deals), Decimal(0)),
        "Swap": sum((d.swap.amount for d in result.deals), Decimal(0)),
        "Profit": sum((d.profit.amount for d in result.deals), Decimal(0)),
    }


EXPECTED = {"Commission": Decimal("-18.50"), "Swap": Decimal("-2.50"),
            "Profit": Decimal("3000100.00")}  # fmt: skip


@pytest.mark.parametrize("merged", [False, True])
def test_html_report_reads_every_deal_and_matches_its_totals(merged: bool) -> None:
    result = read_mt5_report(_html(merged=merged), utc_offset=OFFSET)
    assert result.problems == ()
    assert (result.login, result.currency, result.server) == (51234567, "USD", "Broker-Live")
    assert [d.ticket for d in result.deals] == [1001, 1002, 1003, 1004]
    assert _money_totals(result) == EXPECTED
    deposit, opening, closing, other = result.deals
    assert deposit.action is DealAction.BALANCE
    assert deposit.profit.amount == Decimal("3000000.00")
    assert (opening.action, opening.entry) == (DealAction.BUY, DealEntry.IN)
    assert closing.entry is DealEntry.OUT
    assert closing.server == "Broker-Live"
    assert closing.time.hour == 9
    assert closing.volume == Decimal(1)
    # Positions: the opening order's ticket; the close links to the one open EURUSD buy.
    assert (opening.position_id, closing.position_id, other.position_id) == (2001, 2001, 2003)
    assert result.unknown_positions == ()
    if merged:
        assert closing.commission.amount == Decimal("-8.00")
        assert closing.fee.amount == 0
    else:
        assert closing.fee.amount == Decimal("-1.00")


def test_xlsx_workbook_reads_the_same_deals(tmp_path: Path) -> None:
    path = tmp_path / "ReportHistory.xlsx"
    path.write_bytes(_xlsx())
    result = read_mt5_report(path, server="Override-1", utc_offset=OFFSET)
    assert result.problems == ()
    assert len(result.deals) == 4
    assert _money_totals(result) == EXPECTED
    assert {d.server for d in result.deals} == {"Override-1"}


def test_a_truncated_workbook_is_one_problem() -> None:
    result = read_mt5_report(_xlsx()[:700], utc_offset=OFFSET)
    assert result.deals == ()
    assert len(result.problems) == 1
    assert "workbook" in result.problems[0].reason


def test_a_report_without_deals_imports_nothing() -> None:
    result = read_mt5_report(_html(deals=False), utc_offset=OFFSET)
    assert result.deals == ()
    assert [p.reason for p in result.problems] == ["the report has no Deals section"]


def test_a_disagreeing_totals_row_imports_nothing() -> None:
    result = read_mt5_report(_html(totals={**TOTALS, "Swap": "-3.50"}), utc_offset=OFFSET)
    assert result.deals == ()
    assert len(result.problems) == 1
    assert "Swap disagrees" in result.problems[0].reason


def test_wrong_encoding_is_a_problem_not_an_exception() -> None:
    data = "\ufeff".encode("utf-32-le") + "<table></table>".encode("utf-32-le")
    result = read_mt5_report(data, utc_offset=OFFSET)
    assert result.deals == ()
    assert "UTF-32" in result.problems[0].reason
    broken = read_mt5_report(b"<table>\n<tr>\xff\xfe\xfd</tr>", utc_offset=OFFSET)
    assert broken.deals == ()
    assert broken.problems[0].row == 2


def test_a_bad_row_is_reported_with_its_line_and_the_totals_still_checked() -> None:
    text = _html().decode("utf-16")
    bad = text.replace("<td>sell</td><td>in</td>", "<td>sell</td><td>sideways</td>")
    result = read_mt5_report(bad.encode("utf-8"), utc_offset=OFFSET)
    assert [d.ticket for d in result.deals] == [1001, 1002, 1003]
    (problem,) = result.problems
    line = next(i for i, t in enumerate(bad.splitlines(), 1) if "sideways" in t)
    assert problem.row == line
    assert "direction" in problem.reason


def test_wrong_arguments_raise_typed_errors() -> None:
    with pytest.raises(ValidationError):
        read_mt5_report("text", utc_offset=OFFSET)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        read_mt5_report(b"", utc_offset=timedelta(days=1))


def test_a_close_with_two_open_positions_leaves_its_position_unknown() -> None:
    text = _html().decode("utf-16")
    # The GBPUSD sell becomes a second EURUSD opening buy, before the close: ambiguous.
    text = text.replace("<td>1003</td>", "<td>1005</td>").replace(
        "<td>2024.01.04 12:00:00</td><td>1004</td><td>GBPUSD</td><td>sell</td>",
        "<td>2024.01.04 12:00:00</td><td>1004</td><td>EURUSD</td><td>buy</td>",
    )
    lines = text.splitlines()
    close = next(i for i, t in enumerate(lines) if "<td>1005</td>" in t)
    other = next(i for i, t in enumerate(lines) if "<td>1004</td>" in t)
    lines[close], lines[other] = lines[other], lines[close]
    result = read_mt5_report("\n".join(lines).encode("utf-8"), utc_offset=OFFSET)
    assert result.problems == ()
    assert result.unknown_positions == (1005,)
    assert {d.ticket: d.position_id for d in result.deals}[1005] == 0


def test_a_table_without_its_totals_row_imports_nothing() -> None:
    text = _html().decode("utf-16")
    text = "\n".join(t for t in text.splitlines() if 'colspan="8"></td>' not in t)
    result = read_mt5_report(text.encode("utf-8"), utc_offset=OFFSET)
    assert result.deals == ()
    assert [p.reason for p in result.problems] == ["the Deals table has no totals row"]
