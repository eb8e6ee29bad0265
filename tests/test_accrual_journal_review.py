"""Review of the accrual journal: a second process committing a multiple's absorption between
an answer's read of the account and its read of the journal, a payout run in the same window,
accounts first made by a payout policy after lines exist, a currency change with lines not
absorbed, clawbacks and lines that net to nothing, and the law paid + owed = entries whatever
the interleaving of batches, runs, approvals, restarts and processes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fxcrm_core.commissions import ABSORB_EVERY, EntryKind, IbPayoutAccount, PayoutPolicy
from fxcrm_core.commissions.payouts import AccrualView
from fxcrm_core.kernel import Currency, Money
from tests.test_payouts import CHECKER, MON, RUNNER, Env, entry, memory

USD, EUR = Currency.of("USD"), Currency.of("EUR")
POLICY = PayoutPolicy(USD, Money.of(1, "USD"))
NEXT_DAY = MON + timedelta(days=1)


def commit_on_catch_up(view: AccrualView, at_call: int, commit: Callable[[], None]) -> None:
    """Make ``view`` run ``commit`` (another process's write) when its ``at_call``-th catch-up
    starts: after its caller read the IB's account, before it reads the journal."""
    original = view._catch_up
    calls = [0]

    def catch_up() -> None:
        calls[0] += 1
        if calls[0] == at_call:
            commit()
        original()

    view._catch_up = catch_up  # type: ignore[method-assign]


def lines_before_a_multiple(worker: Env, amount: str = "1") -> None:
    for n in range(1, ABSORB_EVERY):
        worker.accrue(entry(amount, ticket=n))


@pytest.mark.parametrize("reader", ["payouts", "erasure check"])
def test_an_answer_counts_the_lines_committed_before_it_began_when_a_multiple_lands_mid_read(
    reader: str,
) -> None:
    """Found: the view read the account, then the journal; a multiple's absorption committed
    in between moved the floor past the account as read, and every line before it vanished
    from the answer (the erasure check saw nothing owed)."""
    worker = Env(memory(), {"ib-1": POLICY})
    other = Env(worker.store, {"ib-1": POLICY})  # another process on the same log
    lines_before_a_multiple(worker)  # lines 1..15, committed before the answer begins
    view = other.payouts._lines if reader == "payouts" else AccrualView(other.repo)
    commit_on_catch_up(view, 1, lambda: worker.accrue(entry("1", ticket=ABSORB_EVERY)))
    account = view.account("ib-1")
    assert account.pending == ((MON, "USD", Decimal(ABSORB_EVERY)),)


def test_a_run_pays_the_lines_committed_before_it_began_when_a_multiple_lands_mid_absorb() -> None:
    """Found: a run's absorption read the stored account, then the journal; a multiple's
    absorption in between made it find nothing to absorb and decide on the account as read:
    nothing due, nothing paid, though fifteen lines were committed before the run."""
    worker = Env(memory(), {"ib-1": POLICY})
    cashier = Env(worker.store, {"ib-1": POLICY})
    lines_before_a_multiple(worker)
    cashier.payouts.ensure_policies()  # (recording it would read the account afresh)
    # run(): the first catch-up answers the policy check, the second is the run's absorption.
    commit_on_catch_up(
        cashier.payouts._lines, 2, lambda: worker.accrue(entry("1", ticket=ABSORB_EVERY))
    )
    result = cashier.payouts.run(RUNNER, "ib-1", NEXT_DAY)
    assert result.paid == Money.of(ABSORB_EVERY, "USD")
    assert cashier.wallet() == Money.of(ABSORB_EVERY, "USD")
    assert worker.owed() == 0


def test_a_payout_absorbing_through_a_line_then_the_multiple_absorbs_the_rest_once() -> None:
    worker = Env(memory(), {"ib-1": POLICY})
    cashier = Env(worker.store, {"ib-1": POLICY})
    for n in range(1, ABSORB_EVERY):
        worker.accrue(entry("1", ticket=n))
        if n == ABSORB_EVERY - 1:  # the payout absorbs through the line before the multiple
            assert cashier.payouts.run(RUNNER, "ib-1", NEXT_DAY).paid == Money.of(n, "USD")
    worker.accrue(entry("2", ticket=ABSORB_EVERY))  # the multiple: worker's cache is stale
    stored = worker.repo.load(IbPayoutAccount, "ib-1")
    assert stored is not None
    assert stored.journal_version == ABSORB_EVERY
    assert stored.pending == ((MON, "USD", Decimal(2)),)
    for env in (worker, cashier, Env(worker.store, {})):
        assert env.owed() == 2


def test_an_account_first_made_by_a_policy_after_lines_exist_is_owed_them_once() -> None:
    env = Env(memory(), {})
    for n in range(1, ABSORB_EVERY + 3):  # ib-9 is named from line ABSORB_EVERY + 1 on
        ib = "ib-9" if n > ABSORB_EVERY else "ib-1"
        env.accrue(entry("1", ticket=n, ib=ib))
    assert env.repo.load(IbPayoutAccount, "ib-9") is None
    env.payouts.set_policy(RUNNER, "ib-9", POLICY, reason="signed up")
    assert Env(env.store, {}).owed("ib-9") == 2
    for n in range(ABSORB_EVERY + 3, 2 * ABSORB_EVERY + 1):
        env.accrue(entry("1", ticket=n, ib="ib-9"))
    stored = env.repo.load(IbPayoutAccount, "ib-9")
    assert stored is not None
    assert stored.journal_version == 2 * ABSORB_EVERY
    assert stored.pending == ((MON, "USD", Decimal(ABSORB_EVERY)),)
    assert env.payouts.run(RUNNER, "ib-9", NEXT_DAY).paid == Money.of(ABSORB_EVERY, "USD")
    assert Env(env.store, {}).owed("ib-9") == 0


def test_a_currency_change_with_lines_not_absorbed_converts_them_at_the_run() -> None:
    env = Env(memory(), {})
    env.payouts.set_policy(RUNNER, "ib-1", POLICY, reason="start")
    env.accrue(entry("100"))  # a line not absorbed: pending, converted at the run
    env.payouts.set_policy(RUNNER, "ib-1", PayoutPolicy(EUR, Money.of(1, "EUR")), reason="moved")
    assert env.payouts.run(RUNNER, "ib-1", NEXT_DAY).paid == Money.of("92.13", "EUR")
    assert env.owed() == 0


def test_a_rejection_with_lines_not_absorbed_owes_both_once() -> None:
    policy = PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(1000, "USD"))
    env = Env(memory(), {"ib-1": policy})
    env.accrue(entry("1500"))
    held = env.payouts.run(RUNNER, "ib-1", NEXT_DAY)
    assert held.approval_id is not None
    env.accrue(entry("7", ticket=2))  # not absorbed yet
    env.approvals.reject(CHECKER, held.approval_id, "no")
    assert Env(env.store, {}).owed() == 1507
    again = env.payouts.run(RUNNER, "ib-1", NEXT_DAY)
    assert again.approval_id is not None
    env.approvals.approve(CHECKER, again.approval_id)
    assert env.wallet() == Money.of(1507, "USD")
    assert Env(env.store, {}).owed() == 0


