"""The demo behind ``make demo``: a broker day on the embedded SQLite store, every context in play.

The day is a list of steps (``DAY``): each is a command one actor gives the broker. ``run_demo``
plays them on one broker and prints what happened; the parity test plays the same steps with a
fresh process after every step and across two processes, and finds the same answers, since
everything lives in the log (the trading server is simulated in a file beside it).
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs

from fxcrm_core.access import Actor, Role
from fxcrm_core.accounts import GroupRule, LeverageAboveCapError, LeverageCaps, TradingAccount
from fxcrm_core.broker import Broker, BrokerOptions, ConfigurationError
from fxcrm_core.clients import (
    Client,
    ClientKind,
    Consent,
    DuplicateClientError,
    Registration,
    Stage,
)
from fxcrm_core.commissions import (
    Cadence,
    CapPeriod,
    FixedShares,
    PayoutPolicy,
    PeriodCap,
    PlanKind,
    RebateBook,
    Rule,
    Schedule,
    ScheduleBook,
)
from fxcrm_core.engagement import (
    Channel,
    ComplaintOutcome,
    EngagementRule,
    MessageKind,
    OnEvent,
    OutboxMessage,
    RulePeriod,
    SurveyKind,
)
from fxcrm_core.events import iter_all
from fxcrm_core.fx import Direction, Pricing
from fxcrm_core.kernel import (
    Currency,
    ExchangeRate,
    FixedClock,
    FxCrmError,
    IdGenerator,
    Money,
    RateTable,
    Rounding,
    StoreError,
)
from fxcrm_core.loyalty import (
    BaselineChurnModel,
    Benefits,
    CalendarMonth,
    CashbackPlan,
    Combination,
    DowngradeRule,
    Measure,
    Threshold,
    Tier,
    TierChanged,
    TierProgramme,
    UpgradeTiming,
)
from fxcrm_core.loyalty.points_rules import CashbackRate, DepositRate, PointsRules
from fxcrm_core.payments import FeePolicy, InstrumentKind, PaymentLimits, reconcile
from fxcrm_core.privacy import MasterKeyring, RetentionPolicy
from fxcrm_core.trading import (
    AccountStatus,
    BalanceOperation,
    SimulatedTradingServer,
    read_mt5_deals,
)

__all__ = ["DAY", "DEFAULT_DB", "DayStep", "DemoFileError", "open_demo_broker", "run_demo"]

# Friday 6 March 2026, 20:30 UTC: New York is still on winter time (rolls at 22:00 UTC);
# daylight time starts on Sunday, so Monday's roll is at 21:00 UTC.
START = datetime(2026, 3, 6, 20, 30, tzinfo=UTC)
DEMO_MASTER_KEY = bytes(range(32))  # a host loads its master keys from its KMS
DEMO_IDENTITY_KEY = b"demo-only deduplication key, 32+ bytes"  # ... and this secret too
DEMO_GROUPS = {
    "demo\\usd": GroupRule("demo\\usd", "USD", 1000, live=False),
    "retail\\usd": GroupRule("retail\\usd", "USD", 500, live=True),
    "vip\\usd": GroupRule("vip\\usd", "USD", 500, live=True),
}
DEMO_MRZ = (
    "P<ARELIMA<<ANA<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<\nA123456784ARE8803171F3107302<<<<<<<<<<<<<<<6"
)
USD = Currency.of("USD")
IB_START = START - timedelta(days=30)

PORTAL = Actor.system("portal", Role.PORTAL)
REP = Actor.staff("rep-1", Role.SALES)
OFFICER = Actor.staff("kyc-1", Role.COMPLIANCE)
RISK = Actor.staff("risk-1", Role.COMPLIANCE)
FINANCE = Actor.staff("fin-1", Role.FINANCE)
ADMIN = Actor.staff("admin-1", Role.ADMIN)
DPO = Actor.staff("dpo", Role.COMPLIANCE)
PAYOUTS = Actor.system("payouts", Role.FINANCE)

POINTS_RULES = PointsRules(
    per_lot={"fx": Decimal(10), "metals": Decimal(20)},
    symbol_groups={"XAUUSD": "metals", "XAGUSD": "metals"},
    default_group="fx",
    per_deposit=(DepositRate(Money.of(100, USD), Decimal(1)),),
    validity=timedelta(days=60),
    cashback=CashbackRate(Decimal(100), Money.of(1, USD)),
)


def _tiers() -> TierProgramme:
    """The client tier programme: calendar months, upgrades at once, a week's grace."""
    return TierProgramme(
        "main", 1, START,
        [
            Tier("bronze"),
            Tier("silver", all_of=[Threshold(Measure.LOTS, Decimal(5))],
                 benefits=Benefits(Money.of("0.50", USD), Decimal("1.5"), 500)),
            Tier("gold", all_of=[Threshold(Measure.LOTS, Decimal(200))],
                 benefits=Benefits(Money.of("1.00", USD), Decimal(2), 200)),
        ],
        CalendarMonth(), UpgradeTiming.AT_ONCE, DowngradeRule(grace_trading_days=5),
        Combination.CURRENT_PERIOD,
    )  # fmt: skip


def _ib_tiers() -> TierProgramme:
    """The IB rank programme: a senior partner's downline trades 10 lots in the month."""
    return TierProgramme(
        "ib-ranks", 1, START,
        [Tier("partner"), Tier("senior-partner", all_of=[Threshold(Measure.LOTS, Decimal(10))])],
        CalendarMonth(), UpgradeTiming.NEXT_TRADING_DAY, DowngradeRule(grace_trading_days=0),
        Combination.CURRENT_PERIOD,
    )  # fmt: skip


