"""The accrual journal: one line per recorded batch of rebate entries, absorbed by each IB's
account at a payout run or, for every IB, at each ABSORB_EVERY-th line. Answers count the lines
not absorbed yet; a reader in a fresh process replays fewer than ABSORB_EVERY lines; a payout
racing the policy's absorption pays each line once."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.commissions import (
    ABSORB_EVERY,
    IbPayoutAccount,
    PayoutPolicy,
)
from fxcrm_core.commissions.payouts import AccrualJournal
from fxcrm_core.events import EventMetadata, NewEvent, StoredEvent, StreamAppend
from fxcrm_core.kernel import CodecError, Currency, Money, UnroundedMoney
from fxcrm_core.stores import SqliteEventStore
from tests.test_payouts import MON, RUNNER, Env, entry, memory

USD = Currency.of("USD")
JOURNAL = AccrualJournal.stream_id_for("journal")


def stored(env: Env, ib: str = "ib-1") -> IbPayoutAccount:
    return env.repo.load(IbPayoutAccount, ib) or IbPayoutAccount.blank(ib)


def test_a_batch_is_one_journal_line_and_answers_count_it_before_it_is_absorbed() -> None:
    env = Env(memory(), {"ib-1": PayoutPolicy(USD, Money.of(1, "USD"))})
    env.accrue(entry("1.25"), entry("2.00", ticket=2, ib="ib-2"), entry("0.75", ticket=3))
    assert env.store.stream_version(JOURNAL) == 1
    assert stored(env).version == 0  # nothing recorded on the account yet
    assert env.payouts.pending("ib-1") == [(MON, UnroundedMoney(Decimal("2.00"), USD))]
    assert env.payouts.pending("ib-2") == [(MON, UnroundedMoney(Decimal("2.00"), USD))]
    result = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert result.paid == Money.of("2.00", "USD")
    account = stored(env)
    assert account.journal_version == 1
    assert account.pending == ()
    assert env.payouts.pending("ib-1") == []
    env.accrue(entry("5", ticket=4))  # a later line is owed again, once
    assert env.payouts.pending("ib-1") == [(MON, UnroundedMoney(Decimal(5), USD))]


def test_every_ib_absorbs_at_each_multiple_and_a_fresh_reader_replays_less(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.sqlite"
    env = Env(SqliteEventStore(path))
    for n in range(1, ABSORB_EVERY + 3):
        env.accrue(entry("1", ticket=n), entry("0.5", ticket=n, ib=f"ib-{n % 3}"))
    assert env.store.stream_version(JOURNAL) == ABSORB_EVERY + 2
    for ib in ("ib-0", "ib-1", "ib-2"):
        account = stored(env, ib)
        assert account.journal_version == ABSORB_EVERY  # absorbed at the multiple, not since
    fresh = Env(SqliteEventStore(path))
    reads: list[int] = []
    read_stream = fresh.store.read_stream

    def counting(stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        found = read_stream(stream_id, after_version=after_version)
        if stream_id == JOURNAL:
            reads.append(len(found))
        return found

    fresh.store.read_stream = counting  # type: ignore[method-assign]
    total = Decimal(ABSORB_EVERY + 2) + sum(
        (Decimal("0.5") for n in range(1, ABSORB_EVERY + 3) if n % 3 == 1), Decimal(0)
    )
    assert fresh.payouts.pending("ib-1") == [(MON, UnroundedMoney(total, USD))]
    assert sum(reads) == 2  # the two lines after the last multiple, nothing older


def test_a_payout_racing_the_policys_absorption_pays_each_line_once(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    policies = {"ib-1": PayoutPolicy(USD, Money.of(1, "USD"))}
    worker = Env(SqliteEventStore(path), policies)
    cashier = Env(SqliteEventStore(path), policies)
    for n in range(1, ABSORB_EVERY):
        worker.accrue(entry("1", ticket=n))
    assert cashier.payouts.pending("ib-1")  # the cashier's view caches the account
    worker.accrue(entry("1", ticket=ABSORB_EVERY))  # the policy absorbs: the account moves
    result = cashier.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert result.paid == Money.of(ABSORB_EVERY, "USD")
    worker.accrue(entry("3", ticket=ABSORB_EVERY + 1))
    again = worker.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert again.paid == Money.of(3, "USD")
    assert cashier.wallet() == Money.of(ABSORB_EVERY + 3, "USD")
    assert stored(cashier).pending == ()
    assert cashier.payouts.pending("ib-1") == []


def test_an_erased_ibs_check_sees_lines_not_absorbed_yet() -> None:
    from fxcrm_core.commissions.payouts import AccrualView

    env = Env(memory())
    env.accrue(entry("0.01"))
    account = AccrualView(env.repo).account("ib-1")
    assert account.pending == ((MON, "USD", Decimal("0.01")),)


@pytest.mark.parametrize(
    "rows",
    [
        "not a list",
        [["ib-1", "2026-03-09", "USD"]],
        [["ib-1", "2026-13-09", "USD", "1"]],
        [["ib-1", "2026-03-09", "USD", 1]],
        [["ib-1", "2026-03-09", "USD", "NaN"]],
        [["ib-1", "2026-03-09", "USD", "1e99999999999"]],
        [[1, "2026-03-09", "USD", "1"]],
        [None],
    ],
)
def test_a_malformed_journal_line_is_a_codec_error(rows: object) -> None:
    env = Env(memory())
    payload = json.dumps({"journal": "journal", "rows": rows}).encode()
    meta = env.repo.codec.encode_metadata(EventMetadata("system:test"))
    env.store.append(StreamAppend(JOURNAL, 0, (NewEvent("RebatesJournaled", payload, meta),)))
    with pytest.raises(CodecError):
        env.payouts.pending("ib-1")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["ib-1", "ib-2"]),
                st.decimals("-50", "50", places=4),
                st.integers(0, 3),
            ),
            min_size=1,
            max_size=3,
        ),
        min_size=1,
        max_size=2 * ABSORB_EVERY + 3,
    ),
    st.sets(st.integers(0, 2 * ABSORB_EVERY + 3)),
)
def test_what_is_owed_is_the_sum_of_the_entries_whenever_payouts_run(
    batches: list[list[tuple[str, Decimal, int]]], runs: set[int]
) -> None:
    """Law: after any sequence of batches and payout runs (at any line, in a second process
    on the same log), paid + owed per IB equals the sum of its entries, to the last digit."""
    env = Env(memory(), {ib: PayoutPolicy(USD, Money.of("0.01", "USD")) for ib in ("ib-1", "ib-2")})
    other = Env(env.store, dict(env.payouts.policies))
    ticket = 0
    expected = {"ib-1": Decimal(0), "ib-2": Decimal(0)}
    for n, batch in enumerate(batches):
        entries = []
        for ib, amount, day in batch:
            ticket += 1
            entries.append(entry(str(amount), MON + timedelta(days=day), ticket=ticket, ib=ib))
            expected[ib] += amount
        env.accrue(*entries)
        if n in runs:
            who = other if n % 2 else env
            who.payouts.run_all(RUNNER, MON + timedelta(days=10))
    for ib, total in expected.items():
        for reader in (env, other, Env(env.store, {})):
            owed = reader.owed(ib)
            paid = reader.wallet(ib).amount
            assert paid + owed == total
