"""Money between a client's wallet and their trading accounts, through the TradingServer port.

The ledger holds the amount first, the server is asked second (with the transfer's id as its
idempotency key), and the hold is posted together with the server's deal ticket, or voided if
the server refused. A retry after any failure replays safely.
"""

from __future__ import annotations

from typing import Self

import attrs

from fxcrm_core.access import AccessControl, Actor
from fxcrm_core.accounts import TradingAccount
from fxcrm_core.events import Aggregate, DomainEvent, Repository
from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.ledger import Ledger, Limit, TransferRequest, TransferStatus
from fxcrm_core.trading import BalanceOperation, TradingServer

__all__ = [
    "INTERNAL_EVENTS",
    "InternalTransfer",
    "InternalTransferCompleted",
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


INTERNAL_EVENTS = (InternalTransferCompleted,)


@attrs.frozen(kw_only=True)
class InternalTransfer(Aggregate):
    category = "internal"
    completed: InternalTransferCompleted | None = None

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, InternalTransferCompleted):
            return self.evolve(completed=event)
        raise ValidationError(f"InternalTransfer cannot apply {type(event).__name__}")


class TradingTransfers:
    def __init__(
        self,
        repository: Repository,
        ledger: Ledger,
        access: AccessControl,
        servers: dict[str, TradingServer],
    ) -> None:
        self.repository = repository
        self.ledger = ledger
        self.access = access
        self.servers = servers
        self.accounts = MoneyAccounts(ledger)

    def move(
        self, actor: Actor, request_id: str, account_id: str, amount: Money, *, to_trading: bool
    ) -> InternalTransferCompleted:
        """Wallet → trading account (``to_trading``) or back; returns the completed record."""
        account = self.repository.get(TradingAccount, account_id)
        self.access.require(actor, "transfer.request", client_id=account.client_id)
        done = self.repository.load(InternalTransfer, request_id)
        if done is not None and done.completed is not None:
            return done.completed
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
