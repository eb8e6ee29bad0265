"""Engagement rules as data: triggers, periods, audiences, and queuing once per outbox key."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.clients import Client, ClientKind, ClientRegistered, Consent, Stage, StageChanged
from fxcrm_core.clients import register_events as register_client_events
from fxcrm_core.clients.model import ConsentGiven, ProfileUpdated
from fxcrm_core.engagement import Channel, MessageKind, MessageQueued, Outbox, OutboxMessage
from fxcrm_core.engagement import register_events as register_engagement_events
from fxcrm_core.engagement.rules import (
    ENGAGEMENT_UPSTREAM,
    Audience,
    ClientAudience,
    EngagementRule,
    EngagementRules,
    LeapDay,
    OnEvent,
    Profile,
    RulePeriod,
    Scheduled,
    ScheduleKind,
    StageIs,
    TierUp,
    observed_birthday,
)
from fxcrm_core.events import (
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventRegistry,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel import FixedClock, Money
from fxcrm_core.kernel.errors import FxCrmError
from fxcrm_core.loyalty import ChurnWarningRaised, TierChanged
from fxcrm_core.loyalty import register_events as register_loyalty_events
from fxcrm_core.payments import register_events as register_payment_events
from fxcrm_core.payments.withdrawals import Withdrawal, WithdrawalPaid, WithdrawalRequested
from fxcrm_core.stores import MemoryEventStore

T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
ORDER = ("bronze", "silver", "gold")
META = EventMetadata("system:test")


class World:
    """A memory log with clients in it, an outbox and the rules' evaluator."""

    def __init__(self, rules: list[EngagementRule], **audience: Any) -> None:
        registry = EventRegistry()
        register_client_events(registry)
        register_engagement_events(registry)
        register_loyalty_events(registry)
        register_payment_events(registry)
        self.clock = FixedClock(T0)
        self.store = MemoryEventStore(self.clock)
        self.codec = EventCodec(registry)
        self.repository = Repository(self.store, self.codec)
        self.audience = ClientAudience(self.repository, **audience)
        self.rules = EngagementRules(Outbox(), rules, self.audience, clock=self.clock)

    def record(self, client_id: str, *events: DomainEvent) -> list[RecordedEvent[DomainEvent]]:
        head = self.head()
        with UnitOfWork(self.repository, META) as uow:
            client = uow.load(Client, client_id) or Client.blank(client_id)
            uow.record(client, *events)
            uow.commit()
        return [self.codec.decode(s) for s in self.store.read_all(after_position=head)]

    def register(
        self,
        client_id: str,
        *,
        country: str = "DE",
        born: date | None = None,
        marketing: bool = True,
    ) -> RecordedEvent[DomainEvent]:
        events: list[DomainEvent] = [
            ClientRegistered(
                client_id,
                ClientKind.INDIVIDUAL,
                country,
                Stage.REGISTERED,
                None,
                "Ann Example",
                f"{client_id}@example.com",
            )
        ]
        if born is not None:
            events.append(ProfileUpdated(client_id, birth_date=born.isoformat()))
        if marketing:
            events.append(ConsentGiven(Consent.MARKETING, self.clock.now()))
        return self.record(client_id, *events)[0]

    def head(self) -> int:
        log = self.store.read_all(after_position=0, limit=1_000_000)
        return log[-1].position if log else 0

    def loose(self, stream_id: str, event: DomainEvent) -> RecordedEvent[DomainEvent]:
        """An upstream event of another context, as the log would hand it over (not stored)."""
        return RecordedEvent(stream_id, 1, self.head(), self.clock.now(), event, META)

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> int:
        with UnitOfWork(self.repository, META) as uow:
            n = self.rules.on_event(recorded, uow)
            if uow.staged:
                uow.commit()
        return n

    def day(self, day: date, clients: list[str]) -> int:
        with UnitOfWork(self.repository, META) as uow:
            n = self.rules.run_day(day, uow, clients)
            if uow.staged:
                uow.commit()
        return n

    def queued(self) -> list[MessageQueued]:
        return [
            e
            for s in self.store.read_all(after_position=0, limit=1_000_000)
            if isinstance(e := self.codec.decode(s).event, MessageQueued)
        ]

    def keys(self) -> set[str]:
        return {q.key for q in self.queued()}


