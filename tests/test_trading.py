"""Deals with MT5's semantics, the simulated server (contract, determinism, consistency), and
the MT5 export importer."""

from __future__ import annotations

import codecs
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.kernel import (
    FixedClock,
    FxCrmError,
    IdempotencyConflictError,
    Money,
    PrecisionError,
    ValidationError,
)
from fxcrm_core.testing import TradingServerContract
from fxcrm_core.trading import (
    BalanceOperation,
    Deal,
    DealAction,
    DealChange,
    DealEntry,
    NewTradingAccount,
    SimulatedTradingServer,
    TradingServer,
    TradingServerError,
    UnknownServerResponseError,
    VolumeUnits,
    mt5_double,
    read_mt5_deals,
)

EET = timedelta(hours=2)  # a typical MT5 server zone (GMT+2 in winter)
T0 = datetime(2026, 3, 9, 8, tzinfo=UTC)


class TestSimulatedServer(TradingServerContract):
    def make_server(self) -> TradingServer:
        return SimulatedTradingServer(seed=1, clock=FixedClock(T0))


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Deal": 77,
        "Login": 500001,
        "Action": 0,
        "Entry": 0,
        "Symbol": "EURUSD",
        "Volume": 10_000,
        "VolumeClosed": 0,
        "Price": "1.08512",
        "PositionID": 77,
        "Order": 12,
        "Commission": "-3.50",
        "Fee": "0",
        "Storage": "0",
        "Profit": "0",
        "Time": 1_773_050_400,  # 2026-03-09 10:00:00 server time
    }
    base.update(overrides)
    return base


def deal(**overrides: Any) -> Deal:
    return Deal.from_mt5(record(**overrides), server="mt5-live", currency="USD", utc_offset=EET)


@pytest.mark.parametrize("action", list(DealAction))
def test_every_mt5_action_maps(action: DealAction) -> None:
    d = deal(Action=int(action))
    assert d.action is action
    assert d.action.is_trade == (action in (DealAction.BUY, DealAction.SELL))
    assert d.action.moves_balance == (
        action not in (DealAction.BUY, DealAction.SELL)
        and action not in (DealAction.BUY_CANCELED, DealAction.SELL_CANCELED)
    )


def test_action_codes_are_mt5s() -> None:
    assert [int(a) for a in DealAction][:19] == list(range(19))
    assert (DealAction.BALANCE, DealAction.AGENT, DealAction.TAX) == (2, 18, 17)
    assert DealAction.AGENT.is_agent_commission
    assert DealAction.AGENT_MONTHLY.is_agent_commission
    assert not DealAction.COMMISSION.is_agent_commission


@pytest.mark.parametrize(
    ("code", "entry", "closes"),
    [
        (0, DealEntry.IN, False),
        (1, DealEntry.OUT, True),
        (2, DealEntry.INOUT, True),
        (3, DealEntry.OUT_BY, True),
    ],
)
def test_every_entry_maps(code: int, entry: DealEntry, closes: bool) -> None:
    d = deal(Entry=code)
    assert d.entry is entry
    assert d.entry.closes is closes


@pytest.mark.parametrize(
    ("fields", "units", "lots"),
    [
        ({"Volume": 10_000}, VolumeUnits.MT5, Decimal(1)),
        ({"Volume": 1}, VolumeUnits.MT5, Decimal("0.0001")),
        ({"Volume": 2_500, "VolumeClosed": 1_000}, VolumeUnits.MT5, Decimal("0.25")),
        ({"VolumeExt": 1}, VolumeUnits.MT5, Decimal("0.00000001")),
        ({"VolumeExt": 150_000_000}, VolumeUnits.MT5, Decimal("1.5")),
        ({"Volume": 10}, VolumeUnits.MT4, Decimal("0.1")),
    ],
)
def test_volume_units(fields: dict[str, int], units: VolumeUnits, lots: Decimal) -> None:
    d = Deal.from_mt5(
        record(**fields), server="s", currency="USD", utc_offset=EET, volume_units=units
    )
    assert d.volume == lots
    if "VolumeClosed" in fields:
        assert d.volume_closed == Decimal("0.1")


