"""The parity harness: passes a scenario that keeps its state in the log, in all three modes, and
names the first difference when a scenario keeps state in a Python object."""

from __future__ import annotations

import enum
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.events import ERASED, iter_all
from fxcrm_core.kernel import FixedClock, IdGenerator, Money, ValidationError
from fxcrm_core.testing.parity import (
    Mode,
    Probe,
    Ref,
    Scenario,
    ScenarioError,
    Step,
    assert_parity,
    canonical,
    run_parity,
)
from tests import parity_scenarios
from tests.parity_scenarios import T0

M = "tests.parity_scenarios"
BUILD = f"{M}:build"
LATER = T0 + timedelta(days=1)


def kyc_and_deposit() -> Scenario:
    ana = Ref("register ana")
    return Scenario(
        build=BUILD,
        steps=[
            Step("register ana", f"{M}:register", "Ana Lima", "ana.lima@example.com"),
            Step("register ana again", f"{M}:register", "A. Lima", "Ana.Lima@Example.com"),
            Step("deposit too early", f"{M}:deposit", ana, "100", "psp-0"),
            Step("submit passport", f"{M}:submit", ana, "passport"),
            Step("approve passport", f"{M}:approve", Ref("submit passport"), at=LATER),
            Step("submit address", f"{M}:submit", ana, "proof_of_address"),
            Step("approve address", f"{M}:approve", Ref("submit address")),
            Step("two hours pass", f"{M}:later", 2),
            Step("deposit", f"{M}:deposit", ana, "500", "psp-1"),
            Step("verify", f"{M}:verify", ana),
        ],
        probes=[
            Probe(f"{M}:kyc_level", ana),
            Probe(f"{M}:wallet", ana),
            Probe(f"{M}:client", ana),
            f"{M}:log_size",
        ],
        name="kyc and deposit",
    )


def part(form: object, name: str) -> object:
    assert isinstance(form, dict)
    return form[name]


@pytest.mark.slow
def test_a_scenario_kept_in_the_log_passes_in_every_mode(tmp_path: Path) -> None:
    report = assert_parity(kyc_and_deposit(), tmp_path)

    assert [(o.mode, o.passed) for o in report.outcomes] == [
        (Mode.ONE_BROKER, True),
        (Mode.FRESH_PROCESS_PER_STEP, True),
        (Mode.TWO_PROCESSES, True),
    ]
    seen = report.outcome(Mode.FRESH_PROCESS_PER_STEP).observed
    # Refusals are results, compared like any other.
    assert part(seen["step 2 'register ana again': result"], "raised") == "DuplicateClientError"
    assert part(seen["step 3 'deposit too early': result"], "raised") == "KycLevelTooLowError"
    assert seen["step 9 'deposit': result"] == "CallbackOutcome.APPLIED"
    # Probes ran after every step, read models and aggregates alike, PII as it reads.
    assert seen["after step 5 'approve passport': probe 'kyc_level'"] == {"now": 1, "recorded": 1}
    assert seen["at the end: probe 'kyc_level'"] == {"now": 2, "recorded": 2}
    assert part(seen["at the end: probe 'wallet'"], "credits_posted") == "500.00 USD"
    assert part(seen["at the end: probe 'client'"], "name") == "Ana Lima"
    client_id = seen["step 1 'register ana': result"]
    # Deposited, then verified: the client-funded policy makes it FUNDED in every mode.
    assert part(seen[f"aggregate client-{client_id}"], "stage") == "Stage.FUNDED"
    assert any(key.startswith("log position ") for key in seen)
    # Every mode made the same ids: the harness reseeds before each step.
    assert {o.observed["step 1 'register ana': result"] for o in report.outcomes} == {client_id}
    # ... and none twice, though made in different processes (steps 1, 4 and 6 in mode b).
    made = {seen["step 4 'submit passport': result"], seen["step 6 'submit address': result"]}
    assert len(made | {client_id}) == 3

    # ``at`` set the time; a step that moved the clock itself moved it for the next step, though
    # the next step ran in a fresh process.
    broker = parity_scenarios.build(str(tmp_path / "mode-b" / "broker.sqlite"))
    try:
        events = [broker.codec.decode(e) for e in iter_all(broker.store)]
    finally:
        broker.close()
    recorded = {type(e.event).__name__: e.recorded_at for e in events}
    assert recorded["ClientRegistered"] == T0
    assert recorded["DocumentApproved"] == LATER
    assert recorded["DepositCredited"] == LATER + timedelta(hours=2)