def test_a_clawback_and_a_window_netting_to_nothing_are_absorbed_as_nothing_lost() -> None:
    env = Env(memory(), {"ib-1": POLICY})
    env.accrue(entry("40"))
    assert env.payouts.run(RUNNER, "ib-1", NEXT_DAY).paid == Money.of(40, "USD")
    env.accrue(entry("-40", kind=EntryKind.REVERSAL))  # clawed back from the paid 40
    for n in range(3, 2 * ABSORB_EVERY + 1):
        # After the first multiple, ib-1's lines of the second window net to nothing.
        sign = "-" if n > ABSORB_EVERY and n % 2 else ""
        amount = "5" if n > ABSORB_EVERY else "0.5"
        env.accrue(entry(f"{sign}{amount}", ticket=n), entry("1", ticket=n, ib="ib-2"))
    first = Decimal("0.5") * (ABSORB_EVERY - 2)
    stored = env.repo.load(IbPayoutAccount, "ib-1")
    assert stored is not None
    assert stored.journal_version == ABSORB_EVERY  # nothing to absorb at the second multiple
    for reader in (env, Env(env.store, {})):
        assert reader.owed() == first - 40
        assert reader.owed("ib-2") == 2 * ABSORB_EVERY - 2
    env.accrue(entry("50", ticket=99))
    assert env.payouts.run(RUNNER, "ib-1", NEXT_DAY).paid == Money.of(first + 10, "USD")
    assert env.wallet() == Money.of(first + 50, "USD")
    assert Env(env.store, {}).owed() == 0