def _schedules() -> ScheduleBook:
    book = ScheduleBook()
    book.add(
        Schedule(
            "ib-standard", 1, IB_START, USD,
            by_symbol={"XAUUSD": Rule(PlanKind.PER_LOT, Money.of("3.50", USD))},
            default=Rule(PlanKind.PER_LOT, Money.of("2.00", USD)),
            cpa=Rule(PlanKind.CPA, Money.of(150, USD), min_deposit=Money.of(1000, USD),
                     min_lots=Decimal(1)),
            period_cap=PeriodCap(Money.of(2000, USD), CapPeriod.MONTH),
        )
    )  # fmt: skip
    return book


ENGAGEMENT_RULES = (
    EngagementRule(
        rule_id="welcome", trigger=OnEvent.registered(), template="welcome",
        channel=Channel.EMAIL, kind=MessageKind.SERVICE,
    ),
    EngagementRule(
        rule_id="news", trigger=OnEvent.registered(after=timedelta(days=1)), template="news",
        channel=Channel.EMAIL, kind=MessageKind.MARKETING,
    ),
    EngagementRule(
        rule_id="tier-up", trigger=OnEvent.tier_up(("bronze", "silver", "gold")),
        template="tier-up", channel=Channel.PUSH, kind=MessageKind.MARKETING,
        period=RulePeriod.MONTH,
    ),
    EngagementRule(
        rule_id="win-back", trigger=OnEvent.churn_warning(), template="win-back",
        channel=Channel.EMAIL, kind=MessageKind.MARKETING, period=RulePeriod.MONTH,
        priority=10,
    ),
)  # fmt: skip


def demo_options(path: Path, clock: FixedClock) -> BrokerOptions:
    """The demo broker's settings: the same in every process that opens the file."""
    server = SimulatedTradingServer(
        "sim-mt5", seed=7, clock=clock, state_path=f"{path}.server.json"
    )
    payout = PayoutPolicy(USD, Money.of(10, USD), Cadence.INSTANT)
    return {
        "keyring": MasterKeyring({"demo-master": DEMO_MASTER_KEY}, "demo-master"),
        "identity_key": DEMO_IDENTITY_KEY,
        "trading_server": server,
        "groups": DEMO_GROUPS,
        "caps": LeverageCaps(approval_above=200),
        "payment_limits": PaymentLimits([Money.of("50000", "USD"), Money.of("350000", "CNY")]),
        "rates": RateTable(),  # the market feed: the back-office step adds what it reads
        "daily_withdrawal_limits": {"USD": Money.of("20000", "USD")},
        "withdrawal_fees": FeePolicy({"USD": Money.of("2", "USD")}, Decimal("0.005")),
        "schedules": _schedules(),
        "distribution": FixedShares((Decimal("0.7"), Decimal("0.3"))),
        "payout_policies": {"ib-apex": payout, "ib-north": payout},
        "dormant_after": timedelta(days=90),
        # Loyalty: points per lot and per deposit, cashback per lot (more for higher tiers),
        # IB ranks from an IB tier programme.
        "points_rules": POINTS_RULES,
        "cashback_plan": CashbackPlan(
            USD, default_rate=Money.of("0.10", USD), excluded_groups=["demo\\usd"]
        ),
        "ib_ranks": {"partner": 1, "senior-partner": 3},
        # The demo's client trades on one day only: a single active day makes a habit here.
        "churn_model": BaselineChurnModel(min_active_days=1),
        # Engagement: a welcome on sign-up, a congratulation on a tier upgrade, a win-back offer
        # on a churn warning; the relay hands them to the broker's notifier (in memory here).
        "engagement_rules": ENGAGEMENT_RULES,
        "client_zones": {"AE": "Asia/Dubai", "GB": "Europe/London"},
        # A broker keeps records five years after a relationship ends (the default); the demo
        # keeps none, so its one day can show an erasure.
        "retention": RetentionPolicy(years=0),
    }


def open_demo_broker(
    path: str | Path,
    *,
    policies: Literal["inline", "worker"] = "inline",
    seed: int | None = None,
    files: Path | None = None,
) -> Broker:
    """Open the demo broker on ``path`` (it writes nothing by itself); ``seed`` makes its ids
    reproducible. On PostgreSQL (``path`` a ``postgresql://`` URL) the simulated trading
    server keeps its state beside ``files`` (default ``.demo/postgres``)."""
    clock = FixedClock(START)
    postgres = is_postgres(path)
    options = demo_options((files or _PG_FILES) if postgres else Path(path), clock)
    options["policies"] = policies
    if seed is not None:
        options["ids"] = IdGenerator(clock, seed=seed)
    if postgres:
        return Broker.postgres(str(path), clock=clock, **options)
    return Broker.sqlite(Path(path), clock=clock, **options)


def is_postgres(db: str | Path) -> bool:
    """Whether ``db`` names a PostgreSQL database (a ``postgresql://`` URL), not a file. A
    ``key=value`` connection string is refused (ConfigurationError): taken for a file name, its
    password would end up in a file's name and in the report."""
    if not isinstance(db, str):
        return False
    if db.startswith(("postgresql://", "postgres://")):
        return True
    if _CONNINFO.search(db):
        raise ConfigurationError("give a PostgreSQL database as a postgresql:// URL")
    return False


_CONNINFO = re.compile(r"(^|\s)(host|hostaddr|dbname|user|password|port|service)\s*=")


# The demo's simulated trading server keeps its state in a file; on PostgreSQL, this one.
_PG_FILES = Path(".demo") / "postgres"


