"""Payments: deposits with idempotent PSP callbacks, money between wallets and trading accounts
through the trading-server port, withdrawals to verified payout instruments with holds, daily
limits, fees and maker-checker approval, and reconciliation with the trading servers.

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
from fxcrm_core.payments.withdrawals import (
    WITHDRAWAL_EVENTS,
    FeePolicy,
    InstrumentKind,
    PayoutInstrument,
    Withdrawal,
    Withdrawals,
    WithdrawalStatus,
)

__all__ = [
    "DEPOSIT_EVENTS",
    "INTERNAL_EVENTS",
    "WITHDRAWAL_EVENTS",
    "FeePolicy",
    "InstrumentKind",
    "PayoutInstrument",
    "Withdrawal",
    "WithdrawalStatus",
    "Withdrawals",
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
