"""Who may do what to whom: roles grant permissions, scopes limit rows; deny by default.

A permission is ``"<resource>.<action>"`` (``"withdrawal.approve"``); a grant of
``"withdrawal.*"`` covers every action on withdrawals. A role's row scope says which clients'
records it may touch: its own (client), its downline (IB), the clients it owns (sales), all
(back-office roles), or none. Unknown roles, permissions and scopes are denied.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import attrs

from fxcrm_core.kernel.errors import AccessDeniedError, ArgumentTypeError, ValidationError

__all__ = [
    "DEFAULT_POLICY",
    "AccessControl",
    "AccessPolicy",
    "Actor",
    "Relationships",
    "Role",
    "RowScope",
]

log = logging.getLogger("fxcrm_core.access")


class Role:
    """The roles fxcrm_core knows; hosts add their own names to an AccessPolicy."""

    CLIENT = "client"
    IB = "ib"
    SALES = "sales"
    SUPPORT = "support"
    COMPLIANCE = "compliance"
    FINANCE = "finance"
    ADMIN = "admin"
    PORTAL = "portal"  # the client portal acting before a client exists (self-registration)


class RowScope(enum.Enum):
    NONE = "none"
    OWN = "own"  # the actor's own client record
    DOWNLINE = "downline"  # clients attributed to the IB or its sub-IBs
    OWNED = "owned"  # clients the sales rep owns
    ALL = "all"


def _roles(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen
class Actor:
    """The person or system acting. ``id`` is an opaque reference stored in event metadata.

    One person has one id whatever roles they hold, which is what maker-checker compares.
    """

    id: str
    roles: frozenset[str] = attrs.field(converter=_roles)
    client_id: str | None = None
    ib_id: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.id:
            raise ValidationError("an actor needs an id")

    @classmethod
    def staff(cls, staff_id: str, *roles: str) -> Actor:
        return cls(f"staff:{staff_id}", frozenset(roles))

    @classmethod
    def client(cls, client_id: str) -> Actor:
        return cls(f"client:{client_id}", frozenset({Role.CLIENT}), client_id=client_id)

    @classmethod
    def ib(cls, ib_id: str) -> Actor:
        return cls(f"ib:{ib_id}", frozenset({Role.IB}), ib_id=ib_id)

    @classmethod
    def system(cls, name: str, *roles: str) -> Actor:
        return cls(f"system:{name}", frozenset(roles))


@runtime_checkable
class Relationships(Protocol):
    """Answers row-level questions from the clients and commissions contexts (or the host)."""

    def sales_owner(self, client_id: str) -> str | None:
        """The actor id of the sales rep owning the client, if any."""
        ...

    def in_downline(self, ib_id: str, client_id: str) -> bool:
        """True if the client is attributed to the IB or to an IB below it."""
        ...


def _grants(value: Mapping[str, Iterable[str]]) -> Mapping[str, frozenset[str]]:
    """The grants checked and frozen (a read-only copy: a host's dict changed later, or a
    write to a policy shared by several brokers, cannot widen what a role may do)."""
    if not isinstance(value, Mapping):
        raise ValidationError("grants map each role to its permissions")
    frozen: dict[str, frozenset[str]] = {}
    for role, perms in value.items():
        if not isinstance(role, str) or not role.strip():
            raise ValidationError("a role is non-empty text")
        if isinstance(perms, str) or not all(isinstance(p, str) and p for p in perms):
            raise ValidationError("a role's permissions are a set of non-empty texts")
        frozen[role] = frozenset(perms)
    return MappingProxyType(frozen)


def _scopes(value: Mapping[str, RowScope]) -> Mapping[str, RowScope]:
    if not isinstance(value, Mapping) or not all(
        isinstance(role, str) and isinstance(scope, RowScope) for role, scope in value.items()
    ):
        raise ValidationError("scopes map each role to a RowScope")
    return MappingProxyType(dict(value))


@attrs.frozen
class AccessPolicy:
    """Permissions and row scopes per role (read-only copies of what the host gave)."""

    grants: Mapping[str, frozenset[str]] = attrs.field(converter=_grants)
    scopes: Mapping[str, RowScope] = attrs.field(factory=dict, converter=_scopes)

    def with_role(self, role: str, permissions: Iterable[str], scope: RowScope) -> AccessPolicy:
        """A copy with a host-defined role (or a role redefined)."""
        return AccessPolicy(
            {**self.grants, role: frozenset(permissions)}, {**self.scopes, role: scope}
        )

    def grants_permission(self, role: str, permission: str) -> bool:
        granted = self.grants.get(role, frozenset())
        if permission in granted:
            return True
        resource = permission.split(".", 1)[0]
        return f"{resource}.*" in granted


DEFAULT_POLICY = AccessPolicy(
    grants={
        Role.CLIENT: {
            "client.read",
            "client.update",
            "kyc.submit",
            "account.open",
            "leverage.request",
            "deposit.request",
            "withdrawal.request",
            "transfer.request",
            "instrument.manage",
            "ib.apply",
            "wire.request",
            "account.password",
            "points.redeem",
            "complaint.open",
            "complaint.read",
            "survey.answer",
            "announcement.ack",
        },
        Role.IB: {"client.read", "commission.read", "statement.read"},
        Role.SALES: {"client.read", "client.update", "client.note", "client.register", "note.read"},
        Role.SUPPORT: {
            "client.read",
            "client.register",
            "kyc.read",
            "account.open",
            "leverage.request",
            "account.password",
            "complaint.open",
            "complaint.read",
            "complaint.handle",
            "survey.send",
            "survey.read",
            "client.note",
            "note.read",
        },
        Role.COMPLIANCE: {
            "client.read",
            "kyc.*",
            "withdrawal.approve",
            "leverage.approve",
            "instrument.verify",
            "erasure.*",
            "audit.read",
            "pii.reveal",
            "client.export",
            "account.status",
            "account_change.approve",
            "tier_override.approve",
            "points_adjust.approve",
            "complaint.read",
            "complaint.handle",
            "survey.read",
            "note.read",
            "pii.export",
        },
        Role.FINANCE: {
            "client.read",
            "deposit.*",
            "withdrawal.*",
            "transfer.*",
            "payout.*",
            "adjustment.*",
            "instrument.verify",
            "rate.*",
            "wire.*",
            "account.group",
            "account_change.request",
            "bonus.grant",
            "ib_rank.approve",
        },
        Role.ADMIN: {
            "client.read",
            "survey.read",
            "note.read",
            "task.assign",
            "announcement.publish",
            "client.assign",
            "role.assign",
            "audit.read",
            "ib.manage",
            "ib.approve",
            "ib.rank",
            "ib.schedule",
            "tier.programme",
            "tier_override.request",
            "points_adjust.request",
            "ib_rank.programme",
            "ib_rank.request",
        },
        Role.PORTAL: {"client.register"},
    },
    scopes={
        Role.CLIENT: RowScope.OWN,
        Role.IB: RowScope.DOWNLINE,
        Role.SALES: RowScope.OWNED,
        Role.SUPPORT: RowScope.ALL,
        Role.COMPLIANCE: RowScope.ALL,
        Role.FINANCE: RowScope.ALL,
        Role.ADMIN: RowScope.ALL,
        Role.PORTAL: RowScope.NONE,
    },
)


def _check_actor(actor: object) -> None:
    if not isinstance(actor, Actor):
        raise ArgumentTypeError("an access check needs an Actor (who asks)")


class AccessControl:
    """Checks permissions at the service layer.

    >>> access = AccessControl()
    >>> access.allows(Actor.client("c-1"), "withdrawal.request", client_id="c-1")
    True
    >>> access.allows(Actor.client("c-1"), "withdrawal.request", client_id="c-2")
    False
    """

    def __init__(
        self, policy: AccessPolicy = DEFAULT_POLICY, relationships: Relationships | None = None
    ) -> None:
        self.policy = policy
        self.relationships = relationships

    def allows(self, actor: Actor, permission: str, *, client_id: str | None = None) -> bool:
        """True if one of the actor's roles grants ``permission`` on that client's rows."""
        _check_actor(actor)
        return any(
            self.policy.grants_permission(role, permission)
            and (client_id is None or self._in_scope(actor, role, client_id))
            for role in actor.roles
        )

    def roles_allowing(
        self, actor: Actor, permission: str, *, client_id: str | None = None
    ) -> frozenset[str]:
        """The actor's roles that grant ``permission`` on that client's rows (what a read is
        masked for: a role that may not read the client lends it no view of its data)."""
        _check_actor(actor)
        return frozenset(
            role
            for role in actor.roles
            if self.policy.grants_permission(role, permission)
            and (client_id is None or self._in_scope(actor, role, client_id))
        )

    def require(self, actor: Actor, permission: str, *, client_id: str | None = None) -> None:
        """Raise AccessDeniedError unless :meth:`allows`."""
        if not self.allows(actor, permission, client_id=client_id):
            log.info("access denied", extra={"actor": actor.id, "permission": permission})
            raise AccessDeniedError(f"{actor.id} may not {permission} here")

    def _in_scope(self, actor: Actor, role: str, client_id: str) -> bool:
        scope = self.policy.scopes.get(role, RowScope.NONE)
        if scope is RowScope.ALL:
            return True
        if scope is RowScope.OWN:
            return actor.client_id is not None and actor.client_id == client_id
        rel = self.relationships
        if rel is None:
            return False  # fail closed: no way to know the relationship
        if scope is RowScope.DOWNLINE:
            return actor.ib_id is not None and rel.in_downline(actor.ib_id, client_id)
        if scope is RowScope.OWNED:
            return rel.sales_owner(client_id) == actor.id
        return False
