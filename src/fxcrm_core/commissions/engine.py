"""The rebate engine: deal feed in, explained rebate entries out, exactly once per
(server, deal, IB, component). Re-processing, duplicates and replays pay nothing twice; a deal
update yields the difference as an adjustment, a delete reverses what was paid. Amounts stay
unrounded here: rounding happens once, at payout.

Three things depend on more than the deal itself, and each is a pure function of the latest
state of every deal seen, so the order deals arrive in never changes what is paid:

- a minimum holding time: a closing deal earns only if its position was open long enough; while
  the position's opening deal is unknown, the closing deal waits (parked) and settles when it
  arrives (an opening once seen stays known, even if that deal is deleted later);
- a CPA: paid once per client (component ``cpa``, keyed on the client's first deposit) while the
  first deposit is at least the minimum and the client's traded lots reach the minimum; deleting
  the deposit or the lots that qualified it reverses it;
- a cap per IB and period (component ``cap:<period>:<start>``): a negative entry bringing the
  period's total down to the cap, adjusted as the period's accruals change.

What later deals depend on is handed to the rebate book as typed facts (:class:`TradeFact`,
:class:`DepositFact`, :class:`PositionOpened`) to record with the entries.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Context, Decimal, DecimalException
from typing import Any, Protocol, cast

import attrs

from fxcrm_core.commissions import _rows, _state
from fxcrm_core.commissions._rows import RebateEntries, amount_of, line_of, with_change
from fxcrm_core.commissions._state import (
    F_AMOUNT,
    F_CURRENCY,
    F_DAY,
    F_MICROS,
    F_TICKET,
    LIST,
    SEP,
    Flat,
    KeyLists,
    day_text,
    deal_text,
    deposit_record,
    record_of,
    record_order,
    record_parts,
)
from fxcrm_core.commissions.distribution import Distribution, FixedShares, Share, _check_chain
from fxcrm_core.commissions.schedule import Schedule, ScheduleBook, Trigger, lots_opened_closed
from fxcrm_core.commissions.tree import IbTree
from fxcrm_core.kernel._decimal import EXACT
from fxcrm_core.kernel.clock import Clock
from fxcrm_core.kernel.errors import CurrencyMismatchError, NotFoundError, ValidationError
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney
from fxcrm_core.kernel.time import from_micros, to_micros, to_utc
from fxcrm_core.trading import Deal, DealAction, DealChange, DealEntry, FeedItem

__all__ = [
    "DealFact",
    "DepositFact",
    "EngineChanges",
    "EntryKind",
    "Fact",
    "LateCorrection",
    "PositionOpened",
    "RebateEngine",
    "RebateEntries",
    "RebateEntry",
    "SettlementClosedError",
    "TradeFact",
]

Key = tuple[str, int, str, str]  # server, deal ticket, IB, component
DealKey = tuple[str, int]  # server, deal ticket
_ZERO = Decimal(0)
_DAY = timedelta(days=1)


class EntryKind(enum.StrEnum):
    ACCRUAL = "accrual"
    ADJUSTMENT = "adjustment"
    REVERSAL = "reversal"


@attrs.frozen(kw_only=True)
class RebateEntry:
    """One change of what an IB earns on a key (server, deal, IB, component)."""

    kind: EntryKind
    server: str
    ticket: int
    ib_id: str
    component: str
    amount: UnroundedMoney  # this entry's change; the total for a key is the sum of its entries
    level: int
    client_id: str
    symbol: str
    lots: Decimal
    trading_day: date
    explanation: str  # schedule version, rule, rate, volume, strategy step
    direct_ib_id: str = ""  # the client's own IB (level 1), who decides what parents see

    @property
    def key(self) -> Key:
        return (self.server, self.ticket, self.ib_id, self.component)


KINDS = {k.value: k for k in EntryKind}


# -- facts: what later deals depend on, as the rebate book records it ---------------------------
@attrs.frozen(kw_only=True)
class TradeFact:
    """A trade deal seen: the lots it opened and closed (zero once deleted, or while no client
    is known for its login) and, for an opening deal, when its position opened."""

    ticket: int
    login: int
    position: int
    opened_at: datetime | None = None
    lots_opened: Decimal = _ZERO
    lots_closed: Decimal = _ZERO


@attrs.frozen(kw_only=True)
class DepositFact:
    """A balance deal seen: a live deposit's time, amount and trading day; none of them for a
    deal that deposits nothing (a withdrawal, a deleted deposit)."""

    ticket: int
    login: int
    at: datetime | None = None
    amount: Money | None = None
    trading_day: date | None = None


@attrs.frozen(kw_only=True)
class PositionOpened:
    """A position the host said opened before the engine's feed began."""

    position: int
    at: datetime


@attrs.frozen(kw_only=True)
class DealFact:
    """A deal as books before the short facts recorded it (read, never written now): the engine
    learns it as it learns the deal from the feed."""

    ticket: int
    login: int
    action: DealAction
    entry: DealEntry
    position: int
    volume: Decimal
    volume_closed: Decimal
    time: datetime
    profit: Money
    deleted: bool
    server_offset: timedelta

    def deal(self, server: str) -> Deal:
        zero = Money.zero(self.profit.currency)
        return Deal(
            server=server, ticket=self.ticket, login=self.login, action=self.action,
            entry=self.entry, symbol="", volume=self.volume, volume_closed=self.volume_closed,
            price=_ZERO, position_id=self.position, order=0, commission=zero, fee=zero,
            swap=zero, profit=self.profit, time=self.time, server_offset=self.server_offset,
        )  # fmt: skip


Fact = TradeFact | DepositFact | PositionOpened | DealFact


class SettlementClosedError(ValidationError):
    """A feed item for a deal whose trading day is beyond the settlement horizon: the engine
    has forgotten (or may have forgotten) what it paid on that deal, so it cannot settle it.
    The item is recorded for manual review (:class:`LateCorrection`), never paid nor dropped."""


@attrs.frozen(kw_only=True)
class LateCorrection:
    """A feed item refused because its deal's trading day is beyond the settlement horizon
    (a correction of a settled deal, or a deal arriving that late): kept for manual review."""

    cursor: int
    change: DealChange
    deal: Deal
    trading_day: date
    horizon_day: date  # the newest trading day processed when it arrived

    def error(self) -> SettlementClosedError:
        """The refusal, as the typed error a host reports."""
        return SettlementClosedError(
            f"deal {self.deal.ticket} of trading day {self.trading_day.isoformat()} is beyond "
            f"the settlement horizon (newest trading day {self.horizon_day.isoformat()})"
        )


def _facts(facts: Iterable[Fact | str]) -> tuple[Fact, ...]:
    """Facts as given; one in its stored text form is read as the book reads it."""
    if isinstance(facts, _rows.RebateFacts):
        return tuple(facts)
    return tuple([_rows.fact_of(f) if isinstance(f, str) else f for f in facts])


