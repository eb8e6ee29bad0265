"""The rebate engine: deal feed in, explained rebate entries out, exactly once per
(server, deal, IB, component). Re-processing, duplicates and replays pay nothing twice; a deal
update yields the difference as an adjustment, a delete reverses what was paid. Amounts stay
unrounded here: rounding happens once, at payout."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from datetime import date
from decimal import Decimal

import attrs

from fxcrm_core.commissions.distribution import Distribution
from fxcrm_core.commissions.schedule import ScheduleBook
from fxcrm_core.commissions.tree import IbTree
from fxcrm_core.kernel.errors import NotFoundError
from fxcrm_core.kernel.money import UnroundedMoney
from fxcrm_core.trading import Deal, DealChange, FeedItem

__all__ = ["EntryKind", "RebateEngine", "RebateEntry"]

Key = tuple[str, int, str, str]  # server, deal ticket, IB, component


class EntryKind(enum.Enum):
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

    @property
    def key(self) -> Key:
        return (self.server, self.ticket, self.ib_id, self.component)


class RebateEngine:
    """Turns deals into rebate entries for one schedule and one distribution strategy."""

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
    ) -> None:
        self.tree = tree
        self.schedules = schedules
        self.distribution = distribution
        self.client_of = client_of
        self.account_group_of = account_group_of
        self.trading_day_of = trading_day_of
        self.component = component
        self._paid: dict[Key, RebateEntry] = {}  # the running total per key, as an entry
        self._keys_of: dict[tuple[str, int], set[Key]] = {}  # the paid keys of each deal
        self._cursor: dict[tuple[str, int], int] = {}  # the last feed cursor applied per deal

    def process(self, items: Iterable[FeedItem]) -> list[RebateEntry]:
        """Handle feed items; an item at or below a deal's last applied cursor is a duplicate
        or a stale replay and changes nothing, whatever order it arrives in."""
        out: list[RebateEntry] = []
        for item in items:
            deal_key = (item.deal.server, item.deal.ticket)
            if item.cursor <= self._cursor.get(deal_key, 0):
                continue
            self._cursor[deal_key] = item.cursor
            if item.change is DealChange.DELETED:
                out.extend(self._settle(item.deal, {}))
            else:
                out.extend(self._settle(item.deal, self._due(item.deal)))
        return out

    def _due(self, deal: Deal) -> dict[Key, RebateEntry]:
        client_id = self.client_of(deal.server, deal.login)
        if client_id is None:
            return {}
        ib = self.tree.ib_of(client_id, deal.time)
        if ib is None:
            return {}
        try:
            schedule = self.schedules.at(deal.time)
        except NotFoundError:
            return {}
        line = schedule.line(deal, self.account_group_of(deal.server, deal.login))
        if line is None:
            return {}
        chain = self.tree.chain(ib, deal.time)
        shares = self.distribution.distribute(chain, line.lots, line.pool)
        day = self.trading_day_of(deal)
        due = {}
        for share in shares:
            entry = RebateEntry(
                EntryKind.ACCRUAL, deal.server, deal.ticket, share.ib_id, self.component,
                share.amount, share.level, client_id, deal.symbol, line.lots, day,
                f"schedule {schedule.schedule_id} v{schedule.version}; {line.explanation}; "
                f"level {share.level}: {share.step}", chain[0],
            )  # fmt: skip
            due[entry.key] = entry
        return due

    def _settle(self, deal: Deal, due: dict[Key, RebateEntry]) -> list[RebateEntry]:
        """Bring what was paid on this deal to what is due; return the differences."""
        out = []
        mine = self._keys_of.setdefault((deal.server, deal.ticket), set())
        for key in sorted(mine | set(due)):
            before = self._paid.get(key)
            after = due.get(key)
            paid = before.amount.amount if before else Decimal(0)
            owed = after.amount.amount if after else Decimal(0)
            if paid == owed:
                continue
            template = after or before
            assert template is not None
            kind = (
                EntryKind.ACCRUAL if before is None
                else EntryKind.REVERSAL if after is None or owed == 0
                else EntryKind.ADJUSTMENT
            )  # fmt: skip
            delta = UnroundedMoney(owed - paid, template.amount.currency)
            out.append(attrs.evolve(template, kind=kind, amount=delta))
            self._record(key, after)
        return out

    def _record(self, key: Key, entry: RebateEntry | None) -> None:
        deal_keys = self._keys_of.setdefault(key[:2], set())
        if entry is None:
            self._paid.pop(key, None)
            deal_keys.discard(key)
        else:
            self._paid[key] = entry
            deal_keys.add(key)

    def restore(
        self, entries: Iterable[RebateEntry], server: str, cursors: Iterable[tuple[int, int]]
    ) -> None:
        """Bring the state back from recorded entries and the cursors they were made at."""
        for entry in entries:
            before = self._paid.get(entry.key)
            total = entry.amount.amount + (before.amount.amount if before else 0)
            amount = UnroundedMoney(total, entry.amount.currency)
            self._record(entry.key, attrs.evolve(entry, amount=amount) if total else None)
        for ticket, cursor in cursors:
            key = (server, ticket)
            self._cursor[key] = max(cursor, self._cursor.get(key, 0))

    def totals(self) -> dict[str, UnroundedMoney]:
        """What each IB has accrued in all, unrounded."""
        out: dict[str, UnroundedMoney] = {}
        for (_, _, ib, _), entry in self._paid.items():
            out[ib] = out[ib] + entry.amount if ib in out else entry.amount
        return out