# -- the day's steps: fn(broker, *args) -> result ------------------------------------------------
def _client(broker: Broker, email: str) -> str:
    """The id of the client registered with ``email`` (found through the dedup index)."""
    found = broker.clients.find_by_email(OFFICER, email)
    if found is None:
        raise LookupError("no client with that e-mail")
    return found


def _account(broker: Broker, client_id: str) -> TradingAccount:
    for account_id in broker.lifecycle.accounts_of(client_id):
        return broker.repository.get(TradingAccount, account_id)
    raise LookupError("the client has no trading account")


def sign_up(broker: Broker, name: str, email: str, phone: str, country: str) -> str:
    registration = Registration(ClientKind.INDIVIDUAL, country, name, email, phone, owner_id=REP.id)
    return broker.clients.register(PORTAL, registration)


def sign_up_again(broker: Broker, email: str) -> list[str]:
    try:
        broker.clients.register(PORTAL, Registration(ClientKind.INDIVIDUAL, "AE", "A. Lima", email))
    except DuplicateClientError as duplicate:
        return list(duplicate.matched_on)
    return []


def pass_kyc(broker: Broker, email: str, *kinds: str) -> int:
    """The client uploads documents (a passport with its MRZ), the officer approves them."""
    ana = _client(broker, email)
    me = Actor.client(ana)
    for kind in kinds:
        mrz = DEMO_MRZ if kind == "passport" else None
        document = broker.kyc.submit(me, ana, kind, f"files/{kind}", mrz=mrz)
        broker.kyc.approve(OFFICER, document)
    return broker.kyc.level(ana)


def verify_and_profile(broker: Broker, email: str) -> str:
    ana = _client(broker, email)
    broker.clients.move(REP, ana, Stage.VERIFIED)
    client = broker.clients.assess_risk(Actor.client(ana), ana, {"experience": 5, "knowledge": 4})
    assert client.risk_profile is not None
    return client.risk_profile.value


def open_account(broker: Broker, email: str, leverage: int) -> str:
    ana = _client(broker, email)
    try:
        account_id = broker.accounts.open(Actor.client(ana), ana, "retail\\usd", leverage)
    except LeverageAboveCapError as capped:
        return f"refused: {capped}"
    return f"login {broker.repository.get(TradingAccount, account_id).login} at 1:{leverage}"


def raise_leverage(broker: Broker, email: str, leverage: int) -> int:
    """A rise above 1:200 needs a second person: request, then the risk officer approves."""
    ana = _client(broker, email)
    account = _account(broker, ana)
    outcome = broker.accounts.request_leverage(Actor.client(ana), account.id, leverage)
    assert outcome.request_id is not None
    broker.approvals.approve(RISK, outcome.request_id)
    return broker.trading_server.account_state(account.login).leverage


def masked_views(broker: Broker, email: str) -> list[str]:
    """Ana as three people see her through the one read path, masked for their roles."""
    ana = _client(broker, email)
    views = [
        (who, broker.clients.get(who, ana))
        for who in (OFFICER, Actor.staff("desk-1", Role.SUPPORT), REP)
    ]
    return [
        f"{next(iter(who.roles)):<10} sees {view.name!r:<12} {view.email!r} {view.phone!r}"
        for who, view in views
    ]


def deposit(broker: Broker, email: str, amount: str, reference: str) -> list[str]:
    """A card deposit; the PSP's callback arrives twice."""
    ana = _client(broker, email)
    deposit_id = broker.deposits.initiate(
        Actor.client(ana), ana, Money.of(amount, "USD"), psp="acquirer", method="card"
    )
    return [
        broker.deposits.psp_confirmed(deposit_id, reference, Money.of(amount, "USD")).value
        for _ in range(2)
    ]


def to_trading(broker: Broker, email: str, amount: str) -> int:
    ana = _client(broker, email)
    account = _account(broker, ana)
    moved = broker.transfers.move(
        Actor.client(ana), "move-1", account.id, Money.of(amount, "USD"), to_trading=True
    )
    return moved.deal_ticket


def withdraw(broker: Broker, email: str, amount: str) -> dict[str, str]:
    """To a verified IBAN, approved by a second person, then paid by the PSP."""
    ana = _client(broker, email)
    me = Actor.client(ana)
    iban = broker.withdrawals.add_instrument(
        me, ana, InstrumentKind.IBAN, "AE07 0331 2345 6789 0123 456"
    )
    masked = broker.withdrawals.verify_instrument(FINANCE, iban).masked
    withdrawal = broker.withdrawals.request(me, ana, iban, Money.of(amount, "USD"))
    approval = broker.withdrawals.get(withdrawal).approval_id
    assert approval is not None
    broker.approvals.approve(FINANCE, approval)
    done = broker.withdrawals.paid(withdrawal, "payout-5521")
    return {"to": masked, "fee": str(done.fee), "status": str(done.status and done.status.value)}


CHECKER = Actor.staff("fin-2", Role.FINANCE)  # the second person of finance's maker-checker
CHEN = ("Chen Wei", "chen.wei@example.cn", "+86 139 1099 8888", "CN")


