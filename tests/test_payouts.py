"""IB payouts: rounded once in the IB's currency at a recorded rate, remainder carried, minimum,
cadence and hold, approval above a threshold, posting through the ledger, clawback; each IB's
account in the log (fed by a policy), so a restart or a crash pays exactly once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.access import (
    APPROVAL_EVENTS,
    AccessControl,
    Actor,
    Approvals,
    ApprovalStatus,
    Role,
)
from fxcrm_core.commissions import (
    PAYOUT_ACTION,
    PAYOUT_EVENTS,
    REBATE_EVENTS,
    Cadence,
    EntryKind,
    HeldPayoutMade,
    IbPayoutAccount,
    PayoutHeld,
    PayoutMade,
    PayoutPolicy,
    PayoutResult,
    Payouts,
    RebateEntriesRecorded,
    RebateEntry,
    accrual_policy,
)
from fxcrm_core.commissions.book import RebateFeed
from fxcrm_core.commissions.payouts import PayoutPolicySet
from fxcrm_core.events import (
    POLICY_EVENTS,
    Aggregate,
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    PolicyRunner,
    Repository,
    StreamAppend,
    UnitOfWork,
    iter_all,
)
from fxcrm_core.events.store import AppendResult
from fxcrm_core.kernel import (
    AccessDeniedError,
    Currency,
    ExchangeRate,
    FixedClock,
    Money,
    RateTable,
    UnroundedMoney,
    ValidationError,
)
from fxcrm_core.ledger import (
    LEDGER_EVENTS,
    ExceedsLimitError,
    Ledger,
    LedgerAccount,
    TransferRequest,
)
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore

USD, EUR = Currency.of("USD"), Currency.of("EUR")
MON = date(2026, 3, 9)
RUNNER = Actor.staff("payouts", Role.FINANCE)
CHECKER = Actor.staff("fin-2", Role.FINANCE)
RATES = RateTable(
    [ExchangeRate.of("USD", "EUR", "0.9213", "ecb", datetime(2026, 3, 1, tzinfo=UTC))]
)


def entry(
    amount: str,
    day: date = MON,
    kind: EntryKind = EntryKind.ACCRUAL,
    ticket: int = 1,
    ib: str = "ib-1",
) -> RebateEntry:
    money = UnroundedMoney(Decimal(amount), USD)
    return RebateEntry(
        kind=kind,
        server="mt5",
        ticket=ticket,
        ib_id=ib,
        component="rebate",
        amount=money,
        level=1,
        client_id="c-1",
        symbol="EURUSD",
        lots=Decimal(1),
        trading_day=day,
        explanation="test",
    )


class RefusingLedger(Ledger):
    """A ledger whose limits refuse any credit to the wallets listed (as a wallet with a limit
    would): it records the refusal as the real ledger does, so the ids are spent."""

    def __init__(self, repository: Repository) -> None:
        super().__init__(repository)
        self.refused: set[str] = set()

    def transfer_linked(
        self,
        requests: Sequence[TransferRequest],
        *,
        actor: str = "system:ledger",
        also: Sequence[tuple[Aggregate, DomainEvent]] = (),
    ) -> Any:
        if any(r.credit_account in self.refused for r in requests):
            self._fail(requests, actor, ExceedsLimitError())
            raise ExceedsLimitError()
        return super().transfer_linked(requests, actor=actor, also=also)


class Env:
    """One process: a repository on ``store``, the ledger, approvals, payouts and the policy
    runner that feeds the IBs' accounts from the rebate book's events."""

    def __init__(
        self,
        store: EventStore,
        policies: dict[str, PayoutPolicy] | None = None,
        *,
        ledger: type[Ledger] = Ledger,
    ) -> None:
        registry = EventRegistry()
        registry.register_all(
            (*LEDGER_EVENTS, *APPROVAL_EVENTS, *REBATE_EVENTS, *POLICY_EVENTS, *PAYOUT_EVENTS)
        )
        self.store = store
        self.repo = Repository(store, EventCodec(registry))
        self.ledger = ledger(self.repo)
        access = AccessControl()
        self.approvals = Approvals(self.repo, access)
        self.payouts = Payouts(
            self.ledger, RATES, policies or {}, access=access, approvals=self.approvals
        )
        self.approvals.register(PAYOUT_ACTION, self.payouts.approval_rule())
        self.runner = PolicyRunner(self.repo, [accrual_policy()])

    def accrue(self, *entries: RebateEntry) -> None:
        """Record a batch in the rebate book's stream, as the book does, and run the policy."""
        feed = self.repo.load(RebateFeed, "mt5") or RebateFeed.blank("mt5")
        with UnitOfWork(self.repo, EventMetadata("system:rebates")) as uow:
            uow.record(feed, RebateEntriesRecorded("mt5", feed.cursor + 1, tuple(entries), ()))
            uow.commit()
        self.runner.run()

    def wallet(self, ib: str = "ib-1", cur: str = "USD") -> Money:
        account = f"ib-wallet:{ib}:{cur}"
        if self.repo.load(LedgerAccount, account) is None:
            return Money.zero(cur)
        return self.ledger.balance(account).net_credit

    def owed(self, ib: str = "ib-1") -> Decimal:
        """Pending + carried + held, in USD (no conversion)."""
        account = self.payouts.account(ib)
        pending = sum((a for _, _, a in account.pending), Decimal(0))
        carried = account.carried.amount if account.carried else Decimal(0)
        return pending + carried + sum((h.amount.amount for h in account.held), Decimal(0))


