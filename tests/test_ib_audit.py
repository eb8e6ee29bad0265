"""Must show (issue 13): re-parenting an IB, changing its rank, a rebate rate and its payout
policy show up with actor, reason and time, in the audit trail and in history queries; as-of answers
before and after each change; a second process on the same SQLite file answers the same."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

from fxcrm_core.access import DEFAULT_POLICY, Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.commissions import PlanKind, Rule, Schedule
from fxcrm_core.commissions.payouts import Cadence, PayoutPolicy
from fxcrm_core.kernel import Currency, FixedClock, Money
from tests.system_world import IDENTITY_KEY, T0, keyring

ADMIN = Actor.staff("ib-desk-1", Role.ADMIN)
FINANCE = Actor.staff("fin-1", Role.FINANCE)
JAN = T0 - timedelta(days=60)
MOVE = T0 + timedelta(days=1)
USD = Currency.of("USD")
DAILY = PayoutPolicy(USD, Money.of(10, "USD"))
WEEKLY = PayoutPolicy(USD, Money.of(50, "USD"), Cadence.WEEKLY)
POLICY = DEFAULT_POLICY  # an admin changes ranks (ib.rank) and schedules (ib.schedule)


def schedule(version: int, gold: str, start: datetime) -> Schedule:
    return Schedule(
        "std", version, start, USD,
        by_symbol={"XAUUSD": Rule(PlanKind.PER_LOT, Money.of(gold, "USD"))},
        default=Rule(PlanKind.PER_LOT, Money.of(2, "USD")),
    )  # fmt: skip


def open_broker(path: Path, *, at: datetime) -> Broker:
    """A process's broker on the file (as tests/system_world.py builds it, with POLICY)."""
    return Broker.sqlite(
        path,
        clock=FixedClock(at),
        keyring=keyring(),
        identity_key=IDENTITY_KEY,
        synchronous="NORMAL",
        policy=POLICY,
    )


def answers(broker: Broker) -> list[object]:
    """What a back office asks about ib-s, at times around the changes."""
    ibs, payouts = broker.ib_network, broker.payouts
    out: list[object] = []
    for at in (JAN, MOVE - timedelta(seconds=1), MOVE):
        out += [ibs.as_of(at), ibs.chain("ib-s", at), ibs.ranks_at(at)]
    out += [ibs.history("ib-s"), ibs.rank_history("ib-s")]
    out += [payouts.policy("ib-s"), payouts.policy_history("ib-s")]
    rates = broker.schedules
    out += [rates.as_of("std", T0), rates.as_of("std", MOVE), rates.history("std")]
    out.append(rates.rate_history("std", "XAUUSD.m", "retail"))
    for at in (T0, T0 + timedelta(hours=1)):
        out.append(payouts.policy_at("ib-s", at))
    return out