def back_office(broker: Broker, email: str) -> dict[str, Any]:
    """The back office's morning: the broker's own USD/CNY deposit rate (a second person
    approves it), a CNY card deposit into Ana's USD wallet, a bank wire matched and approved,
    money to another client, a second trading account funded from the first, and account
    services (a password reset, a group change, read-only and back)."""
    ana = _client(broker, email)
    me = Actor.client(ana)
    now = broker.clock.now()
    # The market feed gives a fresh USD/CNY rate (a rate table here; a host plugs its source).
    market = broker.fx_rates.market
    assert isinstance(market, RateTable)
    market.add(ExchangeRate.of("USD", "CNY", "7.1000", "lp", now))
    change = broker.fx_rates.set_pricing(
        FINANCE, "USD", "CNY", Direction.DEPOSIT, Pricing.pips(500), reason="CNY deposits open"
    )
    if change.approval_id is not None:
        broker.approvals.approve(CHECKER, change.approval_id)
    quote = broker.fx_rates.quote("USD", "CNY", Direction.DEPOSIT)
    cny = broker.deposits.initiate(
        me, ana, Money.of("7000", "CNY"), psp="unionpay", method="card", into="USD"
    )
    broker.deposits.psp_confirmed(cny, "up-20260309-1", Money.of("7000", "CNY"))
    converted = broker.deposits.get(cny).conversion
    assert converted is not None
    wire = broker.wires.declare(
        me, ana, Money.of("2500", "USD"), bank_reference="FX-ANA-0042", receipt_id="upload-1"
    )
    broker.wires.match(
        FINANCE, wire, bank_transaction_id="EB-778120", received=Money.of("2500", "USD"),
        booked_on=now.date(),
    )  # fmt: skip
    approval = broker.wires.get(FINANCE, wire).approval_id
    assert approval is not None
    broker.approvals.approve(CHECKER, approval)
    chen = sign_up(broker, *CHEN)
    pass_kyc(broker, CHEN[1], "passport", "proof_of_address")
    sent = broker.client_transfers.request(me, "gift-1", ana, chen, Money.of("300", "USD"))
    first = _account(broker, ana)
    second = broker.accounts.open(me, ana, "retail\\usd", 100)
    broker.transfers.between(me, "a2a-1", first.id, second, Money.of("200", "USD"))
    reset = broker.account_changes.reset_password(me, first.id, request_id="pw-1")
    broker.account_changes.change_group(
        FINANCE, second, "vip\\usd", request_id="grp-1", reason="VIP desk"
    )
    for status in (AccountStatus.READ_ONLY, AccountStatus.ENABLED):
        broker.account_changes.set_status(
            OFFICER, first.id, status, request_id=f"st-{status.value}", reason="margin review"
        )
    return {
        "rate": f"{quote.rate_id}: {quote.bid} / {quote.ask} around {quote.market.rate}",
        "cny_deposit": f"{converted.settled} -> {converted.credited} (revenue {converted.revenue})",
        "wire": _value(broker.wires.get(FINANCE, wire).status),
        "to_chen": _value(sent.status),
        "accounts": [
            str(broker.trading_server.account_state(a.login).balance)
            for a in (first, broker.repository.get(TradingAccount, second))
        ],
        "password_reset": "generated, shown once" if reset.password else "not shown again",
        "fx_revenue": str(broker.ledger.balance(broker.fx.revenue(USD)).net_credit),
    }


def _value(status: enum.Enum | None) -> str | None:
    return None if status is None else str(status.value)


def reconcile_after_manual_deposit(broker: Broker, email: str) -> dict[str, list[str]]:
    login = _account(broker, _client(broker, email)).login
    server = broker.trading_server
    clean = reconcile(broker.store, broker.codec, server, [login])
    server.balance_operation(
        login,
        BalanceOperation.DEPOSIT,
        Money.of("50", "USD"),
        comment="dealer, by hand",
        idempotency_key="manual-1",
    )
    found = reconcile(broker.store, broker.codec, server, [login])
    return {"before": [f.kind.value for f in clean], "after": [f.kind.value for f in found]}


def sign_ibs(broker: Broker, email: str) -> list[str]:
    """A master IB and its sub-IB; the client came through the sub-IB."""
    network = broker.ib_network
    network.register_ib(ADMIN, "ib-apex", None, IB_START, reason="master IB agreement")
    network.register_ib(ADMIN, "ib-north", "ib-apex", IB_START, reason="sub-IB agreement")
    network.attribute(ADMIN, _client(broker, email), "ib-north", IB_START, reason="referral link")
    return network.chain("ib-north", START)


def ib_records(broker: Broker, email: str) -> dict[str, Any]:
    """Bo applies to become an IB under ib-apex and a second person approves; ib-north reaches
    rank 2; gold pays more from tomorrow. Each is an event with who and why."""
    bo = _client(broker, email)
    applications = broker.ib_applications
    applications.apply(
        Actor.client(bo), "ib-app-1", bo, "ib-bo", "ib-apex", reason="refers friends"
    )
    applications.approve(ADMIN, "ib-app-1", reason="agreement signed")
    network = broker.ib_network
    network.change_rank(ADMIN, "ib-north", 2, START, reason="20 funded clients")
    configured = broker.record_configuration()  # the deployed schedule and payout policies
    current = broker.schedules.as_of("ib-standard", START)
    gold = attrs.evolve(
        current,
        version=current.version + 1,
        effective_from=START + timedelta(days=1),
        by_symbol={"XAUUSD": Rule(PlanKind.PER_LOT, Money.of("4.00", USD))},
    )
    broker.schedules.record(ADMIN, gold, reason="gold promotion")
    changes = broker.schedules.rate_history("ib-standard", "XAUUSD", "retail\\usd")
    return {
        "configuration recorded": configured,
        "ib-bo chain": network.chain("ib-bo", START),
        "ib-north rank": network.rank_of("ib-north", START),
        "gold rate changes": [
            f"v{r.event.schedule.version} by {r.metadata.actor} ({r.metadata.reason}): "
            f"{rule.plan if rule else 'none'}"
            for r, rule in changes
        ],
    }


