"""The outbox relay: retries and dead messages, consent at send time, quiet hours across DST
changes, frequency caps, restarts and kill -9 (exactly once per key at the consumer, at least
once on the wire), and the Notifier contract on MemoryNotifier."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core import clients as clients_context
from fxcrm_core import engagement
from fxcrm_core.clients.model import Client, Consent, ConsentGiven, ConsentWithdrawn
from fxcrm_core.engagement.notifier import (
    Channel,
    Envelope,
    MemoryNotifier,
    MessageKind,
    Notifier,
    Receipt,
)
from fxcrm_core.engagement.outbox import (
    MessageCancelled,
    MessageDeferred,
    MessageFailed,
    MessageSent,
    MessageStatus,
    Outbox,
    OutboxMessage,
    message_key,
)
from fxcrm_core.engagement.relay import (
    Backoff,
    Courtesy,
    DueMessages,
    FrequencyCap,
    OutboxRelay,
    RelayReport,
)
from fxcrm_core.events import (
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    Policy,
    PolicyRunner,
    Repository,
    UnitOfWork,
)
from fxcrm_core.events import register_events as register_core_events
from fxcrm_core.kernel.clock import FixedClock
from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore
from fxcrm_core.testing.notifier_contract import NotifierContract

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # a Monday noon: no quiet hours in London
NO_COURTESY = Courtesy(quiet_start=None, quiet_end=None, caps=())
META = EventMetadata("staff:1", reason="test")


def make_codec() -> EventCodec:
    registry = EventRegistry()
    register_core_events(registry)
    clients_context.register_events(registry)
    engagement.register_events(registry)
    return EventCodec(registry)


@attrs.define
class World:
    clock: FixedClock
    store: EventStore
    repository: Repository
    notifier: MemoryNotifier

    @classmethod
    def make(cls, at: datetime = T0, store: EventStore | None = None) -> World:
        clock = FixedClock(at)
        store = store or MemoryEventStore(clock=clock)
        return cls(clock, store, Repository(store, make_codec()), MemoryNotifier())

    def relay(self, notifier: Notifier | None = None, **options: object) -> OutboxRelay:
        options.setdefault("courtesy", NO_COURTESY)
        options.setdefault("consent_of", lambda _: True)
        return OutboxRelay(
            self.repository,
            notifier or self.notifier,
            clock=self.clock,
            **options,  # type: ignore[arg-type]
        )

    def queue(
        self,
        client: str = "c-1",
        rule: str = "welcome",
        *,
        kind: MessageKind = MessageKind.MARKETING,
        channel: Channel = Channel.EMAIL,
        priority: int = 0,
        not_before: datetime | None = None,
    ) -> str:
        with UnitOfWork(self.repository, META) as uow:
            Outbox().queue(
                uow, rule_id=rule, client_id=client, period="p1", channel=channel,
                template=rule, params=(("name", "x"),), kind=kind, priority=priority,
                at=self.clock.now(), not_before=not_before,
            )  # fmt: skip
            uow.commit()
        return message_key(rule, "p1", client)

    def consent(self, client: str, given: bool) -> None:
        with UnitOfWork(self.repository, META) as uow:
            state = uow.load(Client, client) or Client.blank(client)
            event: DomainEvent
            if given:
                event = ConsentGiven(Consent.MARKETING, self.clock.now())
            else:
                event = ConsentWithdrawn(Consent.MARKETING, self.clock.now())
            uow.record(state, event)
            uow.commit()

    def message(self, key: str) -> OutboxMessage:
        return self.repository.get(OutboxMessage, key)

    def events(self, key: str) -> list[DomainEvent]:
        decode = self.repository.codec.decode
        stream = OutboxMessage.stream_id_for(key)
        return [decode(s).event for s in self.store.read_stream(stream)]


# -- backoff ------------------------------------------------------------------------------------


def test_backoff_then_dead() -> None:
    w = World.make()
    key = w.queue()
    w.notifier.fail_next(3)
    relay = w.relay(backoff=Backoff(base=timedelta(minutes=1), max_attempts=3, jitter_percent=0))
    assert relay.run_once() == RelayReport(failed=1)
    assert w.message(key).next_at == T0 + timedelta(minutes=1)
    assert relay.run_once() == RelayReport()  # not due yet
    w.clock.advance(minutes=1)
    assert relay.run_once() == RelayReport(failed=1)
    assert w.message(key).next_at == T0 + timedelta(minutes=3)
    w.clock.advance(minutes=2)
    assert relay.run_once() == RelayReport(dead=1)
    state = w.message(key)
    assert (state.status, state.attempts, state.next_at) == (MessageStatus.DEAD, 3, None)
    fails = [e for e in w.events(key) if isinstance(e, MessageFailed)]
    assert [(f.attempt, f.reason) for f in fails] == [(n, "delivery_error") for n in (1, 2, 3)]
    assert fails[-1].retry_at is None
    w.clock.advance(days=1)
    assert relay.run_once() == RelayReport()
    assert w.notifier.wire == []


def test_a_retry_that_succeeds_is_sent_with_its_attempt() -> None:
    w = World.make()
    key = w.queue()
    w.notifier.fail_next(1)
    relay = w.relay(backoff=Backoff(jitter_percent=0))
    relay.run_once()
    w.clock.advance(minutes=1)
    assert relay.run_once() == RelayReport(sent=1)
    assert [e.attempt for e in w.notifier.wire] == [2]
    assert w.message(key).status is MessageStatus.SENT


def test_backoff_is_deterministic_grows_and_is_capped() -> None:
    b = Backoff(base=timedelta(seconds=30), factor=3, max_delay=timedelta(hours=1))
    at = T0
    assert b.retry_at(1, at, "k") == b.retry_at(1, at, "k")  # a replay agrees
    for attempt in range(1, 8):
        delay = b.delay(attempt, "k")
        plain = min(timedelta(seconds=30) * 3 ** (attempt - 1), timedelta(hours=1))
        assert plain <= delay <= plain * 1.1
    assert {b.delay(1, f"k{n}") for n in range(20)} != {b.delay(1, "k0")}  # keys spread
    assert b.retry_at(b.max_attempts, at, "k") is None
    assert Backoff(max_attempts=100).delay(99, "k") <= timedelta(hours=6, minutes=36)
    with pytest.raises(ValidationError):
        Backoff(factor=0)
    with pytest.raises(ValidationError):
        b.retry_at(0, at)


def test_a_non_retryable_failure_is_dead_at_once() -> None:
    w = World.make()
    key = w.queue()
    w.notifier.fail_next(1, retryable=False)
    assert w.relay().run_once() == RelayReport(dead=1)
    failed = w.events(key)[-1]
    assert isinstance(failed, MessageFailed)
    assert (failed.reason, failed.retry_at, failed.attempt) == ("undeliverable", None, 1)


class _Broken:
    def __init__(self, error: BaseException | None = None, receipt: object = None) -> None:
        self.error, self.receipt, self.calls = error, receipt, 0

    def send(self, envelope: Envelope, at: datetime) -> Receipt:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.receipt  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("notifier", "reason"),
    [
        (_Broken(ZeroDivisionError("boom")), "notifier_error"),
        (_Broken(KeyError("x")), "notifier_error"),
        (_Broken(OSError("socket")), "notifier_error"),
        (_Broken(receipt=None), "bad_receipt"),
        (_Broken(receipt=Receipt("other:key:c", "r", T0)), "bad_receipt"),
    ],
)
def test_a_notifier_raising_a_builtin_is_a_retryable_failure(
    notifier: _Broken, reason: str
) -> None:
    w = World.make()
    key = w.queue()
    relay = w.relay(notifier, backoff=Backoff(max_attempts=2, jitter_percent=0))
    assert relay.run_once() == RelayReport(failed=1)  # nothing escapes to the host
    failed = w.events(key)[-1]
    assert isinstance(failed, MessageFailed)
    assert (failed.reason, failed.retry_at) == (reason, T0 + timedelta(minutes=1))
    w.clock.advance(minutes=1)
    assert relay.run_once() == RelayReport(dead=1)


# -- consent ------------------------------------------------------------------------------------


def test_marketing_needs_consent_at_send_time_service_does_not() -> None:
    w = World.make()
    w.consent("c-1", True)
    promo = w.queue("c-1", "promo")
    notice = w.queue("c-1", "notice", kind=MessageKind.SERVICE)
    w.consent("c-1", False)  # withdrawn after queueing, no policy run: the relay checks
    relay = OutboxRelay(w.repository, w.notifier, clock=w.clock, courtesy=NO_COURTESY)
    assert relay.run_once() == RelayReport(sent=1, cancelled=1)
    cancelled = w.events(promo)[-1]
    assert isinstance(cancelled, MessageCancelled)
    assert cancelled.reason == "no_consent"
    assert list(w.notifier.delivered) == [notice]
    unknown = w.queue("c-unknown", "promo")
    assert relay.run_once() == RelayReport(cancelled=1)
    assert w.message(unknown).status is MessageStatus.CANCELLED


def test_consent_withdrawn_cancels_queued_marketing_through_the_policy() -> None:
    w = World.make()
    w.consent("c-1", True)
    promo = w.queue("c-1", "promo", not_before=T0 + timedelta(days=1))
    notice = w.queue("c-1", "notice", kind=MessageKind.SERVICE, not_before=T0 + timedelta(days=1))
    other = w.queue("c-2", "promo", not_before=T0 + timedelta(days=1))
    relay = w.relay()
    runner = PolicyRunner(
        w.repository,
        [Policy("engagement-consent-withdrawn", [ConsentWithdrawn], relay.on_consent_withdrawn)],
    )
    w.consent("c-1", False)
    w.consent("c-1", True)
    later = w.queue("c-1", "later", not_before=T0 + timedelta(days=1))  # after consent again
    runner.run()
    assert w.message(promo).status is MessageStatus.CANCELLED
    cancelled = w.events(promo)[-1]
    assert isinstance(cancelled, MessageCancelled)
    assert cancelled.reason == "consent_withdrawn"
    for key in (notice, other, later):
        assert w.message(key).status is MessageStatus.QUEUED
    runner.run()  # handled once
    assert len(w.events(promo)) == 2
    w.clock.advance(days=1)
    assert relay.run_once() == RelayReport(sent=3)


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("give"), st.integers(0, 2)),
        st.tuples(st.just("withdraw"), st.integers(0, 2)),
        st.tuples(st.just("queue"), st.integers(0, 2)),
        st.tuples(st.just("run"), st.integers(1, 3)),
        st.tuples(st.just("policy"), st.just(0)),
        st.tuples(st.just("fail"), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS)
def test_no_marketing_is_ever_sent_without_consent_in_force(ops: list[tuple[str, int]]) -> None:
    w = World.make()
    in_force: dict[str, bool] = {}
    checked: list[str] = []
    violations: list[str] = []  # not an assert in send: the relay records a notifier's errors

    class Watching(MemoryNotifier):
        def send(self, envelope: Envelope, at: datetime) -> Receipt:
            if envelope.kind is MessageKind.MARKETING and not in_force.get(envelope.client_id):
                violations.append(envelope.key)
            receipt = super().send(envelope, at)  # (a failure injected here sends nothing)
            checked.append(envelope.key)
            return receipt

    notifier = Watching()
    relay = OutboxRelay(
        w.repository, notifier, clock=w.clock, courtesy=NO_COURTESY,
        backoff=Backoff(base=timedelta(seconds=1), jitter_percent=0),
    )  # fmt: skip
    runner = PolicyRunner(
        w.repository, [Policy("consent", [ConsentWithdrawn], relay.on_consent_withdrawn)]
    )
    n = 0
    for op, arg in ops:
        client = f"c-{arg}"
        if op in ("give", "withdraw"):
            wanted = op == "give"
            if in_force.get(client, False) != wanted:
                w.consent(client, wanted)
                in_force[client] = wanted
        elif op == "queue":
            n += 1
            kind = MessageKind.MARKETING if n % 3 else MessageKind.SERVICE
            w.queue(client, f"r{n}", kind=kind)
        elif op == "run":
            relay.run_once(limit=arg)
        elif op == "policy":
            runner.run()
        else:
            notifier.fail_next(1)
        w.clock.advance(seconds=2)
    while relay.run_once().handled:
        w.clock.advance(minutes=10)
    assert violations == []
    assert len(set(checked)) == len(notifier.delivered)


# -- quiet hours and caps -----------------------------------------------------------------------


QUIET = Courtesy(quiet_start=time(21), quiet_end=time(8), caps=())


def _u(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "at", "until"),
    [
        # London springs forward on 29 March 2026: the night starts in GMT, ends in BST.
        ("Europe/London", _u(2026, 3, 28, 22), _u(2026, 3, 29, 7)),
        # ...and falls back on 25 October: starts in BST, ends in GMT.
        ("Europe/London", _u(2026, 10, 24, 20, 30), _u(2026, 10, 25, 8)),
        # New York springs forward on 8 March 2026 at 02:00 EST.
        ("America/New_York", _u(2026, 3, 8, 3), _u(2026, 3, 8, 12)),
        ("America/New_York", _u(2026, 11, 1, 5, 30), _u(2026, 11, 1, 13)),
        # after midnight local, before the end
        ("Asia/Tokyo", _u(2026, 6, 1, 18), _u(2026, 6, 1, 23)),
    ],
)  # fmt: skip
def test_quiet_hours_across_dst_changes(zone: str, at: datetime, until: datetime) -> None:
    w = World.make(at)
    key = w.queue("c-1", "promo")
    notice = w.queue("c-1", "notice", kind=MessageKind.SERVICE)
    relay = w.relay(courtesy=QUIET, zone_of=lambda _: zone)
    assert relay.run_once() == RelayReport(sent=1, deferred=1)  # service ignores quiet hours
    assert list(w.notifier.delivered) == [notice]
    deferred = w.events(key)[-1]
    assert isinstance(deferred, MessageDeferred)
    assert (deferred.reason, deferred.until) == ("quiet_hours", until)
    assert until.astimezone(ZoneInfo(zone)).time() == time(8)
    w.clock.set(until - timedelta(microseconds=1))
    assert relay.run_once() == RelayReport()
    w.clock.set(until)
    assert relay.run_once() == RelayReport(sent=1)


def test_quiet_hours_edges_and_a_skipped_end_time() -> None:
    london = ZoneInfo("Europe/London")
    c = Courtesy(quiet_start=time(21), quiet_end=time(8), caps=())
    assert c.quiet_until(datetime(2026, 6, 1, 20, 0, tzinfo=UTC), london) is not None  # 21:00
    assert c.quiet_until(datetime(2026, 6, 1, 19, 59, tzinfo=UTC), london) is None
    assert c.quiet_until(datetime(2026, 6, 2, 7, 0, tzinfo=UTC), london) is None  # 08:00 BST
    # A quiet period ending at 01:30, a time London skips on 29 March: it ends when the
    # clock jumps past it (02:30 BST, 01:30 UTC).
    skip = Courtesy(quiet_start=time(0, 30), quiet_end=time(1, 30), caps=())
    got = skip.quiet_until(datetime(2026, 3, 29, 0, 45, tzinfo=UTC), london)
    assert got == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert Courtesy(quiet_start=None, quiet_end=None).quiet_until(T0, london) is None
    with pytest.raises(ValidationError):
        Courtesy(quiet_start=time(21), quiet_end=None)
    with pytest.raises(ValidationError):
        Courtesy(default_zone="Mars/Olympus")


def test_service_quiet_hours_when_asked_and_a_bad_zone_is_the_default() -> None:
    w = World.make(datetime(2026, 6, 1, 23, tzinfo=UTC))
    w.queue("c-1", "notice", kind=MessageKind.SERVICE)
    courtesy = attrs.evolve(QUIET, service_quiet_hours=True)
    relay = w.relay(courtesy=courtesy, zone_of=lambda _: "Not/AZone")
    assert relay.run_once() == RelayReport(deferred=1)


def test_frequency_caps_per_channel_rolling_windows() -> None:
    w = World.make()
    courtesy = Courtesy(
        quiet_start=None, quiet_end=None,
        caps=(FrequencyCap(2, timedelta(hours=24)), FrequencyCap(3, timedelta(days=7))),
    )  # fmt: skip
    relay = w.relay(courtesy=courtesy)
    keys = [w.queue("c-1", f"m{n}") for n in range(5)]
    sms = w.queue("c-1", "sms", channel=Channel.SMS)
    notice = w.queue("c-1", "notice", kind=MessageKind.SERVICE)
    assert relay.run_once() == RelayReport(sent=4, deferred=3)  # 2 e-mails, the sms, the notice
    assert set(w.notifier.delivered) == {keys[0], keys[1], sms, notice}
    for key in keys[2:]:
        deferred = w.events(key)[-1]
        assert isinstance(deferred, MessageDeferred)
        assert (deferred.reason, deferred.until) == ("frequency_cap", T0 + timedelta(hours=24))
    w.clock.advance(hours=24)
    assert relay.run_once() == RelayReport(sent=1, deferred=2)  # the weekly cap of 3 now
    week = [e for e in w.events(keys[3]) if isinstance(e, MessageDeferred)][-1]
    assert week.until == T0 + timedelta(days=7)
    w.clock.set(T0 + timedelta(days=7))
    assert relay.run_once() == RelayReport(sent=2)
    assert all(w.message(k).status is MessageStatus.SENT for k in keys)


def test_priority_then_time_order() -> None:
    w = World.make()
    low = w.queue("c-1", "low", kind=MessageKind.SERVICE, priority=-5)
    first = w.queue("c-2", "first", kind=MessageKind.SERVICE)
    high = w.queue("c-3", "high", kind=MessageKind.SERVICE, priority=10)
    w.queue("c-4", "later", kind=MessageKind.SERVICE, not_before=T0 + timedelta(hours=1))
    relay = w.relay()
    assert [d.key for d in relay.due()] == [high, first, low]
    assert relay.run_once(limit=2) == RelayReport(sent=2)
    assert [e.key for e in w.notifier.wire] == [high, first]
    assert relay.run_once() == RelayReport(sent=1)
    with pytest.raises(ValidationError):
        relay.run_once(limit=0)


# -- crashes, restarts and races ----------------------------------------------------------------


class _Crash(BaseException):
    """A process dying between the hand-over and the commit."""


class _CrashAfter:
    def __init__(self, inner: MemoryNotifier, after: int) -> None:
        self.inner, self.left = inner, after

    def send(self, envelope: Envelope, at: datetime) -> Receipt:
        receipt = self.inner.send(envelope, at)
        self.left -= 1
        if self.left == 0:
            raise _Crash
        return receipt


def test_a_restart_sends_nothing_twice_and_finishes_the_work() -> None:
    w = World.make()
    keys = [w.queue(f"c-{n}", "notice", kind=MessageKind.SERVICE) for n in range(6)]
    with pytest.raises(_Crash):
        w.relay(_CrashAfter(w.notifier, 3)).run_once()
    # A new process: a fresh repository and relay over the same store.
    fresh = World(w.clock, w.store, Repository(w.store, make_codec()), w.notifier)
    assert fresh.relay().run_once() == RelayReport(sent=4)  # the third again, and the rest
    assert fresh.relay().run_once() == RelayReport()
    assert sorted(w.notifier.delivered) == sorted(keys)
    wire = [e.key for e in w.notifier.wire]
    assert len(wire) == 7
    assert sorted(set(wire)) == sorted(keys)
    for key in keys:
        assert sum(isinstance(e, MessageSent) for e in fresh.events(key)) == 1


def test_two_relays_racing_on_a_message_commit_one_outcome() -> None:
    w = World.make()
    key = w.queue("c-1", "notice", kind=MessageKind.SERVICE)
    other = World(w.clock, w.store, Repository(w.store, make_codec()), w.notifier)
    reports: list[RelayReport] = []

    class Racing(MemoryNotifier):
        def send(self, envelope: Envelope, at: datetime) -> Receipt:
            reports.append(other.relay().run_once())  # the other relay sends and commits first
            return w.notifier.send(envelope, at)

    assert w.relay(Racing()).run_once() == RelayReport(skipped=1)
    assert reports == [RelayReport(sent=1)]
    assert list(w.notifier.delivered) == [key]
    assert sum(isinstance(e, MessageSent) for e in w.events(key)) == 1


def test_the_due_read_model_replays_to_the_live_state() -> None:
    w = World.make()
    relay = w.relay(courtesy=Courtesy(caps=(FrequencyCap(1, timedelta(days=1)),)))
    for n in range(4):
        w.queue("c-1", f"m{n}", priority=n % 2)
    w.notifier.fail_next(1)
    relay.run_once()
    replayed = DueMessages()
    for stored in w.store.read_all(limit=100):
        replayed.handle(w.repository.codec.decode(stored))
    assert replayed.messages == relay.due_messages.messages
    assert len(replayed.messages) == 3  # one failed (to retry), two capped; one sent
    assert relay.run_once() == RelayReport()  # none due yet


# -- kill -9 ------------------------------------------------------------------------------------


def _consumer(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY)")
    conn.execute("CREATE TABLE IF NOT EXISTS acted (key TEXT)")
    return conn


class _FileNotifier:
    """The wire is a file (one line per hand-over); the consumer a SQLite table that acts on a
    key once. After hand-over ``stop_after`` it tells the parent and waits to be killed: just
    after the wire, or just after the consumer acted (``where``)."""

    def __init__(self, wire: str, consumer: str, stop_after: int, where: str) -> None:
        self.wire = os.open(wire, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.consumer = _consumer(consumer)
        self.count, self.stop_after, self.where = 0, stop_after, where

    def _stop(self, where: str) -> None:
        if self.count == self.stop_after and self.where == where:
            sys.stdout.write("stopped\n")
            sys.stdout.flush()
            sys.stdin.readline()  # the parent kills this process with SIGKILL here

    def send(self, envelope: Envelope, at: datetime) -> Receipt:
        os.write(self.wire, f"{envelope.key}\n".encode())
        self.count += 1
        sys.stdout.write(f"handed {envelope.key}\n")
        sys.stdout.flush()
        self._stop("wire")
        with self.consumer:
            self.consumer.execute("BEGIN IMMEDIATE")
            if self.consumer.execute(
                "INSERT OR IGNORE INTO seen VALUES (?)", (envelope.key,)
            ).rowcount:
                self.consumer.execute("INSERT INTO acted VALUES (?)", (envelope.key,))
            self.consumer.execute("COMMIT")
        self._stop("consumer")
        return Receipt(envelope.key, f"file:{self.count}", at)


def _child(db: str, wire: str, consumer: str, stop_after: int, where: str) -> None:
    clock = FixedClock(T0)
    store = SqliteEventStore(db, clock=clock, synchronous="NORMAL")
    relay = OutboxRelay(
        Repository(store, make_codec()), _FileNotifier(wire, consumer, stop_after, where),
        clock=clock, courtesy=NO_COURTESY, consent_of=lambda _: True,
    )  # fmt: skip
    while relay.run_once(limit=5).handled:
        pass
    sys.stdout.write("done\n")
    sys.stdout.flush()


@pytest.mark.slow
def test_kill_9_at_random_points_delivers_each_key_once(tmp_path: Path) -> None:
    db, wire, consumer = (str(tmp_path / n) for n in ("log.sqlite", "wire.txt", "consumer.db"))
    store = SqliteEventStore(db, clock=FixedClock(T0))
    w = World.make(store=store)
    keys = [w.queue(f"c-{n}", f"n{n % 3}", kind=MessageKind.SERVICE) for n in range(24)]
    store.close()
    rng = random.Random(20261127)
    kills = 0
    for _ in range(40):
        stop_after = rng.randint(1, 6)
        where = rng.choice(["wire", "consumer"])
        proc = subprocess.Popen(
            [sys.executable, __file__, db, wire, consumer, str(stop_after), where],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        finished = False
        for line in proc.stdout:
            if line == "stopped\n":
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            if line == "done\n":
                finished = True
                break
        proc.wait(timeout=30)
        if proc.stdin is not None:
            proc.stdin.close()
        proc.stdout.close()
        if finished:
            break
    assert finished
    assert kills >= 3
    conn = _consumer(consumer)
    acted = [row[0] for row in conn.execute("SELECT key FROM acted")]
    conn.close()
    assert sorted(acted) == sorted(keys)  # exactly once at the consumer
    on_wire = Path(wire).read_text().split()
    assert set(on_wire) == set(keys)  # at least once on the wire...
    assert len(on_wire) > len(keys)  # ...and some more than once, after a kill
    store = SqliteEventStore(db, clock=FixedClock(T0))
    check = World.make(store=store)
    for key in keys:
        assert check.message(key).status is MessageStatus.SENT
        assert sum(isinstance(e, MessageSent) for e in check.events(key)) == 1
    store.close()


# -- the Notifier contract ----------------------------------------------------------------------


class TestMemoryNotifierContract(NotifierContract):
    def make_notifier(self) -> Notifier:
        return MemoryNotifier()

    def consumed(self, notifier: Notifier) -> list[str]:
        assert isinstance(notifier, MemoryNotifier)
        return list(notifier.delivered)

    def fail_next(self, notifier: Notifier, count: int, *, retryable: bool) -> None:
        assert isinstance(notifier, MemoryNotifier)
        notifier.fail_next(count, retryable=retryable)


def test_only_fxcrm_errors_leave_the_relay_from_a_consent_lookup() -> None:
    w = World.make()
    w.queue()

    def broken(_: str) -> bool:
        raise RuntimeError("db down")

    with pytest.raises(FxCrmError):
        w.relay(consent_of=broken).run_once()
    assert w.message(message_key("welcome", "p1", "c-1")).status is MessageStatus.QUEUED


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
