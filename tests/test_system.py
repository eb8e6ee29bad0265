"""One source of truth: answers from the log alone, the same in a second process or after a
restart; the broker's policies handle each event exactly once; construction that cannot lose or
leak data."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.access import Actor
from fxcrm_core.broker import EVENT_HANDLERS, Broker, ConfigurationError
from fxcrm_core.clients import Client, Stage
from fxcrm_core.events import PolicyTracker, iter_all
from fxcrm_core.kernel import FixedClock, Money
from fxcrm_core.kyc import KycLevelTooLowError, KycStatus
from fxcrm_core.ledger import TransferRequest
from fxcrm_core.privacy import MemoryKeyStore, PersonName
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.stores.sqlite_keys import SqliteKeyStore
from fxcrm_core.trading import TradingServerError
from tests.system_world import (
    IDENTITY_KEY,
    LEVEL_2,
    LEVEL_3,
    OFFICER,
    REP,
    T0,
    approve,
    deposit,
    keyring,
    open_broker,
    register,
)

ROOT = Path(__file__).resolve().parent.parent


def in_a_process(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tests.system_world <db> <args>``: one step in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "tests.system_world", str(db), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# -- the two repros -----------------------------------------------------------------------------
def test_a_client_approved_to_level_three_reads_level_three_after_a_restart(
    tmp_path: Path,
) -> None:
    db = tmp_path / "broker.sqlite"
    first = open_broker(db)
    cid = register(first)
    approve(first, cid, *LEVEL_3)
    assert first.kyc.level(cid) == 3
    first.close()

    again = open_broker(db)  # a restart, or a second process on the file
    assert again.kyc.level(cid) == 3
    assert again.kyc.recorded_level(cid) == 3  # the level policy recorded it in the log
    deposit(again, cid, "250", "psp-1")  # not refused
    assert again.ledger.balance(f"wallet:{cid}:USD").net_credit.amount == 250


def test_a_revocation_in_one_process_refuses_the_others_deposit_at_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "broker.sqlite"
    a, b = open_broker(db), open_broker(db)
    cid = register(a)
    documents = approve(a, cid, *LEVEL_2)
    assert b.kyc.level(cid) == 2  # B has read the documents
    deposit(b, cid, "100", "psp-1")
    a.kyc.rerequest(OFFICER, documents["passport"], "forged")  # A revokes
    with pytest.raises(KycLevelTooLowError):
        b.deposits.initiate(
            Actor.client(cid), cid, Money.of("100", "USD"),
            psp="acq", method="card",
        )  # fmt: skip
    assert b.kyc.recorded_level(cid) == 1


# -- construction -------------------------------------------------------------------------------
def test_a_persistent_store_refuses_a_memory_key_store(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "x.sqlite")
    with pytest.raises(ConfigurationError, match="persistent key store"):
        Broker(store, keystore=MemoryKeyStore(), keyring=keyring(), identity_key=IDENTITY_KEY)
    with pytest.raises(ConfigurationError, match="persistent key store"):
        Broker(store, keyring=keyring(), identity_key=IDENTITY_KEY)


def test_clear_pii_needs_an_explicit_yes(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="allow_clear_pii"):
        Broker.sqlite(tmp_path / "x.sqlite", identity_key=IDENTITY_KEY)
    broker = Broker.sqlite(tmp_path / "y.sqlite", identity_key=IDENTITY_KEY, allow_clear_pii=True)
    cid = register(broker)
    raw = broker.store.read_stream(f"client-{cid}")[0].data
    assert b"Ana Lima" in raw  # in clear, as asked
    with pytest.raises(Exception, match="in clear"):
        broker.erasure.erase(OFFICER, cid, relationship_ended_at=T0, reason="r")


def test_a_persistent_broker_needs_the_deduplication_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="identity_key"):
        Broker.sqlite(tmp_path / "x.sqlite", keyring=keyring())


def test_every_service_is_there_on_every_store(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "broker.sqlite")
    for service in (broker.clients, broker.accounts, broker.erasure, broker.transfers):
        assert service is not None
    with pytest.raises(TradingServerError, match="no trading server"):
        broker.trading_server.account_state(1)


def test_host_events_live_in_their_own_namespace() -> None:
    import attrs

    from fxcrm_core.events import DomainEvent

    @attrs.frozen
    class ClientRegistered(DomainEvent):  # the same name as an SDK event
        note: str

    broker = Broker.in_memory(events=[ClientRegistered])
    assert broker.registry.name_of(ClientRegistered) == "host.ClientRegistered"
    from fxcrm_core.clients import ClientRegistered as Sdk

    assert broker.registry.name_of(Sdk) == "ClientRegistered"


# -- the shipped policies -----------------------------------------------------------------------
def stage(broker: Broker, cid: str) -> Stage | None:
    broker.repository.forget()
    return broker.repository.get(Client, cid).stage


def test_a_credited_deposit_makes_a_verified_client_funded(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "broker.sqlite")
    cid = register(broker)
    approve(broker, cid, *LEVEL_2)
    broker.clients.move(REP, cid, Stage.VERIFIED)
    deposit(broker, cid, "100", "psp-1")
    assert stage(broker, cid) is Stage.FUNDED
    deposit(broker, cid, "50", "psp-2")  # a second deposit changes nothing
    changes = [
        s for s in broker.store.read_stream(f"client-{cid}") if s.event_type == "StageChanged"
    ]
    assert len(changes) == 2  # VERIFIED by hand, FUNDED by the policy, once


def test_no_activity_for_the_set_days_makes_a_client_dormant(tmp_path: Path) -> None:
    db = tmp_path / "broker.sqlite"
    broker = open_broker(db)
    cid = register(broker)
    approve(broker, cid, *LEVEL_2)
    broker.clients.move(REP, cid, Stage.VERIFIED)
    deposit(broker, cid, "100", "psp-1")
    # The first check closes the trading day before today's (Friday, before a Monday).
    assert broker.close_trading_days() == [date(2026, 2, 27)]
    assert broker.close_trading_days() == []
    clock = broker.clock
    assert isinstance(clock, FixedClock)
    clock.advance(days=60)
    broker.close_trading_days()
    assert stage(broker, cid) is Stage.FUNDED  # 60 days < 90
    clock.advance(days=35)
    closed = broker.close_trading_days()
    assert closed
    assert all(d.weekday() < 5 for d in closed)
    assert stage(broker, cid) is Stage.DORMANT
    assert broker.close_trading_days() == []  # each day closes once


def test_a_policy_crash_between_the_commits_handles_the_event_once(tmp_path: Path) -> None:
    """kill -9 right after the upstream commit, then again inside the policy's own commit:
    a later run records the policy's output once; replaying from zero finds it once."""
    db = tmp_path / "broker.sqlite"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return in_a_process(db, *args)

    setup = run("setup")
    assert setup.returncode == 0, setup.stderr
    cid = setup.stdout.strip()
    broker = open_broker(db, policies="worker")
    broker.run_policies()
    broker.clients.move(REP, cid, Stage.VERIFIED)
    broker.close()

    assert run("deposit-then-kill", cid).returncode == -9  # the deposit committed, then died
    assert run("policy-kill").returncode == -9  # died inside the policy's commit
    assert stage(open_broker(db, policies="worker"), cid) is Stage.VERIFIED  # nothing yet
    assert run("run-policies").returncode == 0
    assert run("run-policies").stdout.strip() == "0"  # nothing left to do

    fresh = open_broker(db, policies="worker")  # replay from zero: a new process' view
    assert stage(fresh, cid) is Stage.FUNDED
    stored = [s for s in iter_all(fresh.store) if s.stream_id == f"client-{cid}"]
    assert [s.event_type for s in stored].count("StageChanged") == 2
    assert fresh.repository.get(KycStatus, cid).level == 2
    assert fresh.run_policies() == 0