@given(st.integers(min_value=0, max_value=10**12))
def test_volume_conversion_is_exact(units: int) -> None:
    assert deal(Volume=units).volume * 10_000 == units
    assert deal(VolumeExt=units).volume * 100_000_000 == units


def test_server_time_becomes_utc_and_keeps_its_offset() -> None:
    d = deal(Time=1_773_050_400)  # 10:00 on the server, which runs at UTC+2
    assert d.time == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    assert d.server_time.hour == 10
    assert d.server_time.utcoffset() == EET
    assert deal(TimeMsc=1_773_050_400_123).time.microsecond == 123_000


def test_money_fields_are_exact_money_in_the_account_currency() -> None:
    d = deal(Commission="-3.50", Storage="-1.25", Profit="112.80", Fee="-0.10")
    assert (d.commission, d.swap, d.profit, d.fee) == (
        Money.of("-3.50", "USD"),
        Money.of("-1.25", "USD"),
        Money.of("112.80", "USD"),
        Money.of("-0.10", "USD"),
    )
    assert mt5_double(112.8, 2) == Decimal("112.80")
    assert mt5_double(0.1 + 0.2, 2) == Decimal("0.30")


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"Action": 99}, UnknownServerResponseError),
        ({"Action": "buy"}, UnknownServerResponseError),
        ({"Entry": 7}, UnknownServerResponseError),
        ({"Volume": -1}, UnknownServerResponseError),
        ({"Deal": "x"}, UnknownServerResponseError),
        ({"Profit": "1.005"}, PrecisionError),
        ({"Profit": 1.5}, TypeError),
        ({"Action": Decimal("Infinity")}, UnknownServerResponseError),
        ({"Action": 1.5}, UnknownServerResponseError),
        ({"Entry": None}, UnknownServerResponseError),
        ({"Deal": -1}, UnknownServerResponseError),
        ({"Deal": 2**64}, UnknownServerResponseError),
        ({"Login": "\u0661\u0662"}, UnknownServerResponseError),  # Arabic-Indic digits
        ({"Login": "1_000"}, UnknownServerResponseError),
        ({"Login": None}, UnknownServerResponseError),
        ({"Time": 10**30}, UnknownServerResponseError),
        ({"Time": -62_135_596_800}, UnknownServerResponseError),  # year 1, then minus 2 h
        ({"Time": 253_402_300_799}, UnknownServerResponseError),  # 9999-12-31, beyond UTC
        ({"TimeMsc": "1" * 5000}, UnknownServerResponseError),
        ({"Price": "1e999999"}, FxCrmError),
        ({"Price": "1e-40"}, UnknownServerResponseError),
        ({"Price": None}, TypeError),
        ({"Symbol": 7}, UnknownServerResponseError),
        ({"Symbol": "EUR\x00USD"}, UnknownServerResponseError),
        ({"Comment": ["x"]}, UnknownServerResponseError),
        ({"Profit": "1e999999"}, ValidationError),
        ({"Commission": Decimal("NaN")}, ValidationError),
    ],
)
def test_bad_server_data_is_a_typed_error(
    overrides: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        deal(**overrides)


def test_missing_fields_are_named() -> None:
    bad = record()
    del bad["Login"]
    with pytest.raises(UnknownServerResponseError, match="Login"):
        Deal.from_mt5(bad, server="s", currency="USD", utc_offset=EET)
    with pytest.raises(ValidationError):
        mt5_double(1, 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"record": None},
        {"record": [("Deal", 1)]},
        {"server": None},
        {"server": ""},
        {"currency": []},
        {"currency": 840},
        {"utc_offset": 7200},
        {"utc_offset": timedelta(days=2)},
        {"volume_units": 10_000},
    ],
)
def test_wrong_argument_types_of_from_mt5_are_validation_errors(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {
        "record": record(), "server": "s", "currency": "USD", "utc_offset": EET,
    }  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ValidationError):
        Deal.from_mt5(args.pop("record"), **args)


