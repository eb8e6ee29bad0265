"""Payments: deposits with idempotent PSP callbacks, money between wallets and trading accounts
through the trading-server port, withdrawals to verified payout instruments with holds, daily
limits, fees and maker-checker approval, and reconciliation with the trading servers.

Depends on ``kernel``, ``events``, ``access``, ``kyc``, ``ledger``, ``trading`` and ``accounts``.
"""

from fxcrm_core.events import EventRegistry
from fxcrm_core.payments.client_transfers import (
    CLIENT_TRANSFER_ACTION,
    CLIENT_TRANSFER_EVENTS,
    ClientTransfer,
    ClientTransfers,
    ClientTransferStatus,
)
from fxcrm_core.payments.conversions import WalletConversions
from fxcrm_core.payments.deposits import (
    DEPOSIT_EVENTS,
    CallbackOutcome,
    Deposit,
    DepositConverted,
    DepositCredited,
    DepositInitiated,
    DepositIntoWallet,
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
    InternalTransferUnwound,
    MoneyAccounts,
    TradingTransfers,
)
from fxcrm_core.payments.wires import (
    WIRE_EVENTS,
    BankWires,
    DuplicateBankLineError,
    DuplicateWireReferenceError,
    OpenWire,
    ReferenceKeys,
    Wire,
    WireCredited,
    WireStatus,
    normalise_bank_reference,
    register_wire_events,
)
from fxcrm_core.payments.withdrawals import (
    WITHDRAWAL_EVENTS,
    FeePolicy,
    InstrumentAdded,
    InstrumentKind,
    InstrumentView,
    PayoutInstrument,
    Withdrawal,
    WithdrawalPayoutIn,
    WithdrawalPayoutQuoted,
    Withdrawals,
    WithdrawalStatus,
    WithdrawalView,
    register_instrument_events,
)

__all__ = [
    "WalletConversions",
    "WIRE_EVENTS",
    "BankWires",
    "register_wire_events",
    "DuplicateBankLineError",
    "DuplicateWireReferenceError",
    "OpenWire",
    "ReferenceKeys",
    "Wire",
    "WireCredited",
    "WireStatus",
    "normalise_bank_reference",
    "CLIENT_TRANSFER_ACTION",
    "CLIENT_TRANSFER_EVENTS",
    "ClientTransfer",
    "ClientTransferStatus",
    "ClientTransfers",
    "register_events",
    "register_instrument_events",
    "DEPOSIT_EVENTS",
    "INTERNAL_EVENTS",
    "WITHDRAWAL_EVENTS",
    "FeePolicy",
    "InstrumentAdded",
    "InstrumentKind",
    "InstrumentView",
    "PayoutInstrument",
    "Withdrawal",
    "WithdrawalStatus",
    "WithdrawalPayoutIn",
    "WithdrawalPayoutQuoted",
    "WithdrawalView",
    "Withdrawals",
    "CallbackOutcome",
    "Deposit",
    "DepositConverted",
    "DepositCredited",
    "DepositIntoWallet",
    "DepositInitiated",
    "DepositStatus",
    "Deposits",
    "LimitExceededError",
    "PaymentLimits",
    "Finding",
    "FindingKind",
    "InternalTransfer",
    "InternalTransferCompleted",
    "InternalTransferUnwound",
    "MoneyAccounts",
    "TradingTransfers",
    "reconcile",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all(
        (
            *INTERNAL_EVENTS,
            *DEPOSIT_EVENTS,
            *WITHDRAWAL_EVENTS,
            *CLIENT_TRANSFER_EVENTS,
        )
    )
    register_wire_events(registry)  # three at version 2, with their upcasters
    register_instrument_events(registry)  # version 3, with its upcasters
