"""The ledger: idempotent and linked transfers, holds, limits, reversals, history; a stateful
test against a trivial model; a bank test under concurrency."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fxcrm_core.events import (
    DomainEvent,
    EventCodec,
    EventRegistry,
    EventStore,
    ProjectionRunner,
    Repository,
    StoredEvent,
)
from fxcrm_core.kernel import (
    AmountBelowMinimumError,
    Currency,
    CurrencyMismatchError,
    ExchangeRate,
    FixedClock,
    IdempotencyConflictError,
    IllegalTransitionError,
    Money,
    NegativeAmountError,
    Rounding,
    ValidationError,
)
from fxcrm_core.ledger import (
    LEDGER_EVENTS,
    AlreadyReversedError,
    ExceedsLimitError,
    Ledger,
    LedgerAccount,
    Limit,
    PendingHolds,
    Transfer,
    TransferRequest,
    TransferStatus,
)
from fxcrm_core.ledger.model import (
    AccountOpened,
    EntryRecorded,
    PendingReleased,
    TransferFailed,
    TransferRecorded,
    TransferResolved,
)
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def make(
    store: EventStore | None = None, *, open_accounts: bool = True
) -> tuple[Ledger, FixedClock]:
    clock = FixedClock(T0)
    registry = EventRegistry()
    registry.register_all(LEDGER_EVENTS)
    repo = Repository(store or MemoryEventStore(clock), EventCodec(registry))
    ledger = Ledger(repo, clock=clock)
    if not open_accounts:
        return ledger, clock
    ledger.open_account("omnibus", owner="broker", currency="USD", purpose="omnibus")
    for w in ("ana", "bo"):
        ledger.open_account(
            w, owner=w, currency="USD", purpose="wallet", limit=Limit.DEBITS_WITHIN_CREDITS
        )
    return ledger, clock


def deposit(ledger: Ledger, tid: str, wallet: str, amount: str) -> None:
    ledger.transfer(TransferRequest(tid, "omnibus", wallet, usd(amount)))


def test_debits_equal_credits_and_wallets_cannot_go_below_zero() -> None:
    ledger, _ = make()
    deposit(ledger, "d1", "ana", "100")
    ledger.transfer(TransferRequest("t1", "ana", "bo", usd("60")))
    with pytest.raises(ExceedsLimitError):
        ledger.transfer(TransferRequest("t2", "ana", "bo", usd("40.01")))
    assert ledger.balance("ana").net_credit == usd("40")
    assert ledger.balance("bo").net_credit == usd("60")
    assert ledger.balance("omnibus").debits_posted == usd("100")


def test_idempotency_same_content_replays_other_content_conflicts() -> None:
    ledger, _ = make()
    deposit(ledger, "psp-1", "ana", "100")
    again = ledger.transfer(TransferRequest("psp-1", "omnibus", "ana", usd("100")))
    assert again.replayed
    assert ledger.balance("ana").net_credit == usd("100")
    with pytest.raises(IdempotencyConflictError):
        ledger.transfer(TransferRequest("psp-1", "omnibus", "ana", usd("101")))


def test_a_failed_id_keeps_failing_even_when_it_would_now_succeed() -> None:
    ledger, _ = make()
    request = TransferRequest("w-1", "ana", "bo", usd("10"))
    with pytest.raises(ExceedsLimitError):
        ledger.transfer(request)
    deposit(ledger, "d1", "ana", "100")
    with pytest.raises(ExceedsLimitError, match="failed before"):
        ledger.transfer(request)
    assert ledger.transfer_status("w-1").status is TransferStatus.FAILED
    assert ledger.balance("bo").net_credit == usd(0)


def test_linked_transfers_are_all_or_nothing() -> None:
    ledger, _ = make()
    deposit(ledger, "d1", "ana", "50")
    batch = [
        TransferRequest("l1", "ana", "bo", usd("30")),
        TransferRequest("l2", "ana", "bo", usd("30")),  # the second breaks ana's limit
    ]
    with pytest.raises(ExceedsLimitError):
        ledger.transfer_linked(batch)
    assert ledger.balance("ana").net_credit == usd("50")
    assert ledger.balance("bo").net_credit == usd(0)
    ok = ledger.transfer_linked(
        [
            TransferRequest("l3", "ana", "bo", usd("30")),
            TransferRequest("l4", "bo", "ana", usd("5")),
        ]
    )
    assert [r.status for r in ok] == [TransferStatus.POSTED] * 2
    assert ledger.balance("ana").net_credit == usd("25")


def test_holds_count_against_the_limit_and_resolve_once() -> None:
    ledger, _ = make()
    deposit(ledger, "d1", "ana", "100")
    ledger.transfer(TransferRequest("h1", "ana", "omnibus", usd("70"), pending=True))
    assert ledger.balance("ana").available_credit == usd("30")
    with pytest.raises(ExceedsLimitError):
        ledger.transfer(TransferRequest("t1", "ana", "bo", usd("31")))
    posted = ledger.post_pending("h1", amount=usd("50"))  # partial: 20 released
    assert posted.status is TransferStatus.POSTED_FROM_PENDING
    assert ledger.balance("ana").net_credit == usd("50")
    assert ledger.balance("ana").debits_pending == usd(0)
    assert ledger.post_pending("h1", amount=usd("50")).replayed
    with pytest.raises(IllegalTransitionError):
        ledger.void_pending("h1")
    ledger.transfer(TransferRequest("h2", "ana", "omnibus", usd("10"), pending=True))
    ledger.void_pending("h2")
    assert ledger.balance("ana").available_credit == usd("50")
    ledger.transfer(TransferRequest("h3", "ana", "omnibus", usd("5"), pending=True))
    with pytest.raises(ValidationError):
        ledger.post_pending("h3", amount=usd("6"))


def test_holds_expire_after_their_timeout() -> None:
    ledger, clock = make()
    deposit(ledger, "d1", "ana", "100")
    ledger.transfer(
        TransferRequest("h1", "ana", "omnibus", usd("40"), pending=True, timeout=timedelta(hours=1))
    )
    holds = PendingHolds()
    runner = ProjectionRunner(ledger.repository.store, ledger.repository.codec)
    runner.catch_up(holds)
    assert ledger.expire_due(holds) == []
    clock.advance(hours=1)
    assert ledger.expire_due(holds) == ["h1"]
    runner.catch_up(holds)
    assert holds.due(clock.now()) == []
    assert ledger.transfer_status("h1").status is TransferStatus.EXPIRED
    assert ledger.balance("ana").available_credit == usd("100")


def test_corrections_are_reversing_transfers() -> None:
    ledger, _ = make()
    deposit(ledger, "d1", "ana", "100")
    result = ledger.reverse("d1", "d1-reversal")
    assert result.status is TransferStatus.POSTED
    assert ledger.balance("ana").net_credit == usd(0)
    assert ledger.transfer_status("d1").status is TransferStatus.POSTED  # never edited
    assert ledger.transfer_status("d1-reversal").reverses == "d1"
    deposit(ledger, "d2", "ana", "10")
    ledger.transfer(TransferRequest("spent", "ana", "bo", usd("10")))
    with pytest.raises(ExceedsLimitError):
        ledger.reverse("d2", "d2-reversal")  # the money was spent: the correction cannot run


def test_history_and_point_in_time_balances() -> None:
    ledger, clock = make()
    deposit(ledger, "d1", "ana", "100")
    clock.advance(hours=1)
    ledger.transfer(TransferRequest("t1", "ana", "bo", usd("25")))
    assert [(e.transfer_id, e.debit, e.amount, e.kind) for e in ledger.history("ana")] == [
        ("d1", False, usd("100"), "posted"),
        ("t1", True, usd("25"), "posted"),
    ]
    assert ledger.balance_at("ana", T0 + timedelta(minutes=30)).net_credit == usd("100")
    assert ledger.balance_at("ana", T0 + timedelta(hours=2)).net_credit == usd("75")


def test_bad_transfers_are_typed_errors_and_write_nothing() -> None:
    ledger, _ = make()
    ledger.open_account("eur-w", owner="ana", currency="EUR", purpose="wallet")
    before = ledger.repository.store.last_position()
    with pytest.raises(NegativeAmountError):
        ledger.transfer(TransferRequest("x1", "omnibus", "ana", usd("-1")))
    with pytest.raises(ValidationError):
        ledger.transfer(TransferRequest("x2", "ana", "ana", usd("1")))
    with pytest.raises(ValidationError):
        ledger.transfer(TransferRequest("x3", "omnibus", "ana", usd("1"), timeout=timedelta(1)))
    with pytest.raises(ValidationError):
        ledger.transfer_linked([])
    assert ledger.repository.store.last_position() == before
    with pytest.raises(CurrencyMismatchError):
        ledger.transfer(TransferRequest("x4", "omnibus", "eur-w", usd("1")))
    with pytest.raises(IdempotencyConflictError):
        ledger.open_account("ana", owner="ana", currency="EUR", purpose="wallet")


# -- what a transfer reads and folds ----------------------------------------------------------
class CountingStore(MemoryEventStore):
    """A memory store that lists the streams read from it."""

    def __init__(self) -> None:
        super().__init__(FixedClock(T0))
        self.reads: list[str] = []

    def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        self.reads.append(stream_id)
        return super().read_stream(stream_id, after_version=after_version)


def test_a_transfer_between_accounts_this_ledger_knows_reads_no_stream() -> None:
    store = CountingStore()
    ledger, _ = make(store)
    deposit(ledger, "d1", "ana", "100")
    store.reads.clear()
    ledger.transfer(TransferRequest("t1", "ana", "bo", usd("60")))
    assert store.reads == []
    assert ledger.balance("bo").net_credit == usd("60")


def test_a_retry_answers_from_the_store_even_when_the_transfer_would_now_be_refused() -> None:
    ledger, _ = make()
    deposit(ledger, "d1", "ana", "100")
    first = TransferRequest("t1", "ana", "bo", usd("60"))
    ledger.transfer(first)
    ledger.transfer(TransferRequest("t2", "ana", "bo", usd("40")))  # ana is empty now
    before = ledger.repository.store.last_position()
    assert ledger.transfer(first).replayed
    with pytest.raises(IdempotencyConflictError):
        ledger.transfer(TransferRequest("t1", "ana", "bo", usd("61")))
    with pytest.raises(IdempotencyConflictError):
        ledger.transfer(TransferRequest("t1", "ana", "nobody", usd("60")))
    assert ledger.repository.store.last_position() == before  # no failure was recorded
    assert ledger.transfer_status("t1").status is TransferStatus.POSTED


def test_a_ledger_decides_on_what_the_store_holds_not_on_what_it_saw_last() -> None:
    store = MemoryEventStore(FixedClock(T0))
    here, _ = make(store)
    there, _ = make(store, open_accounts=False)
    deposit(here, "d1", "ana", "10")  # here saw ana with 10...
    deposit(there, "d2", "ana", "90")  # ...and not these 90
    assert here.transfer(TransferRequest("t1", "ana", "bo", usd("100"))).status is (
        TransferStatus.POSTED
    )
    # there saw ana with 100, here has emptied it since.
    with pytest.raises(ExceedsLimitError):
        there.transfer(TransferRequest("t2", "ana", "bo", usd("50")))
    assert there.transfer_status("t2").status is TransferStatus.FAILED
    assert (here.balance("ana").net_credit, here.balance("bo").net_credit) == (usd(0), usd(100))


def test_a_linked_batch_stores_its_transfers_then_each_account_once_in_order() -> None:
    ledger, _ = make()
    deposit(ledger, "d1", "ana", "50")
    before = ledger.repository.store.last_position()
    ledger.transfer_linked(
        [
            TransferRequest("l1", "ana", "bo", usd("30")),
            TransferRequest("l2", "bo", "omnibus", usd("5")),
        ]
    )
    stored = ledger.repository.store.read_all(after_position=before)
    assert [(e.stream_id, e.version, e.event_type) for e in stored] == [
        ("transfer-l1", 1, "TransferRecorded"),
        ("transfer-l2", 1, "TransferRecorded"),
        ("ledger-ana", 3, "EntryRecorded"),
        ("ledger-bo", 2, "EntryRecorded"),
        ("ledger-bo", 3, "EntryRecorded"),
        ("ledger-omnibus", 3, "EntryRecorded"),
    ]


_cents = st.integers(1, 10**9)
_moves = st.lists(
    st.tuples(st.sampled_from(["entry", "release"]), st.booleans(), st.booleans(), _cents),
    max_size=30,
)


@given(moves=_moves, cut=st.integers(0, 31))
def test_folding_an_account_gives_the_sums_of_its_entries(
    moves: list[tuple[str, bool, bool, int]], cut: int
) -> None:
    history: list[DomainEvent] = [AccountOpened("a", "o", Currency.of("USD"), "wallet", Limit.NONE)]
    sums = {"dp": 0, "cp": 0, "dh": 0, "ch": 0}  # posted and pending (held) debits and credits
    for kind, debit, pending, cents in moves:
        amount = Money.from_minor(cents, "USD")
        side = "d" if debit else "c"
        if kind == "release":
            history.append(PendingReleased("t", debit, amount))
            sums[side + "h"] -= cents
        else:
            history.append(EntryRecorded("t", debit, amount, pending))
            sums[side + ("h" if pending else "p")] += cents
    folded = LedgerAccount.blank("a").fold(history)
    b = folded.open_balance
    assert folded.version == len(history)
    assert (b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending) == tuple(
        Money.from_minor(sums[k], "USD") for k in ("dp", "cp", "dh", "ch")
    )
    one_by_one = LedgerAccount.blank("a")
    for event in history:
        one_by_one = one_by_one.apply(event)
    assert folded == attrs.evolve(one_by_one, version=len(history))
    assert LedgerAccount.blank("a").fold(history[:cut]).fold(history[cut:]) == folded


def test_folding_a_transfer_equals_applying_its_events_then_counting_them() -> None:
    recorded = TransferRecorded("t", "a", "b", usd("5"), True, T0, None, (), "c")
    for events in (
        [recorded],
        [recorded, TransferResolved(TransferStatus.POSTED_FROM_PENDING, usd("3"))],
        [TransferFailed("t", "ExceedsLimitError", "c")],
    ):
        one_by_one = Transfer.blank("t")
        for event in events:
            one_by_one = one_by_one.apply(event)
        assert Transfer.blank("t").fold(events) == attrs.evolve(one_by_one, version=len(events))
    with pytest.raises(ValidationError):
        Transfer.blank("t").fold([EntryRecorded("t", True, usd("1"), False)])


# -- the model test ----------------------------------------------------------------------
WALLETS = ("ana", "bo")


CURRENCY = {"omnibus": "USD", "ana": "USD", "bo": "USD", "fx-usd": "USD", "ana-eur": "EUR",
            "fx-eur": "EUR"}  # fmt: skip
LIMITED = ("ana", "bo", "ana-eur")
RATES = [Decimal("0.9213"), Decimal("1.0842"), Decimal("0.5")]


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryEventStore()
        self.ledger, _ = make(self.store)
        self.ledger.open_account(
            "ana-eur",
            owner="ana",
            currency="EUR",
            purpose="wallet",
            limit=Limit.DEBITS_WITHIN_CREDITS,
        )
        self.ledger.open_account("fx-usd", owner="broker", currency="USD", purpose="fx")
        self.ledger.open_account("fx-eur", owner="broker", currency="EUR", purpose="fx")
        # minor units: [debits_posted, credits_posted, debits_pending, credits_pending]
        self.model = {a: [0, 0, 0, 0] for a in CURRENCY}
        self.requests: dict[str, tuple[TransferRequest, str]] = {}
        self.pending: list[str] = []
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"t{self.n}"

    def _available(self, account: str) -> int:
        d, c, dp, _ = self.model[account]
        return c - d - dp

    def _book(self, r: TransferRequest, cents: int, pending: bool) -> None:
        i = 2 if pending else 0
        self.model[r.debit_account][i] += cents
        self.model[r.credit_account][i + 1] += cents

    @rule(wallet=st.sampled_from(WALLETS), cents=st.integers(1, 50_000))
    def deposit(self, wallet: str, cents: int) -> None:
        r = TransferRequest(self._id(), "omnibus", wallet, Money.from_minor(cents, "USD"))
        self.ledger.transfer(r)
        self._book(r, cents, False)
        self.requests[r.transfer_id] = (r, "posted")

    @rule(
        src=st.sampled_from(WALLETS),
        dst=st.sampled_from(WALLETS),
        cents=st.integers(1, 30_000),
        pending=st.booleans(),
    )
    def move(self, src: str, dst: str, cents: int, pending: bool) -> None:
        target = "omnibus" if src == dst else dst
        r = TransferRequest(
            self._id(), src, target, Money.from_minor(cents, "USD"), pending=pending
        )
        if cents > self._available(src):
            with pytest.raises(ExceedsLimitError):
                self.ledger.transfer(r)
            self.requests[r.transfer_id] = (r, "failed")
            return
        self.ledger.transfer(r)
        self._book(r, cents, pending)
        self.requests[r.transfer_id] = (r, "pending" if pending else "posted")
        if pending:
            self.pending.append(r.transfer_id)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), void=st.booleans())
    def resolve(self, data: st.DataObject, void: bool) -> None:
        tid = data.draw(st.sampled_from(self.pending))
        self.pending.remove(tid)
        r, _ = self.requests[tid]
        held = r.amount.minor
        self.model[r.debit_account][2] -= held
        self.model[r.credit_account][3] -= held
        if void:
            self.ledger.void_pending(tid)
            self.requests[tid] = (r, "voided")
            return
        cents = data.draw(st.integers(1, held))
        self.ledger.post_pending(tid, amount=Money.from_minor(cents, "USD"))
        self._book(r, cents, False)
        self.requests[tid] = (r, "posted")

    @rule(cents=st.integers(1, 40_000), rate=st.sampled_from(RATES), to_eur=st.booleans())
    def convert(self, cents: int, rate: Decimal, to_eur: bool) -> None:
        src, dst, fx_in, fx_out = (
            ("ana", "ana-eur", "fx-usd", "fx-eur")
            if to_eur
            else ("ana-eur", "ana", "fx-eur", "fx-usd")
        )
        sold = Money.from_minor(cents, CURRENCY[src])
        fx = ExchangeRate.of(CURRENCY[src], CURRENCY[dst], rate, "model", T0)
        bought = fx.convert(sold).round(Rounding.DOWN)  # the default policy: the house's favour
        cid = self._id()
        if cents > self._available(src) or bought.minor < 100:  # ... and at least 1.00 bought
            with pytest.raises((ExceedsLimitError, AmountBelowMinimumError)):
                self.ledger.convert(cid, source=src, target=dst, amount=sold, rate=fx,
                                    fx_accounts=(fx_in, fx_out))  # fmt: skip
            return
        record = self.ledger.convert(cid, source=src, target=dst, amount=sold, rate=fx,
                                     fx_accounts=(fx_in, fx_out))  # fmt: skip
        assert record.bought == bought
        assert record.bought.amount + record.remainder.amount == record.bought_exact.amount
        self.model[src][0] += cents
        self.model[fx_in][1] += cents
        self.model[fx_out][0] += bought.minor
        self.model[dst][1] += bought.minor

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.requests)))
        r, outcome = self.requests[tid]
        if outcome == "failed":
            with pytest.raises(ExceedsLimitError):
                self.ledger.transfer(r)
        else:
            assert self.ledger.transfer(r).replayed
        with pytest.raises(IdempotencyConflictError):
            self.ledger.transfer(
                TransferRequest(tid, r.debit_account, r.credit_account, r.amount + usd("0.01"))
            )

    @invariant()
    def debits_equal_credits_per_currency(self) -> None:
        bal = {a: self.ledger.balance(a) for a in self.model}
        for code in ("USD", "EUR"):
            mine = [b for a, b in bal.items() if CURRENCY[a] == code]
            posted = (
                sum(b.debits_posted.minor for b in mine),
                sum(b.credits_posted.minor for b in mine),
            )
            pending = (
                sum(b.debits_pending.minor for b in mine),
                sum(b.credits_pending.minor for b in mine),
            )
            assert posted[0] == posted[1]
            assert pending[0] == pending[1]

    @invariant()
    def matches_the_model_and_nothing_negative(self) -> None:
        for a, (d, c, dp, cp) in self.model.items():
            b = self.ledger.balance(a)
            assert (
                b.debits_posted.minor,
                b.credits_posted.minor,
                b.debits_pending.minor,
                b.credits_pending.minor,
            ) == (d, c, dp, cp)
            if a in LIMITED:
                assert not b.available_credit.is_negative()

    @invariant()
    def replay_equals_live(self) -> None:
        fresh = Ledger(Repository(self.store, self.ledger.repository.codec))
        for a in self.model:
            assert fresh.balance(a) == self.ledger.balance(a)


LedgerMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)
TestLedgerModel = LedgerMachine.TestCase


# -- the bank test -----------------------------------------------------------------------
def test_bank_threads_on_sqlite_keep_the_total(tmp_path: Path) -> None:
    ledger, _ = make(SqliteEventStore(tmp_path / "bank.sqlite", synchronous="NORMAL"))
    wallets = [f"w{i}" for i in range(5)]
    for w in wallets:
        ledger.open_account(
            w, owner=w, currency="USD", purpose="wallet", limit=Limit.DEBITS_WITHIN_CREDITS
        )
        deposit(ledger, f"fund-{w}", w, "100")
    total = usd("500")
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        import random

        rng = random.Random(seed)
        for n in range(25):
            src, dst = rng.sample(wallets, 2)
            try:
                ledger.transfer(
                    TransferRequest(
                        f"{seed}-{n}", src, dst, Money.from_minor(rng.randint(1, 6000), "USD")
                    )
                )
            except ExceedsLimitError:
                pass
            except BaseException as exc:
                errors.append(exc)
            snapshot = ledger.balances(wallets)
            seen = sum((b.net_credit for b in snapshot.values()), usd(0))
            if seen != total:
                errors.append(AssertionError(f"a read saw {seen}"))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    balances = [ledger.balance(w) for w in wallets]
    assert sum((b.net_credit for b in balances), usd(0)) == total
    assert all(not b.net_credit.is_negative() for b in balances)


# -- currencies -------------------------------------------------------------------------------
def fx_ledger() -> Ledger:
    ledger, _ = make()
    ledger.open_account(
        "ana-eur", owner="ana", currency="EUR", purpose="wallet", limit=Limit.DEBITS_WITHIN_CREDITS
    )
    ledger.open_account("eur-omnibus", owner="broker", currency="EUR", purpose="omnibus")
    ledger.open_account("fx-eur", owner="broker", currency="EUR", purpose="fx")
    ledger.open_account("fx-usd", owner="broker", currency="USD", purpose="fx")
    ledger.transfer(TransferRequest("eur-dep", "eur-omnibus", "ana-eur", Money.of("100", "EUR")))
    return ledger


def test_a_conversion_is_two_linked_transfers_at_a_recorded_rate() -> None:
    ledger = fx_ledger()
    rate = ExchangeRate.of("EUR", "USD", "1.0842", "lp-feed", T0)
    record = ledger.convert(
        "cx-1", source="ana-eur", target="ana", amount=Money.of("33.33", "EUR"), rate=rate,
        fx_accounts=("fx-eur", "fx-usd"),
    )  # fmt: skip
    # 33.33 x 1.0842 = 36.136386 USD: 36.13 credited (rounded down, in the house's favour),
    # 0.006386 kept by rounding, recorded.
    assert record.bought_exact.amount == Decimal("36.136386")
    assert record.bought == usd("36.13")
    assert record.remainder.amount == Decimal("0.006386")
    assert (record.rate, record.rate_source, record.rate_as_of) == (
        Decimal("1.0842"),
        "lp-feed",
        T0,
    )
    assert ledger.balance("ana-eur").net_credit == Money.of("66.67", "EUR")
    assert ledger.balance("ana").net_credit == usd("36.13")
    assert ledger.balance("fx-eur").net_credit == Money.of("33.33", "EUR")
    assert ledger.balance("fx-usd").net_credit == usd("-36.13")
    again = ledger.convert(
        "cx-1", source="ana-eur", target="ana", amount=Money.of("33.33", "EUR"), rate=rate,
        fx_accounts=("fx-eur", "fx-usd"),
    )  # fmt: skip
    assert again == record
    assert ledger.balance("ana").net_credit == usd("36.13")
    with pytest.raises(IdempotencyConflictError):
        ledger.convert(
            "cx-1", source="ana-eur", target="ana", amount=Money.of("10", "EUR"), rate=rate,
            fx_accounts=("fx-eur", "fx-usd"),
        )  # fmt: skip


def test_a_conversion_beyond_the_balance_writes_nothing() -> None:
    ledger = fx_ledger()
    before = ledger.repository.store.last_position()
    with pytest.raises(ExceedsLimitError):
        ledger.convert(
            "cx-2", source="ana-eur", target="ana", amount=Money.of("100.01", "EUR"),
            rate=ExchangeRate.of("EUR", "USD", "1.08", "x", T0), fx_accounts=("fx-eur", "fx-usd"),
        )  # fmt: skip
    assert ledger.balance("ana-eur").net_credit == Money.of("100", "EUR")
    assert ledger.balance("ana").net_credit == usd(0)
    # Only the failure records (so a retry keeps failing) were written.
    assert ledger.repository.store.last_position() == before + 2


@given(
    cents=st.integers(1, 10_000_000),
    rate=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(500), places=6),
    mode=st.sampled_from([Rounding.HALF_EVEN, Rounding.HALF_UP, Rounding.DOWN]),
)
def test_rounding_remainders_are_never_lost(cents: int, rate: Decimal, mode: Rounding) -> None:
    sold = Money.from_minor(cents, "EUR")
    exact = ExchangeRate.of("EUR", "JPY", rate, "law", T0).convert(sold).result
    bought, remainder = exact.round_with_remainder(mode)
    assert bought.amount + remainder.amount == exact.amount
    assert abs(remainder.amount) < bought.currency.quantum


# -- the bank test across processes ------------------------------------------------------------
def _bank_worker(path: str, seed: int, wallets: list[str]) -> None:
    import random

    ledger, _ = make(SqliteEventStore(path, synchronous="NORMAL"), open_accounts=False)
    rng = random.Random(seed)
    for n in range(30):
        src, dst = rng.sample(wallets, 2)
        with contextlib.suppress(ExceedsLimitError):
            amount = Money.from_minor(rng.randint(1, 6000), "USD")
            ledger.transfer(TransferRequest(f"p{seed}-{n}", src, dst, amount))


@pytest.mark.slow
def test_bank_two_processes_on_one_sqlite_file_keep_the_total(tmp_path: Path) -> None:
    path = tmp_path / "bank.sqlite"
    ledger, _ = make(SqliteEventStore(path, synchronous="NORMAL"))
    wallets = [f"w{i}" for i in range(4)]
    for w in wallets:
        ledger.open_account(
            w, owner=w, currency="USD", purpose="wallet", limit=Limit.DEBITS_WITHIN_CREDITS
        )
        deposit(ledger, f"fund-{w}", w, "100")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bank_worker, args=(str(path), s, wallets)) for s in (1, 2)]
    for p in procs:
        p.start()
    totals = []
    while any(p.is_alive() for p in procs):
        snapshot = ledger.balances(wallets)
        totals.append(sum((b.net_credit for b in snapshot.values()), usd(0)))
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    final = ledger.balances(wallets)
    assert sum((b.net_credit for b in final.values()), usd(0)) == usd("400")
    assert all(not b.net_credit.is_negative() for b in final.values())
    assert set(totals) <= {usd("400")}
    moved = [e for w in wallets for e in ledger.history(w) if e.transfer_id.startswith("p")]
    assert moved  # the processes really moved money


# -- the stored form and the limit check, as made cheaper -------------------------------------
def test_a_transfer_s_stored_rows_keep_their_bytes() -> None:
    """Pinned bytes of the rows a transfer writes (taken before the append path was made
    cheaper): the stored format does not move with the code that writes it."""
    ledger, _ = make()
    deposit(ledger, "d1", "ana", "100")
    store = ledger.repository.store
    before = store.last_position()
    ledger.transfer(
        TransferRequest("t1", "ana", "bo", usd("12.34"), pending=True, timeout=timedelta(hours=1)),
        actor="staff:7",
    )
    rows = [(e.stream_id, e.version, e.event_type, e.data, e.metadata) for e in
            store.read_all(after_position=before)]  # fmt: skip
    meta = b'{"a":"staff:7","r":"transfer"}'
    digest = TransferRequest(
        "t1", "ana", "bo", usd("12.34"), pending=True, timeout=timedelta(hours=1)
    ).digest()
    assert rows == [
        ("transfer-t1", 1, "TransferRecorded",
         b'{"transfer_id":"t1","debit_account":"ana","credit_account":"bo","amount":"12.34 USD",'
         b'"pending":true,"timeout_at":"2026-03-09T13:00:00+00:00","reverses":null,"linked":[],'
         b'"content":"' + digest.encode() + b'"}', meta),
        ("ledger-ana", 3, "EntryRecorded",
         b'{"transfer_id":"t1","debit":true,"amount":"12.34 USD","pending":true}', meta),
        ("ledger-bo", 2, "EntryRecorded",
         b'{"transfer_id":"t1","debit":false,"amount":"12.34 USD","pending":true}', meta),
    ]  # fmt: skip


def test_limits_bound_only_their_side_and_any_other_currency_is_refused() -> None:
    ledger, _ = make()
    ledger.open_account(
        "bank", owner="broker", currency="USD", purpose="bank", limit=Limit.CREDITS_WITHIN_DEBITS
    )
    bank = ledger.account("bank")
    with pytest.raises(ExceedsLimitError):  # an asset account cannot turn negative
        bank.check_limit_after(credit=usd("0.01"))
    bank.check_limit_after(debit=usd("1000000"))  # debits are not bounded
    ana = ledger.account("ana")  # a wallet: credits are not bounded, debits are
    ana.check_limit_after(credit=usd("1000000"))
    with pytest.raises(ExceedsLimitError):
        ana.check_limit_after(debit=ana.open_balance.available_credit + usd("0.01"))
    ana.check_limit_after(debit=ana.open_balance.available_credit)
    free = ledger.account("omnibus")  # no limit, but still one currency
    free.check_limit_after(debit=usd("1000000"), credit=usd("1000000"))
    for account in (free, ana, bank):
        for side in ("debit", "credit"):
            with pytest.raises(CurrencyMismatchError):
                account.check_limit_after(**{side: Money.of("1", "EUR")})
    with pytest.raises(ExceedsLimitError):  # through the service too
        ledger.transfer(TransferRequest("b1", "omnibus", "bank", usd("1")))


# -- reversals: at most the original, once per correction id, across processes ----------------
def test_a_transfer_is_reversed_once_and_other_correction_ids_are_refused() -> None:
    ledger, _ = make()
    deposit(ledger, "d1", "ana", "100")
    # Paid into an account without a limit: before, each correction id moved the 100 back again.
    ledger.transfer(TransferRequest("pay", "ana", "omnibus", usd("100")))
    first = ledger.reverse("pay", "corr-1")
    assert first.status is TransferStatus.POSTED
    assert not first.replayed
    written = ledger.repository.store.last_position()
    for other in ("corr-2", "corr-3"):
        with pytest.raises(AlreadyReversedError, match="already reversed"):
            ledger.reverse("pay", other)
        assert ledger.repository.load(Transfer, other) is None  # nothing recorded for the id
    assert ledger.repository.store.last_position() == written  # nothing written at all
    assert ledger.balance("ana").net_credit == usd("100")
    assert ledger.balance("omnibus").net_credit == usd("-100")
    assert isinstance(AlreadyReversedError(), IllegalTransitionError)


def test_the_same_correction_id_replays_its_result() -> None:
    ledger, _ = make()
    deposit(ledger, "pay", "ana", "100")
    ledger.reverse("pay", "corr-1", amount=usd("30"))
    written = ledger.repository.store.last_position()
    again = ledger.reverse("pay", "corr-1", amount=usd("30"))
    assert again.replayed
    assert again.status is TransferStatus.POSTED
    assert ledger.reverse("pay", "corr-1").replayed  # no amount: the one it had
    assert ledger.repository.store.last_position() == written
    with pytest.raises(IdempotencyConflictError):
        ledger.reverse("pay", "corr-1", amount=usd("31"))
    assert ledger.balance("ana").net_credit == usd("70")
    assert ledger.transfer_status("pay").reversed == usd("30")


def test_partial_reversals_never_sum_past_the_original() -> None:
    ledger, _ = make()
    deposit(ledger, "pay", "ana", "100")
    ledger.reverse("pay", "c1", amount=usd("60"))
    with pytest.raises(AlreadyReversedError, match="past"):
        ledger.reverse("pay", "c2", amount=usd("40.01"))
    ledger.reverse("pay", "c3")  # no amount: what is left (40)
    assert ledger.transfer_status("c3").amount == usd("40")
    with pytest.raises(AlreadyReversedError):
        ledger.reverse("pay", "c4", amount=usd("0.01"))
    with pytest.raises(NegativeAmountError):
        ledger.reverse("pay", "c5", amount=usd("-1"))
    with pytest.raises(CurrencyMismatchError):
        ledger.reverse("pay", "c6", amount=Money.of("1", "EUR"))
    assert ledger.balance("ana").net_credit == usd(0)
    assert ledger.transfer_status("pay").reversals == (("c1", usd("60")), ("c3", usd("40")))


def test_a_reversal_that_read_a_stale_transfer_conflicts_and_is_then_refused() -> None:
    """The check holds on the store, not in memory: a ledger that loaded the transfer before
    another one reversed it conflicts on the transfer's stream and is refused on a fresh read."""
    store = MemoryEventStore(FixedClock(T0))
    mine, _ = make(store)
    theirs, _ = make(store, open_accounts=False)
    deposit(mine, "d1", "ana", "100")
    # Paid into an account without a limit: its reversal could post twice on balances alone.
    mine.transfer(TransferRequest("pay", "ana", "omnibus", usd("100")))
    stale = mine.transfer_status("pay")
    get = mine.repository.get
    calls = []

    def first_stale(kind: type[Transfer], aggregate_id: str) -> Transfer:
        calls.append(aggregate_id)
        if len(calls) == 1:
            theirs.reverse("pay", "theirs")
            return stale
        return get(kind, aggregate_id)

    mine.repository.get = first_stale  # type: ignore[assignment, method-assign]
    with pytest.raises(AlreadyReversedError):
        mine.reverse("pay", "mine")
    assert len(calls) == 2
    assert mine.balance("ana").net_credit == usd("100")
    assert mine.repository.load(Transfer, "mine") is None


