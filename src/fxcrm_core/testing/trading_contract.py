"""The contract of the TradingServer port: subclass and implement :meth:`make_server`.

The server it makes must start empty (no accounts) and allow leverage up to at least 1:500, and
accept a password that keeps MT5's rules (8 to 16 characters: lower, upper, digit, special).
"""

from __future__ import annotations

import pytest

from fxcrm_core.kernel.errors import (
    IdempotencyConflictError,
    NegativeAmountError,
    ValidationError,
)
from fxcrm_core.kernel.money import Money
from fxcrm_core.trading.deal import DealAction
from fxcrm_core.trading.server import (
    AccountNotFoundError,
    AccountStatus,
    BalanceOperation,
    DealChange,
    NewTradingAccount,
    TradingServer,
    TradingServerError,
)

__all__ = ["TradingServerContract"]

_SECRET = "Canary-pw-7731!"  # a password no message, repr or state may show


class TradingServerContract:
    def make_server(self) -> TradingServer:
        raise NotImplementedError

    @pytest.fixture
    def server(self) -> TradingServer:
        return self.make_server()

    @staticmethod
    def _open(server: TradingServer, leverage: int = 100) -> int:
        return server.create_account(NewTradingAccount("retail\\std-usd", leverage, "USD", "c-1"))

    def test_accounts_get_distinct_logins_and_start_empty(self, server: TradingServer) -> None:
        a, b = self._open(server), self._open(server)
        assert a != b
        state = server.account_state(a)
        assert (state.login, state.group, state.leverage, state.enabled) == (
            a,
            "retail\\std-usd",
            100,
            True,
        )
        assert state.balance == Money.zero("USD")

    def test_changes_show_in_the_account_state(self, server: TradingServer) -> None:
        login = self._open(server)
        server.change_group(login, "pro\\usd")
        server.change_leverage(login, 500)
        server.set_enabled(login, False)
        server.change_password(login, "A-long-secret-1")
        state = server.account_state(login)
        assert (state.group, state.leverage, state.enabled) == ("pro\\usd", 500, False)
        assert state.status is AccountStatus.DISABLED

    def test_status_enabled_read_only_disabled(self, server: TradingServer) -> None:
        login = self._open(server)
        assert server.account_state(login).status is AccountStatus.ENABLED
        seen: list[tuple[AccountStatus, bool, bool]] = []
        for status in (
            AccountStatus.READ_ONLY,
            AccountStatus.DISABLED,
            AccountStatus.ENABLED,
            AccountStatus.DISABLED,
            AccountStatus.READ_ONLY,
        ):
            assert server.set_status(login, status, idempotency_key=f"s-{len(seen)}") is True
            state = server.account_state(login)
            seen.append((state.status, state.enabled, state.trading_enabled))
        assert [s[0] for s in seen] == [
            AccountStatus.READ_ONLY,
            AccountStatus.DISABLED,
            AccountStatus.ENABLED,
            AccountStatus.DISABLED,
            AccountStatus.READ_ONLY,
        ]
        assert seen[0][1:] == (True, False)  # read-only: may log in, may not trade
        assert seen[2][1:] == (True, True)
        assert not seen[1][1]

    def test_account_changes_are_idempotent_by_key(self, server: TradingServer) -> None:
        login = self._open(server)
        assert server.change_group(login, "pro\\usd", idempotency_key="g-1") is True
        assert server.set_status(login, AccountStatus.DISABLED, idempotency_key="st-1") is True
        assert server.change_password(login, _SECRET, idempotency_key="pw-1") is True
        # Later changes without those keys, then the retries: they change nothing back.
        server.change_group(login, "retail\\usd", idempotency_key="g-2")
        server.set_status(login, AccountStatus.ENABLED, idempotency_key="st-2")
        assert server.change_group(login, "pro\\usd", idempotency_key="g-1") is False
        assert server.set_status(login, AccountStatus.DISABLED, idempotency_key="st-1") is False
        assert server.change_password(login, _SECRET, idempotency_key="pw-1") is False
        state = server.account_state(login)
        assert (state.group, state.status) == ("retail\\usd", AccountStatus.ENABLED)

    def test_a_change_key_reused_for_another_change_is_refused(self, server: TradingServer) -> None:
        login, other = self._open(server), self._open(server)
        server.change_group(login, "pro\\usd", idempotency_key="g-1")
        server.change_password(login, _SECRET, idempotency_key="pw-1")
        server.set_status(login, AccountStatus.READ_ONLY, idempotency_key="st-1")
        with pytest.raises(IdempotencyConflictError):
            server.change_group(login, "vip\\usd", idempotency_key="g-1")
        with pytest.raises(IdempotencyConflictError):
            server.change_group(other, "pro\\usd", idempotency_key="g-1")
        with pytest.raises(IdempotencyConflictError) as conflict:
            server.change_password(login, "Other-pw-8842?", idempotency_key="pw-1")
        assert "Other-pw" not in str(conflict.value)
        with pytest.raises(IdempotencyConflictError):
            server.set_status(login, AccountStatus.DISABLED, idempotency_key="st-1")
        with pytest.raises(IdempotencyConflictError):
            server.set_status(login, AccountStatus.READ_ONLY, idempotency_key="g-1")
        state = server.account_state(login)
        assert (state.group, state.status) == ("pro\\usd", AccountStatus.READ_ONLY)
        assert server.account_state(other).group == "retail\\std-usd"

    def test_weak_passwords_are_refused_without_echo(self, server: TradingServer) -> None:
        login = self._open(server)
        for weak in (
            "Sh0rt!",
            "nouppercase-12",
            "NOLOWERCASE-12",
            "No-digits-here",
            "NoSpecial123",
        ):
            with pytest.raises((TradingServerError, ValidationError)) as refused:
                server.change_password(login, weak, idempotency_key=f"w-{weak}")
            assert weak not in str(refused.value)
            assert weak not in repr(refused.value)
        # The keys of refused calls are not spent: a good password under one of them works.
        assert server.change_password(login, _SECRET, idempotency_key="w-Sh0rt!") is True
        assert _SECRET not in repr(server.account_state(login))

    def test_unknown_accounts(self, server: TradingServer) -> None:
        with pytest.raises(AccountNotFoundError):
            server.account_state(1)
        with pytest.raises(AccountNotFoundError):
            server.change_leverage(1, 100)
        with pytest.raises(AccountNotFoundError):
            server.change_group(1, "pro\\usd", idempotency_key="u-1")
        with pytest.raises(AccountNotFoundError):
            server.change_password(1, _SECRET, idempotency_key="u-2")
        with pytest.raises(AccountNotFoundError):
            server.set_status(1, AccountStatus.DISABLED, idempotency_key="u-3")

    def test_balance_operations_return_the_deal_and_feed_it(self, server: TradingServer) -> None:
        login = self._open(server)
        ticket = server.balance_operation(
            login,
            BalanceOperation.DEPOSIT,
            Money.of(1000, "USD"),
            comment="d",
            idempotency_key="k1",
        )
        server.balance_operation(
            login,
            BalanceOperation.WITHDRAWAL,
            Money.of(300, "USD"),
            comment="w",
            idempotency_key="k2",
        )
        server.balance_operation(
            login,
            BalanceOperation.CREDIT_IN,
            Money.of(50, "USD"),
            comment="c",
            idempotency_key="k3",
        )
        state = server.account_state(login)
        assert state.balance == Money.of(700, "USD")
        assert state.credit == Money.of(50, "USD")
        feed = server.deal_feed()
        mine = [item for item in feed if item.deal.login == login]
        assert [i.deal.action for i in mine] == [
            DealAction.BALANCE,
            DealAction.BALANCE,
            DealAction.CREDIT,
        ]
        assert [i.deal.profit for i in mine] == [
            Money.of(1000, "USD"),
            Money.of(-300, "USD"),
            Money.of(50, "USD"),
        ]
        assert mine[0].deal.ticket == ticket
        assert all(i.change is DealChange.ADDED for i in mine)

    def test_balance_operations_are_idempotent_by_key(self, server: TradingServer) -> None:
        login = self._open(server)
        amount = Money.of(100, "USD")
        first = server.balance_operation(
            login, BalanceOperation.DEPOSIT, amount, comment="d", idempotency_key="psp-1"
        )
        again = server.balance_operation(
            login, BalanceOperation.DEPOSIT, amount, comment="d", idempotency_key="psp-1"
        )
        assert first == again
        assert server.account_state(login).balance == amount
        assert server.balance_operation_made(login, "psp-1") == first
        assert server.balance_operation_made(login, "psp-2") is None
        assert server.balance_operation_made(self._open(server), "psp-1") is None
        with pytest.raises(IdempotencyConflictError):
            server.balance_operation(
                login,
                BalanceOperation.DEPOSIT,
                Money.of(5, "USD"),
                comment="d",
                idempotency_key="psp-1",
            )

    def test_refusals_change_nothing(self, server: TradingServer) -> None:
        login = self._open(server)
        before = len(server.deal_feed(limit=100_000))
        with pytest.raises(TradingServerError):
            server.balance_operation(
                login,
                BalanceOperation.WITHDRAWAL,
                Money.of(1, "USD"),
                comment="w",
                idempotency_key="x1",
            )
        with pytest.raises(NegativeAmountError):
            server.balance_operation(
                login,
                BalanceOperation.DEPOSIT,
                Money.of(-1, "USD"),
                comment="d",
                idempotency_key="x2",
            )
        with pytest.raises((TradingServerError, ValidationError)):
            server.change_leverage(login, 0)
        assert len(server.deal_feed(limit=100_000)) == before
        assert server.account_state(login).balance == Money.zero("USD")
        assert server.account_state(login).leverage == 100

    def test_feed_cursor_pages_without_gaps_or_repeats(self, server: TradingServer) -> None:
        login = self._open(server)
        for n in range(7):
            server.balance_operation(
                login,
                BalanceOperation.DEPOSIT,
                Money.of(1, "USD"),
                comment="d",
                idempotency_key=f"p{n}",
            )
        seen: list[int] = []
        cursor = 0
        while page := server.deal_feed(after_cursor=cursor, limit=3):
            seen.extend(item.cursor for item in page)
            cursor = page[-1].cursor
        assert seen == sorted(set(seen))
        assert len(seen) == len(server.deal_feed(limit=100_000))
        assert server.deal_feed(after_cursor=cursor) == []
