"""Private: the compact rows of the rebate book. Rebate entries as lines of text, with
:class:`RebateEntries`, the typed sequence that keeps them so and makes entry objects only when
one is read; and the stored text forms of the engine's facts, every form books ever wrote.

A line is an entry's 14 fields joined by ``\\x1f`` (kind, server, ticket, IB, component,
amount, currency code, level, client, symbol, lots, trading day, explanation, the client's own
IB). The engine keeps what it paid on each key as such a line and writes its output as lines;
the book stores them (``|`` in place of ``\\x1f``); the accrual policy sums them without making
an object per entry. None of this is a stored contract beyond the book's row codec.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, overload

from fxcrm_core.kernel._decimal import to_decimal
from fxcrm_core.kernel.errors import CodecError, FxCrmError, ValidationError
from fxcrm_core.kernel.money import Money, UnroundedMoney
from fxcrm_core.kernel.time import from_micros, to_micros
from fxcrm_core.trading import DealAction, DealEntry

if TYPE_CHECKING:
    from fxcrm_core.commissions.engine import Fact, RebateEntry

SEP = "\x1f"
FIELDS = 14
_ZERO = Decimal(0)


def line_of(e: RebateEntry) -> str:
    """An entry's line; an explanation's control characters become spaces, and ids holding
    one are refused (ValidationError)."""
    a = e.amount
    line = (
        f"{e.kind}\x1f{e.server}\x1f{e.ticket}\x1f{e.ib_id}\x1f{e.component}\x1f{a.amount!s}\x1f"
        f"{a.currency.code}\x1f{e.level}\x1f{e.client_id}\x1f{e.symbol}\x1f{e.lots!s}\x1f"
        f"{e.trading_day.isoformat()}\x1f{e.explanation.replace(SEP, ' ')}\x1f{e.direct_ib_id}"
    )
    if line.count(SEP) != FIELDS - 1:
        raise ValidationError("ids in rebate entries carry no control characters")
    return line


def entry_of(line: str) -> RebateEntry:
    """The entry a line stands for (CodecError, naming no field's value, if it stands for
    none)."""
    make = _ENTRY[0] if _ENTRY else _bind()
    try:
        f = line.split(SEP)
        if len(f) != FIELDS:
            raise ValueError
        day = _DAYS.get(f[11])
        if day is None:
            if len(_DAYS) >= 10_000:
                _DAYS.clear()
            day = _DAYS[f[11]] = date.fromisoformat(f[11])
        return make(
            kind=_KINDS[f[0]], server=f[1], ticket=int(f[2]), ib_id=f[3], component=f[4],
            amount=UnroundedMoney(f[5], f[6]), level=int(f[7]), client_id=f[8], symbol=f[9],
            lots=to_decimal(f[10], "lots"), trading_day=day, explanation=f[12],
            direct_ib_id=f[13],
        )  # fmt: skip
    except (TypeError, ValueError, KeyError, ArithmeticError, FxCrmError):
        raise CodecError("a rebate entry row is malformed") from None


_ENTRY: list[type[RebateEntry]] = []  # bound on first use (the engine imports this module)
_KINDS: dict[str, Any] = {}
_DAYS: dict[str, date] = {}


def _bind() -> type[RebateEntry]:
    from fxcrm_core.commissions.engine import KINDS, RebateEntry

    _KINDS.update(KINDS)
    _ENTRY.append(RebateEntry)
    return RebateEntry


def amount_of(line: str) -> Decimal:
    """The amount of an entry's line."""
    try:
        return Decimal(line.split(SEP, 6)[5])
    except (IndexError, InvalidOperation):
        raise CodecError("a rebate entry row is malformed") from None


def with_change(line: str, kind: str, amount: Decimal) -> str:
    """The line with another kind and amount (the rest as it is)."""
    _, server, ticket, ib, component, _, rest = line.split(SEP, 6)
    return f"{kind}\x1f{server}\x1f{ticket}\x1f{ib}\x1f{component}\x1f{amount!s}\x1f{rest}"


Sums = dict[tuple[str, date, str], Decimal]
Folded = dict[tuple[str, str, str], Decimal]  # by IB, trading day (as text) and currency code


