"""Payouts: rebate entries accrue per IB, unrounded; a payout converts them into the IB's wallet
currency at a recorded rate, rounds once (down) and carries the remainder forward, respects a
minimum, a cadence cut-off and a hold window, goes through maker-checker above a threshold, and
posts through the ledger from rebate expense to the IB's wallet. Reversals claw back: they
reduce what is pending, and a negative balance is carried into later payouts."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta

import attrs

from fxcrm_core.access import Actor, ApprovalRule, Approvals
from fxcrm_core.commissions.engine import RebateEntry
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.kernel.money import Currency, Money, Rounding, UnroundedMoney
from fxcrm_core.kernel.rates import RateSource
from fxcrm_core.ledger import Ledger, TransferRequest

__all__ = ["Cadence", "PayoutPolicy", "PayoutResult", "Payouts"]


class Cadence(enum.Enum):
    INSTANT = "instant"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"

    def cutoff(self, today: date) -> date:
        """The last trading day a payout made ``today`` covers."""
        if self is Cadence.INSTANT:
            return today
        if self is Cadence.DAILY:
            return today - timedelta(days=1)
        if self is Cadence.WEEKLY:
            return today - timedelta(days=today.weekday() + 1)  # up to the previous Sunday
        return today.replace(day=1) - timedelta(days=1)  # up to the end of last month


@attrs.frozen
class PayoutPolicy:
    currency: Currency  # the IB's wallet currency
    minimum: Money
    cadence: Cadence = Cadence.DAILY
    hold: timedelta = timedelta(0)  # entries younger than this wait (disputes, reversals)
    approval_above: Money | None = None


@attrs.frozen
class PayoutResult:
    ib_id: str
    paid: Money | None  # None: nothing paid (below the minimum, nothing due, or awaiting approval)
    carried: UnroundedMoney  # what stays pending, remainder of rounding included
    approval_id: str | None = None
    rate_source: str | None = None


class Payouts:
    def __init__(
        self,
        ledger: Ledger,
        rates: RateSource,
        policies: Mapping[str, PayoutPolicy],
        *,
        approvals: Approvals | None = None,
    ) -> None:
        self.ledger = ledger
        self.rates = rates
        self.policies = dict(policies)
        self.approvals = approvals
        self._pending: dict[str, list[RebateEntry]] = {}
        self._carried: dict[str, UnroundedMoney] = {}  # in the IB's currency
        self._count: dict[str, int] = {}
        if approvals is not None:
            approvals.register("payout", ApprovalRule(execute=self._execute))

    def accrue(self, entries: Iterable[RebateEntry]) -> None:
        for entry in entries:
            self._pending.setdefault(entry.ib_id, []).append(entry)

    def _policy(self, ib_id: str) -> PayoutPolicy:
        try:
            return self.policies[ib_id]
        except KeyError:
            raise ValidationError("no payout policy for that IB") from None

    def run(self, actor: Actor, ib_id: str, today: date) -> PayoutResult:
        """Pay what is due to ``ib_id`` as of ``today`` under its policy."""
        policy = self._policy(ib_id)
        cutoff = policy.cadence.cutoff(today) - timedelta(days=policy.hold.days)
        due: list[RebateEntry] = []
        waiting: list[RebateEntry] = []
        for e in self._pending.get(ib_id, []):
            (due if e.trading_day <= cutoff else waiting).append(e)
        total = self._carried.get(ib_id, UnroundedMoney.zero(policy.currency))
        source = None
        for currency, amount in _by_currency(due).items():
            if currency == policy.currency:
                total = total + amount
                continue
            rate = self.rates.rate(currency, policy.currency, _noon(today))
            total = total + rate.convert(amount).result
            source = f"{rate.source} {rate.rate} at {rate.as_of.isoformat()}"
        self._pending[ib_id] = waiting
        paid, remainder = total.round_with_remainder(Rounding.DOWN)
        if paid < policy.minimum:
            self._carried[ib_id] = total  # below the minimum (or clawed back): wait
            return PayoutResult(ib_id, None, total, rate_source=source)
        self._carried[ib_id] = remainder
        n = self._count.get(ib_id, 0) + 1
        self._count[ib_id] = n
        payout_id = f"{ib_id}:{n}"
        if policy.approval_above is not None and paid > policy.approval_above:
            assert self.approvals is not None, "approval_above needs the approvals service"
            approval_id = self.approvals.request(
                actor,
                "payout",
                ib_id,
                {"payout_id": payout_id, "ib_id": ib_id, "amount": str(paid)},
            )
            return PayoutResult(ib_id, None, remainder, approval_id, source)
        self._post(payout_id, ib_id, paid, actor.id)
        return PayoutResult(ib_id, paid, remainder, rate_source=source)

    def _execute(self, params: Mapping[str, str], key: str) -> str:
        paid = Money.parse(params["amount"])
        self._post(params["payout_id"], params["ib_id"], paid, "system:approvals")
        return f"paid {paid}"

    def _post(self, payout_id: str, ib_id: str, amount: Money, actor: str) -> None:
        cur = amount.currency
        wallet = f"ib-wallet:{ib_id}:{cur.code}"
        expense = f"rebate_expense:{cur.code}"
        self.ledger.open_account(wallet, owner=ib_id, currency=cur, purpose="ib_wallet")
        self.ledger.open_account(expense, owner="broker", currency=cur, purpose="rebate_expense")
        self.ledger.transfer(
            TransferRequest(f"payout:{payout_id}", expense, wallet, amount), actor=actor
        )

    def pending(self, ib_id: str) -> list[RebateEntry]:
        return list(self._pending.get(ib_id, []))


def _by_currency(entries: Iterable[RebateEntry]) -> dict[Currency, UnroundedMoney]:
    out: dict[Currency, UnroundedMoney] = {}
    for e in entries:
        cur = e.amount.currency
        out[cur] = out[cur] + e.amount if cur in out else e.amount
    return out


def _noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