@pytest.mark.slow
def test_state_kept_in_a_python_object_fails_in_fresh_and_second_processes(
    tmp_path: Path,
) -> None:
    scenario = Scenario(
        build=BUILD,
        steps=[
            Step("remember colour", f"{M}:remember", "colour", "blue"),
            Step("remember size", f"{M}:remember", "size", "L"),
        ],
        probes=[f"{M}:remembered"],
        name="memory",
    )
    with pytest.raises(AssertionError) as failed:
        assert_parity(scenario, tmp_path)

    text = str(failed.value)
    assert "parity of 'memory': FAIL" in text
    assert "mode a (one broker): pass" in text
    assert (
        "mode b (a fresh process per step): FAIL: after step 1 'remember colour': "
        "probe 'remembered' field colour differs: mode a 'blue' vs mode b '<absent>'"
    ) in text
    assert (
        "mode c (two live processes in turn): FAIL: after step 1 'remember colour': "
        "probe 'remembered' field colour differs: mode a 'blue' vs mode c '<absent>'"
    ) in text


@pytest.mark.slow
def test_a_result_that_depends_on_the_process_is_named(tmp_path: Path) -> None:
    scenario = Scenario(
        build=BUILD,
        steps=[
            Step("remember colour", f"{M}:remember", "colour", "blue"),
            Step("remember size", f"{M}:remember", "size", "L"),
        ],
        probe_every_step=False,
        name="counting",
    )
    report = run_parity(scenario, tmp_path, modes=[Mode.FRESH_PROCESS_PER_STEP])
    assert [o.mode for o in report.outcomes] == [Mode.ONE_BROKER, Mode.FRESH_PROCESS_PER_STEP]
    assert report.first_difference == (
        "step 2 'remember size': result differs: mode a '2' vs mode b '1'"
    )


@pytest.mark.slow
def test_a_log_that_depends_on_the_process_is_named_by_aggregate_and_field(
    tmp_path: Path,
) -> None:
    scenario = Scenario(
        build=BUILD,
        steps=[
            Step("first", f"{M}:register_numbered", "one@example.com"),
            Step("second", f"{M}:register_numbered", "two@example.com"),
        ],
        name="numbered",
    )
    report = run_parity(scenario, tmp_path, modes=[Mode.TWO_PROCESSES])
    second = report.outcome(Mode.ONE_BROKER).observed["step 2 'second': result"]
    assert report.first_difference == (
        f"aggregate client-{second}: field name differs: mode a 'Client 2' vs mode c 'Client 1'"
    )


@pytest.mark.slow
def test_an_error_that_is_not_a_refusal_fails_the_run_with_its_traceback(
    tmp_path: Path,
) -> None:
    scenario = Scenario(build=BUILD, steps=[Step("divide", f"{M}:broken_step")], name="bug")
    report = run_parity(scenario, tmp_path, modes=[Mode.ONE_BROKER])
    assert not report.ok
    assert report.first_difference == (
        "step 1 'divide': raised "
        """{"message": "integer division or modulo by zero", "raised": "ZeroDivisionError"}, """
        "not an FxCrmError"
    )
    assert "ZeroDivisionError" in report.tracebacks[0]
    assert "Traceback" in str(report)