def test_the_level_policy_records_each_change_once(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "broker.sqlite")
    cid = register(broker)
    docs = approve(broker, cid, *LEVEL_3)
    broker.kyc.rerequest(OFFICER, docs["selfie"], "blurred")
    levels = [
        (e.previous, e.level)  # type: ignore[attr-defined]
        for e in (broker.codec.decode(s).event for s in broker.store.read_stream(f"kyclevel-{cid}"))
    ]
    assert levels == [(0, 1), (1, 2), (2, 3), (3, 2)]
    assert broker.run_policies() == 0


def test_worker_mode_leaves_policies_to_the_worker(tmp_path: Path) -> None:
    broker = open_broker(tmp_path / "broker.sqlite", policies="worker")
    cid = register(broker)
    approve(broker, cid, *LEVEL_2)
    assert broker.kyc.recorded_level(cid) == 0
    assert broker.kyc.level(cid) == 2  # the gate reads the documents themselves
    assert broker.policies.lag()["kyc-level"] == 2
    assert broker.run_policies() > 0
    assert broker.kyc.recorded_level(cid) == 2


def test_dormancy_setting_is_checked() -> None:
    with pytest.raises(Exception, match="positive"):
        Broker.in_memory(dormant_after=timedelta(0))


def test_a_hold_placed_by_one_process_is_expired_by_another(tmp_path: Path) -> None:
    db = tmp_path / "broker.sqlite"
    a, b = open_broker(db), open_broker(db)
    for broker in (a, b):
        broker.ledger.open_account("omnibus", owner="broker", currency="USD", purpose="omnibus")
        broker.ledger.open_account("ana", owner="c-1", currency="USD", purpose="wallet")
    a.ledger.transfer(TransferRequest("d1", "omnibus", "ana", Money.of("100", "USD")))
    a.ledger.transfer(
        TransferRequest(
            "h1", "ana", "omnibus", Money.of("40", "USD"), pending=True, timeout=timedelta(hours=1)
        )
    )
    assert b.expire_holds() == []
    clock = b.clock
    assert isinstance(clock, FixedClock)
    clock.advance(hours=2)
    assert b.expire_holds() == ["h1"]
    assert b.expire_holds() == []
    assert a.ledger.balance("ana").available_credit == Money.of("100", "USD")