# Members bound once for the per-deal paths: on Python 3.11 ``DealEntry.IN`` goes through the
# enum metaclass's __getattr__ hook (about 200 ns a lookup).
_ACCRUAL = EntryKind.ACCRUAL
_IN, _DELETED, _BALANCE = DealEntry.IN, DealChange.DELETED, DealAction.BALANCE
_TRADES = frozenset(a for a in DealAction if a.is_trade)
_OPEN, _CLOSE = Trigger.OPEN, Trigger.CLOSE
_FIELDS = _rows.FIELDS


def _middle(client: str, symbol: str, lots: Decimal, day: date) -> str:
    """The fields of a line that the entries of one deal share."""
    return f"{client}\x1f{symbol}\x1f{lots!s}\x1f{day_text(day)}"


def _lead(kind: EntryKind, server: str, ticket: int) -> str:
    """The first fields of a line, which the entries of one deal share."""
    return f"{kind}\x1f{server}\x1f{ticket}"


def _joined(
    lead: str, ib: str, component: str, amount: Decimal, code: str, level: int, middle: str,
    explanation: str, direct: str,
) -> str:  # fmt: skip
    """A line from its fields (``lead`` and ``middle``: the ones an entry shares)."""
    return (
        f"{lead}\x1f{ib}\x1f{component}\x1f{amount!s}\x1f{code}\x1f{level}\x1f{middle}\x1f"
        f"{explanation}\x1f{direct}"
    )


Due = dict[str, tuple[str, Decimal]]  # key (as text) -> the line of the entry due, its amount
# What the fast path makes due: per key in key order, its line, its amount and the group its
# amount is summed in (IB, trading day, currency: see _rows.fold).
_Fast = list[tuple[str, str, Decimal, tuple[str, str, str]]]
# Per currency and chain, for the fast path: the shares in the chain's order, and per level in
# the order of its keys the key's tail, the line's parts, the IB and the level's place.
_Levels = tuple[tuple[Decimal, ...], tuple[tuple[str, str, str, str, str, int], ...]]


@attrs.frozen
class EngineChanges:
    """What the engine learned since it was last asked that later deals depend on: facts of
    deals (position openings, clients' lots and deposits) and the closing deals still waiting
    for their opening deal. :class:`RebateBook` records them with the entries."""

    facts: tuple[Fact, ...] = attrs.field(default=(), converter=_facts)
    parked: tuple[Deal, ...] = ()
    # With a settlement horizon: the newest trading day processed as of these changes, and
    # the items refused as beyond the horizon.
    newest_day: date | None = None
    late: tuple[LateCorrection, ...] = ()


