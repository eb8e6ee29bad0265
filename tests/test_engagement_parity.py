"""Two and a half weeks of engagement on one broker, run by the parity harness: on one broker, in
a fresh process for every step, and across two live processes in turn. Every answer (what the
relay handed the gateway, each message's life in the outbox, complaints and their escalations,
survey scores, announcement receipts, service notes, the audit records of exports) must be the
same in the three. Then the same weeks with the policies left to a worker whose turns fall to
either of two live processes: the same answers as inline policies, but for the log's order.

The steps and probes live at module level: the harness's workers import them from here."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import Client, ClientKind, Consent, Registration
from fxcrm_core.engagement import (
    Audience,
    Backoff,
    BusinessCalendar,
    Channel,
    ComplaintOutcome,
    ComplaintPolicy,
    Courtesy,
    EngagementRule,
    Envelope,
    FrequencyCap,
    MemoryNotifier,
    MessageCancelled,
    MessageDeferred,
    MessageFailed,
    MessageKind,
    MessageQueued,
    MessageSent,
    OnEvent,
    OutboxMessage,
    RulePeriod,
    Scheduled,
    Survey,
    SurveyKind,
    SurveyPeriod,
)
from fxcrm_core.engagement.announcements import AnnouncementText, ReadReceipts
from fxcrm_core.engagement.records import CallDirection, CallOutcome
from fxcrm_core.kernel import FixedClock, FxCrmError
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.testing.parity import (
    Mode,
    ParityReport,
    Probe,
    Ref,
    Scenario,
    Step,
    assert_parity,
)

M = "tests.test_engagement_parity"
T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday; London is on GMT until 29 March
PORTAL = Actor.system("portal", Role.PORTAL)
REP = Actor.staff("rep-1", Role.SALES)
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
DESK = Actor.staff("desk-1", Role.SUPPORT)
DPO = Actor.staff("dpo", Role.COMPLIANCE)
ADMIN = Actor.staff("admin-1", Role.ADMIN)

MOTHERING_SUNDAY = date(2026, 3, 15)
CLOSED_FRIDAY = date(2026, 3, 6)  # a day the regulator's calendar closes (the host's data)

POLICY = ComplaintPolicy(
    ("payments", "trading", "other"), acknowledge_days=1, resolve_days=5,
    zone="Europe/London", country="GB",
)  # fmt: skip
RULES = (
    EngagementRule(
        rule_id="welcome", trigger=OnEvent.registered(), template="welcome",
        channel=Channel.EMAIL, kind=MessageKind.SERVICE, priority=10,
    ),
    EngagementRule(  # marketing: the consent is checked when it is sent
        rule_id="news", trigger=OnEvent.registered(after=timedelta(days=2)),
        template="first-week-news", channel=Channel.EMAIL, kind=MessageKind.MARKETING,
    ),
    EngagementRule(
        rule_id="birthday", trigger=Scheduled.birthday(), template="birthday",
        channel=Channel.EMAIL, kind=MessageKind.MARKETING, period=RulePeriod.YEAR, priority=5,
    ),
    EngagementRule(
        rule_id="passport", trigger=Scheduled.document_expiring(14), template="doc-expiring",
        channel=Channel.EMAIL, kind=MessageKind.SERVICE, period=RulePeriod.YEAR,
    ),
    EngagementRule(
        rule_id="mothering-sunday", trigger=Scheduled.holiday("mothering-sunday"),
        template="holiday", channel=Channel.EMAIL, kind=MessageKind.MARKETING,
        period=RulePeriod.YEAR, send_at=time(10),
    ),
    EngagementRule(  # its template carries a CSAT survey (survey_templates)
        rule_id="csat", trigger=Scheduled.days_after("ClientRegistered", 7),
        template="csat-week-one", channel=Channel.EMAIL, kind=MessageKind.SERVICE,
        audience=Audience(countries=frozenset({"GB"})),
    ),
)  # fmt: skip


def build(path: str) -> Broker:
    """The broker on ``path``: the same keys, rules and settings in every process; policies
    run inline, after each command."""
    return _open(path, "inline")


def build_worker(path: str) -> Broker:
    """The same broker with its policies left to a worker (the ``policy worker`` steps)."""
    return _open(path, "worker")


def _open(path: str, policies: Literal["inline", "worker"]) -> Broker:
    return Broker.sqlite(
        Path(path),
        clock=FixedClock(T0),
        keyring=MasterKeyring({"m1": bytes(range(32))}, "m1"),
        identity_key=b"engagement parity deduplication key, 32+ bytes",
        synchronous="NORMAL",
        engagement_rules=RULES,
        # The gateway of this process: what a relay step hands it is that step's answer.
        notifier=MemoryNotifier(),
        courtesy=Courtesy(
            quiet_start=time(21),
            quiet_end=time(8),
            caps=(FrequencyCap(1, timedelta(hours=24), Channel.EMAIL),),
        ),
        backoff=Backoff(base=timedelta(minutes=30), factor=2, max_attempts=5),
        client_zones={"GB": "Europe/London", "JP": "Asia/Tokyo"},
        client_languages={"JP": "ja"},
        complaint_policy=POLICY,
        business_calendar=BusinessCalendar({"GB": [CLOSED_FRIDAY]}, country="GB"),
        holidays={"GB": {"mothering-sunday": [MOTHERING_SUNDAY]}},
        survey_templates={"csat-week-one": SurveyKind.CSAT},
        policies=policies,
    )


# -- steps: fn(broker, *args) -> result ----------------------------------------------------------
def _person(name: str, country: str, email: str) -> Registration:
    return Registration(ClientKind.INDIVIDUAL, country, name, email, owner_id=REP.id)


def sign_ups(broker: Broker) -> dict[str, str]:
    """Four clients register (each welcome queued by the rules' policy); all four give their
    marketing consent; Ana's birth date is recorded; Ben's passport, expiring on 20 March, is
    approved."""
    ids = {
        "ana": broker.clients.register(PORTAL, _person("Ana Lima", "GB", "ana@example.com")),
        "ben": broker.clients.register(PORTAL, _person("Ben Sato", "JP", "ben@example.jp")),
        "cai": broker.clients.register(PORTAL, _person("Cai Wren", "GB", "cai@example.com")),
        "dan": broker.clients.register(PORTAL, _person("Dan Hale", "GB", "dan@example.com")),
    }
    for client_id in ids.values():
        broker.clients.give_consent(REP, client_id, Consent.MARKETING)
    broker.clients.update_profile(REP, ids["ana"], birth_date=date(1990, 3, 15))
    ben = ids["ben"]
    document_id = broker.kyc.submit(
        Actor.client(ben), ben, "passport", "files/passport", expires_on=date(2026, 3, 20)
    )
    broker.kyc.approve(OFFICER, document_id)
    return ids


def policy_worker(broker: Broker) -> None:
    """The policy worker's turn (inline, the policies ran already: nothing to do)."""
    broker.run_policies()


def relay(broker: Broker, failing: int = 0) -> dict[str, Any]:
    """The host's relay job; ``failing``: the gateway refuses that many hand-overs first (a
    retryable failure). The answer holds what the gateway was handed in this step."""
    notifier = broker.relay.notifier
    assert isinstance(notifier, MemoryNotifier)
    before = len(notifier.wire)
    notifier.fail_next(failing)
    report = broker.send_messages()
    handed: list[Envelope] = notifier.wire[before:]
    return {"report": report, "handed": handed}


def withdraw_consent(broker: Broker, client_id: str) -> list[str]:
    view = broker.clients.withdraw_consent(REP, client_id, Consent.MARKETING)
    return sorted(c.value for c, _ in view.consents)


def unsubscribe(broker: Broker, client_id: str) -> list[object]:
    """The client follows the link in the news it was sent: twice, then a forged link."""
    links = broker.unsubscribe_links
    token = links.token(f"news:once:{client_id}")
    answers: list[object] = [links.unsubscribe(token), links.unsubscribe(token)]
    body, _, mac = token.partition(".")
    try:
        links.unsubscribe(f"{body}.{mac[::-1]}")
    except FxCrmError as refused:  # a refusal is an answer: compared by type and message
        answers.append(refused)
    return answers


def complain(broker: Broker, client_id: str) -> dict[str, object]:
    """The client files a complaint in the portal; her rep calls her back and notes it."""
    opened = broker.complaints.open(
        Actor.client(client_id), client_id, "payments", "My withdrawal is three days late"
    )
    call = broker.service_records.log_call(
        REP, client_id, direction=CallDirection.OUTBOUND, outcome=CallOutcome.ANSWERED,
        duration=timedelta(minutes=4), note="Explained the withdrawal delay",
    )  # fmt: skip
    note = broker.service_records.add_note(REP, client_id, "Prefers e-mail; call after 17:00")
    return {"complaint": opened, "records": [call, note]}


def end_of_day(broker: Broker, then_relay: bool = False) -> dict[str, Any]:
    """The scheduler's daily job (scheduled messages, complaint deadlines), then perhaps the
    relay job in the same process."""
    done = broker.end_of_day()
    answer: dict[str, Any] = {
        "messages_queued": done["messages_queued"],
        "complaints_escalated": done["complaints_escalated"],
    }
    if then_relay:
        answer["relay"] = relay(broker)
    return answer


def answer_surveys(broker: Broker, ids: dict[str, str]) -> list[object]:
    """Ana answers 4, Dan 2, then Dan again (a survey is answered once); Cai never does."""
    answers: list[object] = []
    for who, score in (("ana", 4), ("dan", 2), ("dan", 5)):
        client_id = ids[who]
        try:
            answers.append(
                broker.surveys.answer(
                    Actor.client(client_id), f"msg:csat:once:{client_id}", score, "Quick answers"
                )
            )
        except FxCrmError as refused:  # a refusal is an answer: compared by type and message
            answers.append(refused)
    return answers


def acknowledge(broker: Broker, complaint_id: str) -> object:
    return broker.complaints.acknowledge(DESK, complaint_id)


def resolve(broker: Broker, complaint_id: str) -> object:
    return broker.complaints.resolve(
        DESK, complaint_id, ComplaintOutcome.UPHELD, "Paid today, with the fee refunded."
    )


def publish(broker: Broker) -> str:
    return broker.announcements.publish(
        ADMIN,
        audience=Audience(countries=frozenset({"GB"})),
        starts_at=broker.clock.now(),
        ends_at=datetime(2026, 3, 20, tzinfo=UTC),
        texts={
            "en": AnnouncementText("New symbol", "XAUCNH trades from Monday."),
            "zh_CN": AnnouncementText("新品种", "XAUCNH 周一起可交易。"),
        },
    )


def read_announcement(broker: Broker, ids: dict[str, str], announcement_id: str) -> list[object]:
    """Ana reads it (twice: one receipt); Ben, in Japan, is outside its audience."""
    answers: list[object] = []
    for who in ("ana", "ana", "ben"):
        client_id = ids[who]
        try:
            answers.append(
                broker.announcements.mark_read(Actor.client(client_id), client_id, announcement_id)
            )
        except FxCrmError as refused:  # a refusal is an answer: compared by type and message
            answers.append(refused)
    return answers


def export(broker: Broker, ids: dict[str, str]) -> list[object]:
    """Sales may not export; compliance exports two clients, masked, for a reason."""
    wanted = [ids["ana"], ids["ben"]]
    fields = ["id", "country", "name", "email"]
    answers: list[object] = []
    try:
        broker.exports.export(REP, wanted, fields, "campaign list")
    except FxCrmError as refused:  # a refusal is an answer: compared by type and message
        answers.append(refused)
    answers.append(broker.exports.export(DPO, wanted, fields, "regulator request"))
    return answers


# -- probes: fn(broker, *args) -> value -----------------------------------------------------------
def _life(event: object) -> str:
    if isinstance(event, MessageQueued):
        return f"queued {event.kind.value} not before {event.not_before.isoformat()}"
    if isinstance(event, MessageSent):
        return f"sent attempt {event.attempt} at {event.at.isoformat()} ({event.reference})"
    if isinstance(event, MessageFailed):
        retry = event.retry_at.isoformat() if event.retry_at else "never"
        return f"failed attempt {event.attempt} ({event.reason}), retry {retry}"
    if isinstance(event, MessageDeferred):
        return f"deferred ({event.reason}) until {event.until.isoformat()}"
    if isinstance(event, MessageCancelled):
        return f"cancelled ({event.reason})"
    return type(event).__name__


def outbox(broker: Broker) -> dict[str, Any]:
    """Every message of the outbox: its state and its life, from the log."""
    lives: dict[str, list[str]] = {}
    for row in broker.store.read_all(after_position=0, limit=100_000):
        if row.stream_id.startswith("outbox-"):
            key = row.stream_id.removeprefix("outbox-")
            lives.setdefault(key, []).append(_life(broker.codec.decode(row).event))
    found: dict[str, Any] = {}
    for key, life in sorted(lives.items()):
        state = broker.repository.load(OutboxMessage, key)
        assert state is not None
        assert state.queued is not None
        found[key] = {
            "status": state.status,
            "attempts": state.attempts,
            "next_at": state.next_at,
            "locale": state.queued.locale,
            "params": state.queued.params,
            "life": life,
        }
    return found


def due(broker: Broker) -> list[str]:
    """What the relay of this process would take now (its read model, caught up)."""
    return [m.key for m in broker.relay.due()]


def consents(broker: Broker, ids: dict[str, str]) -> dict[str, list[str]]:
    out = {}
    for name, client_id in ids.items():
        client = broker.repository.load(Client, client_id)
        assert client is not None
        out[name] = sorted(c.value for c in Consent if client.has_consent(c))
    return out


def complaint(broker: Broker, complaint_id: str) -> object:
    return broker.complaints.get(DESK, complaint_id)


def surveys(broker: Broker, ids: dict[str, str]) -> dict[str, object]:
    states: dict[str, object] = {}
    for name, client_id in ids.items():
        states[name] = broker.repository.load(Survey, f"msg:csat:once:{client_id}")
    score = broker.surveys.scores(DESK, SurveyKind.CSAT, SurveyPeriod.MONTH, date(2026, 3, 1))
    return {"surveys": states, "march": score, "percent": score.percent}


def announcement(broker: Broker, ids: dict[str, str], announcement_id: str) -> dict[str, object]:
    unread = {
        name: [a for a, _ in broker.announcements.unread(Actor.client(cid), cid)]
        for name, cid in ids.items()
    }
    receipts = {
        name: sorted(r.read) if (r := broker.repository.load(ReadReceipts, cid)) else []
        for name, cid in ids.items()
    }
    return {"unread": unread, "receipts": receipts, "is": announcement_id}


def records(broker: Broker, client_id: str) -> dict[str, object]:
    return {
        "notes": broker.service_records.notes(REP, client_id),
        "calls": broker.service_records.calls(REP, client_id),
    }


_AUDITED = frozenset(
    {"ClientsExported", "PiiExported", "UnsubscribeRecorded", "ComplaintEscalated", "SurveySent"}
)


def audit(broker: Broker) -> dict[str, object]:
    """The audit trail's records of exports, unsubscribes, escalations and surveys (the trail
    caught up with the log first: what a compliance officer reads), and whether the chain
    verifies against the log. The hashes are left out: the chain is keyed by a secret each
    database makes for itself, and the rows hold ciphertext under each database's own keys."""
    broker.audit.catch_up(broker.store, broker.codec)
    records = [
        (r.seq, r.position, r.at, r.actor, r.action, r.target, r.correlation_id)
        for r in broker.audit.log.records()
        if r.action in _AUDITED
    ]
    return {"records": records, "finding": broker.audit.verify(broker.store)}


# -- the scenario ------------------------------------------------------------------------------
def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


IDS = Ref("sign-ups")


def engagement_weeks(build_ref: str = f"{M}:build") -> Scenario:
    ana, cai, dan = (Ref("sign-ups", n) for n in ("ana", "cai", "dan"))
    complaint_id = Ref("ana complains", "complaint", "id")
    return Scenario(
        build=build_ref,
        steps=[
            Step("sign-ups", f"{M}:sign_ups", at=at(2, 12)),
            Step("cai withdraws consent", f"{M}:withdraw_consent", cai, at=at(2, 12, 2)),
            Step("policy worker", f"{M}:policy_worker", at=at(2, 12, 5)),
            Step("relay, the gateway failing once", f"{M}:relay", 1, at=at(2, 12, 10)),
            Step("relay after the backoff", f"{M}:relay", at=at(2, 13)),
            Step("relay: the news", f"{M}:relay", at=at(4, 12, 30)),  # 21:30 in Tokyo
            Step("relay: tokyo's morning", f"{M}:relay", at=at(4, 23, 30)),
            Step("dan unsubscribes", f"{M}:unsubscribe", dan, at=at(5, 10)),
            Step("policy worker again", f"{M}:policy_worker", at=at(5, 10, 5)),
            Step("ana complains", f"{M}:complain", ana, at=at(5, 11)),  # a Thursday
            Step("monday's end", f"{M}:end_of_day", True, at=at(9, 17, 30)),
            Step("csat answers", f"{M}:answer_surveys", IDS, at=at(10, 10)),
            Step("tuesday's end", f"{M}:end_of_day", True, at=at(10, 17, 30)),
            Step("the job again that night", f"{M}:end_of_day", at=at(10, 23)),
            Step("late acknowledgement", f"{M}:acknowledge", complaint_id, at=at(11, 9)),
            Step("announcement", f"{M}:publish", at=at(11, 18)),
            Step("reads", f"{M}:read_announcement", IDS, Ref("announcement"), at=at(12, 8, 30)),
            Step("resolution", f"{M}:resolve", complaint_id, at=at(12, 14)),
            Step("exports", f"{M}:export", IDS, at=at(13, 10)),
            Step("sunday's first hour", f"{M}:end_of_day", at=at(15, 0, 30)),
            Step("relay: sunday", f"{M}:relay", at=at(15, 10, 30)),
            Step("relay: monday", f"{M}:relay", at=at(16, 11)),
            Step("policy worker at the end", f"{M}:policy_worker", at=at(16, 11, 5)),
        ],
        probes=[
            f"{M}:outbox",
            f"{M}:due",
            Probe(f"{M}:consents", IDS),
            Probe(f"{M}:complaint", complaint_id),
            Probe(f"{M}:surveys", IDS),
            Probe(f"{M}:announcement", IDS, Ref("announcement")),
            Probe(f"{M}:records", ana),
            f"{M}:audit",
        ],
        name="engagement weeks",
    )


# -- the test -------------------------------------------------------------------------------------
def _handed(result: object) -> list[tuple[str, int]]:
    assert isinstance(result, dict)
    handed = result["handed"]
    assert isinstance(handed, list)
    return [(e["key"], e["attempt"]) for e in handed]


@pytest.fixture(scope="module")
def inline(tmp_path_factory: pytest.TempPathFactory) -> ParityReport:
    """The weeks with inline policies, in the three modes (the harness fails on a difference)."""
    return assert_parity(engagement_weeks(), tmp_path_factory.mktemp("inline"), timeout=120)


@pytest.mark.slow
def test_engagement_weeks_answer_alike_in_every_mode(inline: ParityReport) -> None:
    report = inline
    assert [(o.mode, o.passed) for o in report.outcomes] == [
        (Mode.ONE_BROKER, True),
        (Mode.FRESH_PROCESS_PER_STEP, True),
        (Mode.TWO_PROCESSES, True),
    ]
    # The answers themselves, from the mode that restarts after every step.
    seen: dict[str, Any] = dict(report.outcome(Mode.FRESH_PROCESS_PER_STEP).observed)

    def step(name: str) -> Any:
        (found,) = (v for k, v in seen.items() if k.endswith(f" '{name}': result"))
        return found

    ids = step("sign-ups")
    ana, ben, cai, dan = ids["ana"], ids["ben"], ids["cai"], ids["dan"]
    welcomes = sorted(f"welcome:once:{c}" for c in (ana, ben, cai, dan))

    # The gateway refused the first hand-over; the retry after the backoff went through.
    first = step("relay, the gateway failing once")
    assert (first["report"]["sent"], first["report"]["failed"]) == (3, 1)
    assert _handed(first) == [(k, 1) for k in welcomes[1:]]
    assert _handed(step("relay after the backoff")) == [(welcomes[0], 2)]
    # The news: Ana and Dan at once, Ben deferred to 08:00 in Tokyo, Cai's cancelled.
    news = step("relay: the news")
    assert sorted(_handed(news)) == sorted([(f"news:once:{ana}", 1), (f"news:once:{dan}", 1)])
    assert (news["report"]["deferred"], news["report"]["cancelled"]) == (1, 0)
    assert _handed(step("relay: tokyo's morning")) == [(f"news:once:{ben}", 1)]
    clicks = step("dan unsubscribes")
    assert clicks[:2] == [True, False]
    assert clicks[2]["raised"] == "UnsubscribeLinkError"
    # Monday: the CSAT for the GB clients, a survey in each send's commit; Ben's passport
    # reminder (it expires within 14 days) queued for 09:00 on his Tuesday in Tokyo.
    monday = step("monday's end")
    assert monday["messages_queued"] == [4]
    assert sorted(_handed(monday["relay"])) == sorted(
        (f"csat:once:{c}", 1) for c in (ana, cai, dan)
    )
    assert _handed(step("tuesday's end")["relay"]) == [(f"passport:2026:{ben}", 1)]
    answers = step("csat answers")
    assert [a["score"] for a in answers[:2]] == [4, 2]
    assert answers[2]["raised"] == "IllegalTransitionError"  # answered once
    # The acknowledgement deadline (the end of Monday: Friday was closed) escalated once.
    assert monday["complaints_escalated"] == []
    escalated = step("tuesday's end")["complaints_escalated"]
    assert [(e["stage"], e["due"]) for e in escalated] == [
        ("SlaStage.ACKNOWLEDGE", "2026-03-10T00:00:00+00:00")
    ]
    assert step("late acknowledgement")["acknowledged_at"] == "2026-03-11T09:00:00+00:00"
    # Run again (another process, in modes b and c) before anyone acknowledged: not again.
    assert step("the job again that night")["complaints_escalated"] == []
    reads = step("reads")
    assert reads[:2] == [True, False]
    assert reads[2]["raised"] == "IllegalTransitionError"  # Ben is outside the audience
    refused, done = step("exports")
    assert refused["raised"] == "AccessDeniedError"
    assert [row["id"] for row in done["rows"]] == [ana, ben]
    # Sunday: the birthday first; the holiday greeting waits for the cap; Cai and Dan are
    # not messaged (no consent, unsubscribed).
    sunday = step("relay: sunday")
    assert _handed(sunday) == [(f"birthday:2026:{ana}", 1)]
    assert (sunday["report"]["deferred"], sunday["report"]["cancelled"]) == (1, 2)
    assert _handed(step("relay: monday")) == [(f"mothering-sunday:2026:{ana}", 1)]

    final = seen["at the end: probe 'outbox'"]
    assert final[f"news:once:{cai}"]["life"][-1] == "cancelled (consent_withdrawn)"
    assert final[f"news:once:{ben}"]["life"][1].startswith("deferred (quiet_hours) until")
    assert final[f"news:once:{ben}"]["locale"] == "ja"
    assert final[f"mothering-sunday:2026:{dan}"]["life"][-1] == "cancelled (no_consent)"
    assert final[f"mothering-sunday:2026:{ana}"]["life"][1].startswith("deferred (frequency_cap)")
    assert final[welcomes[0]]["life"][1].startswith("failed attempt 1 (delivery_error)")
    assert seen["at the end: probe 'due'"] == []
    assert seen["at the end: probe 'consents'"] == {
        "ana": ["marketing"], "ben": ["marketing"], "cai": [], "dan": []
    }  # fmt: skip
    state = seen["at the end: probe 'complaint'"]
    assert state["status"] == "ComplaintStatus.RESOLVED"
    assert state["escalated"] == [["SlaStage.ACKNOWLEDGE", 0]]
    assert seen["at the end: probe 'surveys'"]["percent"] == "50.00"  # Ana 4, Dan 2
    receipts = seen["at the end: probe 'announcement'"]["receipts"]
    assert [name for name, read in receipts.items() if read] == ["ana"]
    records = seen["at the end: probe 'records'"]
    assert [n["text"] for n in records["notes"]] == ["Prefers e-mail; call after 17:00"]
    assert [c["note"] for c in records["calls"]] == ["Explained the withdrawal delay"]
    # The trail verifies; the export and each client whose personal data left in full
    # (compliance sees it unmasked) are in it, as are the unsubscribe, the escalation (once)
    # and the three surveys.
    trail = seen["at the end: probe 'audit'"]
    assert trail["finding"] is None
    actions = [(r[3], r[4]) for r in trail["records"]]
    assert actions.count(("staff:dpo", "ClientsExported")) == 1
    assert actions.count(("staff:dpo", "PiiExported")) == 2
    assert actions.count((f"client:{dan}", "UnsubscribeRecorded")) == 1
    assert actions.count(("system:complaints", "ComplaintEscalated")) == 1
    assert actions.count(("system:outbox-relay", "SurveySent")) == 3


_BEFORE_THE_WORKER = ("after step 1 'sign-ups'", "after step 2 'cai withdraws consent'")


def _comparable(observed: Mapping[str, Any]) -> dict[str, Any]:
    """What a broker answers, without what differs by design when the policies run later: the
    reads before the worker's first turn, the log's positions (its events land in another
    order) and the policies' own trackers."""
    out: dict[str, Any] = {}
    for key, value in observed.items():
        if key.startswith(("log position ", "aggregate policy-", *_BEFORE_THE_WORKER)):
            continue
        if key.endswith("probe 'audit'"):
            value = {**value, "records": [r[2:] for r in value["records"]]}  # no seq, position
        out[key] = value
    return out


@pytest.mark.slow
def test_a_late_policy_worker_in_another_process_answers_as_inline_policies(
    inline: ParityReport, tmp_path: Path
) -> None:
    # The policies run only on the worker's turns, which fall to either live process in turn
    # (mode c) after the events they react to: Cai's consent is withdrawn before the worker
    # queues the news it cancels.
    report = assert_parity(
        engagement_weeks(f"{M}:build_worker"), tmp_path, modes=[Mode.TWO_PROCESSES], timeout=120
    )
    late = report.outcome(Mode.TWO_PROCESSES).observed
    assert late["after step 1 'sign-ups': probe 'outbox'"] == {}  # nothing queued yet
    assert late["after step 3 'policy worker': probe 'due'"] != []
    expected = _comparable(inline.outcome(Mode.ONE_BROKER).observed)
    found = _comparable(late)
    assert sorted(found) == sorted(expected)  # (aggregates come in the order of the log)
    assert [key for key in expected if found[key] != expected[key]] == []
    assert len(found) > 200  # every step's answer and every probe after the worker's first turn