@pytest.mark.parametrize(
    ("value", "digits"),
    [
        (float("nan"), 2),
        (float("inf"), 2),
        (1e308, 2),
        (1.5, -1),
        (1.5, 99),
        (1.5, "2"),
        (1.5, True),
    ],
)
def test_mt5_double_refuses_what_is_not_money(value: float, digits: Any) -> None:
    with pytest.raises(ValidationError):
        mt5_double(value, digits)


# -- the simulated server -----------------------------------------------------------------------
def funded_server(seed: int = 3) -> SimulatedTradingServer:
    server = SimulatedTradingServer(seed=seed, clock=FixedClock(T0))
    for n in range(5):
        login = server.create_account(NewTradingAccount("retail\\usd", 100, "USD", f"c-{n}"))
        server.balance_operation(
            login,
            BalanceOperation.DEPOSIT,
            Money.of(10_000, "USD"),
            comment="d",
            idempotency_key=f"d{n}",
        )
    return server


def test_the_same_seed_plays_the_same_session() -> None:
    a, b = funded_server(), funded_server()
    a.simulate_trading(400)
    b.simulate_trading(400)
    assert a.deal_feed(limit=10_000) == b.deal_feed(limit=10_000)
    c = funded_server(seed=4)
    c.simulate_trading(400)
    assert c.deal_feed(limit=10_000) != a.deal_feed(limit=10_000)


def test_a_session_has_every_entry_kind_updates_deletes_and_equal_times() -> None:
    server = funded_server()
    server.simulate_trading(1500)
    feed = server.deal_feed(limit=100_000)
    entries = {i.deal.entry for i in feed if i.deal.action.is_trade}
    assert entries == set(DealEntry)
    changes = {i.change for i in feed}
    assert changes == set(DealChange)
    times = [i.deal.time for i in feed if i.change is DealChange.ADDED and i.deal.action.is_trade]
    assert len(times) > len(set(times))  # equal times exist: a timestamp cursor would skip deals


def test_negative_balance_protection_keeps_balances_at_or_above_zero() -> None:
    server = SimulatedTradingServer(seed=11, clock=FixedClock(T0))
    login = server.create_account(NewTradingAccount("retail\\usd", 100, "USD", "c-1"))
    server.balance_operation(
        login, BalanceOperation.DEPOSIT, Money.of(50, "USD"), comment="d", idempotency_key="d"
    )
    server.simulate_trading(400)
    feed = server.deal_feed(limit=100_000)
    assert any(i.deal.action is DealAction.SO_COMPENSATION for i in feed)
    assert not server.account_state(login).balance.is_negative()


def test_balances_equal_the_sum_of_the_live_deals() -> None:
    server = funded_server()
    server.simulate_trading(2000)
    live: dict[int, Deal] = {}
    for item in server.deal_feed(limit=100_000):
        if item.change is DealChange.DELETED:
            live.pop(item.deal.ticket)
        else:
            live[item.deal.ticket] = item.deal
    for login in {d.login for d in live.values()}:
        total = Money.zero("USD")
        for d in live.values():
            if d.login == login and d.action is not DealAction.CREDIT:
                total = total + d.profit + d.commission + d.swap + d.fee
        assert server.account_state(login).balance == total


# -- the MT5 export importer ----------------------------------------------------------------------
def sample_text() -> str:
    return (
        resources.files("fxcrm_core.trading")
        .joinpath("samples/mt5_deals_sample.csv")
        .read_text(encoding="utf-8")
    )


def test_the_sample_export_imports_every_action_and_entry() -> None:
    result = read_mt5_deals(sample_text(), server="mt5-live", currency="USD", utc_offset=EET)
    assert result.ok, result.problems
    assert {d.action for d in result.deals} == set(DealAction)
    assert {d.entry for d in result.deals} == set(DealEntry)
    first = result.deals[0]
    assert (first.ticket, first.action, first.profit) == (
        1001,
        DealAction.BALANCE,
        Money.of("5000", "USD"),
    )
    assert first.time == datetime(2026, 3, 9, 7, 0, tzinfo=UTC)
    assert first.server_time.tzinfo == timezone(EET)
    extended = next(d for d in result.deals if d.ticket == 1010)
    assert extended.volume == Decimal("0.00001")


