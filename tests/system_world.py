"""A broker on a SQLite file that several processes (or restarts) can open alike: fixed keys, a
fixed clock, the demo's settings. Shared by the system tests and their subprocesses."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.kernel import FixedClock, Money
from fxcrm_core.payments import PaymentLimits
from fxcrm_core.privacy import MasterKeyring

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday
IDENTITY_KEY = b"system-test deduplication key, 32+ bytes"
PORTAL = Actor.system("portal", Role.PORTAL)
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
REP = Actor.staff("rep-1", Role.SALES)


def keyring() -> MasterKeyring:
    return MasterKeyring({"m1": bytes(range(32))}, "m1")


def open_broker(
    path: Path,
    *,
    at: datetime = T0,
    policies: Literal["inline", "worker"] = "inline",
) -> Broker:
    return Broker.sqlite(
        path,
        clock=FixedClock(at),
        keyring=keyring(),
        identity_key=IDENTITY_KEY,
        payment_limits=PaymentLimits([Money.of("50000", "USD")]),
        synchronous="NORMAL",
        policies=policies,
    )


def register(broker: Broker, email: str = "ana.lima@example.com") -> str:
    return broker.clients.register(
        PORTAL,
        Registration(ClientKind.INDIVIDUAL, "AE", "Ana Lima", email, owner_id=REP.id),
    )


def approve(broker: Broker, client_id: str, *kinds: str) -> dict[str, str]:
    """Submit and approve documents of ``kinds``; returns their ids by kind."""
    me = Actor.client(client_id)
    ids = {}
    for kind in kinds:
        expires = date(2031, 1, 1) if kind == "passport" else None
        ids[kind] = broker.kyc.submit(me, client_id, kind, f"files/{kind}", expires_on=expires)
        broker.kyc.approve(OFFICER, ids[kind])
    return ids


LEVEL_2 = ("passport", "proof_of_address")
LEVEL_3 = (*LEVEL_2, "selfie", "source_of_funds")


def just_before_the_next_append(
    monkeypatch: pytest.MonkeyPatch, broker: Broker, rival: Callable[[], object]
) -> None:
    """Run ``rival`` (another broker's command) right before ``broker``'s next append: the two
    commands interleave as two processes' do when both read before either writes."""
    real = broker.store.append

    def append(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(broker.store, "append", real)
        rival()
        return real(*args, **kwargs)

    monkeypatch.setattr(broker.store, "append", append)


def deposit(broker: Broker, client_id: str, amount: str, reference: str) -> str:
    deposit_id = broker.deposits.initiate(
        Actor.client(client_id), client_id, Money.of(amount, "USD"), psp="acq", method="card"
    )
    broker.deposits.psp_confirmed(deposit_id, reference, Money.of(amount, "USD"))
    return deposit_id


def _upstream() -> list[tuple[object, tuple[object, ...]]]:
    from fxcrm_core import demo

    ana = demo.ANA_EMAIL
    return [
        (demo.sign_up, demo.ANA),
        (demo.sign_up, demo.BO),
        (demo.marketing_consent, (demo.BO[1],)),  # the engagement-consent policy's upstream
        (demo.pass_kyc, (ana, "passport", "proof_of_address")),
        (demo.verify_and_profile, (ana,)),
        (demo.open_account, (ana, 100)),
        (demo.deposit, (ana, "5000", "acq-1")),
        (demo.to_trading, (ana, "3000")),
        (demo.sign_ibs, (ana,)),
        (demo.loyalty_setup, (ana,)),
        (demo.trade, (200,)),
        (money_back, (ana, "500")),
        (demo.stage_after, (ana, 95)),
    ]


def money_back(broker: Broker, email: str, amount: str) -> None:
    """Money from the trading account back to the wallet (the bonus policy's upstream)."""
    from fxcrm_core import demo

    client_id = demo._client(broker, email)
    account = demo._account(broker, client_id)
    broker.transfers.move(
        Actor.client(client_id), "back-1", account.id, Money.of(amount, "USD"), to_trading=False
    )


UPSTREAM: list[tuple[Any, tuple[Any, ...]]] = []

if __name__ == "__main__":  # pragma: no cover - driven by tests/test_system.py
    # python -m tests.system_world <db> <step>: one command in a process of its own, with the
    # policies left to a worker; "kill" steps die (SIGKILL) right after the command commits.
    import os
    import signal

    UPSTREAM.extend(_upstream())
    db, step = Path(sys.argv[1]), sys.argv[2]
    if step.startswith("demo-"):
        from fxcrm_core import demo

        broker = demo.open_demo_broker(db, policies="worker", seed=11)
    else:
        broker = open_broker(db, policies="worker")
    if step == "setup":
        cid = register(broker)
        approve(broker, cid, *LEVEL_2)
        print(cid)
    elif step == "deposit-then-kill":
        deposit(broker, sys.argv[3], "100", "psp-kill-1")
        os.kill(os.getpid(), signal.SIGKILL)
    elif step == "policy-kill":
        # Dies inside the policy commit: the output is staged, the append never happens.
        from fxcrm_core.events import UnitOfWork

        real_commit = UnitOfWork.commit

        def dying_commit(self: UnitOfWork, **kwargs: object) -> object:
            if self.metadata.actor.startswith("policy:"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_commit(self, **kwargs)  # type: ignore[arg-type]

        UnitOfWork.commit = dying_commit  # type: ignore[assignment, method-assign]
        broker.run_policies()
    elif step == "demo-upstream":
        # The demo's commands with no policy run: every shipped policy has events waiting.
        for fn, args in UPSTREAM:
            fn(broker, *args)
    elif step == "demo-policy-kill":
        # Dies inside the policy commit number ``argv[3]`` of this process.
        from fxcrm_core.events import UnitOfWork

        real_commit, count, die_at = UnitOfWork.commit, [0], int(sys.argv[3])

        def counting_commit(self: UnitOfWork, **kwargs: object) -> object:
            if self.metadata.actor.startswith("policy:"):
                count[0] += 1
                if count[0] == die_at:
                    print(self.metadata.actor, flush=True)  # who dies here
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_commit(self, **kwargs)  # type: ignore[arg-type]

        UnitOfWork.commit = counting_commit  # type: ignore[assignment, method-assign]
        print(broker.run_policies())
    elif step == "run-policies":
        print(broker.run_policies())
    broker.close()
