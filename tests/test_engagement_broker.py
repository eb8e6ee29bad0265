"""Engagement wired into the broker: rules run as a policy row, the relay hands messages to the
notifier, a withdrawn consent cancels what is queued, a restart or a second process sends
nothing twice, and the daily run queues birthdays once."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import EVENT_HANDLERS, Broker, ConfigurationError
from fxcrm_core.clients import ClientKind, Consent, Registration, Stage
from fxcrm_core.engagement import (
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
    Survey,
    SurveyKind,
)
from fxcrm_core.kernel import FixedClock
from fxcrm_core.privacy import MasterKeyring, RetentionPolicy

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)  # a Monday, 12:00 UTC: 12:00 in London
PORTAL = Actor.system("portal", Role.PORTAL)
REP = Actor.staff("rep-1", Role.SALES)
ANA = Registration(
    ClientKind.INDIVIDUAL,
    "GB",
    "Ana Lima",
    "ana.lima@example.com",
    "07911 123456",
    "x123 4567",
    owner_id="staff:rep-1",
)
WELCOME = EngagementRule(
    rule_id="welcome",
    trigger=OnEvent.registered(),
    template="welcome",
    channel=Channel.EMAIL,
    kind=MessageKind.SERVICE,
)
NEWS = EngagementRule(
    rule_id="news",
    trigger=OnEvent.registered(after=timedelta(days=1)),
    template="first-week-news",
    channel=Channel.EMAIL,
    kind=MessageKind.MARKETING,  # the relay checks the consent when it sends
)
BIRTHDAY = EngagementRule(
    rule_id="birthday",
    trigger=Scheduled.birthday(),
    template="birthday",
    channel=Channel.EMAIL,
    kind=MessageKind.MARKETING,
    period=RulePeriod.YEAR,
)
QUIET_FREE = Courtesy(quiet_start=None, quiet_end=None, caps=())


def _broker(
    clock: FixedClock, notifier: MemoryNotifier, path: Path | None = None, **extra: object
) -> Broker:
    options: dict[str, object] = {
        "engagement_rules": (WELCOME, NEWS, BIRTHDAY),
        "notifier": notifier,
        "courtesy": QUIET_FREE,
        "client_zones": {"GB": "Europe/London"},
        "identity_key": b"k" * 32,
        **extra,
    }
    if path is None:
        return Broker.in_memory(clock=clock, keyring=MasterKeyring.generate(), **options)  # type: ignore[arg-type]
    return Broker.sqlite(path, clock=clock, allow_clear_pii=True, **options)  # type: ignore[arg-type]


def _person(n: int) -> Registration:
    return Registration(
        ClientKind.INDIVIDUAL, "GB", f"Client {n}", f"c{n}@example.com", f"07911 12345{n}",
        f"x123 456{n}", owner_id="staff:rep-1",
    )  # fmt: skip


def _messages(broker: Broker) -> dict[str, OutboxMessage]:
    out = {}
    for row in broker.store.read_all(after_position=0, limit=100_000):
        if row.stream_id.startswith("outbox-"):
            key = row.stream_id.removeprefix("outbox-")
            found = broker.repository.load(OutboxMessage, key)
            assert found is not None
            out[key] = found
    return out


def test_rows_are_in_the_policy_table() -> None:
    names = [name for name, _, _ in EVENT_HANDLERS]
    assert names[-2:] == ["engagement-rules", "engagement-consent"]


def test_a_registration_queues_the_welcome_once_and_the_relay_sends_it() -> None:
    clock, notifier = FixedClock(T0), MemoryNotifier()
    broker = _broker(clock, notifier)
    cid = broker.clients.register(PORTAL, ANA)
    queued = _messages(broker)
    assert set(queued) == {f"welcome:once:{cid}", f"news:once:{cid}"}
    report = broker.send_messages()
    assert report.sent == 1  # the news is due tomorrow
    assert list(notifier.delivered) == [f"welcome:once:{cid}"]
    assert broker.send_messages().handled == 0  # nothing due yet
    assert _messages(broker)[f"welcome:once:{cid}"].status is MessageStatus.SENT
    broker.clients.give_consent(REP, cid, Consent.MARKETING)
    clock.advance(days=1)
    assert broker.send_messages().sent == 1  # the consent is in force when it is sent
    assert list(notifier.delivered) == [f"welcome:once:{cid}", f"news:once:{cid}"]


def test_a_withdrawn_consent_cancels_the_queued_marketing() -> None:
    clock, notifier = FixedClock(T0), MemoryNotifier()
    broker = _broker(clock, notifier)
    cid = broker.clients.register(PORTAL, ANA)
    broker.clients.give_consent(REP, cid, Consent.MARKETING)
    assert f"news:once:{cid}" in _messages(broker)
    broker.send_messages()  # the welcome; the news is due tomorrow
    broker.clients.withdraw_consent(REP, cid, Consent.MARKETING)
    clock.advance(days=2)
    broker.send_messages()
    news = _messages(broker)[f"news:once:{cid}"]
    assert news.status is MessageStatus.CANCELLED
    assert f"news:once:{cid}" not in notifier.delivered


def test_a_restart_and_a_second_process_send_nothing_twice(tmp_path: Path) -> None:
    clock, notifier = FixedClock(T0), MemoryNotifier()
    first = _broker(clock, notifier, tmp_path / "b.sqlite")
    cids = [first.clients.register(PORTAL, _person(n)) for n in range(4)]
    assert first.send_messages(limit=2).sent == 2
    second = _broker(clock, notifier, tmp_path / "b.sqlite")  # another process, same log
    assert second.send_messages().sent == 2
    assert first.send_messages().handled == 0
    restarted = _broker(clock, notifier, tmp_path / "b.sqlite")
    assert restarted.send_messages().handled == 0
    assert sorted(notifier.delivered) == sorted(f"welcome:once:{c}" for c in cids)
    assert len(notifier.wire) == 4  # the news (no consent) waits for tomorrow


def test_the_daily_run_queues_a_birthday_once_on_the_local_date() -> None:
    clock, notifier = FixedClock(datetime(2026, 3, 9, 23, 30, tzinfo=UTC)), MemoryNotifier()
    broker = _broker(clock, notifier)
    cid = broker.clients.register(PORTAL, ANA)
    broker.clients.update_profile(REP, cid, birth_date=date(1990, 3, 10))
    assert broker.queue_scheduled_messages() == 0  # 23:30 in London: still the 9th
    clock.set(datetime(2026, 3, 10, 0, 30, tzinfo=UTC))
    assert broker.end_of_day()["messages_queued"] == [1]
    assert broker.queue_scheduled_messages() == 0  # the same day again: the outbox key
    key = f"birthday:2026:{cid}"
    assert key in _messages(broker)
    clock.set(datetime(2026, 3, 10, 9, 5, tzinfo=UTC))
    broker.send_messages()
    assert key not in notifier.delivered  # marketing, and no consent in force at send time
    assert _messages(broker)[key].status is MessageStatus.CANCELLED


def test_bad_engagement_options_are_refused_typed() -> None:
    with pytest.raises(ConfigurationError):
        Broker.in_memory(engagement_rules=("welcome",))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Broker.in_memory(engagement_rules="welcome")  # type: ignore[arg-type]


def test_send_at_local_time_is_respected_by_a_scheduled_rule() -> None:
    rule = EngagementRule(
        rule_id="bday-noon",
        trigger=Scheduled.birthday(),
        template="birthday",
        channel=Channel.SMS,
        kind=MessageKind.SERVICE,
        period=RulePeriod.YEAR,
        send_at=time(12),
    )
    clock = FixedClock(datetime(2026, 7, 1, 1, tzinfo=UTC))
    broker = _broker(clock, MemoryNotifier(), engagement_rules=(rule,))
    cid = broker.clients.register(PORTAL, ANA)
    broker.clients.update_profile(REP, cid, birth_date=date(1985, 7, 1))
    assert broker.queue_scheduled_messages() == 1
    message = _messages(broker)[f"bday-noon:2026:{cid}"]
    assert message.queued is not None
    # 12:00 in London in July is 11:00 UTC
    assert message.queued.not_before == datetime(2026, 7, 1, 11, tzinfo=UTC)
    assert date(2026, 7, 1) == message.queued.not_before.date()


def test_an_erased_client_is_never_messaged() -> None:
    clock, notifier = FixedClock(T0), MemoryNotifier()
    broker = _broker(clock, notifier, retention=RetentionPolicy(years=0))
    cid = broker.clients.register(PORTAL, ANA)
    broker.clients.move(REP, cid, Stage.CLOSED)
    broker.erasure.erase(Actor.staff("dpo", Role.COMPLIANCE), cid, reason="erasure request")
    report = broker.send_messages()
    assert (report.sent, report.cancelled) == (0, 1)  # the welcome (a service message)
    assert _messages(broker)[f"welcome:once:{cid}"].status is MessageStatus.CANCELLED
    assert not notifier.wire


def test_a_survey_template_sends_its_survey_in_the_relays_commit() -> None:
    clock, notifier = FixedClock(T0), MemoryNotifier()
    broker = _broker(clock, notifier, survey_templates={"welcome": SurveyKind.CSAT})
    cid = broker.clients.register(PORTAL, ANA)
    before = broker.store.last_position()
    assert broker.send_messages().sent == 1
    rows = broker.store.read_all(after_position=before)
    assert [r.event_type for r in rows] == ["MessageSent", "SurveySent"]  # one commit
    survey = broker.repository.load(Survey, f"msg:welcome:once:{cid}")
    assert survey is not None
    assert survey.kind is SurveyKind.CSAT


def test_an_unsubscribe_link_withdraws_the_consent_and_cancels_queued_marketing() -> None:
    clock, notifier = FixedClock(T0), MemoryNotifier()
    broker = _broker(clock, notifier)
    cid = broker.clients.register(PORTAL, ANA)
    broker.clients.give_consent(REP, cid, Consent.MARKETING)
    token = broker.unsubscribe_links.token(f"welcome:once:{cid}")
    assert broker.unsubscribe_links.unsubscribe(token) is True
    assert broker.unsubscribe_links.unsubscribe(token) is False  # once
    clock.advance(days=1)
    broker.send_messages()
    assert f"news:once:{cid}" not in notifier.delivered
    assert _messages(broker)[f"news:once:{cid}"].status is MessageStatus.CANCELLED


def test_holiday_rules_run_from_the_broker_option_and_bad_data_is_refused() -> None:
    new_year = EngagementRule(
        rule_id="new-year", trigger=Scheduled.holiday("new-year"), template="news",
        channel=Channel.EMAIL, kind=MessageKind.SERVICE, period=RulePeriod.YEAR,
    )  # fmt: skip
    clock = FixedClock(datetime(2027, 1, 1, 12, tzinfo=UTC))
    broker = _broker(
        clock, MemoryNotifier(), engagement_rules=(new_year,),
        holidays={"GB": {"new-year": [date(2027, 1, 1)]}},
    )  # fmt: skip
    cid = broker.clients.register(PORTAL, ANA)
    assert broker.queue_scheduled_messages() == 1
    assert f"new-year:2027:{cid}" in _messages(broker)
    with pytest.raises(ConfigurationError):  # a holiday no country holds
        _broker(clock, MemoryNotifier(), engagement_rules=(new_year,), holidays={})
