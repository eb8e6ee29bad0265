"""Importable scenario parts for tests/test_parity.py: the parity harness runs them in other
processes, so they live at module level. A broker on a SQLite file with keys fixed in code, so
every process opens the same one."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import Client, ClientKind, ClientView, Registration, Stage
from fxcrm_core.events import iter_all
from fxcrm_core.kernel import FixedClock, Money
from fxcrm_core.kyc import KycDocument
from fxcrm_core.ledger import Balance
from fxcrm_core.payments import PaymentLimits
from fxcrm_core.payments.deposits import CallbackOutcome
from fxcrm_core.privacy import MasterKeyring

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday
PORTAL = Actor.system("portal", Role.PORTAL)
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
REP = Actor.staff("rep-1", Role.SALES)
MODULE = "tests.parity_scenarios"


def build(path: str) -> Broker:
    """Open (never write) the broker on ``path``: the same keys and settings in every process."""
    return Broker.sqlite(
        Path(path),
        clock=FixedClock(T0),
        keyring=MasterKeyring({"m1": bytes(range(32))}, "m1"),
        identity_key=b"parity-test deduplication key, 32+ bytes",
        payment_limits=PaymentLimits([Money.of("50000", "USD")]),
        synchronous="NORMAL",
    )


# -- steps: fn(broker, *args) -> result -----------------------------------------------------------
def register(broker: Broker, name: str, email: str) -> str:
    return broker.clients.register(
        PORTAL, Registration(ClientKind.INDIVIDUAL, "AE", name, email, owner_id=REP.id)
    )


def submit(broker: Broker, client_id: str, kind: str) -> str:
    expires = date(2031, 1, 1) if kind == "passport" else None
    return broker.kyc.submit(
        Actor.client(client_id), client_id, kind, f"files/{kind}", expires_on=expires
    )


def approve(broker: Broker, document_id: str) -> KycDocument:
    return broker.kyc.approve(OFFICER, document_id)


def verify(broker: Broker, client_id: str) -> ClientView:
    return broker.clients.move(REP, client_id, Stage.VERIFIED)


def deposit(broker: Broker, client_id: str, amount: str, reference: str) -> CallbackOutcome:
    deposit_id = broker.deposits.initiate(
        Actor.client(client_id), client_id, Money.of(amount, "USD"), psp="acq", method="card"
    )
    return broker.deposits.psp_confirmed(deposit_id, reference, Money.of(amount, "USD"))


def later(broker: Broker, hours: int) -> datetime:
    """Move the broker's clock on by itself: the harness carries the time to the next step."""
    assert isinstance(broker.clock, FixedClock)
    return broker.clock.advance(hours=hours)


# -- probes: fn(broker, *args) -> value -----------------------------------------------------------
def kyc_level(broker: Broker, client_id: str) -> dict[str, int]:
    return {"now": broker.kyc.level(client_id), "recorded": broker.kyc.recorded_level(client_id)}


def wallet(broker: Broker, client_id: str) -> Balance:
    return broker.ledger.balance(f"wallet:{client_id}:USD")


def client(broker: Broker, client_id: str) -> Client | None:
    return broker.repository.load(Client, client_id)


def log_size(broker: Broker) -> int:
    return sum(1 for _ in iter_all(broker.store))


# -- a scenario that breaks the rule: state kept in a Python object -------------------------------
_SEEN: dict[str, str] = {}  # lives in one process only: exactly what the harness must catch


def remember(broker: Broker, key: str, value: str) -> int:
    _SEEN[key] = value
    return len(_SEEN)


def remembered(broker: Broker) -> dict[str, str]:
    return dict(_SEEN)


def register_numbered(broker: Broker, email: str) -> str:
    """Registers a client named after how many this process registered: right in one broker,
    wrong as soon as the steps spread over processes (the log then differs, not the result)."""
    _SEEN[email] = email
    return register(broker, f"Client {len(_SEEN)}", email)


def broken_step(broker: Broker) -> int:
    return len(broker.store.read_stream("nothing")) // 0


def die(broker: Broker) -> None:
    os._exit(3)  # a crash in the middle of a step: the harness must say so, not hang