class RebateEngine:
    """Turns deals into rebate entries for one schedule and one distribution strategy.

    ``cpa_distribution`` shares a CPA up the chain (default: all to the client's own IB); a
    per-lot strategy sees the CPA as one unit, so what a CPA pays never depends on the lots.
    """

    def __init__(
        self,
        tree: IbTree,
        schedules: ScheduleBook,
        distribution: Distribution,
        *,
        client_of: Callable[[str, int], str | None],
        account_group_of: Callable[[str, int], str],
        trading_day_of: Callable[[Deal], date],
        component: str = "rebate",
        cpa_distribution: Distribution | None = None,
        horizon: timedelta | None = None,
        clock: Clock | None = None,
    ) -> None:
        if horizon is not None and (
            not isinstance(horizon, timedelta) or horizon < timedelta(days=1) or horizon % _DAY
        ):
            raise ValidationError("a settlement horizon is a whole number of days, at least one")
        self.tree = tree
        self.schedules = schedules
        self.distribution = distribution
        self.cpa_distribution = cpa_distribution or FixedShares((Decimal(1),))
        self.client_of = client_of
        self.account_group_of = account_group_of
        self.trading_day_of = trading_day_of
        self.component = component
        self.horizon = horizon
        # With a horizon: a deal dated more than a day past this clock's now (a typo, a
        # hostile dealer) is paid but never moves the settled days on (see process).
        self.clock = clock
        # The strategies that pay on the IBs' recorded ranks (asked once, not per deal).
        self._ranked = tuple(
            d for d in (distribution, self.cpa_distribution) if getattr(d, "needs_ranks", False)
        )
        # FixedShares (immutable) paid per deal without its Share objects (see _fixed_due):
        # its levels, and per currency and chain the text of each level's fields, which only
        # those and the settings decide (so the cache never goes stale).
        self._fixed = distribution._levels if type(distribution) is FixedShares else ()
        self._fixed_levels: dict[tuple[str, Sequence[str]], _Levels] = {}
        self.reset()

    def reset(self) -> None:
        """Forget everything processed or restored, keeping the configuration (the tree,
        schedules and strategies are the host's, and stay shared)."""
        # A broker's day puts millions of entries in these maps, so they hold only text and
        # numbers (see _state): per key the line of the entry due (its amount is the running
        # total paid), the keys of each deal, the last feed cursor applied per deal.
        self._paid: dict[str, str] = {}  # key (as text) -> line of the entry due on it
        self._keys_of = KeyLists()  # by the deal's text key (deal_text)
        self._cursor: dict[str, int] = {}  # by the deal's text key
        # What later deals depend on (kept only while a schedule version needs it):
        self._opened: Flat[tuple[str, int], datetime] = Flat()  # (server, position) -> time
        self._parked: dict[tuple[str, int], dict[DealKey, Deal]] = {}  # closes awaiting it
        self._lots_opened: dict[str, Decimal] = {}  # lots each deal opened (by text key)
        self._lots_closed: dict[str, Decimal] = {}  # ... and closed
        self._opened_sum: dict[str, Decimal] = {}  # per client
        self._closed_sum: dict[str, Decimal] = {}
        self._deposits: dict[str, str] = {}  # client -> its live deposits, as records
        self._cpa_keys = KeyLists()
        self._cpa_state: dict[str, str] = {}  # client -> first deposit if qualified, as settled
        # Clients whose first deposit is too small (or fell under no CPA), and the schedule
        # version whose CPA rule a client's big enough first deposit falls under. Both hold
        # only text and numbers, so the garbage collector never walks them (see _state).
        self._cpa_blocked: dict[str, bool] = {}
        self._cpa_version: dict[str, int] = {}
        # Period caps: each (IB, period) group's uncapped total and its cap key.
        self._period_totals: dict[tuple[str, str], Decimal] = {}
        self._cap_keys = KeyLists()
        self._facts: list[Fact | str] = []  # (trade facts as the rows the book stores)
        self._folded: _rows.Folded = {}  # the sums of the lines written by the batch in hand
        self._newly_parked: dict[DealKey, Deal] = {}
        self._restoring = False
        # The settlement horizon: the newest trading day processed; per batch (oldest first)
        # that day and the deals the batch touched; per deal the last batch that touched it;
        # what forgotten keys had paid, per IB and currency; items refused since last asked.
        self._newest: date | None = None
        self._batches: collections.deque[tuple[int, date, str]] = collections.deque()
        self._batch_of: dict[str, int] = {}
        self._batch_no = 0
        self._settled_paid: dict[tuple[str, str], Decimal] = {}
        # Per server, the highest ticket forgotten: tickets only grow, so an item for a deal
        # not held at or below it is a correction of a settled deal, whatever its new time.
        self._forgotten: dict[str, int] = {}
        self._late: list[LateCorrection] = []

    # -- processing -------------------------------------------------------------------------
    def process(self, items: Iterable[FeedItem]) -> RebateEntries:
        """Handle feed items; an item at or below a deal's last applied cursor is a duplicate
        or a stale replay and changes nothing, whatever order it arrives in."""
        out: list[str] = []
        book = self.schedules
        history = book.needs_history
        # Entries of deals that later deals depend on (opening deals only for a minimum
        # holding time or a CPA counting opened lots; closing deals and deposits for a CPA).
        learns = {
            DealEntry.IN: book.needs_openings or book.counts_opened_lots,
            DealEntry.OUT: book.pays_cpa,
            DealEntry.INOUT: book.pays_cpa,
            DealEntry.OUT_BY: book.pays_cpa,
        }
        on_open = book.pays_on_open  # else opening deals earn nothing by themselves
        clients: set[str] = set()
        cursors = self._cursor
        deposits = book.pays_cpa
        client_of = self.client_of
        facts = self._facts
        horizon = self.horizon is not None
        touched: list[str] = []
        newest = self._newest
        closed_before = self._closed_before()
        trading_day_of = self.trading_day_of
        forgotten = self._forgotten
        latest = None if self.clock is None else (self.clock.now() + _ONE_DAY).date()
        # The batch's sums per IB, day and currency, added up as each line is written (so in
        # the lines' order, as _rows.fold adds them): the caps count them, the entries keep them.
        folded = self._folded = {}
        for item in items:
            deal = item.deal
            dk = f"{deal.server}\x1f{deal.ticket}"  # (deal_text, inlined)
            if horizon:
                touched.append(dk)  # (as a restore counts the batch's cursors)
            before = cursors.get(dk)
            if item.cursor <= (before or 0):
                continue
            cursors[dk] = item.cursor
            deleted = item.change is _DELETED
            if deal.action in _TRADES:  # (Deal.action.is_trade, without the property call)
                if horizon:
                    day = trading_day_of(deal)
                    settled = before is None and deal.ticket <= forgotten.get(deal.server, 0)
                    if settled or (closed_before is not None and closed_before(day)):
                        assert self._newest is not None
                        late = LateCorrection(
                            cursor=item.cursor, change=item.change, deal=deal, trading_day=day,
                            horizon_day=self._newest,
                        )  # fmt: skip
                        self._late.append(late)
                        # A refused item leaves no trace of its deal (a restore skips it too).
                        if before is None:
                            del cursors[dk]
                        else:
                            cursors[dk] = before
                        touched.pop()
                        continue
                    if (newest is None or day > newest) and (latest is None or day <= latest):
                        newest = day
                entry = deal.entry
                learn = history and learns[entry]
                settle = on_open or entry is not _IN
                if not (learn or settle):
                    continue
                client = client_of(deal.server, deal.login)  # once for both
                if learn:
                    # (lots of a deal no client was known for count for nobody, then or
                    # when restored, whoever the login belongs to by then). The fact goes
                    # straight to the row the book stores.
                    opened, closed = (
                        _NO_LOTS if deleted or client is None else lots_opened_closed(deal)
                    )
                    when = deal.time if entry is _IN else None
                    facts.append(
                        _rows.trade_row(
                            deal.ticket, deal.login, deal.position_id, when, opened, closed
                        )
                    )
                    changed = self._learn_trade(
                        deal.server, dk, deal.position_id, when, opened, closed, client, out
                    )
                    if changed and client is not None:
                        clients.add(client)
                if settle:
                    out.extend(self._settle_deal(deal, dk, deleted, client))
            elif deposits and deal.action is _BALANCE:
                client = client_of(deal.server, deal.login)
                if client is not None:
                    deposit = self._deposit_fact(deal, deleted)
                    facts.append(deposit)
                    if self._learn_deposit(deal.server, client, deposit):
                        clients.add(client)
        for client in sorted(clients):
            out.extend(self._settle_cpa(client))
        if self.schedules.has_caps:  # (no cap line is written yet: the sums are the batch's)
            out.extend(self._caps(_rows.dated(folded)))
        if horizon and newest is not None and (touched or out):
            self._newest = newest
            self._settle_batch(touched, out)
        return _rows.from_lines(out, folded)

    # -- the settlement horizon ---------------------------------------------------------------
    def _closed_before(self) -> Callable[[date], bool] | None:
        """Whether a trading day is settled (beyond the horizon behind the newest trading day
        processed, and its cap period over); None while nothing is."""
        if self.horizon is None or self._newest is None:
            return None
        newest, cut = self._newest, self._newest - self.horizon
        schedules = self.schedules

        def closed(day: date) -> bool:
            if day >= cut:
                return False
            cap = schedules.cap_for(day)
            return cap is None or newest >= cap[0].next_start(day)

        return closed

    def _settle_batch(self, touched: list[str], lines: Sequence[str]) -> None:
        """Note the deals a batch touched (its items' and its entries'), then forget the deals
        every batch that touched them is settled: their cursors, keys paid and lots."""
        assert self._newest is not None
        self._batch_no += 1
        number = self._batch_no
        deals = set(touched)
        for line in lines:
            _, server, ticket, _, component, _ = line.split(SEP, 5)
            if component != "cpa" and not component.startswith("cap:"):
                deals.add(f"{server}\x1f{ticket}")
        batch_of = self._batch_of
        for dk in deals:
            batch_of[dk] = number
        self._batches.append((number, self._newest, LIST.join(sorted(deals))))
        closed = self._closed_before()
        assert closed is not None
        while self._batches and closed(self._batches[0][1]):
            number, _, kept = self._batches.popleft()
            for dk in kept.split(LIST) if kept else ():
                if batch_of.get(dk) == number:  # (else a later batch touched it again)
                    self._forget(dk)

    def _forget(self, dk: str) -> None:
        del self._batch_of[dk]
        server, ticket = dk.rsplit(SEP, 1)
        if int(ticket) > self._forgotten.get(server, 0):
            self._forgotten[server] = int(ticket)
        self._cursor.pop(dk, None)
        self._lots_opened.pop(dk, None)
        self._lots_closed.pop(dk, None)
        settled = self._settled_paid
        for key in self._keys_of.pop(dk) or ():
            line = self._paid.pop(key, None)
            if line is not None:
                _, _, _, ib, _, figure, code, _ = line.split(SEP, 7)
                settled[(ib, code)] = settled.get((ib, code), _ZERO) + Decimal(figure)

    def late_corrections(self) -> list[LateCorrection]:
        """Items refused as beyond the settlement horizon and not yet taken by
        :meth:`take_changes` (the rebate book records them with its batch)."""
        return list(self._late)

    def _settle_deal(self, deal: Deal, dk: str, deleted: bool, client_id: str | None) -> list[str]:
        if self._parked:
            position = (deal.server, deal.position_id)
            parked = self._parked.get(position)
            if parked is not None and (deal.server, deal.ticket) in parked:
                del parked[(deal.server, deal.ticket)]
                if not parked:
                    del self._parked[position]
                self._newly_parked.pop((deal.server, deal.ticket), None)
        due = None if deleted or client_id is None else self._due(deal, dk, client_id)
        if due is _WAIT:
            deal_key = (deal.server, deal.ticket)
            self._parked.setdefault((deal.server, deal.position_id), {})[deal_key] = deal
            self._newly_parked[deal_key] = deal
            due = None
        found = self._keys_of._d.get(dk)
        if found is None:  # a deal seen for the first time: everything due is a new accrual
            if not due:
                return []
            paid = self._paid
            out = []
            kept = []
            folded = self._folded
            if isinstance(due, list):  # the fast path's: in key order, with each line's group
                for key, line, amount, group in due:
                    if amount:  # (nothing due is nothing paid: no entry, no key)
                        paid[key] = line
                        out.append(line)
                        kept.append(key)
                        folded[group] = folded.get(group, _ZERO) + amount
            else:
                for key in sorted(due):
                    line, amount = due[key]
                    if amount:
                        paid[key] = line
                        out.append(line)
                        kept.append(key)
                _rows.fold(out, folded)
            if kept:
                self._keys_of._d[dk] = LIST.join(kept)  # (dk is the deal's text already)
            return out
        if isinstance(due, list):
            due = {key: (line, amount) for key, line, amount, _ in due}
        out, self._keys_of[dk] = self._settle(found.split(LIST) if found else (), due or {})
        return out

    def _due(self, deal: Deal, dk: str, client_id: str) -> Due | _Fast | None:
        """What the deal (``dk``: its text key) earns now, per key; ``_WAIT`` while its opening
        deal is unknown. The fast path's answer is a list in key order (see _Fast)."""
        chain = self.tree.client_chain(client_id, deal.time)
        if chain is None:
            return None
        try:
            schedule = self.schedules.at(deal.time)
        except NotFoundError:
            return None
        entry = deal.entry
        if entry is _IN and not schedule.pays_on_open:
            return None
        group = self.account_group_of(deal.server, deal.login)
        held = None
        if entry is not _IN and self.schedules.needs_openings:  # (else no rule has a minimum)
            found = schedule.resolve(deal.symbol, group)
            if found is not None and found[0].min_hold is not None:
                opened = self._opened.find((deal.server, deal.position_id))
                if opened is None:
                    return _WAIT
                held = deal.time - opened
        line = schedule.line(deal, group, held=held)
        if line is None:
            return None
        day = self.trading_day_of(deal)
        head = f"schedule {schedule.schedule_id} v{schedule.version}; {line.explanation}; level "
        server, ticket, symbol, lots, component = (
            deal.server, deal.ticket, deal.symbol, line.lots, self.component
        )  # fmt: skip
        dtext = day_text(day)
        middle = f"{client_id}\x1f{symbol}\x1f{lots!s}\x1f{dtext}"  # (_middle, inlined)
        lead = f"accrual\x1f{dk}"  # (_lead of an accrual, inlined: dk is server and ticket)
        direct = chain[0]
        if self._fixed:
            fast = self._fixed_due(chain, line.pool, line.revenue, dk, lead, middle, head, dtext)
            if fast is not None:
                return fast
        shares = self._shares(self.distribution, list(chain), line.lots, line.pool, deal.time)
        if line.revenue is not None:
            shares = _within(shares, line.revenue, line.pool.currency)
        due: Due = {}
        for share in shares:
            ib, level, amount = share.ib_id, share.level, share.amount
            why = f"{head}{level}: {share.step}"
            text = _joined(
                lead, ib, component, amount.amount, amount.currency.code, level, middle, why, direct
            )
            if text.count(SEP) != _FIELDS - 1:  # a control character: worked out field by field
                text = line_of(
                    RebateEntry(
                        kind=_ACCRUAL, server=server, ticket=ticket, ib_id=ib,
                        component=component, amount=amount, level=level, client_id=client_id,
                        symbol=symbol, lots=lots, trading_day=day, explanation=why,
                        direct_ib_id=direct,
                    )
                )  # fmt: skip
            due[f"{server}\x1f{ticket}\x1f{ib}\x1f{component}"] = (text, amount.amount)
        return due

    def _fixed_due(
        self,
        chain: tuple[str, ...],
        pool: UnroundedMoney,
        revenue: Decimal | None,
        deal_key: str,
        lead: str,
        middle: str,
        head: str,
        day: str,
    ) -> _Fast | None:
        """What :class:`FixedShares` pays up ``chain``, written as ``_due`` writes the
        strategy's shares, without a Share or money object per level (each level's amount is
        the same exact product of the pool and its share): per key in key order, its line, its
        amount and its group (``day``: the deal's trading day as text). None, for the general
        path, when the shares would be scaled down to what the deal may pay, a product is out
        of range, or a field holds a control character."""
        code = pool.currency.code
        key = (code, chain)
        found = self._fixed_levels.get(key)
        if found is None:
            _check_chain(chain)
            if len(self._fixed_levels) >= 100_000:
                self._fixed_levels.clear()
            component = self.component
            made = [
                (f"\x1f{ib}\x1f{component}", f"\x1f{ib}\x1f{component}\x1f",
                 f"\x1f{code}\x1f{level}\x1f", f"{level}: {label}", ib, n)
                for n, (ib, (level, _, label)) in enumerate(zip(chain, self._fixed, strict=False))
            ]  # fmt: skip
            if any(p[1].count(SEP) != 3 or p[2].count(SEP) != 3 or SEP in p[3] for p in made):
                return None  # (a control character in an id: the general path says so)
            shares = tuple(share for _, share, _ in self._fixed[: len(made)])
            # The keys share the deal's part: in key order is in the order of their tails.
            found = self._fixed_levels[key] = (shares, tuple(sorted(made)))
        shares, parts = found
        # Every line's separators are those of its parts: checked once for the deal's.
        of = f"{pool.amount!s}\x1f{chain[0]}"
        if lead.count(SEP) != 2 or middle.count(SEP) != 3 or SEP in head or of.count(SEP) != 1:
            return None
        amount = pool.amount
        try:
            figures = [_EXACT_MUL(amount, share) for share in shares]
        except DecimalException:
            return None
        if revenue is not None:
            total = _ZERO
            for figure in figures:
                total += figure  # (as _within adds them, in the chain's order)
            if total > revenue:
                return None
        tail_of = f"{middle}\x1f{head}"
        return [
            (deal_key + tail, f"{lead}{ib_part}{figures[n]!s}{code_part}{tail_of}{step}{of}",
             figures[n], (ib, day, code))
            for tail, ib_part, code_part, step, ib, n in parts
        ]  # fmt: skip

    def _shares(
        self,
        distribution: Distribution,
        chain: list[str],
        lots: Decimal,
        pool: Money | UnroundedMoney,
        at: datetime,
    ) -> list[Share]:
        """The strategy's shares; a strategy on the IBs' recorded ranks (``needs_ranks``) gets
        each IB's rank as it stood at ``at``."""
        if self._ranked and any(distribution is d for d in self._ranked):
            ranked = cast(_Ranked, distribution)
            tree = self.tree
            return ranked.distribute(chain, lots, pool, rank_of=lambda ib: tree.rank(ib, at))
        return distribution.distribute(chain, lots, pool)

    def _settle(self, keys: Sequence[str], due: Due) -> tuple[list[str], list[str]]:
        """Bring what was paid on ``keys`` (as text) to what is due; returns the differences
        (as lines) and the keys paid now.

        A key's state is the sum of its entries and nothing else, so that an engine restored
        from the entries holds exactly this one's state: a key that pays nothing (due zero, or
        brought back to zero) keeps no line, and the next amount due on it is an accrual."""
        out = []
        kept = []
        paid_lines = self._paid
        for text in sorted(set(keys) | due.keys()):
            before = paid_lines.get(text)
            after = due.get(text)
            paid = amount_of(before) if before else _ZERO
            owed = after[1] if after else _ZERO
            if owed:
                kept.append(text)
            if paid == owed:
                continue
            kind = (
                EntryKind.ACCRUAL if before is None
                else EntryKind.REVERSAL if owed == 0
                else EntryKind.ADJUSTMENT
            )  # fmt: skip
            if after is not None:
                line = after[0]
                if owed:
                    paid_lines[text] = line
                else:  # brought to zero: the reversal explains why (the line due now)
                    del paid_lines[text]
                if before is not None:  # (a new key's accrual is the entry due as it is)
                    line = with_change(line, kind, owed - paid)
                out.append(line)
            else:
                assert before is not None
                out.append(with_change(before, kind, -paid))
                del paid_lines[text]
        _rows.fold(out, self._folded)
        return out, kept

    # -- what later deals depend on -----------------------------------------------------------
    def _learn_trade(
        self,
        server: str,
        dk: str,
        position: int,
        when: datetime | None,
        opened: Decimal,
        closed: Decimal,
        client: str | None,
        out: list[str],
    ) -> bool:
        """Record what a trade deal (a :class:`TradeFact`'s fields) tells later deals: when its
        position opened (for an opening deal; a deleted opening still says when it opened) and
        the lots it opened and closed (zero once deleted). Closing deals waiting for a newly
        known opening settle into ``out``. Returns whether the client's CPA may have changed."""
        book = self.schedules
        if when is not None and book.needs_openings:
            key = (server, position)
            known = self._opened.find(key)
            if known is None or when < known:
                self._opened[key] = when
                for waiting in sorted(self._parked.pop(key, {}).values(), key=_order):
                    self._newly_parked.pop((waiting.server, waiting.ticket), None)
                    if not self._restoring:  # restoring: its entries are on record
                        wk = deal_text(waiting.server, waiting.ticket)
                        who = self.client_of(waiting.server, waiting.login)
                        out.extend(self._settle_deal(waiting, wk, False, who))
        if client is None or not book.pays_cpa:
            return False
        old_o = new_o = _ZERO
        if book.counts_opened_lots:
            old_o = self._lots_opened.pop(dk, _ZERO)
            new_o = opened
        old_c = self._lots_closed.pop(dk, _ZERO)
        new_c = closed
        if new_o:
            self._lots_opened[dk] = new_o
        if new_c:
            self._lots_closed[dk] = new_c
        if new_o != old_o:
            self._opened_sum[client] = self._opened_sum.get(client, _ZERO) - old_o + new_o
        if new_c != old_c:
            self._closed_sum[client] = self._closed_sum.get(client, _ZERO) - old_c + new_c
        if client in self._cpa_blocked:
            return False  # the first deposit rules a CPA out, whatever the lots
        state = self._cpa_state.get(client)
        if state and new_o >= old_o and new_c >= old_c:
            return False  # qualified already, and more lots cannot change that
        version = self._cpa_version.get(client)
        if version is not None and state is not None:
            rule = book.version(version).cpa
            assert rule is not None
            qualifies = self._lots(client, rule.trigger) >= rule.min_lots
            if qualifies == bool(state):
                return False  # the lots are still on the same side of the minimum
        return True

    def _deposit_fact(self, deal: Deal, deleted: bool) -> DepositFact:
        """A balance deal's fact: its time, amount and trading day for a live deposit."""
        if deleted or not deal.profit.is_positive():
            return DepositFact(ticket=deal.ticket, login=deal.login)
        return DepositFact(
            ticket=deal.ticket, login=deal.login, at=deal.time, amount=deal.profit,
            trading_day=self.trading_day_of(deal),
        )  # fmt: skip

    def _learn_deposit(self, server: str, client: str, fact: DepositFact) -> bool:
        """Keep the client's live deposits as records, the first first. False when the client's
        CPA cannot have changed: its first deposit is the same record as when the CPA was last
        settled (what is due depends on that deposit and on lots, which a deposit leaves as
        they are)."""
        found = self._deposits.get(client)
        records = []
        if found:
            this = record_of(server, fact.ticket)
            records = [r for r in found.split(LIST) if not r.startswith(this)]
        if fact.amount is not None and fact.at is not None and fact.trading_day is not None:
            amount = fact.amount
            record = deposit_record(
                server, fact.ticket, fact.login, fact.at, amount.amount, amount.currency.code,
                fact.trading_day,
            )  # fmt: skip
            records.append(record)
            if len(records) > 1:
                records.sort(key=record_order)
        self._deposits[client] = LIST.join(records)
        first_before = found.split(LIST, 1)[0] if found else ""
        if records and records[0] == first_before and client in self._cpa_state:
            return False
        self._cpa_version.pop(client, None)
        return True

    def _settle_cpa(self, client: str) -> list[str]:
        """Bring the client's CPA to what is due now. What is due depends only on the first
        deposit and whether the client qualifies: unchanged, there is nothing to do."""
        found = self._qualified(client)
        state = found[0] if found else ""  # the first deposit's record, if qualified
        before = self._cpa_state.get(client)
        self._cpa_state[client] = state
        if before == state or (
            before is None and not state and client not in self._cpa_keys._d  # (by text)
        ):
            return []  # unchanged, or nothing paid and nothing due
        due: Due = {}
        if found:
            due = self._cpa(client, state, found[1], found[2])
        out, self._cpa_keys[client] = self._settle(self._cpa_keys.get(client) or (), due)
        return out

    def _qualified(self, client: str) -> tuple[str, Schedule, Decimal] | None:
        """The client's first deposit (its record), the schedule then, and the lots counted,
        if the client qualifies for a CPA now."""
        version = self._cpa_version.get(client)
        found = self._deposits.get(client)
        if version is not None and found:  # the first deposit's verdict stands: only lots
            kept = self.schedules.version(version)
            assert kept.cpa is not None
            lots = self._lots(client, kept.cpa.trigger)
            return (found.split(LIST, 1)[0], kept, lots) if lots >= kept.cpa.min_lots else None
        self._cpa_blocked.pop(client, None)
        self._cpa_version.pop(client, None)
        if not found:
            return None
        record = found.split(LIST, 1)[0]  # kept first
        _, fields = record_parts(record)
        try:
            schedule = self.schedules.at(from_micros(int(fields[F_MICROS])))
        except NotFoundError:
            schedule = None
        rule = schedule.cpa if schedule is not None else None
        if (
            schedule is None or rule is None or rule.min_deposit is None
            or fields[F_CURRENCY] != rule.min_deposit.currency.code
            or Decimal(fields[F_AMOUNT]) < rule.min_deposit.amount
        ):  # fmt: skip
            self._cpa_blocked[client] = True  # no lots can change that; only another deposit
            return None
        self._cpa_version[client] = schedule.version
        lots = self._lots(client, rule.trigger)
        return (record, schedule, lots) if lots >= rule.min_lots else None

    def _lots(self, client: str, trigger: Trigger) -> Decimal:
        """The client's lots as a CPA rule counts them."""
        if trigger is _OPEN:
            return self._opened_sum.get(client, _ZERO)
        if trigger is _CLOSE:
            return self._closed_sum.get(client, _ZERO)
        return self._opened_sum.get(client, _ZERO) + self._closed_sum.get(client, _ZERO)

    def _cpa(self, client: str, first: str, schedule: Schedule, lots: Decimal) -> Due:
        """The CPA due for a qualified client (``first``: the record of its first deposit),
        shared up the chain as of the first deposit."""
        rule = schedule.cpa
        assert rule is not None
        assert rule.amount is not None
        server, fields = record_parts(first)
        ticket, when = int(fields[F_TICKET]), from_micros(int(fields[F_MICROS]))
        chain = self.tree.client_chain(client, when)
        if chain is None:
            return {}
        shares = self._shares(self.cpa_distribution, list(chain), _ONE, rule.amount, when)
        head = (
            f"schedule {schedule.schedule_id} v{schedule.version}; CPA {rule.amount}: first "
            f"deposit {fields[F_AMOUNT]} {fields[F_CURRENCY]} (minimum {rule.min_deposit}), "
            f"{lots} lots {rule.trigger.value} (minimum {rule.min_lots}); level "
        )  # (one unit: what a CPA pays never depends on the lots)
        day = date.fromisoformat(fields[F_DAY])
        lead, middle, direct = (
            _lead(_ACCRUAL, server, ticket),
            _middle(client, "", lots, day),
            chain[0],
        )
        due: Due = {}
        for share in shares:
            ib, level, amount = share.ib_id, share.level, share.amount
            why = f"{head}{level}: {share.step}"
            text = _joined(
                lead, ib, "cpa", amount.amount, amount.currency.code, level, middle, why, direct
            )
            if text.count(SEP) != _FIELDS - 1:  # a control character: worked out field by field
                entry = RebateEntry(
                    kind=_ACCRUAL, server=server, ticket=ticket, ib_id=ib, component="cpa",
                    amount=amount, level=level, client_id=client, symbol="", lots=lots,
                    trading_day=day, explanation=why, direct_ib_id=direct,
                )  # fmt: skip
                text = line_of(entry)
            due[f"{server}\x1f{ticket}\x1f{ib}\x1fcpa"] = (text, amount.amount)
        return due

    def _caps(self, summed: _rows.Sums) -> list[str]:
        """Bring each (IB, period) group that ``summed`` (a batch's rebate and CPA amounts,
        by IB, trading day and currency) touches to its cap."""
        out = []
        totals, cut = self._period_totals, self._cap_keys
        ever_cut = cut._d  # (keyed by the group as text, as KeyLists keys it)
        acting = [
            (group, period)
            for group, period in self._count_for_caps(summed).items()
            if totals[group] > period[1].amount or f"{group[0]}\x1f{group[1]}" in ever_cut
        ]  # (the others are within the cap, and were never cut)
        for group, (start, cap) in sorted(acting):
            ib, period = group
            total = totals[group]
            keys = cut.get(group)
            if not keys and total <= cap.amount:
                continue  # within the cap, and never cut
            due: Due = {}
            if total > cap.amount:
                note = (
                    f"{_ADVERB[period.split(':')[0]]} cap {cap}: "
                    f"accrued {total} {cap.currency.code}, cut {total - cap.amount}"
                )
                entry = RebateEntry(
                    kind=_ACCRUAL, server="", ticket=0, ib_id=ib, component=f"cap:{period}",
                    amount=UnroundedMoney(cap.amount - total, cap.currency), level=0,
                    client_id="", symbol="", lots=_ZERO, trading_day=start, explanation=note,
                    direct_ib_id=ib,
                )  # fmt: skip
                due[_state.text(entry.key)] = (line_of(entry), entry.amount.amount)
            settled, self._cap_keys[group] = self._settle(keys or (), due)
            out.extend(settled)
        return out

    def _count_for_caps(self, summed: _rows.Sums) -> dict[tuple[str, str], tuple[date, Money]]:
        """Add rebate and CPA amounts (by IB, trading day and currency) to their periods'
        totals; returns the capped groups touched (IB, period) with each period's start and
        cap."""
        periods: dict[date, tuple[str, date, Money] | None] = {}
        totals = self._period_totals
        touched: dict[tuple[str, str], tuple[date, Money]] = {}
        for (ib, day, code), figure in summed.items():
            try:
                period = periods[day]
            except KeyError:
                found = self.schedules.cap_for(day)
                period = periods[day] = (
                    None if found is None
                    else (f"{found[0].value}:{found[1].isoformat()}", found[1], found[2])
                )  # fmt: skip
            if period is None or code != period[2].currency.code:
                continue  # no cap; or a cap counts amounts in its own currency only
            label, start, cap = period
            group = (ib, label)
            totals[group] = totals.get(group, _ZERO) + figure
            touched[group] = (start, cap)
        return touched

    # -- state --------------------------------------------------------------------------------
    def take_changes(self) -> EngineChanges:
        """What was learned since the last call (facts of deals, closes newly waiting)."""
        facts, parked, newest, late = self._take()
        return EngineChanges(facts, parked, newest, late)

    def _take_stored_changes(
        self,
    ) -> tuple[_rows.RebateFacts, tuple[Deal, ...], date | None, tuple[LateCorrection, ...]]:
        """:meth:`take_changes` for the rebate book: the facts as the rows the log keeps (the
        fact objects die young instead of living on in the batch's event)."""
        facts, parked, newest, late = self._take()
        rows = [f if isinstance(f, str) else _rows.fact_row(f) for f in facts]
        return _rows.facts_of_rows(rows), parked, newest, late

    def _take(
        self,
    ) -> tuple[list[Fact | str], tuple[Deal, ...], date | None, tuple[LateCorrection, ...]]:
        taken = (
            list(self._facts), tuple(self._newly_parked.values()),
            self._newest if self.horizon is not None else None, tuple(self._late),
        )  # fmt: skip
        self._facts.clear()
        self._newly_parked.clear()
        self._late.clear()
        return taken

    def restore(
        self,
        entries: Iterable[RebateEntry],
        server: str,
        cursors: Iterable[tuple[int, int]],
        changes: EngineChanges | None = None,
    ) -> None:
        """Bring the state back from recorded entries, the cursors they were made at and what
        the engine had learned then (in the order they were recorded).

        Restoring batch by batch gives exactly the state of the engine that processed them:
        a key's line is the sum of its entries (the fields of the last, as the entry due), and
        a close that waited before this batch waits no more if the batch handled it (processing
        took it off the waiting list; if it still waits, it is among ``changes.parked``)."""
        cursors = list(cursors)
        refused = set() if changes is None else {(x.deal.ticket, x.cursor) for x in changes.late}
        if refused:  # items refused as late left no trace of their deals (nor unparked one)
            cursors = [c for c in cursors if c not in refused]
        if self._parked:
            self._unpark_handled(server, cursors)
        if changes is not None:
            self._restoring = True
            try:
                for fact in changes.facts:
                    self._relearn(server, fact)
            finally:
                self._restoring = False
            for deal in changes.parked:
                position = (deal.server, deal.position_id)
                self._parked.setdefault(position, {})[(deal.server, deal.ticket)] = deal
        lines = _rows.lines(RebateEntries.of(entries))
        if self.schedules.has_caps:
            self._count_for_caps(_rows.sums(lines, caps=False))
        paid_lines = self._paid
        for line in lines:
            kind, srv, ticket, ib, component, figure, _, _, client, _ = line.split(SEP, 9)
            text = f"{srv}\x1f{ticket}\x1f{ib}\x1f{component}"
            before = paid_lines.get(text)
            total = Decimal(figure) + (amount_of(before) if before else _ZERO)
            index, group_of = self._index_of(srv, ticket, ib, component, client)
            keys = index.get(group_of) or ()
            if total:
                if before is None and kind == "accrual":  # the key's first entry
                    paid_lines[text] = line
                else:  # (the engine keeps the entry due on a key, an accrual)
                    paid_lines[text] = with_change(line, _ACCRUAL, total)
                if text not in keys:
                    index[group_of] = (*keys, text)
            else:
                paid_lines.pop(text, None)
                index[group_of] = [k for k in keys if k != text]
        for ticket_no, cursor in cursors:
            dk = deal_text(server, ticket_no)
            self._cursor[dk] = max(cursor, self._cursor.get(dk, 0))
        newest = changes.newest_day if changes is not None else None
        if self.horizon is not None and newest is not None and (cursors or lines):
            self._newest = newest if self._newest is None else max(newest, self._newest)
            self._settle_batch([deal_text(server, t) for t, _ in cursors], lines)

    def _unpark_handled(self, server: str, cursors: list[tuple[int, int]]) -> None:
        """Take off the waiting list the closes a batch handled (its items past a deal's
        cursor), as processing them did."""
        handled = {
            (server, ticket)
            for ticket, cursor in cursors
            if cursor > self._cursor.get(deal_text(server, ticket), 0)
        }
        for position in [p for p, waiting in self._parked.items() if handled & waiting.keys()]:
            waiting = self._parked[position]
            for deal_key in handled & waiting.keys():
                del waiting[deal_key]
            if not waiting:
                del self._parked[position]

    def _index_of(
        self, server: str, ticket: str, ib: str, component: str, client: str
    ) -> tuple[KeyLists, Hashable]:
        """Where a key is listed: by client (CPA), by IB and period (caps), by deal."""
        if component == "cpa":
            return self._cpa_keys, client
        if component.startswith("cap:"):
            return self._cap_keys, (ib, component.removeprefix("cap:"))
        return self._keys_of, f"{server}\x1f{ticket}"

    def totals(self) -> dict[str, UnroundedMoney]:
        """What each IB has accrued in all, unrounded."""
        sums: dict[tuple[str, str], Decimal] = dict(self._settled_paid)
        for line in self._paid.values():
            _, _, _, ib, _, figure, code, _ = line.split(SEP, 7)
            group = (ib, code)
            sums[group] = sums.get(group, _ZERO) + Decimal(figure)
        out: dict[str, UnroundedMoney] = {}
        for (ib, code), total in sums.items():
            amount = UnroundedMoney(total, Currency.of(code))
            out[ib] = out[ib] + amount if ib in out else amount
        return out

    def waiting(self) -> list[Deal]:
        """Closing deals waiting for their position's opening deal."""
        return sorted((d for p in self._parked.values() for d in p.values()), key=_order)

    def positions_opened(self, server: str, openings: Iterable[tuple[int, datetime]]) -> None:
        """Tell the engine when positions opened before its feed began (their closes would
        otherwise wait for an opening deal that will never come). Call before processing."""
        for position, at in openings:
            when = to_utc(at, "at")
            key = (server, position)
            if key in self._parked:
                raise ValidationError("tell openings before processing the deals that close them")
            known = self._opened.find(key)
            if known is None or when < known:
                self._opened[key] = when
                self._facts.append(PositionOpened(position=position, at=when))

    # -- snapshots (private, versioned; see RebateBook.snapshot) --------------------------------
    def _dump(self) -> dict[str, Any]:
        """The engine's state as JSON-ready data (format ``_SNAPSHOT``)."""
        converter = _converter()
        return {
            "format": _SNAPSHOT,
            "settings": self._settings(),
            "paid": self._paid,
            "keys_of": self._keys_of._d,
            "cursor": self._cursor,
            "opened": {k: to_micros(v) for k, v in self._opened._d.items()},
            "parked": [converter.unstructure(d) for d in self.waiting()],
            "lots_opened": _texts(self._lots_opened),
            "lots_closed": _texts(self._lots_closed),
            "opened_sum": _texts(self._opened_sum),
            "closed_sum": _texts(self._closed_sum),
            "deposits": self._deposits,
            "cpa_keys": self._cpa_keys._d,
            "cpa_state": self._cpa_state,
            "cpa_blocked": sorted(self._cpa_blocked),
            "cpa_version": self._cpa_version,
            "period_totals": [[ib, p, str(v)] for (ib, p), v in self._period_totals.items()],
            "cap_keys": self._cap_keys._d,
            "newest": self._newest.isoformat() if self._newest else None,
            "batches": [[n, d.isoformat(), t] for n, d, t in self._batches],
            "batch_of": self._batch_of,
            "batch_no": self._batch_no,
            "settled": [[ib, code, str(v)] for (ib, code), v in self._settled_paid.items()],
            "forgotten": self._forgotten,
        }

    def _settings(self) -> list[Any]:
        days = None if self.horizon is None else self.horizon // _DAY
        return [self.component, days]

    def _load(self, data: dict[str, Any]) -> bool:
        """Take the state of a dump; False (and the engine reset) if it is not one this engine
        can take (another format, other settings, damaged)."""
        self.reset()
        try:
            if data.get("format") != _SNAPSHOT or data.get("settings") != self._settings():
                return False
            converter = _converter()
            self._paid = _strs(data["paid"])
            self._keys_of._d = _strs(data["keys_of"])
            self._cursor = {str(k): int(v) for k, v in data["cursor"].items()}
            for k, v in data["opened"].items():
                self._opened._d[str(k)] = from_micros(int(v))
            for raw in data["parked"]:
                deal = converter.structure(raw, Deal)
                position = (deal.server, deal.position_id)
                self._parked.setdefault(position, {})[(deal.server, deal.ticket)] = deal
            self._lots_opened = _decimals(data["lots_opened"])
            self._lots_closed = _decimals(data["lots_closed"])
            self._opened_sum = _decimals(data["opened_sum"])
            self._closed_sum = _decimals(data["closed_sum"])
            self._deposits = _strs(data["deposits"])
            self._cpa_keys._d = _strs(data["cpa_keys"])
            self._cpa_state = _strs(data["cpa_state"])
            self._cpa_blocked = dict.fromkeys(map(str, data["cpa_blocked"]), True)
            self._cpa_version = {str(k): int(v) for k, v in data["cpa_version"].items()}
            self._period_totals = {
                (str(ib), str(p)): Decimal(v) for ib, p, v in data["period_totals"]
            }
            self._cap_keys._d = _strs(data["cap_keys"])
            newest = data["newest"]
            self._newest = date.fromisoformat(newest) if newest is not None else None
            self._batches.extend(
                (int(n), date.fromisoformat(d), str(t)) for n, d, t in data["batches"]
            )
            self._batch_of = {str(k): int(v) for k, v in data["batch_of"].items()}
            self._batch_no = int(data["batch_no"])
            self._settled_paid = {
                (str(ib), str(code)): Decimal(v) for ib, code, v in data["settled"]
            }
            self._forgotten = {str(k): int(v) for k, v in data["forgotten"].items()}
        except Exception:  # a damaged snapshot is no snapshot: the streams rebuild the state
            self.reset()
            return False
        return True

    def _relearn(self, server: str, fact: Fact) -> None:
        if type(fact) is DealFact:  # a deal as books before the short facts kept it
            deal = fact.deal(server)
            if deal.action.is_trade:
                fact = _trade_fact(deal, fact.deleted)
            elif deal.action is DealAction.BALANCE:
                fact = self._deposit_fact(deal, fact.deleted)
            else:
                return
        if type(fact) is PositionOpened:
            self._opened[(server, fact.position)] = fact.at
        elif type(fact) is DepositFact:
            client = self.client_of(server, fact.login)
            if client is not None and self.schedules.pays_cpa:
                self._learn_deposit(server, client, fact)
        elif type(fact) is TradeFact:
            position = (server, fact.position)
            parked = self._parked.get(position)
            if parked is not None:
                parked.pop((server, fact.ticket), None)
                if not parked:
                    del self._parked[position]
            client = self.client_of(server, fact.login)
            self._learn_trade(
                server, deal_text(server, fact.ticket), fact.position, fact.opened_at,
                fact.lots_opened, fact.lots_closed, client, [],
            )  # fmt: skip


