"""Holiday triggers: a message on a named holiday of the client's country, from host data."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.clients import ClientKind, ClientRegistered, Consent, Stage
from fxcrm_core.clients import register_events as register_client_events
from fxcrm_core.clients.model import Client, ConsentGiven
from fxcrm_core.engagement import Channel, MessageQueued, Outbox
from fxcrm_core.engagement import register_events as register_engagement_events
from fxcrm_core.engagement.rules import (
    CATCH_UP_DAYS,
    Audience,
    ClientAudience,
    EngagementRule,
    EngagementRules,
    HolidayData,
    RulePeriod,
    Scheduled,
    ScheduleKind,
)
from fxcrm_core.events import (
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import ArgumentTypeError, FxCrmError, ValidationError
from fxcrm_core.stores import MemoryEventStore, SqliteEventStore

T0 = datetime(2026, 12, 20, 10, tzinfo=UTC)
META = EventMetadata("system:test")
ZONES = {"DE": "Europe/Berlin", "JP": "Asia/Tokyo", "KI": "Pacific/Kiritimati"}
HOLIDAYS: dict[str, dict[str, list[date]]] = {
    "DE": {
        "new-year": [date(2027, 1, 1), date(2028, 1, 1)],
        "german-unity-day": [date(2027, 10, 3)],
    },
    "JP": {
        "new-year": [date(2027, 1, 1), date(2028, 1, 1)],
        "coming-of-age-day": [date(2027, 1, 11)],
    },
    "KI": {"new-year": [date(2027, 1, 1)]},
    "TR": {"eid-al-fitr": [date(2027, 3, 10), date(2033, 1, 2), date(2033, 12, 23)]},
}


def _registry() -> EventRegistry:
    registry = EventRegistry()
    register_client_events(registry)
    register_engagement_events(registry)
    return registry


class World:
    def __init__(
        self,
        rules: list[EngagementRule],
        store: EventStore | None = None,
        holidays: Any = None,
    ) -> None:
        self.clock = FixedClock(T0)
        self.store = store if store is not None else MemoryEventStore(self.clock)
        self.codec = EventCodec(_registry())
        self.repository = Repository(self.store, self.codec)
        self.audience = ClientAudience(self.repository, zones=ZONES)
        self.rules = EngagementRules(
            Outbox(),
            rules,
            self.audience,
            clock=self.clock,
            holidays=HOLIDAYS if holidays is None else holidays,
        )

    def register(self, client_id: str, country: str) -> None:
        events: list[DomainEvent] = [
            ClientRegistered(
                client_id,
                ClientKind.INDIVIDUAL,
                country,
                Stage.REGISTERED,
                None,
                "Ann Example",
                f"{client_id}@example.com",
            ),
            ConsentGiven(Consent.MARKETING, self.clock.now()),
        ]
        with UnitOfWork(self.repository, META) as uow:
            uow.record(Client.blank(client_id), *events)
            uow.commit()

    def day(self, day: date, clients: list[str]) -> int:
        with UnitOfWork(self.repository, META) as uow:
            n = self.rules.run_day(day, uow, clients)
            if uow.staged:
                uow.commit()
        return n

    def due(self, now: datetime, clients: list[str]) -> int:
        with UnitOfWork(self.repository, META) as uow:
            n = self.rules.run_due(now, uow, clients)
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


def rule(rule_id: str, trigger: Scheduled, **kw: Any) -> EngagementRule:
    kw.setdefault("template", f"{rule_id}.v1")
    kw.setdefault("channel", Channel.EMAIL)
    kw.setdefault("period", RulePeriod.YEAR)
    return EngagementRule(rule_id=rule_id, trigger=trigger, **kw)


NEW_YEAR = rule("new-year", Scheduled.holiday("new-year"))


def test_clients_in_de_and_jp_get_their_own_holidays() -> None:
    w = World([NEW_YEAR, rule("unity", Scheduled.holiday("german-unity-day"))])
    w.register("de1", "DE")
    w.register("jp1", "JP")
    w.register("gb1", "GB")  # no holiday data for GB: nothing
    assert w.day(date(2027, 1, 1), ["de1", "jp1", "gb1"]) == 2
    assert w.day(date(2027, 10, 3), ["de1", "jp1", "gb1"]) == 1
    assert w.keys() == {"new-year:2027:de1", "new-year:2027:jp1", "unity:2027:de1"}
    jp = next(q for q in w.queued() if q.client_id == "jp1")
    assert jp.params == (("holiday", "new-year"), ("holiday_date", "2027-01-01"))
    # Due at the rule's send time (09:00) on the holiday in the client's own zone.
    assert jp.not_before == datetime(2027, 1, 1, 0, tzinfo=UTC)
    de = next(q for q in w.queued() if q.key == "new-year:2027:de1")
    assert de.not_before == datetime(2027, 1, 1, 8, tzinfo=UTC)


def test_a_far_time_zone_gets_its_holiday_by_its_own_local_date() -> None:
    w = World([NEW_YEAR])
    for client_id, country in (("ki1", "KI"), ("jp1", "JP"), ("de1", "DE")):
        w.register(client_id, country)
    clients = ["ki1", "jp1", "de1"]
    # 10:30 UTC on 31 December: already 1 January in Kiritimati (UTC+14), not in Tokyo.
    assert w.due(datetime(2026, 12, 31, 10, 30, tzinfo=UTC), clients) == 1
    assert w.keys() == {"new-year:2027:ki1"}
    # 15:30 UTC: 00:30 on 1 January in Tokyo, still 31 December in Berlin.
    assert w.due(datetime(2026, 12, 31, 15, 30, tzinfo=UTC), clients) == 1
    assert w.keys() == {"new-year:2027:ki1", "new-year:2027:jp1"}
    assert w.due(datetime(2026, 12, 31, 23, 30, tzinfo=UTC), clients) == 1
    assert w.due(datetime(2027, 1, 1, 12, tzinfo=UTC), clients) == 0


def test_a_skipped_day_is_caught_up_for_catch_up_days_only() -> None:
    w = World([NEW_YEAR])
    w.register("de1", "DE")
    w.register("jp1", "JP")
    assert w.day(date(2026, 12, 31), ["de1", "jp1"]) == 0
    assert w.day(date(2027, 1, 1) + timedelta(days=CATCH_UP_DAYS), ["de1"]) == 1
    assert w.day(date(2027, 1, 1) + timedelta(days=CATCH_UP_DAYS + 1), ["jp1"]) == 0
    assert w.keys() == {"new-year:2027:de1"}
    late = w.queued()[0]
    assert late.period == "2027"  # taken from the holiday's date, not the run's
    assert late.not_before == datetime(2027, 1, 1, 8, tzinfo=UTC)


def test_a_yearly_rule_sends_once_per_year_however_many_runs_see_it() -> None:
    w = World([NEW_YEAR])
    w.register("de1", "DE")
    sent = 0
    for offset in range(-5, 10):
        for year in (2027, 2028):
            sent += w.day(date(year, 1, 1) + timedelta(days=offset), ["de1"])
            sent += w.day(date(year, 1, 1) + timedelta(days=offset), ["de1"])
    assert sent == 2
    assert w.keys() == {"new-year:2027:de1", "new-year:2028:de1"}


def test_a_holiday_twice_in_one_year_sends_once_with_a_yearly_period_and_twice_daily() -> None:
    yearly = rule("eid", Scheduled.holiday("eid-al-fitr"))
    daily = rule("eid-day", Scheduled.holiday("eid-al-fitr"), period=RulePeriod.DAY)
    w = World([yearly, daily])
    w.register("tr1", "TR")
    assert w.day(date(2033, 1, 2), ["tr1"]) == 2
    assert w.day(date(2033, 12, 23), ["tr1"]) == 1
    assert w.keys() == {"eid:2033:tr1", "eid-day:2033-01-02:tr1", "eid-day:2033-12-23:tr1"}


def test_audience_filters_apply_to_holiday_rules() -> None:
    jp_only = rule("jp-new-year", Scheduled.holiday("new-year"), audience=Audience({"JP"}))
    consent = rule(
        "consented",
        Scheduled.holiday("new-year"),
        audience=Audience(consent=Consent.MARKETING),
    )
    w = World([jp_only, consent])
    w.register("de1", "DE")
    w.register("jp1", "JP")
    assert w.day(date(2027, 1, 1), ["de1", "jp1"]) == 3
    assert w.keys() == {"jp-new-year:2027:jp1", "consented:2027:de1", "consented:2027:jp1"}


def test_any_holiday_trigger_sends_on_each_holiday_of_the_country() -> None:
    w = World([rule("any", Scheduled.holidays(), period=RulePeriod.DAY)])
    w.register("jp1", "JP")
    for offset in range(20):
        w.day(date(2027, 1, 1) + timedelta(days=offset), ["jp1"])
    assert w.keys() == {"any:2027-01-01:jp1", "any:2027-01-11:jp1"}
    names = sorted(dict(q.params)["holiday"] for q in w.queued())
    assert names == ["coming-of-age-day", "new-year"]


def test_a_restart_or_a_second_process_decides_the_same(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first = World([NEW_YEAR], SqliteEventStore(path, clock=FixedClock(T0)))
    first.register("de1", "DE")
    first.register("jp1", "JP")
    assert first.day(date(2027, 1, 1), ["de1"]) == 1
    second = World([NEW_YEAR], SqliteEventStore(path, clock=FixedClock(T0)))
    assert second.day(date(2027, 1, 2), ["de1", "jp1"]) == 1  # jp1 caught up, de1 sent already
    assert first.day(date(2027, 1, 3), ["de1", "jp1"]) == 0
    assert first.keys() == second.keys() == {"new-year:2027:de1", "new-year:2027:jp1"}


# -- laws -------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    holiday=st.dates(date(2001, 1, 1), date(2098, 12, 31)),
    offset=st.integers(-10, 10),
    country=st.sampled_from(["DE", "JP", "KI"]),
)
def test_a_holiday_sends_iff_the_day_is_within_catch_up_and_only_once(
    holiday: date, offset: int, country: str
) -> None:
    w = World([NEW_YEAR], holidays={country: {"new-year": [holiday]}})
    w.register("c1", country)
    day = holiday + timedelta(days=offset)
    expected = 1 if 0 <= offset <= CATCH_UP_DAYS else 0
    assert w.day(day, ["c1"]) == expected
    assert w.day(day, ["c1"]) == 0
    assert w.keys() == ({f"new-year:{holiday.year:04d}:c1"} if expected else set())


@settings(max_examples=60, deadline=None)
@given(st.dates(date(2001, 1, 1), date(2098, 12, 31)))
def test_every_run_over_the_catch_up_window_sends_one_per_year(holiday: date) -> None:
    w = World([NEW_YEAR], holidays={"DE": {"new-year": [holiday]}})
    w.register("c1", "DE")
    total = sum(w.day(holiday + timedelta(days=i), ["c1"]) for i in range(-2, CATCH_UP_DAYS + 3))
    assert total == 1


# -- validation -------------------------------------------------------------------------------
def test_the_trigger_is_validated() -> None:
    assert Scheduled.holiday("chinese-new-year").kind is ScheduleKind.HOLIDAY
    assert Scheduled.holidays().holiday_name is None
    for bad in ("New Year", "new_year", "-x", "x-", "", "a" * 65, "neu\u0000jahr", "ñ"):
        with pytest.raises(ValidationError):
            Scheduled.holiday(bad)
    for wrong in (None, 3, b"new-year", ["new-year"]):
        with pytest.raises(ArgumentTypeError):
            Scheduled.holiday(wrong)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Scheduled(ScheduleKind.BIRTHDAY, holiday_name="new-year")


def test_a_rule_naming_a_holiday_the_data_lacks_is_refused() -> None:
    with pytest.raises(ValidationError):
        World([rule("typo", Scheduled.holiday("new-yaer"))])
    with pytest.raises(ValidationError):
        World([NEW_YEAR], holidays={})


class Boom:
    def __hash__(self) -> int:
        raise RuntimeError("hostile")


HOSTILE: list[tuple[object, type[FxCrmError]]] = [
    ("DE", ArgumentTypeError),
    ([("DE", {})], ArgumentTypeError),
    ({"DE": [date(2027, 1, 1)]}, ArgumentTypeError),  # the complaints calendar's shape: no names
    ({"DE": {"new-year": date(2027, 1, 1)}}, ArgumentTypeError),
    ({"DE": {"new-year": "2027-01-01"}}, ArgumentTypeError),
    ({"DE": {"new-year": ["2027-01-01"]}}, ArgumentTypeError),
    ({"DE": {"new-year": [datetime(2027, 1, 1, tzinfo=UTC)]}}, ArgumentTypeError),
    ({"DE": {"new-year": [[2027, 1, 1]]}}, ArgumentTypeError),
    ({"DE": {"new-year": [Boom()]}}, ArgumentTypeError),
    ({"DE": {"new-year": iter([date(2027, 1, 1)])}}, ArgumentTypeError),
    ({"DE": {3: [date(2027, 1, 1)]}}, ArgumentTypeError),
    ({1: {"new-year": [date(2027, 1, 1)]}}, ArgumentTypeError),
    ({"DEU": {"new-year": [date(2027, 1, 1)]}}, ValidationError),
    ({"D1": {"new-year": [date(2027, 1, 1)]}}, ValidationError),
    ({"": {"new-year": [date(2027, 1, 1)]}}, ValidationError),
    ({"DE": {"New Year": [date(2027, 1, 1)]}}, ValidationError),
    ({"DE": {"new-year\n": [date(2027, 1, 1)]}}, ValidationError),
    ({"DE": {"x" * 10_000: [date(2027, 1, 1)]}}, ValidationError),
    ({"de": {"new-year": []}, "DE": {"new-year": []}}, ValidationError),
    (
        {"DE": {"new-year": [date(1, 1, 1) + timedelta(days=i) for i in range(1001)]}},
        ValidationError,
    ),
    (
        {f"{a}{b}": {} for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
        ValidationError,
    ),
    ({"DE": {f"h{i}": [] for i in range(501)}}, ValidationError),
    (
        {
            "DE": {
                f"h{i}": [date(2000, 1, 1) + timedelta(days=i * 1000 + j) for j in range(1000)]
                for i in range(21)
            }
        },
        ValidationError,
    ),
]


@pytest.mark.parametrize(("data", "error"), HOSTILE)
def test_hostile_holiday_data_is_refused_typed(data: object, error: type[FxCrmError]) -> None:
    with pytest.raises(error) as caught:
        HolidayData.of(data)
    assert "x" * 100 not in str(caught.value)
    with pytest.raises(FxCrmError):
        World([NEW_YEAR], holidays=data)


def test_holiday_data_is_normalised_and_accepts_sets_and_tuples() -> None:
    data = HolidayData.of(
        {"jp": {"new-year": (date(2027, 1, 1),), "showa-day": {date(2027, 4, 29)}}}
    )
    assert data.on("JP", date(2027, 1, 1)) == ("new-year",)
    assert data.on("jp", date(2027, 4, 29)) == ("showa-day",)
    assert data.on("DE", date(2027, 1, 1)) == ()
    assert data.on(None, date(2027, 1, 1)) == ()
    assert HolidayData.of(data) is data
    assert HolidayData.of(None).names() == frozenset()
