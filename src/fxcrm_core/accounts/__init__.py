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
)
from fxcrm_core.accounts.service import Accounts, LeverageOutcome

__all__ = [
    "ACCOUNT_EVENTS",
    "EEA_RETAIL_CAPS",
    "Accounts",
    "GroupRule",
    "LeverageAboveCapError",
    "LeverageCaps",
    "LeverageOutcome",
    "TradingAccount",
]
