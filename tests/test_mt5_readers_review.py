"""Review of the MT5 history readers as a broker's engineer and an attacker would read them."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from decimal import Decimal

import openpyxl
import pytest

from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.trading import mt5_report
from fxcrm_core.trading._encoding import UndecodableTextError, decode_text
from fxcrm_core.trading.deal import Deal
from fxcrm_core.trading.mt5_package import deal_from_mt5_package, read_mt5_package_csv
from fxcrm_core.trading.mt5_report import read_mt5_report

OFFSET = timedelta(hours=2)
RECORD: dict[str, object] = {
    "ticket": 1, "order": 2, "time": 1_700_000_000, "time_msc": 1_700_000_000_123, "type": 0,
    "entry": 0, "magic": 0, "position_id": 2, "reason": 0, "volume": 1.0, "price": 1.1,
    "commission": -7.0, "swap": 0.0, "profit": 0.0, "fee": 0.0, "symbol": "EURUSD",
    "comment": "", "external_id": "",
}  # fmt: skip
HEADER = ["Time", "Deal", "Symbol", "Type", "Direction", "Volume", "Price", "Order",
          "Commission", "Fee", "Swap", "Profit", "Balance", "Comment"]  # fmt: skip
DEALS: list[list[object]] = [
    ["2024.01.02 09:00:00", 1001, "", "balance", "", "", "", "", 0, 0, 0, 1000, 1000, ""],
    ["2024.01.02 10:00:00", 1002, "EURUSD", "buy", "in", 1, 1.1, 2001, -7, 0, 0, 0, 993, ""],
    ["2024.01.03 11:30:00", 1003, "EURUSD", "sell", "out", 1, 1.101, 2002, -7, 0, 0, 100, 1086,
     ""],
]  # fmt: skip
TOTALS: list[object] = [None] * 8 + [-14, 0, 0, 1100, 1086]


def _deal(record: dict[str, object], currency: str = "USD") -> Deal:
    return deal_from_mt5_package(
        record, login=7, server="Broker-Live", currency=currency, utc_offset=OFFSET
    )


def _workbook(deals: list[list[object]], totals: list[object]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Trade History Report"])
    sheet.append(["Account:", None, None, "51234567 (USD, Broker-Live, real, Hedge)"])
    sheet.append(["Deals"])
    sheet.append(HEADER)
    for row in deals:
        sheet.append(row)
    sheet.append(totals)
    sheet.append(["Summary"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _html(deals: list[list[str]], totals: list[str]) -> bytes:
    def row(cells: list[str]) -> str:
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>\n"

    text = (
        "<html><body><table>\n"
        '<tr><th colspan="3">Account:</th><th>51234567 (USD, Broker-Live, real, Hedge)</th></tr>\n'
        '<tr><th colspan="14">Deals</th></tr>\n'
        + row(HEADER)
        + "".join(row(d) for d in deals)
        + '<tr><td colspan="8"></td>'
        + "".join(f"<td>{t}</td>" for t in totals)
        + "<td></td></tr>\n"
        '<tr><th colspan="14">Summary</th></tr>\n</table></body></html>\n'
    )
    return text.encode("utf-8")


HTML_DEALS = [[str(c) for c in d] for d in DEALS]
HTML_TOTALS = ["-14.00", "0.00", "0.00", "1100.00", "1086.00"]


def test_the_generated_reports_read_cleanly() -> None:
    """The fixtures below are sound: every other test changes one thing in them."""
    for data in (_workbook(DEALS, TOTALS), _html(HTML_DEALS, HTML_TOTALS)):
        result = read_mt5_report(data, utc_offset=OFFSET)
        assert result.problems == ()
        assert [d.ticket for d in result.deals] == [1001, 1002, 1003]


# Finding: Decimal's context leaked decimal.Overflow (an ArithmeticError, not an FxCrmError)
# out of both readers for a number like 1e999999999: abs() and += round in the context.
def test_a_huge_exponent_in_a_package_record_is_a_typed_error() -> None:
    with pytest.raises(FxCrmError):
        _deal({**RECORD, "profit": "1e999999999"})


def test_a_huge_exponent_in_a_package_dump_is_a_row_problem() -> None:
    names = list(RECORD)
    good = ",".join(str(RECORD[n]) for n in names)
    bad = good.replace("1.1,-7.0", "1.1,1e999999999", 1)
    text = "\n".join([",".join(names), bad, good])
    result = read_mt5_package_csv(
        text, login=7, server="Broker-Live", currency="USD", utc_offset=OFFSET
    )
    assert len(result.deals) == 1
    assert [p.row for p in result.problems] == [2]


def test_a_huge_exponent_in_a_report_cell_is_a_problem_not_an_exception() -> None:
    deals = [list(d) for d in HTML_DEALS]
    deals[2][11] = "1e999999999"
    result = read_mt5_report(_html(deals, HTML_TOTALS), utc_offset=OFFSET)
    assert result.deals == ()
    assert any("not a number" in p.reason for p in result.problems)


# Finding: a row that failed half-way through its money cells had already added its commission
# to the running sums: the totals check compared against a sum no row set holds.
def test_a_row_failing_half_way_adds_none_of_its_money_to_the_totals_check() -> None:
    deals = [list(d) for d in HTML_DEALS]
    deals[2][11] = "abc"  # its commission (-7) parses, its profit does not
    totals = ["-14.00", "0.00", "0.00", "1000.00", "1086.00"]  # -14 counts the bad row's -7
    result = read_mt5_report(_html(deals, totals), utc_offset=OFFSET)
    assert result.deals == ()
    assert any("Commission disagrees" in p.reason for p in result.problems)


# Finding: Decimal reads "1_000" and Arabic-Indic digits; no MT5 file writes those, and a
# ticket "١٢" silently became 12.
@pytest.mark.parametrize("field", ["ticket", "profit", "volume"])
@pytest.mark.parametrize("text", ["\u0661\u0662", "1_000"])
def test_package_numbers_are_ascii_digits_only(field: str, text: str) -> None:
    with pytest.raises(FxCrmError):
        _deal({**RECORD, field: text})


def test_report_money_is_ascii_digits_only() -> None:
    deals = [list(d) for d in HTML_DEALS]
    deals[2][11] = "1_00"
    result = read_mt5_report(_html(deals, HTML_TOTALS), utc_offset=OFFSET)
    assert result.deals == ()
    assert any(p.reason.startswith("a money or price cell") for p in result.problems)


# Finding: the workbook was loaded with data_only=True, so a formula cell read as its cached
# value, which any writer sets at will (or as nothing, i.e. 0): a forged profit and a forged
# totals row agreed. A formula is now read as its text, so its row is a problem.
def test_a_formula_in_a_workbook_money_cell_is_that_rows_problem() -> None:
    deals = [list(d) for d in DEALS]
    deals[2][11] = "=50+50"
    totals = list(TOTALS)
    totals[11] = "=SUM(L5:L7)"
    result = read_mt5_report(_workbook(deals, totals), utc_offset=OFFSET)
    assert result.deals == ()
    assert 7 in [p.row for p in result.problems]  # sheet row 7 holds deal 1003


# Finding: nothing capped what a workbook unpacks to; a zip bomb was inflated whole by openpyxl.
def test_a_workbook_unpacking_past_the_cap_is_one_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _workbook(DEALS, TOTALS)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        unpacked = sum(m.file_size for m in archive.infolist())
    monkeypatch.setattr(mt5_report, "_MAX_XLSX_BYTES", unpacked - 1)
    result = read_mt5_report(data, utc_offset=OFFSET)
    assert result.deals == ()
    (problem,) = result.problems
    assert "unpacks to more" in problem.reason
    monkeypatch.setattr(mt5_report, "_MAX_XLSX_BYTES", unpacked)
    assert len(read_mt5_report(data, utc_offset=OFFSET).deals) == 3


def test_a_real_zip_bomb_is_refused_before_it_is_inflated() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("xl/worksheets/sheet1.xml", "w") as sheet:
            chunk = b" " * 2**20
            for _ in range(300):  # 300 MiB of spaces, a few hundred KiB zipped
                sheet.write(chunk)
    data = out.getvalue()
    assert len(data) < 2**20
    result = read_mt5_report(data, utc_offset=OFFSET)
    assert result.deals == ()
    assert "unpacks to more" in result.problems[0].reason


# Checked and sound (kept as regressions): these hostile inputs already gave typed problems.
def test_hostile_html_gives_typed_problems() -> None:
    nested = ("<div>" * 50_000 + "x").encode()
    colspan = b'<table><tr><td colspan="99999999999999999999999">x</td></tr></table>'
    for data in (nested, colspan, b"", '<meta charset="windows-1251">\u0418'.encode("cp1251")):
        result = read_mt5_report(data, utc_offset=OFFSET)
        assert result.deals == ()
        assert len(result.problems) == 1


def test_odd_length_utf16_without_a_bom_is_undecodable() -> None:
    with pytest.raises(UndecodableTextError):
        decode_text("ticket,1\n".encode("utf-16-le") + b"a")


@pytest.mark.parametrize(
    "change",
    [
        {"time_msc": 1_699_999_999_999},  # 1 ms before the stated second
        {"ticket": -1},
        {"ticket": 2**64},
        {"volume": 1e14},
        {"time": -1, "time_msc": None},
        {"time": None, "time_msc": 2**64 - 1},
        {"profit": float("nan")},
        {"profit": "-Infinity"},
        {"profit": "1e400"},
    ],
)
def test_out_of_range_package_fields_are_typed_errors(change: dict[str, object]) -> None:
    with pytest.raises(FxCrmError):
        _deal({**RECORD, **change})


def test_money_rounding_at_the_edge_is_half_even_per_currency() -> None:
    def profit(value: float, currency: str) -> Decimal:
        return _deal({**RECORD, "profit": value}, currency).profit.amount

    assert profit(0.005, "USD") == Decimal("0.00")
    assert profit(0.015, "USD") == Decimal("0.02")
    assert profit(123.5, "JPY") == Decimal("124")
    assert profit(1.2345, "KWD") == Decimal("1.234")


def test_bad_report_rows_never_echo_what_the_cell_held() -> None:
    deals = [list(d) for d in HTML_DEALS]
    deals[2][0] = "John Smith"
    deals[1][5] = "Jane Roe"
    result = read_mt5_report(_html(deals, HTML_TOTALS), utc_offset=OFFSET)
    assert result.problems
    assert not any("John" in p.reason or "Jane" in p.reason for p in result.problems)


# Finding: the report kept a price's trailing zeros ("1.10000" in HTML, 1.1 in a workbook or from
# the package): the same deal read from two files had two contents under one key.
def test_the_same_deal_from_html_a_workbook_and_the_package_has_one_price() -> None:
    deals = [list(d) for d in HTML_DEALS]
    deals[1][6] = "1.10000"
    html = read_mt5_report(_html(deals, HTML_TOTALS), utc_offset=OFFSET).deals
    xlsx = read_mt5_report(_workbook(DEALS, TOTALS), utc_offset=OFFSET).deals
    package = _deal({**RECORD, "price": 1.1})
    assert str(html[1].price) == str(xlsx[1].price) == str(package.price) == "1.1"
    assert [str(d.price) for d in html] == [str(d.price) for d in xlsx]