def test_tree_rank_and_policy_changes_are_audited_and_answered_alike(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite"
    first = open_broker(path, at=T0)
    first.ib_network.register_ib(ADMIN, "ib-m", None, JAN, reason="master signed")
    first.ib_network.register_ib(ADMIN, "ib-m2", None, JAN, reason="second master signed")
    first.ib_network.register_ib(ADMIN, "ib-s", "ib-m", JAN, reason="sub signed")
    first.payouts.set_policy(FINANCE, "ib-s", DAILY, reason="contract of January")
    first.schedules.record(ADMIN, schedule(1, "3", T0), reason="rates of the year")
    first.close()

    # An hour later, another process makes the changes.
    later = open_broker(path, at=T0 + timedelta(hours=1))
    later.ib_network.reparent(ADMIN, "ib-s", "ib-m2", MOVE, reason="ib-s changed masters")
    later.ib_network.change_rank(ADMIN, "ib-s", 2, MOVE, reason="quarter review")
    later.payouts.set_policy(FINANCE, "ib-s", WEEKLY, reason="weekly from now on")
    later.schedules.record(ADMIN, schedule(2, "5", MOVE), reason="gold promotion")

    later.audit.catch_up(later.store, later.codec)
    audited = {(r.action, r.target): r for r in later.audit.log.records()}
    for action, target, actor in [
        ("IbReparented", "ibnetwork-main", ADMIN.id),
        ("IbRankChanged", "ibnetwork-main", ADMIN.id),
        ("PayoutPolicySet", "ibpayouts-ib-s", FINANCE.id),
        ("ScheduleVersionRecorded", "ibschedule-std", ADMIN.id),
    ]:
        record = audited[(action, target)]
        assert record.actor == actor
        assert record.at == T0 + timedelta(hours=1)
    assert audited[("IbRegistered", "ibnetwork-main")].at == T0
    assert later.audit.verify(later.store) is None

    # History queries carry the reason with the actor and the time.
    moves = later.ib_network.history("ib-s")
    assert [(r.metadata.actor, r.metadata.reason, r.recorded_at) for r in moves] == [
        (ADMIN.id, "sub signed", T0),
        (ADMIN.id, "ib-s changed masters", T0 + timedelta(hours=1)),
        (ADMIN.id, "quarter review", T0 + timedelta(hours=1)),
    ]
    policies = later.payouts.policy_history("ib-s")
    assert [(r.metadata.actor, r.metadata.reason, r.recorded_at) for r in policies] == [
        (FINANCE.id, "contract of January", T0),
        (FINANCE.id, "weekly from now on", T0 + timedelta(hours=1)),
    ]

    gold = later.schedules.rate_history("std", "XAUUSD.m", "retail")
    assert [(r.metadata.actor, r.metadata.reason, r.recorded_at, rule) for r, rule in gold] == [
        (ADMIN.id, "rates of the year", T0, schedule(1, "3", T0).by_symbol["XAUUSD"]),
        (
            ADMIN.id,
            "gold promotion",
            T0 + timedelta(hours=1),
            schedule(2, "5", MOVE).by_symbol["XAUUSD"],
        ),
    ]

    # As of before and after each change.
    assert later.schedules.as_of("std", MOVE - timedelta(seconds=1)).version == 1
    assert later.schedules.as_of("std", MOVE).version == 2
    ibs = later.ib_network
    assert ibs.chain("ib-s", MOVE - timedelta(seconds=1)) == ["ib-s", "ib-m"]
    assert ibs.chain("ib-s", MOVE) == ["ib-s", "ib-m2"]
    assert ibs.rank_of("ib-s", MOVE - timedelta(seconds=1)) == 0
    assert ibs.rank_of("ib-s", MOVE) == 2
    assert ibs.as_recorded(T0).chain("ib-s", MOVE) == ["ib-s", "ib-m"]  # as known then
    assert later.payouts.policy_at("ib-s", T0) == DAILY
    assert later.payouts.policy_at("ib-s", T0 + timedelta(hours=1)) == WEEKLY

    # A second process on the same file, and a restart, answer identically.
    second = open_broker(path, at=T0 + timedelta(hours=2))
    assert answers(second) == answers(later)
    later.close()
    second.close()
    restarted = open_broker(path, at=T0 + timedelta(hours=3))
    reference = open_broker(path, at=T0 + timedelta(hours=3))
    assert answers(restarted) == answers(reference)
    assert answers(restarted)[-1] == WEEKLY
    restarted.close()
    reference.close()

    # And a real second process: the same answers, printed there and read here.
    script = f"""
        from datetime import datetime
        from pathlib import Path
        from tests.test_ib_audit import answers, open_broker
        at = datetime.fromisoformat({(T0 + timedelta(hours=4)).isoformat()!r})
        broker = open_broker(Path({str(path)!r}), at=at)
        print(repr(answers(broker)))
        broker.close()
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        check=True,
        cwd=Path.cwd(),
        capture_output=True,
        text=True,
    ).stdout
    here = open_broker(path, at=T0 + timedelta(hours=4))
    assert out.strip() == repr(answers(here))
    here.close()