def test_a_first_trade_makes_a_funded_client_active(tmp_path: Path) -> None:
    from fxcrm_core.accounts import GroupRule
    from fxcrm_core.payments import PaymentLimits
    from fxcrm_core.trading import SimulatedTradingServer

    clock = FixedClock(T0)
    server = SimulatedTradingServer("sim", seed=3, clock=clock)
    broker = Broker.in_memory(
        clock=clock,
        trading_server=server,
        groups={"retail\\usd": GroupRule("retail\\usd", "USD", 500, live=True)},
        payment_limits=PaymentLimits([Money.of("50000", "USD")]),
    )
    cid = register(broker)
    approve(broker, cid, *LEVEL_2)
    broker.clients.move(REP, cid, Stage.VERIFIED)
    deposit(broker, cid, "1000", "psp-1")
    account = broker.accounts.open(Actor.client(cid), cid, "retail\\usd", 30)
    broker.transfers.move(
        Actor.client(cid), "move-1", account, Money.of("500", "USD"), to_trading=True
    )
    assert broker.pull_deals() == 1  # the balance deal of the move: not a trade
    assert stage(broker, cid) is Stage.FUNDED
    server.simulate_trading(20)
    assert broker.pull_deals() > 0
    assert stage(broker, cid) is Stage.ACTIVE
    server.simulate_trading(20)
    broker.pull_deals()
    changes = [
        s for s in broker.store.read_stream(f"client-{cid}") if s.event_type == "StageChanged"
    ]
    assert len(changes) == 3  # VERIFIED, FUNDED, ACTIVE: once each


def ib_world(tmp_path: Path) -> tuple[Broker, str, str]:
    """Two IBs under one master; Ana came through the sub-IB, Bo through the other IB."""
    broker = open_broker(tmp_path / "broker.sqlite")
    admin = Actor.staff("admin-1", "admin")
    ana, bo = register(broker), register(broker, "bo.chen@example.org")
    start = T0 - timedelta(days=30)
    broker.ib_network.register_ib(admin, "ib-apex", None, start, reason="signed")
    broker.ib_network.register_ib(admin, "ib-north", "ib-apex", start, reason="signed")
    broker.ib_network.register_ib(admin, "ib-other", None, start, reason="signed")
    broker.ib_network.attribute(admin, ana, "ib-north", start, reason="referral link")
    broker.ib_network.attribute(admin, bo, "ib-other", start, reason="referral link")
    return broker, ana, bo


def test_an_ib_reads_its_downline_clients_and_no_one_else(tmp_path: Path) -> None:
    from fxcrm_core.kernel import AccessDeniedError

    broker, ana, bo = ib_world(tmp_path)
    for ib in ("ib-north", "ib-apex"):
        seen = broker.clients.get(Actor.ib(ib), ana)
        assert (seen.id, seen.stage) == (ana, Stage.REGISTERED)
        assert (seen.name, seen.email) == ("A. L.", "****")  # masked for the IB role
    assert broker.clients.get(OFFICER, ana).name == "Ana Lima"  # compliance sees it whole
    with pytest.raises(AccessDeniedError):
        broker.clients.get(Actor.ib("ib-north"), bo)
    with pytest.raises(AccessDeniedError):
        broker.clients.get(Actor.ib("ib-other"), ana)
    # A second process on the file answers the same at once.
    other = open_broker(tmp_path / "broker.sqlite")
    assert other.clients.get(Actor.ib("ib-apex"), ana).id == ana
    with pytest.raises(AccessDeniedError):
        other.clients.get(Actor.ib("ib-apex"), bo)


