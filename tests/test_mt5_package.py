"""Deals from the MetaTrader5 Python package (records and their pandas CSV dump), and the
decoding every trading reader shares."""

from __future__ import annotations

import codecs
import csv
import io
import math
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.trading._encoding import UndecodableTextError, decode_text
from fxcrm_core.trading.deal import Deal, DealAction, DealEntry, UnknownServerResponseError
from fxcrm_core.trading.mt5_csv import ImportProblem
from fxcrm_core.trading.mt5_package import (
    PACKAGE_FIELDS,
    deal_from_mt5_package,
    read_mt5_package_csv,
)

EET = timedelta(hours=2)
LOGIN = 51234
BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_mt5_import.py"


class TradeDeal(NamedTuple):
    """The package's record type, as ``history_deals_get`` returns it (same fields, order)."""

    ticket: int
    order: int
    time: int
    time_msc: int
    type: int
    entry: int
    magic: int
    position_id: int
    reason: int
    volume: float
    price: float
    commission: float
    swap: float
    profit: float
    fee: float
    symbol: str
    comment: str
    external_id: str


def cell(value: object) -> str:
    # pandas writes floats by repr, ints as digits, None/NaN as empty
    return repr(value) if isinstance(value, float) else "" if value is None else str(value)


def pandas_dump(records: Sequence[tuple[Any, ...]]) -> str:
    """What ``pandas.DataFrame([d._asdict() for d in deals]).to_csv()`` writes on Windows (it quotes
    through the csv module, minimally)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # Windows, where the package runs
    writer.writerow(["", *PACKAGE_FIELDS])
    writer.writerows([str(n), *map(cell, rec)] for n, rec in enumerate(records))
    return out.getvalue()


T = 1_772_446_215  # 2026-03-02 10:10:15 server time
RECORDS = [
    # ticket order time time_msc type entry magic position reason volume price
    #   commission swap profit fee symbol comment external_id
    TradeDeal(1001, 0, T, T * 1000 + 5, 2, 0, 0, 0, 0, 0.0, 0.0,
              0.0, 0.0, 5000.0, 0.0, "", "deposit", ""),
    TradeDeal(1002, 2002, T + 60, (T + 60) * 1000 + 250, 0, 0, 123, 3002, 3, 0.30000000000000004,
              1.0850000000000002, -1.3599999999999999, 0.0, 0.0, 0.0, "EURUSD", "", ""),
    TradeDeal(1003, 2003, T + 3600, (T + 3600) * 1000, 1, 1, 123, 3002, 3, 0.3, 1.0875,
              -1.3599999999999999, -0.42000000000000004, 75.00000000000001, -0.1, "EURUSD",
              "tp, hit", "x-9"),
    TradeDeal(1004, 2004, T + 7200, (T + 7200) * 1000, 0, 0, 0, 3004, 0, 1.0, 2650.55,
              -7.0, 0.0, 0.0, 0.0, "XAUUSD", "", ""),
]  # fmt: skip


def write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "deals.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def read(source: str | bytes | Path, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "login": LOGIN,
        "server": "mt5-live",
        "currency": "USD",
        "utc_offset": EET,
    }
    kwargs.update(overrides)
    return read_mt5_package_csv(source, **kwargs)


def test_a_pandas_dump_with_an_index_column_floats_codes_and_a_bad_row(tmp_path: Path) -> None:
    text = pandas_dump(RECORDS)
    lines = text.splitlines()
    # a bad row in the middle: an unknown deal type code (99) on line 4
    lines.insert(3, "9,1999,0,1772446215,1772446215000,99,0,0,0,0,0.1,1.1,0.0,0.0,0.0,0.0,X,,")
    path = write(tmp_path, "\n".join(lines) + "\n")
    result = read(path)
    assert [p.row for p in result.problems] == [4]
    assert result.problems[0].reason == "unknown deal type code"
    assert [d.ticket for d in result.deals] == [1001, 1002, 1003, 1004]
    balance, opening, closing, gold = result.deals
    assert (balance.action, balance.symbol, balance.volume) == (DealAction.BALANCE, "", 0)
    assert balance.profit.amount == Decimal("5000.00")
    assert balance.comment == "deposit"
    assert (opening.action, opening.entry) == (DealAction.BUY, DealEntry.IN)
    assert (closing.action, closing.entry) == (DealAction.SELL, DealEntry.OUT)
    assert opening.volume == Decimal("0.3")
    assert opening.price == Decimal("1.085")
    assert closing.comment == "tp, hit"
    assert closing.position_id == 3002
    assert gold.price == Decimal("2650.55")
    assert gold.volume == 1
    assert all(d.login == LOGIN and d.server == "mt5-live" for d in result.deals)
    # totals: the floats' noise is gone, the currency's cents remain
    assert sum(d.commission.amount for d in result.deals) == Decimal("-9.72")
    assert sum(d.swap.amount for d in result.deals) == Decimal("-0.42")
    assert sum(d.fee.amount for d in result.deals) == Decimal("-0.10")
    assert sum(d.profit.amount for d in result.deals) == Decimal("5075.00")
    # time_msc (server time, ms) preferred, turned to UTC with the server's offset
    assert opening.time == datetime(2026, 3, 2, 8, 11, 15, 250_000, tzinfo=UTC)
    assert opening.server_offset == EET


def test_importing_the_same_file_twice_gives_the_same_deals_and_keys(tmp_path: Path) -> None:
    path = write(tmp_path, pandas_dump(RECORDS))
    first, second = read(path), read(path)
    assert first.deals == second.deals
    assert [d.key for d in first.deals] == [f"mt5-live:{t}" for t in (1001, 1002, 1003, 1004)]


def test_a_record_and_its_dump_row_give_the_same_deal() -> None:
    (from_csv,) = read(pandas_dump(RECORDS[2:3])).deals
    as_tuple = deal_from_mt5_package(
        RECORDS[2], login=LOGIN, server="mt5-live", currency="USD", utc_offset=EET
    )
    as_mapping = Deal.from_mt5_package(
        RECORDS[2]._asdict(), login=LOGIN, server="mt5-live", currency="USD", utc_offset=EET
    )
    assert from_csv == as_tuple == as_mapping
    assert as_tuple.profit.amount == Decimal("75.00")
    assert as_tuple.commission.amount == Decimal("-1.36")


def test_money_is_rounded_half_even_at_the_currency_minor_units() -> None:
    def profit(value: float, currency: str = "USD") -> Decimal:
        record = RECORDS[3]._replace(profit=value)
        deal = deal_from_mt5_package(
            record, login=LOGIN, server="s", currency=currency, utc_offset=EET
        )
        return deal.profit.amount

    assert profit(0.125) == Decimal("0.12")  # repr 0.125: half to even
    assert profit(0.375) == Decimal("0.38")
    assert profit(1234.5, "JPY") == Decimal("1234")
    assert profit(1.0005, "KWD") == Decimal("1.000")


def test_time_alone_time_msc_alone_and_a_disagreement() -> None:
    fields = RECORDS[1]._asdict()
    only_secs = {k: v for k, v in fields.items() if k != "time_msc"}
    only_msc = {k: v for k, v in fields.items() if k != "time"}
    kw: dict[str, Any] = {"login": 1, "server": "s", "currency": "USD", "utc_offset": EET}
    assert deal_from_mt5_package(only_secs, **kw).time.microsecond == 0
    assert deal_from_mt5_package(only_msc, **kw).time.microsecond == 250_000
    with pytest.raises(UnknownServerResponseError, match="time and time_msc disagree"):
        deal_from_mt5_package({**fields, "time": T}, **kw)


def test_bad_rows_are_problems_with_their_line_and_never_echo_the_value() -> None:
    header, good = pandas_dump(RECORDS[1:2]).splitlines()
    rows = [
        header,
        good,
        good.replace("0.30000000000000004", "secret@example.com"),  # line 3: volume
        good.replace(",1002,", ",1003,").replace(",0,0,123,", ",0,7,123,"),  # line 4: entry 7
        good,  # line 5: the same ticket again
        good.replace(",1002,", ",1004,").replace("EURUSD,,", "EURUSD,"),  # line 6: short
        good.replace(",1002,", ",1005,").replace("1.0850000000000002", "nan"),  # line 7
        good.replace(",1002,", ",1006,"),  # line 8: fine
    ]
    result = read("\n".join(rows) + "\n")
    assert [d.ticket for d in result.deals] == [1002, 1006]
    reasons = {p.row: p.reason for p in result.problems}
    assert set(reasons) == {3, 4, 5, 6, 7}
    assert "volume" in reasons[3]
    assert "secret" not in reasons[3]
    assert reasons[4] == "unknown deal entry code"
    assert reasons[5] == "the same deal ticket appears twice"
    assert reasons[6] == "the row has 18 fields, the header 19"
    assert "price" in reasons[7]


def test_a_header_without_the_needed_fields_imports_nothing() -> None:
    result = read(",ticket,time,type\n0,1,2,0\n")
    assert result.deals == ()
    assert len(result.problems) == 1
    assert result.problems[0].row == 1
    assert "missing columns: entry, volume, price" in result.problems[0].reason


def test_wrong_arguments_are_validation_errors() -> None:
    text = pandas_dump(RECORDS)
    for bad in ({"login": True}, {"login": -1}, {"login": "1"}, {"server": ""}):
        with pytest.raises(ValidationError):
            read(text, **bad)
    with pytest.raises(ValidationError):
        read_mt5_package_csv(
            123,  # type: ignore[arg-type]
            login=1,
            server="s",
            currency="USD",
            utc_offset=EET,
        )
    with pytest.raises(ValidationError):
        deal_from_mt5_package((1, 2, 3), login=1, server="s", currency="USD", utc_offset=EET)
    with pytest.raises(ValidationError, match="cannot read"):
        read(Path("/nonexistent/deals.csv"))


# --- encodings --------------------------------------------------------------------------------

ENCODINGS = {
    "utf-8": b"",
    "utf-8-bom": codecs.BOM_UTF8,
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
}


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_every_encoding_reads_alike(tmp_path: Path, name: str) -> None:
    text = pandas_dump(RECORDS).replace("deposit", "dépôt 入金")
    codec = name.removesuffix("-bom")
    path = write(tmp_path, "", name=f"{name}.csv")
    path.write_bytes(ENCODINGS[name] + text.encode(codec))
    result = read(path)
    assert result.problems == ()
    assert result.deals == read(text).deals
    assert result.deals[0].comment == "dépôt 入金"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_read_when_the_bytes_leave_no_doubt(codec: str) -> None:
    text = pandas_dump(RECORDS)
    assert decode_text(text.encode(codec)) == text
    assert read(text.encode(codec)).deals == read(text).deals


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b",ticket\n0,1\ncaf\xe9\n", 3),  # Latin-1, not UTF-8
        (codecs.BOM_UTF32_LE + "x".encode("utf-32-le"), 1),  # UTF-32
        (b"a\x00bc\x00\x00d", 1),  # NULs that are not UTF-16's pattern
        (codecs.BOM_UTF16_LE + "ab\ncd".encode("utf-16-le") + b"\x00\xd8", 2),  # lone surrogate
        (codecs.BOM_UTF16_LE + "a\x00b".encode("utf-16-le"), 1),  # a NUL character
    ],
)
def test_undecodable_bytes_are_a_typed_problem(data: bytes, line: int) -> None:
    with pytest.raises(UndecodableTextError) as raised:
        decode_text(data)
    assert isinstance(raised.value, ValidationError)
    assert raised.value.line == line
    result = read(data)
    assert result.deals == ()
    assert result.problems == (ImportProblem(line, str(raised.value)),)
    assert "\\x" not in str(raised.value)
    assert "caf" not in str(raised.value)


def test_decode_text_strips_a_bom_and_refuses_what_is_not_bytes() -> None:
    assert decode_text(codecs.BOM_UTF8 + b"x") == "x"
    assert decode_text(codecs.BOM_UTF16_BE + "x".encode("utf-16-be")) == "x"
    assert decode_text(b"") == ""
    with pytest.raises(ValidationError):
        decode_text("x")  # type: ignore[arg-type]


# --- the law: record -> deal -> back to the record's fields -------------------------------------


def noisy(value: Decimal, nudge: int) -> float:
    """The float a terminal would hand for ``value``, with ``nudge`` ulps of noise."""
    number = float(value)
    for _ in range(abs(nudge)):
        number = math.nextafter(number, math.inf if nudge > 0 else -math.inf)
    return number


def cents(limit: int = 10**11) -> st.SearchStrategy[Decimal]:
    return st.integers(-limit, limit).map(lambda n: Decimal(n).scaleb(-2))


@given(
    ticket=st.integers(1, 2**63),
    order=st.integers(0, 2**63),
    position_id=st.integers(0, 2**63),
    time_msc=st.integers(0, 32_503_680_000_000),  # to 3000-01-01
    code=st.sampled_from(sorted(DealAction)[:18]),
    entry=st.sampled_from(sorted(DealEntry)),
    volume=st.integers(0, 10**10).map(lambda n: Decimal(n).scaleb(-8)),
    price=st.integers(0, 10**11).map(lambda n: Decimal(n).scaleb(-5)),
    money=st.tuples(cents(), cents(), cents(), cents()),
    nudges=st.lists(st.integers(-2, 2), min_size=6, max_size=6),
    symbol=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
    comment=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=32),
    offset_minutes=st.integers(-23 * 60, 23 * 60),
)
@example(  # the float: 1.3599999999999999 is 1.36 less one ulp
    ticket=1,
    order=0,
    position_id=0,
    time_msc=0,
    code=DealAction.BUY,
    entry=DealEntry.IN,
    volume=Decimal("0.3"),
    price=Decimal("1.36"),
    money=(Decimal("-1.36"), Decimal(0), Decimal(0), Decimal(0)),
    nudges=[1, -1, -1, 0, 0, 0],
    symbol="EURUSD",
    comment="",
    offset_minutes=120,
)
def test_a_record_to_a_deal_and_back_loses_nothing_but_float_noise(
    ticket: int,
    order: int,
    position_id: int,
    time_msc: int,
    code: DealAction,
    entry: DealEntry,
    volume: Decimal,
    price: Decimal,
    money: tuple[Decimal, Decimal, Decimal, Decimal],
    nudges: list[int],
    symbol: str,
    comment: str,
    offset_minutes: int,
) -> None:
    commission, swap, profit, fee = money
    record = TradeDeal(
        ticket, order, time_msc // 1000, time_msc, int(code), int(entry), 7, position_id, 3,
        noisy(volume, nudges[0]), noisy(price, nudges[1]), noisy(commission, nudges[2]),
        noisy(swap, nudges[3]), noisy(profit, nudges[4]), noisy(fee, nudges[5]), symbol,
        comment, "ext",
    )  # fmt: skip
    offset = timedelta(minutes=offset_minutes)
    deal = Deal.from_mt5_package(record, login=LOGIN, server="s", currency="USD", utc_offset=offset)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    back = {
        "ticket": deal.ticket,
        "order": deal.order,
        "time_msc": (deal.time + deal.server_offset - epoch) // timedelta(milliseconds=1),
        "type": int(deal.action),
        "entry": int(deal.entry),
        "position_id": deal.position_id,
        "volume": deal.volume,
        "price": deal.price,
        "commission": deal.commission.amount,
        "swap": deal.swap.amount,
        "profit": deal.profit.amount,
        "fee": deal.fee.amount,
        "symbol": deal.symbol,
        "comment": deal.comment,
    }
    assert back == {
        "ticket": ticket,
        "order": order,
        "time_msc": time_msc,
        "type": int(code),
        "entry": int(entry),
        "position_id": position_id,
        "volume": volume,
        "price": price,
        "commission": commission,
        "swap": swap,
        "profit": profit,
        "fee": fee,
        "symbol": symbol,
        "comment": comment,
    }
    assert deal.time.tzinfo is UTC
    assert deal.login == LOGIN
    # and the pandas dump of the same record reads to the very same deal
    dumped = read_mt5_package_csv(
        pandas_dump([record]), login=LOGIN, server="s", currency="USD", utc_offset=offset
    )
    assert dumped.problems == ()
    assert dumped.deals == (deal,)


def test_errors_are_fxcrm_errors() -> None:
    assert issubclass(UndecodableTextError, FxCrmError)
    with pytest.raises(FxCrmError):
        deal_from_mt5_package({"ticket": 1}, login=1, server="s", currency="USD", utc_offset=EET)


def test_the_benchmark_runs_quick() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deals: 500" in done.stdout
    assert "import vs csv.reader reading the same file" in done.stdout