def fold(lines: Iterable[str], into: Folded, *, caps: bool = True) -> Folded:
    """Add the lines' amounts to ``into`` by IB, trading day and currency, in order
    (``caps=False``: leaving out the cap components); returns ``into``."""
    for line in lines:
        _, _, _, ib, component, figure, code, _, _, _, _, day, _ = line.split(SEP, 12)
        if not caps and component.startswith("cap:"):
            continue
        key = (ib, day, code)
        into[key] = into.get(key, _ZERO) + Decimal(figure)
    return into


def dated(folded: Folded) -> Sums:
    """Folded sums keyed by the trading day as a date."""
    days: dict[str, date] = {}
    out: Sums = {}
    for (ib, day, code), total in folded.items():
        when = days.get(day)
        if when is None:
            when = days[day] = date.fromisoformat(day)
        out[(ib, when, code)] = total
    return out


def sums(lines: Iterable[str], *, caps: bool = True) -> Sums:
    """The lines' amounts summed by IB, trading day and currency (``caps=False``: leaving out
    the cap components)."""
    return dated(fold(lines, {}, caps=caps))


class RebateEntries(Sequence["RebateEntry"]):
    """Rebate entries as an immutable sequence that keeps them in a compact form and makes each
    :class:`~fxcrm_core.commissions.RebateEntry` only when it is read (a broker's day holds
    millions). Equal to any sequence of the same entries, in the same order."""

    __slots__ = ("_lines", "_sums")

    def __init__(self, entries: Iterable[RebateEntry] = ()) -> None:
        self._lines: tuple[str, ...] = tuple([line_of(e) for e in entries])
        self._sums: Sums | None = None

    @classmethod
    def of(cls, entries: Iterable[RebateEntry]) -> RebateEntries:
        """``entries`` as a :class:`RebateEntries` (itself if it is one)."""
        return entries if isinstance(entries, RebateEntries) else cls(entries)

    @classmethod
    def _from_lines(cls, lines: Sequence[str]) -> RebateEntries:
        out = cls.__new__(cls)
        out._lines = tuple(lines)
        out._sums = None
        return out

    def sums(self) -> Sums:
        """The amounts summed per (IB, trading day, currency code), unrounded."""
        if self._sums is None:
            self._sums = sums(self._lines)
        return dict(self._sums)

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> RebateEntry: ...
    @overload
    def __getitem__(self, index: slice) -> RebateEntries: ...
    def __getitem__(self, index: int | slice) -> RebateEntry | RebateEntries:
        if isinstance(index, slice):
            return RebateEntries._from_lines(self._lines[index])
        return entry_of(self._lines[index])

    def __iter__(self) -> Iterator[RebateEntry]:
        return map(entry_of, self._lines)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            if isinstance(other, RebateEntries) and self._lines == other._lines:
                return True
            return len(other) == len(self._lines) and all(
                a == b for a, b in zip(self, other, strict=True)
            )
        return NotImplemented

    def __hash__(self) -> int:  # (equal sequences may keep different text: 0.10 and 0.1)
        return hash(len(self._lines))

    @overload
    def __add__(self, other: RebateEntries) -> RebateEntries: ...
    @overload
    def __add__(self, other: list[RebateEntry]) -> list[RebateEntry]: ...
    def __add__(
        self, other: RebateEntries | list[RebateEntry]
    ) -> RebateEntries | list[RebateEntry]:
        if isinstance(other, RebateEntries):
            return RebateEntries._from_lines(self._lines + other._lines)
        if isinstance(other, list):
            return [*self, *other]
        return NotImplemented

    def __radd__(self, other: list[RebateEntry]) -> list[RebateEntry]:
        if isinstance(other, list):
            return [*other, *self]
        return NotImplemented

    def __repr__(self) -> str:
        return repr(list(self))  # (shown as the list of its entries)


def lines(entries: RebateEntries) -> tuple[str, ...]:
    """The lines an entries sequence keeps."""
    return entries._lines


def from_lines(kept: Sequence[str], folded: Folded | None = None) -> RebateEntries:
    """Entries keeping ``kept``; ``folded``, if given, is ``fold(kept, {})`` as the caller
    has it already (what :meth:`RebateEntries.sums` answers, worked out once)."""
    out = RebateEntries._from_lines(kept)
    if folded is not None:
        out._sums = dated(folded)
    return out


