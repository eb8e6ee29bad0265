"""The accrual policy absorbs the journal's lines into the IB accounts this process last saw,
without reading them again: another process's absorption in between makes its commit fail, and
the policy runner retries on states read afresh, so every line is absorbed exactly once."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from fxcrm_core.commissions import EntryKind, IbPayoutAccount, PayoutPolicy, payouts
from fxcrm_core.kernel import Currency, Money, UnroundedMoney
from fxcrm_core.stores import SqliteEventStore
from tests.test_payouts import MON, Env, entry

USD = Currency.of("USD")


def test_an_account_moved_by_another_process_is_read_again_and_absorbed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(payouts, "ABSORB_EVERY", 2)  # every IB absorbs at every second line
    path = tmp_path / "log.sqlite"
    policies = {"ib-1": PayoutPolicy(USD, Money.of(1, "USD"))}
    first = Env(SqliteEventStore(path), policies)
    second = Env(SqliteEventStore(path), policies)  # another process on the same log
    first.accrue(entry("1.25"), entry("2.00", ticket=2, ib="ib-2"))
    first.accrue(entry("0.75", ticket=5))  # line 2: first absorbs, and caches the accounts
    second.accrue(entry("10.5", ticket=3))
    second.accrue(entry("1", ticket=6))  # line 4: second moves ib-1's account on
    first.accrue(entry("100", ticket=4))
    # line 6: first absorbs again, on the account it cached at line 2 (stale since line 4)
    first.accrue(entry("-0.25", kind=EntryKind.REVERSAL, ticket=1))
    for env in (first, second, Env(SqliteEventStore(path), policies)):
        env.runner.run()
        assert env.payouts.pending("ib-1") == [(MON, UnroundedMoney(Decimal("113.25"), USD))]
        assert env.payouts.pending("ib-2") == [(MON, UnroundedMoney(Decimal("2.00"), USD))]
        stored = env.repo.load(IbPayoutAccount, "ib-1")
        assert stored is not None
        assert stored.version == 3  # three absorptions, none twice
        assert stored.journal_version == 6
        assert stored.pending == ((MON, "USD", Decimal("113.25")),)  # all of it recorded
