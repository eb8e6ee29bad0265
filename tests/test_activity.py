"""The client activity read model: trades, lots and notional per trading day with updates and
deletes applied, windows aligned to 17:00 New York (DST weeks and weekends included), net
deposits, and the profit contribution after rebates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fxcrm_core.activity import ClientActivity, FlowKind, Instrument, Measure, Period
from fxcrm_core.fx import Direction, Pricing
from fxcrm_core.kernel import (
    ArgumentTypeError,
    Currency,
    ExchangeRate,
    Money,
    UnroundedMoney,
    ValidationError,
)
from fxcrm_core.payments import WithdrawalStatus
from fxcrm_core.trading import Deal, DealChange
from tests.activity_world import CHECKER, EUR, FINANCE, T0, USD, World, usd

D = Decimal


def figure(w: World, measure: Measure, at: datetime = T0, days: int = 1) -> Decimal:
    return w.activity.window(w.cid, measure, days=days, at=at).value


def test_a_deal_updated_then_deleted_moves_every_measure() -> None:
    w = World()
    first = w.trade(T0 + timedelta(hours=1), "1.5")  # 1.5 x 100,000 x 1.08 = 162,000 USD
    w.trade(T0 + timedelta(hours=2), "0.5", price="1.09000")  # 54,500 USD
    w.pull()
    assert figure(w, Measure.TRADES) == 2
    assert figure(w, Measure.LOTS) == D("2.0")
    assert figure(w, Measure.VOLUME_USD) == D("216500.00")
    assert figure(w, Measure.REVENUE) == D("14.00")  # two commissions of 7.00 charged
    assert w.activity.last_trade(w.cid) == T0 + timedelta(hours=2)
    # A dealer corrects the first deal to 0.2 lots at 1.07, commission 3.00: it replaces it.
    fixed = attrs.evolve(first, volume=D("0.2"), price=D("1.07000"), commission=usd("-3.00"))
    w.change(fixed, DealChange.UPDATED)  # fmt: skip
    w.pull()
    assert figure(w, Measure.TRADES) == 2
    assert figure(w, Measure.LOTS) == D("0.7")
    assert figure(w, Measure.VOLUME_USD) == D("75900.00")  # 21,400 + 54,500
    assert figure(w, Measure.REVENUE) == D("10.00")
    w.change(first, DealChange.DELETED)
    w.pull()
    assert figure(w, Measure.TRADES) == 1
    assert figure(w, Measure.LOTS) == D("0.5")
    assert figure(w, Measure.VOLUME_USD) == D("54500.00")
    assert figure(w, Measure.REVENUE) == D("7.00")
    assert [d.ticket for d in w.activity.trades(w.cid)] == [first.ticket + 1]
    # A fresh read model over the same log agrees (the log is the only truth).
    again = ClientActivity(w.broker.projections, w.broker.calendar, rates=w.market)
    assert again.window(w.cid, Measure.VOLUME_USD, days=1, at=T0).value == D("54500.00")


def test_the_trading_day_rolls_at_17_new_york() -> None:
    w = World()
    # Tuesday 10 March 2026, New York on daylight time: 17:00 there is 21:00 UTC.
    w.trade(datetime(2026, 3, 10, 20, 59, tzinfo=UTC))  # Tuesday's last minute
    w.trade(datetime(2026, 3, 10, 21, 0, tzinfo=UTC))  # Wednesday's first
    w.pull()
    tuesday_noon = datetime(2026, 3, 10, 16, tzinfo=UTC)
    wednesday = datetime(2026, 3, 11, 12, tzinfo=UTC)
    assert figure(w, Measure.TRADES, tuesday_noon) == 1
    # Asked at 21:30 UTC Tuesday, the current trading day is already Wednesday.
    assert figure(w, Measure.TRADES, datetime(2026, 3, 10, 21, 30, tzinfo=UTC)) == 1
    assert figure(w, Measure.TRADES, wednesday) == 1
    assert figure(w, Measure.TRADES, wednesday, days=2) == 2
    assert figure(w, Measure.ACTIVE_DAYS, wednesday, days=2) == 2


def test_a_dst_week_and_a_weekend() -> None:
    w = World()
    # New York moved to daylight time on Sunday 8 March 2026: the roll moved from 22:00 UTC
    # (Thursday 5 and Friday 6) to 21:00 UTC (Monday 9 on).
    w.trade(datetime(2026, 3, 5, 21, 30, tzinfo=UTC))  # 16:30 EST: Thursday
    w.trade(datetime(2026, 3, 5, 22, 0, tzinfo=UTC))  # 17:00 EST: Friday
    w.trade(datetime(2026, 3, 6, 21, 30, tzinfo=UTC))  # 16:30 EST: Friday
    w.trade(datetime(2026, 3, 8, 22, 0, tzinfo=UTC))  # Sunday 18:00 EDT: Monday's session
    w.trade(datetime(2026, 3, 9, 21, 0, tzinfo=UTC))  # 17:00 EDT: Tuesday
    w.pull()
    at = {d: datetime(2026, 3, d, 12, tzinfo=UTC) for d in (5, 6, 9, 10)}
    assert [figure(w, Measure.TRADES, at[d]) for d in (5, 6, 9, 10)] == [1, 2, 1, 1]
    # Two trading days back from Monday are Friday and Monday: the weekend is no day.
    assert figure(w, Measure.TRADES, at[9], days=2) == 3
    assert figure(w, Measure.TRADES, at[10], days=4) == 5  # Thursday to Tuesday
    assert figure(w, Measure.TRADES, at[10], days=3) == 4  # Friday to Tuesday
    assert figure(w, Measure.ACTIVE_DAYS, at[10], days=4) == 4


def test_calendar_month_and_quarter_windows() -> None:
    w = World()
    w.trade(datetime(2026, 2, 27, 21, 30, tzinfo=UTC))  # Friday 27 Feb, 16:30 EST
    w.trade(datetime(2026, 2, 27, 22, 30, tzinfo=UTC), "2")  # after the roll: Monday 2 March
    w.trade(datetime(2026, 3, 31, 12, tzinfo=UTC), "3")
    w.trade(datetime(2026, 4, 1, 12, tzinfo=UTC), "4")
    w.pull()
    march = w.activity.window(
        w.cid, Measure.LOTS, period=Period.MONTH, at=datetime(2026, 3, 31, 20, tzinfo=UTC)
    )
    assert march.value == D(5)
    quarter = w.activity.window(
        w.cid, Measure.LOTS, period=Period.QUARTER, at=datetime(2026, 3, 31, 20, tzinfo=UTC)
    )
    assert quarter.value == D(6)
    april = w.activity.window(
        w.cid, Measure.LOTS, period=Period.QUARTER, at=datetime(2026, 4, 1, 20, tzinfo=UTC)
    )
    assert april.value == D(4)
    assert w.activity.lifetime(w.cid, Measure.LOTS).value == D(10)


def test_net_deposits_fees_and_fx_revenue() -> None:
    w = World()
    dep = w.deposit("1000", "ref-1")
    w.broker.deposits.psp_confirmed(dep, "ref-1", usd(1000))  # the PSP calls back again
    w.withdraw("200")  # a 2.00 fee
    rejected = w.withdraw("100", pay=False)
    w.broker.withdrawals.close(w.me, rejected, WithdrawalStatus.CANCELLED, "changed my mind")
    w.broker.conversions.convert(w.me, "c-1", w.cid, usd(108), "EUR")  # 0.19 EUR markup
    assert figure(w, Measure.DEPOSITS) == D("1000.00")
    assert figure(w, Measure.WITHDRAWALS) == D("200.00")
    assert figure(w, Measure.NET_DEPOSITS) == D("800.00")
    revenue = w.activity.window(w.cid, Measure.REVENUE, days=1, at=T0)
    # The fee, and 0.19 EUR at 1.08 (0.2052 USD): the figure rounds once, half-even.
    assert revenue.value == D("2.21")
    assert set(revenue.by_currency) == {
        UnroundedMoney(D("2.00"), USD),
        UnroundedMoney(D("0.19"), EUR),
    }
    assert w.activity.last_deposit(w.cid) == T0
    # A chargeback: a deposit reversed by finance counts negative.
    second = w.deposit("300", "ref-2")
    assert figure(w, Measure.DEPOSITS) == D("1300.00")
    w.broker.ledger.reverse(f"deposit:{second}", "chargeback-1")
    assert figure(w, Measure.DEPOSITS) == D("1000.00")
    assert figure(w, Measure.NET_DEPOSITS) == D("800.00")


def test_profit_contribution_is_revenue_less_rebates() -> None:
    w = World()
    opened = w.trade(T0 + timedelta(hours=1), "2")
    closed = w.trade(T0 + timedelta(hours=2), "2", closes=opened)
    w.pull()
    assert figure(w, Measure.REVENUE) == D("14.00")
    assert figure(w, Measure.REBATES) == D("4.00")  # 2.00 a lot to the IB, on the close
    assert figure(w, Measure.CONTRIBUTION) == D("10.00")
    w.change(closed, DealChange.DELETED)  # the close deleted: its commission and rebate go
    w.pull()
    assert figure(w, Measure.REVENUE) == D("7.00")
    assert figure(w, Measure.REBATES) == D("0.00")
    assert figure(w, Measure.CONTRIBUTION) == D("7.00")


def test_notional_without_a_rate_is_kept_in_its_currency() -> None:
    w = World()
    w.trade(T0, "1", symbol="USDJPY", price="150.000")  # 15,000,000 JPY: no JPY rate known
    w.trade(T0, "1", symbol="US30", price="42000")  # no instrument: counted, no notional
    w.trade(T0, "1", symbol="EURGBP", price="0.84000")  # 84,000 GBP: no GBP rate
    w.pull()
    volume = w.activity.window(w.cid, Measure.VOLUME_USD, days=1, at=T0)
    assert volume.value == D("0.00")
    jpy, gbp = Currency.of("JPY"), Currency.of("GBP")
    assert set(volume.unpriced) == {
        UnroundedMoney(D(15_000_000), jpy),
        UnroundedMoney(D(84_000), gbp),
    }
    assert figure(w, Measure.TRADES) == 3
    # A source quoting USD/JPY only is inverted explicitly; a host's instruments override ours.
    w.market.add(ExchangeRate.of("USD", "JPY", "150", "lp", T0 - timedelta(days=1)))
    priced = ClientActivity(
        w.broker.projections, w.broker.calendar, rates=w.market,
        instruments=lambda s: Instrument(D(1), USD) if s == "US30" else None,
    )  # fmt: skip
    assert priced.window(w.cid, Measure.VOLUME_USD, days=1, at=T0).value == D("42000.00")
    default = ClientActivity(w.broker.projections, w.broker.calendar, rates=w.market)
    assert default.window(w.cid, Measure.VOLUME_USD, days=1, at=T0).value == D("100000.00")


def test_a_deal_of_no_client_and_balance_deals_count_nothing() -> None:
    w = World()
    assert w.broker.transfers is not None
    w.deposit("500", "r-1")
    w.broker.transfers.move(w.me, "m-1", w.account_id, usd(100), to_trading=True)
    assert w.broker.pull_deals() == 1  # the balance deal of the move: not a trade
    assert figure(w, Measure.TRADES) == 0
    assert figure(w, Measure.DEPOSITS) == D("500.00")  # a move to trading is no deposit
    w.trade(T0, "1", login=999_999)  # a login no client holds
    w.pull()
    assert figure(w, Measure.TRADES) == 0
    assert w.activity.clients() == [w.cid]


def test_window_arguments_are_checked() -> None:
    w = World()
    with pytest.raises(ValidationError):
        w.activity.window(w.cid, Measure.LOTS)
    with pytest.raises(ValidationError):
        w.activity.window(w.cid, Measure.LOTS, days=2, period=Period.MONTH)
    with pytest.raises(ValidationError):
        w.activity.window(w.cid, Measure.LOTS, days=0)
    with pytest.raises(ArgumentTypeError):
        w.activity.window(w.cid, "lots", days=1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        w.activity.window("", Measure.LOTS, days=1)
    with pytest.raises(ValidationError):
        w.activity.window(w.cid, Measure.LOTS, days=1, at=datetime(2026, 3, 9))  # noqa: DTZ001 (naive)
    assert w.activity.window(w.cid, Measure.LOTS, days=1).value == 0  # the clock's day


def test_conversions_at_deposit_and_withdrawal_count_their_markup() -> None:
    w = World()
    for direction in (Direction.DEPOSIT, Direction.WITHDRAWAL):
        change = w.broker.fx_rates.set_pricing(
            FINANCE, "EUR", "USD", direction, Pricing.pips(50), reason="launch"
        )
        if change.approval_id is not None:
            w.broker.approvals.approve(CHECKER, change.approval_id)
    deposits = w.broker.deposits
    dep = deposits.initiate(
        w.me, w.cid, Money.of(500, "EUR"), psp="sepa", method="bank", into="USD"
    )
    deposits.psp_confirmed(dep, "ref-eur", Money.of(500, "EUR"))
    credited = deposits.get(dep).conversion
    assert credited is not None
    assert figure(w, Measure.DEPOSITS) == credited.credited.amount  # what the wallet got
    assert figure(w, Measure.REVENUE) == credited.revenue.amount
    wd = w.broker.withdrawals.request(w.me, w.cid, w.iban, usd(100), payout_currency="EUR")
    approval = w.broker.withdrawals.get(wd).approval_id
    assert approval is not None
    w.broker.approvals.approve(FINANCE, approval)
    w.broker.withdrawals.paid(wd, "payout-eur")
    quote = w.broker.withdrawals.get(wd).payout_quote
    assert quote is not None
    revenue = w.activity.window(w.cid, Measure.REVENUE, days=1, at=T0)
    # The deposit's markup (USD), the withdrawal's fee (USD) and its markup (EUR).
    assert set(revenue.by_currency) == {
        UnroundedMoney(credited.revenue.amount + D(2), USD),
        UnroundedMoney(quote.revenue.amount, EUR),
    }
    assert figure(w, Measure.WITHDRAWALS) == D("100.00")
    line = w.flows.statement(w.me, w.cid, T0 - timedelta(hours=1), T0 + timedelta(hours=1)).lines[0]
    assert (line.kind, line.amount, line.counterparty) == (
        FlowKind.DEPOSIT, credited.credited, "psp:sepa"
    )  # fmt: skip


CHANGES = st.lists(
    st.tuples(
        st.sampled_from(["add", "update", "delete"]),
        st.integers(0, 30),  # which earlier deal (modulo), or hours after T0 for an add
        st.integers(1, 500),  # hundredths of a lot
    ),
    max_size=25,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CHANGES)
def test_measures_equal_a_trivial_model_of_the_feed(changes: list[tuple[str, int, int]]) -> None:
    """Adds, updates and deletes in any order: the measures equal a dict of the deals as they
    stand, and so does the trade history read from the log."""
    w = World()
    standing: dict[int, Deal] = {}
    made: list[Deal] = []
    for change, n, hundredths in changes:
        lots = str(D(hundredths) / 100)
        if change == "add" or not made:
            deal = w.trade(T0 + timedelta(hours=n), lots)
            made.append(deal)
            standing[deal.ticket] = deal
        elif change == "update":
            deal = attrs.evolve(made[n % len(made)], volume=D(lots))
            w.change(deal, DealChange.UPDATED)
            standing[deal.ticket] = deal
        else:
            deal = made[n % len(made)]
            w.change(deal, DealChange.DELETED)
            standing.pop(deal.ticket, None)
        if n % 3 == 0:
            w.pull()  # in batches of any size
    w.pull()
    assert w.activity.lifetime(w.cid, Measure.TRADES).value == len(standing)
    assert w.activity.lifetime(w.cid, Measure.LOTS).value == sum(
        (d.volume for d in standing.values()), D(0)
    )
    notional = sum((d.volume * 100_000 * d.price for d in standing.values()), D(0))
    assert w.activity.lifetime(w.cid, Measure.VOLUME_USD).value == notional.quantize(D("0.01"))
    assert {d.ticket for d in w.activity.trades(w.cid)} == set(standing)
    days = {w.broker.calendar.trading_day(d.time) for d in standing.values()}
    assert w.activity.lifetime(w.cid, Measure.ACTIVE_DAYS).value == len(days)


def test_a_horizon_forgets_old_deals_marks_and_counts_late_corrections() -> None:
    """With a correction horizon the read model keeps what each deal added only that long after
    the feed's latest trade day (memory stays bounded); a later correction leaves the first
    count standing and is counted, alike in every process (the days are the feed's)."""
    w = World()
    first = w.trade(T0 + timedelta(hours=1), "1.0")
    w.pull()
    bounded = ClientActivity(
        w.broker.projections, w.broker.calendar, rates=w.market, horizon=timedelta(days=3)
    )
    assert bounded.window(w.cid, Measure.LOTS, days=1, at=T0).value == D("1.0")
    w.trade(T0 + timedelta(days=5, hours=1), "0.5")  # five days later: the first is past it
    w.pull()
    w.change(attrs.evolve(first, volume=D("0.2")), DealChange.UPDATED)
    w.pull()
    at = T0 + timedelta(days=5, hours=2)
    assert bounded.lifetime(w.cid, Measure.LOTS).value == D("1.5")  # the first count stands
    assert bounded.late_corrections == 1
    assert len(bounded._marks) == 1  # only the recent deal's mark is kept
    unbounded = ClientActivity(w.broker.projections, w.broker.calendar, rates=w.market)
    assert unbounded.lifetime(w.cid, Measure.LOTS).value == D("0.7")  # no horizon: applied
    again = ClientActivity(
        w.broker.projections, w.broker.calendar, rates=w.market, horizon=timedelta(days=3)
    )
    assert again.lifetime(w.cid, Measure.LOTS).value == D("1.5")
    assert again.window(w.cid, Measure.LOTS, days=1, at=at).value == D("0.5")
    with pytest.raises(ValidationError):
        ClientActivity(w.broker.projections, w.broker.calendar, horizon=timedelta(hours=5))
