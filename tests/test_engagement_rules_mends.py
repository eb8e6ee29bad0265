"""Mends of the engagement rules after the attack tests: options validated at construction,
the audience read pinned to the event's commit, birthdays and days-after caught up."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from fxcrm_core.clients import Client, Consent
from fxcrm_core.clients.model import ConsentGiven
from fxcrm_core.engagement.rules import (
    CATCH_UP_DAYS,
    Audience,
    ClientAudience,
    EngagementRule,
    OnEvent,
    RulePeriod,
    Scheduled,
)
from fxcrm_core.events import EventMetadata, UnitOfWork
from fxcrm_core.kernel.errors import ArgumentTypeError, FxCrmError, ValidationError
from tests.test_engagement_rules import World, rule


def _audience(**options: Any) -> ClientAudience:
    return ClientAudience(World([]).repository, **options)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"zones": ["GB"]}, ArgumentTypeError),
        ({"zones": "GB"}, ArgumentTypeError),
        ({"zones": {"GB": 5}}, ArgumentTypeError),
        ({"zones": {"GB": "Mars/Olympus"}}, ValidationError),
        ({"zones": {"GBR": "Europe/London"}}, ValidationError),
        ({"zones": {5: "Europe/London"}}, ArgumentTypeError),
        ({"languages": ["x"]}, ArgumentTypeError),
        ({"languages": {"GB": 5}}, ArgumentTypeError),
        ({"languages": {"GB": "xx"}}, ValidationError),
        ({"languages": {"GB": "en\x00"}}, ValidationError),
        ({"languages": {"GB": "not a locale"}}, ValidationError),
        ({"default_language": 5}, ArgumentTypeError),
        ({"segment_of": "gold"}, ArgumentTypeError),
    ],
)
def test_client_audience_options_are_checked_at_construction(
    options: dict[str, Any], error: type[FxCrmError]
) -> None:
    with pytest.raises(error):
        _audience(**options)


def test_client_audience_options_accept_locales_and_upper_case_the_country() -> None:
    audience = _audience(
        zones={"gb": "Europe/London"}, languages={"gb": "en-GB", "BR": "pt_BR", "DE": "de"}
    )
    assert set(audience.zones) == {"GB"}
    assert audience.languages == {"GB": "en-GB", "BR": "pt_BR", "DE": "de"}


def test_the_profile_reads_the_rest_of_the_events_commit_but_no_later_commit() -> None:
    news = rule("news", OnEvent.registered(), audience=Audience(consent=Consent.MARKETING))
    w = World([news])
    same = w.register("c-1", marketing=True)  # the consent in the registration's commit
    assert w.handle(same) == 1
    later = w.register("c-2", marketing=False)
    with UnitOfWork(w.repository, EventMetadata("staff:9", reason="consent")) as uow:
        c = uow.load(Client, "c-2")
        assert c is not None
        uow.record(c, ConsentGiven(Consent.MARKETING, w.clock.now()))  # same clock instant
        uow.commit()
    assert w.handle(later) == 0  # a late worker decides as the inline one did
    assert w.keys() == {"news:once:c-1"}


def test_a_later_commit_by_the_same_actor_at_the_same_instant_is_a_known_limit() -> None:
    # Documented: without a commit id, an identical metadata record at the same instant, right
    # after the event's commit, cannot be told apart. Here the registration wrote identity-less
    # client rows only, so the next commit follows directly: it is read as the same commit.
    news = rule("news", OnEvent.registered(), audience=Audience(consent=Consent.MARKETING))
    w = World([news])
    registered = w.register("c-1", marketing=False)
    w.record("c-1", ConsentGiven(Consent.MARKETING, w.clock.now()))  # same META, same instant
    assert w.handle(registered) == 1  # the documented limit, pinned


def _birthday_world(born: date, **kw: Any) -> World:
    w = World([rule("bday", Scheduled.birthday(), period=RulePeriod.YEAR, **kw)])
    w.register("c-1", born=born)
    return w


def test_a_birthday_is_caught_up_for_a_few_days_and_sent_once_a_year() -> None:
    w = _birthday_world(date(1990, 11, 1))
    assert w.day(date(2026, 10, 31), ["c-1"]) == 0
    assert w.day(date(2026, 11, 2), ["c-1"]) == 1  # 1 November skipped by the daily job
    assert w.day(date(2026, 11, 3), ["c-1"]) == 0
    assert w.day(date(2026, 11, 1), ["c-1"]) == 0
    assert w.keys() == {"bday:2026:c-1"}
    (queued,) = w.queued()
    assert queued.not_before == datetime(2026, 11, 1, 9, tzinfo=UTC)  # due on the day itself


def test_a_birthday_is_not_caught_up_after_the_window() -> None:
    w = _birthday_world(date(1990, 11, 1))
    late = date(2026, 11, 1 + CATCH_UP_DAYS + 1)
    assert w.day(late, ["c-1"]) == 0
    assert w.day(date(2026, 11, 1 + CATCH_UP_DAYS), ["c-1"]) == 1


def test_a_new_years_eve_birthday_is_caught_up_in_january_under_its_own_year() -> None:
    w = _birthday_world(date(1990, 12, 31))
    assert w.day(date(2027, 1, 2), ["c-1"]) == 1
    assert w.day(date(2027, 12, 31), ["c-1"]) == 1
    assert w.keys() == {"bday:2026:c-1", "bday:2027:c-1"}


def test_no_birthday_before_the_birth() -> None:
    w = _birthday_world(date(2026, 3, 1))
    assert w.day(date(2026, 2, 28), ["c-1"]) == 0
    assert w.day(date(2026, 3, 2), ["c-1"]) == 1  # the day of birth itself, caught up


def test_days_after_is_caught_up_under_the_target_day() -> None:
    w = World([rule("day7", Scheduled.days_after("ClientRegistered", 7), period=RulePeriod.DAY)])
    w.register("c-1")
    assert w.day(date(2026, 3, 10), ["c-1"]) == 1  # the target 9 March was skipped
    assert w.day(date(2026, 3, 9), ["c-1"]) == 0
    assert w.keys() == {"day7:2026-03-09:c-1"}


def test_rules_are_unchanged_values() -> None:
    assert isinstance(rule("r", Scheduled.birthday()), EngagementRule)
