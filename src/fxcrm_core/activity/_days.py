"""The activity read model's compact rows: one client's trading days in day order, each day's
figures kept in columns (a window is two bisections and a sum over a slice), and one mark per
trade deal (what it added, taken back when it is updated or deleted). Private: the public
answers are :class:`~fxcrm_core.activity.Figure` values."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import date, datetime
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal

__all__ = ["DEPOSIT", "REBATE", "REVENUE", "VOLUME", "WITHDRAWAL", "Days", "Flow", "Mark"]

_ZERO = Decimal(0)
_CENT = Decimal("0.01")
# The USD columns add and take back amounts priced in many currencies (a JPY amount over a rate
# has 28 digits). Each amount enters a column at a fixed ten decimal places (a ten-billionth of
# a dollar, half-even) and is added exactly, so a deal or deposit taken back leaves nothing
# behind, and any window's sum of whole days is exact in the default context (below 10^18 USD)
# and rounded once, to the cent.
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_FINE = Decimal("1E-10")

# Money kinds of a day's flows (keys with the currency code).
DEPOSIT, WITHDRAWAL, REVENUE, REBATE, VOLUME = "dep", "wd", "rev", "reb", "vol"


class Flow:
    """Amounts of one kind and currency on one day: all of it, and the part that had no USD
    rate (the USD value of the rest is summed per kind in the day's column, kept once)."""

    __slots__ = ("amount", "unpriced")

    def __init__(self) -> None:
        self.amount = _ZERO
        self.unpriced = _ZERO

    def add(self, amount: Decimal, usd: Decimal | None) -> None:
        self.amount += amount
        if usd is None:
            self.unpriced += amount


class Days:
    """One client's trading days, in day order, as columns: ``days[i]`` is a trading day and
    every other list's ``[i]`` its figure (trade deals, 1 when it had any, lots, the latest
    trade deal's time, the flows per kind and currency, and per money kind the USD sum of its
    flows). A window of days ``first..last`` is the slice ``span(first, last)`` of each column:
    its figures are C-level sums over slices, whatever the number of clients or deals."""

    __slots__ = ("active", "days", "flows", "last", "lots", "trades", "usd")

    def __init__(self) -> None:
        self.days: list[date] = []
        self.trades: list[int] = []
        self.active: list[int] = []
        self.lots: list[Decimal] = []
        self.last: list[datetime | None] = []  # the latest trade deal's time counted on the day
        self.flows: list[dict[tuple[str, str], Flow]] = []
        self.usd: dict[str, list[Decimal]] = {}  # money kind -> the day's USD sum of its flows

    def index(self, day: date) -> int:
        """The row of ``day``, added (zeros) where the client had none."""
        days = self.days
        n = len(days)
        if n and days[-1] >= day:
            if days[-1] == day:
                return n - 1  # the feed's usual case: the client's latest day again
            i = bisect_left(days, day)
            if days[i] == day:
                return i
        else:
            i = n
        days.insert(i, day)
        self.trades.insert(i, 0)
        self.active.insert(i, 0)
        self.lots.insert(i, _ZERO)
        self.last.insert(i, None)
        self.flows.insert(i, {})
        for column in self.usd.values():
            column.insert(i, _ZERO)
        return i

    def flow(self, i: int, kind: str, code: str, amount: Decimal, usd: Decimal | None) -> None:
        flows = self.flows[i]
        key = (kind, code)
        found = flows.get(key)
        if found is None:
            found = flows[key] = Flow()
        found.add(amount, usd)
        if usd is not None:
            column = self.usd.get(kind)
            if column is None:
                column = self.usd[kind] = [_ZERO] * len(self.days)
            column[i] = _EXACT.add(column[i], _EXACT.quantize(usd, _FINE))

    def span(self, first: date, last: date) -> tuple[int, int]:
        """The rows of the days from ``first`` to ``last``, both included: ``[i, j)``."""
        return bisect_left(self.days, first), bisect_right(self.days, last)

    def usd_sum(self, kinds: tuple[str, ...], i: int, j: int) -> Decimal:
        """The USD sum of the first kind's flows over rows ``[i, j)``, less the second's (when
        named), rounded to the cent (half-even; a zero is never negative)."""
        column = self.usd.get(kinds[0])
        total = _ZERO if column is None else sum(column[i:j], _ZERO)
        if len(kinds) == 2:
            column = self.usd.get(kinds[1])
            if column is not None:
                total -= sum(column[i:j], _ZERO)
        rounded = _EXACT.quantize(total, _CENT)  # (half-even: the context's rounding)
        return rounded.copy_abs() if rounded.is_zero() else rounded

    def last_trade(self) -> datetime | None:
        """The latest trade deal's time (the latest day with trade deals holds it)."""
        for i in range(len(self.days) - 1, -1, -1):
            if self.trades[i] > 0 and self.last[i] is not None:
                return self.last[i]
        return None


class Mark:
    """What one trade deal added to its client's day (signs flip to take it back)."""

    __slots__ = ("client", "day", "lots", "notional", "quote", "revenue", "time", "usd")

    def __init__(
        self,
        client: str,
        day: date,
        time: datetime,
        lots: Decimal,
        quote: str | None,
        notional: Decimal,
        usd: Decimal | None,
        revenue: tuple[tuple[str, Decimal, Decimal | None], ...],  # (currency, amount, USD)
    ) -> None:
        self.client, self.day, self.time, self.lots = client, day, time, lots
        self.quote, self.notional, self.usd = quote, notional, usd
        self.revenue = revenue

    def apply(self, days: Days, sign: int) -> None:
        i = days.index(self.day)
        trades = days.trades[i] = days.trades[i] + sign
        days.active[i] = 1 if trades > 0 else 0
        days.lots[i] += sign * self.lots
        if sign > 0:
            last = days.last[i]
            days.last[i] = self.time if last is None else max(last, self.time)
        elif trades == 0:
            days.last[i] = None
        if self.quote is not None:
            days.flow(i, VOLUME, self.quote, sign * self.notional, _signed(self.usd, sign))
        for code, amount, usd in self.revenue:
            days.flow(i, REVENUE, code, sign * amount, _signed(usd, sign))


def _signed(value: Decimal | None, sign: int) -> Decimal | None:
    return None if value is None else sign * value
