"""Payments: deposits with idempotent PSP callbacks, money between wallets and trading accounts
through the trading-server port, and reconciliation with the trading servers. (Withdrawals with
approval and payout instruments land next, on the same ledger.)

Depends on ``kernel``, ``events``, ``access``, ``kyc``, ``ledger``, ``trading`` and ``accounts``.
"""

from fxcrm_core.payments.deposits import (
    DEPOSIT_EVENTS,
    CallbackOutcome,
    Deposit,
    Deposits,
    DepositStatus,
    LimitExceededError,
    PaymentLimits,
)
from fxcrm_core.payments.reconciliation import Finding, FindingKind, reconcile
from fxcrm_core.payments.transfers import (
    INTERNAL_EVENTS,
    InternalTransfer,
    InternalTransferCompleted,
    MoneyAccounts,
    TradingTransfers,
)

__all__ = [
    "DEPOSIT_EVENTS",
    "INTERNAL_EVENTS",
    "CallbackOutcome",
    "Deposit",
    "DepositStatus",
    "Deposits",
    "LimitExceededError",
    "PaymentLimits",
    "Finding",
    "FindingKind",
    "InternalTransfer",
    "InternalTransferCompleted",
    "MoneyAccounts",
    "TradingTransfers",
    "reconcile",
]
