"""The accrual policy decides on the IB accounts this process last saw, without reading them
again: another process's accrual in between makes its commit fail, and the policy runner
retries on states read afresh, so every batch is accrued exactly once either way."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from fxcrm_core.commissions import EntryKind, PayoutPolicy
from fxcrm_core.kernel import Currency, Money, UnroundedMoney
from fxcrm_core.stores import SqliteEventStore
from tests.test_payouts import MON, Env, entry

USD = Currency.of("USD")


def test_an_account_moved_by_another_process_is_read_again_and_accrued_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.sqlite"
    policies = {"ib-1": PayoutPolicy(USD, Money.of(1, "USD"))}
    first = Env(SqliteEventStore(path), policies)
    second = Env(SqliteEventStore(path), policies)  # another process on the same log
    first.accrue(entry("1.25"), entry("2.00", ticket=2, ib="ib-2"))  # first caches the accounts
    second.accrue(entry("10.5", ticket=3))  # ... which this process moves on
    first.accrue(entry("100", ticket=4), entry("-0.25", kind=EntryKind.REVERSAL, ticket=1))
    for env in (first, second, Env(SqliteEventStore(path), policies)):
        env.runner.run()
        assert env.payouts.pending("ib-1") == [(MON, UnroundedMoney(Decimal("111.50"), USD))]
        assert env.payouts.pending("ib-2") == [(MON, UnroundedMoney(Decimal("2.00"), USD))]
        assert env.payouts.account("ib-1").version == 3  # three accruals, none twice
