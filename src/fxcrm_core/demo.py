"""The demo scenario behind ``make demo``: a small broker day on the embedded SQLite store.

It grows with the SDK: each bounded context adds its part of the day here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Self

import attrs

from fxcrm_core.access import Actor, ApprovalRule, Role, SelfApprovalError
from fxcrm_core.accounts import GroupRule, LeverageAboveCapError, LeverageCaps, TradingAccount
from fxcrm_core.broker import Broker, BrokerOptions
from fxcrm_core.clients import Client, ClientKind, DuplicateClientError, Registration, Stage
from fxcrm_core.commissions import (
    Cadence,
    CapPeriod,
    FixedShares,
    IbTree,
    PayoutPolicy,
    Payouts,
    PeriodCap,
    PlanKind,
    RebateBook,
    RebateEngine,
    Rule,
    Schedule,
    ScheduleBook,
    build_statement,
)
from fxcrm_core.events import Aggregate, DomainEvent, RecordedEvent, iter_all
from fxcrm_core.kernel import (
    ConcurrencyError,
    Currency,
    ExchangeRate,
    FixedClock,
    Money,
    NegativeAmountError,
    RateTable,
    RetentionHoldError,
    Rounding,
    ValidationError,
)
from fxcrm_core.payments import FeePolicy, InstrumentKind, PaymentLimits, reconcile
from fxcrm_core.privacy import MasterKeyring, PiiKind
from fxcrm_core.trading import BalanceOperation, SimulatedTradingServer, read_mt5_deals

__all__ = ["run_demo"]


# A cash desk stands in for the ledger until the ledger context lands: an aggregate with a
# balance that commands change only by recording events.
@attrs.frozen
class DeskOpened(DomainEvent):
    currency: Currency


@attrs.frozen
class CashReceived(DomainEvent):
    amount: Money
    psp_reference: str


@attrs.frozen
class CashPaid(DomainEvent):
    amount: Money


@attrs.frozen(kw_only=True)
class CashDesk(Aggregate):
    category = "desk"
    balance: Money | None = None
    received: int = 0

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case DeskOpened(currency=currency):
                return self.evolve(balance=Money.zero(currency))
            case CashReceived(amount=amount):
                return self.evolve(balance=self.cash + amount, received=self.received + 1)
            case CashPaid(amount=amount):
                return self.evolve(balance=self.cash - amount)
        raise ValidationError(f"CashDesk cannot apply {type(event).__name__}")

    @property
    def cash(self) -> Money:
        if self.balance is None:
            raise ValidationError("desk is not open")
        return self.balance

    def receive(self, amount: Money, psp_reference: str) -> list[DomainEvent]:
        return [CashReceived(amount.require_positive(), psp_reference)]

    def pay(self, amount: Money) -> list[DomainEvent]:
        if amount.require_positive() > self.cash:
            raise NegativeAmountError("the desk does not hold that much")
        return [CashPaid(amount)]


DEMO_EVENTS = (DeskOpened, CashReceived, CashPaid)
DEMO_IDENTITY_KEY = b"demo-only deduplication key, 32+ bytes"  # a host keeps it in its KMS
DEMO_GROUPS = {
    "demo\\usd": GroupRule("demo\\usd", "USD", 1000, live=False),
    "retail\\usd": GroupRule("retail\\usd", "USD", 500, live=True),
}
DEMO_MRZ = (
    "P<ARELIMA<<ANA<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<\nA123456784ARE8803171F3107302<<<<<<<<<<<<<<<6"
)


class _Takings:
    """A read model: cash received per trading day."""

    name = "takings"
    event_types: frozenset[str] | None = frozenset({"CashReceived"})

    def __init__(self, day_of: Callable[[datetime], object]) -> None:
        self.day_of = day_of
        self.by_day: dict[object, Money] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        assert isinstance(event, CashReceived)
        day = self.day_of(recorded.recorded_at)
        self.by_day[day] = self.by_day.get(day, Money.zero(event.amount.currency)) + event.amount

    def reset(self) -> None:
        self.by_day.clear()


def run_demo(db_path: Path, out: Callable[[str], None] = print) -> dict[str, object]:
    """Run the scenario on a fresh SQLite file and print a report; returns the key figures."""
    for base in (str(db_path), f"{db_path}.keys"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # Friday 6 March 2026, 20:30 UTC: New York is still on winter time (rolls at 22:00 UTC);
    # daylight time starts on Sunday, so Monday's roll is at 21:00 UTC.
    clock = FixedClock(datetime(2026, 3, 6, 20, 30, tzinfo=UTC))
    keyring = MasterKeyring.generate("demo-master")  # a host loads its master keys from a KMS
    server = SimulatedTradingServer("sim-mt5", seed=7, clock=clock)
    options: BrokerOptions = {
        "events": DEMO_EVENTS,
        "keyring": keyring,
        "identity_key": DEMO_IDENTITY_KEY,
        "trading_server": server,
        "groups": DEMO_GROUPS,
        "caps": LeverageCaps(approval_above=200),
        "payment_limits": PaymentLimits([Money.of("50000", "USD")]),
        "daily_withdrawal_limits": {"USD": Money.of("20000", "USD")},
        "withdrawal_fees": FeePolicy({"USD": Money.of("2", "USD")}, Decimal("0.005")),
    }
    broker = Broker.sqlite(db_path, clock=clock, **options)
    out(f"fxcrm_core demo: a broker day on {db_path}")

    out("\n== Money")
    fee = Money.of("100.00", "USD")
    shares = fee.allocate([Decimal(20), Decimal(5), Decimal(2)])
    total = sum(shares, Money.zero(fee.currency))
    out(f"  {fee} shared 20:5:2 -> {', '.join(map(str, shares))} (sum {total})")
    for locale in ("en_US", "zh_CN"):
        out(
            f"  {locale}: {Money.of('1234567.891', 'KWD').format(locale)}, "
            f"{Money.of('1234567', 'JPY').format(locale)}"
        )
    rates = RateTable([ExchangeRate.of("EUR", "USD", "1.0842", "lp-feed", clock.now())])
    conversion = rates.rate(Currency.of("EUR"), Currency.of("USD"), clock.now()).convert(
        Money.of("250.00", "EUR")
    )
    out(
        f"  250.00 EUR at {conversion.rate.rate} ({conversion.rate.source}, "
        f"{conversion.rate.as_of:%Y-%m-%d %H:%M}Z) = {conversion.result.amount} USD unrounded "
        f"-> {conversion.round(Rounding.HALF_EVEN)}"
    )

    out("\n== Trading days (roll at 17:00 New York)")
    for instant in (
        datetime(2026, 3, 6, 21, 59, tzinfo=UTC),
        datetime(2026, 3, 6, 22, 0, tzinfo=UTC),
        datetime(2026, 3, 8, 21, 0, tzinfo=UTC),
        datetime(2026, 3, 9, 21, 0, tzinfo=UTC),
    ):
        state = "open" if broker.calendar.is_open(instant) else "closed"
        out(
            f"  {instant:%a %Y-%m-%d %H:%M}Z -> trading day "
            f"{broker.calendar.trading_day(instant)} ({state})"
        )

    out("\n== A client's journey: sign-up, KYC, a live account")
    assert broker.clients is not None
    assert broker.accounts is not None
    portal = Actor.system("portal", Role.PORTAL)
    rep = Actor.staff("rep-1", Role.SALES)
    ana = broker.clients.register(
        portal,
        Registration(
            ClientKind.INDIVIDUAL,
            "AE",
            "Ana Lima",
            "Ana.Lima@example.com",
            "+971 50 123 4567",
            owner_id=rep.id,
        ),
    )
    bo = broker.clients.register(
        portal,
        Registration(
            ClientKind.INDIVIDUAL,
            "GB",
            "Bo Chen",
            "bo.chen@example.org",
            "07400 123456",
            owner_id=rep.id,
        ),
    )
    try:
        broker.clients.register(
            portal, Registration(ClientKind.INDIVIDUAL, "AE", "A. Lima", "ana.lima+fx@EXAMPLE.com")
        )
    except DuplicateClientError as duplicate:
        out(f"  the same person signing up again: refused, same {', '.join(duplicate.matched_on)}")
    raw = broker.store.read_stream(f"client-{ana}")[0].data
    out(f"  stored sign-up: {raw[:58].decode()}... (name in clear: {b'Ana' in raw})")
    me = Actor.client(ana)
    officer = Actor.staff("kyc-1", Role.COMPLIANCE)
    passport = broker.kyc.submit(me, ana, "passport", "files/passport.jpg", mrz=DEMO_MRZ)
    address = broker.kyc.submit(me, ana, "proof_of_address", "files/utility-bill.pdf")
    for document in (passport, address):
        broker.kyc.approve(officer, document)
    broker.clients.move(rep, ana, Stage.VERIFIED)
    profile = broker.clients.assess_risk(me, ana, {"experience": 5, "knowledge": 4}).risk_profile
    assert profile is not None
    out(f"  passport MRZ checked; KYC level {broker.kyc.level(ana)}; risk profile {profile.value}")
    try:
        broker.accounts.open(me, ana, "retail\\usd", 1000)
    except LeverageAboveCapError as capped:
        out(f"  asking 1:1000: {capped}")
    account_id = broker.accounts.open(me, ana, "retail\\usd", 100)
    account = broker.repository.get(TradingAccount, account_id)
    out(f"  live account {account.login} on {account.server} at 1:{account.leverage}")
    raise_to = broker.accounts.request_leverage(me, account_id, 400)
    assert raise_to.request_id is not None
    broker.approvals.approve(Actor.staff("risk-1", Role.COMPLIANCE), raise_to.request_id)
    out(
        f"  1:400 needed a second person: approved, server now at "
        f"1:{server.account_state(account.login).leverage}"
    )
    ana_client = broker.repository.get(Client, ana)
    assert ana_client.name is not None
    assert ana_client.email is not None
    for role in ("compliance", "support", "ib"):
        shown = broker.masking.show({role}, PiiKind.NAME, ana_client.name)
        mail = broker.masking.show({role}, PiiKind.EMAIL, ana_client.email)
        out(f"  {role:<10} sees {shown!r:<12} {mail!r}")

    out("\n== Money: a deposit, the trading account, a withdrawal, reconciliation")
    deposit = broker.deposits.initiate(
        me, ana, Money.of("5000", "USD"), psp="acquirer", method="card"
    )
    callbacks = [
        broker.deposits.psp_confirmed(deposit, "acq-9001", Money.of("5000", "USD")).value
        for _ in range(2)
    ]
    out(f"  deposit 5000.00 USD; the PSP's callback arrives twice: {callbacks}")
    assert broker.transfers is not None
    moved = broker.transfers.move(
        me, "move-1", account_id, Money.of("3000", "USD"), to_trading=True
    )
    out(f"  3000.00 USD to trading account {account.login}: server deal #{moved.deal_ticket}")
    for kind in ("selfie", "source_of_funds"):
        broker.kyc.approve(officer, broker.kyc.submit(me, ana, kind, f"files/{kind}"))
    finance = Actor.staff("fin-1", Role.FINANCE)
    iban = broker.withdrawals.add_instrument(
        me, ana, InstrumentKind.IBAN, "AE07 0331 2345 6789 0123 456"
    )
    masked = broker.withdrawals.verify_instrument(finance, iban).masked
    withdrawal = broker.withdrawals.request(me, ana, iban, Money.of("1000", "USD"))
    approval = broker.withdrawals.get(withdrawal).approval_id
    assert approval is not None
    broker.approvals.approve(finance, approval)
    broker.withdrawals.paid(withdrawal, "payout-5521")
    wallet = broker.ledger.balance(f"wallet:{ana}:USD")
    out(
        f"  1000.00 USD withdrawn to {masked} after a second person's approval "
        f"(fee {broker.withdrawals.get(withdrawal).fee}); wallet now {wallet.net_credit}"
    )
    clean = reconcile(broker.store, broker.codec, server, [account.login])
    server.balance_operation(
        account.login,
        BalanceOperation.DEPOSIT,
        Money.of("50", "USD"),
        comment="dealer, by hand",
        idempotency_key="manual-1",
    )
    found = reconcile(broker.store, broker.codec, server, [account.login])
    out(
        f"  reconciliation: {len(clean)} differences; after a dealer's manual deposit: "
        + ", ".join(f.kind.value for f in found)
    )

    out("\n== The trading server")
    server.simulate_trading(300)
    feed = server.deal_feed(limit=100_000)
    changes = Counter(item.change.value for item in feed)
    entries = Counter(i.deal.entry.name for i in feed if i.deal.action.is_trade)
    out(f"  {len(feed)} feed items by cursor: {dict(changes)}; trade entries {dict(entries)}")
    out(f"  balance after the session: {server.account_state(account.login).balance}")
    sample = resources.files("fxcrm_core.trading").joinpath("samples/mt5_deals_sample.csv")
    imported = read_mt5_deals(
        sample.read_text(encoding="utf-8"),
        server="mt5-live",
        currency="USD",
        utc_offset=timedelta(hours=2),
    )
    out(
        f"  MT5 export imported: {len(imported.deals)} deals, "
        f"{len({d.action for d in imported.deals})} action kinds, "
        f"{len(imported.problems)} problems"
    )

    _commissions(broker, server, account.login, ana, out)

    out("\n== Event log on SQLite")
    with broker.unit_of_work("staff:cashier-1", reason="open the desk") as uow:
        desk = CashDesk.blank("main")
        desk = uow.record(desk, DeskOpened(Currency.of("USD")))
        uow.commit()
    deposits = [("psp-1001", "500.00"), ("psp-1002", "1250.50"), ("psp-1001", "500.00")]
    replayed = 0
    for reference, amount in deposits:  # psp-1001 arrives twice: a PSP retry
        clock.advance(minutes=45)
        current = broker.repository.get(CashDesk, "main")
        with broker.unit_of_work("psp:callback", reason="deposit confirmed") as uow:
            uow.record(current, *current.receive(Money.of(amount, "USD"), reference))
            result = uow.commit(idempotency_key=reference)
        replayed += result.replayed
    out(f"  {len(deposits)} PSP callbacks, {replayed} recognised as a retry and not re-posted")
    stale = broker.repository.get(CashDesk, "main")

    def enough_cash(params: Mapping[str, str]) -> None:
        desk_now = broker.repository.get(CashDesk, "main")
        desk_now.pay(Money.parse(params["amount"]))  # raises if the desk cannot pay

    def pay_out(params: Mapping[str, str], key: str) -> str:
        desk_now = broker.repository.get(CashDesk, "main")
        with broker.unit_of_work("system:payouts", reason="approved payout") as uow:
            uow.record(desk_now, *desk_now.pay(Money.parse(params["amount"])))
            return str(uow.commit(idempotency_key=key).last_position)

    broker.approvals.register("payout", ApprovalRule(execute=pay_out, check=enough_cash))
    maker, checker = Actor.staff("cashier-2", Role.FINANCE), Actor.staff("head", Role.FINANCE)
    request = broker.approvals.request(maker, "payout", "desk-main", {"amount": "300.00 USD"})
    try:
        broker.approvals.approve(maker, request)
    except SelfApprovalError:
        out("  payout 300.00 USD: the maker's own approval is refused")
    decision = broker.approvals.approve(checker, request)
    again = broker.approvals.approve(checker, request)
    out(
        f"  approved by a second person: {decision.status.value}; "
        f"approving again changes nothing: {not again.changed}"
    )
    conflict = "none"
    try:
        with broker.unit_of_work("staff:cashier-3", reason="payout") as uow:
            uow.record(stale, *stale.pay(Money.of("1400", "USD")))
            uow.commit()
    except ConcurrencyError:
        conflict = "refused (stale version), nothing written"
    out(f"  a second payout from a stale read: {conflict}")
    clock.set(datetime(2026, 3, 9, 21, 30, tzinfo=UTC))  # Monday after the roll: Tuesday's day
    live = broker.repository.get(CashDesk, "main")
    with broker.unit_of_work("psp:callback", reason="deposit confirmed") as uow:
        live = uow.record(live, *live.receive(Money.of("75.25", "USD"), "psp-1003"))
        uow.commit(idempotency_key="psp-1003")
    broker.repository.snapshot(live)

    out("\n== Erasure (crypto-shredding) and the audit trail")
    assert broker.erasure is not None
    dpo = Actor.staff("dpo", Role.COMPLIANCE)
    try:
        broker.erasure.erase(dpo, ana, relationship_ended_at=None, reason="erasure request")
    except RetentionHoldError as hold:
        out(f"  Ana, still a client: {hold}")
    broker.erasure.erase(
        dpo, bo, relationship_ended_at=datetime(2020, 2, 1, tzinfo=UTC), reason="erasure request"
    )
    erased = broker.repository.get(Client, bo)
    out(
        f"  Bo after erasure: name {erased.name}, e-mail {erased.email}, country {erased.country}; "
        f"Ana still {broker.repository.get(Client, ana).name}"
    )
    added = broker.audit.catch_up(broker.store, broker.codec)
    finding = broker.audit.verify()
    out(f"  audit trail: {added} records, chain {'intact' if finding is None else finding}")
    broker.close()

    out("\n== Replay from the file in a new process-like session")
    reopened = Broker.sqlite(db_path, clock=clock, **options)
    replayed_desk = reopened.repository.get(CashDesk, "main")
    out(
        f"  live balance {live.cash}, replayed {replayed_desk.cash}, equal: {replayed_desk == live}"
    )
    types: dict[str, int] = {}
    for stored in iter_all(reopened.store):
        types[stored.event_type] = types.get(stored.event_type, 0) + 1
    out(
        f"  {reopened.store.last_position()} events: "
        + ", ".join(f"{k} x{v}" for k, v in sorted(types.items()))
    )
    takings = _Takings(reopened.calendar.trading_day)
    reopened.projections.rebuild(takings)
    for day, total in sorted(takings.by_day.items(), key=lambda kv: str(kv[0])):
        out(f"  takings for trading day {day}: {total}")
    reopened.close()
    if replayed_desk != live:
        raise RuntimeError("replay disagrees with the live state")
    return {
        "balance": live.cash,
        "events": sum(types.values()),
        "retries_recognised": replayed,
        "takings": dict(takings.by_day),
    }


def _commissions(
    broker: Broker,
    server: SimulatedTradingServer,
    login: int,
    client: str,
    out: Callable[[str], None],
) -> None:
    """IB rebates on the session just played: a two-level tree, a schedule with a symbol
    rule, a CPA and a monthly cap, the rebate book in the event log, payouts, a statement."""
    out("\n== IB commissions")
    start = broker.clock.now() - timedelta(days=30)
    tree = IbTree()
    tree.add_ib("ib-apex", None, start)
    tree.add_ib("ib-north", "ib-apex", start)
    tree.attribute(client, "ib-north", start)
    usd = Currency.of("USD")
    schedules = ScheduleBook()
    schedules.add(
        Schedule(
            "ib-standard", 1, start, usd,
            by_symbol={"XAUUSD": Rule(PlanKind.PER_LOT, Money.of("3.50", usd))},
            default=Rule(PlanKind.PER_LOT, Money.of("2.00", usd)),
            cpa=Rule(PlanKind.CPA, Money.of(150, usd), min_deposit=Money.of(1000, usd),
                     min_lots=Decimal(1)),
            period_cap=PeriodCap(Money.of(2000, usd), CapPeriod.MONTH),
        )
    )  # fmt: skip
    engine = RebateEngine(
        tree,
        schedules,
        FixedShares((Decimal("0.7"), Decimal("0.3"))),
        client_of=lambda server_name, account_login: client if account_login == login else None,
        account_group_of=lambda server_name, account_login: "retail",
        trading_day_of=lambda deal: broker.calendar.trading_day(deal.time),
    )
    book = RebateBook(broker.repository, engine)
    feed = server.deal_feed(limit=100_000)
    entries = []
    for start_at in range(0, len(feed), 100):
        entries += book.process(server.name, feed[start_at : start_at + 100])
    kinds = Counter(e.kind.value for e in entries)
    by_component = Counter(e.component.split(":")[0] for e in entries)
    out(f"  {len(entries)} rebate entries {dict(kinds)}, by component {dict(by_component)}")
    assert book.process(server.name, feed) == []  # the stored cursor: nothing twice
    sample = next(e for e in entries if e.component == "rebate")
    out(f"  e.g. {sample.ib_id}: {sample.amount.amount} USD — {sample.explanation}")
    policy = PayoutPolicy(usd, Money.of(10, usd), Cadence.INSTANT)
    payouts = Payouts(broker.ledger, RateTable(), {"ib-apex": policy, "ib-north": policy})
    payouts.accrue(entries)
    today = broker.calendar.trading_day(broker.clock.now())
    for result in payouts.run_all(Actor.system("payouts", Role.FINANCE), today):
        wallet = broker.ledger.balance(f"ib-wallet:{result.ib_id}:USD").net_credit
        out(f"  {result.ib_id} paid {result.paid}, remainder carried {result.carried.amount}; "
            f"wallet {wallet}")  # fmt: skip
    statement = build_statement(
        entries, "ib-apex", today - timedelta(days=31), today, currency=usd, rates=RateTable(),
        client_names={client: "Ana Lima"},
    )  # fmt: skip
    shown = sorted({line.client for line in statement.lines if line.client})
    out(f"  ib-apex statement: {len(statement.lines)} lines, total {statement.total.amount} "
        f"USD; clients shown as {shown} (the sub-IB's client, masked)")  # fmt: skip


DEFAULT_DB = Path(".demo") / "broker.sqlite"