def loyalty_setup(broker: Broker, email: str) -> dict[str, Any]:
    """An admin records the tier programme and the IB rank programme (data, with who and why);
    finance grants a welcome bonus as credit on the trading account, through the server."""
    broker.tiers.record_programme(ADMIN, _tiers(), reason="spring loyalty programme")
    assert broker.ib_ranks is not None
    broker.ib_ranks.record_programme(ADMIN, _ib_tiers(), reason="IB ranks from volume")
    ana = _client(broker, email)
    account = _account(broker, ana)
    granted = broker.bonus.grant(
        FINANCE, account.id, Money.of(100, USD), grant_id="welcome", reason="welcome bonus"
    )
    return {
        "tiers": [t.name for t in broker.tiers.programme_at(START).tiers],
        "tier now": broker.tiers.tier(ana, START),
        "bonus credit": str(granted.amount),
        "server credit": str(broker.trading_server.account_state(account.login).credit),
    }


def loyalty_after_trading(broker: Broker, email: str) -> dict[str, Any]:
    """After the sessions: the tier the deals gave, points earned (more in a higher tier), 100
    points redeemed as cashback to the wallet, 500 USD back to the wallet (the bonus burns pro
    rata once the day's job runs), and the RFM segment."""
    ana = _client(broker, email)
    now = broker.clock.now()
    me = Actor.client(ana)
    points = broker.points.balance(ana)
    redeemed = broker.points.redeem(me, ana, Decimal(100), request_id="spring-1")
    account = _account(broker, ana)
    broker.transfers.move(me, "move-back-1", account.id, Money.of(500, USD), to_trading=False)
    broker.end_of_day()  # the day has not ended yet: only the bonus burn is settled
    score = broker.segments.score(ana, now)
    return {
        "tier": broker.tiers.tier(ana, now),
        "points earned": str(points),
        "redeemed": f"100 points -> {redeemed.cashback}",
        "points left": str(broker.points.balance(ana)),
        "bonus credit": str(broker.bonus.account(account.id).credit),
        "server credit": str(broker.trading_server.account_state(account.login).credit),
        "rfm": f"{score.code} {score.segment.value}",
    }


def loyalty_later(broker: Broker, email: str) -> dict[str, Any]:
    """After the quiet months: the day's cashback was fixed at its close and paid the next
    trading day, points expired, a churn warning with its reasons, IB ranks, and March's KPIs."""
    ana = _client(broker, email)
    warning = broker.churn.warning(ana)
    assert broker.ib_ranks is not None
    march = broker.kpis().month(2026, 3)
    return {
        "cashback paid": str(broker.cashback.paid_total(ana)),
        "points left": str(broker.points.balance(ana)),
        "churn warning": None if warning is None else list(warning.reasons),
        "ib ranks": {
            ib: broker.ib_ranks.rank_of(ib, broker.clock.now()) for ib in ("ib-apex", "ib-north")
        },
        "march": {
            "active clients": march.active_clients,
            "tiers": dict(march.tiers[0].counts) if march.tiers else {},
            "points redemption rate": str(march.redemption_rate),
            "lifetime value": str(march.lifetime_value.average),
        },
    }


def trade(broker: Broker, deals: int) -> dict[str, Any]:
    """The server plays a trading session; the broker pulls its feed into the log."""
    simulated = broker.trading_server
    assert isinstance(simulated, SimulatedTradingServer)
    simulated.simulate_trading(deals)
    recorded = 0
    while pulled := broker.pull_deals(limit=1000):
        recorded += pulled
    feed = simulated.deal_feed(limit=100_000)
    return {
        "items": recorded,
        "changes": dict(Counter(item.change.value for item in feed)),
        "entries": dict(Counter(i.deal.entry.name for i in feed if i.deal.action.is_trade)),
    }


def pay_ibs(broker: Broker) -> list[dict[str, str | None]]:
    today = broker.calendar.trading_day(broker.clock.now())
    return [
        {
            "ib": r.ib_id,
            "paid": str(r.paid) if r.paid else None,
            "carried": str(r.carried.amount),
            "wallet": str(broker.ledger.balance(f"ib-wallet:{r.ib_id}:USD").net_credit),
        }
        for r in broker.payouts.run_all(PAYOUTS, today)
    ]


def stage_after(broker: Broker, email: str, days: int) -> str:
    """The broker's clock moves on ``days`` days with no trade and no deposit; its scheduled
    check closes the trading days that ended."""
    assert isinstance(broker.clock, FixedClock)
    broker.clock.advance(days=days)
    broker.end_of_day()
    stage = broker.repository.get(Client, _client(broker, email)).stage
    assert stage is not None
    return stage.value


def close(broker: Broker, email: str) -> str:
    """The client leaves: its rep closes the relationship (the erasure's clock starts here)."""
    client = broker.clients.move(REP, _client(broker, email), Stage.CLOSED)
    assert client.stage is not None
    return client.stage.value


def erase(broker: Broker, email: str) -> str:
    """The DPO erases: refused while the relationship, its money or its retention lasts."""
    try:
        broker.erasure.erase(DPO, _client(broker, email), reason="erasure request")
    except FxCrmError as refused:
        return f"refused: {refused}"
    return "erased"


def marketing_consent(broker: Broker, email: str) -> list[str]:
    """Consent given, then withdrawn: the marketing queued for the client is cancelled (the
    engagement-consent policy); what the relay sends later checks the consent again."""
    client_id = _client(broker, email)
    me = Actor.client(client_id)  # the client, in the portal's settings
    broker.clients.give_consent(me, client_id, Consent.MARKETING)
    broker.clients.withdraw_consent(me, client_id, Consent.MARKETING)
    return [m.queued.rule_id for m in _outbox(broker, client_id) if m.queued is not None]


