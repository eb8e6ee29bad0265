"""How one deal's rebate is shared up an IB chain: five strategies, each a pure function of the
chain (direct IB first, master last) and its settings, returning unrounded shares that explain
themselves. Rounding happens once, at payout."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar, Protocol, cast

import attrs

from fxcrm_core.kernel._decimal import to_decimal
from fxcrm_core.kernel.errors import ValidationError
from fxcrm_core.kernel.money import Money, UnroundedMoney

__all__ = [
    "Differential",
    "DifferentialRate",
    "Distribution",
    "FixedShares",
    "KeepAndPassUp",
    "PassThrough",
    "RankSlices",
    "Share",
    "rates_above_parent",
]


@attrs.frozen
class Share:
    ib_id: str
    level: int  # 1: the client's direct IB, 2: its parent, ...
    amount: UnroundedMoney
    step: str  # how this amount came about, for statements and disputes


Pool = Money | UnroundedMoney


def _exact(pool: Pool) -> UnroundedMoney:
    return pool.to_unrounded() if isinstance(pool, Money) else pool


class Distribution(Protocol):
    """A strategy sharing a pool up a chain. A strategy that pays rates of its own (so much a
    lot), whatever the pool, says so with ``uses_pool = False`` (read with
    ``getattr(strategy, "uses_pool", True)``): a schedule's revenue ceiling, which bounds the
    pool, does not bound what it pays."""

    def distribute(self, chain: Sequence[str], lots: Decimal, pool: Pool) -> list[Share]:
        """Shares of ``pool`` (the deal's revenue, or a reference amount) for ``lots`` lots."""
        ...


def _check_chain(chain: Sequence[str]) -> None:
    if not chain or len(set(chain)) != len(chain):
        raise ValidationError("a chain lists distinct IBs, the direct one first")


@attrs.frozen
class FixedShares:
    """Level n gets ``shares[n-1]`` of the pool; the shares total at most 100%."""

    uses_pool: ClassVar[bool] = True

    shares: tuple[Decimal, ...]
    _levels: tuple[tuple[int, Decimal, str], ...] = attrs.field(
        init=False, eq=False, repr=False, default=()
    )  # (level, share, "50.0% of ") per level

    def __attrs_post_init__(self) -> None:
        if any(s < 0 for s in self.shares) or sum(self.shares) > 1:
            raise ValidationError("level shares are non-negative and total at most 100%")
        levels = tuple((n, s, f"{s:%} of ") for n, s in enumerate(self.shares, start=1))
        object.__setattr__(self, "_levels", levels)

    def distribute(self, chain: Sequence[str], lots: Decimal, pool: Pool) -> list[Share]:
        _check_chain(chain)
        exact = _exact(pool)
        of = str(exact.amount)
        return [
            Share(ib, level, exact * share, label + of)
            for ib, (level, share, label) in zip(chain, self._levels, strict=False)
        ]


@attrs.frozen
class PassThrough:
    """The direct IB receives ``per_lot`` a lot; each IB passes ``passes[ib]`` a lot up."""

    uses_pool: ClassVar[bool] = False

    per_lot: Money
    passes: Mapping[str, Money]

    def distribute(self, chain: Sequence[str], lots: Decimal, pool: Pool) -> list[Share]:
        _check_chain(chain)
        shares = []
        received = self.per_lot
        for level, ib in enumerate(chain, start=1):
            top = level == len(chain)
            passed = (
                Money.zero(received.currency)
                if top
                else self.passes.get(ib, Money.zero(received.currency))
            )
            if passed.is_negative() or passed > received:
                raise ValidationError("an IB passes up at most what it receives")
            shares.append(
                Share(ib, level, (received - passed) * lots,
                      f"receives {received}/lot, passes {passed}/lot up, x {lots} lots")
            )  # fmt: skip
            received = passed
        return shares


def rates_above_parent(rates: Mapping[str, Money], parents: Mapping[str, str | None]) -> list[str]:
    """The IBs whose rate is above their parent's (after a parent's rate was lowered, say)."""
    return sorted(
        ib
        for ib, rate in rates.items()
        if (parent := parents.get(ib)) is not None and parent in rates and rate > rates[parent]
    )


def _share(value: object) -> Decimal:
    share = to_decimal(value, "a share")
    if not 0 <= share <= 1:
        raise ValidationError("a share is between 0% and 100%")
    return share


def _per_lot(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Money) or value.is_negative():
        raise ValidationError("a rate a lot is Money, not negative")


@attrs.frozen
class DifferentialRate:
    """An IB's rate in a :class:`Differential`: ``share`` of the pool (say, of the deal's
    commission) plus ``per_lot`` a lot."""

    share: Decimal = attrs.field(converter=_share)
    per_lot: Money = attrs.field(validator=_per_lot)

    def __str__(self) -> str:
        return f"{self.share:%} + {self.per_lot}/lot"


def _rates(value: object) -> dict[str, Money | DifferentialRate]:
    if not isinstance(value, Mapping):
        raise ValidationError("a differential maps IBs to their rates")
    for ib, rate in value.items():
        if not isinstance(ib, str) or not isinstance(rate, Money | DifferentialRate):
            raise ValidationError("a differential maps IB ids to Money or DifferentialRate")
    return dict(value)


@attrs.frozen
class Differential:
    """Each IB earns its own rate minus the highest rate below it in the chain; never negative.

    A rate is an amount a lot (``Money``), or a :class:`DifferentialRate`: a share of the pool
    plus an amount a lot, each part differenced on its own. A parent at 100% + $10/lot over a
    sub-IB at 50% + $3/lot earns 50% of the pool + $7/lot (give the schedule a commission share
    of 100%, so the pool is the deal's commission)."""

    rates: Mapping[str, Money | DifferentialRate] = attrs.field(converter=_rates)

    @property
    def uses_pool(self) -> bool:
        """Whether some rate is a share of the pool (else it pays its rates whatever the pool)."""
        return any(isinstance(r, DifferentialRate) and r.share for r in self.rates.values())

    def distribute(self, chain: Sequence[str], lots: Decimal, pool: Pool) -> list[Share]:
        _check_chain(chain)
        if all(type(self.rates.get(ib)) is Money for ib in chain):
            return self._per_lot(chain, lots)
        exact = _exact(pool)
        shares = []
        below: DifferentialRate | None = None
        for level, ib in enumerate(chain, start=1):
            rate = self.rates.get(ib)
            if rate is None:
                raise ValidationError("every IB in a differential chain needs a rate")
            if isinstance(rate, Money):
                rate = DifferentialRate(Decimal(0), rate)
            if rate.per_lot.currency != exact.currency:
                raise ValidationError("a differential's rates are in the pool's currency")
            if below is None:
                share, per_lot, step = rate.share, rate.per_lot, f"rate {rate}"
            else:
                share = max(rate.share - below.share, _ZERO)
                per_lot = max(rate.per_lot - below.per_lot, Money.zero(exact.currency))
                step = f"rate {rate} - child's {below}"
                below = DifferentialRate(
                    max(rate.share, below.share), max(rate.per_lot, below.per_lot)
                )
            if below is None:
                below = rate
            earned = exact * share + per_lot * lots
            shares.append(
                Share(ib, level, earned,
                      f"{step} = {share:%} of {exact.amount} + {per_lot}/lot x {lots} lots")
            )  # fmt: skip
        return shares

    def _per_lot(self, chain: Sequence[str], lots: Decimal) -> list[Share]:
        shares = []
        below: Money | None = None
        for level, ib in enumerate(chain, start=1):
            rate = cast(Money, self.rates[ib])
            earned = rate if below is None else rate - below
            if earned.is_negative():
                earned = Money.zero(rate.currency)  # a child above its parent: the parent earns 0
            step = f"rate {rate}/lot" + (f" - child's {below}/lot" if below is not None else "")
            shares.append(Share(ib, level, earned * lots, f"{step}, x {lots} lots"))
            below = rate if below is None else max(rate, below)
        return shares


_ZERO = Decimal(0)


@attrs.frozen
class RankSlices:
    """Each rank's slice (a lot) goes once, to the nearest IB up the chain at or above that rank;
    a missing rank's slice goes to the next higher-ranked IB; repeated ranks get nothing more.

    ``ranks``: fixed ranks by IB; None (the default) follows the ranks recorded in the log as
    they stood when the deal was made (``IbNetworkService.change_rank``): the engine passes
    them as ``rank_of``."""

    uses_pool: ClassVar[bool] = False

    slices: Mapping[int, Money]
    ranks: Mapping[str, int] | None = None

    @property
    def needs_ranks(self) -> bool:
        """Whether the engine must pass the IBs' recorded ranks (``rank_of``)."""
        return self.ranks is None

    def distribute(
        self,
        chain: Sequence[str],
        lots: Decimal,
        pool: Pool,
        *,
        rank_of: Callable[[str], int] | None = None,
    ) -> list[Share]:
        _check_chain(chain)
        fixed = self.ranks
        if fixed is not None:
            rank_of = lambda ib: fixed.get(ib, 0)  # noqa: E731
        elif rank_of is None:
            raise ValidationError("rank slices on recorded ranks need each IB's rank (rank_of)")
        earned: dict[str, list[tuple[int, Money]]] = {}
        for rank in sorted(self.slices):
            payee = next((ib for ib in chain if rank_of(ib) >= rank), None)
            if payee is not None:  # nobody high enough: the slice stays with the broker
                earned.setdefault(payee, []).append((rank, self.slices[rank]))
        shares = []
        for level, ib in enumerate(chain, start=1):
            got = earned.get(ib, [])
            per_lot = sum((m for _, m in got), Money.zero(_exact(pool).currency))
            ranks = ", ".join(f"rank {r} {m}" for r, m in got) or "no slice"
            shares.append(Share(ib, level, per_lot * lots, f"{ranks}, x {lots} lots"))
        return shares


@attrs.frozen
class KeepAndPassUp:
    """The direct IB receives the pool; each IB keeps ``keep[ib]`` of what it receives and passes
    the rest up; the master keeps everything that reaches it."""

    uses_pool: ClassVar[bool] = True

    keep: Mapping[str, Decimal]

    def distribute(self, chain: Sequence[str], lots: Decimal, pool: Pool) -> list[Share]:
        _check_chain(chain)
        shares = []
        received = _exact(pool)
        for level, ib in enumerate(chain, start=1):
            keep = Decimal(1) if level == len(chain) else self.keep.get(ib, Decimal(1))
            if not 0 <= keep <= 1:
                raise ValidationError("an IB keeps between 0% and 100% of what it receives")
            kept = received * keep
            shares.append(Share(ib, level, kept, f"keeps {keep:%} of {received.amount}"))
            received = received - kept
        return shares