_ADVERB = {"day": "daily", "week": "weekly", "month": "monthly"}
# Decimals go into f-strings as {d!s}: a plain {d} calls Decimal.__format__, four times slower.
_WAIT: Due = {}  # a distinct object: "the opening deal is not known yet"


_SNAPSHOT = "rebate-engine/2"  # 2: the highest ticket forgotten per server


def _converter() -> Any:
    from fxcrm_core.events import make_converter

    return make_converter()


def _texts(values: dict[str, Decimal]) -> dict[str, str]:
    return {k: str(v) for k, v in values.items()}


def _strs(values: dict[str, Any]) -> dict[str, str]:
    if not all(type(k) is str and type(v) is str for k, v in values.items()):
        raise TypeError
    return dict(values)


def _decimals(values: dict[str, Any]) -> dict[str, Decimal]:
    out = {str(k): Decimal(v) for k, v in values.items()}
    if not all(v.is_finite() for v in out.values()):
        raise ValueError
    return out


def _order(deal: Deal) -> tuple[datetime, int]:
    return (deal.time, deal.ticket)


def _trade_fact(deal: Deal, deleted: bool) -> TradeFact:
    """A trade deal's fact: the time of an opening deal only; the lots it opened and closed,
    zero once deleted."""
    opened, closed = (_ZERO, _ZERO) if deleted else lots_opened_closed(deal)
    return TradeFact(
        ticket=deal.ticket, login=deal.login, position=deal.position_id,
        opened_at=deal.time if deal.entry is _IN else None, lots_opened=opened,
        lots_closed=closed,
    )  # fmt: skip


