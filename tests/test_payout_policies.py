"""Payout policies as events: set by hand with a permission, actor and reason; seeded from the
host's configuration as ``system:config``, once whatever the number of processes; read from the
log by every process; each payout names the policy version it followed; no currency change
while money is owed in the old one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.commissions import PayoutHeld, PayoutMade, RemainderCarried
from fxcrm_core.commissions.payouts import (
    Cadence,
    PayoutCurrencyChangeError,
    PayoutPolicy,
    PayoutPolicySet,
)
from fxcrm_core.events import iter_all
from fxcrm_core.kernel import AccessDeniedError, Currency, Money, ValidationError
from fxcrm_core.stores import SqliteEventStore
from tests.test_payouts import MON, RUNNER, Env, entry, memory

USD, EUR = Currency.of("USD"), Currency.of("EUR")
FINANCE = Actor.staff("fin-9", Role.FINANCE)
BASIC = PayoutPolicy(USD, Money.of(10, "USD"))
STRICT = PayoutPolicy(USD, Money.of(100, "USD"), Cadence.WEEKLY)


def policy_events(env: Env) -> list[Any]:
    return [
        env.repo.codec.decode(s)
        for s in iter_all(env.store)
        if s.event_type == PayoutPolicySet.__name__
    ]


def test_a_policy_set_by_hand_is_recorded_with_actor_and_reason_and_followed() -> None:
    env = Env(memory())
    assert env.payouts.set_policy(FINANCE, "ib-1", BASIC, reason="signed contract") == 1
    assert env.payouts.set_policy(FINANCE, "ib-1", BASIC, reason="again") == 1  # no change
    [recorded] = env.payouts.policy_history("ib-1")
    assert recorded.event == PayoutPolicySet("ib-1", BASIC, from_config=False)
    assert (recorded.metadata.actor, recorded.metadata.reason) == (FINANCE.id, "signed contract")
    assert env.payouts.policy("ib-1") == BASIC
    env.accrue(entry("50"))
    assert env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1)).paid == Money.of(50, "USD")


def test_setting_a_policy_needs_the_permission_a_reason_and_a_coherent_policy() -> None:
    env = Env(memory())
    before = env.store.last_position()
    with pytest.raises(AccessDeniedError):
        env.payouts.set_policy(Actor.ib("ib-1"), "ib-1", BASIC, reason="I want it daily")
    with pytest.raises(ValidationError):
        env.payouts.set_policy(FINANCE, "ib-1", BASIC, reason=" ")
    bad = [
        PayoutPolicy(USD, Money.of(10, "EUR")),
        PayoutPolicy(USD, Money.of(-1, "USD")),
        PayoutPolicy(USD, Money.of(1, "USD"), hold=timedelta(hours=12)),
        PayoutPolicy(USD, Money.of(1, "USD"), hold=timedelta(days=-1)),
        PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(5, "EUR")),
    ]
    for policy in bad:
        with pytest.raises(ValidationError):
            env.payouts.set_policy(FINANCE, "ib-1", policy, reason="x")
    assert env.store.last_position() == before


def test_the_configured_policy_is_recorded_once_as_system_config() -> None:
    env = Env(memory(), {"ib-1": BASIC, "ib-2": STRICT})
    assert env.payouts.ensure_policies() == ["ib-1", "ib-2"]
    assert env.payouts.ensure_policies() == []
    again = Env(env.store, {"ib-1": BASIC, "ib-2": STRICT})  # a restart: nothing new
    assert again.payouts.ensure_policies() == []
    recorded = policy_events(env)
    assert [(r.event.ib_id, r.event.from_config) for r in recorded] == [
        ("ib-1", True),
        ("ib-2", True),
    ]
    assert {r.metadata.actor for r in recorded} == {"system:config"}


def test_a_run_records_the_configured_policy_first_and_names_its_version() -> None:
    env = Env(memory(), {"ib-1": BASIC})
    env.accrue(entry("50"), entry("5", MON + timedelta(days=1), ticket=2))
    env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert env.payouts.account("ib-1").policy_version == 1
    env.payouts.set_policy(FINANCE, "ib-1", STRICT, reason="monthly review: weekly, 100 min")
    below = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=7))  # 5 < 100: carried
    assert below.paid is None
    events = [env.repo.codec.decode(s).event for s in iter_all(env.store)]
    made = [e for e in events if isinstance(e, PayoutMade)]
    carried = [e for e in events if isinstance(e, RemainderCarried)]
    assert [m.policy_version for m in made] == [1]
    assert [c.policy_version for c in carried] == [2]


def test_a_change_by_hand_stands_until_the_configuration_changes() -> None:
    store = memory()
    env = Env(store, {"ib-1": BASIC})
    env.payouts.ensure_policies()
    env.payouts.set_policy(FINANCE, "ib-1", STRICT, reason="agreed with the IB")
    restarted = Env(store, {"ib-1": BASIC})  # the same configuration deployed again
    assert restarted.payouts.ensure_policies() == []
    assert restarted.payouts.policy("ib-1") == STRICT
    raised = PayoutPolicy(USD, Money.of(20, "USD"))
    deployed = Env(store, {"ib-1": raised})  # a new configuration
    assert deployed.payouts.policy("ib-1") == raised  # what the next run will follow
    assert deployed.payouts.ensure_policies() == ["ib-1"]
    assert [r.metadata.actor for r in deployed.payouts.policy_history("ib-1")] == [
        "system:config",
        FINANCE.id,
        "system:config",
    ]


def test_two_processes_starting_at_once_record_the_configuration_once(tmp_path: Path) -> None:
    path = tmp_path / "payouts.sqlite"
    first = Env(SqliteEventStore(path), {"ib-1": BASIC})
    second = Env(SqliteEventStore(path), {"ib-1": BASIC})
    real = first.store.append

    def append(*args: Any, **kwargs: Any) -> Any:
        first.store.append = real  # type: ignore[method-assign]
        assert second.payouts.ensure_policies() == ["ib-1"]  # the other process wins
        return real(*args, **kwargs)

    first.store.append = append  # type: ignore[method-assign]
    assert first.payouts.ensure_policies() == []
    assert len(policy_events(first)) == 1


def test_every_process_reads_the_same_policy_and_its_history(tmp_path: Path) -> None:
    path = tmp_path / "payouts.sqlite"
    env = Env(SqliteEventStore(path), {"ib-1": BASIC})
    env.payouts.ensure_policies()
    env.payouts.set_policy(FINANCE, "ib-1", STRICT, reason="review")
    other = Env(SqliteEventStore(path), {"ib-1": BASIC})  # another process, same configuration
    assert other.payouts.policy("ib-1") == env.payouts.policy("ib-1") == STRICT
    mine, theirs = env.payouts.policy_history("ib-1"), other.payouts.policy_history("ib-1")
    assert mine == theirs
    changed_at = mine[1].recorded_at
    assert other.payouts.policy_at("ib-1", changed_at - timedelta(microseconds=1)) == BASIC
    assert other.payouts.policy_at("ib-1", changed_at) == STRICT
    assert other.payouts.policy_at("ib-1", datetime(2000, 1, 1, tzinfo=UTC)) is None


def test_no_currency_change_while_money_is_owed_in_the_old_currency() -> None:
    env = Env(memory(), {"ib-1": BASIC})
    env.accrue(entry("5"))  # 5 < the 10 minimum: carried in USD after the run
    env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    in_euros = PayoutPolicy(EUR, Money.of(10, "EUR"))
    before = env.store.last_position()
    with pytest.raises(PayoutCurrencyChangeError):
        env.payouts.set_policy(FINANCE, "ib-1", in_euros, reason="IB moved to Europe")
    assert env.store.last_position() == before
    # A configuration change is refused the same way, for that IB only, at its next run.
    env.payouts.policies["ib-1"] = in_euros
    env.payouts.policies["ib-2"] = BASIC
    env.accrue(entry("20", ib="ib-2"))
    results = env.payouts.run_all(RUNNER, MON + timedelta(days=1))
    assert results[0].error is not None
    assert results[0].error.startswith("PayoutCurrencyChangeError")
    assert results[0].carried == env.payouts.account("ib-1").carried
    assert results[1].paid == Money.of(20, "USD")
    # Once what is owed is paid out, the currency may change.
    env.payouts.policies["ib-1"] = BASIC
    env.payouts.set_policy(FINANCE, "ib-1", PayoutPolicy(USD, Money.of(1, "USD")), reason="x")
    assert env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=2)).paid == Money.of(5, "USD")
    assert env.payouts.set_policy(FINANCE, "ib-1", in_euros, reason="moved") == 3
    env.accrue(entry("100", MON + timedelta(days=2), ticket=3))
    paid = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=3)).paid
    assert paid == Money.of("92.13", "EUR")


def test_a_held_payout_blocks_a_currency_change_too() -> None:
    gated = PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(10, "USD"))
    env = Env(memory(), {"ib-1": gated})
    env.accrue(entry("50"))
    held = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert held.approval_id is not None
    assert env.payouts.account("ib-1").carried is not None
    assert env.payouts.account("ib-1").held[0].amount == Money.of(50, "USD")
    with pytest.raises(PayoutCurrencyChangeError):
        env.payouts.set_policy(
            FINANCE, "ib-1", PayoutPolicy(EUR, Money.of(1, "EUR")), reason="moved"
        )
    held_events = [
        e
        for e in (env.repo.codec.decode(s).event for s in iter_all(env.store))
        if isinstance(e, PayoutHeld)
    ]
    assert [h.policy_version for h in held_events] == [1]
    assert sum(h.amount.amount for h in held_events) == Decimal(50)


def test_a_first_run_seeds_many_configured_policies_in_one_append() -> None:
    good = {f"ib-{n}": BASIC for n in range(7)}
    env = Env(memory(), good)
    calls: list[int] = []
    real = env.store.append

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args))
        return real(*args, **kwargs)

    env.store.append = counting  # type: ignore[method-assign]
    assert env.payouts.ensure_policies() == sorted(good)
    assert calls == [7]  # one append over the seven accounts' streams
    assert env.payouts.ensure_policies() == []


def test_an_incoherent_configured_policy_fails_its_ib_only() -> None:
    policies = {f"ib-{n}": BASIC for n in range(3)}
    policies["ib-bad"] = PayoutPolicy(USD, Money.of(10, "EUR"))
    env = Env(memory(), policies)
    env.accrue(*[entry("20", ticket=n, ib=ib) for n, ib in enumerate(sorted(policies))])
    assert env.payouts.ensure_policies() == ["ib-0", "ib-1", "ib-2"]
    results = {r.ib_id: r for r in env.payouts.run_all(RUNNER, MON + timedelta(days=1))}
    assert results["ib-bad"].error is not None
    assert results["ib-bad"].error.startswith("ValidationError")
    assert [results[f"ib-{n}"].paid for n in range(3)] == [Money.of(20, "USD")] * 3
    assert env.owed("ib-bad") == Decimal(20)


def test_run_all_pays_an_ib_whose_policy_another_process_set_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "payouts.sqlite"
    configured = Env(SqliteEventStore(path), {"ib-1": BASIC})
    other = Env(SqliteEventStore(path), {"ib-1": BASIC})  # a second process
    other.payouts.set_policy(FINANCE, "ib-2", BASIC, reason="new IB, set in the back office")
    other.accrue(entry("30", ib="ib-2"))
    assert configured.payouts.ib_ids() == ["ib-1", "ib-2"]
    results = configured.payouts.run_all(RUNNER, MON + timedelta(days=1))
    assert [(r.ib_id, r.paid) for r in results] == [("ib-1", None), ("ib-2", Money.of(30, "USD"))]
