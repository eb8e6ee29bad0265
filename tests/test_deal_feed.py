"""The deal feed in the log: each item recorded once whoever pulls, the cursor resumed after a
restart; the rebate book fed by a policy on it pays what the host-driven book pays, across
processes, conflicts and crashes, each entry exactly once."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from fxcrm_core.commissions import REBATE_EVENTS, IbTree, RebateBook, RebateEngine, RebateEntry
from fxcrm_core.commissions import book as book_module
from fxcrm_core.commissions.book import RebateFeed
from fxcrm_core.events import (
    POLICY_EVENTS,
    EventCodec,
    EventMetadata,
    EventRegistry,
    Policy,
    PolicyError,
    PolicyRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel import CodecError, ConcurrencyError, Money, ValidationError
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import (
    FEED_EVENTS,
    BalanceOperation,
    DealChange,
    DealFeed,
    DealFeeds,
    DealsReceived,
    FeedItem,
    NewTradingAccount,
    SimulatedTradingServer,
    UnknownServerResponseError,
)
from tests.test_rebate_engine import LOGINS, T0, make
from tests.test_rebate_rules import engine as rules_engine
from tests.test_rebate_rules import full_schedule, simulated

EngineFactory = Callable[[], RebateEngine]
ENGINES: dict[str, EngineFactory] = {
    "per-lot": lambda: make(logins=LOGINS)[0],
    # A minimum holding time, a CPA and a daily cap: what later deals depend on crosses batches.
    "every-rule": lambda: rules_engine(full_schedule(), logins=LOGINS),
}


def repository(path: Path) -> Repository:
    registry = EventRegistry()
    registry.register_all((*FEED_EVENTS, *REBATE_EVENTS, *POLICY_EVENTS))
    return Repository(SqliteEventStore(path, synchronous="NORMAL"), EventCodec(registry))


def session(deals: int = 250, seed: int = 11) -> SimulatedTradingServer:
    sim = simulated(seed)
    sim.simulate_trading(deals)
    return sim


def recorded_items(repo: Repository, server: str) -> list[FeedItem]:
    items: list[FeedItem] = []
    for stored in repo.store.read_stream(DealFeed.stream_id_for(server)):
        event = repo.codec.decode(stored).event
        assert isinstance(event, DealsReceived)
        assert event.upto_cursor == event.items[-1].cursor
        items.extend(event.items)
    return items


def book_entries(repo: Repository) -> list[RebateEntry]:
    return [e for event in RebateBook.recorded(repo.store, repo.codec) for e in event.entries]


def drain(feeds: DealFeeds, sim: SimulatedTradingServer, **options: int) -> int:
    total = 0
    while pulled := feeds.pull(sim, **options):
        total += pulled
    return total


# -- the feed -------------------------------------------------------------------------------------
def test_pull_records_each_item_once_and_a_restart_resumes_at_the_cursor(tmp_path: Path) -> None:
    sim = session()
    everything = sim.deal_feed(limit=100_000)
    first = DealFeeds(repository(tmp_path / "f.sqlite"))
    assert first.pull(sim, limit=100, batch=30) == 100
    stream = first.repository.store.read_stream(DealFeed.stream_id_for(sim.name))
    assert [len(first.repository.codec.decode(s).event.items) for s in stream] == [30, 30, 30, 10]  # type: ignore[attr-defined]
    assert {first.repository.codec.decode_metadata(s.metadata).actor for s in stream} == {
        "system:feed"
    }

    again = DealFeeds(repository(tmp_path / "f.sqlite"))  # a restart
    assert again.cursor(sim.name) == 100
    assert drain(again, sim, limit=70, batch=25) == len(everything) - 100
    assert again.pull(sim) == 0
    sim.simulate_trading(40)
    assert again.pull(sim) == len(sim.deal_feed(after_cursor=everything[-1].cursor))
    # Decoded from the log, the items are the server's: Decimals, Money, times, enums and all.
    logged = recorded_items(repository(tmp_path / "f.sqlite"), sim.name)
    assert logged == sim.deal_feed(limit=100_000)
    assert {i.change for i in logged} == set(DealChange)


class RacingServer:
    """A server whose feed is read while another process pulls the same server meanwhile."""

    def __init__(self, inner: SimulatedTradingServer, rival: Callable[[], object]) -> None:
        self.inner, self.rival, self.name = inner, rival, inner.name

    def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
        items = self.inner.deal_feed(after_cursor=after_cursor, limit=limit)
        rival, self.rival = self.rival, lambda: None
        rival()  # commits first, from the same cursor
        return items


def test_the_loser_of_a_race_writes_nothing_and_a_retry_records_the_rest(tmp_path: Path) -> None:
    sim = session()
    mine = DealFeeds(repository(tmp_path / "f.sqlite"))
    theirs = DealFeeds(repository(tmp_path / "f.sqlite"))
    racing = RacingServer(sim, lambda: theirs.pull(sim, limit=50))
    with pytest.raises(ConcurrencyError):
        mine.pull(racing, limit=80)  # type: ignore[arg-type]
    assert mine.cursor(sim.name) == 50  # the rival's 50, none of the loser's 80
    assert drain(mine, sim, limit=80) == len(sim.deal_feed(limit=100_000)) - 50
    assert recorded_items(mine.repository, sim.name) == sim.deal_feed(limit=100_000)


def test_two_threads_pulling_at_once_record_every_item_once(tmp_path: Path) -> None:
    sim = session(400)
    path = tmp_path / "f.sqlite"
    total = len(sim.deal_feed(limit=100_000))
    repository(path)  # the file exists before the workers open it
    pulled: list[int] = []
    failed: list[BaseException] = []
    start = threading.Barrier(2)

    def worker() -> None:
        try:
            feeds = DealFeeds(repository(path))
            start.wait()
            while feeds.cursor(sim.name) < total:
                with contextlib.suppress(ConcurrencyError):  # the other recorded these: again
                    pulled.append(feeds.pull(sim, limit=7, batch=3))
        except BaseException as exc:  # pragma: no cover - shown by the assertion below
            failed.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed
    assert sum(pulled) == total
    assert recorded_items(repository(path), sim.name) == sim.deal_feed(limit=100_000)


def test_a_feed_breaking_the_port_promises_is_refused_with_nothing_written(
    tmp_path: Path,
) -> None:
    sim = session(30)
    feeds = DealFeeds(repository(tmp_path / "f.sqlite"))
    items = sim.deal_feed(limit=10)

    class Bad:
        name = sim.name

        def __init__(self, out: list[FeedItem]) -> None:
            self.out = out

        def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
            return self.out

    other = SimulatedTradingServer("other", seed=1)
    for bad in (
        items[::-1],  # cursors falling
        [items[0], items[0]],  # repeated
        [FeedItem(1, DealChange.ADDED, other_deal(other))],  # another server's deal
    ):
        with pytest.raises(UnknownServerResponseError):
            feeds.pull(Bad(bad))  # type: ignore[arg-type]
    with pytest.raises(UnknownServerResponseError):
        feeds.pull(Bad(items), limit=5)  # type: ignore[arg-type]
    for bad_size in ({"limit": 0}, {"batch": 0}, {"batch": True}):
        with pytest.raises(ValidationError):
            feeds.pull(sim, **bad_size)
    assert feeds.repository.store.last_position() == 0


def other_deal(server: SimulatedTradingServer) -> Any:
    login = server.create_account(NewTradingAccount("std", 100, "USD", "c-9"))
    server.balance_operation(
        login, BalanceOperation.DEPOSIT, Money.of(5, "USD"), comment="d", idempotency_key="k"
    )
    return server.deal_feed()[0].deal


# -- the rebate book fed by a policy --------------------------------------------------------------
def runner(repo: Repository, book: RebateBook, wrap: Callable[..., Any] | None = None) -> Any:
    handler = book.on_deals if wrap is None else wrap(book.on_deals)
    return PolicyRunner(repo, [Policy("rebates", (DealsReceived,), handler)])


def single_process(path: Path, factory: EngineFactory, pulls: list[tuple[int, int]]) -> Any:
    """One process doing everything: per ``(deals to simulate, pull limit)``, trade, pull,
    run the policies. Returns the entries in the log and the engine's totals."""
    sim = simulated(11)
    repo = repository(path)
    book = RebateBook(repo, factory())
    feeds, policies = DealFeeds(repo), runner(repo, book)
    for deals, limit in pulls:
        sim.simulate_trading(deals)
        drain(feeds, sim, limit=limit, batch=40)
        policies.run()
    return book_entries(repo), book.engine.totals()


