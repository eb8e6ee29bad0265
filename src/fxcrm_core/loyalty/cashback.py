"""Cashback per lot (issue 15, item 4): lots closed per client and trading day, the day's amount
fixed at its close and paid the next trading day to the client's wallet through the ledger.

The rules, in one place:

- a closing trade deal (entry OUT, IN/OUT or OUT_BY: ``DealEntry.closes``) earns its lots
  closed times a rate per lot: the plan's rate for its symbol, else ``rate_of(client, deal
  time)`` (the tier's ``Benefits.cashback_per_lot``), else the plan's default; a deal of an
  excluded symbol or on a login of an excluded group earns nothing. The rate, and the
  exclusion, are judged once, when the deal is first counted (the login's group as the policy
  read it at that point of the log): an updated deal keeps the rate it was counted at, or stays
  excluded (its lots are counted again), whatever group the login is in by then; a deleted one
  counts nothing, for good;
- a deal counts for the trading day of its time (``TradingCalendar``). When that day closes
  (``TradingDayClosed``) each client's day is *fixed*: its deals, lots, rates and exact amount
  are recorded (``CashbackDayFixed``), and what is payable is the amount rounded down to the
  currency's minor unit;
- a deal added, updated or deleted after its day closed does not reopen the day: the change it
  makes (new amount less the amount counted) is an *adjustment* added to the client's next fixed
  day. A day's payable is ``max(0, amount + adjustment + carry)`` rounded down, and what is not
  paid (a negative total, or the fraction below a cent) is carried to the next fixed day: a
  client is never paid twice for a deal, and never owes more than it was paid (a negative
  balance only lowers later cashback);
- a fixed day is paid from the trading day after it (``pay_on``) by :meth:`Cashback.pay_due`, as
  the ledger transfer ``cashback:<client>:<day>`` from the broker's ``cashback:<ccy>`` account to
  the client's wallet, with ``CashbackPaid`` in the same append: once per client and day whatever
  the retries and processes. Cashback is paid in the plan's currency, to the wallet of that
  currency (no conversion);
- a deal may be counted, corrected or deleted up to ``CashbackPlan.correction_days`` calendar
  days after its trading day (30 by default): what each deal counted is kept that long after
  the client's last fixed day, then forgotten (a client's state stays bounded), and a later
  change to an older deal, or an older deal arriving late, counts nothing (the rebate engine's
  horizon works the same way). A deal arriving more than ``correction_days`` after its trading
  day (the newest deal of its feed batch, at most the day the batch was recorded) counts
  nothing either, and what a client's batches recorded is forgotten on the same horizon (so the
  excluded deals of a client with no day to fix stay bounded);
- :meth:`Cashback.close_day` fixes only a trading day that has ended by the service's clock (a
  day still running, or ahead, is refused): the policy's ``TradingDayClosed`` is already bounded
  by the broker's clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from types import MappingProxyType
from typing import Any, Self

import attrs

from fxcrm_core.events import DomainEvent, EventMetadata, RecordedEvent, Repository, UnitOfWork
from fxcrm_core.events.aggregate import Aggregate
from fxcrm_core.events.store import TypeCursor
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import ConcurrencyError, ValidationError
from fxcrm_core.kernel.money import Currency, Money
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.trading_day import TradingCalendar
from fxcrm_core.ledger import Ledger, TransferRequest
from fxcrm_core.loyalty.programme import short_name
from fxcrm_core.payments import MoneyAccounts
from fxcrm_core.trading import Deal, DealChange, DealsReceived

__all__ = [
    "CASHBACK_EVENTS",
    "CASHBACK_POLICY",
    "Cashback",
    "CashbackAccount",
    "CashbackBook",
    "CashbackClientsOpened",
    "CashbackDayClosed",
    "CashbackDayFixed",
    "CashbackDealsCounted",
    "CashbackPaid",
    "CashbackPlan",
    "CountedDeal",
]

#: The policy's name in the log (position stream ``policy-loyalty-cashback``); its upstream
#: events are ``DealsReceived`` and ``TradingDayClosed`` (in one policy: log order matters).
CASHBACK_POLICY = "loyalty-cashback"

_ZERO = Decimal(0)
_SYSTEM = "system:loyalty-cashback"

RateOf = Callable[[str, datetime], "Money | None"]
ClientOf = Callable[[str, int], "str | None"]
GroupOf = Callable[[str, int], "str | None"]


def _currency(value: str | Currency) -> Currency:
    return Currency.of(value)


def _money_map(value: Mapping[str, Money]) -> Mapping[str, Money]:
    if not isinstance(value, Mapping):
        raise ValidationError("per-symbol rates are a mapping of symbol to Money")
    return MappingProxyType(dict(value))


def _names(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError("exclusions are a collection of names")
    return frozenset(short_name(v, "an excluded name") for v in value)


@attrs.frozen
class CashbackPlan:
    """What a lot closed earns: ``per_symbol`` rates (Money per lot), else the ``rate_of``
    callable the service is given, else ``default_rate``; nothing for ``excluded_symbols`` nor
    for logins in ``excluded_groups``. Every rate is in ``currency``, the currency paid."""

    currency: Currency = attrs.field(converter=_currency)
    per_symbol: Mapping[str, Money] = attrs.field(factory=dict, converter=_money_map)
    default_rate: Money | None = None
    excluded_symbols: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    excluded_groups: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    correction_days: int = 30

    def __attrs_post_init__(self) -> None:
        days = self.correction_days
        if type(days) is not int or not 1 <= days <= 3650:
            raise ValidationError("correction_days is a whole number of days from 1 to 3650")
        for symbol, rate in self.per_symbol.items():
            short_name(symbol, "a symbol")
            self.check_rate(rate)
        if self.default_rate is not None:
            self.check_rate(self.default_rate)

    def check_rate(self, rate: object) -> Money:
        """``rate`` if it is Money of zero or more in the plan's currency, else a typed error."""
        if not isinstance(rate, Money) or rate.is_negative():
            raise ValidationError("a cashback rate is Money per lot, zero or more")
        if rate.currency != self.currency:
            raise ValidationError("a cashback rate is in the plan's currency")
        return rate


