"""Money between a client's wallet and their trading accounts, through the TradingServer port.

The ledger holds the amount first, the server is asked second (with the transfer's id as its
idempotency key), and the hold is posted together with the server's deal ticket, or voided if
the server refused. A retry after any failure replays safely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import attrs

from fxcrm_core.access import AccessControl, Actor
from fxcrm_core.accounts import TradingAccount
from fxcrm_core.events import Aggregate, DomainEvent, Repository
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    FxCrmError,
    IdempotencyConflictError,
    IllegalTransitionError,
    ValidationError,
)
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.ledger import Ledger, Limit, TransferRequest, TransferStatus
from fxcrm_core.trading import BalanceOperation, TradingServer, TradingServerError

__all__ = [
    "INTERNAL_EVENTS",
    "InternalTransfer",
    "InternalTransferCompleted",
    "InternalTransferUnwound",
    "MoneyAccounts",
    "TradingTransfers",
]


class MoneyAccounts:
    """Names and opens the ledger accounts payments use (one per owner and currency)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def wallet(self, client_id: str, currency: Currency) -> str:
        account_id = f"wallet:{client_id}:{currency.code}"
        self.ledger.open_account(
            account_id, owner=client_id, currency=currency, purpose="wallet",
            limit=Limit.DEBITS_WITHIN_CREDITS,
        )  # fmt: skip
        return account_id

    def mirror(self, account: TradingAccount) -> str:
        """The ledger's copy of what the CRM moved in and out of a trading account."""
        account_id = f"mirror:{account.server}:{account.login}"
        self.ledger.open_account(
            account_id, owner=account.client_id, currency=account.currency, purpose="mirror",
            limit=Limit.DEBITS_WITHIN_CREDITS,
        )  # fmt: skip
        return account_id

    def broker(self, purpose: str, currency: Currency) -> str:
        account_id = f"{purpose}:{currency.code}"
        self.ledger.open_account(account_id, owner="broker", currency=currency, purpose=purpose)
        return account_id


@attrs.frozen
class InternalTransferCompleted(DomainEvent):
    request_id: str
    account_id: str
    to_trading: bool
    amount: Money
    server: str
    login: int
    deal_ticket: int


@attrs.frozen
class InternalTransferUnwound(DomainEvent):
    """An account-to-account transfer in flight given back to its first account (why: the
    operator's reason, ids and amounts only)."""

    request_id: str
    reason: str


INTERNAL_EVENTS = (InternalTransferCompleted, InternalTransferUnwound)


@attrs.frozen(kw_only=True)
class InternalTransfer(Aggregate):
    category = "internal"
    completed: InternalTransferCompleted | None = None
    unwound: str | None = None  # the reason an account-to-account transfer was unwound

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, InternalTransferCompleted):
            return self.evolve(completed=event)
        if isinstance(event, InternalTransferUnwound):
            return self.evolve(unwound=event.reason)
        raise ValidationError(f"InternalTransfer cannot apply {type(event).__name__}")