def _outbox(broker: Broker, client_id: str | None = None) -> list[OutboxMessage]:
    """The outbox's messages (of one client), as they stand, in the order they were queued."""
    return [
        broker.repository.get(OutboxMessage, row.stream_id.removeprefix("outbox-"))
        for row in broker.store.read_all(after_position=0, limit=1_000_000)
        if row.event_type == "MessageQueued"
        and (client_id is None or row.stream_id.endswith(f":{client_id}"))
    ]


def service_desk(broker: Broker, email: str) -> dict[str, Any]:
    """The client complains about a slow withdrawal; support acknowledges and resolves it under
    the SLA clock; a CSAT survey answered; a sales note; compliance exports the client's record
    (masked, audited); the welcome as the client's Chinese-language portal renders it."""
    client_id = _client(broker, email)
    me, desk = Actor.client(client_id), Actor.staff("desk-1", Role.SUPPORT)
    complaint = broker.complaints.open(me, client_id, "payments", "My withdrawal took two days")
    broker.complaints.acknowledge(desk, complaint.id)
    resolved = broker.complaints.resolve(
        desk, complaint.id, ComplaintOutcome.UPHELD, "The fee is refunded; sorry for the wait."
    )
    survey = broker.surveys.send(desk, client_id, SurveyKind.CSAT, "complaint")
    broker.surveys.answer(me, survey.id, 5)
    broker.service_records.add_note(REP, client_id, "Prefers e-mail; call after 15:00.")
    export = broker.exports.export(DPO, [client_id], ["id", "name", "email"], "regulator request")
    welcome = broker.catalog.render("welcome", "zh_CN")
    return {
        "complaint": resolved.status.value,
        "resolve_by": str(resolved.resolve_by),
        "csat_answered": 5,
        "export": dict(export.rows[0]),
        "welcome (zh_CN)": welcome.subject,
    }


def send_messages(broker: Broker) -> dict[str, int]:
    """The host's relay job: hand what the rules queued to the notifier (consent checked when
    each is sent; quiet hours in the client's zone)."""
    report = broker.send_messages(limit=100)
    return {k: v for k, v in attrs.asdict(report).items() if v}


@attrs.frozen
class DayStep:
    """One command of the demo day: ``fn(broker, *args)``, reported under ``title``."""

    title: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()

    @property
    def ref(self) -> str:
        return f"{__name__}:{self.fn.__name__}"


ANA = ("Ana Lima", "Ana.Lima@example.com", "+971 50 123 4567", "AE")
BO = ("Bo Chen", "bo.chen@example.org", "07400 123456", "GB")
ANA_EMAIL = ANA[1]

DAY: tuple[DayStep, ...] = (
    DayStep("Ana signs up", sign_up, ANA),
    DayStep("Bo signs up", sign_up, BO),
    DayStep("Ana signs up again as A. Lima", sign_up_again, ("ana.lima+fx@EXAMPLE.com",)),
    DayStep("the welcome messages go out", send_messages),
    DayStep("Bo opts in to marketing, then out again", marketing_consent, (BO[1],)),
    DayStep(
        "KYC: passport (MRZ checked) and address",
        pass_kyc,
        (ANA_EMAIL, "passport", "proof_of_address"),
    ),
    DayStep("verified; appropriateness test", verify_and_profile, (ANA_EMAIL,)),
    DayStep("asks for a live account at 1:1000", open_account, (ANA_EMAIL, 1000)),
    DayStep("a live account at 1:100", open_account, (ANA_EMAIL, 100)),
    DayStep("1:400 needs a second person", raise_leverage, (ANA_EMAIL, 400)),
    DayStep("masked by role", masked_views, (ANA_EMAIL,)),
    DayStep(
        "deposit 5000.00 USD; the PSP calls back twice", deposit, (ANA_EMAIL, "5000", "acq-9001")
    ),
    DayStep("3000.00 USD to the trading account", to_trading, (ANA_EMAIL, "3000")),
    DayStep(
        "KYC level 3: selfie and source of funds",
        pass_kyc,
        (ANA_EMAIL, "selfie", "source_of_funds"),
    ),
    DayStep("withdraw 1000.00 USD", withdraw, (ANA_EMAIL, "1000")),
    DayStep(
        "service desk: a complaint resolved, a survey, a note, an export, a text in Chinese",
        service_desk,
        (ANA_EMAIL,),
    ),
    DayStep(
        "back office: a CNY rate and deposit, a wire, a transfer, account services",
        back_office,
        (ANA_EMAIL,),
    ),
    DayStep(
        "reconciliation, then a dealer's manual deposit",
        reconcile_after_manual_deposit,
        (ANA_EMAIL,),
    ),
    DayStep("IBs signed: ib-north under ib-apex", sign_ibs, (ANA_EMAIL,)),
    DayStep("an IB application approved, a rank, a new gold rate", ib_records, (BO[1],)),
    DayStep("loyalty: a tier programme, IB ranks and a welcome bonus", loyalty_setup, (ANA_EMAIL,)),
    DayStep("a trading session", trade, (150,)),
    DayStep("the afternoon session", trade, (150,)),
    DayStep("IB payouts through the ledger", pay_ibs),
    DayStep(
        "loyalty: tier, points redeemed, money back from trading",
        loyalty_after_trading,
        (ANA_EMAIL,),
    ),
    DayStep("Bo closes his relationship", close, (BO[1],)),
    DayStep("Bo's erasure request (the demo keeps no AML retention)", erase, (BO[1],)),
    DayStep("Ana's erasure request while still a client", erase, (ANA_EMAIL,)),
    DayStep("95 days without a trade or a deposit", stage_after, (ANA_EMAIL, 95)),
    DayStep("loyalty: cashback paid, a churn warning, IB ranks, KPIs", loyalty_later, (ANA_EMAIL,)),
    DayStep("messages: what the rules queued since", send_messages),
)


