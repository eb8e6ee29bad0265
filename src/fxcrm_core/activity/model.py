"""The client activity read model: per client and trading day, trades, lots and notional, money
in and out of the wallets, the broker's revenue and the rebates paid away, all from the log.

A memory read model (``ProjectionRunner``): rebuilt from position 0 in every process, caught up
before every answer, so a second process or a restart answers the same.
"""

from __future__ import annotations

import contextlib
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal

from fxcrm_core.accounts import TradingAccountOpened
from fxcrm_core.activity._days import (
    DEPOSIT,
    REBATE,
    REVENUE,
    VOLUME,
    WITHDRAWAL,
    Days,
    Mark,
)
from fxcrm_core.activity.measures import (
    Figure,
    Instrument,
    InstrumentSpec,
    Measure,
    Period,
    fx_instrument,
)
from fxcrm_core.commissions import RebateEntriesRecorded
from fxcrm_core.events import DomainEvent, ProjectionRunner, RecordedEvent
from fxcrm_core.events.store import read_types
from fxcrm_core.fx import FxConverted
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import ArgumentTypeError, RateNotFoundError, ValidationError
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney
from fxcrm_core.kernel.rates import RateSource
from fxcrm_core.kernel.time import ensure_aware
from fxcrm_core.kernel.trading_day import TradingCalendar
from fxcrm_core.ledger.model import (
    AccountOpened,
    TransferRecorded,
    TransferResolved,
    TransferStatus,
)
from fxcrm_core.trading import Deal, DealChange, DealsReceived

__all__ = ["ClientActivity"]

USD = Currency.of("USD")
_CENT = Decimal("0.01")
_ZERO = Decimal(0)
# Ledger transfers that bring money into a client's wallet from outside (a PSP's deposit, a
# converted deposit's bought leg, a bank wire); a reversal of one is a chargeback.
_DEPOSITS = ("deposit:", "wire:")
_WITHDRAWAL, _WITHDRAWAL_FEE = "wd:", "wd-fee:"
_FLOW_OF = {
    Measure.VOLUME_USD: (VOLUME,),
    Measure.DEPOSITS: (DEPOSIT,),
    Measure.WITHDRAWALS: (WITHDRAWAL,),
    Measure.REVENUE: (REVENUE,),
    Measure.REBATES: (REBATE,),
    Measure.NET_DEPOSITS: (DEPOSIT, WITHDRAWAL),  # the second kind counts negative
    Measure.CONTRIBUTION: (REVENUE, REBATE),
}


_NO_DAYS = Days()  # a client with no activity (read only: never written to)

#: The longest window a question may ask for, in trading days (about forty years).
MAX_DAYS = 10_000