# -- events -------------------------------------------------------------------------------------


@attrs.frozen
class CountedDeal:
    """One deal as counted: its day, lots closed, rate (None: excluded, earns nothing, and stays
    excluded on an update) and exact amount; ``late``: its day had closed, so ``change`` (amount
    less the amount counted before) goes to the next fixed day. An excluded deal is kept (so an
    update cannot re-rate it) but never opens a day to fix."""

    deal_key: str
    trading_day: date
    symbol: str
    lots: Decimal
    rate: Money | None
    amount: Decimal
    change: Decimal
    late: bool = False
    deleted: bool = False


@attrs.frozen
class CashbackDealsCounted(DomainEvent):
    """Closing deals of one feed batch counted for ``client_id``; ``forget_before`` (None: no
    change) moves the correction horizon to the trading day of the batch's newest deal (at most
    the day it was recorded) less ``correction_days``:
    deals older than it and waiting for no fix are forgotten."""

    client_id: str
    deals: tuple[CountedDeal, ...]
    forget_before: date | None = None


@attrs.frozen
class CashbackDayFixed(DomainEvent):
    """The client's ``trading_day`` fixed at its close: ``deals`` counted for ``lots`` at
    ``rates`` ((rate, lots) pairs) make ``amount`` (exact); with ``adjustment`` (late changes)
    and ``carried_in``, ``payable`` is due from ``pay_on`` and ``carried_out`` waits for the
    next fixed day. What deals older than ``forget_before`` counted is forgotten from here on
    (None: kept)."""

    client_id: str
    trading_day: date
    pay_on: date
    deals: int
    lots: Decimal
    rates: tuple[tuple[str, str], ...]
    amount: Decimal
    adjustment: Decimal
    carried_in: Decimal
    payable: Money
    carried_out: Decimal
    forget_before: date | None = None