def memory() -> MemoryEventStore:
    return MemoryEventStore(FixedClock(datetime(2026, 3, 10, tzinfo=UTC)))


def make(policy: PayoutPolicy) -> Env:
    return Env(memory(), {"ib-1": policy})


def test_rounded_once_down_with_the_remainder_carried() -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    env.accrue(entry("12.3456"), entry("0.0011", ticket=2))
    first = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    # 12.3456 + 0.0011 = 12.3467: 12.34 paid, 0.0067 carried.
    assert first.paid == Money.of("12.34", "USD")
    assert first.payout_id == "payout:ib-1:1"
    assert first.carried.amount == Decimal("0.0067")
    env.accrue(entry("0.9933", MON + timedelta(days=1), ticket=3))
    second = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=2))
    assert second.paid == Money.of("1.00", "USD")  # 0.9933 + 0.0067, nothing lost
    assert second.carried.amount == 0
    assert env.wallet() == Money.of("13.34", "USD")
    assert env.ledger.balance("rebate_expense:USD").net_credit == Money.of("-13.34", "USD")


def test_converted_into_the_ib_currency_at_a_recorded_rate() -> None:
    env = make(PayoutPolicy(EUR, Money.of(1, "EUR")))
    env.accrue(entry("100"))
    result = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert result.paid == Money.of("92.13", "EUR")
    assert result.rate_source is not None
    assert "ecb 0.9213" in result.rate_source
    assert env.wallet(cur="EUR") == Money.of("92.13", "EUR")


def test_minimum_cadence_and_hold() -> None:
    env = make(PayoutPolicy(USD, Money.of(50, "USD"), Cadence.WEEKLY, hold=timedelta(days=2)))
    payouts = env.payouts
    env.accrue(entry("30", MON), entry("40", date(2026, 3, 13), ticket=2))
    # On Monday 16 March a weekly payout covers up to Sunday 15; the 2-day hold moves the
    # cut-off to Friday 13: both entries count, 70 >= 50.
    assert payouts.run(RUNNER, "ib-1", date(2026, 3, 16)).paid == Money.of(70, "USD")
    env.accrue(entry("30", date(2026, 3, 16), ticket=3))
    below = payouts.run(RUNNER, "ib-1", date(2026, 3, 23))
    assert below.paid is None  # 30 < the 50 minimum: carried
    assert below.carried.amount == Decimal(30)
    env.accrue(entry("25", date(2026, 3, 20), ticket=4), entry("5", date(2026, 3, 30)))
    assert payouts.pending("ib-1") == [
        (date(2026, 3, 20), UnroundedMoney(Decimal(25), USD)),
        (date(2026, 3, 30), UnroundedMoney(Decimal(5), USD)),
    ]
    # On 30 March the cut-off is Friday 27 (Sunday 29 less the hold): the 30th waits.
    assert payouts.run(RUNNER, "ib-1", date(2026, 3, 30)).paid == Money.of(55, "USD")
    assert payouts.pending("ib-1") == [(date(2026, 3, 30), UnroundedMoney(Decimal(5), USD))]