@pytest.mark.parametrize("kind", ENGINES)
def test_the_policy_pays_what_the_host_driven_book_pays(tmp_path: Path, kind: str) -> None:
    sim = session()
    repo = repository(tmp_path / "p.sqlite")
    assert drain(DealFeeds(repo), sim, limit=1000, batch=40)
    book = RebateBook(repo, ENGINES[kind]())
    policies = runner(repo, book)
    assert policies.run() == len(repo.store.read_stream(DealFeed.stream_id_for(sim.name)))
    assert policies.run() == 0

    direct = RebateBook(repository(tmp_path / "d.sqlite"), ENGINES[kind]())
    feed = sim.deal_feed(limit=100_000)
    paid: list[RebateEntry] = []
    for start in range(0, len(feed), 40):
        paid += direct.process(sim.name, feed[start : start + 40])
    assert paid
    assert book_entries(repo) == paid
    assert book.engine.totals() == direct.engine.totals()
    assert book.engine.waiting() == direct.engine.waiting()
    metadata = {
        repo.codec.decode(s).metadata.actor
        for s in repo.store.read_stream("rebatefeed-" + sim.name)
    }
    assert metadata == {"policy:rebates"}


@pytest.mark.parametrize("kind", ENGINES)
def test_a_second_process_continues_the_feed_as_one_process_would(
    tmp_path: Path, kind: str
) -> None:
    pulls = [(200, 90), (150, 1000)]
    alone, alone_totals = single_process(tmp_path / "one.sqlite", ENGINES[kind], pulls)

    path = tmp_path / "two.sqlite"
    sim = simulated(11)
    first_repo = repository(path)
    first = RebateBook(first_repo, ENGINES[kind]())
    sim.simulate_trading(200)
    drain(DealFeeds(first_repo), sim, limit=90, batch=40)
    runner(first_repo, first).run()

    # A second process: a fresh repository, engine and book on the same file. Its engine has
    # seen nothing: the book restores the first process's batches from its stream first.
    second_repo = repository(path)
    second = RebateBook(second_repo, ENGINES[kind]())
    sim.simulate_trading(150)
    drain(DealFeeds(second_repo), sim, limit=1000, batch=40)
    assert runner(second_repo, second).run() > 0
    assert book_entries(second_repo) == alone
    assert second.engine.totals() == alone_totals

    # The first process takes a turn again: it catches up with the second's batches.
    sim.simulate_trading(60)
    drain(DealFeeds(first_repo), sim, limit=1000, batch=40)
    runner(first_repo, first).run()
    everything, totals = single_process(
        tmp_path / "all.sqlite", ENGINES[kind], [*pulls, (60, 1000)]
    )
    assert book_entries(first_repo) == everything
    assert first.engine.totals() == totals