class TradingTransfers:
    def __init__(
        self,
        repository: Repository,
        ledger: Ledger,
        access: AccessControl,
        servers: dict[str, TradingServer],
        *,
        closed: Callable[[str], bool] | None = None,
    ) -> None:
        self.repository = repository
        self.ledger = ledger
        self.access = access
        self.servers = servers
        self.closed = closed  # whether a client's relationship is closed (the broker asks)
        self.accounts = MoneyAccounts(ledger)

    def move(
        self, actor: Actor, request_id: str, account_id: str, amount: Money, *, to_trading: bool
    ) -> InternalTransferCompleted:
        """Wallet → trading account (``to_trading``) or back; returns the completed record."""
        if isinstance(request_id, str) and request_id.startswith(_A2A):
            raise ValidationError("request ids starting with 'a2a:' name account-to-account legs")
        account = self.repository.get(TradingAccount, account_id)
        self.access.require(actor, "transfer.request", client_id=account.client_id)
        done = self.repository.load(InternalTransfer, request_id)
        if done is not None and done.completed is not None:
            record = done.completed
            if (record.account_id, record.to_trading, record.amount) != (
                account_id,
                to_trading,
                amount,
            ):  # another account's, another client's, or another amount: not a retry
                raise IdempotencyConflictError("this request id names another transfer")
            return record
        if to_trading and self.closed is not None and self.closed(account.client_id):
            raise IllegalTransitionError(
                "the client's relationship is closed: no money into trading"
            )
        if amount.currency.code != account.currency:
            raise ValidationError("transfer in the trading account's currency")
        server = self.servers[account.server]
        wallet = self.accounts.wallet(account.client_id, amount.currency)
        mirror = self.accounts.mirror(account)
        source, target = (wallet, mirror) if to_trading else (mirror, wallet)
        hold_id = f"internal:{request_id}"
        result = self.ledger.transfer(
            TransferRequest(hold_id, source, target, amount, pending=True), actor=actor.id
        )
        if result.status is not TransferStatus.PENDING:
            raise ValidationError("this request id was already settled differently")
        try:
            ticket = server.balance_operation(
                account.login,
                BalanceOperation.DEPOSIT if to_trading else BalanceOperation.WITHDRAWAL,
                amount,
                comment=f"crm {request_id}",
                idempotency_key=hold_id,
            )
        except FxCrmError:
            self.ledger.void_pending(hold_id, actor=actor.id)
            raise
        record = InternalTransferCompleted(
            request_id, account_id, to_trading, amount, account.server, account.login, ticket
        )
        self.ledger.post_pending(
            hold_id, actor=actor.id, also=[(InternalTransfer.blank(request_id), record)]
        )
        return record

    # -- from one trading account to another of the same client ------------------------------
    def between(
        self,
        actor: Actor,
        request_id: str,
        from_account_id: str,
        to_account_id: str,
        amount: Money,
    ) -> tuple[InternalTransferCompleted, InternalTransferCompleted]:
        """Move ``amount`` from one of a client's trading accounts to another (same currency,
        on the same server or two): the ledger holds it between the accounts' mirrors, the
        first server withdraws it and the second deposits it, each call keyed by the request
        (a retry repeats neither), and the hold is posted with both legs recorded as
        :class:`InternalTransferCompleted` (what reconciliation compares with the servers).
        Request ids are the client's own: another client's id names nothing here, and the same
        id for another transfer is refused.

        A refused withdrawal releases the hold. A deposit that fails after the withdrawal
        leaves the transfer in flight (the hold pending): retrying the same request finishes
        it; :meth:`unwind` returns the money to the first account instead."""
        source, target = self._pair(actor, request_id, from_account_id, to_account_id, amount)
        key = _a2a_key(source, request_id)
        done = self._legs(key, source, target, amount)
        if done is not None:
            return done
        held = self.ledger.transfer(
            TransferRequest(
                key, self.accounts.mirror(source), self.accounts.mirror(target), amount,
                pending=True,
            ),
            actor=actor.id,
        )  # fmt: skip
        if held.status is not TransferStatus.PENDING:
            raise IllegalTransitionError("this transfer was unwound; send a new request")
        try:
            out = self._leg(source, amount, key, "out", BalanceOperation.WITHDRAWAL)
        except FxCrmError:
            self.ledger.void_pending(key, actor=actor.id)
            raise
        try:
            into = self._leg(target, amount, key, "in", BalanceOperation.DEPOSIT)
        except FxCrmError:
            raise TradingServerError(
                "the money left the first account but the second did not take it: retry the "
                "same request to finish, or unwind it"
            ) from None
        legs = (
            _leg_record(source, amount, key, "out", out, to_trading=False),
            _leg_record(target, amount, key, "in", into, to_trading=True),
        )
        self.ledger.post_pending(
            key,
            actor=actor.id,
            also=[(InternalTransfer.blank(leg.request_id), leg) for leg in legs],
        )
        return legs

    def unwind(
        self, actor: Actor, request_id: str, from_account_id: str, to_account_id: str,
        amount: Money, *, reason: str,
    ) -> tuple[InternalTransferCompleted, InternalTransferCompleted]:  # fmt: skip
        """Give a transfer in flight back to the first account, for finance
        (``transfer.approve`` on the client's rows). The second server is asked first whether
        it took the deposit (a lost answer): if it did, nothing is unwound (send the same
        request again to finish the transfer). Else the withdrawal is made sure of (the same
        keyed call: done once either way), the money deposited back under a key of its own,
        and the hold released with both legs and the reason recorded."""
        why = checked_text(reason, "reason", 500)
        source, target = self._pair(actor, request_id, from_account_id, to_account_id, amount)
        self.access.require(actor, "transfer.approve", client_id=source.client_id)
        key = _a2a_key(source, request_id)
        if self._legs(key, source, target, amount) is not None:
            raise IllegalTransitionError("the transfer completed: it cannot be unwound")
        if self.ledger.transfer_status(key).status is not TransferStatus.PENDING:
            raise IllegalTransitionError("the transfer is not in flight")
        landed = self.servers[target.server].balance_operation_made(target.login, f"{key}:in")
        if landed is not None:
            raise IllegalTransitionError(
                "the second account took the deposit: send the same request again to finish"
            )
        out = self._leg(source, amount, key, "out", BalanceOperation.WITHDRAWAL)
        back = self._leg(source, amount, key, "undo", BalanceOperation.DEPOSIT)
        legs = (
            _leg_record(source, amount, key, "out", out, to_trading=False),
            _leg_record(source, amount, key, "undo", back, to_trading=True),
        )
        self.ledger.void_pending(
            key,
            actor=actor.id,
            also=[
                *((InternalTransfer.blank(leg.request_id), leg) for leg in legs),
                (InternalTransfer.blank(key), InternalTransferUnwound(request_id, why)),
            ],
        )
        return legs

    def _pair(
        self, actor: Actor, request_id: str, from_id: str, to_id: str, amount: Money
    ) -> tuple[TradingAccount, TradingAccount]:
        checked_text(request_id, "request id")
        checked_text(from_id, "account id")
        checked_text(to_id, "account id")
        if not isinstance(amount, Money):
            raise ValidationError("a transfer amount is Money")
        amount.require_positive("transfer amount")
        if from_id == to_id:
            raise ValidationError("the two accounts must differ")
        source = self.repository.get(TradingAccount, from_id)
        target = self.repository.get(TradingAccount, to_id)
        if source.client_id != target.client_id:
            raise AccessDeniedError("account-to-account transfers stay within one client")
        self.access.require(actor, "transfer.request", client_id=source.client_id)
        if not amount.currency.code == source.currency == target.currency:
            raise ValidationError("both accounts and the amount must be in one currency")
        for account in (source, target):
            if account.server not in self.servers:
                raise TradingServerError("no such trading server is connected")
        return source, target

    def _legs(
        self, key: str, source: TradingAccount, target: TradingAccount, amount: Money
    ) -> tuple[InternalTransferCompleted, InternalTransferCompleted] | None:
        """The two legs of a completed transfer under ``key``, if it is this transfer; the
        same request id for another one is an IdempotencyConflictError."""
        out = self.repository.load(InternalTransfer, f"{key}:out")
        other = self.repository.load(InternalTransfer, f"{key}:in")
        if out is None or out.completed is None or other is None or other.completed is None:
            return None
        legs = (out.completed, other.completed)
        if (legs[0].account_id, legs[1].account_id, legs[0].amount) != (
            source.id,
            target.id,
            amount,
        ):
            raise IdempotencyConflictError("this request id names another transfer")
        return legs

    def _leg(
        self, account: TradingAccount, amount: Money, key: str, leg: str,
        operation: BalanceOperation,
    ) -> int:  # fmt: skip
        return self.servers[account.server].balance_operation(
            account.login, operation, amount,
            comment=f"crm {key} {leg}", idempotency_key=f"{key}:{leg}",
        )  # fmt: skip


def _a2a_key(source: TradingAccount, request_id: str) -> str:
    """An account-to-account transfer's hold, legs and server keys: the client's own."""
    return f"{_A2A}{source.client_id}:{request_id}"


def _leg_record(
    account: TradingAccount, amount: Money, key: str, leg: str, ticket: int, *, to_trading: bool
) -> InternalTransferCompleted:
    return InternalTransferCompleted(
        f"{key}:{leg}", account.id, to_trading, amount, account.server, account.login, ticket
    )


#: The prefix of an account-to-account transfer's hold and of its legs' request ids.
_A2A = "a2a:"
