"""Payments: money between wallets and trading accounts through the trading-server port, and
reconciliation with the trading servers. (Deposits, withdrawals and payout instruments land
next, on the same ledger.)

Depends on ``kernel``, ``events``, ``access``, ``ledger``, ``trading`` and ``accounts``.
"""

from fxcrm_core.payments.reconciliation import Finding, FindingKind, reconcile
from fxcrm_core.payments.transfers import (
    INTERNAL_EVENTS,
    InternalTransfer,
    InternalTransferCompleted,
    MoneyAccounts,
    TradingTransfers,
)

__all__ = [
    "INTERNAL_EVENTS",
    "Finding",
    "FindingKind",
    "InternalTransfer",
    "InternalTransferCompleted",
    "MoneyAccounts",
    "TradingTransfers",
    "reconcile",
]