class _Ranked(Protocol):
    def distribute(
        self,
        chain: Sequence[str],
        lots: Decimal,
        pool: Money | UnroundedMoney,
        *,
        rank_of: Callable[[str], int],
    ) -> list[Share]: ...


def _within(shares: list[Share], limit: Decimal, currency: Currency) -> list[Share]:
    """Shares scaled down (never up) so that together they stay within what the deal may pay
    in all (the schedule's revenue ceiling, its cap per deal): a strategy paying its own rates
    (pass-through, rank slices, a differential with rates a lot) is bounded like one sharing
    the pool. The step says so. Shares in another currency than the schedule's cannot be
    compared with it: refused."""
    total = _ZERO
    for s in shares:
        if s.amount.currency != currency:
            raise CurrencyMismatchError(
                "the distribution pays in another currency than the schedule's"
            )
        total += s.amount.amount
    if total <= limit:
        return shares
    factor = _DOWN.divide(limit, total)  # (rounded down: the scaled total never exceeds it)
    return [
        attrs.evolve(
            s,
            amount=UnroundedMoney(_DOWN.multiply(s.amount.amount, factor), s.amount.currency),
            step=f"{s.step}; x {factor!s} to stay within {limit!s} {currency.code} for the deal",
        )
        for s in shares
    ]


_DOWN = Context(prec=28, rounding=ROUND_DOWN)
_EXACT_MUL = EXACT.multiply
_ONE = Decimal(1)
_NO_LOTS = (_ZERO, _ZERO)
_ONE_DAY = timedelta(days=1)