def rule(rule_id: str, trigger: OnEvent | Scheduled, **kw: Any) -> EngagementRule:
    kw.setdefault("template", f"{rule_id}.v1")
    kw.setdefault("channel", Channel.EMAIL)
    return EngagementRule(rule_id=rule_id, trigger=trigger, **kw)


def tier_changed(client_id: str, old: str | None, new: str, at: datetime) -> TierChanged:
    return TierChanged(client_id, 1, old, new, at, at, "upgrade_at_once", "m", "x", (), ())


# -- once per key ---------------------------------------------------------------------------------
def test_a_rule_evaluated_many_times_queues_one_message_per_key() -> None:
    w = World([rule("welcome", OnEvent.registered())])
    registered = w.register("c1")
    assert w.handle(registered) == 1
    for _ in range(5):  # a replay, a retry, a second process
        assert w.handle(registered) == 0
    # Two evaluations in one unit of work: the staged key is seen.
    with UnitOfWork(w.repository, META) as uow:
        assert w.rules.on_event(registered, uow) == 0
    assert [q.key for q in w.queued()] == ["welcome:once:c1"]
    message = w.repository.get(OutboxMessage, "welcome:once:c1")
    assert message.queued is not None
    assert message.queued.template == "welcome.v1"


def test_two_processes_deciding_at_once_commit_one_message() -> None:
    w = World([rule("welcome", OnEvent.registered())])
    registered = w.register("c1")
    first, second = UnitOfWork(w.repository, META), UnitOfWork(w.repository, META)
    assert w.rules.on_event(registered, first) == 1
    assert w.rules.on_event(registered, second) == 1
    first.commit()
    with pytest.raises(FxCrmError):
        second.commit()
    assert w.keys() == {"welcome:once:c1"}


def test_a_monthly_rule_sends_once_per_month_by_the_events_own_instant() -> None:
    w = World([rule("tier-up", OnEvent.tier_up(ORDER), period=RulePeriod.MONTH)])
    w.register("c1")
    march = tier_changed("c1", "bronze", "silver", datetime(2026, 3, 31, 23, tzinfo=UTC))
    also_march = tier_changed("c1", "silver", "gold", datetime(2026, 3, 31, 23, 30, tzinfo=UTC))
    april = tier_changed("c1", "bronze", "gold", datetime(2026, 4, 1, 1, tzinfo=UTC))
    w.clock.set(datetime(2026, 9, 1, tzinfo=UTC))  # a late worker: the clock is not read
    for event in (march, also_march, april, march):
        w.handle(w.loose("clienttier-main.c1", event))
    assert w.keys() == {"tier-up:2026-03:c1", "tier-up:2026-04:c1"}
    first = next(q for q in w.queued() if q.period == "2026-03")
    assert first.params == (("tier", "silver"),)
    assert first.queued_at == march.effective_at


def test_conditions_select_the_events_of_their_kind() -> None:
    w = World(
        [
            rule("funded", OnEvent.funded()),
            rule("dormant", OnEvent.dormant()),
            rule("tier-up", OnEvent.tier_up(ORDER)),
            rule("churn", OnEvent.churn_warning()),
        ]
    )
    w.register("c1")
    for recorded in w.record("c1", StageChanged(Stage.REGISTERED, Stage.VERIFIED)):
        w.handle(recorded)
    assert w.keys() == set()
    for recorded in w.record("c1", StageChanged(Stage.VERIFIED, Stage.FUNDED)):
        w.handle(recorded)
    down = tier_changed("c1", "gold", "silver", T0)
    unknown = tier_changed("c1", "silver", "platinum", T0)
    w.handle(w.loose("clienttier-main.c1", down))
    w.handle(w.loose("clienttier-main.c1", unknown))
    assert w.keys() == {"funded:once:c1"}
    w.handle(w.loose("churn-c1", ChurnWarningRaised("c1", T0, "2026-03", "baseline", (), ())))
    for recorded in w.record("c1", StageChanged(Stage.FUNDED, Stage.DORMANT)):
        w.handle(recorded)
    assert w.keys() == {"funded:once:c1", "churn:once:c1", "dormant:once:c1"}