# -- what the day leaves behind: read from the log ------------------------------------------------
def figures(broker: Broker) -> dict[str, Any]:
    """The day's key figures, all answered from the log (a fresh broker gives the same)."""
    ana = _client(broker, ANA_EMAIL)
    entries = [
        e for event in RebateBook.recorded(broker.store, broker.codec) for e in event.entries
    ]
    statement = broker.statements.for_ib(  # names masked for the IB (Ana as "A. L.")
        Actor.ib("ib-apex"), "ib-apex", IB_START.date(), START.date() + timedelta(days=30),
        currency=USD,
    )  # fmt: skip
    client = broker.repository.get(Client, ana)
    return {
        "wallet": str(broker.ledger.balance(f"wallet:{ana}:USD").net_credit),
        "stage": client.stage.value if client.stage else None,
        "introducer": client.introducer_id,
        "kyc_level": broker.kyc.level(ana),
        "recorded_level": broker.kyc.recorded_level(ana),
        "rebate_entries": len(entries),
        "rebate_kinds": dict(Counter(e.kind.value for e in entries)),
        "statement_total": str(statement.total.amount),
        "statement_lines": len(statement.lines),
        "ib_wallets": {
            ib: str(broker.ledger.balance(f"ib-wallet:{ib}:USD").net_credit)
            for ib in ("ib-apex", "ib-north")
        },
        "policy_lag": broker.policies.lag(),
        "events": broker.store.last_position(),
        **_loyalty_figures(broker, ana),
        "messages": _message_figures(broker),
    }


def _loyalty_figures(broker: Broker, ana: str) -> dict[str, Any]:
    account = _account(broker, ana)
    fixed = list(broker.cashback.account(ana).fixed.values())
    assert broker.ib_ranks is not None
    return {
        "tier_history": [
            f"{r.event.to_tier} ({r.event.rule})"
            for r in broker.tiers.history(ana)
            if isinstance(r.event, TierChanged)
        ],
        "points": str(broker.points.balance(ana)),
        "cashback_fixed": [(str(f.trading_day), str(f.payable), f.rates) for f in fixed],
        "cashback_paid": str(broker.cashback.paid_total(ana)),
        "bonus_credit": str(broker.bonus.account(account.id).credit),
        "ib_rank_history": [
            (str(r.event.effective_at), r.event.rank)
            for r in broker.ib_network.rank_history("ib-north")
        ],
    }


def _message_figures(broker: Broker) -> dict[str, str]:
    """Each outbox message's status, by key template (rule:period), from the log."""
    out: dict[str, str] = {}
    for message in _outbox(broker):
        rule, period, _ = message.id.split(":", 2)
        out[f"{rule}:{period}"] = message.status.value
    return dict(sorted(out.items()))


def _say(title: str, result: Any) -> str:
    rows = isinstance(result, list) and result and isinstance(result[0], dict)
    long_text = isinstance(result, list) and any(isinstance(r, str) and len(r) > 40 for r in result)
    if rows or long_text:
        return "\n".join([f"  {title}:"] + [f"    {row}" for row in result])
    return f"  {title}: {result}"


def _kernel_tour(broker: Broker, out: Callable[[str], None]) -> None:
    out("\n== Money and the trading day (kernel, no state)")
    fee = Money.of("100.00", "USD")
    shares = fee.allocate([Decimal(20), Decimal(5), Decimal(2)])
    total = sum(shares, Money.zero(fee.currency))
    out(f"  {fee} shared 20:5:2 -> {', '.join(map(str, shares))} (sum {total})")
    for locale in ("en_US", "zh_CN"):
        out(
            f"  {locale}: {Money.of('1234567.891', 'KWD').format(locale)}, "
            f"{Money.of('1234567', 'JPY').format(locale)}"
        )
    now = broker.clock.now()
    rates = RateTable([ExchangeRate.of("EUR", "USD", "1.0842", "lp-feed", now)])
    conversion = rates.rate(Currency.of("EUR"), USD, now).convert(Money.of("250.00", "EUR"))
    out(
        f"  250.00 EUR at {conversion.rate.rate} ({conversion.rate.source}) = "
        f"{conversion.result.amount} USD unrounded -> {conversion.round(Rounding.HALF_EVEN)}"
    )
    for instant in (
        datetime(2026, 3, 6, 21, 59, tzinfo=UTC),
        datetime(2026, 3, 6, 22, 0, tzinfo=UTC),
        datetime(2026, 3, 9, 21, 0, tzinfo=UTC),
    ):
        state = "open" if broker.calendar.is_open(instant) else "closed"
        out(
            f"  {instant:%a %Y-%m-%d %H:%M}Z -> trading day "
            f"{broker.calendar.trading_day(instant)} ({state})"
        )
    sample = resources.files("fxcrm_core.trading").joinpath("samples/mt5_deals_sample.csv")
    imported = read_mt5_deals(
        sample.read_text(encoding="utf-8"),
        server="mt5-live",
        currency="USD",
        utc_offset=timedelta(hours=2),
    )
    out(
        f"  an MT5 deals export: {len(imported.deals)} deals read, "
        f"{len(imported.problems)} problems"
    )


class DemoFileError(FxCrmError, FileExistsError):
    """The demo would delete a file it did not create (a host's database or key file, say)."""

    default_message = "the demo does not delete files it did not create"


# Written beside the demo's database before the database is made: only files with this marker
# beside them are the demo's to delete and recreate.
_DEMO_MARKER = "fxcrm_core demo: `fxcrm demo` deletes and recreates the database beside this file\n"