def test_an_attribution_is_recorded_on_the_client_once(tmp_path: Path) -> None:
    broker, ana, bo = ib_world(tmp_path)
    assert broker.repository.get(Client, ana).introducer_id == "ib-north"
    assert broker.repository.get(Client, bo).introducer_id == "ib-other"
    broker.ib_network.attribute(
        Actor.staff("admin-1", "admin"), ana, "ib-apex", T0, reason="moved to the master"
    )
    assert broker.repository.get(Client, ana).introducer_id == "ib-apex"
    assert broker.run_policies() == 0
    assigned = [
        s for s in broker.store.read_stream(f"client-{ana}") if s.event_type == "IntroducerAssigned"
    ]
    assert len(assigned) == 2


def _log_by_stream(broker: Broker) -> dict[str, list[object]]:
    """Every stream's decoded events, but the policies' own position streams."""
    out: dict[str, list[object]] = {}
    for stored in iter_all(broker.store):
        if not stored.stream_id.startswith("policy-"):
            out.setdefault(stored.stream_id, []).append(broker.codec.decode(stored).event)
    return out


@pytest.mark.slow
def test_every_shipped_policy_survives_kill_9_and_handles_each_event_once(
    tmp_path: Path,
) -> None:
    """The demo's commands with the policies left waiting, then workers killed (SIGKILL) inside
    a policy commit again and again until the policies are done: the log ends up exactly as one
    uninterrupted run leaves it, every policy's output once."""
    import shutil

    from fxcrm_core import demo

    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    crashed.mkdir()
    db = crashed / "broker.sqlite"
    run = in_a_process

    upstream = run(db, "demo-upstream")
    assert upstream.returncode == 0, upstream.stderr
    shutil.copytree(crashed, clean)
    waiting = demo.open_demo_broker(db, policies="worker").policies.lag()
    # Every policy has upstream events waiting (payouts and IB ranks: once the rebates and the
    # IB day-close policies record them).
    downstream = {"ib-payouts", "loyalty-ib-ranks"}
    assert all(waiting[name] > 0 for name in waiting if name not in downstream), waiting

    killed: list[str] = []  # the policy whose commit each kill interrupted
    while (done := run(db, "demo-policy-kill", "2")).returncode == -9:
        killed.append(done.stdout.split()[-1].removeprefix("policy:"))
        assert len(killed) < 80, "the policies make no progress between kills"
    assert done.returncode == 0, done.stderr
    assert set(killed) == {name for name, _, _ in EVENT_HANDLERS}  # each one, at least once
    survivor = demo.open_demo_broker(db, policies="worker")
    assert survivor.run_policies() == 0
    for name, _, _ in EVENT_HANDLERS:
        assert survivor.repository.get(PolicyTracker, name).handled > 0, name

    reference = demo.open_demo_broker(clean / "broker.sqlite", policies="worker")
    reference.run_policies()
    assert _log_by_stream(survivor) == _log_by_stream(reference)
    assert survivor.policies.lag() == reference.policies.lag() == dict.fromkeys(waiting, 0)


def test_an_erasure_in_one_process_is_seen_by_the_other_at_once(tmp_path: Path) -> None:
    """No process keeps reading personal data erased by another: neither a cached state nor a
    cached data key outlives the erasure."""
    from datetime import UTC, datetime

    from fxcrm_core.events import ERASED

    db = tmp_path / "broker.sqlite"
    a, b = open_broker(db), open_broker(db)
    bo = register(a, "bo.chen@example.org")
    assert a.repository.get(Client, bo).name == PersonName("Ana Lima")  # cached in A, state and key
    a.clients.move(REP, bo, Stage.CLOSED)
    assert isinstance(b.clock, FixedClock)
    b.clock.set(datetime(2032, 1, 1, tzinfo=UTC))  # past the five years of AML retention
    b.erasure.erase(OFFICER, bo, reason="request")
    erased = a.repository.get(Client, bo)
    assert erased.name is not None
    assert erased.email is not None
    assert erased.name.reveal() is ERASED
    assert erased.email.reveal() is ERASED