def test_a_paid_withdrawal_finds_its_client_on_the_withdrawals_stream() -> None:
    w = World(
        [rule("paid", OnEvent.withdrawal_paid(), kind=MessageKind.SERVICE, period=RulePeriod.DAY)]
    )
    w.register("c1")
    requested = WithdrawalRequested(
        "w1", "c1", Money.of("100", "USD"), Money.of("0", "USD"), "i1", 1
    )
    with UnitOfWork(w.repository, META) as uow:
        uow.record(Withdrawal.blank("w1"), requested)
        uow.commit()
    head = w.head()
    with UnitOfWork(w.repository, META) as uow:
        uow.record(uow.get(Withdrawal, "w1"), WithdrawalPaid("psp-1"))
        uow.commit()
    (paid,) = [w.codec.decode(s) for s in w.store.read_all(after_position=head)]
    assert w.handle(paid) == 1
    assert w.handle(paid) == 0
    assert w.keys() == {f"paid:{T0:%Y-%m-%d}:c1"}


def test_tier_up_counts_a_first_tier_unless_told_not_to() -> None:
    first = tier_changed("c1", None, "bronze", T0)
    assert TierUp(ORDER).matches(first)
    assert not TierUp(ORDER, from_none=False).matches(first)
    assert TierUp(ORDER).matches(tier_changed("c1", "bronze", "gold", T0))
    assert not TierUp(ORDER).matches(tier_changed("c1", "gold", "gold", T0))


# -- delays ---------------------------------------------------------------------------------------
def test_a_delayed_trigger_is_due_after_the_events_instant() -> None:
    w = World(
        [
            rule("nudge", OnEvent.registered(after=timedelta(days=3))),
            rule("tips", OnEvent.registered(trading_days=2)),
        ]
    )
    friday = datetime(2026, 3, 6, 12, tzinfo=UTC)
    w.clock.set(friday)
    registered = w.register("c1")
    w.clock.set(datetime(2026, 3, 20, tzinfo=UTC))  # handled late: decided the same
    w.handle(registered)
    by_rule = {q.rule_id: q for q in w.queued()}
    assert by_rule["nudge"].not_before == friday + timedelta(days=3)
    assert by_rule["nudge"].queued_at == friday
    # Friday's trading day, then Monday and Tuesday: due at Tuesday's session start (Monday
    # 17:00 New York, 21:00 UTC in March's daylight time).
    assert by_rule["tips"].not_before == datetime(2026, 3, 9, 21, tzinfo=UTC)


# -- birthdays ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("year", "leap_day", "expected"),
    [
        (2028, LeapDay.FEB_28, date(2028, 2, 29)),
        (2028, LeapDay.MAR_1, date(2028, 2, 29)),
        (2027, LeapDay.FEB_28, date(2027, 2, 28)),
        (2027, LeapDay.MAR_1, date(2027, 3, 1)),
        (2100, LeapDay.FEB_28, date(2100, 2, 28)),  # not a leap year
    ],
)
def test_observed_birthday_of_29_february(year: int, leap_day: LeapDay, expected: date) -> None:
    assert observed_birthday(date(2000, 2, 29), year, leap_day) == expected


@pytest.mark.parametrize("leap_day", list(LeapDay))
def test_29_february_birthdays_are_sent_once_a_year_on_the_configured_day(
    leap_day: LeapDay,
) -> None:
    w = World([rule("bday", Scheduled.birthday(leap_day), period=RulePeriod.YEAR)])
    w.register("c1", born=date(2000, 2, 29))
    sent: list[date] = []
    day = date(2027, 2, 1)
    while day < date(2029, 4, 1):
        for _ in range(2):  # the daily run may run twice
            if w.day(day, ["c1"]):
                sent.append(day)
        day += timedelta(days=1)
    common = date(2027, 2, 28) if leap_day is LeapDay.FEB_28 else date(2027, 3, 1)
    assert sent == [common, date(2028, 2, 29), common.replace(year=2029)]
    assert w.keys() == {"bday:2027:c1", "bday:2028:c1", "bday:2029:c1"}


def test_a_birthday_in_a_far_time_zone_follows_the_clients_local_date() -> None:
    w = World(
        [rule("bday", Scheduled.birthday(), period=RulePeriod.YEAR, send_at=time(9))],
        zones={"KI": "Pacific/Kiritimati", "US": "Pacific/Honolulu"},
    )
    w.register("ki", country="KI", born=date(1990, 3, 5))
    w.register("hi", country="US", born=date(1990, 3, 5))
    # 12:00 UTC on 4 March: already 5 March in Kiritimati (+14), still 4 March in Honolulu.
    with UnitOfWork(w.repository, META) as uow:
        assert w.rules.run_due(datetime(2026, 3, 4, 12, tzinfo=UTC), uow, ["ki", "hi"]) == 1
        uow.commit()
    (message,) = w.queued()
    assert message.client_id == "ki"
    # Due at 09:00 on the local 5 March: 19:00 UTC on 4 March.
    assert message.not_before == datetime(2026, 3, 4, 19, tzinfo=UTC)
    with UnitOfWork(w.repository, META) as uow:
        assert w.rules.run_due(datetime(2026, 3, 5, 12, tzinfo=UTC), uow, ["ki", "hi"]) == 1
        uow.commit()
    assert w.keys() == {"bday:2026:ki", "bday:2026:hi"}
    hi = next(q for q in w.queued() if q.client_id == "hi")
    assert hi.not_before == datetime(2026, 3, 5, 19, tzinfo=UTC)  # 09:00 at -10


