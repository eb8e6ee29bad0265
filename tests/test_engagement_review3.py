"""Review 3 of the newest engagement pieces (unsubscribe links, surveys by rule, holiday triggers,
the relay's on_sent hook, i18n formatting): each test states a promise and tries to break it as a
broker's engineer or an attacker would. A failing test is a finding."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from fxcrm_core import clients as clients_context
from fxcrm_core import engagement
from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Consent, Registration
from fxcrm_core.engagement import (
    Channel,
    Courtesy,
    EngagementRule,
    MemoryNotifier,
    MessageKind,
    MessageStatus,
    OnEvent,
    Outbox,
    OutboxMessage,
    RulePeriod,
    Scheduled,
    SurveyKind,
)
from fxcrm_core.engagement.outbox import MessageSent
from fxcrm_core.engagement.relay import OutboxRelay
from fxcrm_core.engagement.rules import EngagementRules, HolidayData, Profile
from fxcrm_core.events import EventCodec, EventMetadata, EventRegistry, Repository, UnitOfWork
from fxcrm_core.events import register_events as register_core_events
from fxcrm_core.i18n import Catalog
from fxcrm_core.i18n.formatting import format_datetime
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import FxCrmError, IllegalTransitionError
from fxcrm_core.stores import MemoryEventStore

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
META = EventMetadata("system:review")
PORTAL = Actor.system("portal", Role.PORTAL)
REP = Actor.staff("rep-1", Role.SALES)
SUPPORT = Actor.staff("desk-1", Role.SUPPORT)
NO_COURTESY = Courtesy(quiet_start=None, quiet_end=None, caps=())
PROMO = EngagementRule(
    rule_id="promo",
    trigger=OnEvent.registered(),
    template="promo",
    channel=Channel.SMS,
    kind=MessageKind.MARKETING,
)
CSAT = EngagementRule(
    rule_id="csat",
    trigger=OnEvent.registered(),
    template="csat-welcome",
    channel=Channel.EMAIL,
    kind=MessageKind.SERVICE,
)


def _person(n: int) -> Registration:
    return Registration(
        ClientKind.INDIVIDUAL, "GB", f"Ana Lima {n}", f"ana{n}@example.com", f"07911 12345{n}",
        f"x123 456{n}", owner_id="staff:rep-1",
    )  # fmt: skip


def _broker(clock: FixedClock) -> Broker:
    return Broker.in_memory(
        clock=clock,
        notifier=MemoryNotifier(),
        engagement_rules=(PROMO, CSAT),
        identity_key=b"k" * 32,
        survey_templates={"csat-welcome": SurveyKind.CSAT},
    )


def _codec() -> EventCodec:
    registry = EventRegistry()
    register_core_events(registry)
    clients_context.register_events(registry)
    engagement.register_events(registry)
    return EventCodec(registry)


# -- unsubscribe links -------------------------------------------------------------------------
def test_an_old_link_followed_after_consent_was_given_again_unsubscribes_again() -> None:
    # The client unsubscribed, later opted in again, then clicks the link in the old e-mail:
    # the click says "no more marketing" and must not be swallowed as a second click.
    clock = FixedClock(T0)
    broker = _broker(clock)
    cid = broker.clients.register(PORTAL, _person(1))
    broker.clients.give_consent(REP, cid, Consent.MARKETING)
    links = broker.unsubscribe_links
    token = links.token(f"promo:once:{cid}")
    assert links.unsubscribe(token) is True
    clock.advance(days=1)
    broker.clients.give_consent(REP, cid, Consent.MARKETING)
    clock.advance(days=1)

    assert links.unsubscribe(token) is True
    assert not broker.clients.get(REP, cid).has_consent(Consent.MARKETING)
    recorded = links.recorded(f"promo:once:{cid}")
    assert recorded is not None
    assert recorded.at == clock.now()
    head = broker.store.last_position()
    assert links.unsubscribe(token) is False  # a double click still records nothing
    assert broker.store.last_position() == head


# -- surveys by rule ---------------------------------------------------------------------------
def test_a_survey_cannot_claim_another_clients_message() -> None:
    # The survey id is derived from the outbox key, which names its client: a send for client
    # B with client A's message key would take A's survey slot (the rule's survey for A is
    # then never recorded) and credit A's answer to B.
    clock = FixedClock(T0)
    broker = _broker(clock)
    ana = broker.clients.register(PORTAL, _person(1))
    bob = broker.clients.register(PORTAL, _person(2))
    head = broker.store.last_position()
    with pytest.raises(IllegalTransitionError):
        broker.surveys.send(SUPPORT, bob, SurveyKind.CSAT, "x", outbox_key=f"csat:once:{ana}")
    assert broker.store.last_position() == head  # nothing half-written
    broker.send_messages()
    assert broker.surveys.get(SUPPORT, f"msg:csat:once:{ana}").client_id == ana


# -- the relay's on_sent hook ------------------------------------------------------------------
def _three_queued(clock: FixedClock) -> Repository:
    repository = Repository(MemoryEventStore(clock), _codec())
    with UnitOfWork(repository, META) as uow:
        for n in range(3):
            Outbox().queue(
                uow, rule_id="r", client_id=f"c-{n}", period="once", channel=Channel.EMAIL,
                template="t", kind=MessageKind.SERVICE, at=clock.now(),
            )  # fmt: skip
        uow.commit()
    return repository


def test_an_on_sent_hook_failing_for_one_message_neither_leaks_nor_jams_the_relay() -> None:
    clock = FixedClock(T0)
    repository = _three_queued(clock)
    notifier = MemoryNotifier()
    calls: list[str] = []

    def hook(event: MessageSent, uow: UnitOfWork) -> None:
        calls.append(event.key)
        if event.key == "r:once:c-0":
            raise KeyError("ana.lima@example.com")  # a host's bug, with personal data in it

    relay = OutboxRelay(
        repository, notifier, clock=clock, courtesy=NO_COURTESY, on_sent=hook,
        reachable=lambda client_id: True,
    )  # fmt: skip
    with pytest.raises(FxCrmError) as caught:
        relay.run_once()
    assert "example.com" not in str(caught.value)
    # The other messages went out; the failed one is retried later, not on every run.
    assert set(notifier.delivered) == {"r:once:c-0", "r:once:c-1", "r:once:c-2"}
    for n in (1, 2):
        state = repository.load(OutboxMessage, f"r:once:c-{n}")
        assert state is not None
        assert state.status is MessageStatus.SENT
    failed = repository.load(OutboxMessage, "r:once:c-0")
    assert failed is not None
    assert failed.status is MessageStatus.QUEUED
    assert failed.next_at is not None
    assert failed.next_at > clock.now()
    assert relay.run_once().handled == 0  # not due again yet: no resend on the next run
    assert calls.count("r:once:c-0") == 1


# -- holiday triggers --------------------------------------------------------------------------
class _NoAudience:
    def profile(
        self, client_id: str, *, position: int | None = None, recorded_at: datetime | None = None
    ) -> Profile | None:
        return None


ANY_HOLIDAY = EngagementRule(
    rule_id="holiday",
    trigger=Scheduled.holidays(),
    template="holiday",
    channel=Channel.EMAIL,
    kind=MessageKind.MARKETING,
    period=RulePeriod.DAY,
)


@pytest.mark.parametrize("holidays", [None, {}, {"DE": {}}])
def test_an_any_holiday_rule_without_any_holiday_data_is_refused(holidays: Any) -> None:
    # A named holiday the data lacks is refused; "any holiday" over no data at all would
    # never fire, silently: the same mistake (the broker option forgotten).
    with pytest.raises(FxCrmError):
        EngagementRules(
            Outbox(), [ANY_HOLIDAY], _NoAudience(), clock=FixedClock(T0), holidays=holidays
        )


def test_holiday_data_built_directly_is_validated_and_consistent() -> None:
    # HolidayData is public and attrs builds it from its fields: unvalidated data, or a
    # by-date index that does not match, would be taken as is (a rule accepted that never
    # fires, or garbage dates).
    good = HolidayData({"de": {"new-year": frozenset({date(2027, 1, 1)})}})
    rules = EngagementRules(Outbox(), [], _NoAudience(), clock=FixedClock(T0), holidays=good)
    assert rules.holidays.on("DE", date(2027, 1, 1)) == ("new-year",)
    with pytest.raises(FxCrmError):
        EngagementRules(
            Outbox(), [], _NoAudience(), clock=FixedClock(T0),
            holidays=HolidayData({"de": {"New Year": [1]}}),  # type: ignore[dict-item]
        )  # fmt: skip


# -- i18n ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("when", "zone"),
    [
        (datetime.max.replace(tzinfo=UTC), "Pacific/Kiritimati"),  # UTC+14: past year 9999
        (datetime.min.replace(tzinfo=UTC), "Etc/GMT+12"),  # UTC-12: before year 1
    ],
)
def test_an_instant_shown_past_the_calendar_in_a_far_zone_is_a_typed_error(
    when: datetime, zone: str
) -> None:
    with pytest.raises(FxCrmError):
        format_datetime(when, "en", zone)
    catalog = Catalog()
    params = catalog.message_params([("paid_at", when.isoformat())])
    catalog.override("en", "template.review.subject", "Paid")
    catalog.override("en", "template.review.body", "Paid at {paid_at}")
    with pytest.raises(FxCrmError):
        catalog.render("review", "zh_CN", params, zone=zone)
