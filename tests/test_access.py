"""Access control: deny by default, permissions per role, row scopes per role."""

from __future__ import annotations

from typing import ClassVar

import pytest

from fxcrm_core.access import DEFAULT_POLICY, AccessControl, Actor, Role, RowScope
from fxcrm_core.kernel import AccessDeniedError, ValidationError


class Book:
    """Relationships as a host would answer them."""

    owners: ClassVar = {"c-1": "staff:rep-1", "c-2": "staff:rep-2"}
    downlines: ClassVar = {"ib-1": {"c-1", "c-3"}, "ib-2": {"c-2"}}

    def sales_owner(self, client_id: str) -> str | None:
        return self.owners.get(client_id)

    def in_downline(self, ib_id: str, client_id: str) -> bool:
        return client_id in self.downlines.get(ib_id, set())


access = AccessControl(relationships=Book())


def test_clients_see_only_themselves() -> None:
    me = Actor.client("c-1")
    assert access.allows(me, "client.read", client_id="c-1")
    assert not access.allows(me, "client.read", client_id="c-2")
    assert not access.allows(me, "withdrawal.approve", client_id="c-1")


def test_ibs_see_their_downline_only() -> None:
    ib = Actor.ib("ib-1")
    assert access.allows(ib, "client.read", client_id="c-3")
    assert not access.allows(ib, "client.read", client_id="c-2")
    assert not access.allows(ib, "client.update", client_id="c-1")


def test_sales_reps_see_the_clients_they_own() -> None:
    rep = Actor.staff("rep-1", Role.SALES)
    assert access.allows(rep, "client.update", client_id="c-1")
    assert not access.allows(rep, "client.update", client_id="c-2")
    assert not access.allows(rep, "client.update", client_id="unowned")


def test_back_office_roles_see_all_rows_of_what_they_are_granted() -> None:
    finance = Actor.staff("f-1", Role.FINANCE)
    assert access.allows(finance, "withdrawal.approve", client_id="c-2")  # via withdrawal.*
    assert access.allows(finance, "withdrawal.pay")
    assert not access.allows(finance, "kyc.review", client_id="c-2")
    assert not access.allows(finance, "erasure.execute")


def test_unknown_roles_and_permissions_are_denied() -> None:
    stranger = Actor("staff:x", {"intern"})
    assert not access.allows(stranger, "client.read")
    assert not access.allows(Actor.staff("a", Role.ADMIN), "no.such.permission")
    assert not access.allows(Actor("staff:n", set()), "client.read")


def test_without_relationships_row_scopes_fail_closed() -> None:
    blind = AccessControl()
    assert not blind.allows(Actor.ib("ib-1"), "client.read", client_id="c-1")
    assert not blind.allows(Actor.staff("rep-1", Role.SALES), "client.read", client_id="c-1")
    assert blind.allows(Actor.client("c-1"), "client.read", client_id="c-1")


def test_require_raises_a_permission_error_naming_no_client() -> None:
    with pytest.raises(AccessDeniedError) as info:
        access.require(Actor.client("c-1"), "client.read", client_id="c-2")
    assert isinstance(info.value, PermissionError)
    assert "c-2" not in str(info.value)


def test_hosts_define_their_own_roles() -> None:
    policy = DEFAULT_POLICY.with_role("risk", {"account.leverage.*", "client.read"}, RowScope.ALL)
    risk = Actor.staff("r-1", "risk")
    assert AccessControl(policy).allows(risk, "client.read", client_id="c-9")
    assert not AccessControl(DEFAULT_POLICY).allows(risk, "client.read")


def test_a_role_without_a_scope_sees_no_rows() -> None:
    policy = DEFAULT_POLICY.with_role("auditor", {"client.read"}, RowScope.NONE)
    auditor = Actor.staff("a-1", "auditor")
    control = AccessControl(policy, Book())
    assert control.allows(auditor, "client.read")
    assert not control.allows(auditor, "client.read", client_id="c-1")


def test_actor_needs_an_id() -> None:
    with pytest.raises(ValidationError):
        Actor("", {Role.ADMIN})
