"""Surveys sent by rules: a message sent with a survey template records the survey (id
``msg:<key>``) with the policy's position, once per message, whatever is replayed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.access import AccessControl, Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Registration
from fxcrm_core.clients import register_events as register_client_events
from fxcrm_core.engagement import (
    Channel,
    EngagementRule,
    MemoryNotifier,
    MessageKind,
    MessageSent,
    OnEvent,
    Outbox,
    OutboxMessage,
    Survey,
    SurveyKind,
    Surveys,
    SurveySent,
)
from fxcrm_core.engagement import register_events as register_engagement_events
from fxcrm_core.engagement.survey_rules import SURVEY_RULES_POLICY, SurveyOnSend
from fxcrm_core.events import (
    EventCodec,
    EventMetadata,
    EventRegistry,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import ArgumentTypeError, FxCrmError, ValidationError
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.stores import MemoryEventStore

T0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
META = EventMetadata("system:test")
PORTAL = Actor.system("portal", Role.PORTAL)
SUPPORT = Actor.staff("desk-1", Role.SUPPORT)
ANA = Registration(
    ClientKind.INDIVIDUAL, "GB", "Ana Lima", "ana.lima@example.com", "07911 123456",
    "x123 4567", owner_id="staff:rep-1",
)  # fmt: skip
WELCOME = EngagementRule(
    rule_id="welcome",
    trigger=OnEvent.registered(),
    template="welcome",
    channel=Channel.EMAIL,
    kind=MessageKind.SERVICE,
)
ONBOARDING_CSAT = EngagementRule(
    rule_id="onboarding-csat",
    trigger=OnEvent.registered(after=timedelta(days=7)),
    template="csat-onboarding",
    channel=Channel.EMAIL,
    kind=MessageKind.SERVICE,
)
TEMPLATES = {"csat-onboarding": SurveyKind.CSAT, "nps-quarterly": SurveyKind.NPS}


def _broker(clock: FixedClock, path: Path | None = None, name: str = SURVEY_RULES_POLICY) -> Broker:
    options: dict[str, object] = {
        "engagement_rules": (WELCOME, ONBOARDING_CSAT),
        "notifier": MemoryNotifier(),
        "identity_key": b"k" * 32,
    }
    if path is None:
        broker = Broker.in_memory(clock=clock, keyring=MasterKeyring.generate(), **options)  # type: ignore[arg-type]
    else:
        broker = Broker.sqlite(path, clock=clock, allow_clear_pii=True, **options)  # type: ignore[arg-type]
    # Until the integrator adds the EVENT_HANDLERS row (SURVEY_RULES_POLICY, (MessageSent,), ...).
    broker.add_policy(name, (MessageSent,), SurveyOnSend(broker.surveys, TEMPLATES).on_message_sent)
    return broker


def _surveys_sent(broker: Broker) -> list[SurveySent]:
    rows = broker.store.read_all(after_position=0, limit=100_000)
    events = (broker.codec.decode(r).event for r in rows if r.stream_id.startswith("survey-"))
    return [e for e in events if isinstance(e, SurveySent)]


def test_a_survey_template_sent_records_the_survey_once() -> None:
    clock = FixedClock(T0)
    broker = _broker(clock)
    cid = broker.clients.register(PORTAL, ANA)
    key = f"onboarding-csat:once:{cid}"
    assert broker.send_messages().sent == 1  # the welcome: no survey
    assert _surveys_sent(broker) == []
    clock.advance(days=7)
    assert broker.send_messages().sent == 1
    survey = broker.surveys.get(SUPPORT, f"msg:{key}")
    assert (survey.client_id, survey.kind, survey.outbox_key) == (cid, SurveyKind.CSAT, key)
    assert survey.reason == "csat-onboarding"
    assert survey.sent_at == T0 + timedelta(days=7)
    assert broker.surveys.send(SUPPORT, cid, SurveyKind.CSAT, "again", outbox_key=key) == survey
    assert len(_surveys_sent(broker)) == 1
    answered = broker.surveys.answer(Actor.client(cid), f"msg:{key}", 5)
    assert answered.score == 5


def test_a_second_process_and_a_full_replay_record_nothing_new(tmp_path: Path) -> None:
    path, clock = tmp_path / "log.db", FixedClock(T0)
    first = _broker(clock, path)
    cid = first.clients.register(PORTAL, ANA)
    clock.advance(days=7)
    first.send_messages()
    assert len(_surveys_sent(first)) == 1
    second = _broker(clock, path)  # the same policy: its position is in the log
    assert second.run_policies() == 0
    replay = _broker(clock, path, name="surveys-replayed")  # a new policy reads the whole log
    replay.run_policies()
    assert len(_surveys_sent(replay)) == 1
    assert replay.surveys.get(SUPPORT, f"msg:onboarding-csat:once:{cid}").kind is SurveyKind.CSAT
    for broker in (first, second, replay):
        broker.close()


def test_the_templates_are_checked() -> None:
    broker = _broker(FixedClock(T0))
    for bad in ("csat", ["csat"], {"csat": "csat"}, {7: SurveyKind.CSAT}):
        with pytest.raises(FxCrmError):
            SurveyOnSend(broker.surveys, bad)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError):
        SurveyOnSend(object(), TEMPLATES)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        SurveyOnSend(broker.surveys, {"x" * 65: SurveyKind.NPS})
    with pytest.raises(ValidationError):
        SurveyOnSend(broker.surveys, {" padded ": SurveyKind.NPS})


# -- the law, on a bare log: surveys recorded = sent messages with a survey template ----------
class World:
    def __init__(self, templates: Mapping[str, SurveyKind]) -> None:
        registry = EventRegistry()
        register_client_events(registry)
        register_engagement_events(registry)
        self.clock = FixedClock(T0)
        self.store = MemoryEventStore(self.clock)
        self.codec = EventCodec(registry)
        self.repository = Repository(self.store, self.codec)
        surveys = Surveys(self.repository, AccessControl(), self.clock)
        self.policy = SurveyOnSend(surveys, templates)

    def sent(self, rule: str, client: str, template: str) -> RecordedEvent[MessageSent]:
        with UnitOfWork(self.repository, META) as uow:
            Outbox().queue(
                uow, rule_id=rule, client_id=client, period="once", channel=Channel.EMAIL,
                template=template, at=self.clock.now(),
            )  # fmt: skip
            uow.commit()
        key = f"{rule}:once:{client}"
        with UnitOfWork(self.repository, META) as uow:
            uow.record(uow.get(OutboxMessage, key), MessageSent(key, 1, self.clock.now(), "r"))
            uow.commit()
        row = self.store.read_stream(OutboxMessage.stream_id_for(key))[-1]
        recorded = self.codec.decode(row)
        assert isinstance(recorded.event, MessageSent)
        return recorded  # type: ignore[return-value]

    def handle(self, recorded: RecordedEvent[MessageSent], twice_in_one_unit: bool) -> None:
        with UnitOfWork(self.repository, META) as uow:
            self.policy.on_message_sent(recorded, uow)
            if twice_in_one_unit:
                self.policy.on_message_sent(recorded, uow)
            if uow.staged:
                uow.commit()


MESSAGES = st.lists(
    st.tuples(
        st.sampled_from(["r1", "r2", "r3"]),
        st.sampled_from(["c-1", "c-2"]),
        st.sampled_from(["csat-onboarding", "nps-quarterly", "news"]),
    ),
    max_size=8,
    unique_by=lambda m: (m[0], m[1]),
)


@settings(max_examples=40, deadline=None)
@given(MESSAGES, st.lists(st.integers(0, 7), max_size=6), st.booleans())
def test_one_survey_per_sent_message_with_a_survey_template(
    messages: list[tuple[str, str, str]], replays: list[int], twice: bool
) -> None:
    world = World(TEMPLATES)
    recorded = [world.sent(*m) for m in messages]
    for r in recorded:
        world.handle(r, twice)
    for i in replays:  # replays, in any order, change nothing
        if i < len(recorded):
            world.handle(recorded[i], twice)
    rows = world.store.read_all(after_position=0, limit=10_000)
    sent = [e for e in (world.codec.decode(r).event for r in rows) if isinstance(e, SurveySent)]
    expected = {
        f"msg:{rule}:once:{client}": (client, TEMPLATES[template])
        for rule, client, template in messages
        if template in TEMPLATES
    }
    assert {s.survey_id: (s.client_id, s.kind) for s in sent} == expected
    assert len(sent) == len(expected)
    for s in sent:
        survey = world.repository.load(Survey, s.survey_id)
        assert survey is not None
        assert survey.outbox_key == s.survey_id.removeprefix("msg:")


def test_other_events_are_ignored() -> None:
    world = World(TEMPLATES)
    recorded = world.sent("r1", "c-1", "news")
    with UnitOfWork(world.repository, META) as uow:
        world.policy.on_message_sent(recorded, uow)
        assert not uow.staged