def test_a_revocation_after_a_withdrawal_request_stops_its_approval(tmp_path: Path) -> None:
    from fxcrm_core.payments import InstrumentKind

    db = tmp_path / "broker.sqlite"
    a, b = open_broker(db), open_broker(db)
    cid = register(a)
    documents = approve(a, cid, *LEVEL_3)
    deposit(a, cid, "1000", "psp-1")
    me, finance = Actor.client(cid), Actor.staff("fin-1", "finance")
    iban = a.withdrawals.add_instrument(
        me, cid, InstrumentKind.IBAN, "AE07 0331 2345 6789 0123 456"
    )
    a.withdrawals.verify_instrument(finance, iban)
    withdrawal = a.withdrawals.request(me, cid, iban, Money.of("900", "USD"))
    b.kyc.rerequest(OFFICER, documents["passport"], "forged")  # in another process
    approval = a.withdrawals.get(withdrawal).approval_id
    assert approval is not None
    with pytest.raises(KycLevelTooLowError):
        a.approvals.approve(finance, approval)
    assert a.withdrawals.get(withdrawal).status.value == "requested"  # type: ignore[union-attr]
    assert a.ledger.balance(f"wallet:{cid}:USD").net_credit == Money.of("1000", "USD")


@pytest.mark.parametrize("verify_first", [True, False])
def test_the_lifecycle_is_the_same_whenever_the_policies_run(
    tmp_path: Path, verify_first: bool
) -> None:
    """Inline after each command, or by a worker after all of them: the same stages."""
    stages = {}
    for mode in ("inline", "worker"):
        broker = open_broker(tmp_path / f"{mode}.sqlite", policies=mode)
        cid = register(broker)
        approve(broker, cid, *LEVEL_2)
        if verify_first:
            broker.clients.move(REP, cid, Stage.VERIFIED)
        deposit(broker, cid, "500", "psp-1")
        if not verify_first:
            broker.clients.move(REP, cid, Stage.VERIFIED)
        clock = broker.clock
        assert isinstance(clock, FixedClock)
        broker.run_policies()
        clock.advance(days=100)
        broker.close_trading_days()
        deposit(broker, cid, "10", "psp-2")  # after the day closed: not counted for that day
        broker.run_policies()
        stages[mode] = stage(broker, cid)
    assert stages["inline"] is stages["worker"] is Stage.DORMANT


