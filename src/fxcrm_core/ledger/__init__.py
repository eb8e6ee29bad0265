"""The double-entry ledger: accounts per owner and currency, idempotent and linked transfers,
two-phase holds, limits that count pending debits, reversals, history and point-in-time
balances.

Depends on ``kernel`` and ``events``.
"""

from fxcrm_core.events import EventRegistry
from fxcrm_core.ledger.model import (
    LEDGER_EVENTS,
    AlreadyReversedError,
    Balance,
    ConversionRecorded,
    ExceedsLimitError,
    LedgerAccount,
    Limit,
    Transfer,
    TransferStatus,
)
from fxcrm_core.ledger.service import Entry, Ledger, PendingHolds, TransferRequest, TransferResult

__all__ = [
    "register_events",
    "LEDGER_EVENTS",
    "AlreadyReversedError",
    "Balance",
    "ConversionRecorded",
    "Entry",
    "ExceedsLimitError",
    "Ledger",
    "LedgerAccount",
    "Limit",
    "PendingHolds",
    "Transfer",
    "TransferRequest",
    "TransferResult",
    "TransferStatus",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all(LEDGER_EVENTS)