def crash_once(after: int) -> Callable[..., Any]:
    """A handler wrapper that raises after the book's handler ran, on its ``after``-th call:
    a crash between the handler and the runner's commit."""
    calls = [0]

    def wrap(handler: Callable[[RecordedEvent[Any], UnitOfWork], None]) -> Any:
        def wrapped(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
            handler(recorded, uow)
            calls[0] += 1
            if calls[0] == after:
                raise RuntimeError("crash before the commit")

        return wrapped

    return wrap


@pytest.mark.parametrize("kind", ENGINES)
@pytest.mark.parametrize("restart", [False, True])
def test_a_crash_before_the_commit_then_a_rerun_pays_each_entry_once(
    tmp_path: Path, kind: str, restart: bool
) -> None:
    alone, alone_totals = single_process(tmp_path / "one.sqlite", ENGINES[kind], [(250, 1000)])

    path = tmp_path / "two.sqlite"
    sim = session()
    repo = repository(path)
    drain(DealFeeds(repo), sim, limit=1000, batch=40)
    book = RebateBook(repo, ENGINES[kind]())
    with pytest.raises(PolicyError, match="RuntimeError"):
        runner(repo, book, crash_once(after=3)).run()
    assert len(book_entries(repo)) < len(alone)  # two batches in, the third never committed
    if restart:
        repo = repository(path)
        book = RebateBook(repo, ENGINES[kind]())
    runner(repo, book).run()
    assert book_entries(repo) == alone
    assert book.engine.totals() == alone_totals
    assert book.engine.waiting() == single_engine_waiting(kind, sim)


def single_engine_waiting(kind: str, sim: SimulatedTradingServer) -> list[Any]:
    e = ENGINES[kind]()
    e.process(sim.deal_feed(limit=100_000))
    return e.waiting()


@pytest.mark.parametrize("kind", ENGINES)
def test_a_rival_worker_committing_the_same_batch_first_counts_once(
    tmp_path: Path, kind: str
) -> None:
    alone, alone_totals = single_process(
        tmp_path / "one.sqlite", ENGINES[kind], [(250, 1000), (80, 1000)]
    )

    path = tmp_path / "two.sqlite"
    sim = simulated(11)
    sim.simulate_trading(250)
    repo = repository(path)
    drain(DealFeeds(repo), sim, limit=1000, batch=40)
    rival_repo = repository(path)
    rival = RebateBook(rival_repo, ENGINES[kind]())
    fired = [False]

    def wrap(handler: Callable[[RecordedEvent[Any], UnitOfWork], None]) -> Any:
        def wrapped(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
            handler(recorded, uow)
            if not fired[0]:  # another worker handles the whole log before this one commits
                fired[0] = True
                runner(rival_repo, rival).run()

        return wrapped

    book = RebateBook(repo, ENGINES[kind]())
    runner(repo, book, wrap).run()  # its first commit conflicts: the rival did the work
    assert book_entries(repo) == alone[: len(book_entries(repo))]
    sim.simulate_trading(80)
    drain(DealFeeds(repo), sim, limit=1000, batch=40)
    runner(repo, book).run()  # this book holds the rival's batches, its own never twice
    assert book_entries(repo) == alone
    assert book.engine.totals() == alone_totals


def with_tree(factory: EngineFactory, tree: IbTree) -> RebateEngine:
    """An engine of ``factory``'s settings on ``tree`` (the host's read model of the IB tree,
    here shared by two workers that both see it change)."""
    e = factory()
    return RebateEngine(
        tree, e.schedules, e.distribution, client_of=e.client_of,
        account_group_of=e.account_group_of, trading_day_of=e.trading_day_of,
        component=e.component, cpa_distribution=e.cpa_distribution,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ENGINES)
def test_a_rival_committing_another_batch_for_the_same_event_is_restored_not_kept(
    tmp_path: Path, kind: str
) -> None:
    # Review p8: this worker works out a batch for a DealsReceived while client c-1 is direct;
    # then c-1 is attributed to an IB and a rival worker handles the same event, committing a
    # different batch under the same metadata (same actor and cause). This worker's commit
    # conflicts; its engine must hold the rival's batch, not its own, and both carry on.
    pulls = [(250, 1000), (80, 1000), (60, 1000)]
    alone, alone_totals = single_process(tmp_path / "one.sqlite", ENGINES[kind], pulls)

    since = T0 - timedelta(days=30)
    tree = IbTree()
    tree.add_ib("master", None, since)
    tree.add_ib("sub", "master", since)
    for client in ("c-0", "c-2"):  # c-1 comes later
        tree.attribute(client, "sub", since)
    path = tmp_path / "two.sqlite"
    sim = simulated(11)
    repo = repository(path)
    book = RebateBook(repo, with_tree(ENGINES[kind], tree))
    rival_repo = repository(path)
    rival = RebateBook(rival_repo, with_tree(ENGINES[kind], tree))
    staged: list[list[RebateEntry]] = []

    def wrap(handler: Callable[[RecordedEvent[Any], UnitOfWork], None]) -> Any:
        def wrapped(recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
            handler(recorded, uow)  # this worker stages its batch...
            if not staged:
                staged.append(list(book._staged[sim.name][-1].event.entries))
                tree.attribute("c-1", "sub", since)  # ...the tree changes...
                assert runner(rival_repo, rival).run() > 0  # ...and the rival commits first

        return wrapped

    sim.simulate_trading(pulls[0][0])
    drain(DealFeeds(repo), sim, limit=pulls[0][1], batch=40)
    runner(repo, book, wrap).run()  # its first commit conflicts
    first = RebateBook.recorded(repo.store, repo.codec)[0]
    assert {e.client_id for e in first.entries} > {e.client_id for e in staged[0]}
    sim.simulate_trading(pulls[1][0])
    drain(DealFeeds(repo), sim, limit=pulls[1][1], batch=40)
    assert runner(repo, book).run() > 0  # batches worked out by the loser's engine
    sim.simulate_trading(pulls[2][0])
    drain(DealFeeds(rival_repo), sim, limit=pulls[2][1], batch=40)
    assert runner(rival_repo, rival).run() > 0
    assert runner(repo, book).run() == 0  # the rival handled them: nothing to do...
    assert book.restore(repo.store, repo.codec) == alone  # ...but to catch up
    assert book_entries(repo) == alone
    assert book.engine.totals() == alone_totals
    assert rival.engine.totals() == alone_totals
    assert book.engine.waiting() == rival.engine.waiting()


class SaltedPayloadCipher:
    """Seals whole payloads with a fresh salt each time (as a cipher with a random nonce does):
    the same event never has the same bytes twice."""

    def __init__(self) -> None:
        self.sealed = 0

    def encrypt_payload(self, plaintext: bytes, associated_data: bytes) -> bytes:
        self.sealed += 1
        return b"%d#%s#%s" % (self.sealed, associated_data, bytes(b ^ 0x5A for b in plaintext))

    def decrypt_payload(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        _, ad, body = ciphertext.split(b"#", 2)
        if ad != associated_data:
            raise CodecError("payload bound to another stream")
        return bytes(b ^ 0x5A for b in body)


@pytest.mark.parametrize("cipher", [None, SaltedPayloadCipher])
def test_a_policy_fed_book_without_conflicts_never_rebuilds_its_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cipher: type[SaltedPayloadCipher] | None
) -> None:
    # The book checks each staged batch against the stored one by content: equal bytes, or
    # (payloads sealed with a salt) equal once decoded. Without a rival, none is ever doubted.
    pulls = [(200, 90), (150, 1000)]
    alone, alone_totals = single_process(tmp_path / "one.sqlite", ENGINES["every-rule"], pulls)
    forgets: list[RebateEngine] = []
    monkeypatch.setattr(book_module, "_forget", forgets.append)
    registry = EventRegistry()
    registry.register_all((*FEED_EVENTS, *REBATE_EVENTS, *POLICY_EVENTS))
    codec = EventCodec(registry, payload_cipher=cipher() if cipher else None)
    repo = Repository(SqliteEventStore(tmp_path / "two.sqlite", synchronous="NORMAL"), codec)
    book = RebateBook(repo, ENGINES["every-rule"]())
    sim, policies = simulated(11), runner(repo, book)
    for deals, limit in pulls:
        sim.simulate_trading(deals)
        drain(DealFeeds(repo), sim, limit=limit, batch=40)
        assert policies.run() > 1
    if cipher:
        stored = repo.store.read_stream(RebateFeed.stream_id_for(sim.name))
        assert all(not s.data.startswith(b"{") for s in stored)  # sealed
    book.process(sim.name, [])  # the last batch checked too
    assert forgets == []
    assert book_entries(repo) == alone
    assert book.engine.totals() == alone_totals


@pytest.mark.parametrize("kind", ENGINES)
def test_host_driven_books_in_two_processes_taking_turns_agree_with_one(
    tmp_path: Path, kind: str
) -> None:
    sim = session(300)
    feed = sim.deal_feed(limit=100_000)
    chunks = [feed[start : start + 40] for start in range(0, len(feed), 40)]
    alone = RebateBook(repository(tmp_path / "one.sqlite"), ENGINES[kind]())
    expected = [e for chunk in chunks for e in alone.process(sim.name, chunk)]

    books = [RebateBook(repository(tmp_path / "two.sqlite"), ENGINES[kind]()) for _ in range(2)]
    paid = [e for n, chunk in enumerate(chunks) for e in books[n % 2].process(sim.name, chunk)]
    assert paid == expected
    for book in books:
        book.process(sim.name, [])  # catch up
        assert book.engine.totals() == alone.engine.totals()


def test_a_book_whose_commit_conflicts_restores_instead_of_counting_twice(
    tmp_path: Path,
) -> None:
    sim = session(300)
    feed = sim.deal_feed(limit=100_000)
    path = tmp_path / "b.sqlite"
    alone = RebateBook(repository(tmp_path / "one.sqlite"), make(logins=LOGINS)[0])
    alone.process(sim.name, feed[:60])
    alone.process(sim.name, feed[60:])

    book = RebateBook(repository(path), make(logins=LOGINS)[0])
    rival = RebateBook(repository(path), make(logins=LOGINS)[0])
    book.process(sim.name, [])
    real_commit = UnitOfWork.commit
    raced = [False]

    def commit_after_a_rival(self: UnitOfWork, **kw: Any) -> Any:
        if not raced[0]:
            raced[0] = True
            rival.process(sim.name, feed[:60])
        return real_commit(self, **kw)

    UnitOfWork.commit = commit_after_a_rival  # type: ignore[method-assign]
    try:
        with pytest.raises(ConcurrencyError):
            book.process(sim.name, feed[:30])
    finally:
        UnitOfWork.commit = real_commit  # type: ignore[method-assign]
    assert book.process(sim.name, feed) == [
        e
        for event in RebateBook.recorded(book.repository.store, book.repository.codec)[1:]
        for e in event.entries
    ]
    assert book.engine.totals() == alone.engine.totals()
    assert rival.repository.store.stream_version(RebateFeed.stream_id_for(sim.name)) == 2


@pytest.mark.parametrize("kind", ENGINES)
def test_a_reset_engine_forgets_what_it_learned_and_keeps_its_settings(kind: str) -> None:
    # RebateBook rebuilds its engine with reset() after a failed commit: every setting stays,
    # every deal is forgotten (the same items pay again, as to a new engine).
    engine = ENGINES[kind]()
    kept = ("tree", "schedules", "distribution", "client_of", "account_group_of",
            "trading_day_of", "component", "cpa_distribution", "horizon")  # fmt: skip
    settings = {name: getattr(engine, name) for name in kept}
    items = session().deal_feed(limit=1000)
    first = engine.process(items)
    assert first
    assert engine.process(items) == []
    engine.reset()
    assert engine.process(items) == first
    assert all(getattr(engine, name) is settings[name] for name in kept)


def test_feed_rows_round_trip_any_deal_and_refuse_a_malformed_row() -> None:
    registry = EventRegistry()
    registry.register_all(FEED_EVENTS)
    codec = EventCodec(registry)
    items = session(60).deal_feed(limit=1000)
    odd = attrs.evolve(items[-1].deal, fee=Money.of("1.5", "EUR"), comment="a|b\x1f")
    spread = attrs.evolve(items[-2].deal, spread=Decimal("0.00012"))
    markup = attrs.evolve(items[-3].deal, markup=Money.of("0.7", "EUR"))
    event = DealsReceived(
        "sim-mt5",
        99,
        (
            *items,
            FeedItem(97, DealChange.UPDATED, spread),
            FeedItem(98, DealChange.UPDATED, markup),
            FeedItem(99, DealChange.UPDATED, odd),
        ),
    )
    stored = codec.encode("dealfeed-sim-mt5", event, EventMetadata("system:feed"))
    assert codec.decode_event("dealfeed-sim-mt5", stored.event_type, stored.data) == event
    # Only the two deals that carry a spread or a markup have the two extra fields.
    assert b"0.00012" in stored.data
    assert b"0.70 EUR" in stored.data
    assert stored.data.count(b"null") == 2
    for bad in (b'{"server":"s","upto_cursor":1,"items":[[1,"added","s"]]}',
                b'{"server":"s","upto_cursor":1,"items":{"a":1}}'):  # fmt: skip
        with pytest.raises(CodecError):
            codec.decode_event("dealfeed-s", "DealsReceived", bad)