def rows_of(entries: Any) -> list[str | list[str]]:
    """The stored rows: each line with ``|`` between fields, or as the list of its fields where
    a field holds a ``|`` itself."""
    kept = RebateEntries.of(entries)._lines
    return [line.replace(SEP, "|") if "|" not in line else line.split(SEP) for line in kept]


def entries_of_rows(rows: Any) -> RebateEntries:
    """The entries of stored rows (also rows of earlier books: lists holding numbers)."""
    if not isinstance(rows, list):
        raise CodecError("rebate entries are stored as a list")
    if all(type(row) is str for row in rows):  # (the rows books write now: checked in bulk)
        out = [row.replace("|", SEP) for row in rows]
        for line in out:
            if line.count(SEP) != FIELDS - 1 or not line.startswith(_KIND_LEAD):
                raise CodecError("a rebate entry row is malformed")
        return RebateEntries._from_lines(out)
    out = []
    for row in rows:
        if isinstance(row, str):
            line = row.replace("|", SEP)
        elif isinstance(row, list) and all(isinstance(f, str | int) for f in row):
            line = SEP.join(map(str, row))
        else:
            raise CodecError("a rebate entry row is malformed")
        if line.count(SEP) != FIELDS - 1 or line.split(SEP, 1)[0] not in _KIND_TEXT:
            raise CodecError("a rebate entry row is malformed")
        out.append(line)
    return RebateEntries._from_lines(out)


_KIND_TEXT = frozenset({"accrual", "adjustment", "reversal"})
_KIND_LEAD = tuple(sorted(kind + SEP for kind in _KIND_TEXT))


# -- facts ---------------------------------------------------------------------------------------
# Stored forms (one short line of text each, ``|`` between fields):
#   t|ticket|login|position|opening time (µs, opening deals only)|lots opened|lots closed
#   d|ticket|login[|time (µs)|amount|currency|trading day]   (the tail for a live deposit only)
#   open|position|time (µs)
# and, from books before these forms, a deal's 12 fields: ticket|login|action|entry|position|
# volume|volume closed|time (µs)|profit|currency|deleted (0/1)|server offset (µs).
def fact_rows(facts: Any) -> list[str]:
    if isinstance(facts, RebateFacts):
        if facts._rows is None:  # kept: a staged batch is encoded again to compare it
            facts._rows = tuple(fact_rows(facts._all()))
        return list(facts._rows)
    return [fact_row(f) for f in facts]


def trade_row(
    ticket: int, login: int, position: int, opened_at: datetime | None, opened: Decimal,
    closed: Decimal,
) -> str:  # fmt: skip
    """A :class:`TradeFact`'s row, from its fields."""
    micros = "" if opened_at is None else to_micros(opened_at)
    return f"t|{ticket}|{login}|{position}|{micros}|{opened!s}|{closed!s}"


def fact_row(f: Fact) -> str:
    """A fact's stored row."""
    from fxcrm_core.commissions.engine import DealFact, DepositFact, PositionOpened, TradeFact

    if type(f) is TradeFact:
        return trade_row(f.ticket, f.login, f.position, f.opened_at, f.lots_opened, f.lots_closed)
    if type(f) is DepositFact:
        if f.amount is None or f.at is None or f.trading_day is None:
            return f"d|{f.ticket}|{f.login}"
        return (
            f"d|{f.ticket}|{f.login}|{to_micros(f.at)}|{f.amount.amount!s}|"
            f"{f.amount.currency.code}|{f.trading_day.isoformat()}"
        )
    if type(f) is PositionOpened:
        return f"open|{f.position}|{to_micros(f.at)}"
    if type(f) is DealFact:
        return (
            f"{f.ticket}|{f.login}|{f.action.value}|{f.entry.value}|{f.position}|"
            f"{f.volume!s}|{f.volume_closed!s}|{to_micros(f.time)}|{f.profit.amount!s}|"
            f"{f.profit.currency.code}|{int(f.deleted)}|"
            f"{f.server_offset // timedelta(microseconds=1)}"
        )
    raise CodecError("a rebate fact of an unknown kind")


