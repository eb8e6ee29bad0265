"""The TradingServer port: what fxcrm_core needs from MT4, MT5, cTrader or any other platform.

Hosts implement it over their platform's manager API; ``fxcrm_core.testing.TradingServerContract``
checks an implementation. The deal feed is read by cursor (a sequence the adapter assigns to
every add, update and delete), never by timestamp: deals with equal times would be skipped.

Account changes (group, password, status) take an ``idempotency_key``: the adapter remembers
what each key did (login, operation, value) so a retry after a crash applies nothing twice, and
answers whether the call changed the account now (True) or found the key already applied
(False). The same key for something else is an ``IdempotencyConflictError``.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

import attrs

from fxcrm_core.kernel.errors import FxCrmError, NotFoundError
from fxcrm_core.kernel.money import Money
from fxcrm_core.trading.deal import Deal

__all__ = [
    "AccountNotFoundError",
    "AccountState",
    "AccountStatus",
    "BalanceOperation",
    "DealChange",
    "FeedItem",
    "NewTradingAccount",
    "TradingServer",
    "TradingServerError",
]


class TradingServerError(FxCrmError, RuntimeError):
    """The trading server refused or failed an operation."""

    default_message = "the trading server refused the operation"


class AccountNotFoundError(NotFoundError):
    default_message = "no such trading account on the server"


class BalanceOperation(enum.Enum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    CREDIT_IN = "credit_in"
    CREDIT_OUT = "credit_out"
    BONUS = "bonus"
    CORRECTION = "correction"  # may be negative


class AccountStatus(enum.Enum):
    """What the account holder may do: trade, only log in and see (MT5's trade-disabled
    right), or nothing (the account disabled)."""

    ENABLED = "enabled"
    READ_ONLY = "read_only"
    DISABLED = "disabled"


@attrs.frozen
class NewTradingAccount:
    group: str
    leverage: int
    currency: str
    name_ref: str  # an id the host uses for the client (never the client's name)


@attrs.frozen
class AccountState:
    login: int
    group: str
    leverage: int
    enabled: bool
    balance: Money
    credit: Money
    equity: Money
    trading_enabled: bool = True  # False: read-only (the holder may log in but not trade)

    @property
    def status(self) -> AccountStatus:
        if not self.enabled:
            return AccountStatus.DISABLED
        return AccountStatus.ENABLED if self.trading_enabled else AccountStatus.READ_ONLY


class DealChange(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"
    DELETED = "deleted"


@attrs.frozen
class FeedItem:
    cursor: int
    change: DealChange
    deal: Deal


@runtime_checkable
class TradingServer(Protocol):
    """One trading server (an MT5 server, a cTrader instance, ...)."""

    name: str

    def create_account(self, request: NewTradingAccount) -> int:
        """Create an account; returns its login."""
        ...

    def change_group(self, login: int, group: str, *, idempotency_key: str | None = None) -> bool:
        """Move the account to ``group``; True if changed now, False if the key was applied
        before (see the module docstring)."""
        ...

    def change_leverage(self, login: int, leverage: int) -> None: ...

    def change_password(
        self, login: int, secret: str, *, idempotency_key: str | None = None
    ) -> bool:
        """Set the account's (master) password. A retry with the same key and secret changes
        nothing; with another secret it is an ``IdempotencyConflictError``. Errors never echo
        the secret."""
        ...

    def set_enabled(self, login: int, enabled: bool) -> None: ...

    def set_status(
        self, login: int, status: AccountStatus, *, idempotency_key: str | None = None
    ) -> bool:
        """Enable, make read-only (trading disabled) or disable the account, in one call."""
        ...

    def balance_operation(
        self,
        login: int,
        operation: BalanceOperation,
        amount: Money,
        *,
        comment: str,
        idempotency_key: str,
    ) -> int:
        """Post a balance operation; returns the server's deal ticket. A retry with the same
        key returns the same ticket and posts nothing."""
        ...

    def balance_operation_made(self, login: int, idempotency_key: str) -> int | None:
        """The deal ticket of the balance operation made on ``login`` under ``idempotency_key``,
        or None if none was: how the CRM learns whether a call whose answer it lost took
        effect, before it undoes anything (an adapter over a server without keys looks for the
        key in its deals' comments)."""
        ...

    def account_state(self, login: int) -> AccountState: ...

    def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
        """Deal adds, updates and deletes with cursor > ``after_cursor``, in cursor order."""
        ...
