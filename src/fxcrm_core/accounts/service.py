"""Opening trading accounts (gated by KYC level) and changing leverage (within caps, through
maker-checker above a threshold), through the TradingServer port."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import attrs

from fxcrm_core.access import AccessControl, Actor, ApprovalRule, Approvals
from fxcrm_core.accounts.model import (
    GroupRule,
    LeverageAboveCapError,
    LeverageCaps,
    LeverageChanged,
    TradingAccount,
    TradingAccountOpened,
)
from fxcrm_core.clients.model import Client, Stage
from fxcrm_core.events import EventMetadata, Repository, UnitOfWork
from fxcrm_core.kernel.errors import IllegalTransitionError, ValidationError
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kyc.documents import Right
from fxcrm_core.kyc.service import KycService
from fxcrm_core.trading.server import NewTradingAccount, TradingServer

__all__ = ["Accounts", "LeverageOutcome"]

log = logging.getLogger("fxcrm_core.accounts")


@attrs.frozen
class LeverageOutcome:
    account_id: str
    leverage: int
    applied: bool  # False: waiting for approval
    request_id: str | None = None


class Accounts:
    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        server: TradingServer,
        kyc: KycService,
        groups: Mapping[str, GroupRule],
        *,
        caps: LeverageCaps | None = None,
        approvals: Approvals | None = None,
        ids: IdGenerator | None = None,
    ) -> None:
        self.repository = repository
        self.access = access
        self.server = server
        self.kyc = kyc
        self.groups = dict(groups)
        self.caps = caps or LeverageCaps()
        self.approvals = approvals
        self.ids = ids or IdGenerator()
        if approvals is not None and self.caps.approval_above is not None:
            approvals.register(
                "leverage", ApprovalRule(execute=self._execute_leverage, check=self._check_leverage)
            )

    def _group(self, name: str) -> GroupRule:
        try:
            return self.groups[name]
        except KeyError:
            raise ValidationError("unknown trading group") from None

    def _cap(self, client: Client, group: GroupRule) -> int:
        return self.caps.cap(group, client.risk_profile, client.country)

    def _require_leverage(self, client: Client, group: GroupRule, leverage: int) -> None:
        if isinstance(leverage, bool) or not isinstance(leverage, int) or leverage < 1:
            raise ValidationError("leverage is a whole number from 1 (1:1) up")
        cap = self._cap(client, group)
        if leverage > cap:
            raise LeverageAboveCapError(
                f"leverage 1:{leverage} is above this client's cap of 1:{cap}"
            )

    def open(self, actor: Actor, client_id: str, group_name: str, leverage: int) -> str:
        """Open an account on the trading server and record it; returns the account id."""
        self.access.require(actor, "account.open", client_id=client_id)
        client = self.repository.get(Client, client_id)
        if client.stage in (Stage.LEAD, Stage.CLOSED, None):
            raise IllegalTransitionError("accounts are opened for registered, open clients only")
        group = self._group(group_name)
        self.kyc.require(client_id, Right.OPEN_LIVE if group.live else Right.OPEN_DEMO)
        self._require_leverage(client, group, leverage)
        login = self.server.create_account(
            NewTradingAccount(group.name, leverage, group.currency, client_id)
        )
        account_id = self.ids()
        try:
            with UnitOfWork(
                self.repository, EventMetadata(actor.id, reason="account opened")
            ) as uow:
                uow.record(
                    TradingAccount.blank(account_id),
                    TradingAccountOpened(
                        account_id,
                        client_id,
                        self.server.name,
                        login,
                        group.name,
                        group.currency,
                        leverage,
                        group.live,
                    ),
                )
                uow.commit()
        except Exception:
            # The server has an account the CRM failed to record: disable it so it cannot be
            # used, and let reconciliation report it.
            self.server.set_enabled(login, False)
            log.warning("account recording failed; server account disabled", extra={"login": login})
            raise
        return account_id

    def request_leverage(self, actor: Actor, account_id: str, leverage: int) -> LeverageOutcome:
        """Change leverage now, or open an approval when it rises above the approval threshold."""
        account = self.repository.get(TradingAccount, account_id)
        self.access.require(actor, "leverage.request", client_id=account.client_id)
        client = self.repository.get(Client, account.client_id)
        self._require_leverage(client, self._group(account.group), leverage)
        threshold = self.caps.approval_above
        needs_approval = (
            self.approvals is not None
            and threshold is not None
            and leverage > threshold
            and leverage > account.leverage
        )
        if needs_approval:
            assert self.approvals is not None
            request_id = self.approvals.request(
                actor,
                "leverage",
                account_id,
                {"account_id": account_id, "leverage": str(leverage)},
                client_id=account.client_id,
            )
            return LeverageOutcome(account_id, leverage, applied=False, request_id=request_id)
        self._apply(actor.id, account, leverage, key=None)
        return LeverageOutcome(account_id, leverage, applied=True)

    def _apply(
        self, actor_id: str, account: TradingAccount, leverage: int, key: str | None
    ) -> None:
        if leverage == account.leverage:
            return
        self.server.change_leverage(account.login, leverage)  # the server first: it may refuse
        with UnitOfWork(self.repository, EventMetadata(actor_id, reason="leverage change")) as uow:
            uow.record(account, LeverageChanged(account.leverage, leverage))
            uow.commit(idempotency_key=key)

    def _check_leverage(self, params: Mapping[str, str]) -> None:
        account = self.repository.get(TradingAccount, params["account_id"])
        client = self.repository.get(Client, account.client_id)
        self._require_leverage(client, self._group(account.group), int(params["leverage"]))

    def _execute_leverage(self, params: Mapping[str, str], key: str) -> str:
        account = self.repository.get(TradingAccount, params["account_id"])
        self._apply("system:approvals", account, int(params["leverage"]), key=key)
        return f"leverage 1:{params['leverage']}"
