"""Checks of the relay/outbox mends beyond the attack tests: the minimum awake time, bounded
settings, SentMessages' horizon, the lookup report, a withdrawal decided by the cause."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from fxcrm_core.engagement import Channel, Courtesy, MemoryNotifier, MessageKind
from fxcrm_core.engagement.outbox import MessageQueued, MessageSent, Outbox, message_key
from fxcrm_core.engagement.relay import (
    Backoff,
    DueMessage,
    FrequencyCap,
    OutboxRelay,
    RelayLookupError,
    RelayReport,
    SentMessages,
    _cause,
)
from fxcrm_core.events import EventMetadata, RecordedEvent, UnitOfWork
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import ValidationError
from tests.test_engagement_attack import NO_COURTESY, T0, World


def test_quiet_hours_must_leave_an_hour_awake() -> None:
    with pytest.raises(ValidationError):
        Courtesy(quiet_start=time(8, 30), quiet_end=time(8), caps=())
    Courtesy(quiet_start=time(9), quiet_end=time(8), caps=())  # 23 h quiet: one awake
    Courtesy(quiet_start=time(8), quiet_end=time(8), caps=())  # start == end: never quiet


def test_settings_are_bounded() -> None:
    with pytest.raises(ValidationError):
        Backoff(max_delay=timedelta(days=400))
    with pytest.raises(ValidationError):
        FrequencyCap(1, timedelta(days=367))
    late = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    with pytest.raises(ValidationError):
        Backoff().retry_at(1, late)
    cap = Courtesy(quiet_start=None, quiet_end=None, caps=(FrequencyCap(1, timedelta(days=1)),))
    assert cap.cap_until(Channel.EMAIL, [late], late) == datetime.max.replace(tzinfo=UTC)


def test_empty_parameter_values_are_kept() -> None:
    w = World()
    key = w.queue(params=(("name", ""), ("city", " Leeds ")))
    queued = w.message(key).queued
    assert queued is not None
    assert queued.params == (("name", ""), ("city", " Leeds "))


def _recorded(event: object, position: int, actor: str = "staff:1") -> RecordedEvent[Any]:
    return RecordedEvent(
        "outbox-x", 1, position, T0, event, EventMetadata(actor, causation_id="client-c/2")
    )


def test_sent_messages_trims_past_the_horizon() -> None:
    model = SentMessages(timedelta(days=1))
    for n in range(5):
        key = f"k{n}"
        queued = MessageQueued(
            key, "r", "c-1", "p", Channel.EMAIL, "t", (), "en", MessageKind.MARKETING, 0, T0, T0
        )
        model.handle(_recorded(queued, 2 * n + 1))
        sent = MessageSent(key, 1, T0 + timedelta(hours=10 * n), "ref")
        model.handle(_recorded(sent, 2 * n + 2))
    times = model.times("c-1", Channel.EMAIL)
    assert times == [T0 + timedelta(hours=h) for h in (20, 30, 40)]
    assert model._marketing == {}


def test_a_failing_lookup_is_reported_and_the_rest_is_sent() -> None:
    w = World()
    w.queue(client="broken", priority=100)
    good = w.queue(client="c-2")

    def consent_of(client_id: str) -> bool:
        if client_id == "broken":
            raise RuntimeError("down")
        return True

    with pytest.raises(RelayLookupError) as caught:
        w.relay(consent_of=consent_of).run_once(limit=2)
    assert caught.value.report == RelayReport(sent=1, errors=1)
    assert good in w.notifier.delivered


def test_causation_ids_parse() -> None:
    assert _cause("client-c-1/3") == ("client-c-1", 3)
    assert _cause("request-7") is None
    assert _cause("client-c/0") is None
    assert _cause("client-c/\u00b2") is None
    assert _cause(None) is None


def test_a_withdrawal_cancels_by_the_cause_on_another_stream() -> None:
    clock = FixedClock(T0)
    w = World()
    w.clock = clock
    relay = OutboxRelay(
        w.repository, MemoryNotifier(), clock=clock, courtesy=NO_COURTESY,
        consent_of=lambda _: True,
    )  # fmt: skip
    store = w.repository.store
    with UnitOfWork(w.repository, EventMetadata("staff:1")) as uow:  # position 1: the cause
        Outbox().queue(
            uow, rule_id="seed", client_id="z", period="p", channel=Channel.EMAIL,
            template="t", kind=MessageKind.SERVICE, at=T0,
        )  # fmt: skip
        uow.commit()
    early = DueMessage(
        "k", "c", Channel.EMAIL, MessageKind.MARKETING, 0, T0, 9, "outbox-seed:p:z/1"
    )
    withdrawal: RecordedEvent[Any] = RecordedEvent(
        "client-c", 4, 5, T0, object(), EventMetadata("staff:1")
    )
    assert store.last_position() == 1
    assert relay._decided_before(early, withdrawal)  # caused at 1, written at 9: before 5
    assert not relay._decided_before(
        DueMessage("k", "c", Channel.EMAIL, MessageKind.MARKETING, 0, T0, 9, "client-c/6"),
        withdrawal,
    )
    assert relay._decided_before(
        DueMessage("k", "c", Channel.EMAIL, MessageKind.MARKETING, 0, T0, 3, "nowhere/1"),
        withdrawal,
    )
    assert message_key("seed", "p", " z ") == "seed:p:z"