def test_large_payouts_wait_for_a_second_person() -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(1000, "USD")))
    env.accrue(entry("1500.005"))
    result = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert result.paid is None
    assert result.approval_id is not None
    assert result.carried.amount == Decimal("0.005")
    assert env.payouts.pending("ib-1") == []
    assert env.owed() == Decimal("1500.005")  # held, not lost
    # Nothing is paid twice while it waits.
    assert env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=2)).approval_id is None
    assert env.approvals.approve(CHECKER, result.approval_id).status is ApprovalStatus.EXECUTED
    assert env.wallet() == Money.of(1500, "USD")
    assert env.payouts.account("ib-1").held == ()
    # A second approval service (another broker on another log) registers its own rule.
    Env(memory(), {"ib-1": PayoutPolicy(USD, Money.of(1, "USD"))})


def test_a_rejected_approval_puts_the_amount_back_and_the_next_run_pays_it() -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(1000, "USD")))
    env.accrue(entry("1500"))
    held = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert held.approval_id is not None
    env.approvals.reject(CHECKER, held.approval_id, "documents missing")
    again = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=2))
    assert again.approval_id not in (None, held.approval_id)
    assert again.approval_id is not None
    assert env.owed() == Decimal(1500)
    env.approvals.approve(CHECKER, again.approval_id)
    assert env.wallet() == Money.of(1500, "USD")
    assert env.owed() == 0
    # The maker cancelling works the same way.
    env.accrue(entry("2000", MON + timedelta(days=2), ticket=2))
    third = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=3))
    assert third.approval_id is not None
    env.approvals.cancel(RUNNER, third.approval_id)
    fourth = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=4))
    assert fourth.approval_id is not None
    assert env.approvals.approve(CHECKER, fourth.approval_id).result == "paid 2000.00 USD"
    assert env.wallet() == Money.of(3500, "USD")


def test_reversals_claw_back_from_later_payouts() -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    env.accrue(entry("100"))
    env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    env.accrue(entry("-100", MON + timedelta(days=1), EntryKind.REVERSAL))
    clawed = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=2))
    assert clawed.paid is None
    assert clawed.carried.amount == Decimal(-100)
    env.accrue(entry("130", MON + timedelta(days=2), ticket=2))
    assert env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=3)).paid == Money.of(30, "USD")
    assert env.wallet() == Money.of(130, "USD")


def test_an_ib_without_a_policy_is_refused() -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    with pytest.raises(ValueError, match="no payout policy"):
        env.payouts.run(RUNNER, "ib-unknown", MON)


def test_running_payouts_needs_the_permission() -> None:
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    env.accrue(entry("100"))
    client = Actor.client("c-1")
    before = env.store.last_position()
    with pytest.raises(AccessDeniedError):
        env.payouts.run(client, "ib-1", MON + timedelta(days=1))
    with pytest.raises(AccessDeniedError):
        env.payouts.run_all(client, MON + timedelta(days=1))
    assert env.store.last_position() == before
    assert env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1)).paid == Money.of(100, "USD")