def test_two_ledgers_on_one_sqlite_file_reversing_at_once_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    a, _ = make(SqliteEventStore(path, synchronous="NORMAL"))
    b, _ = make(SqliteEventStore(path, synchronous="NORMAL"), open_accounts=False)
    rounds = 12
    deposit(a, "d1", "ana", str(10 * rounds))
    for n in range(rounds):  # into an account without a limit: only the reversal check holds
        a.transfer(TransferRequest(f"pay-{n}", "ana", "omnibus", usd("10")))
    outcomes: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(name: str, ledger: Ledger) -> None:
        for n in range(rounds):
            barrier.wait()
            try:
                ledger.reverse(f"pay-{n}", f"{name}-{n}")
                outcomes[name].append("posted")
            except AlreadyReversedError:
                outcomes[name].append("refused")
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=x) for x in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for n in range(rounds):
        assert sorted((outcomes["a"][n], outcomes["b"][n])) == ["posted", "refused"]
    assert a.balance("ana").net_credit == usd(10 * rounds)
    assert b.balance("omnibus").net_credit == usd(-10 * rounds)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["c1", "c2", "c3", "c4"]), st.none() | st.integers(1, 12_000)),
        max_size=8,
    )
)
def test_no_sequence_of_reversals_moves_back_more_than_the_original(
    steps: list[tuple[str, int | None]],
) -> None:
    ledger, _ = make()
    deposit(ledger, "pay", "ana", "100")
    for correction_id, cents in steps:
        amount = None if cents is None else Money.from_minor(cents, "USD")
        with contextlib.suppress(AlreadyReversedError, IdempotencyConflictError):
            ledger.reverse("pay", correction_id, amount=amount)
    reversed_total = sum(
        (e.amount for e in ledger.history("ana") if e.transfer_id != "pay"), usd(0)
    )
    assert reversed_total <= usd("100")
    assert reversed_total == ledger.transfer_status("pay").reversed
    assert ledger.balance("ana").net_credit == usd("100") - reversed_total
    balances = [ledger.balance(a) for a in ("omnibus", "ana", "bo")]
    assert sum((b.debits_posted for b in balances), usd(0)) == sum(
        (b.credits_posted for b in balances), usd(0)
    )