def test_an_event_near_midnight_takes_the_clients_local_day_for_its_period() -> None:
    w = World(
        [rule("churn", OnEvent.churn_warning(), period=RulePeriod.DAY)],
        zones={"KI": "Pacific/Kiritimati"},
    )
    w.register("ki", country="KI")
    at = datetime(2026, 3, 4, 12, tzinfo=UTC)
    w.handle(w.loose("churn-ki", ChurnWarningRaised("ki", at, "p", "m", (), ())))
    assert w.keys() == {"churn:2026-03-05:ki"}


# -- scheduled: documents and days after ----------------------------------------------------------
def test_a_document_expiry_reminder_is_a_service_message_sent_once_per_expiry() -> None:
    expiry = date(2026, 4, 10)
    docs = {"c1": [("d1", "passport", expiry)]}
    w = World(
        [
            rule(
                "kyc-expiring",
                Scheduled.document_expiring(30),
                kind=MessageKind.SERVICE,
                period=RulePeriod.DAY,
            )
        ],
        documents_of=lambda c: docs.get(c, []),
    )
    w.register("c1", marketing=False)
    assert w.day(date(2026, 3, 10), ["c1"]) == 0  # 31 days before
    assert w.day(date(2026, 3, 12), ["c1"]) == 1  # a missed first day catches up
    assert w.day(date(2026, 3, 13), ["c1"]) == 0
    (message,) = w.queued()
    assert message.key == "kyc-expiring:2026-04-10:c1"
    assert message.kind is MessageKind.SERVICE
    assert ("expires_on", "2026-04-10") in message.params
    assert w.day(expiry, ["c1"]) == 0  # expired: no longer "expiring"
    with pytest.raises(FxCrmError):
        rule("bad", Scheduled.document_expiring(30), kind=MessageKind.MARKETING)


def test_days_after_a_milestone() -> None:
    w = World([rule("day7", Scheduled.days_after("ClientRegistered", 7))])
    w.register("c1")  # on T0: 2 March
    sent = [d for d in (date(2026, 3, n) for n in range(1, 20)) if w.day(d, ["c1", "nobody"])]
    assert sent == [date(2026, 3, 9)]
    funded = World([rule("f3", Scheduled.days_after("stage:funded", 3))])
    funded.register("c1")
    assert funded.day(date(2026, 3, 5), ["c1"]) == 0  # never funded
    funded.record("c1", StageChanged(Stage.VERIFIED, Stage.FUNDED))
    assert funded.day(date(2026, 3, 5), ["c1"]) == 1


# -- audiences ------------------------------------------------------------------------------------
def test_audience_filters_on_country_language_segment_tier_and_consent() -> None:
    segments = {"c-de": "vip", "c-fr": "vip", "c-es": "new"}
    tiers = {"c-de": "gold", "c-fr": "silver", "c-es": "gold"}
    w = World(
        [
            rule("de", OnEvent.registered(), audience=Audience(countries={"DE"})),
            rule("french", OnEvent.registered(), audience=Audience(languages=["fr"])),
            rule("vip", OnEvent.registered(), audience=Audience(segments={"vip"})),
            rule("gold", OnEvent.registered(), audience=Audience(tiers=("gold",))),
            rule("consented", OnEvent.registered(), audience=Audience(consent=Consent.MARKETING)),
            rule("all", OnEvent.registered()),
        ],
        languages={"DE": "de", "FR": "fr"},
        segment_of=segments.get,
        tier_of=tiers.get,
    )
    for client_id, country, marketing in (
        ("c-de", "DE", True),
        ("c-fr", "FR", False),
        ("c-es", "ES", True),
    ):
        w.handle(w.register(client_id, country=country, marketing=marketing))
    assert w.keys() == {
        "de:once:c-de",
        "french:once:c-fr",
        "vip:once:c-de",
        "vip:once:c-fr",
        "gold:once:c-de",
        "gold:once:c-es",
        "consented:once:c-de",
        "consented:once:c-es",
        "all:once:c-de",
        "all:once:c-fr",
        "all:once:c-es",
    }
    locales = {q.client_id: q.locale for q in w.queued()}
    assert locales == {"c-de": "de", "c-fr": "fr", "c-es": "en"}