def test_run_all_pays_as_separate_runs_would_in_one_ledger_command_per_chunk() -> None:
    def day_of(env: Env) -> None:
        for n in range(7):
            env.payouts.policies[f"ib-{n}"] = PayoutPolicy(USD, Money.of(5, "USD"))
        env.accrue(*[entry(f"{n * 3}.125", ticket=n, ib=f"ib-{n}") for n in range(7)])

    separate = make(PayoutPolicy(USD, Money.of(1, "USD")))
    day_of(separate)
    one_by_one = [
        separate.payouts.run(RUNNER, ib, MON + timedelta(days=1))
        for ib in sorted(separate.payouts.policies)
    ]
    batched = make(PayoutPolicy(USD, Money.of(1, "USD")))
    day_of(batched)
    before = batched.store.last_position()
    together = batched.payouts.run_all(RUNNER, MON + timedelta(days=1), chunk=3)
    assert together == one_by_one
    paid = [r for r in together if r.paid is not None]
    assert len(paid) == 5  # ib-0 (0.125) and ib-1 (3.125) are below the $5 minimum
    for r in together:
        if r.paid is not None:
            assert batched.wallet(r.ib_id) == r.paid == separate.wallet(r.ib_id)
    # 5 payouts in chunks of 3: two all-or-nothing ledger commands, linking 3 and 2 transfers.
    codec = batched.repo.codec
    batches = sorted(
        len(codec.decode(s).event.linked) + 1  # type: ignore[attr-defined]
        for s in iter_all(batched.store)
        if s.position > before and s.event_type == "TransferRecorded"
    )
    assert batches == [2, 2, 3, 3, 3]
    with pytest.raises(ValidationError):
        batched.payouts.run_all(RUNNER, MON, chunk=0)


def test_a_payout_rounding_to_nothing_waits_beside_one_that_pays() -> None:
    no_minimum = PayoutPolicy(USD, Money.of(0, "USD"))
    env = Env(memory(), {"ib-a": no_minimum, "ib-b": no_minimum})
    env.accrue(entry("0.004", ib="ib-a"), entry("10.001", ticket=2, ib="ib-b"))
    a, b = env.payouts.run_all(RUNNER, MON + timedelta(days=1))
    assert (a.paid, a.carried.amount, a.error) == (None, Decimal("0.004"), None)
    assert (b.paid, b.carried.amount) == (Money.of(10, "USD"), Decimal("0.001"))
    assert env.wallet("ib-b") == Money.of(10, "USD")
    assert env.ledger.repository.load(LedgerAccount, "ib-wallet:ib-a:USD") is None  # no post
    env.accrue(entry("0.006", MON + timedelta(days=1), ticket=3, ib="ib-a"))
    a, _ = env.payouts.run_all(RUNNER, MON + timedelta(days=2))
    assert a.paid == Money.of("0.01", "USD")


def test_one_ibs_refusal_or_missing_rate_leaves_the_others_paid() -> None:
    policies = {
        "ib-1": PayoutPolicy(USD, Money.of(1, "USD")),
        "ib-2": PayoutPolicy(USD, Money.of(1, "USD")),
        "ib-3": PayoutPolicy(USD, Money.of(1, "USD")),
        "ib-4": PayoutPolicy(Currency.of("JPY"), Money.of(1, "JPY")),  # no USD/JPY rate
    }
    env = Env(memory(), policies, ledger=RefusingLedger)
    ledger = env.ledger
    assert isinstance(ledger, RefusingLedger)
    ledger.refused = {"ib-wallet:ib-2:USD"}
    env.accrue(*[entry("10", ticket=n, ib=f"ib-{n}") for n in range(1, 5)])
    results = env.payouts.run_all(RUNNER, MON + timedelta(days=1))
    by_ib = {r.ib_id: r for r in results}
    assert by_ib["ib-1"].paid == by_ib["ib-3"].paid == Money.of(10, "USD")
    assert by_ib["ib-2"].paid is None
    assert by_ib["ib-2"].error is not None
    assert by_ib["ib-2"].error.startswith("ExceedsLimitError")
    assert by_ib["ib-4"].error is not None
    assert by_ib["ib-4"].error.startswith("RateNotFoundError")
    assert env.wallet("ib-1") == env.wallet("ib-3") == Money.of(10, "USD")
    assert env.owed("ib-2") == env.owed("ib-4") == Decimal(10)  # still owed, in full
    # The refused chunk spent its ids: the next ones are used, deterministically.
    assert by_ib["ib-1"].payout_id == "payout:ib-1:2"
    ledger.refused = set()
    again = {r.ib_id: r for r in env.payouts.run_all(RUNNER, MON + timedelta(days=1))}
    assert again["ib-2"].paid == Money.of(10, "USD")
    assert again["ib-2"].payout_id == "payout:ib-2:3"  # 1: the chunk's, 2: its own
    assert again["ib-1"].paid is None
    assert env.wallet("ib-1") == env.wallet("ib-2") == Money.of(10, "USD")


