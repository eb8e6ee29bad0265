"""IB commissions so far: the effective-dated tree and the distribution strategies, with the
issue's worked examples (computed by hand in the comments) and their laws."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fxcrm_core.commissions import (
    Differential,
    FixedShares,
    IbTree,
    KeepAndPassUp,
    PassThrough,
    RankSlices,
    Share,
    TreeError,
    rates_above_parent,
)
from fxcrm_core.kernel import Money, NotFoundError, Rounding, ValidationError

JAN = datetime(2026, 1, 1, tzinfo=UTC)
JUN = datetime(2026, 6, 1, tzinfo=UTC)


def usd(amount: str | int) -> Money:
    return Money.of(amount, "USD")


def amounts(shares: list[Share]) -> list[Decimal]:
    return [s.amount.amount for s in shares]


# -- worked examples -----------------------------------------------------------------------------
def test_pass_through_chain_3_1_030() -> None:
    # The direct IB receives $3/lot and passes $1 up: it nets 3 - 1 = $2.00.
    # Its parent receives $1 and passes $0.30 up: it nets 1 - 0.30 = $0.70.
    # The master receives $0.30 and passes nothing: it nets $0.30. Total $3.00 = what came in.
    plan = PassThrough(usd(3), {"sub": usd(1), "mid": usd("0.30")})
    shares = plan.distribute(["sub", "mid", "master"], Decimal(1), usd(0))
    assert amounts(shares) == [Decimal("2.00"), Decimal("0.70"), Decimal("0.30")]
    assert "passes 1.00 USD/lot up" in shares[0].step


def test_differential_7_over_5() -> None:
    # The sub's rate is $5/lot: it earns 5. The master's rate is $7/lot: it earns 7 - 5 = $2/lot.
    plan = Differential({"sub": usd(5), "master": usd(7)})
    assert amounts(plan.distribute(["sub", "master"], Decimal(1), usd(0))) == [
        Decimal("5.00"),
        Decimal("2.00"),
    ]
    # 2.5 lots: 12.50 and 5.00.
    assert amounts(plan.distribute(["sub", "master"], Decimal("2.5"), usd(0))) == [
        Decimal("12.500"),
        Decimal("5.000"),
    ]


def test_fixed_shares_20_5_2_of_a_fee() -> None:
    # A $10 fee: 20% = $2.00 to the direct IB, 5% = $0.50 to its parent, 2% = $0.20 above.
    plan = FixedShares((Decimal("0.20"), Decimal("0.05"), Decimal("0.02")))
    shares = plan.distribute(["a", "b", "c", "d"], Decimal(1), usd(10))
    assert amounts(shares) == [Decimal("2.0000"), Decimal("0.5000"), Decimal("0.2000")]
    with pytest.raises(ValidationError):
        FixedShares((Decimal("0.6"), Decimal("0.5")))


def test_rank_slices_with_missing_and_repeated_ranks() -> None:
    # Chain: a (rank 1) -> b (rank 1) -> c (rank 3) -> d (rank 4); slices a lot:
    # rank 1 $1.00, rank 2 $0.50, rank 3 $0.30, rank 4 $0.20.
    # Rank 1 goes to the nearest IB of rank >= 1: a. Nobody has rank 2: its slice goes to the
    # next higher-ranked IB, c, which also takes rank 3. Rank 4 goes to d. b repeats rank 1,
    # already paid: nothing. So a 1.00, b 0, c 0.80, d 0.20; total 2.00 = all slices.
    plan = RankSlices(
        {1: usd(1), 2: usd("0.50"), 3: usd("0.30"), 4: usd("0.20")},
        {"a": 1, "b": 1, "c": 3, "d": 4},
    )
    shares = plan.distribute(["a", "b", "c", "d"], Decimal(1), usd(0))
    assert amounts(shares) == [Decimal("1.00"), Decimal("0.00"), Decimal("0.80"), Decimal("0.20")]
    # A rank-4 direct IB collects every slice.
    top = RankSlices(plan.slices, {"a": 4, "b": 1})
    assert amounts(top.distribute(["a", "b"], Decimal(1), usd(0))) == [
        Decimal("2.00"),
        Decimal("0.00"),
    ]


def test_keep_and_pass_up() -> None:
    # $10 in: a keeps 60% = 6.00 and passes 4.00; b keeps 50% = 2.00 and passes 2.00; the
    # master keeps all that reaches it: 2.00.
    plan = KeepAndPassUp({"a": Decimal("0.6"), "b": Decimal("0.5")})
    shares = plan.distribute(["a", "b", "m"], Decimal(1), usd(10))
    assert [s.amount.round(Rounding.HALF_EVEN) for s in shares] == [usd(6), usd(2), usd(2)]


def test_lowering_a_parents_rate_lists_the_descendants_now_above_it() -> None:
    rates = {"m": usd(7), "s1": usd(5), "s2": usd(6), "g": usd(4)}
    parents = {"m": None, "s1": "m", "s2": "m", "g": "s1"}
    assert rates_above_parent(rates, parents) == []
    assert rates_above_parent({**rates, "m": usd("5.50")}, parents) == ["s2"]
    assert rates_above_parent({**rates, "s1": usd(3)}, parents) == ["g"]


# -- laws ----------------------------------------------------------------------------------
chains = st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=6, unique=True)
lots = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(500), places=2)
cents = st.integers(0, 10_000_000)


@given(chains, lots, cents, st.lists(st.integers(0, 400), min_size=1, max_size=6))
def test_fixed_shares_never_exceed_the_pool(
    chain: list[str], n: Decimal, pool: int, bps: list[int]
) -> None:
    total_bps = sum(bps)
    shares = tuple(Decimal(b) / (max(total_bps, 10_000)) for b in bps)
    paid = sum(
        s.amount.amount
        for s in FixedShares(shares).distribute(chain, n, Money.from_minor(pool, "USD"))
    )
    assert paid <= Money.from_minor(pool, "USD").amount


@given(chains, lots, st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 2000)))
def test_differential_is_never_negative_and_pays_the_highest_rate(
    chain: list[str], n: Decimal, rates_cents: dict[str, int]
) -> None:
    rates = {ib: Money.from_minor(rates_cents.get(ib, 0), "USD") for ib in chain}
    shares = Differential(rates).distribute(chain, n, usd(0))
    assert all(not s.amount.amount < 0 for s in shares)
    assert sum(s.amount.amount for s in shares) == max(r.amount for r in rates.values()) * n


@given(chains, lots, st.integers(0, 10_000), st.data())
def test_pass_through_pays_exactly_what_came_in(
    chain: list[str], n: Decimal, first: int, data: st.DataObject
) -> None:
    passes = {}
    received = first
    for ib in chain[:-1]:
        received = data.draw(st.integers(0, received))
        passes[ib] = Money.from_minor(received, "USD")
    shares = PassThrough(Money.from_minor(first, "USD"), passes).distribute(chain, n, usd(0))
    assert all(s.amount.amount >= 0 for s in shares)
    assert sum(s.amount.amount for s in shares) == Money.from_minor(first, "USD").amount * n


@given(chains, lots, cents, st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 100)))
def test_keep_and_pass_up_shares_exactly_the_pool(
    chain: list[str], n: Decimal, pool: int, keep_pct: dict[str, int]
) -> None:
    keep = {ib: Decimal(p) / 100 for ib, p in keep_pct.items()}
    shares = KeepAndPassUp(keep).distribute(chain, n, Money.from_minor(pool, "USD"))
    assert sum(s.amount.amount for s in shares) == Money.from_minor(pool, "USD").amount


@given(chains, lots, st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 5)),
       st.dictionaries(st.integers(1, 5), st.integers(0, 500)))  # fmt: skip
def test_rank_slices_pay_each_slice_at_most_once(
    chain: list[str], n: Decimal, ranks: dict[str, int], slices_cents: dict[int, int]
) -> None:
    slices = {r: Money.from_minor(c, "USD") for r, c in slices_cents.items()}
    shares = RankSlices(slices, ranks).distribute(chain, n, usd(0))
    paid = sum(s.amount.amount for s in shares)
    assert paid <= sum((m.amount for m in slices.values()), Decimal(0)) * n


# -- the tree ------------------------------------------------------------------------------
def tree() -> IbTree:
    t = IbTree(max_depth=3)
    t.add_ib("m", None, JAN)
    t.add_ib("s", "m", JAN)
    t.add_ib("g", "s", JAN, own_client_id="c-g")
    t.add_ib("m2", None, JAN)
    return t


def test_past_deals_keep_the_tree_they_were_made_under() -> None:
    t = tree()
    t.reparent("s", "m2", JUN)
    assert t.chain("g", JUN - timedelta(seconds=1)) == ["g", "s", "m"]
    assert t.chain("g", JUN) == ["g", "s", "m2"]
    with pytest.raises(NotFoundError):
        t.chain("g", JAN - timedelta(days=1))


def test_no_cycles_and_a_depth_cap() -> None:
    t = tree()
    with pytest.raises(TreeError, match="own ancestor"):
        t.reparent("m", "g", JUN)
    with pytest.raises(TreeError, match="deep"):
        t.add_ib("gg", "g", JUN)  # m > s > g > gg: four levels
    t.add_ib("x", None, JAN)
    with pytest.raises(TreeError, match="deep"):
        t.reparent("m", "x", JUN)  # would push g to depth 4
    with pytest.raises(TreeError):
        t.add_ib("s", None, JUN)
    with pytest.raises(ValidationError):
        t.reparent("s", "m2", JAN - timedelta(days=1))  # history is written in time order


def test_attribution_is_dated_and_self_referral_refused() -> None:
    t = tree()
    t.attribute("c-1", "g", JAN)
    t.attribute("c-1", "m2", JUN)
    assert t.ib_of("c-1", JUN - timedelta(days=1)) == "g"
    assert t.ib_of("c-1", JUN) == "m2"
    assert t.in_downline("s", "c-1", JUN - timedelta(days=1))
    assert not t.in_downline("s", "c-1", JUN)
    assert t.ib_of("c-unknown", JUN) is None
    with pytest.raises(TreeError, match="refer itself"):
        t.attribute("c-g", "g", JUN)
    with pytest.raises(NotFoundError):
        t.attribute("c-2", "nobody", JUN)


def _walked_chain(t: IbTree, ib: str, at: datetime) -> list[str]:
    """The chain worked out link by link through ``parent``, as the definition says."""
    out = [ib]
    while (up := t.parent(out[-1], at)) is not None:
        out.append(up)
    return out


@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 30), st.integers(0, 40)),
        max_size=40,
    )
)
def test_chains_asked_for_at_any_time_follow_every_change_of_parent(
    steps: list[tuple[int, int, int, int]],
) -> None:
    # Each step moves IB a under IB b (or to the top, when a == b) a few days after the last
    # change, then asks for every chain at a day that may lie before or after it.
    t = IbTree(max_depth=8)
    ibs = [f"ib{n}" for n in range(8)]
    for ib in ibs:
        t.add_ib(ib, None, JAN)
    now = JAN
    for a, b, days_on, asked_day in steps:
        now += timedelta(days=days_on)
        with contextlib.suppress(TreeError):  # a cycle: refused, nothing changes
            t.reparent(ibs[a], None if a == b else ibs[b], now)
        at = JAN + timedelta(days=asked_day)
        for ib in ibs:
            assert t.chain(ib, at) == _walked_chain(t, ib, at)