@settings(max_examples=60, deadline=None)
@given(
    name=st.one_of(st.none(), st.integers(), st.text(max_size=120), st.just("welcome")),
    types=st.one_of(
        st.none(),
        st.text(max_size=20),
        st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=20), st.just(int))),
        st.just(["ClientRegistered"]),
    ),
    handler=st.one_of(st.none(), st.integers(), st.just(lambda r, u: None)),
)
def test_host_policies_with_bad_parts_are_refused_with_typed_errors(
    name: object, types: object, handler: object
) -> None:
    from fxcrm_core.kernel import FxCrmError

    broker = Broker.in_memory()
    try:
        broker.add_policy(name, types, handler)  # type: ignore[arg-type]
    except FxCrmError:
        return
    # Accepted: then it is a well-formed policy on registered event types.
    assert isinstance(name, str)
    assert callable(handler)
    assert types == ["ClientRegistered"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dormant_after": 90}, "dormant_after"),
        ({"ib_max_depth": "x"}, "ib_max_depth"),
        ({"events": "abc"}, "events"),
        ({"events": [int]}, "events"),
        ({"keyring": "secret"}, "keyring"),
        ({"policies": "sometimes"}, "inline"),
        ({"events": None}, "events"),
        ({"identity_key": True}, "identity_key"),
        ({"trading_server": True}, "trading_server"),
        ({"caps": True}, "caps"),
        ({"groups": None}, "groups"),
        ({"groups": "x"}, "groups"),
        ({"payout_policies": None}, "payout_policies"),
        ({"daily_withdrawal_limits": True}, "daily_withdrawal_limits"),
    ],
)
def test_broker_settings_of_the_wrong_kind_are_refused(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Broker.in_memory(**options)  # type: ignore[arg-type]


def test_a_sqlite_broker_needs_a_file_and_makes_none_before_refusing(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="file path"):
        Broker.sqlite(":memory:", keyring=keyring(), identity_key=IDENTITY_KEY)
    with pytest.raises(ConfigurationError, match="allow_clear_pii"):
        Broker.sqlite(tmp_path / "x.sqlite", identity_key=IDENTITY_KEY)
    assert list(tmp_path.iterdir()) == []
    custom = Broker.sqlite(
        tmp_path / "y.sqlite",
        keyring=keyring(),
        identity_key=IDENTITY_KEY,
        keystore=SqliteKeyStore(tmp_path / "kms.keys"),
    )
    register(custom)
    assert (tmp_path / "kms.keys").exists()
    assert not (tmp_path / "y.sqlite.keys").exists()


def test_a_log_reopened_with_a_lost_or_other_key_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "broker.sqlite"
    first = open_broker(db)
    register(first)
    first.close()
    (tmp_path / "broker.sqlite.keys").rename(tmp_path / "elsewhere.keys")
    with pytest.raises(ConfigurationError, match="right key file"):
        open_broker(db)  # a redeploy that lost the key file: refused, nothing split
    other = tmp_path / "other.sqlite"
    register(open_broker(other))
    with pytest.raises(ConfigurationError, match="right key file"):
        Broker.sqlite(db, keyring=keyring(), identity_key=IDENTITY_KEY, keys_path=f"{other}.keys")
    (tmp_path / "elsewhere.keys").rename(tmp_path / "broker.sqlite.keys")
    assert open_broker(db).clients.find_by_email(OFFICER, "ana.lima@example.com") is not None


def test_a_full_card_number_for_a_person_only_through_an_audited_reveal(tmp_path: Path) -> None:
    from fxcrm_core.kernel import AccessDeniedError
    from fxcrm_core.privacy import Pan

    broker = open_broker(tmp_path / "broker.sqlite")
    cid = register(broker)
    card = Pan.parse("4111 1111 1111 1111")
    with pytest.raises(AccessDeniedError):
        broker.reveals.reveal(REP, card, subject_id=cid, reason="the client called")
    shown = broker.reveals.reveal(OFFICER, card, subject_id=cid, reason="chargeback case 7")
    assert shown == "4111111111111111"
    recorded = broker.store.read_stream(f"pii_reveal-{cid}")
    assert len(recorded) == 1
    assert broker.codec.decode(recorded[0]).metadata.actor == OFFICER.id


def test_a_client_who_is_also_an_ib_is_not_erased_while_the_ib_is_owed_money(
    tmp_path: Path,
) -> None:
    """Review of #14: the IB's rebate wallet is owned by the IB's id, so an erasure of the
    person behind it looked only at the client's own accounts and went through."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from fxcrm_core.commissions.payouts import IbPayoutAccount, RebatesAccrued
    from fxcrm_core.events import EventMetadata, UnitOfWork
    from fxcrm_core.privacy import ErasureBlockedError

    broker = open_broker(tmp_path / "broker.sqlite")
    bo = register(broker, "bo.chen@example.org")
    admin = Actor.staff("admin-1", "admin")
    broker.ib_network.register_ib(
        admin, "ib-bo", None, T0 - timedelta(days=1), own_client_id=bo, reason="signed"
    )
    with UnitOfWork(broker.repository, EventMetadata("system:test")) as uow:
        owed = IbPayoutAccount.blank("ib-bo")
        uow.record(owed, RebatesAccrued("ib-bo", ((T0.date(), "USD", Decimal("12.5")),)))
        uow.commit()
    broker.ledger.open_account("rebate-expense", owner="broker", currency="USD", purpose="expense")
    broker.ledger.open_account(
        "ib-wallet:ib-bo:USD", owner="ib-bo", currency="USD", purpose="wallet"
    )
    broker.ledger.transfer(
        TransferRequest("paid-1", "rebate-expense", "ib-wallet:ib-bo:USD", Money.of("750", "USD"))
    )
    broker.clients.move(REP, bo, Stage.CLOSED)
    assert isinstance(broker.clock, FixedClock)
    broker.clock.set(datetime(2032, 1, 1, tzinfo=UTC))
    with pytest.raises(ErasureBlockedError) as blocked:
        broker.erasure.erase(OFFICER, bo, reason="request")
    assert blocked.value.remaining == ("balance", "rebates owed")
    assert broker.repository.get(Client, bo).name == PersonName("Ana Lima")  # nothing was erased
