"""Private: the rebate engine's compact in-memory state (its only user is the engine).

A broker's day puts millions of entries in the engine's maps, so they hold only text and
numbers: keys as text (:func:`text`), what was paid on each key as the line of the entry due
(see ``_rows``), the keys of each deal, client and capped period as one text (:class:`KeyLists`),
and clients' deposits as records of text. None of it is stored: the book records typed facts.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Generic, TypeVar

from fxcrm_core.kernel.time import to_micros

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
SEP, LIST = "\x1f", "\x1e"


def deal_text(server: str, ticket: int) -> str:
    """A deal's key as text, for the maps kept per deal."""
    return f"{server}\x1f{ticket}"


def text(key: Hashable) -> str:
    """A key as text: a tuple's parts joined (ids carry no control characters)."""
    if type(key) is tuple:
        if len(key) == 2:
            return f"{key[0]}\x1f{key[1]}"
        if len(key) == 4:
            return f"{key[0]}\x1f{key[1]}\x1f{key[2]}\x1f{key[3]}"
        return SEP.join(map(str, key))
    return str(key)


def day_text(day: date) -> str:
    """``day.isoformat()``, kept (a C call that takes ~0.6 µs, for every deal)."""
    found = _DAY_TEXT.get(day)
    if found is None:
        if len(_DAY_TEXT) >= 10_000:
            _DAY_TEXT.clear()
        found = _DAY_TEXT[day] = day.isoformat()
    return found


_DAY_TEXT: dict[date, str] = {}


class Flat(Generic[K, V]):
    """A large map kept as a dict of text to plain values (int, Decimal, datetime, str).

    A dict of tuples is walked by the garbage collector, and CPython re-tracks an all-atomic
    dict, as a young object, whenever a new tuple goes in, so young collections would keep
    walking million-entry maps. Text keys and plain values are never tracked: the collector
    does not see these maps at all."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, V] = {}

    def get(self, key: K, default: V) -> V:
        return self._d.get(text(key), default)

    def find(self, key: K) -> V | None:
        return self._d.get(text(key))

    def __setitem__(self, key: K, value: V) -> None:
        self._d[text(key)] = value

    def __contains__(self, key: K) -> bool:
        return text(key) in self._d

    def pop(self, key: K, default: V) -> V:
        return self._d.pop(text(key), default)

    def __len__(self) -> int:
        return len(self._d)


class KeyLists:
    """Groups (a deal, a client, an IB and period) to the keys paid for them, as text."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, str] = {}

    def __contains__(self, group: Hashable) -> bool:
        return text(group) in self._d

    def get(self, group: Hashable) -> list[str] | None:
        """The keys (as text) paid for ``group``; None if none ever were."""
        found = self._d.get(text(group))
        if found is None:
            return None
        return found.split(LIST) if found else []

    def __setitem__(self, group: Hashable, keys: Iterable[str]) -> None:
        self._d[text(group)] = LIST.join(keys)

    def pop(self, group: Hashable) -> list[str] | None:
        """The keys paid for ``group``, forgotten."""
        found = self._d.pop(text(group), None)
        if found is None:
            return None
        return found.split(LIST) if found else []

    def __len__(self) -> int:
        return len(self._d)


# -- clients' deposits: ``server␟ticket|login|micros|amount|currency|trading day`` records -----
def deposit_record(
    server: str, ticket: int, login: int, at: datetime, amount: Decimal, code: str, day: date
) -> str:
    return f"{server}{SEP}{ticket}|{login}|{to_micros(at)}|{amount!s}|{code}|{day_text(day)}"


def record_of(server: str, ticket: int) -> str:
    """The start every record of this deposit has."""
    return f"{server}{SEP}{ticket}|"


def record_parts(record: str) -> tuple[str, list[str]]:
    """A deposit record's server and its fields (see the ``F_`` indexes)."""
    server, rest = record.split(SEP)
    return server, rest.split("|")


F_TICKET, F_MICROS, F_AMOUNT, F_CURRENCY, F_DAY = 0, 2, 3, 4, 5


def record_order(record: str) -> tuple[int, int]:
    """A deposit record's place: by time, then ticket."""
    _, fields = record_parts(record)
    return (int(fields[F_MICROS]), int(fields[F_TICKET]))