def test_accruals_are_handled_once_by_any_number_of_runners(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    env = Env(SqliteEventStore(path), {"ib-1": PayoutPolicy(USD, Money.of(1, "USD"))})
    env.accrue(entry("12.5"), entry("-2.5", kind=EntryKind.REVERSAL, ticket=2))
    assert PolicyRunner(env.repo, [accrual_policy()]).run() == 0  # a second runner
    second = Env(SqliteEventStore(path))  # a second process
    assert second.runner.run() == 0
    assert second.payouts.pending("ib-1") == [(MON, UnroundedMoney(Decimal("10.0"), USD))]


def crash(*args: object, **kwargs: object) -> None:
    raise RuntimeError("process died")


def results_of(env: Env, days: int) -> list[PayoutResult]:
    return [env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=d)) for d in range(1, days)]


def test_a_restart_between_accrual_and_payout_pays_the_same_once(tmp_path: Path) -> None:
    policy = {"ib-1": PayoutPolicy(USD, Money.of(1, "USD"))}
    alone = Env(memory(), policy)
    alone.accrue(entry("12.3456"), entry("7.0011", MON + timedelta(days=1), ticket=2))
    expected = results_of(alone, 4)
    path = tmp_path / "log.sqlite"
    Env(SqliteEventStore(path), policy).accrue(
        entry("12.3456"), entry("7.0011", MON + timedelta(days=1), ticket=2)
    )
    restarted = Env(SqliteEventStore(path), policy)
    assert results_of(restarted, 4) == expected
    again = Env(SqliteEventStore(path), policy)
    assert all(r.paid is None for r in results_of(again, 4))
    assert again.wallet() == alone.wallet() == Money.of("19.34", "USD")
    assert again.payouts.account("ib-1").sequence == 2


def test_a_restart_between_approval_and_posting_pays_once(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    policy = {"ib-1": PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(1000, "USD"))}
    first = Env(SqliteEventStore(path), policy)
    first.accrue(entry("1500"), entry("2500", ticket=2, ib="ib-2"))
    held = first.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert held.approval_id is not None
    # Restart: a fresh process approves; its rule posts.
    second = Env(SqliteEventStore(path), policy)
    second.approvals.approve(CHECKER, held.approval_id)
    assert second.wallet() == Money.of(1500, "USD")
    # An approval granted, the process dies inside the posting; another retries it.
    second.payouts.policies["ib-2"] = policy["ib-1"]
    other = second.payouts.run(RUNNER, "ib-2", MON + timedelta(days=1))
    assert other.approval_id is not None
    second.ledger.transfer_linked = crash  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        second.approvals.approve(CHECKER, other.approval_id)
    third = Env(SqliteEventStore(path), {**policy, "ib-2": policy["ib-1"]})
    assert third.approvals.get(other.approval_id).status is ApprovalStatus.APPROVED
    assert third.approvals.retry(CHECKER, other.approval_id).status is ApprovalStatus.EXECUTED
    assert third.approvals.retry(CHECKER, other.approval_id).changed is False
    assert third.wallet("ib-2") == Money.of(2500, "USD")
    assert all(r.paid is None and r.approval_id is None for r in results_of(third, 3))
    assert third.wallet() == Money.of(1500, "USD")


class CrashingStore(SqliteEventStore):
    """Dies right after an append that writes a payout (the append itself is done)."""

    def append(self, *appends: StreamAppend, idempotency_key: str | None = None) -> AppendResult:
        result = super().append(*appends, idempotency_key=idempotency_key)
        if any(a.stream_id.startswith("transfer-payout:") for a in appends):
            raise RuntimeError("process died after the commit")
        return result


