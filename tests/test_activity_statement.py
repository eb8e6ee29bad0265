"""The fund-flow statement: one typed line per movement of a client's wallets, the counterparty
and a running balance; a hold shows once (as its posting), a released hold not at all; the
closing balance is the ledger's."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.access import Actor, Role
from fxcrm_core.activity import ClientActivity, FlowKind, FundFlows, Measure, StatementLine
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.kernel import AccessDeniedError, FxCrmError, Money, ValidationError
from fxcrm_core.ledger import TransferRequest
from fxcrm_core.payments import MoneyAccounts, WithdrawalStatus
from tests.activity_world import EUR, T0, USD, World, usd

DAY = (T0 - timedelta(hours=12), T0 + timedelta(hours=12))


def test_a_day_of_movements() -> None:
    w = World()
    assert w.broker.transfers is not None
    dep = w.deposit("1000", "ref-1")
    w.broker.deposits.psp_confirmed(dep, "ref-1", usd(1000))  # the callback again
    wd = w.withdraw("200")  # held with its 2.00 fee, then paid: each shows once
    cancelled = w.withdraw("50", pay=False)
    w.broker.withdrawals.close(w.me, cancelled, WithdrawalStatus.CANCELLED, "not now")
    move = w.broker.transfers.move(w.me, "m-1", w.account_id, usd(300), to_trading=True)
    w.broker.conversions.convert(w.me, "c-1", w.cid, usd(108), "EUR")
    statement = w.flows.statement(w.me, w.cid, *DAY)
    rows = [(line.kind, line.amount, line.balance) for line in statement.lines]
    assert rows == [
        (FlowKind.DEPOSIT, usd(1000), usd(1000)),
        (FlowKind.FEE, usd(-2), usd(998)),
        (FlowKind.WITHDRAWAL, usd(-200), usd(798)),
        (FlowKind.TO_TRADING, usd(-300), usd(498)),
        (FlowKind.CONVERSION, usd(-108), usd(390)),
        (FlowKind.CONVERSION, Money.of("99.81", "EUR"), Money.of("99.81", "EUR")),
    ]
    parties = [line.counterparty for line in statement.lines]
    assert parties == [
        "psp:acq", "broker:fees", "psp", f"trading:{move.server}:{move.login}", "broker:fx",
        "broker:fx",
    ]  # fmt: skip
    refs = [line.reference for line in statement.lines]
    assert refs[:4] == [f"deposit:{dep}", f"wd-fee:{wd}", f"wd:{wd}", "internal:m-1"]
    assert statement.opening == (Money.zero(EUR), usd(0))
    assert statement.closing == (Money.of("99.81", "EUR"), usd(390))
    # The next day's statement starts from the day's closing balance and shows nothing.
    later = w.flows.statement(w.me, w.cid, DAY[1], DAY[1] + timedelta(days=1))
    assert (later.opening, later.lines, later.closing) == (statement.closing, (), statement.closing)


def test_a_transfer_between_clients_names_the_other_client() -> None:
    w = World()
    w.deposit("500", "ref-1")
    assert w.broker.clients is not None
    bo = w.broker.clients.register(
        Actor.system("portal", Role.PORTAL),
        Registration(ClientKind.INDIVIDUAL, "SC", "Bo Chen", "bo@example.com"),
    )
    money = MoneyAccounts(w.broker.ledger)
    # Booked as the client-transfer service books it (a c2c hold posted), to the ledger.
    w.broker.ledger.transfer(
        TransferRequest(
            "c2c:t-1", money.wallet(w.cid, USD), money.wallet(bo, USD), usd(120), pending=True
        )
    )
    w.broker.ledger.post_pending("c2c:t-1")
    mine = w.flows.statement(w.me, w.cid, *DAY).lines[-1]
    theirs = w.flows.statement(Actor.client(bo), bo, *DAY).lines[-1]
    assert (mine.kind, mine.amount, mine.counterparty) == (
        FlowKind.TRANSFER_OUT, usd(-120), f"client:{bo}"
    )  # fmt: skip
    assert (theirs.kind, theirs.amount, theirs.counterparty) == (
        FlowKind.TRANSFER_IN, usd(120), f"client:{w.cid}"
    )  # fmt: skip


def test_a_statement_is_the_clients_own_or_staffs() -> None:
    w = World()
    w.deposit("100", "ref-1")
    other = Actor.client("someone-else")
    with pytest.raises(AccessDeniedError):
        w.flows.statement(other, w.cid, *DAY)
    staff = Actor.staff("fin-9", Role.FINANCE)
    assert len(w.flows.statement(staff, w.cid, *DAY).lines) == 1
    with pytest.raises(ValidationError):
        w.flows.statement(w.me, w.cid, DAY[1], DAY[0])
    with pytest.raises(ValidationError):
        w.flows.statement(w.me, w.cid, DAY[0].replace(tzinfo=None), DAY[1])


MOVES = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "withdraw", "cancel", "to", "from", "convert", "later"]),
        st.integers(1, 400),
    ),
    max_size=12,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MOVES)
def test_the_running_balance_ends_at_the_ledger_balance(moves: list[tuple[str, int]]) -> None:
    """Whatever happens, each wallet's last running balance is its ledger balance, and every
    line is a posted movement (a sum of lines is the change of the balance)."""
    w = World()
    assert w.broker.transfers is not None
    n = 0
    for move, amount in moves:
        n += 1
        try:
            if move == "deposit":
                w.deposit(str(amount), f"ref-{n}")
            elif move in ("withdraw", "cancel"):
                wd = w.withdraw(str(amount), pay=move == "withdraw")
                if move == "cancel":
                    w.broker.withdrawals.close(w.me, wd, WithdrawalStatus.CANCELLED, "no")
            elif move in ("to", "from"):
                w.broker.transfers.move(
                    w.me, f"m-{n}", w.account_id, usd(amount), to_trading=move == "to"
                )
            elif move == "convert":
                w.broker.conversions.convert(w.me, f"c-{n}", w.cid, usd(amount), "EUR")
            else:
                w.clock.advance(hours=amount)
        except FxCrmError:
            continue  # refused (not enough money, a limit): nothing written
    end = w.clock.now() + timedelta(seconds=1)
    statement = w.flows.statement(w.me, w.cid, T0 - timedelta(days=1), end)
    ledger = w.broker.ledger
    balances = tuple(
        ledger.balance(wallet).net_credit
        for wallet in sorted(w.activity.wallets(w.cid), key=lambda a: a.rpartition(":")[2])
    )
    assert statement.closing == balances
    for currency_total, opening, closing in zip(
        _sums(statement.lines, statement.opening), statement.opening, statement.closing, strict=True
    ):
        assert opening + currency_total == closing
    positions = [line.position for line in statement.lines]
    assert positions == sorted(set(positions))  # each movement once, in log order
    # The activity read model agrees with the statement on deposits and withdrawals.
    for measure, kind in ((Measure.DEPOSITS, FlowKind.DEPOSIT),
                          (Measure.WITHDRAWALS, FlowKind.WITHDRAWAL)):  # fmt: skip
        counted = w.activity.lifetime(w.cid, measure).by_currency
        lines = [line.amount.amount for line in statement.lines if line.kind is kind]
        assert abs(sum(lines, Decimal(0))) == sum((m.amount for m in counted), Decimal(0))


def _sums(lines: tuple[StatementLine, ...], opening: tuple[Money, ...]) -> list[Money]:
    totals = {m.currency: Money.zero(m.currency) for m in opening}
    for line in lines:
        totals[line.amount.currency] = totals[line.amount.currency] + line.amount
    return [totals[m.currency] for m in opening]


def test_a_second_process_and_a_restart_answer_the_same(tmp_path: Path) -> None:
    w = World(tmp_path / "broker.sqlite")
    w.deposit("1000", "ref-1")
    w.withdraw("100")
    first = w.trade(T0 + timedelta(hours=1), "2")
    w.trade(T0 + timedelta(hours=2), "2", closes=first)
    w.trade(T0 + timedelta(hours=3), "1", symbol="GBPUSD", price="1.27000")
    w.pull()

    def answers(activity: ClientActivity, flows: FundFlows) -> object:
        return (
            [activity.window(w.cid, m, days=5, at=T0) for m in Measure],
            activity.last_trade(w.cid),
            activity.last_deposit(w.cid),
            [d.ticket for d in activity.trades(w.cid)],
            flows.statement(w.me, w.cid, *DAY),
        )

    live = answers(w.activity, w.flows)
    other = w.open()  # a second process on the same file, while the first is open
    assert answers(*w.read_models(other)) == live
    w.broker.close()
    other.close()
    restarted = w.open()
    assert answers(*w.read_models(restarted)) == live
    restarted.close()
