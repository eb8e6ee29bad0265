"""Account services on an open trading account: password reset, group change (the leverage
re-checked against the new group's cap) and status (enabled, read-only, disabled).

Each needs a permission on the account's client, runs through maker-checker where configured,
calls the trading server with the request id as its idempotency key and records what the server
did on the account's stream, with who and why in the metadata (the audit trail's record). A
retry of a recorded request is answered from the log; a retry after a failure between the
server call and the append finds the key applied on the server and records that outcome.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection, Mapping

import attrs

from fxcrm_core.access import Actor, ApprovalRule
from fxcrm_core.accounts.model import (
    AccountGroupChanged,
    AccountStatusChanged,
    TradingAccount,
    TradingPasswordReset,
)
from fxcrm_core.accounts.passwords import (
    MT5_PASSWORD_RULES,
    PasswordRules,
    TradingPassword,
    WeakPasswordError,
)
from fxcrm_core.accounts.service import Accounts
from fxcrm_core.clients.model import Client
from fxcrm_core.events import DomainEvent, EventMetadata, UnitOfWork
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    FxCrmError,
    IdempotencyConflictError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.trading.server import AccountNotFoundError, AccountStatus, TradingServerError

__all__ = [
    "ACCOUNT_CHANGE_ACTION",
    "AccountChange",
    "AccountChangeOutcome",
    "AccountChanges",
    "PasswordLostError",
    "PasswordReset",
]

log = logging.getLogger("fxcrm_core.accounts")

#: The maker-checker action of group and status changes (``account_change.request`` and
#: ``account_change.approve`` permissions).
ACCOUNT_CHANGE_ACTION = "account_change"
_APPROVER = "system:approvals"


class AccountChange(enum.Enum):
    """An account change that may be put under maker-checker (a password reset may not: its
    secret would wait in the approval's record)."""

    GROUP = "group"
    STATUS = "status"


class PasswordLostError(FxCrmError, RuntimeError):
    """The server took this request's generated password, but a failure kept it from the
    caller; the reset is recorded. Reset again with a new request id."""

    default_message = (
        "the password was reset but the generated password was lost in a failure; "
        "reset again with a new request id"
    )


@attrs.frozen
class PasswordReset:
    """What a reset answers. ``password`` is given once, to the call that set it (None on a
    retry of a recorded request: the log never holds it)."""

    account_id: str
    request_id: str
    password: TradingPassword | None
    replayed: bool = False


@attrs.frozen
class AccountChangeOutcome:
    """What a group or status change answers: ``applied`` False while it waits for approval
    (``approval_id``); ``replayed`` True when the request was recorded before."""

    account_id: str
    request_id: str
    applied: bool
    approval_id: str | None = None
    replayed: bool = False


def _check_text(value: object, what: str) -> str:
    """The text as given (it names server keys and records): no padding, no control character."""
    if checked_text(value, what.removeprefix("a ")) != value:
        raise ValidationError(f"{what} has no surrounding spaces")
    assert isinstance(value, str)
    return value


def _server_key(account: TradingAccount, request_id: str, kind: str = "change") -> str:
    # Request ids are unique per account (its stream holds them): the key names both. A
    # password has keys of its own, so that a conflict on one can only mean another secret
    # under that reset (a generated one lost in a failure), never a group or status change.
    return f"account-{kind}:{account.id}:{request_id}"


class AccountChanges:
    """Password reset, group change and status of trading accounts opened through ``accounts``.

    ``approve``: the changes that go through maker-checker (action ``account_change``).
    ``password_rules``: what the trading server accepts (checked before it is asked).
    """

    def __init__(
        self,
        accounts: Accounts,
        *,
        approve: Collection[AccountChange] = (),
        password_rules: PasswordRules = MT5_PASSWORD_RULES,
    ) -> None:
        self.accounts = accounts
        self.repository = accounts.repository
        self.access = accounts.access
        self.server = accounts.server
        self.password_rules = password_rules
        self.approve = frozenset(approve)
        if not all(isinstance(change, AccountChange) for change in self.approve):
            raise ValidationError("maker-checker is configured per AccountChange (group, status)")
        self.approvals = accounts.approvals
        if self.approve:
            if self.approvals is None:
                raise ValidationError("maker-checker on account changes needs an Approvals")
            self.approvals.register(
                ACCOUNT_CHANGE_ACTION,
                ApprovalRule(execute=self._execute_approved, check=self._check_approved),
            )

    # -- password ----------------------------------------------------------------------------
    def reset_password(
        self,
        actor: Actor,
        account_id: str,
        *,
        request_id: str,
        password: str | None = None,
        reason: str = "password reset",
    ) -> PasswordReset:
        """Set a new password (``password``, or one generated when None) and return it once.

        The log records that the reset happened, by whom and why, and what the server said,
        never the password. A retry with the same request id and password changes nothing
        twice; with another password it is an IdempotencyConflictError.
        """
        account = self.repository.get(TradingAccount, account_id)
        self.access.require(actor, "account.password", client_id=account.client_id)
        if password is not None and actor.client_id != account.client_id:
            # Staff trigger a generated password only: one who could choose it could log in
            # to the client's account.
            raise AccessDeniedError("only the client chooses its own trading password")
        _check_text(request_id, "a request id")
        _check_text(reason, "a reason")
        if self._recorded(account, request_id, "password"):
            return PasswordReset(account_id, request_id, None, replayed=True)
        if password is None:
            secret = self.password_rules.generate()
        else:
            self.password_rules.check(password)
            secret = TradingPassword(password)
        lost = False
        try:
            applied = self.server.change_password(
                account.login,
                secret.reveal(),
                idempotency_key=_server_key(account, request_id, "password"),
            )
        except IdempotencyConflictError:
            if password is not None:
                raise IdempotencyConflictError(
                    "this request id was used on the server for another change"
                ) from None
            applied, lost = False, True  # the first attempt's generated password: never shown
        except Exception as exc:  # whatever the adapter says, the secret is not passed on
            raise _password_refusal(exc) from None
        self._record(
            actor.id,
            reason,
            account,
            TradingPasswordReset(request_id, generated=password is None, applied=applied),
        )
        log.info(
            "trading password reset",
            extra={"account_id": account_id, "actor": actor.id, "request_id": request_id},
        )
        if lost:
            raise PasswordLostError()
        return PasswordReset(account_id, request_id, secret)

    # -- group -------------------------------------------------------------------------------
    def change_group(
        self, actor: Actor, account_id: str, group: str, *, request_id: str, reason: str
    ) -> AccountChangeOutcome:
        """Move the account to another group of the same kind (live or demo) and currency.

        The account's leverage must be within the client's cap in the new group (group, risk
        profile, jurisdiction); above it the change is refused (LeverageAboveCapError): lower
        the leverage first, then change the group. Nothing is lowered behind the client's back.
        """
        account = self.repository.get(TradingAccount, account_id)
        self.access.require(actor, "account.group", client_id=account.client_id)
        _check_text(request_id, "a request id")
        _check_text(reason, "a reason")
        _check_text(group, "a group")
        if self._recorded(account, request_id, f"group:{group}"):
            return AccountChangeOutcome(account_id, request_id, applied=True, replayed=True)
        self._check_group(account, group)
        if AccountChange.GROUP in self.approve:
            return self._request_approval(actor, account, "group", group, request_id, reason)
        self._apply_group(actor.id, reason, account, group, request_id)
        return AccountChangeOutcome(account_id, request_id, applied=True)

    def _check_group(self, account: TradingAccount, name: str) -> None:
        group = self.accounts._group(name)
        if group.live != account.live:
            raise IllegalTransitionError("a group change keeps a live account live, a demo demo")
        if group.currency != account.currency:
            raise ValidationError("a group change keeps the account's currency")
        client = self.repository.get(Client, account.client_id)
        self.accounts._require_leverage(client, group, account.leverage)

    def _apply_group(
        self, actor_id: str, reason: str, account: TradingAccount, group: str, request_id: str
    ) -> None:
        applied = self.server.change_group(
            account.login, group, idempotency_key=_server_key(account, request_id)
        )
        now = group if applied else self.server.account_state(account.login).group
        self._record(
            actor_id,
            reason,
            account,
            AccountGroupChanged(request_id, group, account.group, now, applied),
        )

    # -- status ------------------------------------------------------------------------------
    def set_status(
        self,
        actor: Actor,
        account_id: str,
        status: AccountStatus,
        *,
        request_id: str,
        reason: str,
    ) -> AccountChangeOutcome:
        """Enable the account, make it read-only (log in, no trading) or disable it."""
        account = self.repository.get(TradingAccount, account_id)
        self.access.require(actor, "account.status", client_id=account.client_id)
        if not isinstance(status, AccountStatus):
            raise ValidationError("a status is an AccountStatus")
        _check_text(request_id, "a request id")
        _check_text(reason, "a reason")
        if self._recorded(account, request_id, f"status:{status.value}"):
            return AccountChangeOutcome(account_id, request_id, applied=True, replayed=True)
        if AccountChange.STATUS in self.approve:
            return self._request_approval(
                actor, account, "status", status.value, request_id, reason
            )
        self._apply_status(actor.id, reason, account, status, request_id)
        return AccountChangeOutcome(account_id, request_id, applied=True)

    def _apply_status(
        self,
        actor_id: str,
        reason: str,
        account: TradingAccount,
        status: AccountStatus,
        request_id: str,
    ) -> None:
        applied = self.server.set_status(
            account.login, status, idempotency_key=_server_key(account, request_id)
        )
        now = status if applied else self.server.account_state(account.login).status
        self._record(
            actor_id,
            reason,
            account,
            AccountStatusChanged(request_id, status, account.status, now, applied),
        )

    # -- shared ------------------------------------------------------------------------------
    @staticmethod
    def _recorded(account: TradingAccount, request_id: str, asked: str) -> bool:
        """True if this request is in the log already; another change under its id is a
        conflict (one request id, one change)."""
        done = account.requests.get(request_id)
        if done is None:
            return False
        if done != asked:
            raise IdempotencyConflictError("this request id was used for another account change")
        return True

    def _record(
        self, actor_id: str, reason: str, account: TradingAccount, event: DomainEvent
    ) -> None:
        with UnitOfWork(self.repository, EventMetadata(actor_id, reason=reason)) as uow:
            uow.record(account, event)
            uow.commit()

    def _request_approval(
        self,
        maker: Actor,
        account: TradingAccount,
        change: str,
        value: str,
        request_id: str,
        reason: str,
    ) -> AccountChangeOutcome:
        assert self.approvals is not None  # checked at construction
        approval_id = self.approvals.request(
            maker,
            ACCOUNT_CHANGE_ACTION,
            account.id,
            {
                "account_id": account.id,
                "change": change,
                "value": value,
                "request_id": request_id,
                "reason": reason,
            },
            client_id=account.client_id,
        )
        return AccountChangeOutcome(account.id, request_id, applied=False, approval_id=approval_id)

    def _check_approved(self, params: Mapping[str, str]) -> None:
        account = self.repository.get(TradingAccount, params["account_id"])
        if params["change"] == "group":
            self._check_group(account, params["value"])
        else:
            AccountStatus(params["value"])

    def _execute_approved(self, params: Mapping[str, str], key: str) -> str:
        # The request id, not the approval's key, keys the server call: a maker's retried
        # request, approved twice, still changes the account once.
        account = self.repository.get(TradingAccount, params["account_id"])
        request_id, value = params["request_id"], params["value"]
        asked = f"{params['change']}:{value}"
        if not self._recorded(account, request_id, asked):
            reason = f"{params['reason']} (approved)"
            if params["change"] == "group":
                self._apply_group(_APPROVER, reason, account, value, request_id)
            else:
                self._apply_status(_APPROVER, reason, account, AccountStatus(value), request_id)
        return f"{params['change']} {value}"


def _password_refusal(exc: Exception) -> FxCrmError:
    """The adapter's error as a typed one with a fixed message (it might quote the secret)."""
    if isinstance(exc, ValidationError):
        return WeakPasswordError("the trading server refused this password (its rules)")
    if isinstance(exc, NotFoundError):
        return AccountNotFoundError()
    return TradingServerError("the trading server refused the password change")