def test_a_crash_around_the_ledger_post_pays_once_after_a_rerun(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    policy = {"ib-1": PayoutPolicy(USD, Money.of(1, "USD"))}
    # The post and the account's PayoutMade are one append: a crash after it leaves both.
    crashing = Env(CrashingStore(path), policy)
    crashing.accrue(entry("12.3467"))
    with pytest.raises(RuntimeError):
        crashing.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    rerun = Env(SqliteEventStore(path), policy)
    assert rerun.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1)).paid is None
    assert rerun.wallet() == Money.of("12.34", "USD")
    assert rerun.owed() == Decimal("0.0067")
    # A crash before the append leaves neither: the re-run pays.
    rerun.accrue(entry("5", MON + timedelta(days=1), ticket=2))
    post = rerun.ledger.transfer_linked
    rerun.ledger.transfer_linked = crash  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        rerun.payouts.run(RUNNER, "ib-1", MON + timedelta(days=2))
    rerun.ledger.transfer_linked = post  # type: ignore[method-assign]
    assert rerun.payouts.run(RUNNER, "ib-1", MON + timedelta(days=2)).paid == Money.of(5, "USD")
    assert rerun.wallet() == Money.of("17.34", "USD")


def test_a_transfer_posted_without_its_record_is_recorded_not_paid_again() -> None:
    """A writer that posted ``payout:ib-1:1`` and died before recording it (a host's script, an
    older version): the run finds it in the ledger and counts it."""
    env = make(PayoutPolicy(USD, Money.of(1, "USD")))
    env.accrue(entry("12.3467"))
    env.ledger.open_account("ib-wallet:ib-1:USD", owner="ib-1", currency=USD, purpose="ib_wallet")
    env.ledger.open_account(
        "rebate_expense:USD", owner="broker", currency=USD, purpose="rebate_expense"
    )
    env.ledger.transfer(
        TransferRequest(
            "payout:ib-1:1", "rebate_expense:USD", "ib-wallet:ib-1:USD", Money.of("12.34", "USD")
        )
    )
    result = env.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert result.paid is None  # 12.3467 owed, 12.34 already paid: 0.0067 carried
    assert result.carried.amount == Decimal("0.0067")
    assert env.wallet() == Money.of("12.34", "USD")
    made = [
        env.repo.codec.decode(s).event for s in iter_all(env.store) if s.event_type == "PayoutMade"
    ]
    assert made == [
        PayoutMade(
            "ib-1",
            1,
            "payout:ib-1:1",
            Money.of("12.34", "USD"),
            (),
            UnroundedMoney(Decimal("-12.34"), USD),
            recovered=True,
            policy_version=1,  # the configured policy, recorded by the run
        )
    ]


class RacingLedger(Ledger):
    """A ledger whose first post of each transfer id waits at ``gate`` until every racer has
    decided that payout: all the runs decide on the same state, then post at the same moment."""

    gate: threading.Barrier

    def __init__(self, repository: Repository) -> None:
        super().__init__(repository)
        self.seen: set[str] = set()

    def transfer_linked(
        self,
        requests: Sequence[TransferRequest],
        *,
        actor: str = "system:ledger",
        also: Sequence[tuple[Aggregate, DomainEvent]] = (),
    ) -> Any:
        ids = {r.transfer_id for r in requests}
        if not ids & self.seen:
            self.seen |= ids
            self.gate.wait(timeout=10)
        return super().transfer_linked(requests, actor=actor, also=also)


