"""The points balance law (hypothesis): any sequence of deals added, updated and deleted,
deposits and chargebacks, redemptions and expiries keeps every client's balance at zero or more
and equal to the sum of its lots' remainders; what was earned less what was taken is the
balance; a reversed lot keeps nothing; a live deal's lot counts what the deal earns now; and a
fresh process reading the log answers the same."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.loyalty import (
    InsufficientPointsError,
    PointsAdjusted,
    PointsEarned,
    PointsExpired,
    PointsRedeemed,
    PointsRepriced,
    PointsReversed,
)
from fxcrm_core.trading import Deal, DealChange
from tests.test_loyalty_points import ADMIN, T0, World

LOTS = st.sampled_from(["0.01", "0.1", "0.5", "1", "2", "3.5"])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("deal"), LOTS, st.integers(0, 40)),
        st.tuples(st.just("update"), LOTS, st.integers(0, 30)),
        st.tuples(st.just("delete"), st.just("0"), st.integers(0, 30)),
        st.tuples(st.just("redeem"), st.sampled_from(["1", "5", "10", "25"]), st.integers(0, 3)),
        st.tuples(st.just("expire"), st.just("0"), st.integers(1, 20)),
        st.tuples(st.just("deposit"), st.sampled_from(["50", "200", "1000"]), st.integers(0, 5)),
        st.tuples(st.just("chargeback"), st.just("0"), st.integers(0, 10)),
    ),
    max_size=25,
)


def ledger_of_events(w: World, client_id: str) -> Decimal:
    """Earned less taken, from the events alone (not the account's fold)."""
    total = Decimal(0)
    for recorded in w.points.history(client_id):
        e = recorded.event
        if isinstance(e, PointsEarned):
            total += e.points
        elif isinstance(e, PointsRepriced):
            total += e.added - sum((p for _, p in e.taken), Decimal(0))
        elif isinstance(e, PointsReversed | PointsRedeemed | PointsExpired):
            total -= sum((p for _, p in e.taken), Decimal(0))
        elif isinstance(e, PointsAdjusted):
            total += max(e.points, Decimal(0)) - sum((p for _, p in e.taken), Decimal(0))
    return total


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_any_sequence_keeps_the_balance_non_negative_and_equal_to_the_lots(
    steps: list[tuple[str, str, int]],
) -> None:
    w = World()
    deals: dict[int, Deal] = {}
    live: dict[int, Decimal] = {}  # ticket -> the lots the deal closes now
    deposits: list[str] = []
    charged: set[str] = set()
    for n, (op, value, k) in enumerate(steps):
        if op == "deal":
            deal = w.deal(value, at=T0 + timedelta(days=k))
            deals[deal.ticket], live[deal.ticket] = deal, Decimal(value)
            w.pull()
        elif op in ("update", "delete") and deals:
            ticket = sorted(deals)[k % len(deals)]
            if op == "update":
                w.change(deals[ticket], DealChange.UPDATED, lots=value)
                if ticket in live:
                    live[ticket] = Decimal(value)
            else:
                w.change(deals[ticket], DealChange.DELETED)
                live.pop(ticket, None)
            w.pull()
        elif op == "redeem":
            w.clock.set(T0 + timedelta(days=10 * k))
            with contextlib.suppress(InsufficientPointsError):
                w.points.redeem(ADMIN, "c1", Decimal(value), request_id=f"r{n}")
        elif op == "expire":
            w.clock.set(T0 + timedelta(days=3 * k))
            w.points.expire(T0 + timedelta(days=3 * k))
        elif op == "deposit":
            w.clock.set(T0 + timedelta(days=k))
            w.deposit(f"d{n}", "c1", value)
            deposits.append(f"d{n}")
        elif op == "chargeback" and deposits:
            deposit_id = deposits[k % len(deposits)]
            if deposit_id not in charged:
                w.chargeback(deposit_id)
                charged.add(deposit_id)
        account = w.points.account("c1")
        assert account.balance >= 0
        assert account.balance == sum((lot.remaining for lot in account.lots), Decimal(0))
        assert account.balance == ledger_of_events(w, "c1")
        for lot in account.lots:
            assert Decimal(0) <= lot.remaining <= lot.amount
            if lot.reversed:
                assert lot.remaining == 0
    account = w.points.account("c1")
    for ticket, lots in live.items():
        found = account.lot(f"deal:mt5:{ticket}")
        assert (found.amount if found else Decimal(0)) == lots * 10
    fresh = World(w.repository.store, clock=w.clock)
    assert fresh.points.account("c1").lots == account.lots
    assert fresh.points.account("c1").balance == account.balance