def test_the_audience_is_read_as_the_log_stood_at_the_event() -> None:
    w = World([rule("promo", OnEvent.registered(), audience=Audience(consent=Consent.MARKETING))])
    registered = w.register("c1", marketing=False)
    w.clock.advance(minutes=5)
    w.record("c1", ConsentGiven(Consent.MARKETING, w.clock.now()))  # given after it
    assert w.handle(registered) == 0  # a late worker decides as an inline one would have
    assert w.keys() == set()


def test_an_unknown_client_and_an_unrelated_event_queue_nothing() -> None:
    w = World([rule("welcome", OnEvent.registered()), rule("tier", OnEvent.tier_up(ORDER))])
    ghost = tier_changed("ghost", "bronze", "gold", T0)
    assert w.handle(w.loose("clienttier-main.ghost", ghost)) == 0
    assert w.handle(w.loose("x-1", ConsentGiven(Consent.MARKETING, T0))) == 0
    assert w.keys() == set()


def test_a_custom_audience_source_plugs_in() -> None:
    class Fixed:
        def profile(
            self, client_id: str, *, position: int | None = None, recorded_at: Any = None
        ) -> Profile | None:
            return Profile(client_id=client_id, country="JP", time_zone="Asia/Tokyo")

    w = World([])
    rules = EngagementRules(
        Outbox(),
        [
            rule(
                "jp",
                OnEvent.churn_warning(),
                audience=Audience(countries={"JP"}),
                period=RulePeriod.DAY,
            )
        ],
        Fixed(),
        clock=w.clock,
    )
    event = ChurnWarningRaised("c9", datetime(2026, 3, 4, 20, tzinfo=UTC), "p", "m", (), ())
    with UnitOfWork(w.repository, META) as uow:
        assert rules.on_event(w.loose("churn-c9", event), uow) == 1
        uow.commit()
    assert w.keys() == {"jp:2026-03-05:c9"}  # 05:00 on 5 March in Tokyo


def test_upstream_events_of_the_policy_row() -> None:
    names = {t.__name__ for t in ENGAGEMENT_UPSTREAM}
    w = World(
        [
            rule("a", OnEvent.registered()),
            rule("b", OnEvent.funded()),
            rule("c", OnEvent.tier_up(ORDER)),
            rule("d", OnEvent.churn_warning()),
            rule("e", OnEvent.withdrawal_paid()),
            rule("f", Scheduled.birthday()),
        ]
    )
    assert w.rules.event_types == names


# -- a trivial model ------------------------------------------------------------------------------
CLIENTS = ("c1", "c2", "c3")
COUNTRY = {"c1": "DE", "c2": "FR", "c3": "DE"}
STEP = st.tuples(
    st.sampled_from(("tier", "churn", "funded")),
    st.sampled_from(CLIENTS),
    st.sampled_from((None, *ORDER)),
    st.sampled_from(ORDER),
    st.integers(min_value=0, max_value=24 * 120),  # hours after T0
    st.booleans(),  # handled twice
)


@settings(max_examples=40, deadline=None)
@given(st.lists(STEP, max_size=25))
def test_the_queued_keys_equal_a_trivial_models(steps: list[tuple[Any, ...]]) -> None:
    w = World(
        [
            rule("up", OnEvent.tier_up(ORDER), period=RulePeriod.MONTH),
            rule(
                "fade",
                OnEvent.churn_warning(),
                period=RulePeriod.DAY,
                audience=Audience(countries={"DE"}),
            ),
            rule("funded", OnEvent.funded(), period=RulePeriod.YEAR),
        ]
    )
    for client_id in CLIENTS:
        w.register(client_id, country=COUNTRY[client_id])
    expected: set[str] = set()
    for kind, client_id, old, new, hours, twice in steps:
        at = T0 + timedelta(hours=hours)
        if kind == "tier":
            recorded = [
                w.loose("clienttier-main." + client_id, tier_changed(client_id, old, new, at))
            ]
            if new in ORDER and (old is None or ORDER.index(new) > ORDER.index(old)):
                expected.add(f"up:{at:%Y-%m}:{client_id}")
        elif kind == "churn":
            recorded = [
                w.loose("churn-" + client_id, ChurnWarningRaised(client_id, at, "p", "m", (), ()))
            ]
            if COUNTRY[client_id] == "DE":
                expected.add(f"fade:{at:%Y-%m-%d}:{client_id}")
        else:
            w.clock.set(at)
            recorded = w.record(client_id, StageChanged(Stage.VERIFIED, Stage.FUNDED))
            expected.add(f"funded:{at:%Y}:{client_id}")
        for r in recorded * (2 if twice else 1):
            w.handle(r)
    assert w.keys() == expected


