"""Deposits: PSP callbacks delivered twice, out of order or contradicting never double-post."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.kernel import Currency, FixedClock, Money, NegativeAmountError
from fxcrm_core.kyc import KycLevelTooLowError
from fxcrm_core.payments import (
    CallbackOutcome,
    DepositStatus,
    LimitExceededError,
    MoneyAccounts,
    PaymentLimits,
)
from fxcrm_core.privacy import MasterKeyring
from tests.system_world import just_before_the_next_append

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


LIMITS = PaymentLimits([usd(10_000), Money.of(9_000, "EUR")])
KEYRING = MasterKeyring({"m1": bytes(range(32))}, "m1")


def on_file(path: Path) -> Broker:
    """A broker on a SQLite file that another one (another process, say) may open as well."""
    return Broker.sqlite(
        path, clock=FixedClock(T0), keyring=KEYRING, identity_key=b"x" * 32,
        synchronous="NORMAL", payment_limits=LIMITS,
    )  # fmt: skip


def world(*, verified: bool = True, broker: Broker | None = None) -> tuple[Broker, str, Actor]:
    broker = broker or Broker.in_memory(
        clock=FixedClock(T0), keyring=MasterKeyring.generate(), payment_limits=LIMITS
    )
    assert broker.clients is not None
    cid = broker.clients.register(
        Actor.system("portal", Role.PORTAL),
        Registration(ClientKind.INDIVIDUAL, "SC", "Ana Lima", "ana@example.com"),
    )
    me = Actor.client(cid)
    if verified:
        officer = Actor.staff("kyc-1", Role.COMPLIANCE)
        for kind, kwargs in (
            ("passport", {"expires_on": date(2030, 1, 1)}),
            ("proof_of_address", {}),
        ):
            doc = broker.kyc.submit(me, cid, kind, "f", **kwargs)  # type: ignore[arg-type]
            broker.kyc.approve(officer, doc)
    return broker, cid, me


def wallet(broker: Broker, cid: str) -> Money:
    return broker.ledger.balance(
        MoneyAccounts(broker.ledger).wallet(cid, Currency.of("USD"))
    ).net_credit


def test_a_confirmed_deposit_credits_the_wallet_once() -> None:
    broker, cid, me = world()
    dep = broker.deposits.initiate(me, cid, usd(250), psp="acquirer", method="card")
    assert broker.deposits.psp_confirmed(dep, "ref-1", usd(250)) is CallbackOutcome.APPLIED
    assert broker.deposits.psp_confirmed(dep, "ref-1", usd(250)) is CallbackOutcome.DUPLICATE
    assert wallet(broker, cid) == usd(250)
    assert broker.deposits.get(dep).status is DepositStatus.CREDITED


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("confirmed", "ref-1", 250), ("failed", "ref-1", 0)),  # failed arrives after success
        (("failed", "ref-1", 0), ("confirmed", "ref-1", 250)),  # success after a failure
        (("confirmed", "ref-1", 250), ("confirmed", "ref-2", 250)),  # another reference
        (("confirmed", "ref-1", 250), ("confirmed", "ref-1", 300)),  # another amount
    ],
)
def test_contradicting_callbacks_move_no_money_and_are_recorded(
    first: tuple[str, str, int], second: tuple[str, str, int]
) -> None:
    broker, cid, me = world()
    dep = broker.deposits.initiate(me, cid, usd(250), psp="acquirer", method="card")

    def deliver(kind: str, ref: str, amount: int) -> CallbackOutcome:
        if kind == "confirmed":
            return broker.deposits.psp_confirmed(dep, ref, usd(amount))
        return broker.deposits.psp_failed(dep, ref, "declined")

    assert deliver(*first) is CallbackOutcome.APPLIED
    credited = wallet(broker, cid)
    assert deliver(*second) is CallbackOutcome.CONFLICT
    assert wallet(broker, cid) == credited
    assert broker.deposits.get(dep).conflicts == 1


def test_a_confirmation_for_the_wrong_amount_credits_nothing() -> None:
    broker, cid, me = world()
    dep = broker.deposits.initiate(me, cid, usd(250), psp="acquirer", method="card")
    assert broker.deposits.psp_confirmed(dep, "ref-1", usd(25)) is CallbackOutcome.CONFLICT
    assert wallet(broker, cid) == usd(0)


def test_a_psp_reference_credits_one_deposit_only() -> None:
    broker, cid, me = world()
    first = broker.deposits.initiate(me, cid, usd(100), psp="acquirer", method="card")
    second = broker.deposits.initiate(me, cid, usd(100), psp="acquirer", method="card")
    assert broker.deposits.psp_confirmed(first, "ref-9", usd(100)) is CallbackOutcome.APPLIED
    assert broker.deposits.psp_confirmed(second, "ref-9", usd(100)) is CallbackOutcome.CONFLICT
    assert wallet(broker, cid) == usd(100)


def test_racing_callbacks_credit_once() -> None:
    for _ in range(5):
        broker, cid, me = world()
        dep = broker.deposits.initiate(me, cid, usd(250), psp="acquirer", method="card")
        barrier = threading.Barrier(3)
        outcomes: list[CallbackOutcome] = []

        def deliver(
            broker: Broker = broker,
            dep: str = dep,
            barrier: threading.Barrier = barrier,
            outcomes: list[CallbackOutcome] = outcomes,
        ) -> None:
            barrier.wait()
            outcomes.append(broker.deposits.psp_confirmed(dep, "ref-1", usd(250)))

        threads = [threading.Thread(target=deliver) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wallet(broker, cid) == usd(250)
        assert sorted(o.value for o in outcomes) == ["applied", "duplicate", "duplicate"]


def test_deposits_need_kyc_level_two_and_respect_limits() -> None:
    broker, cid, me = world(verified=False)
    with pytest.raises(KycLevelTooLowError):
        broker.deposits.initiate(me, cid, usd(10), psp="acquirer", method="card")
    broker, cid, me = world()
    with pytest.raises(LimitExceededError):
        broker.deposits.initiate(me, cid, usd("10000.01"), psp="acquirer", method="card")
    with pytest.raises(LimitExceededError, match="JPY"):
        broker.deposits.initiate(me, cid, Money.of(100, "JPY"), psp="acquirer", method="card")
    with pytest.raises(NegativeAmountError):
        broker.deposits.initiate(me, cid, usd(0), psp="acquirer", method="card")


@pytest.mark.parametrize(
    ("mine", "theirs", "expected"),
    [
        # The first deposit opens the client's wallet: the copy that loses that append answers
        # as a repeat would, not with a ConcurrencyError.
        ("confirmed", "confirmed", CallbackOutcome.DUPLICATE),
        ("failed", "failed", CallbackOutcome.DUPLICATE),
        ("confirmed", "failed", CallbackOutcome.CONFLICT),
        ("failed", "confirmed", CallbackOutcome.CONFLICT),
    ],
)
def test_a_callback_racing_another_process_answers_as_if_it_came_second(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mine: str,
    theirs: str,
    expected: CallbackOutcome,
) -> None:
    broker, cid, me = world(broker=on_file(tmp_path / "b.sqlite"))
    other = on_file(tmp_path / "b.sqlite")
    dep = broker.deposits.initiate(me, cid, usd(250), psp="acquirer", method="card")

    def deliver(b: Broker, kind: str) -> CallbackOutcome:
        if kind == "confirmed":
            return b.deposits.psp_confirmed(dep, "ref-1", usd(250))
        return b.deposits.psp_failed(dep, "ref-1", "declined")

    rival: list[CallbackOutcome] = []
    just_before_the_next_append(monkeypatch, broker, lambda: rival.append(deliver(other, theirs)))
    assert deliver(broker, mine) is expected
    assert rival == [CallbackOutcome.APPLIED]
    assert wallet(broker, cid) == (usd(250) if theirs == "confirmed" else usd(0))
    assert broker.deposits.get(dep).conflicts == (expected is CallbackOutcome.CONFLICT)
    other.close()
    broker.close()


def test_first_deposit_callbacks_racing_in_two_threads_credit_once(tmp_path: Path) -> None:
    broker, cid, me = world(broker=on_file(tmp_path / "b.sqlite"))
    brokers = [broker, on_file(tmp_path / "b.sqlite")]
    deposits = [
        broker.deposits.initiate(me, cid, usd(100), psp="acquirer", method="card") for _ in range(4)
    ]
    outcomes: list[CallbackOutcome | BaseException] = []
    for n, dep in enumerate(deposits):
        barrier = threading.Barrier(2)

        def deliver(
            b: Broker, dep: str = dep, n: int = n, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            try:
                outcomes.append(b.deposits.psp_confirmed(dep, f"ref-{n}", usd(100)))
            except BaseException as exc:  # reported below
                outcomes.append(exc)

        threads = [threading.Thread(target=deliver, args=(b,)) for b in brokers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert (
        sorted(str(o) for o in outcomes)
        == ["CallbackOutcome.APPLIED"] * 4 + ["CallbackOutcome.DUPLICATE"] * 4
    )
    assert wallet(broker, cid) == usd(400)
    for b in brokers:
        b.close()
