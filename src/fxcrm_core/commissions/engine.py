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
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Generic, TypeVar

import attrs

from fxcrm_core.commissions.distribution import Distribution, FixedShares
from fxcrm_core.commissions.schedule import Schedule, ScheduleBook, Trigger, lots_opened_closed
from fxcrm_core.commissions.tree import IbTree
from fxcrm_core.kernel._decimal import to_decimal
from fxcrm_core.kernel.errors import NotFoundError, ValidationError
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney
from fxcrm_core.kernel.time import from_micros, to_micros, to_utc
from fxcrm_core.trading import Deal, DealAction, DealChange, DealEntry, FeedItem

__all__ = ["EngineChanges", "EntryKind", "RebateEngine", "RebateEntry"]

Key = tuple[str, int, str, str]  # server, deal ticket, IB, component
DealKey = tuple[str, int]  # server, deal ticket
_ZERO = Decimal(0)
_MICROSECOND = timedelta(microseconds=1)


class EntryKind(enum.StrEnum):
    ACCRUAL = "accrual"
    ADJUSTMENT = "adjustment"
    REVERSAL = "reversal"


@attrs.frozen
class RebateEntry:
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
    _line: str | None = attrs.field(default=None, init=False, eq=False, repr=False)

    @property
    def key(self) -> Key:
        return (self.server, self.ticket, self.ib_id, self.component)

    def line(self) -> str:
        """The entry as one line of text, its 14 fields joined by ``\\x1f`` (the engine keeps
        what was paid on each key as the line of the entry due; the rebate book stores it).
        Ids and explanations carry no control characters; an explanation that does is kept
        with spaces in their place."""
        if self._line is not None:
            return self._line
        middle = _middle(self.client_id, self.symbol, self.lots, self.trading_day)
        kept = _keep_line(self, middle)
        if kept is not None:
            return kept
        line = _line_of(self, middle, self.explanation.replace(_SEP, " "))
        if line.count(_SEP) != _LINE_FIELDS - 1:
            raise ValidationError("ids in rebate entries carry no control characters")
        return line

    @classmethod
    def from_line(cls, line: str) -> RebateEntry:
        """The entry a :meth:`line` stands for (a ValueError if it stands for none)."""
        (kind, server, ticket, ib, component, amount, code, level, client, symbol, lots, day,
         why, direct) = line.split(_SEP)  # fmt: skip
        return cls(
            _KINDS[kind], server, int(ticket), ib, component,
            UnroundedMoney(amount, code), int(level), client, symbol,  # (converters check)
            to_decimal(lots, "lots"), date.fromisoformat(day), why, direct,
        )  # fmt: skip


_LINE_FIELDS = 14
_KINDS = {k.value: k for k in EntryKind}
# Members bound once for the per-deal paths: on Python 3.11 ``DealEntry.IN`` goes through the
# enum metaclass's __getattr__ hook (about 200 ns a lookup).
_ACCRUAL = EntryKind.ACCRUAL
_IN, _DELETED, _BALANCE = DealEntry.IN, DealChange.DELETED, DealAction.BALANCE
_OPEN, _CLOSE = Trigger.OPEN, Trigger.CLOSE


def _middle(client: str, symbol: str, lots: Decimal, day: date) -> str:
    """The fields of a line that the entries of one deal share."""
    return f"{client}\x1f{symbol}\x1f{lots!s}\x1f{_day_text(day)}"


def _day_text(day: date) -> str:
    """``day.isoformat()``, kept (a C call that takes ~0.6 µs, for every deal)."""
    text = _DAY_TEXT.get(day)
    if text is None:
        if len(_DAY_TEXT) >= 10_000:
            _DAY_TEXT.clear()
        text = _DAY_TEXT[day] = day.isoformat()
    return text


_DAY_TEXT: dict[date, str] = {}


def _line_of(e: RebateEntry, middle: str, explanation: str) -> str:
    a = e.amount
    return _joined(
        _lead(e.kind, e.server, e.ticket), e.ib_id, e.component, a.amount, a.currency.code,
        e.level, middle, explanation, e.direct_ib_id,
    )  # fmt: skip


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