# -- hostile rule data ----------------------------------------------------------------------------
HOSTILE: list[Any] = [
    "a\x00b",
    "a\u202eb",
    "x" * 10_000,
    "",
    "  ",
    "a:b",
    10**100,
    -(10**100),
    1.5,
    None,
    b"bytes",
    ["list"],
    {"a": 1},
    object(),
    True,
    timedelta(days=10**6),
    timedelta(days=-1),
    Channel.EMAIL,
    frozenset({1}),
    ("a", "b", "c"),
    [("n", "\x1b[31m")],
]


def _attempts(value: Any) -> list[Any]:
    good = OnEvent.registered()
    return [
        lambda: rule(value, good),
        lambda: rule("r", value),
        lambda: rule("r", good, template=value),
        lambda: rule("r", good, channel=value),
        lambda: rule("r", good, kind=value),
        lambda: rule("r", good, priority=value),
        lambda: rule("r", good, period=value),
        lambda: rule("r", good, params=value),
        lambda: rule("r", good, send_at=value),
        lambda: rule("r", good, audience=value),
        lambda: Audience(countries=value),
        lambda: Audience(tiers=[value]),
        lambda: Audience(consent=value),
        lambda: OnEvent(value),
        lambda: OnEvent([value]),
        lambda: OnEvent(("ClientRegistered",), condition=value),
        lambda: OnEvent.registered(after=value),
        lambda: OnEvent.registered(trading_days=value),
        lambda: StageIs(value),
        lambda: TierUp(value),
        lambda: TierUp([value]),
        lambda: Scheduled(value),
        lambda: Scheduled(ScheduleKind.DOCUMENT_EXPIRING, value),
        lambda: Scheduled(ScheduleKind.DAYS_AFTER, 3, value),
        lambda: Scheduled(ScheduleKind.BIRTHDAY, leap_day=value),
    ]


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: type(v).__name__)
def test_hostile_rule_data_raises_only_fxcrm_errors(value: Any) -> None:
    for attempt in _attempts(value):
        with contextlib.suppress(FxCrmError):
            attempt()


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.integers(),
        st.floats(allow_nan=True),
        st.none(),
        st.binary(max_size=10),
        st.lists(st.text(max_size=5), max_size=4),
        st.timedeltas(),
    ),
)
def test_random_rule_data_raises_only_fxcrm_errors(value: Any) -> None:
    for attempt in _attempts(value):
        with contextlib.suppress(FxCrmError):
            attempt()


def test_rule_sets_are_checked() -> None:
    w = World([])
    one = rule("dup", OnEvent.registered())
    with pytest.raises(FxCrmError):
        EngagementRules(Outbox(), [one, one], w.audience, clock=w.clock)
    with pytest.raises(FxCrmError):
        EngagementRules(Outbox(), ["not a rule"], w.audience, clock=w.clock)  # type: ignore[list-item]
    with pytest.raises(FxCrmError):
        OnEvent.registered(after=timedelta(days=1), trading_days=1)
    with pytest.raises(FxCrmError):
        Scheduled(ScheduleKind.BIRTHDAY, event_type="ClientRegistered")
    with pytest.raises(FxCrmError):
        rule("r", OnEvent.registered(), send_at=time(9, tzinfo=UTC))
    with pytest.raises(FxCrmError):
        w.rules.run_day(datetime(2026, 1, 1, tzinfo=UTC), UnitOfWork(w.repository, META), [])
    valid = rule(
        "r", OnEvent([ClientRegistered]), priority=100, params=[("a", "b")], period=RulePeriod.YEAR
    )
    assert valid.trigger == OnEvent(("ClientRegistered",))
    assert valid.params == (("a", "b"),)