def facts_of_rows(rows: Any) -> RebateFacts:
    if not isinstance(rows, list) or not all(isinstance(r, str) for r in rows):
        raise CodecError("rebate facts are stored as a list of text")
    out = RebateFacts.__new__(RebateFacts)
    out._rows = tuple(rows)
    out._facts = None
    return out


class RebateFacts(Sequence["Fact"]):
    """Facts as an immutable sequence; read from the log, each is made only when the
    sequence is first read (a reader of the entries alone never pays for them)."""

    __slots__ = ("_facts", "_rows")

    def __init__(self, facts: Iterable[Fact] = ()) -> None:
        self._facts: tuple[Fact, ...] | None = tuple(facts)
        self._rows: tuple[str, ...] | None = None

    def _all(self) -> tuple[Fact, ...]:
        if self._facts is None:
            assert self._rows is not None
            self._facts = tuple([fact_of(row) for row in self._rows])
        return self._facts

    def rows(self) -> list[str]:
        return list(self._rows) if self._rows is not None else fact_rows(self._all())

    def __len__(self) -> int:
        return len(self._rows) if self._rows is not None else len(self._all())

    @overload
    def __getitem__(self, index: int) -> Fact: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Fact, ...]: ...
    def __getitem__(self, index: int | slice) -> Fact | tuple[Fact, ...]:
        return self._all()[index]

    def __iter__(self) -> Iterator[Fact]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RebateFacts):
            if self._rows is not None and self._rows == other._rows:
                return True
            return self._all() == other._all()
        if isinstance(other, tuple):
            return self._all() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def fact_of(row: Any) -> Fact:
    """The typed fact a stored row stands for (CodecError, naming no value, if none)."""
    from fxcrm_core.commissions.engine import DealFact, DepositFact, PositionOpened, TradeFact

    try:
        if not isinstance(row, str):
            raise TypeError
        kind, rest = row.split("|", 1)
        if kind == "t":
            ticket, login, position, micros, opened, closed = rest.split("|")
            return TradeFact(
                ticket=int(ticket), login=int(login), position=int(position),
                opened_at=from_micros(int(micros)) if micros else None,
                lots_opened=to_decimal(opened, "lots"), lots_closed=to_decimal(closed, "lots"),
            )  # fmt: skip
        if kind == "d":
            fields = rest.split("|")
            if len(fields) == 2:
                return DepositFact(ticket=int(fields[0]), login=int(fields[1]))
            ticket, login, micros, amount, code, day = fields
            return DepositFact(
                ticket=int(ticket), login=int(login), at=from_micros(int(micros)),
                amount=Money.of(amount, code), trading_day=date.fromisoformat(day),
            )  # fmt: skip
        if kind == "open":
            position, micros = rest.split("|")
            return PositionOpened(position=int(position), at=from_micros(int(micros)))
        (ticket, login, action, entry, position, volume, closed, micros, profit, code, deleted,
         offset) = row.split("|")  # fmt: skip
        return DealFact(
            ticket=int(ticket), login=int(login), action=DealAction(int(action)),
            entry=DealEntry(int(entry)), position=int(position),
            volume=to_decimal(volume, "volume"), volume_closed=to_decimal(closed, "volume"),
            time=from_micros(int(micros)), profit=Money.of(profit, code),
            deleted=deleted == "1", server_offset=timedelta(microseconds=int(offset)),
        )  # fmt: skip
    except (TypeError, ValueError, KeyError, ArithmeticError, FxCrmError):
        raise CodecError("a rebate fact row is malformed") from None


# -- cursors -------------------------------------------------------------------------------------
# (deal ticket, feed cursor) pairs, stored as JSON arrays of two integers, as the generic codec
# writes them; read back in one pass instead of one converter call per pair.
def cursor_rows(cursors: Any) -> Any:
    return cursors


def cursors_of_rows(rows: Any) -> tuple[tuple[int, int], ...]:
    if not isinstance(rows, list):
        raise CodecError("feed cursors are stored as a list")
    try:
        pairs = [(int(ticket), int(cursor)) for ticket, cursor in rows]
    except (TypeError, ValueError):
        raise CodecError("a feed cursor row is malformed") from None
    return tuple(pairs)