def test_the_importer_reports_every_bad_row(tmp_path: Path) -> None:
    lines = sample_text().splitlines()
    lines[3] = lines[3].replace(",buy,", ",teleport,")
    lines[5] = lines[5].replace("2026.03.09", "2026.02.30")
    lines[7] = lines[7].replace(",0.60,", ",0.123456789,")
    lines.append(lines[1])  # the same ticket twice
    path = tmp_path / "export.csv"
    path.write_text("\n".join(lines), encoding="utf-8")
    result = read_mt5_deals(path, server="s", currency="USD", utc_offset=EET)
    assert [(p.row, p.reason.split(" ")[0]) for p in result.problems] == [
        (4, "unknown"),
        (6, "time"),
        (8, "volume"),
        (len(lines), "the"),
    ]
    assert len(result.deals) == len(lines) - 1 - 4


def test_missing_columns_are_one_problem() -> None:
    result = read_mt5_deals("Time,Deal\n", server="s", currency="USD", utc_offset=EET)
    assert not result.ok
    assert "Login" in result.problems[0].reason


# -- hostile exports: every bad row is a row problem, the rest is imported -----------------------
def _with_row(row: str, *, at: int = 2) -> tuple[str, int]:
    """The sample with ``row`` inserted as line ``at``; returns the text and its deal count."""
    lines = sample_text().splitlines()
    good = len(lines) - 1
    lines.insert(at - 1, row)
    return "\n".join(lines) + "\n", good


GOOD_ROW = "2026.03.09 09:05:12.250,9001,500001,buy,in,EURUSD,1.00,1.08512,1,9001,-3.50,0,0,0,x"


def _field(index: int, value: str) -> str:
    fields = GOOD_ROW.split(",")
    fields[index] = value
    return ",".join(fields)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("2026.03.09 10:00,9001", "fields"),  # a short row
        (GOOD_ROW + ",extra", "fields"),  # an unquoted comma shifted the columns
        (_field(6, "nan"), "volume"),
        (_field(6, "inf"), "volume"),
        (_field(6, "-Infinity"), "volume"),
        (_field(6, "sNaN"), "volume"),
        (_field(6, "1e999999"), "volume"),
        (_field(6, "1e-1000000000"), "volume"),
        (_field(6, "1." + "0" * 70 + "1"), "volume"),
        (_field(0, "0001.01.01 00:00"), "time"),  # year 1 with the server's +2h offset
        (_field(0, "9999.12.31 23:59"), "time"),
        (_field(1, "9" * 5000), "Deal"),
        (_field(1, "-5"), "Deal"),
        (_field(1, "\uff11\uff12"), "Deal"),  # full-width digits are not MT5's
        (_field(7, "1e999999"), "Price"),
        (_field(7, "nan"), "Price"),
        (_field(13, "1e999999"), ""),  # the kernel's reason
        (GOOD_ROW.replace(",x", ',"x' + "y" * 200_000 + '"'), "field"),  # a huge field
        (GOOD_ROW.replace(",x", ',"x"y'), "CSV"),  # text after a closing quote
        (GOOD_ROW.replace("EURUSD", '"EUR"USD'), "CSV"),
    ],
)
def test_a_bad_row_is_a_row_problem_and_the_rest_is_imported(row: str, reason: str) -> None:
    text, good = _with_row(row, at=3)
    result = read_mt5_deals(text, server="s", currency="USD", utc_offset=EET)
    assert [p.row for p in result.problems] == [3], result.problems
    assert reason in result.problems[0].reason
    assert len(result.deals) == good


def test_quoted_line_breaks_stay_in_their_field_and_rows_count_lines() -> None:
    multi = GOOD_ROW.replace(",x", ',"two\r\nlines\u2028and more"')
    text, good = _with_row(multi, at=2)
    text = text.replace("\n2026.03.09 09:00:00.000,1002", "\n,,,\n2026.03.09 09:00:00.000,x1002")
    result = read_mt5_deals(text, server="s", currency="USD", utc_offset=EET)
    # The deal after the two-line row sits on line 5 (a blank-ish row of commas is skipped).
    assert [p.row for p in result.problems] == [6]
    assert next(d for d in result.deals if d.ticket == 9001).comment == "two\r\nlines\u2028and more"
    assert len(result.deals) == good


