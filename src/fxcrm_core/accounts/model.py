"""Trading accounts as the CRM knows them: which client, which server and login, which group,
currency and leverage, live or demo, enabled, read-only or disabled. The trading server holds
the account; this is its record (and, per request id, what each account service did)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import attrs

from fxcrm_core.clients.model import RiskProfile
from fxcrm_core.events import Aggregate, DomainEvent
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.trading.server import AccountStatus

__all__ = [
    "ACCOUNT_EVENTS",
    "AccountGroupChanged",
    "AccountStatusChanged",
    "EEA_RETAIL_CAPS",
    "GroupRule",
    "LeverageAboveCapError",
    "LeverageCaps",
    "LeverageChanged",
    "TradingAccount",
    "TradingAccountOpened",
    "TradingPasswordReset",
]


class LeverageAboveCapError(ValidationError):
    default_message = "leverage above the cap for this account"


@attrs.frozen
class GroupRule:
    """A trading-server group as the broker configures it."""

    name: str
    currency: str
    max_leverage: int
    live: bool


# ESMA's retail cap for major FX pairs (1:30) in the EEA, and the FCA's and ASIC's alike.
EEA_RETAIL_CAPS: Mapping[str, int] = dict.fromkeys(
    [
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IS",
        "IT",
        "LI",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "NO",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
        "GB",
        "AU",
    ],
    30,
)


@attrs.frozen
class LeverageCaps:
    """The highest leverage a client may have: the lowest of the group's, the risk profile's
    and the jurisdiction's caps. A client not yet assessed gets the lowest risk cap."""

    by_risk: Mapping[RiskProfile, int] = attrs.field(
        factory=lambda: {
            RiskProfile.INEXPERIENCED: 30,
            RiskProfile.EXPERIENCED: 200,
            RiskProfile.SOPHISTICATED: 500,
        }
    )
    by_jurisdiction: Mapping[str, int] = attrs.field(factory=lambda: dict(EEA_RETAIL_CAPS))
    approval_above: int | None = None  # increases beyond this go through maker-checker

    def cap(self, group: GroupRule, profile: RiskProfile | None, country: str) -> int:
        risk = (
            self.by_risk.get(profile, min(self.by_risk.values()))
            if profile
            else min(self.by_risk.values())
        )
        return min(group.max_leverage, risk, self.by_jurisdiction.get(country, group.max_leverage))


@attrs.frozen
class TradingAccountOpened(DomainEvent):
    account_id: str
    client_id: str
    server: str
    login: int
    group: str
    currency: str
    leverage: int
    live: bool


@attrs.frozen
class LeverageChanged(DomainEvent):
    previous: int
    leverage: int


@attrs.frozen
class TradingPasswordReset(DomainEvent):
    """A password reset happened (the secret itself is never recorded). ``applied``: the
    server changed it on this call; False when it had done this request before (a retry)."""

    request_id: str
    generated: bool  # made by the SDK (True) or given by the caller
    applied: bool


@attrs.frozen
class AccountGroupChanged(DomainEvent):
    """``group`` is the server's group after the call: the one ``requested``, unless the server
    had done this request before and the account has moved on since (a late retry)."""

    request_id: str
    requested: str
    previous: str
    group: str
    applied: bool


@attrs.frozen
class AccountStatusChanged(DomainEvent):
    """``status`` is the server's status after the call (see AccountGroupChanged)."""

    request_id: str
    requested: AccountStatus
    previous: AccountStatus
    status: AccountStatus
    applied: bool


ACCOUNT_EVENTS = (
    TradingAccountOpened,
    LeverageChanged,
    TradingPasswordReset,
    AccountGroupChanged,
    AccountStatusChanged,
)


@attrs.frozen(kw_only=True)
class TradingAccount(Aggregate):
    category = "tradingaccount"
    client_id: str = ""
    server: str = ""
    login: int = 0
    group: str = ""
    currency: str = ""
    leverage: int = 0
    live: bool = False
    status: AccountStatus = AccountStatus.ENABLED
    # What each account-service request id asked ("password", "group:<name>", "status:<value>"):
    # a retry of a recorded request is answered from here, not sent to the server again.
    requests: Mapping[str, str] = attrs.field(factory=dict)

    def _done(self, request_id: str, asked: str) -> dict[str, str]:
        return {**self.requests, request_id: asked}

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case TradingAccountOpened():
                return self.evolve(
                    client_id=event.client_id,
                    server=event.server,
                    login=event.login,
                    group=event.group,
                    currency=event.currency,
                    leverage=event.leverage,
                    live=event.live,
                )
            case LeverageChanged(leverage=leverage):
                return self.evolve(leverage=leverage)
            case TradingPasswordReset(request_id=request_id):
                return self.evolve(requests=self._done(request_id, "password"))
            case AccountGroupChanged():
                asked = f"group:{event.requested}"
                return self.evolve(group=event.group, requests=self._done(event.request_id, asked))
            case AccountStatusChanged():
                asked = f"status:{event.requested.value}"
                return self.evolve(
                    status=event.status, requests=self._done(event.request_id, asked)
                )
        raise ValidationError(f"TradingAccount cannot apply {type(event).__name__}")
