"""Hypothesis profiles: quick locally ("dev"), 300 reproducible examples per test in CI
(CI=true: the same examples every run, so a red build is never luck), and "thorough" for
fuzzing at length with fresh random examples: HYPOTHESIS_PROFILE=thorough make pytest. And the
tests marked slow run first."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked slow first: spread over workers (``make test`` runs pytest-xdist), a
    long test started last keeps one worker busy while the others have finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