@attrs.frozen
class CashbackPaid(DomainEvent):
    """The day's payable posted to the client's wallet by ledger transfer ``transfer_id``."""

    client_id: str
    trading_day: date
    amount: Money
    transfer_id: str


@attrs.frozen
class CashbackClientsOpened(DomainEvent):
    """Clients with deals counted and not yet fixed (the book's to-do list)."""

    clients: tuple[str, ...]


@attrs.frozen
class CashbackDayClosed(DomainEvent):
    """The policy fixed ``trading_day`` for ``fixed``; ``still_open`` have later days counted."""

    trading_day: date
    fixed: tuple[str, ...]
    still_open: tuple[str, ...]


CASHBACK_EVENTS: tuple[type[DomainEvent], ...] = (
    CashbackDealsCounted,
    CashbackDayFixed,
    CashbackPaid,
    CashbackClientsOpened,
    CashbackDayClosed,
)


# -- state --------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CashbackAccount(Aggregate):
    """One client's cashback (id: the client id): every deal as last counted, the deal keys of
    each day not fixed yet, the adjustment and carry waiting for the next fixed day, and each
    fixed day's payable and whether it was paid (days before ``forgotten_before`` only while
    unpaid), and the total ever paid."""

    category = "cashback"
    deals: Mapping[str, CountedDeal] = attrs.field(factory=dict)
    open: Mapping[date, frozenset[str]] = attrs.field(factory=dict)
    adjustment: Decimal = _ZERO
    carry: Decimal = _ZERO
    fixed: Mapping[date, CashbackDayFixed] = attrs.field(factory=dict)
    paid: Mapping[date, CashbackPaid] = attrs.field(factory=dict)
    forgotten_before: date | None = None
    paid_total: Decimal = _ZERO

    @property
    def unpaid(self) -> list[CashbackDayFixed]:
        """Fixed days with something payable and not paid yet, oldest first."""
        return [
            f
            for d, f in sorted(self.fixed.items())
            if f.payable.is_positive() and d not in self.paid
        ]

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case CashbackDealsCounted():
                deals = dict(self.deals)
                open_ = dict(self.open)
                adjustment = self.adjustment
                for d in event.deals:
                    deals[d.deal_key] = d
                    if d.late:
                        adjustment += d.change
                    elif d.rate is not None:  # an excluded deal never opens a day
                        open_[d.trading_day] = open_.get(d.trading_day, frozenset()) | {d.deal_key}
                edge = event.forget_before
                if edge is None or (self.forgotten_before and edge <= self.forgotten_before):
                    return self.evolve(deals=deals, open=open_, adjustment=adjustment)
                waiting = {k for keys in open_.values() for k in keys}
                deals = {
                    k: d for k, d in deals.items() if d.trading_day >= edge or k in waiting
                }  # fmt: skip
                return self.evolve(
                    deals=deals, open=open_, adjustment=adjustment, forgotten_before=edge
                )
            case CashbackDayFixed():
                open_ = {k: v for k, v in self.open.items() if k != event.trading_day}
                fixed = {**self.fixed, event.trading_day: event}
                kept: Mapping[str, CountedDeal] = self.deals
                paid: Mapping[date, CashbackPaid] = self.paid
                edge = event.forget_before
                if edge is not None:  # forget what is too old to change any more
                    kept = {k: d for k, d in kept.items() if d.trading_day >= edge}
                    paid = {d: p for d, p in paid.items() if d >= edge}
                    fixed = {
                        d: f for d, f in fixed.items()
                        if d >= edge or (f.payable.is_positive() and d not in self.paid)
                    }  # fmt: skip
                return self.evolve(
                    open=open_,
                    adjustment=self.adjustment - event.adjustment,
                    carry=event.carried_out,
                    fixed=fixed,
                    deals=kept,
                    paid=paid,
                    forgotten_before=_later(self.forgotten_before, edge),
                )
            case CashbackPaid():
                return self.evolve(
                    paid={**self.paid, event.trading_day: event},
                    paid_total=self.paid_total + event.amount.amount,
                )
        raise ValidationError(f"CashbackAccount cannot apply {type(event).__name__}")

    def fix(
        self, until: date, pay_on: date, quantum: Decimal, currency: Currency, forget_days: int
    ) -> list[CashbackDayFixed]:
        """The fixes of every open day up to ``until`` (or of ``until`` alone when only an
        adjustment waits), the adjustment and carry going into the first; the last forgets
        deals older than ``forget_days`` before ``until``."""
        days = sorted(d for d in self.open if d <= until and d not in self.fixed)
        if not days and self.adjustment != 0 and until not in self.fixed:
            days = [until]
        carry, adjustment = self.carry, self.adjustment
        out = []
        for day in days:
            counted = [self.deals[k] for k in sorted(self.open.get(day, ()))]
            counted = [c for c in counted if c.rate is not None and not c.deleted]
            amount = sum((c.amount for c in counted), _ZERO)
            rates: dict[Money, Decimal] = {}
            for c in counted:
                assert c.rate is not None
                rates[c.rate] = rates.get(c.rate, _ZERO) + c.lots
            total = amount + adjustment + carry
            payable = max(total, _ZERO).quantize(quantum, rounding=ROUND_DOWN)
            out.append(
                CashbackDayFixed(
                    self.id, day, pay_on, len(counted), sum((c.lots for c in counted), _ZERO),
                    tuple((str(r), str(n)) for r, n in sorted(rates.items(), key=_by_amount)),
                    amount, adjustment, carry, Money.of(payable, currency), total - payable,
                )
            )  # fmt: skip
            carry, adjustment = total - payable, _ZERO
        if out:
            out[-1] = attrs.evolve(out[-1], forget_before=until - timedelta(days=forget_days))
        return out


