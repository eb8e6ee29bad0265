"""Trading accounts: opening gated by KYC level, leverage within the caps of group, risk profile
and jurisdiction, and maker-checker above a threshold; password reset, group change and status
(enabled, read-only, disabled) as audited, idempotent account services; all through the
TradingServer port.

Depends on ``kernel``, ``events``, ``access``, ``clients``, ``kyc`` and ``trading``.
"""

from fxcrm_core.accounts.changes import (
    ACCOUNT_CHANGE_ACTION,
    AccountChange,
    AccountChangeOutcome,
    AccountChanges,
    PasswordLostError,
    PasswordReset,
)
from fxcrm_core.accounts.model import (
    ACCOUNT_EVENTS,
    EEA_RETAIL_CAPS,
    AccountGroupChanged,
    AccountStatusChanged,
    GroupRule,
    LeverageAboveCapError,
    LeverageCaps,
    TradingAccount,
    TradingAccountOpened,
    TradingPasswordReset,
)
from fxcrm_core.accounts.passwords import (
    MT5_PASSWORD_RULES,
    PasswordRules,
    TradingPassword,
    WeakPasswordError,
)
from fxcrm_core.accounts.service import Accounts, LeverageOutcome
from fxcrm_core.events import EventRegistry
from fxcrm_core.trading.server import AccountStatus

__all__ = [
    "register_events",
    "ACCOUNT_CHANGE_ACTION",
    "ACCOUNT_EVENTS",
    "EEA_RETAIL_CAPS",
    "MT5_PASSWORD_RULES",
    "AccountChange",
    "AccountChangeOutcome",
    "AccountChanges",
    "AccountGroupChanged",
    "AccountStatus",
    "AccountStatusChanged",
    "Accounts",
    "GroupRule",
    "LeverageAboveCapError",
    "LeverageCaps",
    "LeverageOutcome",
    "PasswordLostError",
    "PasswordReset",
    "PasswordRules",
    "TradingAccount",
    "TradingAccountOpened",
    "TradingPassword",
    "TradingPasswordReset",
    "WeakPasswordError",
]


def register_events(registry: EventRegistry) -> None:
    """Register this context's event types (the broker calls this for each context it wires)."""
    registry.register_all(ACCOUNT_EVENTS)