# -- the scenario and its canonical forms (no processes) ------------------------------------
def test_a_scenario_is_checked_when_written() -> None:
    step = Step("one", f"{M}:remember", "k", "v")
    with pytest.raises(ScenarioError, match="used twice"):
        Scenario(build=BUILD, steps=[step, step])
    with pytest.raises(ScenarioError, match="not an earlier step"):
        Scenario(build=BUILD, steps=[Step("a", f"{M}:remember", Ref("b")), step])
    with pytest.raises(ScenarioError, match="unknown step"):
        Scenario(build=BUILD, steps=[step], probes=[Probe(f"{M}:client", Ref("nope"))])
    with pytest.raises(ScenarioError, match=r"package\.module:function"):
        Step("bad", "tests.parity_scenarios.remember")
    with pytest.raises(ScenarioError, match="at least one step"):
        Scenario(build=BUILD, steps=[])
    with pytest.raises(ScenarioError, match="timezone-aware"):
        Step("naive", f"{M}:remember", at=datetime(2026, 1, 1))  # noqa: DTZ001
    assert isinstance(ScenarioError(), ValidationError)


def test_references_that_do_not_resolve_fail_before_any_process_starts(tmp_path: Path) -> None:
    scenario = Scenario(build=BUILD, steps=[Step("x", f"{M}:no_such_step")])
    with pytest.raises(ScenarioError, match=r"cannot resolve 'tests\.parity_scenarios:no_such"):
        run_parity(scenario, tmp_path)
    assert list(tmp_path.iterdir()) == []


class Colour(enum.Enum):
    BLUE = "blue"


@attrs.frozen
class Sample:
    amount: Money
    when: datetime
    tags: frozenset[str]


def test_canonical_forms() -> None:
    sample = Sample(Money.of("2", "USD"), T0, frozenset({"b", "a"}))
    assert canonical(sample) == {
        "__type__": "Sample",
        "amount": "2.00 USD",
        "when": "2026-03-02T12:00:00+00:00",
        "tags": ["a", "b"],
    }
    assert canonical([Decimal("1.50"), Colour.BLUE, date(2026, 1, 2), None, True]) == [
        "1.50",
        "Colour.BLUE",
        "2026-01-02",
        None,
        True,
    ]
    assert canonical({Colour.BLUE: ERASED, 3: b"\x01"}) == {
        "Colour.BLUE": "[erased]",
        "3": "bytes:01",
    }
    assert canonical(Decimal("1.5")) != canonical(Decimal("1.50"))  # exactness is behaviour
    with pytest.raises(ScenarioError, match="no canonical form for a object"):
        canonical(object())


# -- reseeding ids ---------------------------------------------------------------------------
@given(seed=st.integers(0, 2**64), made=st.integers(0, 5), count=st.integers(1, 20))
def test_reseeded_generators_make_the_same_ids_after_the_given_one(
    seed: int, made: int, count: int
) -> None:
    clock = FixedClock(T0)
    here, there = IdGenerator(clock), IdGenerator(clock, seed=seed + 1)
    before = [here() for _ in range(made)]
    here.reseed(seed, after=here.last)
    there.reseed(seed, after=before[-1] if before else None)
    ours, theirs = [here() for _ in range(count)], [there() for _ in range(count)]
    assert ours == theirs
    assert ours == sorted(ours)
    assert all(new > old for new in ours for old in before)
    assert here.last == ours[-1]


def test_reseed_refuses_what_is_not_an_id() -> None:
    with pytest.raises(ValidationError):
        IdGenerator().reseed(1, after="ana.lima@example.com")


@pytest.mark.slow
def test_a_worker_that_dies_is_reported_where_it_died(tmp_path: Path) -> None:
    scenario = Scenario(
        build=BUILD,
        steps=[Step("fine", f"{M}:remember", "k", "v"), Step("crash", f"{M}:die")],
        name="crash",
    )
    report = run_parity(scenario, tmp_path, modes=[Mode.ONE_BROKER], timeout=30)
    assert report.first_difference == (
        "stopped at step 2 'crash': the worker process died (exit code 3)"
    )