def test_a_line_break_in_an_unquoted_field_is_two_bad_rows_not_an_abort() -> None:
    text, good = _with_row(GOOD_ROW.replace("EURUSD", "EUR\rUSD"), at=2)
    result = read_mt5_deals(text, server="s", currency="USD", utc_offset=EET)
    assert [p.row for p in result.problems] == [2, 3]
    assert len(result.deals) == good


def test_an_unclosed_quote_is_one_problem() -> None:
    text = sample_text() + GOOD_ROW.replace(",x", ',"never closed') + "\n"
    result = read_mt5_deals(text, server="s", currency="USD", utc_offset=EET)
    assert [p.row for p in result.problems] == [len(sample_text().splitlines()) + 1]
    assert len(result.deals) == len(sample_text().splitlines()) - 1


@pytest.mark.parametrize(
    "encode",
    [
        lambda t: t.encode("utf-8"),
        lambda t: t.encode("utf-8-sig"),
        lambda t: t.encode("utf-16"),  # what MT5 terminals save: UTF-16 LE with a BOM
        lambda t: codecs.BOM_UTF16_BE + t.encode("utf-16-be"),
    ],
)
def test_exports_in_utf8_or_utf16_with_a_bom_are_read(
    encode: Callable[[str], bytes], tmp_path: Path
) -> None:
    text = sample_text().replace("Credit line", "Crédit 信用")
    path = tmp_path / "export.csv"
    path.write_bytes(encode(text))
    for source in (encode(text), path):
        result = read_mt5_deals(source, server="s", currency="USD", utc_offset=EET)
        assert result.ok, result.problems
        assert result.deals[1].comment == "Crédit 信用"
        assert len(result.deals) == len(text.splitlines()) - 1


@pytest.mark.parametrize(
    ("data", "row", "reason"),
    [
        # cp1252 on line 3: refused, not half-imported nor guessed
        ("\n".join([*sample_text().splitlines()[:2], "é,1"]).encode("cp1252"), 3, "UTF-8"),
        (sample_text().encode("utf-16-le"), 1, "byte-order mark"),  # UTF-16 without a BOM
        (codecs.BOM_UTF32_LE + sample_text().encode("utf-32-le"), 1, "UTF-32"),
        (codecs.BOM_UTF16_LE + b"T\x00i", 1, "UTF-16"),  # cut in the middle of a character
    ],
)
def test_other_encodings_are_refused_clearly(data: bytes, row: int, reason: str) -> None:
    result = read_mt5_deals(data, server="s", currency="USD", utc_offset=EET)
    assert result.deals == ()
    assert [p.row for p in result.problems] == [row]
    assert reason in result.problems[0].reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"source": None},
        {"source": 5},
        {"source": [b"Time,Deal"]},
        {"server": ""},
        {"server": 7},
        {"currency": []},
        {"currency": None},
        {"utc_offset": 2},
        {"utc_offset": timedelta(hours=24)},
        {"delimiter": ""},
        {"delimiter": ";;"},
        {"delimiter": '"'},
        {"delimiter": None},
    ],
)
def test_wrong_argument_types_are_validation_errors(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {
        "source": sample_text(), "server": "s", "currency": "USD", "utc_offset": EET,
    }  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ValidationError):
        read_mt5_deals(args.pop("source"), **args)


def test_duplicate_columns_are_refused() -> None:
    text = sample_text().replace("Comment", "Comment,Profit", 1)
    result = read_mt5_deals(text, server="s", currency="USD", utc_offset=EET)
    assert result.deals == ()
    assert "Profit" in result.problems[0].reason


