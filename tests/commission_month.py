"""A month of IB commissions on the demo's broker, as importable scenario parts for the parity
harness (tests/test_commission_month.py): the same month gives the same statements, payout
accounts and wallets whether the process restarts after every day's batch or never.

Ana trades every weekday of March 2026 through ib-north (under ib-apex); from 16 March she comes
through ib-east instead; the IBs are paid every Friday evening. The simulated server also
corrects and deletes deals now and then, so adjustments and reversals are in the month too.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fxcrm_core import demo
from fxcrm_core.broker import Broker
from fxcrm_core.commissions import Cadence, PayoutPolicy, RebateBook, build_statement
from fxcrm_core.kernel import Money, RateTable
from fxcrm_core.kernel.errors import NotFoundError
from fxcrm_core.testing.parity import Scenario, Step

MODULE = "tests.commission_month"
IBS = ("ib-apex", "ib-north", "ib-east")
FIRST_DAY = date(2026, 3, 9)  # a Monday
DAYS = 20  # four weeks of weekdays
SWITCH = date(2026, 3, 16)


def weekdays() -> list[date]:
    days: list[date] = []
    day = FIRST_DAY
    while len(days) < DAYS:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


# -- steps ---------------------------------------------------------------------------------------
def move_ana_to_east(broker: Broker) -> list[str]:
    """ib-east joins under ib-apex, its payout policy set by hand; Ana comes through it from
    the switch day on."""
    network = broker.ib_network
    at = _at(SWITCH, 0)
    network.register_ib(demo.ADMIN, "ib-east", "ib-apex", at, reason="new sub-IB agreement")
    ana = broker.clients.find_by_email(demo.OFFICER, demo.ANA_EMAIL)
    assert ana is not None
    network.attribute(demo.ADMIN, ana, "ib-east", at, reason="client asked to move")
    policy = PayoutPolicy(demo.USD, Money.of(10, demo.USD), Cadence.INSTANT)
    broker.payouts.set_policy(demo.FINANCE, "ib-east", policy, reason="sub-IB agreement")
    return network.chain("ib-east", at)


def trading_day(broker: Broker, deals: int) -> dict[str, Any]:
    """A session of ``deals`` deals, pulled into the log; the days that ended are closed."""
    out = demo.trade(broker, deals)
    broker.close_trading_days()
    return {"items": out["items"], "changes": out["changes"]}


def pay(broker: Broker) -> list[dict[str, str | None]]:
    return demo.pay_ibs(broker)


def steps(days: int = DAYS) -> list[Step]:
    setup = [s for s in demo.DAY if s.fn in _SETUP]
    out = [Step(s.title, s.ref, *s.args) for s in setup]
    for day in weekdays()[:days]:
        if day == SWITCH:
            out.append(Step("Ana moves to ib-east", f"{MODULE}:move_ana_to_east", at=_at(day, 1)))
        out.append(Step(f"trading {day}", f"{MODULE}:trading_day", 25, at=_at(day, 9)))
        if day.weekday() == 4:
            out.append(Step(f"payouts {day}", f"{MODULE}:pay", at=_at(day, 22)))
    return out


_SETUP = (
    demo.sign_up,
    demo.pass_kyc,
    demo.verify_and_profile,
    demo.open_account,
    demo.deposit,
    demo.to_trading,
    demo.sign_ibs,
)


# -- probes -------------------------------------------------------------------------------------
def month(broker: Broker) -> dict[str, Any]:
    """Every IB's statement for the month, payout account and wallet, read from the log."""
    entries = [
        e for event in RebateBook.recorded(broker.store, broker.codec) for e in event.entries
    ]
    ana = broker.clients.find_by_email(demo.OFFICER, demo.ANA_EMAIL)
    assert ana is not None
    out: dict[str, Any] = {
        "entries": len(entries),
        "kinds": dict(Counter(e.kind.value for e in entries)),
    }
    for ib in IBS:
        statement = build_statement(
            entries, ib, FIRST_DAY - timedelta(days=7), weekdays()[-1], currency=demo.USD,
            rates=RateTable(), client_names={ana: "Ana Lima"},
        )  # fmt: skip
        account = broker.payouts.account(ib)
        out[ib] = {
            "total": str(statement.total.amount),
            "by_day": {str(k): str(v.amount) for k, v in statement.by_day().items()},
            "lines": len(statement.lines),
            "pending": [(str(d), c, str(a)) for d, c, a in account.pending],
            "carried": str(account.carried.amount) if account.carried else None,
            "payouts": account.sequence,
            "wallet": _wallet(broker, ib),
        }
    out["lag"] = broker.policies.lag()
    return out


def _wallet(broker: Broker, ib: str) -> str | None:
    try:
        return str(broker.ledger.balance(f"ib-wallet:{ib}:USD").net_credit)
    except NotFoundError:  # never paid
        return None


def scenario(days: int = DAYS) -> Scenario:
    """The month, or its first ``days`` weekdays (10: the switch and two Fridays' payouts)."""
    return Scenario(
        build="fxcrm_core.demo:open_demo_broker",
        steps=steps(days),
        probes=[f"{MODULE}:month"],
        probe_every_step=False,
        name="a month of IB commissions",
    )