Op = tuple[str, int, Decimal, int]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("batch"),
                st.integers(0, 1),
                st.decimals("-30", "900", places=3),
                st.integers(0, 2),
            ),
            st.tuples(st.just("run"), st.integers(0, 1), st.just(Decimal(0)), st.just(0)),
            st.tuples(st.just("restart"), st.integers(0, 1), st.just(Decimal(0)), st.just(0)),
            st.tuples(st.just("decide"), st.integers(0, 1), st.just(Decimal(0)), st.just(0)),
            st.tuples(st.just("midread"), st.integers(0, 1), st.just(Decimal(0)), st.just(0)),
        ),
        min_size=1,
        max_size=3 * ABSORB_EVERY,
    )
)
# The multiple committed by the other process in the middle of an answer's read.
@example([("batch", 0, Decimal(1), 0)] * (ABSORB_EVERY - 1) + [("midread", 1, Decimal(0), 0)])
def test_paid_plus_owed_is_the_entries_whatever_the_interleaving(ops: list[Op]) -> None:
    """Law: batches written by either of two processes, runs by either, approvals approved or
    rejected, restarts, and a line committed in the middle of an answer's read: paid + owed per
    IB equals its entries, in every process and a fresh one."""
    policy = PayoutPolicy(USD, Money.of(5, "USD"), approval_above=Money.of(1000, "USD"))
    ibs = ("ib-1", "ib-2")
    store = memory()
    procs = [Env(store, dict.fromkeys(ibs, policy)) for _ in range(2)]
    expected = dict.fromkeys(ibs, Decimal(0))
    ticket = 0
    approved = True
    waiting: list[str] = []

    def batch(proc: Env, amount: Decimal | int, ib_n: int) -> None:
        nonlocal ticket
        ticket += 1
        ib = ibs[ib_n % 2]
        proc.accrue(entry(str(amount), MON, ticket=ticket, ib=ib))
        expected[ib] += amount

    for op, who, amount, n in ops:
        proc = procs[who]
        if op == "batch":
            batch(proc, amount, n)
        elif op == "run":
            results = proc.payouts.run_all(RUNNER, NEXT_DAY)
            waiting += [r.approval_id for r in results if r.approval_id is not None]
        elif op == "restart":
            procs[who] = Env(store, dict.fromkeys(ibs, policy))
        elif op == "decide":
            for approval_id in waiting:
                if approved:
                    proc.approvals.approve(CHECKER, approval_id)
                else:
                    proc.approvals.reject(CHECKER, approval_id, "no")
            waiting.clear()
            approved = not approved
        else:
            # An answer while the other process commits a line: it counts every line
            # committed before it began (and the new one, or not).
            other, before, paid = procs[1 - who], expected["ib-1"], proc.wallet().amount
            commit_on_catch_up(proc.payouts._lines, 1, functools.partial(batch, other, 3, 0))
            assert paid + proc.owed() in (before, expected["ib-1"])
            procs[who] = Env(store, dict.fromkeys(ibs, policy))
    for ib, total in expected.items():
        for reader in (*procs, Env(store, {})):
            paid = reader.wallet(ib).amount
            assert paid + reader.owed(ib) == total
