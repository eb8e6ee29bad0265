"""The parity harness of "One source of truth" on PostgreSQL: each mode (one broker; a fresh
process per step; two live processes) on a database of its own, every answer compared. The
scenarios are the SQLite ones: KYC and a deposit, and a month of IB commissions on the demo
broker with every policy."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from fxcrm_core import demo
from fxcrm_core.broker import Broker
from fxcrm_core.kernel import FixedClock, Money
from fxcrm_core.payments import PaymentLimits
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.stores.postgres import PostgresEventStore
from fxcrm_core.testing.parity import ALL_MODES, Mode, Scenario, assert_parity
from tests import commission_month
from tests.parity_scenarios import T0
from tests.pg import drop_database, new_database
from tests.test_parity import kyc_and_deposit

pytestmark = pytest.mark.postgres
MODULE = "tests.test_postgres_parity"


def _dsn(path: str) -> str:
    dsn = (Path(path).parent / "dsn").read_text(encoding="utf-8")
    assert demo.is_postgres(dsn)  # (else the demo would open a SQLite file by that name)
    return dsn


def _on_the_server(broker: Broker) -> Broker:
    assert isinstance(broker.store, PostgresEventStore)
    return broker


def build(path: str) -> Broker:
    """tests.parity_scenarios.build, on the mode's PostgreSQL database."""
    return _on_the_server(
        Broker.postgres(
            _dsn(path),
            clock=FixedClock(T0),
            keyring=MasterKeyring({"m1": bytes(range(32))}, "m1"),
            identity_key=b"parity-test deduplication key, 32+ bytes",
            payment_limits=PaymentLimits([Money.of("50000", "USD")]),
            max_size=2,
        )
    )


def build_demo(path: str) -> Broker:
    """The demo broker on the mode's PostgreSQL database (its simulated server's state beside
    the mode's directory)."""
    return _on_the_server(demo.open_demo_broker(_dsn(path), files=Path(path)))


def _on_postgres(scenario: Scenario, build_ref: str, directory: Path) -> None:
    made = []
    try:
        for mode in ALL_MODES:
            dsn = new_database()
            made.append(dsn)
            where = directory / f"mode-{mode.value}"
            where.mkdir(parents=True, exist_ok=True)
            (where / "dsn").write_text(dsn, encoding="utf-8")
        report = assert_parity(attrs.evolve(scenario, build=build_ref), directory, timeout=600)
        assert {o.mode for o in report.outcomes} == set(Mode)
    finally:
        for dsn in made:
            drop_database(dsn)


@pytest.mark.slow
def test_kyc_and_a_deposit_answer_alike_in_every_mode_on_postgres(tmp_path: Path) -> None:
    _on_postgres(kyc_and_deposit(), f"{MODULE}:build", tmp_path)


@pytest.mark.slow
def test_two_weeks_of_commissions_answer_alike_in_every_mode_on_postgres(tmp_path: Path) -> None:
    """The store's part of the month's parity (tests/test_commission_month.py runs the whole
    month on SQLite): two weeks hold the change of IB and two Fridays' payouts."""
    _on_postgres(commission_month.scenario(days=10), f"{MODULE}:build_demo", tmp_path)
