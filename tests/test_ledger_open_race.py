"""Two processes opening one ledger account at the same moment: the loser finds the winner's
account (the same details) instead of failing with a ConcurrencyError."""

from __future__ import annotations

from pathlib import Path

import pytest

from fxcrm_core.kernel import IdempotencyConflictError
from tests.system_world import just_before_the_next_append, open_broker


def test_an_account_opened_by_another_process_meanwhile_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "broker.sqlite"
    a, b = open_broker(db), open_broker(db)

    def rival() -> None:
        b.ledger.open_account("wallet:c-1:USD", owner="c-1", currency="USD", purpose="wallet")

    just_before_the_next_append(monkeypatch, a, rival)
    opened = a.ledger.open_account("wallet:c-1:USD", owner="c-1", currency="USD", purpose="wallet")
    assert opened.owner == "c-1"
    assert [s.event_type for s in a.store.read_stream("ledger-wallet:c-1:USD")] == ["AccountOpened"]


def test_another_processs_account_with_other_details_is_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "broker.sqlite"
    a, b = open_broker(db), open_broker(db)

    def rival() -> None:
        b.ledger.open_account("wallet:c-1:USD", owner="c-2", currency="USD", purpose="wallet")

    just_before_the_next_append(monkeypatch, a, rival)
    with pytest.raises(IdempotencyConflictError):
        a.ledger.open_account("wallet:c-1:USD", owner="c-1", currency="USD", purpose="wallet")