def test_conversions_cannot_farm_rounding() -> None:
    """Issue 14: 200 conversions of 0.01 USD to EUR at 0.9213 gave 2.00 EUR (fair: 1.84). The
    ledger's default policy rounds down and refuses conversions under 1.00 bought."""
    ledger = fx_ledger()
    ledger.transfer(TransferRequest("usd-dep", "omnibus", "ana", usd("100")))
    rate = ExchangeRate.of("USD", "EUR", "0.9213", "lp-feed", T0)
    before = ledger.repository.store.last_position()
    with pytest.raises(AmountBelowMinimumError):
        ledger.convert(
            "tiny", source="ana", target="ana-eur", amount=usd("0.01"), rate=rate,
            fx_accounts=("fx-usd", "fx-eur"),
        )  # fmt: skip
    assert ledger.repository.store.last_position() == before
    record = ledger.convert(
        "fair", source="ana", target="ana-eur", amount=usd("2.00"), rate=rate,
        fx_accounts=("fx-usd", "fx-eur"),
    )  # fmt: skip
    assert record.bought == Money.of("1.84", "EUR")  # 1.8426 rounded down


def test_a_correction_cannot_bypass_reverse() -> None:
    """Review: a transfer posted with reverses= through transfer() was not counted, so
    reverse() then moved the full amount back a second time."""
    ledger, _ = make()
    deposit(ledger, "pay", "ana", "100")
    with pytest.raises(ValidationError, match=r"Ledger\.reverse"):
        ledger.transfer(TransferRequest("c-manual", "ana", "omnibus", usd("100"), reverses="pay"))
    ledger.reverse("pay", "c-1")
    with pytest.raises(AlreadyReversedError):
        ledger.reverse("pay", "c-2")


def test_one_leg_of_a_conversion_is_not_reversed_alone() -> None:
    ledger = fx_ledger()
    rate = ExchangeRate.of("EUR", "USD", "1.0842", "lp-feed", T0)
    ledger.convert(
        "cx-9", source="ana-eur", target="ana", amount=Money.of("10", "EUR"), rate=rate,
        fx_accounts=("fx-eur", "fx-usd"),
    )  # fmt: skip
    before = ledger.repository.store.last_position()
    for leg in ("cx-9:sell", "cx-9:buy"):
        with pytest.raises(IllegalTransitionError, match="conversion"):
            ledger.reverse(leg, f"undo-{leg}")
    assert ledger.repository.store.last_position() == before
