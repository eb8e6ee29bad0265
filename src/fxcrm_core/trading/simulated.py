"""A deterministic simulated trading server (MT5-shaped), for demos, tests and benchmarks.

Same seed, same clock start, same calls: same logins, tickets, deals and feed. It keeps balances
consistent with its deals (closing profit, commission, swap and fees all land on the balance),
emits updates and deletes the way a dealer's corrections do, and gives some deals equal times.
With a ``state_path`` it outlives the process, as a real server outlives its clients: each call
loads the state from that file and saves it back, under an exclusive file lock, so processes
taking turns see one server (and play the same session as one process making every call).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import random
import secrets
import string
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from fxcrm_core.events import make_converter
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import IdempotencyConflictError, ValidationError
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.trading.deal import Deal, DealAction, DealEntry
from fxcrm_core.trading.server import (
    AccountNotFoundError,
    AccountState,
    AccountStatus,
    BalanceOperation,
    DealChange,
    FeedItem,
    NewTradingAccount,
    TradingServerError,
)

__all__ = ["SimulatedTradingServer"]

_FORMAT = 1
_CONVERTER = make_converter()

DEFAULT_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "XAUUSD.m", "US30")
_PRICES = {
    "EURUSD": Decimal("1.08500"),
    "GBPUSD": Decimal("1.27000"),
    "USDJPY": Decimal("150.250"),
    "XAUUSD": Decimal("2350.00"),
    "XAUUSD.m": Decimal("2350.00"),
    "US30": Decimal("39000.0"),
}
_OPERATIONS = {
    BalanceOperation.DEPOSIT: (DealAction.BALANCE, 1),
    BalanceOperation.WITHDRAWAL: (DealAction.BALANCE, -1),
    BalanceOperation.CREDIT_IN: (DealAction.CREDIT, 1),
    BalanceOperation.CREDIT_OUT: (DealAction.CREDIT, -1),
    BalanceOperation.BONUS: (DealAction.BONUS, 1),
    BalanceOperation.CORRECTION: (DealAction.CORRECTION, 1),
}


@attrs.define
class _Account:
    login: int
    group: str
    leverage: int
    currency: Currency
    enabled: bool = True
    balance: Money = attrs.field(default=None)
    credit: Money = attrs.field(default=None)
    secret_set: bool = False
    trading_enabled: bool = True
    secret_digest: str = ""  # salted: the secret itself is never kept

    def __attrs_post_init__(self) -> None:
        self.balance = self.balance or Money.zero(self.currency)
        self.credit = self.credit or Money.zero(self.currency)


@attrs.define
class _Position:
    position_id: int
    login: int
    symbol: str
    buy: bool
    units: int  # open volume in 1/10,000 lot


class SimulatedTradingServer:
    """An in-process TradingServer. ``simulate_trading`` plays a seeded trading session."""

    def __init__(
        self,
        name: str = "sim-mt5",
        *,
        seed: int = 0,
        clock: Clock | None = None,
        utc_offset: timedelta = timedelta(hours=2),
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        max_leverage: int = 1000,
        first_login: int = 500_000,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.utc_offset = utc_offset
        self._rng = random.Random(seed)
        self._clock = clock or SystemClock()
        self._symbols = tuple(symbols)
        self._max_leverage = max_leverage
        self._accounts: dict[int, _Account] = {}
        self._deals: dict[int, Deal] = {}
        self._positions: dict[int, _Position] = {}
        self._feed: list[FeedItem] = []
        self._keys: dict[str, tuple[tuple[int, str, str], int]] = {}
        # Account changes by idempotency key: (login, operation, value or secret digest).
        self._change_keys: dict[str, tuple[int, str, str]] = {}
        self._salt = secrets.token_hex(16)
        self._next_login = first_login
        self._next_ticket = 1
        self._lock = threading.Lock()
        self._state_path = None if state_path is None else os.fspath(state_path)
        self._seen: bytes | None = None  # the state file as this object last loaded or saved it
        if self._state_path is not None:
            with self._session():
                pass  # a new file gets this initial state; an existing one is this server's

    # -- the state file ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self, *, write: bool = True) -> Iterator[None]:
        """One call: in memory, under the thread lock; with a state file, also under the file
        lock, the file's state loaded first (if another process changed it) and saved after
        (when the call may have changed it). A call that fails saves nothing."""
        with self._lock:
            path = self._state_path
            if path is None:
                yield
                return
            with open(f"{path}.lock", "ab") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX if write else fcntl.LOCK_SH)
                try:
                    self._load(path)
                    yield
                    if write:
                        self._save(path)
                except BaseException:
                    self._seen = None  # memory may hold half a call: read the file next time
                    raise

    def _load(self, path: str) -> None:
        try:
            with open(path, "rb") as file:
                raw = file.read()
        except FileNotFoundError:
            if self._seen is not None:
                raise TradingServerError("the simulated server's state file is gone") from None
            return  # a new server: the state is this object's initial one
        if raw == self._seen:
            return  # as this object last loaded or saved it: memory is current
        self._set_state(json.loads(raw))
        self._seen = raw

    def _save(self, path: str) -> None:
        raw = json.dumps(self._state(), separators=(",", ":")).encode()
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as file:
            file.write(raw)
        os.replace(temporary, path)  # readers see the old state or the new, never half
        self._seen = raw

    def _state(self) -> dict[str, Any]:
        version, internal, gauss = self._rng.getstate()
        return {
            "format": _FORMAT,
            "name": self.name,
            "rng": [version, list(internal), gauss],
            "next_login": self._next_login,
            "next_ticket": self._next_ticket,
            "accounts": _CONVERTER.unstructure(list(self._accounts.values()), list[_Account]),
            "positions": _CONVERTER.unstructure(list(self._positions.values()), list[_Position]),
            # The deals are the fold of the feed: it alone is kept.
            "feed": _CONVERTER.unstructure(self._feed, list[FeedItem]),
            "keys": [[key, *content, ticket] for key, (content, ticket) in self._keys.items()],
            "change_keys": [[key, *content] for key, content in self._change_keys.items()],
            "salt": self._salt,
        }

    def _set_state(self, doc: dict[str, Any]) -> None:
        if doc.get("format") != _FORMAT:
            raise TradingServerError("the simulated server's state file has an unknown format")
        if doc.get("name") != self.name:
            raise TradingServerError("the state file belongs to another simulated server")
        version, internal, gauss = doc["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._next_login = int(doc["next_login"])
        self._next_ticket = int(doc["next_ticket"])
        accounts = _CONVERTER.structure(doc["accounts"], list[_Account])
        self._accounts = {a.login: a for a in accounts}
        positions = _CONVERTER.structure(doc["positions"], list[_Position])
        self._positions = {p.position_id: p for p in positions}
        self._feed = _CONVERTER.structure(doc["feed"], list[FeedItem])
        self._deals = {}
        for item in self._feed:  # in feed order: the same dict order as the live server's
            if item.change is DealChange.DELETED:
                self._deals.pop(item.deal.ticket, None)
            else:
                self._deals[item.deal.ticket] = item.deal
        self._keys = {
            key: ((int(login), str(operation), str(amount)), int(ticket))
            for key, login, operation, amount, ticket in doc["keys"]
        }
        self._change_keys = {
            key: (int(login), str(operation), str(value))
            for key, login, operation, value in doc.get("change_keys", [])
        }
        self._salt = str(doc.get("salt", self._salt))

    # -- accounts ------------------------------------------------------------------------
    def create_account(self, request: NewTradingAccount) -> int:
        if not request.group:
            raise ValidationError("a trading account needs a group")
        self._check_leverage(request.leverage)
        currency = Currency.of(request.currency)
        with self._session():
            login = self._next_login
            self._next_login += 1
            self._accounts[login] = _Account(login, request.group, request.leverage, currency)
        return login

    def _check_leverage(self, leverage: int) -> None:
        if isinstance(leverage, bool) or not isinstance(leverage, int):
            raise ValidationError("leverage must be an integer (100 means 1:100)")
        if not 1 <= leverage <= self._max_leverage:
            raise TradingServerError(f"leverage must be from 1 to {self._max_leverage}")

    def _account(self, login: int) -> _Account:
        account = self._accounts.get(login)
        if account is None:
            raise AccountNotFoundError(f"no account {login} on {self.name}")
        return account

    def _replayed(self, key: str | None, content: tuple[int, str, str]) -> bool:
        """True if ``key`` already did this change; a key that did another is a conflict."""
        if key is None:
            return False
        previous = self._change_keys.get(key)
        if previous is None:
            return False
        if previous != content:
            raise IdempotencyConflictError("account change key reused for a different change")
        return True

    def change_group(self, login: int, group: str, *, idempotency_key: str | None = None) -> bool:
        if not group:
            raise ValidationError("a trading account needs a group")
        content = (login, "group", group)
        with self._session():
            if self._replayed(idempotency_key, content):
                return False
            self._account(login).group = group
            if idempotency_key is not None:
                self._change_keys[idempotency_key] = content
        return True

    def change_leverage(self, login: int, leverage: int) -> None:
        self._check_leverage(leverage)
        with self._session():
            self._account(login).leverage = leverage

    def change_password(
        self, login: int, secret: str, *, idempotency_key: str | None = None
    ) -> bool:
        """MT5's rules for a master password: 8 to 16 characters with a lower-case and an
        upper-case letter, a digit and a special character."""
        _check_secret(secret)
        with self._session():
            digest = self._digest(login, secret)
            content = (login, "password", digest)
            if self._replayed(idempotency_key, content):
                return False
            account = self._account(login)
            account.secret_set, account.secret_digest = True, digest
            if idempotency_key is not None:
                self._change_keys[idempotency_key] = content
        return True

    def _digest(self, login: int, secret: str) -> str:
        message = f"{login}\0{secret}".encode()
        return hmac.new(self._salt.encode(), message, hashlib.sha256).hexdigest()

    def check_password(self, login: int, secret: str) -> bool:
        """True if ``secret`` is the account's password (as a terminal's login would check)."""
        with self._session(write=False):
            account = self._account(login)
            digest = self._digest(login, secret)
            return account.secret_set and hmac.compare_digest(account.secret_digest, digest)

    def set_enabled(self, login: int, enabled: bool) -> None:
        with self._session():
            self._account(login).enabled = enabled

    def set_status(
        self, login: int, status: AccountStatus, *, idempotency_key: str | None = None
    ) -> bool:
        if not isinstance(status, AccountStatus):
            raise ValidationError("an account status is an AccountStatus")
        content = (login, "status", status.value)
        with self._session():
            if self._replayed(idempotency_key, content):
                return False
            account = self._account(login)
            account.enabled = status is not AccountStatus.DISABLED
            account.trading_enabled = status is AccountStatus.ENABLED
            if idempotency_key is not None:
                self._change_keys[idempotency_key] = content
        return True

    def account_state(self, login: int) -> AccountState:
        with self._session(write=False):
            a = self._account(login)
            return AccountState(
                a.login,
                a.group,
                a.leverage,
                a.enabled,
                a.balance,
                a.credit,
                a.balance + a.credit,
                trading_enabled=a.trading_enabled,
            )

    # -- money ---------------------------------------------------------------------------
    def balance_operation_made(self, login: int, idempotency_key: str) -> int | None:
        with self._session(write=False):
            previous = self._keys.get(idempotency_key)
            if previous is None or previous[0][0] != login:
                return None
            return previous[1]

    def balance_operation(
        self,
        login: int,
        operation: BalanceOperation,
        amount: Money,
        *,
        comment: str,
        idempotency_key: str,
    ) -> int:
        content = (login, operation.value, str(amount))
        with self._session():
            previous = self._keys.get(idempotency_key)
            if previous is not None:
                if previous[0] != content:
                    raise IdempotencyConflictError(
                        "balance operation key reused for a different operation"
                    )
                return previous[1]
            account = self._account(login)
            if amount.currency != account.currency:
                raise TradingServerError("amount is not in the account's currency")
            action, sign = _OPERATIONS[operation]
            if operation is BalanceOperation.CORRECTION:
                if amount.is_zero():
                    raise ValidationError("a correction must not be zero")
            else:
                amount.require_positive("balance operation amount")
            signed = amount * sign
            if action is DealAction.CREDIT:
                if (account.credit + signed).is_negative():
                    raise TradingServerError("not enough credit on the account")
                account.credit = account.credit + signed
            else:
                if (account.balance + signed).is_negative():
                    raise TradingServerError("not enough money on the account")
                account.balance = account.balance + signed
            deal = self._new_deal(
                login, action, DealEntry.IN, "", 0, Decimal(0), 0, profit=signed, comment=comment
            )
            self._keys[idempotency_key] = (content, deal.ticket)
            return deal.ticket

    # -- the feed --------------------------------------------------------------------------
    def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
        with self._session(write=False):
            start = max(after_cursor, 0)
            return self._feed[start : start + limit]

    def deal(self, ticket: int) -> Deal | None:
        with self._session(write=False):
            return self._deals.get(ticket)

    # -- drills: differences a dealer's manual work leaves, for reconciliation tests ------------
    def inject_update(self, ticket: int, profit: Money) -> None:
        """Change a deal's amount as a dealer's correction would (balance follows)."""
        with self._session():
            deal = self._deals[ticket]
            fixed = attrs.evolve(deal, profit=profit)
            self._deals[ticket] = fixed
            self._book(deal.login, profit - deal.profit)
            self._emit(DealChange.UPDATED, fixed)

    def inject_delete(self, ticket: int) -> None:
        """Delete a deal as a dealer could (balance follows)."""
        with self._session():
            deal = self._deals.pop(ticket)
            self._book(deal.login, -(deal.profit + deal.commission + deal.swap + deal.fee))
            self._emit(DealChange.DELETED, deal)

    def _emit(self, change: DealChange, deal: Deal) -> None:
        self._feed.append(FeedItem(len(self._feed) + 1, change, deal))

    def _new_deal(
        self,
        login: int,
        action: DealAction,
        entry: DealEntry,
        symbol: str,
        units: int,
        price: Decimal,
        position_id: int,
        *,
        profit: Money | None = None,
        commission: Money | None = None,
        swap: Money | None = None,
        closed_units: int = 0,
        comment: str = "",
        at: datetime | None = None,
    ) -> Deal:
        cur = self._accounts[login].currency
        ticket = self._next_ticket
        self._next_ticket += 1
        deal = Deal(
            server=self.name,
            ticket=ticket,
            login=login,
            action=action,
            entry=entry,
            symbol=symbol,
            volume=Decimal(units) / 10_000,
            volume_closed=Decimal(closed_units) / 10_000,
            price=price,
            position_id=position_id or (ticket if action.is_trade else 0),
            order=ticket if action.is_trade else 0,
            commission=commission or Money.zero(cur),
            fee=Money.zero(cur),
            swap=swap or Money.zero(cur),
            profit=profit or Money.zero(cur),
            time=at or self._clock.now(),
            server_offset=self.utc_offset,
            comment=comment,
        )
        self._deals[ticket] = deal
        self._emit(DealChange.ADDED, deal)
        return deal

    # -- simulation --------------------------------------------------------------------------
    def simulate_trading(self, deals: int, *, step: timedelta = timedelta(seconds=7)) -> int:
        """Play ``deals`` trading deals across funded, enabled accounts; returns how many.

        Opens, partial and full closes, reversals (in/out) and close-by; a commission per lot on
        every trade, swaps on closes; about 1 in 50 deals later updated (a dealer correction)
        and 1 in 100 deleted. Every tenth deal shares its time with the one before. Negative
        balance protection: a balance pushed below zero is brought back by a stop-out
        compensation deal, and the account opens no new positions.
        """
        rng = self._rng
        made = 0
        moment = self._clock.now()
        with self._session():
            logins = [
                a.login for a in self._accounts.values() if a.enabled and a.balance.is_positive()
            ]
            if not logins:
                return 0
            while made < deals:
                if made % 10:
                    moment += step * rng.randint(1, 5)
                login = rng.choice(logins)
                open_positions = [p for p in self._positions.values() if p.login == login]
                roll = rng.random()
                funded = self._accounts[login].balance.is_positive()
                if not open_positions and not funded:
                    if all(not self._accounts[x].balance.is_positive() for x in logins):
                        return made  # everyone is stopped out
                    continue
                if not open_positions or (roll < 0.45 and funded):
                    self._open(login, rng, moment)
                elif roll < 0.9:
                    self._close(rng.choice(open_positions), rng, moment, partial=rng.random() < 0.3)
                elif roll < 0.95:
                    self._reverse(rng.choice(open_positions), rng, moment)
                else:
                    self._close_by(login, open_positions, rng, moment)
                made += 1
                self._protect(login, moment)
                if rng.random() < 0.02:
                    self._correct(rng)
                if rng.random() < 0.01:
                    self._delete(rng)
        return made

    def _protect(self, login: int, at: datetime) -> None:
        balance = self._accounts[login].balance
        if balance.is_negative():
            self._new_deal(
                login, DealAction.SO_COMPENSATION, DealEntry.IN, "", 0, Decimal(0), 0,
                profit=-balance, comment="negative balance protection", at=at,
            )  # fmt: skip
            self._book(login, -balance)

    def _commission(self, login: int, units: int) -> Money:
        # $3.50 per lot per side, in the account currency's minor units.
        cur = self._accounts[login].currency
        return Money.from_minor(-(units * 350 // 10_000), cur)

    def _price(self, symbol: str, rng: random.Random) -> Decimal:
        base = _PRICES.get(symbol, Decimal("100.00"))
        move = Decimal(rng.randint(-200, 200)) / 10_000
        return (base * (1 + move)).quantize(base)

    def _book(self, login: int, money: Money) -> None:
        account = self._accounts[login]
        account.balance = account.balance + money

    def _open(self, login: int, rng: random.Random, at: datetime) -> None:
        symbol = rng.choice(self._symbols)
        units = rng.choice([100, 1000, 2500, 10_000, 50_000, 100_000])
        commission = self._commission(login, units)
        buy = rng.random() < 0.5
        deal = self._new_deal(
            login,
            DealAction.BUY if buy else DealAction.SELL,
            DealEntry.IN,
            symbol,
            units,
            self._price(symbol, rng),
            0,
            commission=commission,
            at=at,
        )
        self._book(login, commission)
        self._positions[deal.ticket] = _Position(deal.ticket, login, symbol, buy, units)

    def _close(self, pos: _Position, rng: random.Random, at: datetime, *, partial: bool) -> None:
        units = max(pos.units // 2, 1) if partial and pos.units > 1 else pos.units
        cur = self._accounts[pos.login].currency
        profit = Money.from_minor(rng.randint(-50_000, 60_000) * units // 10_000, cur)
        swap = Money.from_minor(-rng.randint(0, 300) * units // 10_000, cur)
        commission = self._commission(pos.login, units)
        self._new_deal(
            pos.login,
            DealAction.SELL if pos.buy else DealAction.BUY,
            DealEntry.OUT,
            pos.symbol,
            units,
            self._price(pos.symbol, rng),
            pos.position_id,
            profit=profit,
            commission=commission,
            swap=swap,
            closed_units=units,
            at=at,
        )
        self._book(pos.login, profit + commission + swap)
        pos.units -= units
        if pos.units == 0:
            del self._positions[pos.position_id]

    def _reverse(self, pos: _Position, rng: random.Random, at: datetime) -> None:
        # One in/out deal closes the position and opens the opposite one with the remainder.
        units = pos.units * 2
        cur = self._accounts[pos.login].currency
        profit = Money.from_minor(rng.randint(-30_000, 30_000) * pos.units // 10_000, cur)
        commission = self._commission(pos.login, units)
        self._new_deal(
            pos.login,
            DealAction.SELL if pos.buy else DealAction.BUY,
            DealEntry.INOUT,
            pos.symbol,
            units,
            self._price(pos.symbol, rng),
            pos.position_id,
            profit=profit,
            commission=commission,
            closed_units=pos.units,
            at=at,
        )
        self._book(pos.login, profit + commission)
        pos.buy = not pos.buy

    def _close_by(
        self, login: int, positions: list[_Position], rng: random.Random, at: datetime
    ) -> None:
        pos = positions[0]
        opposite = next((p for p in positions if p.symbol == pos.symbol and p.buy != pos.buy), None)
        if opposite is None:
            self._close(pos, rng, at, partial=False)
            return
        units = min(pos.units, opposite.units)
        for p in (pos, opposite):
            # Close-by: two OUT_BY deals, no commission, the profit split between them.
            cur = self._accounts[login].currency
            profit = Money.from_minor(rng.randint(-10_000, 10_000) * units // 10_000, cur)
            self._new_deal(
                login,
                DealAction.SELL if p.buy else DealAction.BUY,
                DealEntry.OUT_BY,
                p.symbol,
                units,
                self._price(p.symbol, rng),
                p.position_id,
                profit=profit,
                closed_units=units,
                at=at,
            )
            self._book(login, profit)
            p.units -= units
            if p.units == 0:
                del self._positions[p.position_id]

    def _trades(self) -> list[Deal]:
        return [d for d in self._deals.values() if d.action.is_trade]

    def _correct(self, rng: random.Random) -> None:
        trades = self._trades()
        if not trades:
            return
        deal = rng.choice(trades)
        fixed = attrs.evolve(deal, commission=deal.commission - Money.from_minor(50, deal.currency))
        self._deals[deal.ticket] = fixed
        self._book(deal.login, fixed.commission - deal.commission)
        self._emit(DealChange.UPDATED, fixed)

    def _delete(self, rng: random.Random) -> None:
        closes = [d for d in self._trades() if d.entry is DealEntry.OUT]
        if not closes:
            return
        deal = rng.choice(closes)
        del self._deals[deal.ticket]
        self._book(deal.login, -(deal.profit + deal.commission + deal.swap))
        self._emit(DealChange.DELETED, deal)


_SPECIAL = frozenset(string.punctuation)


def _check_secret(secret: str) -> None:
    # The messages name the rule broken, never the secret.
    if not isinstance(secret, str):
        raise ValidationError("a trading password is text")
    if not 8 <= len(secret) <= 16:
        raise ValidationError("a trading password has 8 to 16 characters")
    if not all(c.isascii() and c.isprintable() and not c.isspace() for c in secret):
        raise ValidationError("a trading password is printable ASCII without spaces")
    classes = (str.islower, str.isupper, str.isdigit, _SPECIAL.__contains__)
    if not all(any(test(c) for c in secret) for test in classes):
        raise ValidationError(
            "a trading password needs a lower-case and an upper-case letter, a digit and a "
            "special character"
        )