def _demo_files(db_path: Path) -> list[Path]:
    """Every file a demo run makes on ``db_path`` (its marker aside)."""
    bases = (str(db_path), f"{db_path}.keys", f"{db_path}.server.json")
    return [Path(f"{base}{suffix}") for base in bases for suffix in ("", "-wal", "-shm", ".lock")]


def _marked_as_demo(marker: Path) -> bool:
    try:
        with marker.open("rb") as f:
            return f.read(len(_DEMO_MARKER) + 1) == _DEMO_MARKER.encode()
    except OSError:
        return False


def _clear_demo_files(db_path: Path, *, force: bool) -> None:
    """Delete a previous demo run's files, refusing (with nothing deleted) any the demo did not
    make unless ``force``; then mark ``db_path`` as the demo's."""
    files, marker = _demo_files(db_path), Path(f"{db_path}.demo")
    for path in (*files, marker):
        if path.is_dir() and not path.is_symlink():
            raise DemoFileError(f"{path} is not a file; nothing was deleted")
    found = [path for path in files if path.is_symlink() or path.exists()]
    if found and not force and not _marked_as_demo(marker):
        raise DemoFileError(
            f"{found[0]} exists and was not created by the demo; nothing was deleted "
            "(give another --db, or --force to replace it)"
        )
    for path in found:
        path.unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(_DEMO_MARKER, encoding="utf-8")


def _clear_demo_postgres(dsn: str, *, force: bool) -> None:
    """Drop a previous demo run's tables (refusing, with nothing dropped, a database whose
    fxcrm tables hold rows the demo did not write, unless ``force``), migrate, and mark it as
    the demo's."""
    import psycopg
    from psycopg import sql

    from fxcrm_core.stores.postgres import migrate

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            tables = [
                str(row[0])
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename LIKE 'fx\\_%'"
                )
            ]
            holds = any(
                conn.execute(
                    sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
                ).fetchone()
                == (True,)
                for table in tables
                if table != "fx_schema"
            )  # (a database just migrated holds nothing to lose)
            if holds and "fx_demo" not in tables and not force:
                raise DemoFileError(
                    "the database at --db holds fxcrm tables the demo did not create; nothing "
                    "was dropped (give another --db, or --force to replace them)"
                )
            with conn.transaction():
                for table in tables:
                    conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(table)))
                conn.execute("DROP FUNCTION IF EXISTS fx_append_one")  # (the schema's own)
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE TABLE fx_demo (note text)")
    except psycopg.Error as exc:
        raise StoreError(f"cannot prepare the demo database ({type(exc).__name__})") from None
    Path(f"{_PG_FILES}.server.json").unlink(missing_ok=True)  # the simulated server's state
    _PG_FILES.parent.mkdir(parents=True, exist_ok=True)


def _shown(db: str | Path) -> str:
    """``db`` as the report names it: a PostgreSQL URL without its password."""
    if not is_postgres(db):
        return str(db)
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(str(db))
    except Exception:  # a URL psycopg cannot read is shown by its scheme alone
        return "postgresql://..."
    host, name = parts.get("host", ""), parts.get("dbname", "")
    return f"postgresql://{parts.get('user', '')}@{host}/{name}"


def run_demo(
    db_path: Path | str,
    out: Callable[[str], None] = print,
    *,
    steps: Sequence[DayStep] = DAY,
    force: bool = False,
) -> dict[str, Any]:
    """Play the day on a fresh SQLite file (or PostgreSQL database: a ``postgresql://`` URL),
    print a report; returns the key figures.

    Files left by an earlier demo run on ``db_path`` are recreated; any other file there (a
    host's database, its key file) is refused with :class:`DemoFileError` unless ``force``."""
    if is_postgres(db_path):
        _clear_demo_postgres(str(db_path), force=force)
    else:
        _clear_demo_files(Path(db_path), force=force)
    broker = open_demo_broker(db_path)
    out(f"fxcrm_core demo: a broker day on {_shown(db_path)}")
    _kernel_tour(broker, out)
    out("\n== The day, step by step (each a command; the broker's policies follow it)")
    for step in steps:
        out(_say(step.title, step.fn(broker, *step.args)))
    live = figures(broker)
    live_now = broker.clock.now()
    audited = broker.audit.catch_up(broker.store, broker.codec)
    finding = broker.audit.verify(broker.store)
    head = broker.audit.head().export()
    types = Counter(stored.event_type for stored in iter_all(broker.store))
    broker.close()

    out("\n== What the log holds")
    out(f"  {live['events']} events: " + ", ".join(f"{k} x{v}" for k, v in sorted(types.items())))
    out(f"  audit trail: {audited} records, chain {'intact' if finding is None else finding}")
    out(f"  its signed head, for the daily report: {head[:72]}...")
    for key in ("wallet", "stage", "introducer", "kyc_level", "recorded_level"):
        out(f"  Ana's {key.replace('_', ' ')}: {live[key]}")
    out(f"  rebate entries: {live['rebate_entries']} {live['rebate_kinds']}")
    out(
        f"  ib-apex statement: {live['statement_lines']} lines, total "
        f"{live['statement_total']} USD; IB wallets {live['ib_wallets']}"
    )
    out(f"  policies still to run: {sum(live['policy_lag'].values())}")

    out("\n== A new process opens the log")
    reopened = open_demo_broker(db_path)
    assert isinstance(reopened.clock, FixedClock)
    reopened.clock.set(live_now)  # the same moment: KYC expiry counts by date
    again = figures(reopened)
    reopened.close()
    same = again == live
    out(f"  every figure above, answered again from the log alone: {'equal' if same else again}")
    if not same:
        raise RuntimeError("a new process disagrees with the live broker")
    return live


DEFAULT_DB = Path(".demo") / "broker.sqlite"