class ClientActivity:
    """Each client's activity, from the deal feed, the ledger and the rebate book.

    * **Trades**: trade deals (buy or sell, each open and each close is one) of the client's
      trading accounts, bucketed by the trading day of the deal's time (17:00 New York). An
      updated deal replaces what it added; a deleted one takes it back.
    * **Notional**: lots x contract size x price, in the instrument's quote currency
      (``instruments``: the default knows currency pairs and metals), converted to USD at the
      deal's time by ``rates``. Where no rate is known, the notional is kept in its quote
      currency (:attr:`Figure.unpriced`) and left out of the USD figure, never guessed. A symbol
      with no known instrument counts its trades and lots, and no notional.
    * **Deposits and withdrawals** are read from the ledger: what reached the client's wallets
      from a PSP or a bank wire, and what was paid out (a withdrawal counts when its hold is
      posted, once; a voided hold counts nothing); a reversal of either counts negative.
    * **Revenue**: the commission and fees a deal charged and its markup (when a bridge
      reports it), the FX markup of the client's conversions (deposits, withdrawals, wallet
      conversions) and withdrawal fees paid. **Rebates**: what the IBs earned on the client's
      deals (the rebate book's entries, reversals included). Money other than deals is priced
      in USD at its recording time.

    ``rates`` must answer from history (the rate in force at a past time never changes), so a
    rebuild prices as the live model did. Without one, only USD amounts are priced.

    The measures are kept per client and trading day (memory grows with active days, not
    deals), but applying updates and deletes needs what each trade deal added: one mark per deal
    (about 0.7 KB measured: 15 MB for 20,808 simulated deals). :meth:`trades` reads a
    client's deals from the log on demand.
    """

    name = "activity"
    event_types: frozenset[str] | None = frozenset(
        {
            "AccountOpened",
            "TransferRecorded",
            "TransferResolved",
            "FxConverted",
            "TradingAccountOpened",
            "DealsReceived",
            "RebateEntriesRecorded",
        }
    )

    def __init__(
        self,
        projections: ProjectionRunner,
        calendar: TradingCalendar,
        *,
        rates: RateSource | None = None,
        instruments: InstrumentSpec = fx_instrument,
        clock: Clock | None = None,
        horizon: timedelta | None = None,
    ) -> None:
        if horizon is not None and (not isinstance(horizon, timedelta) or horizon.days < 1):
            raise ValidationError("the correction horizon is a timedelta of one day or more")
        if not isinstance(projections, ProjectionRunner):
            raise ArgumentTypeError("ClientActivity reads through a ProjectionRunner")
        if not isinstance(calendar, TradingCalendar):
            raise ArgumentTypeError("ClientActivity needs a TradingCalendar")
        if not callable(instruments):
            raise ArgumentTypeError("instruments maps a symbol to an Instrument or None")
        self.projections = projections
        self.calendar = calendar
        self.rates = rates
        self.instruments = instruments
        self.clock = clock or SystemClock()
        # How long after its trading day a deal may still be corrected (updated or deleted):
        # what each deal added is kept that long, then forgotten (None: for ever). A later
        # correction is not applied and is counted in ``late_corrections``. The days are the
        # feed's own (the latest trade day seen), so every process forgets alike.
        self.horizon = horizon
        self._lock = threading.RLock()
        # (last day, days) -> the window's first trading day: the calendar's, not a client's
        self._first_days: dict[tuple[date, int], date] = {}
        self._windows: dict[tuple[datetime, int, int], tuple[date, date]] = {}  # (at, fold, days)
        # Inside :meth:`_batch` (this thread holds the lock): answers skip their catch-up.
        self._batched = 0
        self.reset()

    # -- the projection -------------------------------------------------------------------------
    def reset(self) -> None:
        self._days: dict[str, Days] = {}
        self._marks: dict[tuple[str, int], Mark] = {}
        self._latest: date | None = None  # the latest trade day the feed brought
        self._forgotten: date | None = None  # marks of days before this one are gone
        self.late_corrections = 0
        self._logins: dict[tuple[str, int], str] = {}
        self._wallets: dict[str, str] = {}  # wallet account id -> client
        self._wallets_of: dict[str, list[str]] = {}
        self._held: dict[str, tuple[str, Money]] = {}  # pending withdrawal holds and fees
        self._converting: dict[str, str] = {}  # conversion id -> client, until booked
        self._last_deposit: dict[str, datetime] = {}
        self._instruments: dict[str, Instrument | None] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        at = recorded.recorded_at
        if isinstance(event, DealsReceived):
            for item in event.items:
                self._deal(item.change, item.deal)
            self._forget()
        elif isinstance(event, TransferRecorded):
            self._transfer(event, at)
        elif isinstance(event, TransferResolved):
            self._resolved(recorded.stream_id.removeprefix("transfer-"), event, at)
        elif isinstance(event, RebateEntriesRecorded):
            for entry in event.entries:
                amount = entry.amount
                self._flow(entry.client_id, entry.trading_day, REBATE, amount.currency,
                           amount.amount, at)  # fmt: skip
        elif isinstance(event, FxConverted):
            client = self._converting.pop(event.conversion_id, None)
            if client is not None and event.revenue.is_positive():
                self._money(client, REVENUE, event.revenue, at)
        elif isinstance(event, AccountOpened):
            if event.purpose == "wallet":
                self._wallets[event.account_id] = event.owner
                self._wallets_of.setdefault(event.owner, []).append(event.account_id)
        elif isinstance(event, TradingAccountOpened) and event.live:
            # A demo account trades play money: its deals are no activity of the client's.
            self._logins[(event.server, event.login)] = event.client_id

    def _deal(self, change: DealChange, deal: Deal) -> None:
        key = (deal.server, deal.ticket)
        old = self._marks.pop(key, None)
        if old is not None:
            old.apply(self._days[old.client], -1)
        elif (
            change is not DealChange.ADDED
            and self._forgotten is not None
            and self.calendar.trading_day(deal.time) < self._forgotten
        ):
            self.late_corrections += 1  # past the horizon: its first count stands
            return
        if change is DealChange.DELETED or not deal.action.is_trade:
            return
        client = self._logins.get((deal.server, deal.login))
        if client is None:
            return
        mark = self._mark(client, deal)
        days = self._days.get(client)
        if days is None:
            days = self._days[client] = Days()
        mark.apply(days, 1)
        self._marks[key] = mark
        if self._latest is None or mark.day > self._latest:
            self._latest = mark.day

    def _forget(self) -> None:
        """Drop what deals of days past the horizon added (their counts stay in the days)."""
        if self.horizon is None or self._latest is None:
            return
        cutoff = self._latest - self.horizon
        if self._forgotten is not None and cutoff <= self._forgotten:
            return
        self._forgotten = cutoff
        self._marks = {k: m for k, m in self._marks.items() if m.day >= cutoff}

    def _mark(self, client: str, deal: Deal) -> Mark:
        symbol = deal.symbol
        if symbol not in self._instruments:
            self._instruments[symbol] = self.instruments(symbol)
        instrument = self._instruments[symbol]
        quote, notional, usd = None, _ZERO, None
        if instrument is not None:
            notional = deal.volume * instrument.contract_size * deal.price
            quote = instrument.quote.code
            usd = self._usd(notional, instrument.quote, deal.time)
        charged: dict[Currency, Decimal] = {}
        for money, sign in ((deal.commission, -1), (deal.fee, -1), (deal.markup, 1)):
            if money is not None and money.amount:
                charged[money.currency] = charged.get(money.currency, _ZERO) + sign * money.amount
        revenue = tuple(
            (cur.code, amount, self._usd(amount, cur, deal.time))
            for cur, amount in charged.items()
            if amount
        )
        return Mark(
            client, self.calendar.trading_day(deal.time), deal.time, deal.volume, quote,
            notional, usd, revenue,
        )  # fmt: skip

    def _transfer(self, event: TransferRecorded, at: datetime) -> None:
        tid, debit, credit = event.transfer_id, event.debit_account, event.credit_account
        if event.pending:
            if tid.startswith((_WITHDRAWAL, _WITHDRAWAL_FEE)) and debit in self._wallets:
                client = self._wallets[debit]
                self._held[tid] = (client, event.amount)
                if tid.startswith(_WITHDRAWAL):  # a payout in another currency converts later
                    self._converting["withdrawal:" + tid.removeprefix(_WITHDRAWAL)] = client
            return
        if event.reverses is not None:
            original = event.reverses
            if original.startswith(_DEPOSITS) and debit in self._wallets:
                self._money(self._wallets[debit], DEPOSIT, -event.amount, at)
            elif original.startswith(_WITHDRAWAL) and credit in self._wallets:
                self._money(self._wallets[credit], WITHDRAWAL, -event.amount, at)
            elif original.startswith(_WITHDRAWAL_FEE) and credit in self._wallets:
                self._money(self._wallets[credit], REVENUE, -event.amount, at)
            return
        if tid.startswith(_DEPOSITS) and credit in self._wallets:
            client = self._wallets[credit]
            self._money(client, DEPOSIT, event.amount, at)
            last = self._last_deposit.get(client)
            self._last_deposit[client] = at if last is None else max(last, at)
        head, _, leg = tid.rpartition(":")
        if leg in ("sold", "bought"):  # a conversion's leg: whose FX revenue it will book
            wallet = debit if leg == "sold" else credit
            if wallet in self._wallets:
                self._converting[head] = self._wallets[wallet]

    def _resolved(self, transfer_id: str, event: TransferResolved, at: datetime) -> None:
        held = self._held.pop(transfer_id, None)
        if held is None:
            return
        client, _ = held
        if transfer_id.startswith(_WITHDRAWAL):
            self._converting.pop("withdrawal:" + transfer_id.removeprefix(_WITHDRAWAL), None)
        if event.status is not TransferStatus.POSTED_FROM_PENDING or not event.posted.is_positive():
            return
        kind = WITHDRAWAL if transfer_id.startswith(_WITHDRAWAL) else REVENUE
        self._money(client, kind, event.posted, at)

    def _money(self, client: str, kind: str, money: Money, at: datetime) -> None:
        self._flow(client, self.calendar.trading_day(at), kind, money.currency, money.amount, at)

    def _flow(
        self, client: str, day: date, kind: str, cur: Currency, amount: Decimal, at: datetime
    ) -> None:
        days = self._days.get(client)
        if days is None:
            days = self._days[client] = Days()
        days.flow(days.index(day), kind, cur.code, amount, self._usd(amount, cur, at))

    def _usd(self, amount: Decimal, cur: Currency, at: datetime) -> Decimal | None:
        """``amount`` of ``cur`` in USD at ``at`` (None: no rate known then)."""
        if cur == USD:
            return amount
        if self.rates is None:
            return None
        try:
            return amount * self.rates.rate(cur, USD, at).rate
        except RateNotFoundError:
            pass
        try:  # a source quoting USD/XXX only: its inverse, asked for by name
            return amount / self.rates.rate(USD, cur, at).rate
        except RateNotFoundError:
            return None

    # -- answers --------------------------------------------------------------------------------
    def _caught_up(self) -> None:
        if not self._batched:
            self.projections.catch_up(self)

    @contextlib.contextmanager
    def _batch(self) -> Iterator[None]:
        """Private: a scan of many clients (segmentation, churn) reads from one catch-up. The
        lock is held throughout, so no other thread's catch-up changes the model meanwhile, and
        every answer inside is the one it would have given right after that catch-up."""
        with self._lock:
            self._caught_up()
            self._batched += 1
            try:
                yield
            finally:
                self._batched -= 1

    def _value(self, client_id: str, measure: Measure, days: int, at: datetime) -> Decimal:
        """Private fast path: ``window(client_id, measure, days=days, at=at).value`` (the same
        sums, without building the Figure's per-currency amounts). The caller has checked its
        arguments: an aware ``at``, a Measure, a positive ``days``."""
        # Keyed with the fold: two instants of one wall time in a zone (a DST fold) are equal
        # as zoned datetimes and are not the same trading day. A naive ``at`` never hits (it
        # equals no aware key) and is refused by the calendar on the miss.
        key = (at, at.fold, days)
        span = self._windows.get(key)
        if span is None:
            ensure_aware(at, "at")
            last = self.calendar.trading_day(at)
            span = (self._first_day(last, days), last)
            if len(self._windows) >= 4096:
                self._windows.clear()
            self._windows[key] = span
        first, last = span
        with self._lock:
            if not self._batched:
                self.projections.catch_up(self)
            found = self._days.get(client_id)
            if found is None:
                found = _NO_DAYS
            rows = found.days
            return _value(measure, found, bisect_left(rows, first), bisect_right(rows, last))

    def clients(self) -> list[str]:
        """Every client with any activity, in id order."""
        with self._lock:
            self._caught_up()
            return sorted(self._days)

    def window(
        self,
        client_id: str,
        measure: Measure,
        *,
        days: int | None = None,
        period: Period | None = None,
        at: datetime | None = None,
    ) -> Figure:
        """``measure`` over the ``days`` trading days ending with the trading day of ``at``
        (default: now), or over that day's calendar month or quarter (``period``). Whole
        trading days count: the window is aligned to 17:00 New York, never to ``at`` itself.
        """
        if not isinstance(measure, Measure):
            raise ArgumentTypeError("measure is a Measure")
        if (days is None) == (period is None):
            raise ValidationError("a window is either days=N or a period")
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS
        ):
            raise ValidationError(f"days is a number of trading days from 1 to {MAX_DAYS}")
        if period is not None and not isinstance(period, Period):
            raise ArgumentTypeError("period is a Period")
        last = self.calendar.trading_day(self.clock.now() if at is None else ensure_aware(at, "at"))
        first = self._first_day(last, days) if days is not None else _period_start(last, period)
        with self._lock:
            self._caught_up()
            found = self._days.get(_client(client_id), _NO_DAYS)
            i, j = found.span(first, last)
            return _figure(measure, found, i, j)

    def lifetime(self, client_id: str, measure: Measure) -> Figure:
        """``measure`` over every trading day the log holds."""
        if not isinstance(measure, Measure):
            raise ArgumentTypeError("measure is a Measure")
        with self._lock:
            self._caught_up()
            found = self._days.get(_client(client_id), _NO_DAYS)
            return _figure(measure, found, 0, len(found.days))

    def last_trade(self, client_id: str) -> datetime | None:
        """The time of the client's latest trade deal still in the feed (after a delete, the
        latest of that day's remaining deals is known to the day only: the day's last time)."""
        with self._lock:
            self._caught_up()
            return self._days.get(_client(client_id), _NO_DAYS).last_trade()

    def last_deposit(self, client_id: str) -> datetime | None:
        """When a deposit last reached one of the client's wallets (recording time, UTC)."""
        with self._lock:
            self._caught_up()
            return self._last_deposit.get(_client(client_id))

    def wallets(self, client_id: str) -> list[str]:
        """The client's wallet accounts in the ledger, in opening order."""
        with self._lock:
            self._caught_up()
            return list(self._wallets_of.get(_client(client_id), ()))

    def logins(self, client_id: str) -> list[tuple[str, int]]:
        """The client's live trading accounts as (server, login) (demo accounts' play money is
        no activity)."""
        with self._lock:
            self._caught_up()
            return sorted(k for k, c in self._logins.items() if c == client_id)

    def trades(
        self, client_id: str, *, start: datetime | None = None, end: datetime | None = None
    ) -> list[Deal]:
        """The client's trade deals as they stand (updates applied, deletes gone), from
        ``start`` (included) to ``end`` (excluded), in time order; read from the log."""
        start = None if start is None else ensure_aware(start, "start")
        end = None if end is None else ensure_aware(end, "end")
        logins = set(self.logins(client_id))
        runner = self.projections
        deals: dict[tuple[str, int], Deal] = {}
        position = 0
        wanted = frozenset({"DealsReceived"})
        while True:
            stored, upto, done = read_types(runner.store, position, wanted, runner.batch_size)
            for row in stored:
                event = runner.codec.decode(row).event
                assert isinstance(event, DealsReceived)
                for item in event.items:
                    deal = item.deal
                    if (deal.server, deal.login) not in logins:
                        continue
                    if item.change is DealChange.DELETED or not deal.action.is_trade:
                        deals.pop((deal.server, deal.ticket), None)
                    else:
                        deals[(deal.server, deal.ticket)] = deal
            position = max(position, upto)
            if done:
                break
        return sorted(
            (
                d for d in deals.values()
                if (start is None or d.time >= start) and (end is None or d.time < end)
            ),
            key=lambda d: (d.time, d.server, d.ticket),
        )  # fmt: skip

    def _first_day(self, last: date, days: int) -> date:
        """The first of the ``days`` trading days ending on ``last`` (the calendar's answer
        kept: a scan of every client's window asks the same few questions again and again)."""
        key = (last, days)
        found = self._first_days.get(key)
        if found is None:
            day, seen = last, 1
            while seen < days:
                day -= timedelta(days=1)
                if self.calendar.is_trading_day(day):
                    seen += 1
            found = day
            if len(self._first_days) >= 4096:
                self._first_days.clear()
            self._first_days[key] = found
        return found


