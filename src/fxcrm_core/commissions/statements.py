"""IB statements: what an IB earned in a period, by forex trading day, client, symbol and level,
in the IB's own currency at a recorded rate. Parent IBs see their sub-IBs' clients masked unless
the sub-IB allows them to see names."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal

import attrs

from fxcrm_core.access import AccessControl, Actor, RowScope
from fxcrm_core.commissions.engine import EntryKind, RebateEntry
from fxcrm_core.kernel.errors import AccessDeniedError, FxCrmError, ValidationError
from fxcrm_core.kernel.money import Currency, UnroundedMoney
from fxcrm_core.kernel.rates import RateSource
from fxcrm_core.privacy.masking import PiiKind, Reveal, mask

__all__ = ["Statement", "StatementLine", "Statements", "build_statement"]


@attrs.frozen
class StatementLine:
    trading_day: date
    client: str  # "<client id> <name or initials>"
    symbol: str
    level: int
    lots: Decimal
    amount: UnroundedMoney  # in the IB's currency


@attrs.frozen
class Statement:
    ib_id: str
    start: date
    end: date
    currency: Currency
    lines: tuple[StatementLine, ...]
    rates_used: tuple[str, ...]

    def _by(self, key: Callable[[StatementLine], object]) -> dict[object, UnroundedMoney]:
        out: dict[object, UnroundedMoney] = {}
        for line in self.lines:
            k = key(line)
            out[k] = out[k] + line.amount if k in out else line.amount
        return out

    @property
    def total(self) -> UnroundedMoney:
        return sum((line.amount for line in self.lines), UnroundedMoney.zero(self.currency))

    def by_day(self) -> dict[object, UnroundedMoney]:
        return self._by(lambda line: line.trading_day)

    def by_client(self) -> dict[object, UnroundedMoney]:
        return self._by(lambda line: line.client)

    def by_symbol(self) -> dict[object, UnroundedMoney]:
        return self._by(lambda line: line.symbol)

    def by_level(self) -> dict[object, UnroundedMoney]:
        return self._by(lambda line: line.level)


def build_statement(
    entries: Iterable[RebateEntry],
    ib_id: str,
    start: date,
    end: date,
    *,
    currency: Currency,
    rates: RateSource,
    client_names: Mapping[str, str],
    shares_names: Callable[[str], bool] = lambda sub_ib: False,
) -> Statement:
    """The IB's statement for trading days ``start`` to ``end`` (inclusive).

    ``shares_names(sub_ib)`` says whether a sub-IB lets its parents see its clients' names.
    Amounts in other currencies convert at the rate in force at the end of the period.
    """
    at = datetime(end.year, end.month, end.day, 23, 59, tzinfo=UTC)
    used: dict[str, str] = {}
    # First net each deal's entries: the amount sums, the lots are those of its latest state
    # (none once reversed); then group the deals into lines.
    per_deal: dict[tuple[str, int, str], tuple[RebateEntry, UnroundedMoney, Decimal]] = {}
    for e in entries:
        if e.ib_id != ib_id or not start <= e.trading_day <= end:
            continue
        amount = e.amount
        if amount.currency != currency:
            rate = rates.rate(amount.currency, currency, at)
            used[rate.pair] = f"{rate.pair} {rate.rate} ({rate.source}, {rate.as_of.isoformat()})"
            amount = rate.convert(amount).result
        deal_key = (e.server, e.ticket, e.component)
        lots = Decimal(0) if e.kind is EntryKind.REVERSAL else e.lots
        total = per_deal[deal_key][1] + amount if deal_key in per_deal else amount
        per_deal[deal_key] = (e, total, lots)
    grouped: dict[tuple[date, str, str, int], tuple[Decimal, UnroundedMoney]] = {}
    for e, amount, lots in per_deal.values():
        if not amount.amount and not lots:
            continue  # a reversed deal leaves nothing to report
        name = client_names.get(e.client_id, "")
        visible = e.level == 1 or shares_names(e.direct_ib_id)
        shown = name if visible else mask(PiiKind.NAME, name, Reveal.PARTIAL)
        line_key = (e.trading_day, f"{e.client_id} {shown}".strip(), e.symbol, e.level)
        if line_key in grouped:
            prev_lots, prev_amount = grouped[line_key]
            grouped[line_key] = (prev_lots + lots, prev_amount + amount)
        else:
            grouped[line_key] = (lots, amount)
    lines = tuple(
        StatementLine(day, client, symbol, level, lots, amount)
        for (day, client, symbol, level), (lots, amount) in sorted(grouped.items())
    )
    return Statement(ib_id, start, end, currency, lines, tuple(sorted(used.values())))


#: A client's name as one actor may see it (masked for the actor's roles), or None where the
#: actor may not read the client: what :class:`Statements` asks the clients context.
ClientNames = Callable[[Actor, str], str | None]


class Statements:
    """IB statements for an asking actor: an IB reads its own, a role granted
    ``statement.read`` on every row (a back office) any IB's. Client names come from the
    clients context masked for the actor (an IB sees its downline as ``A. L.``), never from
    the host; a client the actor may not read shows its id only.

    ``entries`` gives the recorded rebate entries (the broker reads them from the rebate
    book's streams)."""

    def __init__(
        self,
        access: AccessControl,
        entries: Callable[[], Iterable[RebateEntry]],
        names: ClientNames,
        rates: RateSource,
    ) -> None:
        self.access = access
        self.entries = entries
        self.names = names
        self.rates = rates

    def for_ib(
        self,
        actor: Actor,
        ib_id: str,
        start: date,
        end: date,
        *,
        currency: Currency,
        shares_names: Callable[[str], bool] = lambda sub_ib: False,
    ) -> Statement:
        """The IB's statement for trading days ``start`` to ``end`` (inclusive), as
        :func:`build_statement` makes it, with names masked for ``actor``."""
        if not isinstance(ib_id, str) or not ib_id:
            raise ValidationError("an IB id is non-empty text")
        if not isinstance(start, date) or not isinstance(end, date) or start > end:
            raise ValidationError("a statement covers start to end, two dates in order")
        if not isinstance(currency, Currency):
            raise ValidationError("a statement's currency is a Currency")
        if not self._may_read(actor, ib_id):
            raise AccessDeniedError(f"{actor.id} may not read this IB's statements")
        entries = [e for e in self.entries() if e.ib_id == ib_id and start <= e.trading_day <= end]
        names: dict[str, str] = {}
        for client_id in {e.client_id for e in entries}:
            try:
                name = self.names(actor, client_id)
            except FxCrmError:  # out of the actor's rows, or gone: its id only
                name = None
            names[client_id] = name or ""
        return build_statement(
            entries, ib_id, start, end, currency=currency, rates=self.rates,
            client_names=names, shares_names=shares_names,
        )  # fmt: skip

    def _may_read(self, actor: Actor, ib_id: str) -> bool:
        for role in self.access.roles_allowing(actor, "statement.read"):
            scope = self.access.policy.scopes.get(role, RowScope.NONE)
            if scope is RowScope.ALL:
                return True
            if scope is RowScope.DOWNLINE and actor.ib_id == ib_id:
                return True
        return False
