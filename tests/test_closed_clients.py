"""A client whose relationship is closed keeps only the right to take out what is left: no
deposit (card, another currency, wire), no transfer in, no conversion, no new account (issue 20
review: an erased client, whose documents still stood, could have been credited a wire)."""

from __future__ import annotations

from typing import Any

import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.clients import Stage
from fxcrm_core.kyc import KycLevelTooLowError, Right
from tests.test_client_transfers import World, usd

REP = Actor.staff("rep-1", Role.SALES)

CLOSED_CALLS: dict[str, Any] = {
    "card deposit": lambda w: w.b.deposits.initiate(
        Actor.client(w.bo), w.bo, usd(10), psp="acq", method="card"
    ),
    "bank wire": lambda w: w.b.wires.declare(
        Actor.client(w.bo), w.bo, usd(10), bank_reference="REF-1", receipt_id="r"
    ),
    "transfer in": lambda w: w.send("t-1", 10),
    "conversion": lambda w: w.b.conversions.convert(Actor.client(w.bo), "c", w.bo, usd(5), "EUR"),
}


def closed_world() -> World:
    w = World()
    w.b.clients.move(Actor.client(w.bo), w.bo, Stage.CLOSED)
    return w


@pytest.mark.parametrize("call", sorted(CLOSED_CALLS))
def test_a_closed_client_takes_no_money_in(call: str) -> None:
    w = closed_world()
    before = w.b.store.last_position()
    with pytest.raises(KycLevelTooLowError, match="closed"):
        CLOSED_CALLS[call](w)
    assert w.b.store.last_position() == before


def test_a_closed_client_may_still_take_money_out() -> None:
    w = World()
    w.b.clients.move(Actor.client(w.ana), w.ana, Stage.CLOSED)
    assert w.b.kyc.level(w.ana) == 3
    w.b.kyc.require(w.ana, Right.WITHDRAW)
    with pytest.raises(KycLevelTooLowError, match="closed"):
        w.send("t-1", 10)  # sending to another client is no withdrawal of what is left
