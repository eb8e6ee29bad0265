"""Bonus credit after the adversarial review: a burn is decided on the balance the withdrawal
left, whenever the policy or the settle runs; a grant is decided before the server is asked, so
the log never counts more than the server credited; one account the server cannot answer for
stops no other account's burn."""

from __future__ import annotations

import logging
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fxcrm_core.kernel.errors import IdempotencyConflictError
from fxcrm_core.loyalty.bonus import (
    Bonus,
    BonusBurnDecided,
    BonusGrantDecided,
    BonusGranted,
    BonusGrantRefused,
    BonusRun,
    BonusWithdrawalNoted,
)
from fxcrm_core.stores import SqliteEventStore
from fxcrm_core.trading import AccountState, BalanceOperation, TradingServerError
from tests.test_loyalty_bonus import ADMIN, Server, World, usd


class FlakyServer(Server):
    """The test server, unable to answer for the logins in ``broken``."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: set[int] = set()

    def account_state(self, login: int) -> AccountState:
        if login in self.broken:
            raise TradingServerError("the server does not know that login")
        return super().account_state(login)


def history(world: World, account_id: str) -> list[object]:
    stream = world.repository.store.read_stream(f"bonus-{account_id}")
    return [world.repository.codec.decode(r).event for r in stream]


def decided(world: World, account_id: str) -> list[tuple[str, Decimal]]:
    return [
        (e.burn_id, e.amount.amount)
        for e in history(world, account_id)
        if isinstance(e, BonusBurnDecided)
    ]


# -- the burn is decided on the balance before the withdrawal ------------------------------------

_moves = st.lists(
    st.tuples(st.sampled_from(["in", "out"]), st.integers(1, 90)),  # out: percent of the balance
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_moves)
@example([("out", 50), ("in", 900)])  # the review's case: 500 out of 1,000, then 9,000 in
def test_a_burn_depends_only_on_the_balance_the_withdrawal_left(
    moves: list[tuple[str, int]],
) -> None:
    # Law: whatever moves in or out afterwards, and whether the policy notes each withdrawal at
    # once (inline) or all of them at the end (a late worker), each withdrawal burns
    # credit x withdrawn / balance just before it, the credit decreasing burn by burn.
    inline, late = World(), World()
    logins = {}
    for world in (inline, late):
        logins[id(world)] = world.open_account("a1")
        world.fund("f0", "a1", usd(1000))
        world.fund("spare", "a1", usd(5000))
        world.transfers.move(ADMIN, "back", "a1", usd(5000), to_trading=False)  # wallet money
        world.bonus.grant(ADMIN, "a1", usd(100), grant_id="g", reason="welcome")
        world.runner.run()
    expected: list[tuple[str, Decimal]] = []
    credit = Decimal(100)
    for n, (kind, value) in enumerate(moves):
        balance = inline.state(logins[id(inline)]).balance.amount
        if kind == "in":
            amount = Decimal(value * 10)
            if amount > late.state(logins[id(late)]).balance.amount + 5000:
                continue
        else:
            amount = (balance * value / 100).quantize(Decimal("0.01"))
            if amount <= 0:
                continue
            burn = (credit * amount / balance).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
            burn = min(burn, credit)
            expected.append((f"wd:m{n}", burn))
            credit -= burn
        for world in (inline, late):
            world.transfers.move(ADMIN, f"m{n}", "a1", usd(amount), to_trading=kind == "in")
        inline.runner.run()
    late.runner.run()
    inline.bonus.settle()
    late.bonus.settle()
    assert decided(inline, "a1") == decided(late, "a1") == expected
    assert inline.bonus.account("a1").credit == late.bonus.account("a1").credit == credit


def test_a_withdrawal_noted_while_the_server_cannot_answer_is_decided_at_the_settle() -> None:
    world = World(server=FlakyServer())
    server = world.server
    assert isinstance(server, FlakyServer)
    login = world.open_account("a1")
    world.fund("f1", "a1", usd(1000))
    world.bonus.grant(ADMIN, "a1", usd(100), grant_id="g", reason="welcome")
    world.transfers.move(ADMIN, "w1", "a1", usd(250), to_trading=False)
    server.broken.add(login)
    world.runner.run()  # noted all the same: the policy never stalls on the server
    (noted,) = [e for e in history(world, "a1") if isinstance(e, BonusWithdrawalNoted)]
    assert noted.balance_before is None
    server.broken.clear()
    assert [b.amount for b in world.bonus.settle()] == [usd(25)]  # 750 now + 250 waiting
    (decision,) = [e for e in history(world, "a1") if isinstance(e, BonusBurnDecided)]
    assert dict(decision.figures)["balance_read"] == "at_settle"


# -- a grant is decided before the server is asked --------------------------------------------


def test_a_grant_key_the_server_holds_for_another_amount_is_refused_and_counts_nothing(
    tmp_path: Path,
) -> None:
    server = Server()
    world = World(SqliteEventStore(tmp_path / "events.db"), server)
    login = world.open_account("a1")
    key = "bonus:a1:grant:welcome"  # a crashed attempt of an older process credited 100
    server.balance_operation(
        login, BalanceOperation.CREDIT_IN, usd(100), comment="x", idempotency_key=key
    )
    with pytest.raises(IdempotencyConflictError) as refused:
        world.bonus.grant(ADMIN, "a1", usd(1000), grant_id="welcome", reason="welcome")
    assert "1000" not in str(refused.value)
    assert world.bonus.account("a1").granted == 0
    assert [type(e) for e in history(world, "a1")] == [BonusGrantDecided, BonusGrantRefused]
    granted = world.bonus.grant(ADMIN, "a1", usd(100), grant_id="welcome", reason="welcome")
    assert granted.amount == usd(100)
    fresh = World(SqliteEventStore(tmp_path / "events.db"), server)
    assert fresh.bonus.account("a1").granted == server.account_state(login).credit.amount == 100


def test_a_grant_decided_then_crashed_posts_its_amount_once_and_no_other() -> None:
    world = World()
    login = world.open_account("a1")
    calls: list[object] = []
    real = world.server.balance_operation

    def down(*args: object, **kwargs: object) -> int:
        calls.append(args)
        raise TradingServerError("the server is unreachable")

    world.server.balance_operation = down  # type: ignore[method-assign]
    with pytest.raises(TradingServerError):
        world.bonus.grant(ADMIN, "a1", usd(100), grant_id="g", reason="welcome")
    world.server.balance_operation = real  # type: ignore[method-assign]
    state = world.bonus.account("a1")
    assert (state.granted, list(state.granting)) == (Decimal(0), ["g"])
    before = list(world.repository.store.read_stream("bonus-a1"))
    with pytest.raises(IdempotencyConflictError):  # the log names 100: a retry of 1,000 is not
        world.bonus.grant(ADMIN, "a1", usd(1000), grant_id="g", reason="welcome")
    assert list(world.repository.store.read_stream("bonus-a1")) == before  # nothing written
    fresh = Bonus(world.repository, world.access, {"sim": world.server})
    assert fresh.grant(ADMIN, "a1", usd(100), grant_id="g", reason="welcome").amount == usd(100)
    assert world.state(login).credit == usd(100)
    assert [type(e) for e in history(world, "a1")] == [BonusGrantDecided, BonusGranted]
    assert fresh.account("a1").granting == {}


# -- one account never stops the others -------------------------------------------------------


def test_an_account_the_server_cannot_answer_for_is_named_and_retried_by_the_next_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(server=FlakyServer())
    server = world.server
    assert isinstance(server, FlakyServer)
    logins = {a: world.open_account(a) for a in ("a1", "a2")}
    for a in ("a1", "a2"):
        world.fund(f"f-{a}", a, usd(1000))
        world.bonus.grant(ADMIN, a, usd(100), grant_id="g", reason="welcome")
        world.transfers.move(ADMIN, f"w-{a}", a, usd(500), to_trading=False)
    world.runner.run()
    server.broken.add(logins["a1"])
    with caplog.at_level(logging.WARNING, logger="fxcrm_core.loyalty.bonus"):
        settled = world.bonus.settle()
        checked = world.bonus.check_equity()
    assert isinstance(settled, BonusRun)
    assert [(b.account_id, b.amount) for b in settled] == [("a2", usd(50))]
    assert settled.failed == checked.failed == {"a1": "TradingServerError"}
    assert "a1" in caplog.text
    assert "server does not know" not in caplog.text  # the type name only
    assert settled + checked == list(settled)  # the broker's `settle() + check_equity()`
    server.broken.clear()
    again = world.bonus.settle()
    assert [(b.account_id, b.amount) for b in again] == [("a1", usd(50))]
    assert again.failed == {}
    assert world.state(logins["a1"]).credit == world.state(logins["a2"]).credit == usd(50)


def test_a_late_worker_burns_nothing_for_money_out_before_the_grant_nor_a_later_grant() -> None:
    # The policy reads the bonus as it stood when the money left: a withdrawal made before the
    # grant burns nothing, and a grant made after a withdrawal is not burnt for it, however
    # late the policy and the settle run.
    world = World()
    world.open_account("a1")
    world.fund("f1", "a1", usd(2000))
    world.transfers.move(ADMIN, "early", "a1", usd(1000), to_trading=False)  # before any bonus
    world.bonus.grant(ADMIN, "a1", usd(100), grant_id="g1", reason="welcome")
    world.transfers.move(ADMIN, "w1", "a1", usd(500), to_trading=False)  # 100 x 500 / 1,000
    world.bonus.grant(ADMIN, "a1", usd(100), grant_id="g2", reason="promo")  # after w1
    world.runner.run()
    world.bonus.settle()
    assert decided(world, "a1") == [("wd:w1", Decimal(50))]
    assert world.bonus.account("a1").credit == Decimal(150)


def test_a_withdrawal_noted_before_the_figures_were_recorded_still_decodes() -> None:
    # Stored BonusWithdrawalNoted rows of the first shape have no balance_before nor
    # granted_before: they decode with None, and settle decides them on its own reading.
    world = World()
    codec = world.repository.codec
    name = codec.registry.name_of(BonusWithdrawalNoted)
    old = b'{"account_id":"a1","withdrawal_id":"w1","withdrawn":"5.00 USD"}'
    event = codec.decode_event("bonus-a1", name, old)
    assert event == BonusWithdrawalNoted("a1", "w1", usd(5))
    assert isinstance(event, BonusWithdrawalNoted)
    assert (event.balance_before, event.granted_before) == (None, None)
