"""An account-to-account transfer given back (unwound) takes no bonus credit: the money left
the first account and came back to it in the same step."""

from __future__ import annotations

import pytest

from fxcrm_core.accounts import TradingAccount
from fxcrm_core.loyalty import BonusWithdrawalNoted
from fxcrm_core.trading import TradingServerError
from tests.test_account_transfers import FINANCE, World, flaky_deposit, usd


def test_an_unwound_transfer_burns_no_bonus_credit(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    w.b.bonus.grant(FINANCE, w.first, usd(50), grant_id="welcome", reason="welcome bonus")
    flaky_deposit(w, monkeypatch, failures=99)
    with pytest.raises(TradingServerError):
        w.send("a-1", 100)
    w.b.transfers.unwind(FINANCE, "a-1", w.first, w.second, usd(100), reason="second down")
    w.b.run_policies()
    assert w.b.bonus.settle() == []
    noted = [
        r.event
        for r in map(w.b.codec.decode, w.b.store.read_stream(f"bonus-{w.first}"))
        if isinstance(r.event, BonusWithdrawalNoted)
    ]
    assert noted == []
    assert w.b.bonus.account(w.first).credit == 50
    login = w.b.repository.get(TradingAccount, w.first).login
    assert w.server.account_state(login).credit == usd(50)


def test_a_completed_transfer_out_of_the_account_still_burns_pro_rata() -> None:
    w = World()
    w.b.bonus.grant(FINANCE, w.first, usd(50), grant_id="welcome", reason="welcome bonus")
    w.send("a-1", 100)
    w.b.run_policies()
    burnt = w.b.bonus.settle()
    assert [b.amount for b in burnt] == [usd("16.67")]  # 50 x 100 / 300 before it