def race(path: Path, racers: int, run: Callable[[Env], list[PayoutResult]]) -> list[PayoutResult]:
    """``racers`` processes (threads, each with its own store) run payouts on one SQLite file."""
    policies = {ib: PayoutPolicy(USD, Money.of(1, "USD")) for ib in ("ib-1", "ib-2")}
    RacingLedger.gate = threading.Barrier(racers)
    envs = [Env(SqliteEventStore(path), policies, ledger=RacingLedger) for _ in range(racers)]
    results: list[PayoutResult] = []
    failures: list[BaseException] = []

    def go(env: Env) -> None:
        try:
            results.extend(run(env))
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            failures.append(exc)

    threads = [threading.Thread(target=go, args=(env,)) for env in envs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not failures
    return results


@pytest.mark.parametrize("batched", [True, False], ids=["run_all", "run"])
def test_runs_at_the_same_moment_tell_one_caller_it_paid(tmp_path: Path, batched: bool) -> None:
    """Review p4: of six runs that decided the same payout, each that found it posted by another
    said ``paid`` too (a host would send the notice six times)."""
    path = tmp_path / "log.sqlite"
    Env(SqliteEventStore(path)).accrue(entry("685.8885"), entry("229.6665", ib="ib-2", ticket=2))
    today = MON + timedelta(days=1)

    def run(env: Env) -> list[PayoutResult]:
        if batched:
            return env.payouts.run_all(RUNNER, today)
        return [env.payouts.run(RUNNER, ib, today) for ib in ("ib-1", "ib-2")]

    results = race(path, 6, run)
    after = Env(SqliteEventStore(path))
    for ib, amount, carried in (("ib-1", "685.88", "0.0085"), ("ib-2", "229.66", "0.0065")):
        mine = [r for r in results if r.ib_id == ib]
        paid = [r for r in mine if r.paid is not None]
        assert [r.paid for r in paid] == [Money.of(amount, "USD")]  # one caller, and only one
        others = [r for r in mine if r.paid is None]
        assert len(others) == 5
        for r in others:
            assert r.already_paid == Money.of(amount, "USD")
            assert (r.payout_id, r.error) == (paid[0].payout_id, None)
            assert r.carried == paid[0].carried == UnroundedMoney(Decimal(carried), USD)
        assert after.wallet(ib) == Money.of(amount, "USD")
        assert after.payouts.account(ib).sequence == 1


amounts = st.decimals(min_value=-60, max_value=400, places=4, allow_nan=False)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("accrue"), amounts, st.integers(0, 3)),
        st.tuples(st.just("run"), st.just(Decimal(0)), st.integers(0, 2)),
        st.tuples(st.just("approve"), st.just(Decimal(0)), st.just(0)),
        st.tuples(st.just("reject"), st.just(Decimal(0)), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(steps=steps, minimum=st.integers(0, 30), hold=st.integers(0, 2))
def test_paid_plus_owed_is_what_was_accrued(
    steps: list[tuple[str, Decimal, int]], minimum: int, hold: int
) -> None:
    policy = PayoutPolicy(
        USD,
        Money.of(minimum, "USD"),
        Cadence.DAILY,
        hold=timedelta(days=hold),
        approval_above=Money.of(500, "USD"),
    )
    env = make(policy)
    today, accrued, ticket, waiting = MON, Decimal(0), 0, []
    for op, amount, days in steps:
        if op == "accrue":
            ticket += 1
            env.accrue(entry(str(amount), today - timedelta(days=days), ticket=ticket))
            accrued += amount
        elif op == "run":
            today += timedelta(days=days)
            result = env.payouts.run(RUNNER, "ib-1", today)
            if result.approval_id is not None:
                waiting.append(result.approval_id)
        elif waiting:
            if op == "approve":
                env.approvals.approve(CHECKER, waiting.pop())
            else:
                env.approvals.reject(CHECKER, waiting.pop(), "no")
        paid = env.wallet().amount
        assert paid + env.owed() == accrued
    if env.wallet().is_positive():
        assert env.ledger.balance("rebate_expense:USD").net_credit == -env.wallet()
    account = env.payouts.account("ib-1")
    assert isinstance(account, IbPayoutAccount)
    assert set(waiting) <= {h.approval_id for h in account.held}


def _replay(
    steps: list[tuple[str, Decimal, int]], policy: PayoutPolicy, *, restart: bool
) -> tuple[list[tuple[object, ...]], Money, list[object]]:
    """Play ``steps`` on one log, in one process or in a fresh one after every step; returns
    what each run told its caller (approval ids aside: they are random), the wallet, and the
    payout events recorded."""
    store = memory()
    env = Env(store, {"ib-1": policy})
    today, ticket = MON, 0
    waiting: list[str] = []
    told: list[tuple[object, ...]] = []
    for op, amount, days in steps:
        if op == "accrue":
            ticket += 1
            env.accrue(entry(str(amount), today - timedelta(days=days), ticket=ticket))
        elif op == "run":
            today += timedelta(days=days)
            r = env.payouts.run(RUNNER, "ib-1", today)
            told.append((r.paid, r.carried, r.payout_id, r.approval_id is None, r.error))
            if r.approval_id is not None:
                waiting.append(r.approval_id)
        elif waiting and op == "approve":
            env.approvals.approve(CHECKER, waiting.pop())
        elif waiting:
            env.approvals.reject(CHECKER, waiting.pop(), "no")
        if restart:
            env = Env(store, {"ib-1": policy})
    made: list[object] = [
        attrs.evolve(e, approval_id="") if isinstance(e, PayoutHeld | HeldPayoutMade) else e
        for e in (env.repo.codec.decode(s).event for s in iter_all(store))
        if isinstance(e, PayoutMade | PayoutHeld | HeldPayoutMade | PayoutPolicySet)
    ]
    return told, env.wallet(), made


@settings(max_examples=30, deadline=None)
@given(steps=steps, minimum=st.integers(0, 30))
def test_a_restart_after_every_step_pays_the_same_payouts_once(
    steps: list[tuple[str, Decimal, int]], minimum: int
) -> None:
    """Law: whether the process restarts after every step or never, each run tells the same,
    the same payouts are recorded under the same ids and policy versions, and the wallet holds
    the same."""
    policy = PayoutPolicy(USD, Money.of(minimum, "USD"), approval_above=Money.of(500, "USD"))
    assert _replay(steps, policy, restart=True) == _replay(steps, policy, restart=False)


def test_approval_rules_are_registered_once_per_broker_not_per_payouts_object() -> None:
    """A second Payouts on the same approvals service is built without a second rule (it used
    to fail: 'action payout already has an approval rule'); the one rule executes a payout held
    by either; registering it twice is refused."""
    env = make(PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(100, "USD")))
    twin = Payouts(
        env.ledger,
        RATES,
        {"ib-1": env.payouts.policies["ib-1"]},
        access=AccessControl(),
        approvals=env.approvals,
    )
    env.accrue(entry("150"))
    held = twin.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert held.approval_id is not None
    assert env.approvals.approve(CHECKER, held.approval_id).status is ApprovalStatus.EXECUTED
    assert env.wallet() == Money.of(150, "USD")
    with pytest.raises(ValidationError, match="already has an approval rule"):
        env.approvals.register(PAYOUT_ACTION, twin.approval_rule())


def test_a_rejection_then_a_restart_then_a_new_run_pays_the_amount_once(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    policy = {"ib-1": PayoutPolicy(USD, Money.of(1, "USD"), approval_above=Money.of(100, "USD"))}
    first = Env(SqliteEventStore(path), policy)
    first.accrue(entry("150.505"))
    held = first.payouts.run(RUNNER, "ib-1", MON + timedelta(days=1))
    assert held.approval_id is not None
    first.approvals.reject(CHECKER, held.approval_id, "bank details missing")
    # The next run is in another process: it finds the rejection and asks again.
    second = Env(SqliteEventStore(path), policy)
    again = second.payouts.run(RUNNER, "ib-1", MON + timedelta(days=2))
    assert again.approval_id not in (None, held.approval_id)
    assert again.approval_id is not None
    assert second.owed() == Decimal("150.505")  # 150.50 held again, 0.005 carried
    third = Env(SqliteEventStore(path), policy)
    third.approvals.approve(CHECKER, again.approval_id)
    assert third.wallet() == Money.of("150.50", "USD")
    assert third.payouts.run(RUNNER, "ib-1", MON + timedelta(days=3)).paid is None
    assert third.wallet() == Money.of("150.50", "USD")
    assert third.owed() == Decimal("0.005")