def _client(client_id: object) -> str:
    if not isinstance(client_id, str) or not client_id:
        raise ValidationError("a client id is non-empty text")
    return client_id


def _period_start(last: date, period: Period | None) -> date:
    if period is Period.MONTH:
        return last.replace(day=1)
    return last.replace(month=(last.month - 1) // 3 * 3 + 1, day=1)


def _figure(measure: Measure, found: Days, i: int, j: int) -> Figure:
    """``measure`` over rows ``[i, j)`` of a client's days, with its per-currency amounts."""
    value = _value(measure, found, i, j)
    kinds = _FLOW_OF.get(measure)
    if kinds is None:
        return Figure(measure, value)
    amounts: dict[str, Decimal] = {}
    unpriced: dict[str, Decimal] = {}
    for flows in found.flows[i:j]:
        for (kind, code), flow in flows.items():
            if kind not in kinds:
                continue
            sign = -1 if kind == kinds[-1] and len(kinds) == 2 else 1
            amounts[code] = amounts.get(code, _ZERO) + sign * flow.amount
            if flow.unpriced:
                unpriced[code] = unpriced.get(code, _ZERO) + sign * flow.unpriced
    return Figure(measure, value, _moneys(amounts), _moneys(unpriced))


def _value(measure: Measure, found: Days, i: int, j: int) -> Decimal:
    """``measure``'s value over rows ``[i, j)`` of a client's days: sums over column slices
    (money: the USD sums of the days, less the second kind's, rounded to the cent once)."""
    if measure is Measure.TRADES:
        return Decimal(sum(found.trades[i:j]))
    if measure is Measure.LOTS:
        return sum(found.lots[i:j], _ZERO)
    if measure is Measure.ACTIVE_DAYS:
        return Decimal(sum(found.active[i:j]))
    return found.usd_sum(_FLOW_OF[measure], i, j)


def _moneys(amounts: dict[str, Decimal]) -> tuple[UnroundedMoney, ...]:
    return tuple(UnroundedMoney(a, Currency.of(c)) for c, a in sorted(amounts.items()) if a)