def _later(a: date | None, b: date | None) -> date | None:
    """The later of two horizons (None: none); a horizon never moves back."""
    if a is None or b is None:
        return a or b
    return max(a, b)


def _by_amount(item: tuple[Money, Decimal]) -> Decimal:
    return item[0].amount


@attrs.frozen(kw_only=True)
class CashbackBook(Aggregate):
    """The policy's book (id ``main``): the last trading day it closed and the clients with
    something counted and not fixed yet."""

    category = "cashbackbook"
    last_closed: date | None = None
    open_clients: frozenset[str] = frozenset()

    def closed(self, day: date) -> bool:
        return self.last_closed is not None and day <= self.last_closed

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case CashbackClientsOpened():
                return self.evolve(open_clients=self.open_clients | set(event.clients))
            case CashbackDayClosed():
                return self.evolve(
                    last_closed=event.trading_day, open_clients=frozenset(event.still_open)
                )
        raise ValidationError(f"CashbackBook cannot apply {type(event).__name__}")


# -- the service --------------------------------------------------------------------------------


class Cashback:
    """The cashback service: counts and fixes from the log (:meth:`handle`, the
    ``loyalty-cashback`` policy), pays what is due (:meth:`pay_due`, from the scheduler), and
    answers each client's days.

    ``client_of(server, login)`` names the client behind a login (None: not a client's);
    ``group_of(server, login)`` its trading group (for ``excluded_groups``); ``rate_of(client,
    at)`` the client's rate per lot then (the tier's ``cashback_per_lot``), None for none.
    """

    def __init__(
        self,
        repository: Repository,
        ledger: Ledger,
        plan: CashbackPlan,
        *,
        client_of: ClientOf,
        group_of: GroupOf | None = None,
        rate_of: RateOf | None = None,
        calendar: TradingCalendar | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(repository, Repository) or not isinstance(ledger, Ledger):
            raise ValidationError("the cashback service needs a repository and a ledger")
        if not isinstance(plan, CashbackPlan):
            raise ValidationError("the cashback plan is a CashbackPlan value")
        if not callable(client_of):
            raise ValidationError("client_of maps (server, login) to a client id")
        if group_of is not None and not callable(group_of):
            raise ValidationError("group_of maps (server, login) to a trading group")
        if rate_of is not None and not callable(rate_of):
            raise ValidationError("rate_of maps (client id, instant) to a rate per lot")
        self.repository = repository
        self.ledger = ledger
        self.money = MoneyAccounts(ledger)
        self.plan = plan
        self.client_of = client_of
        self.group_of = group_of
        self.rate_of = rate_of
        self.calendar = calendar or TradingCalendar()
        self.clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._unpaid: dict[str, set[date]] = {}
        names = repository.codec.registry.name_of
        self._unpaid_rows = TypeCursor(
            repository.store, frozenset({names(CashbackDayFixed), names(CashbackPaid)})
        )

    # -- reading --------------------------------------------------------------------------------
    def account(self, client_id: str) -> CashbackAccount:
        key = checked_text(client_id, "client id", 100)
        return self.repository.load(CashbackAccount, key) or CashbackAccount.blank(key)

    def day(self, client_id: str, trading_day: date) -> CashbackDayFixed | None:
        """The client's fixed day (None: not fixed, nothing to fix, or paid and older than the
        correction horizon: see :meth:`history`)."""
        if not isinstance(trading_day, date) or isinstance(trading_day, datetime):
            raise ValidationError("a trading day is a date")
        return self.account(client_id).fixed.get(trading_day)

    def history(self, client_id: str) -> list[RecordedEvent[DomainEvent]]:
        """Everything recorded on the client's cashback, oldest first (every fixed day and
        payment, also those the state has forgotten), with who, when and why."""
        stream_id = CashbackAccount.stream_id_for(checked_text(client_id, "client id", 100))
        decode = self.repository.codec.decode
        return [decode(row) for row in self.repository.store.read_stream(stream_id)]

    def paid_total(self, client_id: str) -> Money:
        """Everything paid to the client as cashback."""
        return Money.of(self.account(client_id).paid_total, self.plan.currency)

    # -- the policy handler ---------------------------------------------------------------------
    def handle(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        """The ``loyalty-cashback`` policy: ``DealsReceived`` counts closing deals;
        ``TradingDayClosed`` (matched by its ``trading_day`` date: it is recorded by the
        broker's reactions, above this layer) fixes that day for every client with something
        counted. Both in one policy, so deals recorded before a day's close are counted
        before it is fixed."""
        event = recorded.event
        if isinstance(event, DealsReceived):
            self._count(uow, event, recorded.recorded_at)
            return
        day = getattr(event, "trading_day", None)
        if isinstance(day, date) and not isinstance(day, datetime):
            self._close(uow, day)

    def close_day(self, trading_day: date, *, actor: str = _SYSTEM) -> bool:
        """Fix ``trading_day`` outside the policy (a host without the policy row); idempotent
        (False: already closed). Deals the policy has not counted yet become adjustments.

        Only a day that has ended by the service's clock can be closed: a day still running or
        ahead is refused (ValidationError, nothing recorded), as closing it would turn every
        deal until then into an adjustment that no close fixes."""
        if not isinstance(trading_day, date) or isinstance(trading_day, datetime):
            raise ValidationError("a trading day is a date")
        if trading_day >= self.calendar.trading_day(self.clock.now()):
            raise ValidationError("that trading day has not ended yet: it cannot be closed")
        for _ in range(5):
            with UnitOfWork(self.repository, EventMetadata(actor, reason="cashback day")) as u:
                self._close(u, trading_day)
                if not u.staged:
                    return False
                try:
                    u.commit()
                except ConcurrencyError:
                    self.repository.forget()
                    continue
            return True
        raise ConcurrencyError("the cashback book kept changing; try again")

    def _book(self, uow: UnitOfWork) -> CashbackBook:
        return uow.load(CashbackBook, "main") or CashbackBook.blank("main")

    def _count(self, uow: UnitOfWork, event: DealsReceived, recorded_at: datetime) -> None:
        book = self._book(uow)
        # The log's "now" for the horizon: the newest closing deal's trading day, never later
        # than the day the batch was recorded (a server's bad clock cannot push it ahead).
        days = [
            self.calendar.trading_day(item.deal.time)
            for item in event.items
            if item.deal.action.is_trade and item.deal.entry.closes
        ]
        horizon = None
        if days:
            newest = min(max(days), self.calendar.trading_day(recorded_at))
            horizon = newest - timedelta(days=self.plan.correction_days)
        batches: dict[str, dict[str, CountedDeal]] = {}
        for item in event.items:
            deal = item.deal
            if not deal.action.is_trade or not deal.entry.closes:
                continue
            client_id = self.client_of(deal.server, deal.login)
            if client_id is None:
                continue
            batch = batches.setdefault(client_id, {})
            state = uow.load(CashbackAccount, client_id)
            before = batch.get(deal.key) or (state.deals.get(deal.key) if state else None)
            edge = _later(state.forgotten_before if state is not None else None, horizon)
            if before is None and edge is not None and self.calendar.trading_day(deal.time) < edge:
                continue  # past the correction horizon: counts nothing
            counted = self._counted(client_id, item.change, deal, before, book)
            if counted is not None:
                staged = batch.get(deal.key)
                if staged is not None:  # two changes in one batch: one entry, both changes
                    counted = attrs.evolve(counted, change=staged.change + counted.change)
                batch[deal.key] = counted
        opened = []
        for client_id, batch in batches.items():
            if not batch:
                continue
            state = uow.load(CashbackAccount, client_id) or CashbackAccount.blank(client_id)
            forget = _later(state.forgotten_before, horizon)
            uow.record(state, CashbackDealsCounted(
                client_id, tuple(batch.values()),
                None if forget == state.forgotten_before else forget,
            ))  # fmt: skip
            earning = any(d.rate is not None for d in batch.values())
            if earning and client_id not in book.open_clients:
                opened.append(client_id)
        if opened:
            uow.record(book, CashbackClientsOpened(tuple(opened)))

    def _counted(
        self, client_id: str, change: DealChange, deal: Deal, before: CountedDeal | None,
        book: CashbackBook,
    ) -> CountedDeal | None:  # fmt: skip
        if before is not None and before.deleted:
            return None  # a deleted deal never counts again
        day = before.trading_day if before else self.calendar.trading_day(deal.time)
        late = book.closed(day)
        was = before.amount if before else _ZERO
        if change is DealChange.DELETED:
            if before is None:
                return None
            return CountedDeal(deal.key, day, before.symbol, _ZERO, before.rate, _ZERO, -was,
                               late, deleted=True)  # fmt: skip
        lots = deal.volume_closed or deal.volume
        if before is not None:
            rate = before.rate  # an update keeps the rate, or the exclusion, it was counted at
        elif self._excluded(deal):  # judged once, with the group as it stands at this event
            return CountedDeal(deal.key, day, deal.symbol, lots, None, _ZERO, _ZERO, late)
        else:
            rate = self._rate(client_id, deal)
        amount = lots * rate.amount if rate is not None else _ZERO
        if before is None and amount == 0:
            return None
        if before is not None and (before.lots, before.symbol, before.amount) == (
            lots, deal.symbol, amount,
        ):  # fmt: skip
            return None  # the same deal again
        return CountedDeal(deal.key, day, deal.symbol, lots, rate, amount, amount - was, late)

    def _excluded(self, deal: Deal) -> bool:
        """True when the plan excludes the deal's symbol or its login's group (read now)."""
        plan = self.plan
        if deal.symbol in plan.excluded_symbols:
            return True
        group_of = self.group_of
        return bool(
            plan.excluded_groups
            and group_of
            and group_of(deal.server, deal.login) in plan.excluded_groups
        )

    def _rate(self, client_id: str, deal: Deal) -> Money | None:
        """The rate per lot of a deal counted for the first time (None: none)."""
        plan = self.plan
        rate = plan.per_symbol.get(deal.symbol)
        if rate is None and self.rate_of is not None:
            found = self.rate_of(client_id, deal.time)
            rate = None if found is None else plan.check_rate(found)
        return plan.default_rate if rate is None else rate

    def _close(self, uow: UnitOfWork, day: date) -> None:
        book = self._book(uow)
        if book.closed(day):
            return
        pay_on = day + timedelta(days=1)
        while not self.calendar.is_trading_day(pay_on):
            pay_on += timedelta(days=1)
        quantum = self.plan.currency.quantum
        fixed, still_open = [], []
        for client_id in sorted(book.open_clients):
            state = uow.load(CashbackAccount, client_id) or CashbackAccount.blank(client_id)
            events = state.fix(day, pay_on, quantum, self.plan.currency, self.plan.correction_days)
            if events:
                state = uow.record(state, *events)
                fixed.append(client_id)
            if state.open or state.adjustment != 0:
                still_open.append(client_id)
        uow.record(book, CashbackDayClosed(day, tuple(fixed), tuple(still_open)))

    # -- paying ---------------------------------------------------------------------------------
    def _unpaid_clients(self) -> list[str]:
        decode = self.repository.codec.decode
        with self._lock:
            for row in self._unpaid_rows.new_rows():
                event = decode(row).event
                if isinstance(event, CashbackDayFixed) and event.payable.is_positive():
                    self._unpaid.setdefault(event.client_id, set()).add(event.trading_day)
                elif isinstance(event, CashbackPaid):
                    days = self._unpaid.get(event.client_id, set())
                    days.discard(event.trading_day)
                    if not days:
                        self._unpaid.pop(event.client_id, None)
            return sorted(self._unpaid)

    def pay_due(self, at: datetime | None = None, *, actor: str = _SYSTEM) -> list[CashbackPaid]:
        """Pay every fixed day whose ``pay_on`` has come by ``at`` (default: now) and is not
        paid yet; returns what this call paid (not what a concurrent call paid). Safe to call
        from any process, any number of times: each client and day is paid once
        (``cashback:<client>:<day>``)."""
        when = self.clock.now() if at is None else at
        today = self.calendar.trading_day(when)
        out = []
        for client_id in self._unpaid_clients():
            for _ in range(5):
                try:
                    out.extend(self._pay(client_id, today, actor))
                except ConcurrencyError:
                    self.repository.forget()
                    continue
                break
            else:
                raise ConcurrencyError("the cashback kept changing; try again")
        return out

    def _pay(self, client_id: str, today: date, actor: str) -> list[CashbackPaid]:
        out = []
        for fixed in self.account(client_id).unpaid:
            if fixed.pay_on > today:
                break
            state = self.account(client_id)
            if fixed.trading_day in state.paid:
                continue
            transfer_id = f"cashback:{client_id}:{fixed.trading_day.isoformat()}"
            paid = CashbackPaid(client_id, fixed.trading_day, fixed.payable, transfer_id)
            wallet = self.money.wallet(client_id, self.plan.currency)
            funding = self.money.broker("cashback", self.plan.currency)
            result = self.ledger.transfer(
                TransferRequest(transfer_id, funding, wallet, fixed.payable),
                actor=actor, also=[(state, paid)],
            )  # fmt: skip
            if not result.replayed:  # else another process paid it (with its CashbackPaid)
                out.append(paid)
        return out
