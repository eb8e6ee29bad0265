"""An actor with several roles sees a client's data as the roles that let it read that client
allow, never as another of its roles would (issue 19's review)."""

from __future__ import annotations

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration

PORTAL = Actor.system("portal", Role.PORTAL)


def test_a_second_role_lends_no_view_of_a_client_it_may_not_read() -> None:
    broker = Broker.in_memory(allow_clear_pii=True)
    ana = broker.clients.register(
        PORTAL,
        Registration(
            ClientKind.INDIVIDUAL, "GB", "Ana Lima", "ana.lima@example.com", "+447911123456",
            owner_id="staff:rep-1",
        ),
    )  # fmt: skip
    support = Actor.staff("sam", Role.SUPPORT)
    # Sam also sells, but does not own Ana: only the support role reads her record.
    both = Actor.staff("sam", Role.SUPPORT, Role.SALES)
    assert broker.clients.get(both, ana) == broker.clients.get(support, ana)
    assert broker.clients.get(both, ana).email != "ana.lima@example.com"