# -- the simulated server kept in a file ----------------------------------------------------------
class TestFileBackedSimulatedServer(TradingServerContract):
    @pytest.fixture
    def server(self, tmp_path: Path) -> TradingServer:
        return SimulatedTradingServer(seed=1, clock=FixedClock(T0), state_path=tmp_path / "s.json")


def funded_file_server(path: Path, seed: int = 3) -> SimulatedTradingServer:
    server = SimulatedTradingServer(seed=seed, clock=FixedClock(T0), state_path=path)
    for n in range(5):
        login = server.create_account(NewTradingAccount("retail\\usd", 100, "USD", f"c-{n}"))
        server.balance_operation(
            login, BalanceOperation.DEPOSIT, Money.of(10_000, "USD"), comment="d",
            idempotency_key=f"d{n}",
        )  # fmt: skip
    return server


def test_processes_taking_turns_on_a_state_file_play_the_session_of_one(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    alone = funded_server()
    first = funded_file_server(path)
    first.simulate_trading(300)
    # A second object on the file (a restart): the file's state wins over its seed and logins.
    second = SimulatedTradingServer(seed=99, first_login=1, clock=FixedClock(T0), state_path=path)
    second.simulate_trading(300)
    first.simulate_trading(200)  # the first sees what the second did, and carries on
    login = second.create_account(NewTradingAccount("retail\\usd", 100, "USD", "c-9"))
    alone.simulate_trading(300)
    alone.simulate_trading(300)
    alone.simulate_trading(200)
    assert login == alone.create_account(NewTradingAccount("retail\\usd", 100, "USD", "c-9"))
    feed = alone.deal_feed(limit=100_000)
    assert first.deal_feed(limit=100_000) == second.deal_feed(limit=100_000) == feed
    assert {i.change for i in feed} == set(DealChange)  # updates and deletes survive the file
    for n in range(5):
        assert first.account_state(500_000 + n) == alone.account_state(500_000 + n)
    ticket = feed[-1].deal.ticket
    assert second.deal(ticket) == alone.deal(ticket)
    # Idempotency keys are kept too: a retry through the other object posts nothing.
    again = second.balance_operation(
        500_000, BalanceOperation.DEPOSIT, Money.of(10_000, "USD"), comment="d",
        idempotency_key="d0",
    )  # fmt: skip
    assert again == feed[0].deal.ticket
    assert len(first.deal_feed(limit=100_000)) == len(feed)


def test_a_refused_call_leaves_the_state_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    server = funded_file_server(path)
    before = path.read_bytes()
    with pytest.raises(IdempotencyConflictError):
        server.balance_operation(
            500_000, BalanceOperation.DEPOSIT, Money.of(1, "USD"), comment="x",
            idempotency_key="d0",
        )  # fmt: skip
    server.account_state(500_000)
    assert path.read_bytes() == before


def test_a_state_file_of_another_server_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    funded_file_server(path)
    with pytest.raises(TradingServerError, match="another"):
        SimulatedTradingServer("other-mt5", clock=FixedClock(T0), state_path=path)


def test_a_subprocess_continues_the_server_of_this_process(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    here = funded_file_server(path)
    here.simulate_trading(100)
    script = (
        "import sys\nfrom datetime import datetime, UTC\n"
        "from fxcrm_core.kernel import FixedClock\n"
        "from fxcrm_core.trading import SimulatedTradingServer\n"
        "s = SimulatedTradingServer(clock=FixedClock(datetime(2026, 3, 9, 8, tzinfo=UTC)),"
        " state_path=sys.argv[1])\n"
        "print(s.simulate_trading(100))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "100"
    alone = funded_server()
    alone.simulate_trading(100)
    alone.simulate_trading(100)
    assert here.deal_feed(limit=100_000) == alone.deal_feed(limit=100_000)


@pytest.mark.parametrize("where", ["missing.csv", "."])
def test_an_export_path_that_cannot_be_read_is_a_typed_error(tmp_path: Path, where: str) -> None:
    from fxcrm_core.kernel import ValidationError

    with pytest.raises(ValidationError, match="cannot read the MT5 export"):
        read_mt5_deals(tmp_path / where, server="s", currency="USD", utc_offset=timedelta(0))
