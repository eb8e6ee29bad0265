"""A memory activity read model for the segmentation and churn tests: per client and trading
day, trades, volume, deposits and withdrawals, answered over windows of trading days as
:class:`~fxcrm_core.activity.ClientActivity` answers them."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from fxcrm_core.activity import Figure, Measure
from fxcrm_core.kernel import TradingCalendar

CAL = TradingCalendar()
D = Decimal


def trading_days(first: date, count: int) -> list[date]:
    """``count`` trading days from ``first`` on (``first`` included when it has a session)."""
    out: list[date] = []
    day = first
    while len(out) < count:
        if CAL.is_trading_day(day):
            out.append(day)
        day += timedelta(days=1)
    return out


def noon(day: date) -> datetime:
    """Noon UTC on a trading day: inside that day's session."""
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


class DailyActivity:
    """Figures per client and trading day; ``window`` sums the N trading days ending with the
    trading day of ``at``."""

    def __init__(self) -> None:
        self.days: dict[str, dict[date, dict[Measure, Decimal]]] = defaultdict(dict)
        self.asked = 0

    def _add(self, client_id: str, day: date, measure: Measure, amount: Decimal) -> None:
        row = self.days[client_id].setdefault(day, {})
        row[measure] = row.get(measure, D(0)) + amount

    def trade(self, client_id: str, day: date, lots: str = "1") -> None:
        self._add(client_id, day, Measure.TRADES, D(1))
        self._add(client_id, day, Measure.LOTS, D(lots))
        self._add(client_id, day, Measure.VOLUME_USD, D(lots) * 108_000)

    def deposit(self, client_id: str, day: date, amount: str) -> None:
        self._add(client_id, day, Measure.DEPOSITS, D(amount))

    def withdraw(self, client_id: str, day: date, amount: str) -> None:
        self._add(client_id, day, Measure.WITHDRAWALS, D(amount))

    # -- what segmentation and churn read -------------------------------------------------------
    def clients(self) -> list[str]:
        return sorted(self.days)

    def window(self, client_id: str, measure: Measure, *, days: int, at: datetime) -> Figure:
        self.asked += 1
        last = CAL.trading_day(at)
        first, seen = last, 1
        while seen < days:
            first -= timedelta(days=1)
            if CAL.is_trading_day(first):
                seen += 1
        rows = [r for d, r in self.days.get(client_id, {}).items() if first <= d <= last]
        if measure is Measure.ACTIVE_DAYS:
            return Figure(measure, D(sum(1 for r in rows if r.get(Measure.TRADES))))
        if measure is Measure.NET_DEPOSITS:
            value = sum(
                (r.get(Measure.DEPOSITS, D(0)) - r.get(Measure.WITHDRAWALS, D(0)) for r in rows),
                D(0),
            )
            return Figure(measure, value)
        return Figure(measure, sum((r.get(measure, D(0)) for r in rows), D(0)))

    def _last(self, client_id: str, measure: Measure) -> datetime | None:
        found = [d for d, r in self.days.get(client_id, {}).items() if r.get(measure)]
        return noon(max(found)) if found else None

    def last_trade(self, client_id: str) -> datetime | None:
        return self._last(client_id, Measure.TRADES)

    def last_deposit(self, client_id: str) -> datetime | None:
        return self._last(client_id, Measure.DEPOSITS)
