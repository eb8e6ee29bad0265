"""Trading accounts: opening gated by KYC level, leverage within the caps of group, risk profile
and jurisdiction, and maker-checker above a threshold, all through the TradingServer port.

Depends on ``kernel``, ``events``, ``access``, ``clients``, ``kyc`` and ``trading``.
"""

from fxcrm_core.accounts.model import (
    ACCOUNT_EVENTS,
    EEA_RETAIL_CAPS,
    GroupRule,
    LeverageAboveCapError,
    LeverageCaps,
    TradingAccount,
    TradingAccountOpened,
)
from fxcrm_core.accounts.service import Accounts, LeverageOutcome
from fxcrm_core.events import EventRegistry

__all__ = [
    "register_events",
    "ACCOUNT_EVENTS",
    "EEA_RETAIL_CAPS",
    "Accounts",
    "GroupRule",
    "LeverageAboveCapError",
    "LeverageCaps",
    "LeverageOutcome",
    "TradingAccount",
    "TradingAccountOpened",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all(ACCOUNT_EVENTS)