def _keep_line(e: RebateEntry, middle: str) -> str | None:
    """Work out and keep the line of an entry whose shared fields are ``middle``; None (and
    nothing kept) when a field holds the separator."""
    line = _line_of(e, middle, e.explanation)
    if line.count(_SEP) != _LINE_FIELDS - 1:
        return None
    object.__setattr__(e, "_line", line)
    return line


@attrs.frozen
class EngineChanges:
    """What the engine learned since it was last asked that later deals depend on: compact
    facts of deals (position openings, clients' lots and deposits) and the closing deals still
    waiting for their opening deal. :class:`RebateBook` records them with the entries."""

    facts: tuple[str, ...] = ()
    parked: tuple[Deal, ...] = ()


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
    ) -> None:
        self.tree = tree
        self.schedules = schedules
        self.distribution = distribution
        self.cpa_distribution = cpa_distribution or FixedShares((Decimal(1),))
        self.client_of = client_of
        self.account_group_of = account_group_of
        self.trading_day_of = trading_day_of
        self.component = component
        # A broker's day puts millions of entries in these maps, so they hold only text and
        # numbers (see _Flat): per key the line of the entry due (its amount is the running
        # total paid), the keys of each deal, the last feed cursor applied per deal.
        self._paid: dict[str, str] = {}  # key (as _text) -> line of the entry due on it
        self._keys_of = _KeyLists()  # by the deal's text key (_deal_text)
        self._cursor: dict[str, int] = {}  # by the deal's text key
        # What later deals depend on (kept only while a schedule version needs it):
        self._opened: _Flat[tuple[str, int], datetime] = _Flat()  # (server, position) -> time
        self._parked: dict[tuple[str, int], dict[DealKey, Deal]] = {}  # closes awaiting it
        self._lots_opened: dict[str, Decimal] = {}  # lots each deal opened (by text key)
        self._lots_closed: dict[str, Decimal] = {}  # ... and closed
        self._opened_sum: dict[str, Decimal] = {}  # per client
        self._closed_sum: dict[str, Decimal] = {}
        self._deposits: dict[str, str] = {}  # client -> its live deposits, as deal facts
        self._cpa_keys = _KeyLists()
        self._cpa_state: dict[str, str] = {}  # client -> first deposit if qualified, as settled
        # Clients whose first deposit is too small (or fell under no CPA), and the schedule
        # version whose CPA rule a client's big enough first deposit falls under. Both hold
        # only text and numbers, so the garbage collector never walks them (see _Flat).
        self._cpa_blocked: dict[str, bool] = {}
        self._cpa_version: dict[str, int] = {}
        # Period caps: each (IB, period) group's uncapped total and its cap key.
        self._period_totals: dict[tuple[str, str], Decimal] = {}
        self._cap_keys = _KeyLists()
        self._facts: list[str] = []
        self._newly_parked: dict[DealKey, Deal] = {}
        self._restoring = False

    # -- processing -------------------------------------------------------------------------
    def process(self, items: Iterable[FeedItem]) -> list[RebateEntry]:
        """Handle feed items; an item at or below a deal's last applied cursor is a duplicate
        or a stale replay and changes nothing, whatever order it arrives in."""
        out: list[RebateEntry] = []
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
        for item in items:
            deal = item.deal
            dk = _deal_text(deal.server, deal.ticket)
            if item.cursor <= cursors.get(dk, 0):
                continue
            cursors[dk] = item.cursor
            deleted = item.change is _DELETED
            if deal.action.is_trade:
                entry = deal.entry
                learn = history and learns[entry]
                settle = on_open or entry is not _IN
                if not (learn or settle):
                    continue
                client = client_of(deal.server, deal.login)  # once for both
                if learn:
                    # (lots of a deal no client was known for count for nobody, then or
                    # when restored, whoever the login belongs to by then)
                    fact, opened, closed = _trade_fact(deal, deleted or client is None)
                    facts.append(fact)
                    when = deal.time if entry is _IN else None
                    changed = self._learn_trade(
                        deal.server, dk, deal.position_id, when, client, opened, closed, out
                    )
                    if changed and client is not None:
                        clients.add(client)
                if settle:
                    out.extend(self._settle_deal(deal, dk, deleted, client))
            elif deposits and deal.action is _BALANCE:
                client = client_of(deal.server, deal.login)
                if client is not None:
                    fact = self._deposit_fact(deal, deleted)
                    facts.append(fact)
                    self._learn_deposit(deal.server, client, fact)
                    clients.add(client)
        for client in sorted(clients):
            out.extend(self._settle_cpa(client))
        out.extend(self._caps(out))
        return out

    def _settle_deal(
        self, deal: Deal, dk: str, deleted: bool, client_id: str | None
    ) -> list[RebateEntry]:
        if self._parked:
            position = (deal.server, deal.position_id)
            parked = self._parked.get(position)
            if parked is not None and (deal.server, deal.ticket) in parked:
                del parked[(deal.server, deal.ticket)]
                if not parked:
                    del self._parked[position]
                self._newly_parked.pop((deal.server, deal.ticket), None)
        due = None if deleted or client_id is None else self._due(deal, client_id)
        if due is _WAIT:
            deal_key = (deal.server, deal.ticket)
            self._parked.setdefault((deal.server, deal.position_id), {})[deal_key] = deal
            self._newly_parked[deal_key] = deal
            due = None
        keys = self._keys_of.get(dk)
        if keys is None:  # a deal seen for the first time: everything due is a new accrual
            if not due:
                return []
            paid = self._paid
            out = []
            kept = []
            for key in sorted(due):
                entry = due[key]
                if entry.amount.amount:  # (nothing due is nothing paid: no entry, no key)
                    paid[key] = entry.line()
                    out.append(entry)
                    kept.append(key)
            if kept:
                self._keys_of[dk] = kept
            return out
        out, self._keys_of[dk] = self._settle(keys, due or {})
        return out

    def _due(self, deal: Deal, client_id: str) -> dict[str, RebateEntry] | None:
        """What the deal earns now, per key; ``_WAIT`` while its opening deal is unknown."""
        ib = self.tree.ib_of(client_id, deal.time)
        if ib is None:
            return None
        try:
            schedule = self.schedules.at(deal.time)
        except NotFoundError:
            return None
        if deal.entry is _IN and not schedule.pays_on_open:
            return None
        group = self.account_group_of(deal.server, deal.login)
        held = None
        if deal.entry.closes:
            found = schedule.resolve(deal.symbol, group)
            if found is not None and found[0].min_hold is not None:
                opened = self._opened.find((deal.server, deal.position_id))
                if opened is None:
                    return _WAIT
                held = deal.time - opened
        line = schedule.line(deal, group, held=held)
        if line is None:
            return None
        chain = self.tree.chain(ib, deal.time)
        shares = self.distribution.distribute(chain, line.lots, line.pool)
        day = self.trading_day_of(deal)
        head = f"schedule {schedule.schedule_id} v{schedule.version}; {line.explanation}; level "
        server, ticket, symbol, lots, component = (
            deal.server, deal.ticket, deal.symbol, line.lots, self.component
        )  # fmt: skip
        middle = _middle(client_id, symbol, lots, day)
        lead = _lead(_ACCRUAL, server, ticket)
        direct = chain[0]
        due = {}
        for share in shares:
            ib, level, amount = share.ib_id, share.level, share.amount
            why = f"{head}{level}: {share.step}"
            entry = RebateEntry(
                _ACCRUAL, server, ticket, ib, component, amount, level, client_id, symbol, lots,
                day, why, direct,
            )  # fmt: skip
            text = _joined(
                lead, ib, component, amount.amount, amount.currency.code, level, middle, why, direct
            )
            if text.count(_SEP) == _LINE_FIELDS - 1:  # (else line() works it out, or refuses)
                object.__setattr__(entry, "_line", text)
            due[f"{server}\x1f{ticket}\x1f{ib}\x1f{component}"] = entry  # (as _text(entry.key))
        return due

    def _settle(
        self, keys: Sequence[str], due: dict[str, RebateEntry]
    ) -> tuple[list[RebateEntry], list[str]]:
        """Bring what was paid on ``keys`` (as text) to what is due; returns the differences
        and the keys paid now.

        A key's state is the sum of its entries and nothing else, so that an engine restored
        from the entries holds exactly this one's state: a key that pays nothing (due zero, or
        brought back to zero) keeps no line, and the next amount due on it is an accrual."""
        out = []
        kept = []
        for text in sorted(set(keys) | due.keys()):
            before = self._paid.get(text)
            after = due.get(text)
            paid = _amount_of(before) if before else _ZERO
            owed = after.amount.amount if after else _ZERO
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
                if owed:
                    self._paid[text] = after.line()
                else:  # brought to zero: the reversal explains why (the line due now)
                    del self._paid[text]
                if before is not None:  # (a new key's accrual is the entry due as it is)
                    delta = UnroundedMoney(owed - paid, after.amount.currency)
                    after = attrs.evolve(after, kind=kind, amount=delta)
                out.append(after)
            else:
                assert before is not None
                was = RebateEntry.from_line(before)
                out.append(attrs.evolve(was, kind=kind, amount=-was.amount))
                del self._paid[text]
        return out, kept

    # -- what later deals depend on -----------------------------------------------------------
    def _learn_trade(
        self,
        server: str,
        dk: str,
        position: int,
        when: datetime | None,
        client: str | None,
        opened: Decimal,
        closed: Decimal,
        out: list[RebateEntry],
    ) -> bool:
        """Record what a trade deal tells later deals: when its position opened (``when``, for
        an opening deal; a deleted opening still says when it opened) and the lots it opened
        and closed (zero once deleted). Closing deals waiting for a newly known opening settle
        into ``out``. Returns whether the client's CPA may have changed."""
        book = self.schedules
        if when is not None and book.needs_openings:
            key = (server, position)
            known = self._opened.find(key)
            if known is None or when < known:
                self._opened[key] = when
                for waiting in sorted(self._parked.pop(key, {}).values(), key=_order):
                    self._newly_parked.pop((waiting.server, waiting.ticket), None)
                    if not self._restoring:  # restoring: its entries are on record
                        wk = _deal_text(waiting.server, waiting.ticket)
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

    def _deposit_fact(self, deal: Deal, deleted: bool) -> str:
        """A balance deal's fact: ``d|ticket|login`` for one that deposits nothing (a deleted
        deposit, a withdrawal), else with its time, amount, currency and trading day."""
        if deleted or not deal.profit.is_positive():
            return f"d|{deal.ticket}|{deal.login}"
        profit = deal.profit
        day = _day_text(self.trading_day_of(deal))
        return (
            f"d|{deal.ticket}|{deal.login}|{to_micros(deal.time)}|{profit.amount!s}|"
            f"{profit.currency.code}|{day}"
        )

    def _learn_deposit(self, server: str, client: str, fact: str) -> None:
        """Keep the client's live deposits as records (server and fact), the first first."""
        text = self._deposits.get(client)
        ticket = fact.split("|", 2)[1]
        this = f"{server}{_SEP}d|{ticket}|"
        records = [r for r in text.split(_LIST) if not r.startswith(this)] if text else []
        if fact.count("|") > 2:
            records.append(f"{server}{_SEP}{fact}")
            records.sort(key=_record_order)
        self._cpa_version.pop(client, None)
        self._deposits[client] = _LIST.join(records)

    def _settle_cpa(self, client: str) -> list[RebateEntry]:
        """Bring the client's CPA to what is due now. What is due depends only on the first
        deposit and whether the client qualifies: unchanged, there is nothing to do."""
        found = self._qualified(client)
        state = found[0] if found else ""  # the first deposit's record, if qualified
        before = self._cpa_state.get(client)
        self._cpa_state[client] = state
        if before == state or (before is None and not state and client not in self._cpa_keys):
            return []  # unchanged, or nothing paid and nothing due
        due = {}
        if found:
            due = self._cpa(client, state, found[1], found[2])
        out, self._cpa_keys[client] = self._settle(self._cpa_keys.get(client) or (), due)
        return out

    def _qualified(self, client: str) -> tuple[str, Schedule, Decimal] | None:
        """The client's first deposit (its record), the schedule then, and the lots counted,
        if the client qualifies for a CPA now."""
        self._cpa_blocked.pop(client, None)
        self._cpa_version.pop(client, None)
        text = self._deposits.get(client)
        if not text:
            return None
        record = text.split(_LIST, 1)[0]  # kept first
        _, fields = _record_parts(record)
        try:
            schedule = self.schedules.at(from_micros(int(fields[_F_MICROS])))
        except NotFoundError:
            schedule = None
        rule = schedule.cpa if schedule is not None else None
        if (
            schedule is None or rule is None or rule.min_deposit is None
            or fields[_F_CURRENCY] != rule.min_deposit.currency.code
            or Decimal(fields[_F_AMOUNT]) < rule.min_deposit.amount
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

    def _cpa(
        self, client: str, first: str, schedule: Schedule, lots: Decimal
    ) -> dict[str, RebateEntry]:
        """The CPA due for a qualified client (``first``: the record of its first deposit),
        shared up the chain as of the first deposit."""
        rule = schedule.cpa
        assert rule is not None
        assert rule.amount is not None
        server, fields = _record_parts(first)
        ticket, when = int(fields[_F_TICKET]), from_micros(int(fields[_F_MICROS]))
        ib = self.tree.ib_of(client, when)
        if ib is None:
            return {}
        chain = self.tree.chain(ib, when)
        shares = self.cpa_distribution.distribute(chain, Decimal(1), rule.amount)  # one unit
        head = (
            f"schedule {schedule.schedule_id} v{schedule.version}; CPA {rule.amount}: first "
            f"deposit {fields[_F_AMOUNT]} {fields[_F_CURRENCY]} (minimum {rule.min_deposit}), "
            f"{lots} lots {rule.trigger.value} (minimum {rule.min_lots}); level "
        )
        due = {}
        for share in shares:
            entry = RebateEntry(
                EntryKind.ACCRUAL, server, ticket, share.ib_id, "cpa", share.amount,
                share.level, client, "", lots, date.fromisoformat(fields[_F_DAY]),
                f"{head}{share.level}: {share.step}", chain[0],
            )  # fmt: skip
            due[_text(entry.key)] = entry
        return due

    def _caps(self, entries: Sequence[RebateEntry]) -> list[RebateEntry]:
        """Bring each touched (IB, period) group to its cap."""
        if not self.schedules.has_caps:
            return []
        out = []
        for group, (start, cap) in sorted(self._count_for_caps(entries).items()):
            ib, period = group
            total = self._period_totals.get(group, _ZERO)
            keys = self._cap_keys.get(group)
            if not keys and total <= cap.amount:
                continue  # within the cap, and never cut
            due = {}
            if total > cap.amount:
                component = f"cap:{period}"
                note = (
                    f"{_ADVERB[period.split(':')[0]]} cap {cap}: "
                    f"accrued {total} {cap.currency.code}, cut {total - cap.amount}"
                )
                entry = RebateEntry(
                    EntryKind.ACCRUAL, "", 0, ib, component,
                    UnroundedMoney(cap.amount - total, cap.currency), 0, "", "", _ZERO, start,
                    note, ib,
                )  # fmt: skip
                due[_text(entry.key)] = entry
            settled, self._cap_keys[group] = self._settle(keys or (), due)
            out.extend(settled)
        return out

    def _count_for_caps(
        self, entries: Iterable[RebateEntry]
    ) -> dict[tuple[str, str], tuple[date, Money]]:
        """Add rebate and CPA entries to their periods' totals; returns the capped groups
        touched (IB, period) with each period's start and cap."""
        summed: dict[tuple[str, date, str], Decimal] = {}  # by IB, trading day and currency
        for entry in entries:
            if entry.component.startswith("cap:"):
                continue
            money = entry.amount
            key = (entry.ib_id, entry.trading_day, money.currency.code)
            summed[key] = summed.get(key, _ZERO) + money.amount
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
        changes = EngineChanges(tuple(self._facts), tuple(self._newly_parked.values()))
        self._facts.clear()
        self._newly_parked.clear()
        return changes

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
        entries = list(entries)
        if self.schedules.has_caps:
            self._count_for_caps(entries)
        for entry in entries:
            text = _text(entry.key)
            before = self._paid.get(text)
            total = entry.amount.amount + (_amount_of(before) if before else _ZERO)
            index, group_of = self._index_of(entry)
            keys = index.get(group_of) or ()
            if total:
                if before is None and entry.kind is _ACCRUAL:  # the key's first entry
                    self._paid[text] = entry.line()
                else:  # (the engine keeps the entry due on a key, an accrual)
                    amount = UnroundedMoney(total, entry.amount.currency)
                    self._paid[text] = attrs.evolve(entry, kind=_ACCRUAL, amount=amount).line()
                if text not in keys:
                    index[group_of] = (*keys, text)
            else:
                self._paid.pop(text, None)
                index[group_of] = [k for k in keys if k != text]
        for ticket, cursor in cursors:
            dk = _deal_text(server, ticket)
            self._cursor[dk] = max(cursor, self._cursor.get(dk, 0))

    def _unpark_handled(self, server: str, cursors: list[tuple[int, int]]) -> None:
        """Take off the waiting list the closes a batch handled (its items past a deal's
        cursor), as processing them did."""
        handled = {
            (server, ticket)
            for ticket, cursor in cursors
            if cursor > self._cursor.get(_deal_text(server, ticket), 0)
        }
        for position in [p for p, waiting in self._parked.items() if handled & waiting.keys()]:
            waiting = self._parked[position]
            for deal_key in handled & waiting.keys():
                del waiting[deal_key]
            if not waiting:
                del self._parked[position]

    def _index_of(self, entry: RebateEntry) -> tuple[_KeyLists, Hashable]:
        """Where an entry's key is listed: by client (CPA), by IB and period (caps), by deal."""
        if entry.component == "cpa":
            return self._cpa_keys, entry.client_id
        if entry.component.startswith("cap:"):
            return self._cap_keys, (entry.ib_id, entry.component.removeprefix("cap:"))
        return self._keys_of, _deal_text(entry.server, entry.ticket)

    def totals(self) -> dict[str, UnroundedMoney]:
        """What each IB has accrued in all, unrounded."""
        sums: dict[tuple[str, str], Decimal] = {}
        for line in self._paid.values():
            _, _, _, ib, _, figure, code, _ = line.split(_SEP, 7)
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
                self._facts.append(f"open|{position}|{to_micros(when)}")

    def _relearn(self, server: str, fact: str) -> None:
        kind, rest = fact.split("|", 1)
        if kind == "open":
            position, micros = rest.split("|")
            self._opened[(server, int(position))] = from_micros(int(micros))
            return
        if kind not in ("t", "d"):  # a fact as books before the short forms kept it
            deal, deleted = _from_fact(server, fact)
            if deal.action.is_trade:
                fact = _trade_fact(deal, deleted)[0]
            elif deal.action is DealAction.BALANCE:
                fact = self._deposit_fact(deal, deleted)
            else:
                return
            kind, rest = fact.split("|", 1)
        if kind == "d":
            client = self.client_of(server, int(rest.split("|", 2)[1]))
            if client is not None and self.schedules.pays_cpa:
                self._learn_deposit(server, client, fact)
            return
        ticket, login, position, micros, opened, closed = rest.split("|")
        parked = self._parked.get((server, int(position)))
        if parked is not None:
            parked.pop((server, int(ticket)), None)
            if not parked:
                del self._parked[(server, int(position))]
        self._learn_trade(
            server, _deal_text(server, int(ticket)), int(position),
            from_micros(int(micros)) if micros else None, self.client_of(server, int(login)),
            Decimal(opened), Decimal(closed), [],
        )  # fmt: skip


def _amount_of(line: str) -> Decimal:
    """The amount of an entry's line."""
    return Decimal(line.split(_SEP, 6)[5])


_ADVERB = {"day": "daily", "week": "weekly", "month": "monthly"}
_SEP, _LIST = "\x1f", "\x1e"
# Decimals go into f-strings as {d!s}: a plain {d} calls Decimal.__format__, four times slower.
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _deal_text(server: str, ticket: int) -> str:
    """A deal's key as text, for the maps kept per deal."""
    return f"{server}\x1f{ticket}"


def _text(key: Hashable) -> str:
    """A key as text: a tuple's parts joined (ids carry no control characters)."""
    if type(key) is tuple:
        if len(key) == 2:
            return f"{key[0]}\x1f{key[1]}"
        if len(key) == 4:
            return f"{key[0]}\x1f{key[1]}\x1f{key[2]}\x1f{key[3]}"
        return _SEP.join(map(str, key))
    return str(key)


class _Flat(Generic[K, V]):
    """A large map kept as a dict of text to plain values (int, Decimal, datetime, str).

    The engine's maps reach millions of entries. A dict of tuples is walked by the garbage
    collector, and CPython re-tracks an all-atomic dict, as a young object, whenever a new tuple
    goes in, so young collections would keep walking million-entry maps. Text keys and plain
    values are never tracked: the collector does not see these maps at all."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, V] = {}

    def get(self, key: K, default: V) -> V:
        return self._d.get(_text(key), default)

    def find(self, key: K) -> V | None:
        return self._d.get(_text(key))

    def __setitem__(self, key: K, value: V) -> None:
        self._d[_text(key)] = value

    def __contains__(self, key: K) -> bool:
        return _text(key) in self._d

    def pop(self, key: K, default: V) -> V:
        return self._d.pop(_text(key), default)


class _KeyLists:
    """Groups (a deal, a client, an IB and period) to the keys paid for them, as text."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, str] = {}

    def __contains__(self, group: Hashable) -> bool:
        return _text(group) in self._d

    def get(self, group: Hashable) -> list[str] | None:
        """The keys (as text) paid for ``group``; None if none ever were."""
        text = self._d.get(_text(group))
        if text is None:
            return None
        return text.split(_LIST) if text else []

    def __setitem__(self, group: Hashable, keys: Iterable[str]) -> None:
        self._d[_text(group)] = _LIST.join(keys)


_WAIT: dict[str, RebateEntry] = {}  # a distinct object: "the opening deal is not known yet"


def _order(deal: Deal) -> tuple[datetime, int]:
    return (deal.time, deal.ticket)


def _record_order(record: str) -> tuple[int, int]:
    """A deposit record's place: by time, then ticket (as :func:`_order` for deals)."""
    _, fields = _record_parts(record)
    return (int(fields[_F_MICROS]), int(fields[_F_TICKET]))


def _record_parts(record: str) -> tuple[str, list[str]]:
    """A deposit record's server and the fields of its deposit's fact."""
    server, fact = record.split(_SEP)
    return server, fact.split("|")


# Where a deposit's fact (see RebateEngine._deposit_fact) puts its fields.
_F_TICKET, _F_MICROS, _F_AMOUNT, _F_CURRENCY, _F_DAY = 1, 3, 4, 5, 6


def _trade_fact(deal: Deal, deleted: bool) -> tuple[str, Decimal, Decimal]:
    """A trade deal's fact, ``t|ticket|login|position|time|opened|closed`` (the time of an
    opening deal only; the lots it opened and closed, zero once deleted), and those lots."""
    opened, closed = (_ZERO, _ZERO) if deleted else lots_opened_closed(deal)
    micros = to_micros(deal.time) if deal.entry is _IN else ""
    fact = f"t|{deal.ticket}|{deal.login}|{deal.position_id}|{micros}|{opened!s}|{closed!s}"
    return fact, opened, closed


def _from_fact(server: str, fact: str) -> tuple[Deal, bool]:
    """The deal of a fact as books kept it before the short forms (``t|...``, ``d|...``):
    ticket, login, action, entry, position, volume, closed volume, time, profit, currency,
    deleted, server offset."""
    ticket, login, action, entry, position, volume, closed, micros, profit, cur, deleted, offset = (
        fact.split("|")
    )
    currency = Currency.of(cur)
    zero = Money.zero(currency)
    deal = Deal(
        server=server, ticket=int(ticket), login=int(login), action=DealAction(int(action)),
        entry=DealEntry(int(entry)), symbol="", volume=Decimal(volume),
        volume_closed=Decimal(closed), price=_ZERO, position_id=int(position), order=0,
        commission=zero, fee=zero, swap=zero, profit=Money.of(profit, currency),
        time=from_micros(int(micros)), server_offset=timedelta(microseconds=int(offset)),
    )  # fmt: skip
    return deal, deleted == "1"
