"""A client's fund-flow statement: one typed line per movement of the client's wallets, with
the counterparty and a running balance per wallet, read from the ledger (the money's only
truth). A hold shows once, as the movement it became when posted; a released hold shows
nothing."""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from fxcrm_core.access import AccessControl, Actor
from fxcrm_core.activity.model import ClientActivity
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.kernel.time import to_utc
from fxcrm_core.ledger import Entry, Ledger, Transfer
from fxcrm_core.payments import Deposit

__all__ = ["FlowKind", "FundFlowStatement", "FundFlows", "StatementLine", "flow_kind"]


class FlowKind(enum.Enum):
    """What a movement of a client's wallet was."""

    DEPOSIT = "deposit"  # from a PSP (a converted deposit: the amount the wallet got)
    WIRE = "wire"  # a bank wire matched and credited
    WITHDRAWAL = "withdrawal"
    FEE = "fee"  # a withdrawal's fee
    TO_TRADING = "to_trading"  # to one of the client's trading accounts
    FROM_TRADING = "from_trading"
    TRANSFER_IN = "transfer_in"  # from another client
    TRANSFER_OUT = "transfer_out"
    CONVERSION = "conversion"  # between the client's own wallets (one line per wallet)
    REBATE = "rebate"  # an IB payout
    CASHBACK = "cashback"
    POINTS = "points"  # loyalty points redeemed as money
    CORRECTION = "correction"  # a reversal of an earlier movement (a chargeback, say)
    OTHER = "other"


# Transfer id prefixes the contexts use for what reaches a wallet. Loyalty's cashback and points
# redemptions post as "cashback:..." and "points:..." to appear typed here.
_PREFIXES: tuple[tuple[str, FlowKind, FlowKind], ...] = (
    # (prefix, kind when the wallet is credited, kind when it is debited)
    ("deposit:", FlowKind.DEPOSIT, FlowKind.DEPOSIT),
    ("wire:", FlowKind.WIRE, FlowKind.WIRE),
    ("wd-fee:", FlowKind.FEE, FlowKind.FEE),
    ("wd:", FlowKind.WITHDRAWAL, FlowKind.WITHDRAWAL),
    ("internal:", FlowKind.FROM_TRADING, FlowKind.TO_TRADING),
    ("c2c:", FlowKind.TRANSFER_IN, FlowKind.TRANSFER_OUT),
    ("conv:", FlowKind.CONVERSION, FlowKind.CONVERSION),
    ("payout:", FlowKind.REBATE, FlowKind.REBATE),
    ("cashback:", FlowKind.CASHBACK, FlowKind.CASHBACK),
    ("points:", FlowKind.POINTS, FlowKind.POINTS),
)


def flow_kind(transfer_id: str, *, credited: bool, reverses: str | None = None) -> FlowKind:
    """The kind of a wallet movement by its transfer's id (and whether it reverses another).

    >>> flow_kind("internal:r-1", credited=False)
    <FlowKind.TO_TRADING: 'to_trading'>
    >>> flow_kind("fix-1", credited=False, reverses="deposit:d-1")
    <FlowKind.CORRECTION: 'correction'>
    """
    if reverses is not None:
        return FlowKind.CORRECTION
    for prefix, into, out in _PREFIXES:
        if transfer_id.startswith(prefix):
            return into if credited else out
    return FlowKind.OTHER


@attrs.frozen
class StatementLine:
    """One movement: ``amount`` is signed (into the wallet positive), ``balance`` the wallet's
    posted balance after it; ``counterparty`` names the other side (``client:<id>``,
    ``trading:<server>:<login>``, ``psp:<name>``, ``broker:<purpose>``); ``reference`` is the
    ledger transfer's id."""

    at: datetime
    kind: FlowKind
    amount: Money
    balance: Money
    counterparty: str
    reference: str
    position: int


@attrs.frozen
class FundFlowStatement:
    """A client's movements from ``start`` (included) to ``end`` (excluded), in log order,
    with each wallet's balance before (``opening``) and after (``closing``)."""

    client_id: str
    start: datetime
    end: datetime
    opening: tuple[Money, ...]
    lines: tuple[StatementLine, ...]
    closing: tuple[Money, ...]


class FundFlows:
    """Fund-flow statements of the clients' wallets (``client.read`` on the client's rows)."""

    def __init__(self, ledger: Ledger, access: AccessControl, activity: ClientActivity) -> None:
        self.ledger = ledger
        self.access = access
        self.activity = activity

    def statement(
        self, actor: Actor, client_id: str, start: datetime, end: datetime
    ) -> FundFlowStatement:
        if not isinstance(client_id, str) or not client_id:
            raise ValidationError("a client id is non-empty text")
        start, end = to_utc(start, "start"), to_utc(end, "end")
        if not start < end:
            raise ValidationError("a statement's start comes before its end")
        self.access.require(actor, "client.read", client_id=client_id)
        opening: dict[Currency, Money] = {}
        balances: dict[Currency, Money] = {}
        lines: list[StatementLine] = []
        for wallet in self.activity.wallets(client_id):
            currency = self.ledger.account(wallet).open_balance.currency
            balance = Money.zero(currency)
            history = [
                e for e in self.ledger.history(wallet) if e.kind == "posted" and e.at < end
            ]  # holds and their releases are not movements: the posting is
            for entry in history:
                if entry.at < start:
                    balance = balance + (-entry.amount if entry.debit else entry.amount)
            opening[currency] = balance
            for entry in history:
                if entry.at >= start:
                    balance = balance + (-entry.amount if entry.debit else entry.amount)
                    lines.append(self._line(entry, balance))
            balances[currency] = balance
        lines.sort(key=lambda line: line.position)
        return FundFlowStatement(
            client_id,
            start,
            end,
            tuple(opening[c] for c in sorted(opening, key=lambda c: c.code)),
            tuple(lines),
            tuple(balances[c] for c in sorted(balances, key=lambda c: c.code)),
        )

    def _line(self, entry: Entry, balance: Money) -> StatementLine:
        transfer = self.ledger.transfer_status(entry.transfer_id)
        credited = not entry.debit
        other = transfer.debit_account if credited else transfer.credit_account
        return StatementLine(
            entry.at,
            flow_kind(entry.transfer_id, credited=credited, reverses=transfer.reverses),
            entry.amount if credited else -entry.amount,
            balance,
            self._counterparty(other, entry.transfer_id, transfer),
            entry.transfer_id,
            entry.position,
        )

    def _counterparty(self, account: str, transfer_id: str, transfer: Transfer) -> str:
        if transfer_id.startswith("deposit:") and transfer.reverses is None:
            # The PSP that paid it in (a converted deposit reaches the wallet from the FX desk).
            deposit_id = transfer_id.removeprefix("deposit:").removesuffix(":bought")
            found = self.ledger.repository.load(Deposit, deposit_id)
            if found is not None and found.psp:
                return "psp:" + found.psp
        head, _, rest = account.partition(":")
        if head == "wallet":
            return "client:" + rest.rpartition(":")[0]
        if head == "mirror":
            return "trading:" + rest
        if head == "psp_clearing":
            return "psp"
        if head == "fx_position":
            return "broker:fx"
        return "broker:" + head
