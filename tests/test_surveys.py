"""Surveys: CSAT and NPS formulas against a trivial model, one answer per survey, scores per
month and quarter from the log (a restart and a second process answer the same)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.access import DEFAULT_POLICY, AccessControl, AccessPolicy, Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.engagement.surveys import (
    SURVEY_EVENTS,
    SURVEY_PERMISSIONS,
    SurveyAnswered,
    SurveyKind,
    SurveyPeriod,
    Surveys,
    score_of,
)
from fxcrm_core.events import EventCodec, EventRegistry, Repository
from fxcrm_core.kernel import FixedClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    ArgumentTypeError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.privacy import MasterKeyring
from fxcrm_core.stores import MemoryEventStore

SUPPORT = Actor.staff("sup-1", Role.SUPPORT)
T0 = datetime(2026, 3, 31, 22, 30, tzinfo=UTC)  # 1 April in Europe/Berlin


def policy_with_surveys() -> AccessPolicy:
    policy = DEFAULT_POLICY
    for role, perms in SURVEY_PERMISSIONS.items():
        granted = policy.grants.get(role, frozenset()) | perms
        policy = policy.with_role(role, granted, policy.scopes[role])
    return policy


def memory_surveys(zone: str = "UTC") -> tuple[Surveys, FixedClock, MemoryEventStore]:
    registry = EventRegistry()
    registry.register_all(SURVEY_EVENTS)
    clock = FixedClock(T0)
    store = MemoryEventStore(clock)
    repository = Repository(store, EventCodec(registry))
    return Surveys(repository, AccessControl(policy_with_surveys()), clock, zone=zone), clock, store


def model(kind: SurveyKind, scores: list[int]) -> Fraction | None:
    """The trivial model: the definitions, read literally."""
    if not scores:
        return None
    n = len(scores)
    if kind is SurveyKind.CSAT:
        return Fraction(100 * len([s for s in scores if s >= 4]), n) / 100
    promoters = Fraction(100 * len([s for s in scores if s >= 9]), n)
    detractors = Fraction(100 * len([s for s in scores if s <= 6]), n)
    return (promoters - detractors) / 100


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_formulas_match_the_definitions(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(SurveyKind))
    scores = data.draw(st.lists(st.sampled_from(list(kind.scale)), max_size=60))
    got = score_of(kind, "2026-03", scores)
    assert got.answers == len(scores)
    assert got.exact == model(kind, scores)
    if got.exact is None:
        assert got.percent is None
    else:
        assert got.percent is not None
        assert abs(got.percent - Decimal(got.exact.numerator * 100) / got.exact.denominator) <= (
            Decimal("0.005")
        )
    if kind is SurveyKind.NPS:
        assert got.promoters + got.passives + got.detractors == len(scores)
        assert got.exact is None or -1 <= got.exact <= 1
    else:
        assert got.satisfied == len([s for s in scores if s in (4, 5)])
        assert got.exact is None or 0 <= got.exact <= 1


@settings(max_examples=25, deadline=None)
@given(
    answers=st.lists(
        st.tuples(st.sampled_from(SurveyKind), st.integers(0, 10), st.integers(0, 200)),
        max_size=25,
    )
)
def test_recorded_answers_score_as_the_model_per_month_and_quarter(
    answers: list[tuple[SurveyKind, int, int]],
) -> None:
    surveys, clock, _ = memory_surveys("Europe/Berlin")
    by_month: dict[tuple[SurveyKind, int], list[int]] = {}
    for i, (kind, raw, days) in enumerate(answers):
        score = raw % 5 + 1 if kind is SurveyKind.CSAT else raw
        clock.set(T0 + timedelta(days=days))
        s = surveys.send(SUPPORT, f"c-{i}", kind, "withdrawal-paid")
        surveys.answer(Actor.client(f"c-{i}"), s.id, score)
        local = (T0 + timedelta(days=days)).astimezone(surveys._scores.zone).date()
        assert local.year == 2026
        by_month.setdefault((kind, local.month), []).append(score)
    for kind in SurveyKind:
        for month in range(4, 12):
            got = surveys.scores(SUPPORT, kind, SurveyPeriod.MONTH, date(2026, month, 15))
            assert got.period == f"2026-{month:02d}"
            assert got.exact == model(kind, by_month.get((kind, month), []))
        for first in (4, 7, 10):
            pooled = [s for m in range(first, first + 3) for s in by_month.get((kind, m), [])]
            got = surveys.scores(SUPPORT, kind, SurveyPeriod.QUARTER, date(2026, first + 1, 1))
            assert got.answers == len(pooled)
            assert got.exact == model(kind, pooled)


def test_the_period_is_the_answer_s_month_in_the_broker_s_zone() -> None:
    surveys, _, _ = memory_surveys("Europe/Berlin")
    s = surveys.send(SUPPORT, "c-1", SurveyKind.NPS, "withdrawal-paid")
    surveys.answer(Actor.client("c-1"), s.id, 10)  # 22:30 UTC on 31 March is April in Berlin
    april = surveys.scores(SUPPORT, SurveyKind.NPS, SurveyPeriod.MONTH, date(2026, 4, 1))
    assert april.answers == 1
    assert april.percent == Decimal("100.00")
    march = surveys.scores(SUPPORT, SurveyKind.NPS, SurveyPeriod.QUARTER, date(2026, 3, 1))
    assert march.period == "2026-Q1"
    assert march.answers == 0
    assert march.percent is None


def test_a_survey_is_answered_once_and_scores_are_checked() -> None:
    surveys, _, _ = memory_surveys()
    s = surveys.send(SUPPORT, "c-1", SurveyKind.CSAT, "withdrawal-paid")
    for bad in (0, 6, -1):
        with pytest.raises(ValidationError):
            surveys.answer(Actor.client("c-1"), s.id, bad)
    with pytest.raises(ArgumentTypeError):
        surveys.answer(Actor.client("c-1"), s.id, True)
    with pytest.raises(ArgumentTypeError):
        surveys.answer(Actor.client("c-1"), s.id, 4.0)  # type: ignore[arg-type]
    answered = surveys.answer(Actor.client("c-1"), s.id, 5, "Quick payout, thanks")
    assert answered.score == 5
    with pytest.raises(IllegalTransitionError):
        surveys.answer(Actor.client("c-1"), s.id, 1)
    with pytest.raises(NotFoundError):
        surveys.answer(Actor.client("c-1"), "nope", 1)
    nps = surveys.send(SUPPORT, "c-1", SurveyKind.NPS, "withdrawal-paid")
    with pytest.raises(ValidationError):
        surveys.answer(Actor.client("c-1"), nps.id, 11)
    assert surveys.answer(Actor.client("c-1"), nps.id, 0).score == 0


def test_an_outbox_key_makes_one_survey() -> None:
    surveys, _, store = memory_surveys()
    key = "survey-after-withdrawal:once:c-1"
    a = surveys.send(SUPPORT, "c-1", SurveyKind.CSAT, "withdrawal-paid", outbox_key=key)
    b = surveys.send(SUPPORT, "c-1", SurveyKind.CSAT, "withdrawal-paid", outbox_key=key)
    assert a == b
    assert a.outbox_key == key
    assert store.last_position() == 1
    with pytest.raises(IllegalTransitionError):
        surveys.send(SUPPORT, "c-2", SurveyKind.CSAT, "withdrawal-paid", outbox_key=key)


def test_access_is_refused_with_a_typed_error() -> None:
    surveys, _, _ = memory_surveys()
    with pytest.raises(AccessDeniedError):
        surveys.send(Actor.client("c-1"), "c-1", SurveyKind.CSAT, "self-made")
    s = surveys.send(SUPPORT, "c-1", SurveyKind.CSAT, "withdrawal-paid")
    with pytest.raises(AccessDeniedError):
        surveys.answer(Actor.client("c-2"), s.id, 5)
    with pytest.raises(AccessDeniedError):
        surveys.answer(SUPPORT, s.id, 5)  # staff do not answer for the client
    with pytest.raises(AccessDeniedError):
        surveys.scores(Actor.client("c-1"), SurveyKind.CSAT, SurveyPeriod.MONTH, date(2026, 4, 1))
    with pytest.raises(AccessDeniedError):
        surveys.get(Actor.client("c-2"), s.id)
    assert surveys.get(Actor.client("c-1"), s.id).client_id == "c-1"


def test_a_refused_comment_is_not_echoed() -> None:
    surveys, _, _ = memory_surveys()
    s = surveys.send(SUPPORT, "c-1", SurveyKind.CSAT, "withdrawal-paid")
    with pytest.raises(ValidationError) as err:
        surveys.answer(Actor.client("c-1"), s.id, 3, "Ana Lima 07911 123456\x1b[2J")
    assert "Ana" not in str(err.value)
    assert "07911" not in str(err.value)


def _broker(path: Path, clock: FixedClock, keyring: MasterKeyring) -> Broker:
    broker = Broker.sqlite(
        path,
        clock=clock,
        keyring=keyring,
        policy=policy_with_surveys(),
        identity_key=b"k" * 32,
    )
    broker.registry.register_all(SURVEY_EVENTS)  # the integrator's line in the broker
    return broker


def test_a_restart_and_a_second_process_answer_the_same(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    keyring = MasterKeyring.generate()
    path = tmp_path / "s.sqlite"
    first = _broker(path, clock, keyring)
    a = Surveys(first.repository, first.access, clock, zone="Europe/Berlin")
    ids = []
    for i, score in enumerate([10, 9, 7, 3, 0, 10]):
        s = a.send(SUPPORT, f"c-{i}", SurveyKind.NPS, "withdrawal-paid")
        a.answer(Actor.client(f"c-{i}"), s.id, score, f"secret comment {i}")
        ids.append(s.id)
    day = date(2026, 4, 1)
    before = a.scores(SUPPORT, SurveyKind.NPS, SurveyPeriod.MONTH, day)
    assert (before.promoters, before.passives, before.detractors) == (3, 1, 2)
    assert before.percent == Decimal("16.67")
    second = _broker(path, clock, keyring)
    b = Surveys(second.repository, second.access, clock, zone="Europe/Berlin")
    assert b.scores(SUPPORT, SurveyKind.NPS, SurveyPeriod.MONTH, day) == before
    with pytest.raises(IllegalTransitionError):  # answered in the other process
        b.answer(Actor.client("c-0"), ids[0], 1)
    s = b.send(SUPPORT, "c-9", SurveyKind.NPS, "withdrawal-paid")
    b.answer(Actor.client("c-9"), s.id, 9)
    after = a.scores(SUPPORT, SurveyKind.NPS, SurveyPeriod.QUARTER, day)  # sees b's answer
    assert after.answers == 7
    restarted = _broker(path, clock, keyring)
    c = Surveys(restarted.repository, restarted.access, clock, zone="Europe/Berlin")
    assert c.scores(SUPPORT, SurveyKind.NPS, SurveyPeriod.QUARTER, day) == after
    rows = [restarted.codec.decode(r).event for r in restarted.store.read_all()]
    comments = [e.comment for e in rows if isinstance(e, SurveyAnswered) and e.comment]
    assert "secret comment 3" in comments
    assert b"secret comment" not in path.read_bytes()  # sealed at rest
    for broker in (first, second, restarted):
        broker.close()
