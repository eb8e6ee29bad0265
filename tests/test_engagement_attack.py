"""Attack tests for the engagement package (rules, outbox, relay) and its broker wiring: each
test states a promise of docs/engagement.md or the engagement issue and tries to break it."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fxcrm_core import clients as clients_context
from fxcrm_core import engagement
from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Consent, Registration
from fxcrm_core.clients.model import Client, ConsentGiven
from fxcrm_core.engagement import (
    Audience,
    Channel,
    Courtesy,
    EngagementRule,
    MemoryNotifier,
    MessageKind,
    MessageStatus,
    OnEvent,
    OutboxMessage,
    RulePeriod,
    Scheduled,
)
from fxcrm_core.engagement.notifier import DeliveryError, Envelope, Receipt
from fxcrm_core.engagement.outbox import MessageSent, Outbox, message_key
from fxcrm_core.engagement.relay import Backoff, FrequencyCap, OutboxRelay
from fxcrm_core.events import (
    EventCodec,
    EventMetadata,
    EventRegistry,
    Repository,
    UnitOfWork,
)
from fxcrm_core.events import register_events as register_core_events
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.stores import MemoryEventStore

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # a Monday noon
META = EventMetadata("staff:1", reason="attack test")
NO_COURTESY = Courtesy(quiet_start=None, quiet_end=None, caps=())
PORTAL = Actor.system("portal", Role.PORTAL)
REP = Actor.staff("rep-1", Role.SALES)


def _codec() -> EventCodec:
    registry = EventRegistry()
    register_core_events(registry)
    clients_context.register_events(registry)
    engagement.register_events(registry)
    return EventCodec(registry)


class World:
    """A memory log, an outbox and a relay on it."""

    def __init__(self, at: datetime = T0) -> None:
        self.clock = FixedClock(at)
        self.store = MemoryEventStore(clock=self.clock)
        self.repository = Repository(self.store, _codec())
        self.notifier = MemoryNotifier()

    def relay(self, notifier: Any = None, **options: Any) -> OutboxRelay:
        options.setdefault("courtesy", NO_COURTESY)
        options.setdefault("consent_of", lambda _: True)
        return OutboxRelay(self.repository, notifier or self.notifier, clock=self.clock, **options)

    def queue(
        self,
        client: str = "c-1",
        rule: str = "promo",
        *,
        kind: MessageKind = MessageKind.MARKETING,
        params: tuple[tuple[str, str], ...] = (),
        not_before: datetime | None = None,
        priority: int = 0,
    ) -> str:
        with UnitOfWork(self.repository, META) as uow:
            Outbox().queue(
                uow, rule_id=rule, client_id=client, period="p1", channel=Channel.EMAIL,
                template=rule, params=params, kind=kind, priority=priority,
                at=self.clock.now(), not_before=not_before,
            )  # fmt: skip
            uow.commit()
        return message_key(rule, "p1", client)

    def message(self, key: str) -> OutboxMessage:
        return self.repository.get(OutboxMessage, key)

    def log_size(self) -> int:
        return len(self.store.read_all(after_position=0, limit=1_000_000))


def _person(n: int, country: str = "GB") -> Registration:
    return Registration(
        ClientKind.INDIVIDUAL, country, f"Client Person{n}", f"client{n}@example.com",
        f"07911 12345{n}", f"x123 456{n}", owner_id="staff:rep-1",
    )  # fmt: skip


def _broker(clock: FixedClock, notifier: MemoryNotifier, **options: Any) -> Broker:
    options.setdefault("courtesy", NO_COURTESY)
    options.setdefault("client_zones", {"GB": "Europe/London"})
    return Broker.in_memory(
        clock=clock, keyring=MasterKeyring.generate(), identity_key=b"k" * 32,
        notifier=notifier, **options,
    )  # fmt: skip


def _outbox(broker: Broker) -> dict[str, OutboxMessage]:
    out = {}
    for row in broker.store.read_all(after_position=0, limit=100_000):
        if row.stream_id.startswith("outbox-"):
            key = row.stream_id.removeprefix("outbox-")
            out[key] = broker.repository.get(OutboxMessage, key)
    return out


# -- quiet hours across DST ---------------------------------------------------------------------


def test_quiet_hours_ending_in_a_repeated_fall_back_hour_end_that_night() -> None:
    # London falls back on 25 Oct 2026: 02:00 BST -> 01:00 GMT, 01:00-02:00 is lived twice.
    # Quiet 21:00-01:30. At 01:10 GMT (the second pass, 01:10 UTC) the client's clock next
    # shows 01:30 at 01:30 GMT (01:30 UTC): twenty minutes later, not the next night.
    courtesy = Courtesy(quiet_start=time(21), quiet_end=time(1, 30), caps=())
    at = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)
    until = courtesy.quiet_until(at, ZoneInfo("Europe/London"))
    assert until == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_quiet_hours_in_new_york_second_pass_are_not_deferred_a_day() -> None:
    # New York, 1 Nov 2026: 02:00 EDT -> 01:00 EST. Quiet 01:00-01:45; at 01:20 EST (06:20 UTC)
    # the quiet period ends at 01:45 EST (06:45 UTC).
    courtesy = Courtesy(quiet_start=time(1), quiet_end=time(1, 45), caps=())
    at = datetime(2026, 11, 1, 6, 20, tzinfo=UTC)
    until = courtesy.quiet_until(at, ZoneInfo("America/New_York"))
    assert until is not None
    assert until - at <= timedelta(hours=1)


# -- a message deferred forever -------------------------------------------------------------------


def test_quiet_hours_leaving_no_usable_window_never_defer_forever() -> None:
    # Quiet from 00:00 to 23:59:59.999999: the relay (run every few seconds) never finds the
    # client awake. Either such courtesy is refused, or the message eventually leaves.
    try:
        courtesy = Courtesy(quiet_start=time(0), quiet_end=time(23, 59, 59, 999999), caps=())
    except FxCrmError:
        return
    w = World()
    key = w.queue()
    relay = w.relay(courtesy=courtesy)
    for _ in range(10):
        relay.run_once()
        state = w.message(key)
        if state.status is not MessageStatus.QUEUED:
            break
        assert state.next_at is not None
        w.clock.set(state.next_at + timedelta(seconds=5))  # the next relay run, a few s later
    assert key in w.notifier.delivered


# -- time going backwards ----------------------------------------------------------------------


def test_a_clock_set_back_does_not_bypass_the_frequency_cap() -> None:
    w = World()
    caps = Courtesy(quiet_start=None, quiet_end=None, caps=(FrequencyCap(1, timedelta(hours=24)),))
    relay = w.relay(courtesy=caps)
    w.queue(rule="promo-1")
    assert relay.run_once().sent == 1
    w.clock.set(T0 - timedelta(hours=1))  # an NTP step back between runs
    w.queue(rule="promo-2")
    relay.run_once()
    assert len(w.notifier.delivered) == 1  # at most one marketing message in 24 h


# -- memory that grows without bound ------------------------------------------------------------


def test_sent_messages_read_model_forgets_marketing_that_will_never_be_sent() -> None:
    w = World()
    relay = w.relay(consent_of=lambda _: False)
    for n in range(50):
        w.queue(client=f"c-{n}")
    assert relay.run_once().cancelled == 50
    assert relay.due_messages.messages == {}
    # SentMessages keeps (client, channel) for every queued marketing key until it is sent:
    # a cancelled or dead message is never sent, so its entry stays for the process's life.
    assert relay.sent_messages._marketing == {}


# -- hostile input: normalised keys, control characters ---------------------------------------


def test_the_stored_client_id_is_the_one_in_the_key() -> None:
    # The key is built from stripped text, the event keeps the raw client id: the relay's
    # reachability and consent lookups then ask about a client " c-1 " that does not exist.
    w = World()
    key = w.queue(client=" c-1 ", kind=MessageKind.SERVICE)
    assert key == "promo:p1:c-1"
    queued = w.message(key).queued
    assert queued is not None
    assert queued.client_id == "c-1"


def test_an_unreachable_client_is_not_reached_through_a_padded_client_id() -> None:
    w = World()
    w.queue(client="c-1 ", kind=MessageKind.SERVICE)
    relay = w.relay(reachable=lambda cid: cid != "c-1")  # c-1 erased
    relay.run_once()
    assert [e.client_id for e in w.notifier.wire] == []


def test_message_parameter_values_refuse_control_characters() -> None:
    w = World()
    with pytest.raises(FxCrmError):
        w.queue(params=(("name", "Ana\x1b[2J\x00\u202e"),))
    assert w.log_size() == 0


def test_a_receipt_reference_with_control_characters_is_not_stored_raw() -> None:
    class Echo:
        def send(self, envelope: Envelope, at: datetime) -> Receipt:
            return Receipt(envelope.key, "ok\x1b[31m\r\nFAKE LOG LINE\x00", at)

    w = World()
    key = w.queue()
    assert w.relay(Echo()).run_once().sent == 1
    sent = [
        e for s in w.store.read_stream(OutboxMessage.stream_id_for(key))
        if isinstance(e := w.repository.codec.decode(s).event, MessageSent)
    ]  # fmt: skip
    assert sent
    assert not any(ord(ch) < 32 or ch == "\x7f" for ch in sent[0].reference)


class _Nasty:
    def __bool__(self) -> bool:
        raise ValueError("the truth value of an array is ambiguous")


def test_a_delivery_error_with_a_garbage_retryable_flag_stays_inside_the_relay() -> None:
    class Odd:
        def send(self, envelope: Envelope, at: datetime) -> Receipt:
            error = DeliveryError("gateway down")
            error.retryable = _Nasty()  # type: ignore[assignment]
            raise error

    w = World()
    key = w.queue()
    with contextlib.suppress(FxCrmError):
        w.relay(Odd()).run_once()
    assert w.message(key).status in (MessageStatus.QUEUED, MessageStatus.DEAD)


# -- broker options of the wrong type ------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"engagement_rules": None},
        {"engagement_rules": 5},
        {"client_zones": ["GB"]},
        {"client_zones": "GB"},
        {"client_languages": ["x"]},
    ],
    ids=["rules-none", "rules-int", "zones-list", "zones-str", "languages-list"],
)
def test_wrong_types_in_engagement_options_raise_fxcrm_errors(options: dict[str, Any]) -> None:
    with contextlib.suppress(FxCrmError):
        _broker(FixedClock(T0), MemoryNotifier(), **options)


def test_a_generator_of_rules_is_not_silently_emptied() -> None:
    welcome = EngagementRule(
        rule_id="welcome", trigger=OnEvent.registered(), template="welcome",
        channel=Channel.EMAIL, kind=MessageKind.SERVICE,
    )  # fmt: skip
    try:
        broker = _broker(FixedClock(T0), MemoryNotifier(), engagement_rules=(r for r in [welcome]))
    except FxCrmError:
        return
    assert len(broker.engagement.rules) == 1


def test_a_language_that_is_not_text_does_not_jam_the_policies() -> None:
    welcome = EngagementRule(
        rule_id="welcome", trigger=OnEvent.registered(), template="welcome",
        channel=Channel.EMAIL, kind=MessageKind.SERVICE,
    )  # fmt: skip
    try:
        broker = _broker(
            FixedClock(T0), MemoryNotifier(), engagement_rules=(welcome,),
            client_languages={"GB": 5},
        )  # fmt: skip
    except FxCrmError:
        return  # refused at configuration: fine
    cid = broker.clients.register(PORTAL, _person(1))
    assert broker.policy_failure is None, broker.policy_failure
    assert f"welcome:once:{cid}" in _outbox(broker)


# -- decisions by the event's instant: a late worker decides as inline ---------------------------


def test_a_late_worker_decides_as_inline_when_a_later_commit_shares_the_instant() -> None:
    news = EngagementRule(
        rule_id="news", trigger=OnEvent.registered(), template="news", channel=Channel.EMAIL,
        audience=Audience(consent=Consent.MARKETING),
    )  # fmt: skip

    def run(policies: str) -> set[str]:
        clock = FixedClock(T0)  # the consent is given in the same clock tick (a coarse clock)
        broker = _broker(clock, MemoryNotifier(), engagement_rules=(news,), policies=policies)
        cid = broker.clients.register(PORTAL, _person(1))
        broker.clients.give_consent(REP, cid, Consent.MARKETING)  # a later commit
        if policies == "worker":
            broker.run_policies()
        return {k.rsplit(":", 1)[0] for k in _outbox(broker)}

    assert run("worker") == run("inline")


# -- consent and erasure (meaningful passing checks) ----------------------------------------


def test_a_consent_lookup_failing_for_one_client_does_not_jam_every_other_message() -> None:
    w = World()
    w.queue(client="broken", priority=100)  # the first a run takes
    service = w.queue(client="c-2", rule="notice", kind=MessageKind.SERVICE)

    def consent_of(client_id: str) -> bool:
        if client_id == "broken":
            raise RuntimeError("the CRM is down for this record")
        return True

    relay = w.relay(consent_of=consent_of)
    for _ in range(3):  # the host's relay job runs every few seconds
        with contextlib.suppress(FxCrmError):
            relay.run_once()
        w.clock.advance(seconds=5)
    assert service in w.notifier.delivered  # a service message owes no consent lookup


def test_a_message_queued_before_consent_given_is_sent_once_consent_is_in_force() -> None:
    w = World()
    key = w.queue()
    with UnitOfWork(w.repository, META) as uow:
        uow.record(Client.blank("c-1"), ConsentGiven(Consent.MARKETING, T0))
        uow.commit()
    relay = w.relay(consent_of=None)
    relay.consent_of = relay._marketing_consent
    assert relay.run_once().sent == 1
    assert key in w.notifier.delivered


# -- two processes ---------------------------------------------------------------------------------


def test_two_processes_running_the_daily_job_at_once_do_not_fail(tmp_path: Path) -> None:
    birthday = EngagementRule(
        rule_id="birthday", trigger=Scheduled.birthday(), template="birthday",
        channel=Channel.EMAIL, period=RulePeriod.YEAR,
    )  # fmt: skip
    clock = FixedClock(datetime(2027, 2, 28, 10, tzinfo=UTC))
    path = tmp_path / "b.sqlite"
    opts: dict[str, Any] = {
        "engagement_rules": (birthday,), "courtesy": NO_COURTESY,
        "client_zones": {"GB": "Europe/London"}, "identity_key": b"k" * 32,
    }  # fmt: skip
    first = Broker.sqlite(path, clock=clock, allow_clear_pii=True, **opts)
    cid = first.clients.register(PORTAL, _person(1))
    first.clients.update_profile(REP, cid, birth_date=date(2000, 2, 29))
    second = Broker.sqlite(path, clock=clock, allow_clear_pii=True, **opts)
    real = first.engagement.run_due

    def racing(now: datetime, uow: UnitOfWork, ids: Any) -> int:
        count = real(now, uow, ids)
        second.queue_scheduled_messages()  # the other process commits the same keys first
        return count

    first.engagement.run_due = racing  # type: ignore[method-assign,assignment]
    first.queue_scheduled_messages()  # the host's daily job: "safe to run from any process"
    assert f"birthday:2027:{cid}" in _outbox(first)


# -- settings at their limits: builtin overflows ------------------------------------------------


def test_a_huge_backoff_is_refused_or_handled_typed() -> None:

    try:
        backoff = Backoff(base=timedelta(days=3_000_000), max_delay=timedelta(days=9_000_000))
    except FxCrmError:
        return
    w = World()
    key = w.queue()
    w.notifier.fail_next(1)
    with contextlib.suppress(FxCrmError):
        w.relay(backoff=backoff).run_once()
    assert w.message(key).status in (MessageStatus.QUEUED, MessageStatus.DEAD)


def test_a_huge_cap_window_is_refused_or_handled_typed() -> None:
    try:
        cap = FrequencyCap(1, timedelta(days=999_999_999))
    except FxCrmError:
        return
    w = World()
    relay = w.relay(courtesy=Courtesy(quiet_start=None, quiet_end=None, caps=(cap,)))
    w.queue(rule="promo-1")
    assert relay.run_once().sent == 1
    w.queue(rule="promo-2")
    with contextlib.suppress(FxCrmError):
        relay.run_once()
    assert len(w.notifier.delivered) == 1


# -- birthdays and the host's daily schedule -----------------------------------------------


def test_a_daily_job_at_17_05_new_york_does_not_skip_a_local_date_when_new_york_falls_back() -> (
    None
):
    # The docs suggest end_of_day a few minutes after 17:00 New York. New York falls back on
    # 1 Nov 2026: the job runs at 21:05 UTC on 31 Oct (23:05 in Johannesburg, still 31 Oct) and
    # at 22:05 UTC on 1 Nov (00:05 on 2 Nov in Johannesburg): 1 Nov is never a client's local
    # date in any run, and a birthday on 1 Nov is lost (no catch-up for birthdays).
    birthday = EngagementRule(
        rule_id="birthday", trigger=Scheduled.birthday(), template="birthday",
        channel=Channel.EMAIL, kind=MessageKind.SERVICE, period=RulePeriod.YEAR,
    )  # fmt: skip
    clock = FixedClock(datetime(2026, 10, 30, 12, tzinfo=UTC))
    broker = _broker(
        clock, MemoryNotifier(), engagement_rules=(birthday,),
        client_zones={"GB": "Africa/Johannesburg"},  # a UTC+2 zone, no DST
    )  # fmt: skip
    cid = broker.clients.register(PORTAL, _person(1))
    broker.clients.update_profile(REP, cid, birth_date=date(1990, 11, 1))
    new_york = ZoneInfo("America/New_York")
    for day in (30, 31):
        clock.set(datetime(2026, 10, day, 17, 5, tzinfo=new_york))
        broker.end_of_day()
    for day in (1, 2, 3):
        clock.set(datetime(2026, 11, day, 17, 5, tzinfo=new_york))
        broker.end_of_day()
    assert f"birthday:2026:{cid}" in _outbox(broker)


def test_consent_withdrawn_then_given_again_decides_the_same_inline_and_in_a_late_worker() -> None:
    # Inline: the news is queued at the registration and cancelled by the withdrawal. A late
    # worker queues it after the withdrawal in the log (its own commit), so the consent row
    # skips it (queued "later") and, the consent being given again, the relay sends it.
    news = EngagementRule(
        rule_id="news", trigger=OnEvent.registered(after=timedelta(days=1)), template="news",
        channel=Channel.EMAIL,
    )  # fmt: skip

    def run(policies: str) -> tuple[MessageStatus, int]:
        clock, notifier = FixedClock(T0), MemoryNotifier()
        broker = _broker(clock, notifier, engagement_rules=(news,), policies=policies)
        cid = broker.clients.register(PORTAL, _person(1))
        broker.clients.give_consent(REP, cid, Consent.MARKETING)
        clock.advance(minutes=1)
        broker.clients.withdraw_consent(REP, cid, Consent.MARKETING)
        clock.advance(minutes=1)
        broker.clients.give_consent(REP, cid, Consent.MARKETING)
        clock.advance(hours=1)
        if policies == "worker":
            broker.run_policies()
        clock.advance(days=1)
        broker.send_messages()
        return _outbox(broker)[f"news:once:{cid}"].status, len(notifier.wire)

    assert run("worker") == run("inline")
