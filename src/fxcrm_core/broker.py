"""The composition root: the one object a host builds, wiring stores, codec, clock, services and
the policies that make the contexts one system.

``EVENT_HANDLERS`` below is the whole system's wiring at a glance: which upstream event feeds
which handler. Each row is a policy whose output and position are committed together (exactly
once); they run inline after every command (the default) or in a worker the host runs
(``Broker(..., policies="worker")`` and ``broker.follow(stop)``).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar, Unpack

from fxcrm_core import access as access_context
from fxcrm_core import accounts as accounts_context
from fxcrm_core import clients as clients_context
from fxcrm_core import commissions as commissions_context
from fxcrm_core import engagement as engagement_context
from fxcrm_core import events as events_core
from fxcrm_core import fx as fx_context
from fxcrm_core import kyc as kyc_context
from fxcrm_core import ledger as ledger_context
from fxcrm_core import loyalty as loyalty_context
from fxcrm_core import payments as payments_context
from fxcrm_core import privacy as privacy_context
from fxcrm_core import reactions
from fxcrm_core import trading as trading_context
from fxcrm_core.access import (
    DEFAULT_POLICY,
    AccessControl,
    AccessPolicy,
    Actor,
    Approvals,
    AuditLog,
    AuditTrail,
    MemoryAuditLog,
)
from fxcrm_core.accounts import (
    MT5_PASSWORD_RULES,
    AccountChange,
    AccountChanges,
    Accounts,
    GroupRule,
    LeverageCaps,
    PasswordRules,
)
from fxcrm_core.activity import (
    SOURCE_MEASURES,
    ClientActivity,
    FundFlows,
    InstrumentSpec,
    PinnedActivity,
    fx_instrument,
)
from fxcrm_core.clients import (
    Client,
    Clients,
    DedupPolicy,
    IdentityKeys,
    Stage,
    StageChanged,
)
from fxcrm_core.clients.model import ConsentWithdrawn
from fxcrm_core.commissions import (
    PAYOUT_ACTION,
    PAYOUT_POLICY,
    ClientAttributed,
    Distribution,
    FixedShares,
    IbApplications,
    IbNetworkService,
    PayoutPolicy,
    Payouts,
    RebateBook,
    RebateEngine,
    RebateEntriesRecorded,
    Schedule,
    ScheduleBook,
    ScheduleService,
    Statements,
)
from fxcrm_core.commissions.payouts import accrue as accrue_payouts
from fxcrm_core.engagement import (
    ENGAGEMENT_POLICY,
    ENGAGEMENT_UPSTREAM,
    AnnouncementsService,
    Backoff,
    BusinessCalendar,
    ClientAudience,
    ClientExports,
    ComplaintPolicy,
    Complaints,
    Courtesy,
    EngagementRule,
    EngagementRules,
    HolidayData,
    MemoryNotifier,
    Notifier,
    OnEvent,
    Outbox,
    OutboxRelay,
    RelayReport,
    ServiceRecords,
    SurveyKind,
    SurveyOnSend,
    Surveys,
    UnsubscribeLinks,
)
from fxcrm_core.erasure_checks import BrokerErasureChecks
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    Handler,
    Leases,
    PayloadCipher,
    Policy,
    PolicyAdvanced,
    PolicyError,
    PolicyRunner,
    PolicyTracker,
    PolicyWaitingError,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    SnapshotStore,
    UnitOfWork,
)
from fxcrm_core.events.store import TypeCursor
from fxcrm_core.fx import BrokerRates, FxBook
from fxcrm_core.i18n import Catalog
from fxcrm_core.kernel import (
    AccessDeniedError,
    Clock,
    CodecError,
    ConcurrencyError,
    FxCrmError,
    IdGenerator,
    Money,
    NotFoundError,
    RateSource,
    RateTable,
    SystemClock,
    TradingCalendar,
    ValidationError,
)
from fxcrm_core.kyc import (
    DEFAULT_LEVELS,
    DocumentApproved,
    DocumentExpired,
    DocumentRejected,
    DocumentReRequested,
    KycService,
    LevelPolicy,
    check_national_id,
)
from fxcrm_core.ledger import Ledger, PendingHolds
from fxcrm_core.loyalty import (
    BONUS_POLICY,
    BONUS_UPSTREAM,
    CASHBACK_POLICY,
    IB_RANKS_POLICY,
    POINTS_POLICY,
    POINTS_UPSTREAM,
    Benefits,
    Bonus,
    BonusBurnt,
    Cashback,
    CashbackPaid,
    CashbackPlan,
    ChurnModel,
    ChurnWatch,
    IbRanks,
    LoyaltyKpis,
    Points,
    PointsRules,
    RfmModel,
    Segmentation,
    Tiers,
)
from fxcrm_core.loyalty import Measure as TierMeasure
from fxcrm_core.payments import (
    BankWires,
    ClientTransfers,
    Deposit,
    DepositCredited,
    Deposits,
    FeePolicy,
    PaymentLimits,
    TradingTransfers,
    WalletConversions,
    Wire,
    WireCredited,
    Withdrawals,
)
from fxcrm_core.privacy import (
    DEFAULT_MASKING,
    Erasure,
    FieldEncryption,
    KeyStore,
    MaskingPolicy,
    MasterKeyring,
    MemoryKeyStore,
    PiiReveals,
    RetentionPolicy,
    SubjectErased,
)
from fxcrm_core.reactions import Lifecycle, TradingDayClosed, TradingLogins
from fxcrm_core.stores import (
    MemoryEventStore,
    MemorySnapshotStore,
    SqliteDatabase,
    SqliteEventStore,
)
from fxcrm_core.stores.sqlite_audit import SqliteAuditLog
from fxcrm_core.stores.sqlite_keys import SqliteKeyStore
from fxcrm_core.trading import (
    AccountState,
    AccountStatus,
    BalanceOperation,
    DealFeeds,
    DealsReceived,
    FeedItem,
    NewTradingAccount,
    TradingServer,
    TradingServerError,
)

__all__ = ["EVENT_HANDLERS", "Broker", "BrokerOptions", "ConfigurationError"]

log = logging.getLogger("fxcrm_core.broker")

A = TypeVar("A", bound=Aggregate)

HOST_NAMESPACE = "host"


class ConfigurationError(ValidationError):
    """The broker was built in a way that would lose data or leak it; the message says how to
    build it instead."""

    default_message = "the broker cannot be built that way"


class BrokerOptions(TypedDict, total=False):
    """Optional adapters and settings shared by every way of building a Broker."""

    calendar: TradingCalendar
    events: Iterable[type[DomainEvent]]  # the host's own events, stored as "host.<Name>"
    keyring: MasterKeyring
    payload_cipher: PayloadCipher
    ids: IdGenerator
    access: AccessControl
    masking: MaskingPolicy
    retention: RetentionPolicy
    audit_key: bytes
    policy: AccessPolicy
    identity_key: bytes
    dedup: DedupPolicy
    levels: LevelPolicy
    trading_server: TradingServer
    groups: Mapping[str, GroupRule]
    caps: LeverageCaps
    payment_limits: PaymentLimits
    daily_withdrawal_limits: Mapping[str, Money]
    withdrawal_fees: FeePolicy
    # Client-to-client transfers: a daily cap per sender, a second person above a threshold
    # (per currency), and whether the receiver must accept each transfer.
    daily_client_transfer_limits: Mapping[str, Money]
    client_transfer_approval_above: Mapping[str, Money]
    client_transfer_consent: bool
    # Trading-account services: which changes need a second person (group, status), and the
    # password rules of the trading server (MT5's by default).
    account_changes_approved: Collection[AccountChange]
    password_rules: PasswordRules
    dormant_after: timedelta
    schedules: ScheduleBook  # IB rebate schedule versions: recorded in the log at first use
    rebate_schedule: str  # the schedule the engine follows (default: the configured one's id)
    # Per-deal rebate state is forgotten this long after the deal's trading day (and its cap
    # period); later corrections are refused and kept for review. None: kept for ever.
    rebate_horizon: timedelta | None
    distribution: Distribution  # how a rebate pool is shared up the IB chain
    ib_max_depth: int
    payout_policies: Mapping[str, PayoutPolicy]  # per IB: currency, minimum, cadence, ...
    instruments: InstrumentSpec  # contract size and quote currency per symbol (activity's notional)
    # How long after its trading day a deal may still correct the activity figures (what each
    # deal added is kept that long, then forgotten: bounded memory). None: for ever.
    activity_horizon: timedelta | None
    rates: RateSource  # market rates: the broker's own rates and IB payouts start from them
    rate_max_age: timedelta  # an older market rate is stale: refused (default 5 minutes)
    # A change of the broker's own rate moving it by more than this share needs a second
    # person (default 0.005: half a percent).
    rate_approval_threshold: Decimal
    allow_clear_pii: bool
    policies: Literal["inline", "worker"]
    # With policies="worker" in several processes: which worker owns each policy (one at a
    # time; a dead worker's policies pass to a live one). PostgresLeases on PostgreSQL,
    # LocalLeases in one process. None: every worker runs every policy (still exactly once).
    leases: Leases
    # Loyalty (docs/loyalty.md). The tier programme the broker follows (its id; default
    # "main"): the tier policy records nothing until an admin records a version of it with
    # broker.tiers.record_programme. Points rules (None: the points policies record nothing).
    tier_programme: str
    points_rules: PointsRules
    churn_model: ChurnModel  # default: BaselineChurnModel on the broker's calendar
    rfm_model: RfmModel  # default: RfmModel()
    # Cashback per lot closed, fixed at each trading day's close and paid the next (None: the
    # cashback policy records nothing). A tier's cashback_per_lot applies where the plan names
    # no rate for the symbol.
    cashback_plan: CashbackPlan
    # IB ranks from an IB tier programme (docs/ib_ranks.md): the rank each of its tiers gives
    # (None: no IB ranks), the programme's id (default "ib-ranks"), and whether each rank
    # change the rules decide waits for a second person.
    ib_ranks: Mapping[str, int]
    ib_rank_programme: str
    ib_ranks_approval: bool
    # Engagement (docs/engagement.md): the rules that queue messages in the outbox (none by
    # default), the notifier the relay hands them to (default: a MemoryNotifier), the relay's
    # courtesy (quiet hours, caps) and retry backoff, and each country's time zone and
    # language (ISO country code -> IANA zone / locale; a client elsewhere: UTC, English).
    engagement_rules: Sequence[EngagementRule]
    notifier: Notifier
    courtesy: Courtesy
    backoff: Backoff
    client_zones: Mapping[str, str]
    client_languages: Mapping[str, str]
    # Complaints (docs/complaints.md): the regulator's categories and SLA (acknowledge and
    # resolve within business days, in the policy's zone) and the business calendar's holidays.
    complaint_policy: ComplaintPolicy
    business_calendar: BusinessCalendar
    # Texts in the client's language (docs/i18n.md): a directory of the host's own catalogs
    # (<locale>/LC_MESSAGES/fxcrm.po) over the shipped en and zh_CN ones.
    catalog_dir: Path
    # Unsubscribe links (an HMAC of the message's key: the same secret in every process;
    # default: derived from identity_key) and the templates whose sending sends a survey.
    unsubscribe_secret: bytes
    # Named holidays per country ({"DE": {"new-year": [date(2027, 1, 1)]}}) for the rules'
    # Scheduled.holiday triggers.
    holidays: Mapping[str, Mapping[str, Collection[date]]] | HolidayData
    survey_templates: Mapping[str, SurveyKind]


_ENGAGEMENT = "system:engagement"  # who queues the scheduled messages

#: Who records the broker's configuration in the log (schedules, payout policies).
CONFIG_ACTOR = Actor.system("config", "admin")


def _versions_of(book: ScheduleBook) -> list[Schedule]:
    """The versions of a configured schedule book, oldest first."""
    return [book.version(n) for n in range(1, len(book) + 1)]


class _NoTradingServer:
    """Stands in when the host connects no trading server: every call is refused, clearly."""

    name = "none"

    def _refuse(self) -> TradingServerError:
        return TradingServerError("no trading server is connected to this broker")

    def create_account(self, request: NewTradingAccount) -> int:
        raise self._refuse()

    def change_group(self, login: int, group: str, *, idempotency_key: str | None = None) -> bool:
        raise self._refuse()

    def change_leverage(self, login: int, leverage: int) -> None:
        raise self._refuse()

    def change_password(
        self, login: int, secret: str, *, idempotency_key: str | None = None
    ) -> bool:
        raise self._refuse()

    def set_status(
        self, login: int, status: AccountStatus, *, idempotency_key: str | None = None
    ) -> bool:
        raise self._refuse()

    def set_enabled(self, login: int, enabled: bool) -> None:
        raise self._refuse()

    def balance_operation_made(self, login: int, idempotency_key: str) -> int | None:
        raise self._refuse()

    def balance_operation(
        self,
        login: int,
        operation: BalanceOperation,
        amount: Money,
        *,
        comment: str,
        idempotency_key: str,
    ) -> int:
        raise self._refuse()

    def account_state(self, login: int) -> AccountState:
        raise self._refuse()

    def deal_feed(self, *, after_cursor: int = 0, limit: int = 1000) -> list[FeedItem]:
        return []


class _Relationships:
    """Row-scope answers from the log: the sales owner from the client's stream; IB downlines
    from the IB network."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def sales_owner(self, client_id: str) -> str | None:
        client = self.broker.repository.load(Client, client_id)
        return client.owner_id if client else None

    def in_downline(self, ib_id: str, client_id: str) -> bool:
        return self.broker.ib_network.in_downline_now(ib_id, client_id)


class _ErasureWatch:
    """A memory read model of erasures (any process's): each one drops the subject's cached data
    key and every cached state, so no process keeps reading personal data erased elsewhere."""

    name = "erasures"
    event_types: frozenset[str] | None = frozenset({"SubjectErased"})

    def __init__(self) -> None:
        self.encryption: FieldEncryption | None = None
        self.repository: Repository | None = None

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, SubjectErased):
            if self.encryption is not None:
                self.encryption.forget(event.subject_id)
            if self.repository is not None:
                self.repository.forget()

    def reset(self) -> None:
        return None


class _WatchedRepository(Repository):
    """The broker's repository: before each load it reads the erasures recorded since the last
    load (one read of the log's tail), so a state or key cached here never outlives an erasure
    made by another process."""

    def watch(self, runner: ProjectionRunner, erasures: _ErasureWatch) -> None:
        self._runner, self._erasures = runner, erasures

    def load(self, cls: type[A], aggregate_id: str) -> A | None:
        runner = getattr(self, "_runner", None)
        if runner is not None:
            runner.catch_up(self._erasures)
        return super().load(cls, aggregate_id)


BrokerHandler = Callable[["Broker", RecordedEvent[Any], UnitOfWork], None]

#: The tier policy: evaluates a client's tier on its deals and deposits, closes periods.
TIER_POLICY = "loyalty-tiers"
TIER_UPSTREAM: tuple[type[DomainEvent], ...] = (
    DealsReceived,
    DepositCredited,
    WireCredited,
    TradingDayClosed,
)


class _TierAdvances:
    """How far the tier policy had decided when an upstream event was handled: from its
    ``PolicyAdvanced`` events (each committed with the outputs for that upstream event), the
    log position up to which its decisions answer for upstream events at or before a given
    position. Read from the log (no decode but of the tier policy's own advances)."""

    def __init__(self, store: EventStore, codec: EventCodec) -> None:
        self.codec = codec
        names = codec.registry.name_of
        self.advanced = names(PolicyAdvanced)
        self.rows = TypeCursor(store, frozenset({self.advanced, *map(names, TIER_UPSTREAM)}))
        self.stream = PolicyTracker.stream_id_for(TIER_POLICY)
        self.logged: list[int] = []  # log position of each of the tier policy's advances...
        self.upstream: list[int] = []  # ...and the upstream position it advanced to
        self.handled_to = 0  # the furthest upstream position the tier policy has handled
        self.pending: list[int] = []  # positions of the tier policy's upstream events
        self._lock = threading.Lock()

    def decided_upto(self, position: int) -> int:
        """The log position of the tier policy's last advance for upstream events at or before
        ``position``; a PolicyError when the tier policy has not handled them all yet."""
        with self._lock:
            for row in self.rows.new_rows():
                if row.event_type != self.advanced:
                    self.pending.append(row.position)
                elif row.stream_id == self.stream:
                    event = self.codec.decode(row).event
                    assert isinstance(event, PolicyAdvanced)
                    self.logged.append(row.position)
                    self.upstream.append(event.position)
                    self.handled_to = max(self.handled_to, event.position)
            i = bisect.bisect_right(self.pending, position)
            if i and self.pending[i - 1] > self.handled_to:
                raise PolicyError("the points policy waits for the tier policy to decide first")
            del self.pending[: max(0, i - 1)]  # asked in log order: the older ones are done
            j = bisect.bisect_right(self.upstream, position)
            found = self.logged[j - 1] if j else 0
            del self.logged[: max(0, j - 1)], self.upstream[: max(0, j - 1)]
            return found


class _ClientIds:
    """Every registered client's id, in registration order (a memory read model): whom the
    daily engagement run looks at."""

    name = "client-ids"
    event_types: frozenset[str] | None = frozenset({"ClientRegistered"})

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ids: dict[str, None] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        self.ids[recorded.stream_id.removeprefix("client-")] = None


class _Closes:
    """Where each closed trading day's ``TradingDayClosed`` is in the log (a memory index,
    caught up on each question)."""

    def __init__(self, store: EventStore, codec: EventCodec) -> None:
        self._rows = TypeCursor(store, frozenset({codec.registry.name_of(TradingDayClosed)}))
        self._codec = codec
        self._at: dict[date, int] = {}
        self._positions: list[int] = []  # in log order, and so in day order
        self._days: list[date] = []
        self._lock = threading.Lock()

    def positions(self) -> dict[date, int]:
        """Each closed day's position."""
        with self._lock:
            for row in self._rows.new_rows():
                event = self._codec.decode(row).event
                assert isinstance(event, TradingDayClosed)
                self._at[event.trading_day] = row.position
                self._positions.append(row.position)
                self._days.append(event.trading_day)
            return self._at

    def before(self, position: int) -> int:
        """The position of the last close recorded before ``position`` (0: none)."""
        self.positions()
        i = bisect.bisect_left(self._positions, position)
        return self._positions[i - 1] if i else 0

    def last_day_before(self, position: int) -> date | None:
        """The last trading day whose close was recorded before ``position``."""
        self.positions()
        i = bisect.bisect_left(self._positions, position)
        return self._days[i - 1] if i else None


# The policy table: (policy name, upstream event types, handler). A policy's name is its identity
# in the log (its position stream, policy-<name>): keep names stable. Rows run in this order
# within each read of the log, so a level recorded from a KYC decision is there before the
# deposit that follows it is judged.
EVENT_HANDLERS: tuple[tuple[str, tuple[type[DomainEvent], ...], BrokerHandler], ...] = (
    (
        "kyc-level",
        (DocumentApproved, DocumentRejected, DocumentExpired, DocumentReRequested),
        lambda b, r, u: b.kyc.on_decision(r, u),
    ),
    ("client-funded", (DepositCredited, StageChanged), lambda b, r, u: b.lifecycle.funded(r, u)),
    ("client-active", (DealsReceived,), lambda b, r, u: b.lifecycle.active(r, u)),
    ("client-dormant", (TradingDayClosed,), lambda b, r, u: b.lifecycle.dormant(r, u)),
    ("ib-client", (ClientAttributed,), lambda b, r, u: b.lifecycle.introduced(r, u)),
    # IB ranks: each IB evaluated when a trading day closes (its downline's activity and the
    # tree as the log stood then), and reconsidered on deals of a closed day pulled late; each
    # decision and the rank change it gives (or its approval request) recorded together. The
    # rebates policy that follows pays on those ranks and waits for them (see _rebates).
    (
        IB_RANKS_POLICY,
        (TradingDayClosed, DealsReceived),
        lambda b, r, u: b._ib_ranks_policy(r, u),
    ),
    ("rebates", (DealsReceived,), lambda b, r, u: b._rebates(r, u)),
    (PAYOUT_POLICY, (RebateEntriesRecorded,), lambda b, r, u: accrue_payouts(r, u)),
    # Loyalty: the tier is decided (on the client's deals and deposits, and at period ends)
    # before the points policy reads its multiplier; every loyalty policy reads the activity as
    # the log stood at the event it handles, so an inline broker and a late worker agree.
    (TIER_POLICY, TIER_UPSTREAM, lambda b, r, u: b._tiers_policy(r, u)),
    (POINTS_POLICY, POINTS_UPSTREAM, lambda b, r, u: b._points_policy(r, u)),
    ("loyalty-points-expiry", (TradingDayClosed,), lambda b, r, u: b._points_expiry(r, u)),
    ("churn-watch", (TradingDayClosed,), lambda b, r, u: b._churn_policy(r, u)),
    # Cashback: deals counted and each day fixed at its close, in one row (log order matters).
    (CASHBACK_POLICY, (DealsReceived, TradingDayClosed), lambda b, r, u: b._cashback_policy(r, u)),
    (BONUS_POLICY, BONUS_UPSTREAM, lambda b, r, u: b.bonus.handle(r, u)),
    # Engagement: messages decided on the events above (after the lifecycle and loyalty rows
    # that record them), each queued in the outbox with the policy's position; a withdrawn
    # marketing consent cancels what is still queued.
    (ENGAGEMENT_POLICY, ENGAGEMENT_UPSTREAM, lambda b, r, u: b._engagement_policy(r, u)),
    ("engagement-consent", (ConsentWithdrawn,), lambda b, r, u: b.relay.on_consent_withdrawn(r, u)),
)


def _bind(broker: Broker, handler: BrokerHandler) -> Handler:
    return lambda recorded, uow: handler(broker, recorded, uow)


class Broker:
    """Everything a host needs to run commands, approvals, policies and read models on one log.

    Every service is present whatever the store. PII is encrypted per client under a
    ``keyring`` (master keys from your KMS), its data keys in a ``keystore`` that lives as long
    as the log: a persistent event store needs a persistent key store. Storing PII in clear
    takes ``allow_clear_pii=True`` (tests, demos). ``identity_key`` is the secret of the
    deduplication hashes (``in_memory`` makes one up).

    >>> broker = Broker.in_memory()
    >>> broker.store.last_position(), broker.encryption is not None
    (0, True)
    """

    kyc: KycService
    lifecycle: Lifecycle
    ib_network: IbNetworkService
    rebates: RebateBook
    statements: Statements  # IB statements, names masked for the asking actor
    activity: ClientActivity  # what each client did: deals, money, revenue, rebates
    fund_flows: FundFlows  # a client's money movements, line by line
    account_changes: AccountChanges  # password reset, group change, status: audited, keyed
    wires: BankWires  # manual bank deposits: declared, matched, approved, credited once
    conversions: WalletConversions  # between a client's own wallets, at the broker's rate
    tiers: Tiers  # the tier programme the broker follows (option tier_programme)
    points: Points  # loyalty points (option points_rules)
    segments: Segmentation  # RFM scores and segments, read from broker.activity
    churn: ChurnWatch  # churn warnings, recorded when a trading day closes
    cashback: Cashback  # cashback per lot (option cashback_plan), paid the next trading day
    bonus: Bonus  # bonus credit on trading accounts: granted, burnt pro rata, removed
    ib_ranks: IbRanks | None  # IB ranks from an IB tier programme (option ib_ranks)
    outbox: Outbox  # messages queued once per (rule, period, client), in the deciding commit
    engagement: EngagementRules  # the rules as data (option engagement_rules)
    relay: OutboxRelay  # hands queued messages to the notifier: consent, quiet hours, caps
    complaints: Complaints  # complaint tickets under an SLA clock, escalated once per deadline
    surveys: Surveys  # CSAT and NPS surveys, answered once, scored per month or quarter
    service_records: ServiceRecords  # notes (encrypted), calls, follow-up tasks on a client
    exports: ClientExports  # client.export, masked by role, capped, audited
    announcements: AnnouncementsService  # to an audience, in a window, read receipts
    catalog: Catalog  # message templates and user-facing texts per locale (en, zh_CN, host's)
    unsubscribe_links: UnsubscribeLinks  # a token per message; a click withdraws the consent

    def __init__(
        self,
        store: EventStore,
        *,
        snapshots: SnapshotStore | None = None,
        keystore: KeyStore | None = None,
        audit_log: AuditLog | None = None,
        clock: Clock | None = None,
        **options: Unpack[BrokerOptions],
    ) -> None:
        self._check_options(options)
        self.clock = clock or SystemClock()
        self.calendar = options.get("calendar") or TradingCalendar()
        self.ids = options.get("ids") or IdGenerator(self.clock)
        self.store = store
        self.snapshots = snapshots
        self.registry = EventRegistry()
        for context in (
            events_core,
            access_context,
            privacy_context,
            clients_context,
            kyc_context,
            trading_context,
            accounts_context,
            ledger_context,
            payments_context,
            commissions_context,
            fx_context,
            loyalty_context,
            engagement_context,
            reactions,
        ):
            context.register_events(self.registry)
        host_events = [e for e in options.get("events", ()) if not self.registry.knows(e)]
        self.registry.register_all(host_events, namespace=HOST_NAMESPACE)
        self.encryption = self._encryption(store, keystore, options)
        self.codec = EventCodec(
            self.registry,
            field_cipher=self.encryption,
            payload_cipher=options.get("payload_cipher"),
        )
        if self.encryption is not None and not isinstance(store, MemoryEventStore):
            self._check_key_store()
        self.repository = _WatchedRepository(store, self.codec, snapshots)
        self.projections = ProjectionRunner(store, self.codec)
        self._erasures = _ErasureWatch()
        self._erasures.encryption, self._erasures.repository = self.encryption, self.repository
        self.repository.watch(self.projections, self._erasures)
        self.access = options.get("access") or AccessControl(
            options.get("policy", DEFAULT_POLICY), _Relationships(self)
        )
        self.masking = options.get("masking") or DEFAULT_MASKING
        # A full PAN or IBAN for a person only through here: permission pii.reveal, recorded.
        self.reveals = PiiReveals(self.repository, self.access)
        self.approvals = Approvals(self.repository, self.access, self.ids)
        audit_log = audit_log or MemoryAuditLog()
        audit_key = options.get("audit_key")
        if (
            audit_key is None
            and self.encryption is not None
            and not isinstance(store, MemoryEventStore)
        ):
            # A persistent trail is keyed by default: its secret lives wrapped in the key store.
            self.audit = AuditTrail.keyed_from(audit_log, self.encryption)
        else:
            self.audit = AuditTrail(audit_log, key=audit_key)
        self.erasure = Erasure(
            self.repository,
            self.encryption,
            self.access,
            policy=options.get("retention"),
            snapshots=snapshots,
            clock=self.clock,
        )
        identity_key = options.get("identity_key")
        if identity_key is None:
            raise ConfigurationError(
                "pass identity_key: the secret (32+ bytes, kept in your KMS) of the "
                "deduplication hashes; it must stay the same for the life of the log"
            )
        self.clients = Clients(
            self.repository,
            self.access,
            IdentityKeys(identity_key),
            policy=options.get("dedup", DedupPolicy.REFUSE),
            clock=self.clock,
            ids=self.ids,
            masking=self.masking,
            national_ids=check_national_id,
        )
        self.kyc = KycService(
            self.repository,
            self.projections,
            self.access,
            levels=options.get("levels", DEFAULT_LEVELS),
            clock=self.clock,
            ids=self.ids,
            closed=self._closed,
        )
        self.ledger = Ledger(self.repository, clock=self.clock)
        self.holds = PendingHolds()  # a memory read model: rebuilt from the log per process
        limits = options.get("payment_limits", PaymentLimits(()))
        rates = options.get("rates") or RateTable()  # market rates
        self.fx = FxBook(self.ledger)
        self.fx_rates = BrokerRates(
            self.repository,
            rates,
            self.access,
            self.approvals,
            clock=self.clock,
            max_age=options.get("rate_max_age", timedelta(minutes=5)),
            approval_threshold=options.get("rate_approval_threshold", Decimal("0.005")),
        )
        self.deposits = Deposits(
            self.repository, self.ledger, self.access, self.kyc, limits, ids=self.ids,
            rates=self.fx_rates, fx=self.fx, clock=self.clock,
        )  # fmt: skip
        self.withdrawals = Withdrawals(
            self.repository,
            self.ledger,
            self.access,
            self.kyc,
            self.approvals,
            limits,
            daily=options.get("daily_withdrawal_limits"),
            fees=options.get("withdrawal_fees"),
            calendar=self.calendar,
            clock=self.clock,
            ids=self.ids,
            masking=self.masking,
            rates=self.fx_rates,
            fx=self.fx,
        )
        self.conversions = WalletConversions(
            self.ledger, self.access, self.kyc, self.fx_rates, self.fx, limits
        )
        self.client_transfers = ClientTransfers(
            self.repository,
            self.ledger,
            self.access,
            self.kyc,
            self.approvals,
            limits,
            daily=options.get("daily_client_transfer_limits"),
            approval_above=options.get("client_transfer_approval_above"),
            consent=options.get("client_transfer_consent", False),
            calendar=self.calendar,
            clock=self.clock,
        )
        # Bank wires: references and statement lines hashed with the deduplication key.
        self.wires = BankWires(
            self.repository, self.ledger, self.access, self.kyc, self.approvals,
            self.projections, self.clients.identities, ids=self.ids,
        )  # fmt: skip
        server: TradingServer = options.get("trading_server") or _NoTradingServer()
        self.trading_server = server
        self.feeds = DealFeeds(self.repository, clock=self.clock)
        self.transfers = TradingTransfers(
            self.repository, self.ledger, self.access, {server.name: server}, closed=self._closed
        )
        self.accounts = Accounts(
            self.repository,
            self.access,
            server,
            self.kyc,
            options.get("groups", {}),
            caps=options.get("caps"),
            approvals=self.approvals,
            ids=self.ids,
        )
        self.account_changes = AccountChanges(
            self.accounts,
            approve=options.get("account_changes_approved", ()),
            password_rules=options.get("password_rules", MT5_PASSWORD_RULES),
        )
        self.ib_network = IbNetworkService(
            self.repository,
            self.access,
            clock=self.clock,
            max_depth=options.get("ib_max_depth", 6),
        )
        self.lifecycle = Lifecycle(
            self.repository,
            self.projections,
            self.calendar,
            dormant_after=options.get("dormant_after", timedelta(days=90)),
        )
        self.erasure.checks = BrokerErasureChecks(
            self.repository,
            self.projections,
            self.ledger,
            self.lifecycle.accounts_of,
            {server.name: server},
        )
        self.ib_applications = IbApplications(self.ib_network, self.access)
        self.schedules = ScheduleService(self.repository, self.access, clock=self.clock)
        self._configured_schedules = _versions_of(options.get("schedules") or ScheduleBook())
        horizon = options.get("rebate_horizon")
        if horizon is not None and not isinstance(horizon, timedelta):
            raise ConfigurationError("rebate_horizon is a timedelta of whole days")
        approved = options.get("account_changes_approved", ())
        if isinstance(approved, str) or not all(isinstance(a, AccountChange) for a in approved):
            raise ConfigurationError("account_changes_approved lists AccountChange values")
        schedule_id = options.get("rebate_schedule") or next(
            (v.schedule_id for v in self._configured_schedules), "standard"
        )
        # The engine follows one schedule as the log holds it (caught up before every batch).
        self.rebate_schedules = self.schedules.book(schedule_id)
        self._configured_checked = -1  # the recorded length last found as configured
        logins = self.lifecycle.activity
        self.rebates = RebateBook(
            self.repository,
            RebateEngine(
                self.ib_network.view.tree,
                self.rebate_schedules,
                options.get("distribution") or FixedShares((Decimal(1),)),
                client_of=lambda server, login: logins.logins.get((server, login)),
                account_group_of=lambda server, login: logins.groups.get((server, login), ""),
                trading_day_of=lambda deal: self.calendar.trading_day(deal.time),
                horizon=options.get("rebate_horizon"),
                clock=self.clock,
            ),
            servers=(server.name,),  # (books written before the book listed its servers)
        )
        self.payouts = Payouts(
            self.ledger,
            rates,
            options.get("payout_policies", {}),
            access=self.access,
            approvals=self.approvals,
        )
        servers = (server.name,)
        # What each client did (deals, money, revenue, rebates), from the log; statements of
        # the client's money movements on top of it.
        self.activity = ClientActivity(
            self.projections,
            self.calendar,
            rates=rates,
            instruments=options.get("instruments") or fx_instrument,
            clock=self.clock,
            horizon=options.get("activity_horizon"),
        )
        self.fund_flows = FundFlows(self.ledger, self.access, self.activity)
        self._build_loyalty(store, rates, options)
        self._build_engagement(options)
        self.statements = Statements(
            self.access,
            lambda: (
                entry
                for batch in RebateBook.recorded(self.store, self.codec, servers=servers)
                for entry in batch.entries
            ),
            lambda actor, client_id: self.clients.get(actor, client_id).name,
            rates,
        )
        self.approvals.register(PAYOUT_ACTION, self.payouts.approval_rule())
        self.policies = PolicyRunner(
            self.repository,
            [Policy(name, types, _bind(self, fn)) for name, types, fn in EVENT_HANDLERS],
            # Skipping a stretch with nothing to do is one cheap typed read; recording how far
            # a policy read costs a commit, so it is done only every 10,000 events.
            progress_every=10_000,
            leases=options.get("leases"),
        )
        self.policy_failure: PolicyError | None = None
        self._owned: list[object] = []  # what a constructor opened for it (closed with it)
        mode = options.get("policies", "inline")
        if mode not in ("inline", "worker"):
            raise ConfigurationError("policies run 'inline' or in a 'worker'")
        if options.get("leases") is not None and mode != "worker":
            # Inline, a command returns once its policies ran: a lease held elsewhere would
            # break that promise.
            raise ConfigurationError("leases are for policies='worker'")
        if mode == "inline":
            self.repository.on_commit(self._run_inline)

    def _build_engagement(self, options: BrokerOptions) -> None:
        given = options.get("engagement_rules", ())
        if isinstance(given, str | bytes | Mapping) or not isinstance(given, Iterable):
            raise ConfigurationError("engagement_rules lists EngagementRule values")
        rules = tuple(given)  # once: a generator is read a single time
        if not all(isinstance(r, EngagementRule) for r in rules):
            raise ConfigurationError("engagement_rules lists EngagementRule values")
        self.audience = ClientAudience(
            self.repository,
            zones=options.get("client_zones"),
            languages=options.get("client_languages"),
            segment_of=lambda client_id: self.segments.score(client_id).segment.value,
            tier_of=self._tier_now,
            documents_of=self.kyc.expiring_documents,
        )
        self.outbox = Outbox()
        self._client_ids = _ClientIds()
        try:
            self.engagement = EngagementRules(
                self.outbox, rules, self.audience, clock=self.clock, calendar=self.calendar,
                holidays=options.get("holidays"),
            )  # fmt: skip
        except FxCrmError as refused:  # bad holiday data, a rule naming a holiday none has
            raise ConfigurationError(str(refused)) from None
        policy = options.get("complaint_policy") or ComplaintPolicy(
            ("trading", "payments", "account", "other")
        )
        calendar = options.get("business_calendar") or BusinessCalendar()
        if not isinstance(policy, ComplaintPolicy) or not isinstance(calendar, BusinessCalendar):
            raise ConfigurationError(
                "complaint_policy is a ComplaintPolicy and business_calendar a BusinessCalendar"
            )
        self.complaints = Complaints(
            self.repository, self.access, self.clock, policy, calendar, ids=self.ids,
            require_client=True,
        )  # fmt: skip
        self.surveys = Surveys(
            self.repository, self.access, self.clock, zone=policy.zone, ids=self.ids,
            require_client=True,
        )  # fmt: skip
        self.catalog = Catalog(options.get("catalog_dir"))
        self.service_records = ServiceRecords(
            self.repository, self.access, self.projections, clock=self.clock, ids=self.ids
        )
        self.exports = ClientExports(
            self.repository, self.access, self.projections, masking=self.masking,
            audit=self.audit, clock=self.clock, ids=self.ids,
        )  # fmt: skip
        self.announcements = AnnouncementsService(
            self.repository, self.access, self.projections, self.audience, clock=self.clock,
            ids=self.ids,
        )  # fmt: skip
        identity = options.get("identity_key") or b""
        secret = (
            options.get("unsubscribe_secret")
            or hmac.new(identity, b"fxcrm unsubscribe links", hashlib.sha256).digest()
        )
        try:
            self.unsubscribe_links = UnsubscribeLinks(
                self.repository, self.access, clock=self.clock, secret=secret
            )
            survey_on_send = SurveyOnSend(self.surveys, options.get("survey_templates") or {})
        except FxCrmError as refused:
            raise ConfigurationError(str(refused)) from None
        self.relay = OutboxRelay(
            self.repository,
            options.get("notifier") or MemoryNotifier(),
            clock=self.clock,
            backoff=options.get("backoff"),
            courtesy=options.get("courtesy"),
            zone_of=self._zone_of,
            projections=self.projections,
            on_sent=survey_on_send.on_sent,  # a survey the message carried: the same commit
        )

    def _engagement_policy(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        self.engagement.on_event(recorded, uow)

    def _tier_now(self, client_id: str) -> str | None:
        try:
            return self.tiers.tier(client_id, self.clock.now())
        except NotFoundError:  # no tier programme in force
            return None

    def _zone_of(self, client_id: str) -> str | None:
        profile = self.audience.profile(client_id)
        return None if profile is None else profile.time_zone.key

    @staticmethod
    def _check_pii_choice(options: BrokerOptions) -> None:
        if options.get("keyring") is None and not options.get("allow_clear_pii", False):
            raise ConfigurationError(
                "pass a keyring (master keys from your KMS) to encrypt personal data, or "
                "allow_clear_pii=True to store it in clear (tests and demos only)"
            )

    @staticmethod
    def _check_options(options: BrokerOptions) -> None:
        """Refuse settings of the wrong type with a typed error (never a builtin one)."""
        dormant = options.get("dormant_after", timedelta(days=90))
        if not isinstance(dormant, timedelta) or dormant <= timedelta(0):
            raise ConfigurationError("dormant_after is a positive timedelta")
        depth = options.get("ib_max_depth", 6)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ConfigurationError("ib_max_depth is a whole number from 1")
        events = options.get("events", ())
        if (
            events is None
            or isinstance(events, str | bytes)
            or not isinstance(events, Iterable)
            or not all(isinstance(e, type) and issubclass(e, DomainEvent) for e in events)
        ):
            raise ConfigurationError("events lists the host's event classes (DomainEvent)")
        identity_key = options.get("identity_key")
        if identity_key is not None and not isinstance(identity_key, bytes):
            raise ConfigurationError("identity_key is bytes (32 or more, from your KMS)")
        for key, expected, what in (
            ("trading_server", TradingServer, "a TradingServer adapter"),
            ("schedules", ScheduleBook, "a ScheduleBook of one schedule's versions"),
            ("rebate_horizon", timedelta, "a timedelta of whole days"),
            ("activity_horizon", timedelta, "a timedelta of one day or more"),
            ("caps", LeverageCaps, "a LeverageCaps"),
            ("client_transfer_consent", bool, "True or False"),
            ("rate_max_age", timedelta, "a timedelta"),
            ("rate_approval_threshold", Decimal, "a Decimal share (0.005: half a percent)"),
            ("password_rules", PasswordRules, "a PasswordRules"),
            ("points_rules", PointsRules, "a PointsRules"),
            ("rfm_model", RfmModel, "an RfmModel"),
            ("cashback_plan", CashbackPlan, "a CashbackPlan"),
            ("ib_ranks_approval", bool, "True or False"),
        ):
            value = options.get(key)
            if value is not None and not isinstance(value, expected):
                raise ConfigurationError(f"{key} is {what}")
        approved = options.get("account_changes_approved", ())
        if isinstance(approved, str) or not all(isinstance(a, AccountChange) for a in approved):
            raise ConfigurationError("account_changes_approved lists AccountChange values")
        schedule_id = options.get("rebate_schedule")
        if schedule_id is not None and (not isinstance(schedule_id, str) or not schedule_id):
            raise ConfigurationError("rebate_schedule names a schedule (its id)")
        for name, kind in (
            ("groups", GroupRule),
            ("payout_policies", PayoutPolicy),
            ("daily_withdrawal_limits", Money),
            ("daily_client_transfer_limits", Money),
            ("client_transfer_approval_above", Money),
        ):
            table = options.get(name, {})
            if not isinstance(table, Mapping) or not all(
                isinstance(k, str) and isinstance(v, kind) for k, v in table.items()
            ):
                raise ConfigurationError(f"{name} maps names to {kind.__name__} values")
        programme = options.get("tier_programme", "main")
        if not isinstance(programme, str) or not programme:
            raise ConfigurationError("tier_programme names a tier programme (its id)")
        ranks = options.get("ib_ranks")
        if ranks is not None and (
            not isinstance(ranks, Mapping)
            or not ranks
            or not all(isinstance(k, str) and type(v) is int for k, v in ranks.items())
        ):
            raise ConfigurationError("ib_ranks maps each IB tier's name to its rank (an int)")
        rank_programme = options.get("ib_rank_programme", "ib-ranks")
        if not isinstance(rank_programme, str) or not rank_programme:
            raise ConfigurationError("ib_rank_programme names the IB rank programme (its id)")
        churn_model = options.get("churn_model")
        if churn_model is not None and not callable(getattr(churn_model, "assess", None)):
            raise ConfigurationError("churn_model is a ChurnModel (name and assess)")
        keyring = options.get("keyring")
        if keyring is not None and not isinstance(keyring, MasterKeyring):
            raise ConfigurationError("keyring is a MasterKeyring")

    def _closed(self, client_id: str) -> bool:
        """Whether the client's relationship is closed (from its own stream, read afresh: a
        second process's close counts at once). An unknown id is no closed client."""
        client = self.repository.load(Client, client_id)
        return client is not None and client.stage is Stage.CLOSED

    def _check_key_store(self, *, look_at: int = 10_000) -> None:
        """Refuse a key store that cannot read the log's personal data (a redeploy that lost or
        swapped the key file): the first event with PII must decrypt. Reads a few events."""
        pii = {
            name
            for name in self.registry.names()
            if self.codec.carries_pii(self.registry.spec_for_name(name).cls)
        }
        for stored in self.store.read_all(limit=look_at):
            if stored.event_type in pii:
                try:
                    self.codec.decode(stored)
                except CodecError:
                    raise ConfigurationError(
                        "the log holds personal data this key store has no keys for: is this "
                        "the right key file (or keystore) for this database?"
                    ) from None
                return

    def _encryption(
        self, store: EventStore, keystore: KeyStore | None, options: BrokerOptions
    ) -> FieldEncryption | None:
        keyring = options.get("keyring")
        persistent = not isinstance(store, MemoryEventStore)
        if keyring is None:
            self._check_pii_choice(options)
            return None
        if keystore is None:
            if persistent:
                raise ConfigurationError(
                    "a persistent event store needs a persistent key store: pass keystore= "
                    "(data keys kept only in memory would leave every client unreadable after "
                    "a restart)"
                )
            keystore = MemoryKeyStore()
        elif persistent and isinstance(keystore, MemoryKeyStore):
            raise ConfigurationError(
                "a persistent event store needs a persistent key store, not a MemoryKeyStore"
            )
        return FieldEncryption(keystore, keyring, clock=self.clock)

    @classmethod
    def in_memory(cls, *, clock: Clock | None = None, **options: Unpack[BrokerOptions]) -> Broker:
        """A broker whose log and keys live in memory (tests, simulations); it makes up a
        keyring and a deduplication key unless given."""
        options.setdefault("identity_key", secrets.token_bytes(32))
        if "keyring" not in options and not options.get("allow_clear_pii", False):
            options["keyring"] = MasterKeyring.generate()
        return cls(
            MemoryEventStore(clock),
            snapshots=MemorySnapshotStore(),
            clock=clock,
            **options,
        )

    @classmethod
    def sqlite(
        cls,
        path: str | Path,
        *,
        clock: Clock | None = None,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        keys_path: str | Path | None = None,
        keystore: KeyStore | None = None,
        **options: Unpack[BrokerOptions],
    ) -> Broker:
        """A broker on one SQLite file (events, snapshots, audit), with the data keys in a
        second file (``<path>.keys`` unless ``keys_path`` says otherwise) or the ``keystore``
        given (a KMS-backed one, say)."""
        if not isinstance(path, str | Path) or str(path) in ("", ":memory:"):
            raise ConfigurationError(
                "Broker.sqlite needs a file path (for a broker in memory, use Broker.in_memory)"
            )
        if keystore is not None and keys_path is not None:
            raise ConfigurationError("give keys_path or keystore, not both")
        if options.get("keyring") is None and not options.get("allow_clear_pii", False):
            cls._check_pii_choice(options)  # refuse before any file is made
        db = SqliteDatabase(path, synchronous=synchronous)
        made: SqliteKeyStore | None = None
        if keystore is None and options.get("keyring") is not None:
            keys = Path(keys_path or f"{path}.keys")
            if keys.resolve() == Path(path).resolve():
                raise ConfigurationError("the key file must not be the database itself")
            keystore = made = SqliteKeyStore(keys)
        try:
            return cls(
                SqliteEventStore(db, clock=clock),
                snapshots=db,
                keystore=keystore,
                audit_log=SqliteAuditLog(db),
                clock=clock,
                **options,
            )
        except BaseException:
            # Refused: leave no connection open on the files (nor a write-ahead log behind).
            db.close()
            if made is not None:
                made.close()
            raise

    @classmethod
    def postgres(
        cls,
        dsn: str,
        *,
        clock: Clock | None = None,
        keys_dsn: str | None = None,
        keystore: KeyStore | None = None,
        min_size: int = 1,
        max_size: int = 8,
        statement_timeout_ms: int = 30_000,
        **options: Unpack[BrokerOptions],
    ) -> Broker:
        """A broker on a PostgreSQL database (events, snapshots, checkpoints, audit), its schema
        made beforehand by ``fxcrm migrate`` / :func:`fxcrm_core.stores.postgres.migrate`; the
        data keys in the database at ``keys_dsn`` (migrated too; back it up on a shorter
        schedule), in the same database when not given, or in the ``keystore`` given. Pool
        bounds and the statement timeout are the host's to tune (see docs/postgres.md). Needs
        the ``postgres`` extra."""
        try:
            from fxcrm_core.stores.postgres import (
                PostgresAuditLog,
                PostgresDatabase,
                PostgresEventStore,
                PostgresKeyStore,
            )
        except ImportError as exc:  # pragma: no cover - the extra is installed in CI
            raise ConfigurationError(
                "Broker.postgres needs the postgres extra: pip install 'fxcrm_core[postgres]'"
            ) from exc
        if keystore is not None and keys_dsn is not None:
            raise ConfigurationError("give keys_dsn or keystore, not both")
        if options.get("keyring") is None and not options.get("allow_clear_pii", False):
            cls._check_pii_choice(options)  # refuse before any connection is made
        pool = {
            "min_size": min_size,
            "max_size": max_size,
            "statement_timeout_ms": statement_timeout_ms,
        }
        db = PostgresDatabase(dsn, **pool)
        made: list[Any] = [db]
        try:
            if keystore is None and options.get("keyring") is not None:
                keys_db = db if keys_dsn is None else PostgresDatabase(keys_dsn, **pool)
                if keys_db is not db:
                    made.append(keys_db)
                keystore = PostgresKeyStore(keys_db)
            broker = cls(
                PostgresEventStore(db, clock=clock),
                snapshots=db,
                keystore=keystore,
                audit_log=PostgresAuditLog(db),
                clock=clock,
                **options,
            )
            broker._owned += made  # the pools: closed with the broker
            return broker
        except BaseException:
            for opened in made:  # refused: leave no pool behind
                opened.close()
            raise

    # -- policies ---------------------------------------------------------------------------------
    def add_policy(
        self,
        name: str,
        event_types: Iterable[type[DomainEvent] | str],
        handler: Handler,
    ) -> None:
        """Register a host policy: ``handler(recorded, uow)`` runs once for every event of
        ``event_types`` (classes, or stored names such as ``"host.BonusGranted"``), recording
        its output through ``uow``. The name must be new and stay stable."""
        if not isinstance(name, str):
            raise ValidationError("a policy name is text")
        self.policies.add(Policy(f"{HOST_NAMESPACE}.{name}", event_types, handler))

    def run_policies(self) -> int:
        """Handle every event committed so far with every policy; returns how many upstream
        events were handled. Raises PolicyError when a policy fails (its position stays)."""
        self.policy_failure = None
        return self.policies.run()

    def follow(self, stop: threading.Event, *, interval: float = 0.5) -> None:
        """A worker loop: run the policies until ``stop`` is set (failures are logged)."""
        self.policies.follow(stop, interval=interval)

    def _run_inline(self, _: object) -> None:
        # A command has committed; its policies follow. A failing policy never fails the
        # command (it is in the log already): it stays behind, logged and kept in
        # ``policy_failure``, and is retried after the next command or run_policies().
        try:
            self.policies.run()
        except Exception as exc:  # the command's result stands whatever a policy does
            self.policy_failure = (
                exc if isinstance(exc, PolicyError) else PolicyError(type(exc).__name__)
            )
            if isinstance(exc, PolicyWaitingError):
                log.info("a policy waits: %s", exc)
            else:
                log.error("policy failed after a command: %s", self.policy_failure)
        else:
            self.policy_failure = None

    def _rebates(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        # The engine reads the IB tree, the logins and its schedule as of every event
        # committed so far.
        self.ib_network.catch_up()
        self.projections.catch_up(self.lifecycle.activity)
        self.rebate_schedules.catch_up()
        if not self._schedule_as_configured():
            raise ConfigurationError(
                "the configured rebate schedule is not the one recorded: call "
                "broker.record_configuration() (pull_deals does) before deals are handled; a "
                "version that differs from the recorded one is refused: add a new version"
            )
        self._wait_for_ib_ranks(recorded)
        self.rebates.on_deals(recorded, uow)

    def _wait_for_ib_ranks(self, recorded: RecordedEvent[Any]) -> None:
        """With IB ranks from rules, a deal is paid on the ranks decided at every trading day
        close before its own trading day, and at every close recorded before it: until the
        IB rank policy has decided those closes (and the scheduler has recorded the close of
        the day before), the rebates policy waits (PolicyWaitingError; the next run retries). So a
        rank is never recorded effective before a deal already paid on another rank, and an
        inline broker and a late worker pay every deal alike."""
        ranks = self.ib_ranks
        event = recorded.event
        if ranks is None or not isinstance(event, DealsReceived) or not ranks.tiers.programmes():
            return
        days = [
            self.calendar.trading_day(i.deal.time) for i in event.items if i.deal.action.is_trade
        ]
        if not days:
            return
        closes = self._closes.positions()
        needed = self._closes.before(recorded.position)  # closes recorded before these deals
        day = max(days) - timedelta(days=1)
        while not self.calendar.is_trading_day(day):
            day -= timedelta(days=1)
        try:
            ranks.tiers.programme_at(self.calendar.session(day)[1] - timedelta(microseconds=1))
        except NotFoundError:
            pass  # no IB programme in force at that close: nothing decided there
        else:
            found = closes.get(day)
            if found is None and any(later > day for later in closes):
                found = 0  # never closed: the scheduler's first close came after it
            if found is None:
                raise PolicyWaitingError(
                    "rebates wait for the trading day before these deals to be closed "
                    "(broker.end_of_day()): the IB ranks decided at its close pay them"
                )
            needed = max(needed, found)
        needed = max(needed, recorded.position)  # and the deals themselves (late ones)
        tracker = self.repository.load(PolicyTracker, IB_RANKS_POLICY)
        if tracker is None or tracker.position < needed:
            raise PolicyWaitingError("rebates wait for the IB rank policy to decide closed days")

    def _ib_rank_by_hand(self, ib_id: str, at: datetime) -> None:
        """Before a rank is set by hand: with IB rank rules, from now on only (a rank dated
        back would pay deals already paid differently in a late worker), not while their
        policy has closed days to decide (its decisions come first, in the order of the log),
        and, when ranks need a second person, only through broker.ib_ranks.request_rank."""
        if self.ib_ranks is None:
            return
        if at < self.clock.now():
            raise ValidationError("with IB rank rules, a rank set by hand holds from now on")
        if self._ib_ranks_approval:
            raise AccessDeniedError(
                "IB ranks need a second person: ask with broker.ib_ranks.request_rank"
            )
        self._ib_ranks_decided()

    def _ib_ranks_decided(self, ib_id: str | None = None) -> None:
        ranks = self.ib_ranks
        if ranks is None or not ranks.tiers.programmes():
            return
        latest = self._closes.before(self.store.last_position() + 1)
        tracker = self.repository.load(PolicyTracker, IB_RANKS_POLICY)
        if latest and (tracker is None or tracker.position < latest):
            raise ConcurrencyError(
                "the IB rank rules have not decided the last closed trading day yet: run the "
                "policies (broker.run_policies()) first"
            )

    # -- loyalty ----------------------------------------------------------------------------------
    def _build_loyalty(self, store: EventStore, rates: RateSource, options: BrokerOptions) -> None:
        """Tiers, points, segments and churn warnings, and what their policies read: each
        policy its own activity read model and logins, caught up to the event it handles."""

        def pinned() -> PinnedActivity:
            return PinnedActivity(
                store, self.codec, self.calendar, rates=rates,
                instruments=options.get("instruments") or fx_instrument,
                horizon=options.get("activity_horizon"),
            )  # fmt: skip

        self._tier_activity, self._churn_activity = pinned(), pinned()
        self._tier_logins, self._points_logins = TradingLogins(), TradingLogins()
        self.tiers = Tiers(
            self.repository,
            self.access,
            self.approvals,
            self._tier_activity.source,
            programme=options.get("tier_programme", "main"),
            calendar=self.calendar,
            clock=self.clock,
            measures=[m for m in TierMeasure if m.value in SOURCE_MEASURES],
        )
        rules = options.get("points_rules")
        self._points_rules = rules
        self._benefits_upstream: tuple[RecordedEvent[Any], _TierAdvances] | None = None
        self._tier_advances: dict[str, _TierAdvances] = {}
        self.points = Points(
            self.repository,
            self.access,
            self.approvals,
            self.ledger,
            rules or PointsRules(),
            client_of=self._points_logins.client_of,
            multiplier=self._points_multiplier,
            clock=self.clock,
        )
        self.segments = Segmentation(
            self.activity, options.get("rfm_model"), calendar=self.calendar, clock=self.clock
        )
        self.churn = ChurnWatch(
            self.repository,
            self._churn_activity.activity,
            options.get("churn_model"),
            calendar=self.calendar,
            clock=self.clock,
            projections=self.projections,
        )
        # Cashback per lot: counted and fixed by its policy, paid by end_of_day().
        self._cashback_plan = options.get("cashback_plan")
        self._cashback_logins = TradingLogins()
        self.cashback = Cashback(
            self.repository,
            self.ledger,
            self._cashback_plan or CashbackPlan("USD"),
            client_of=self._cashback_logins.client_of,
            group_of=self._cashback_logins.group_of,
            rate_of=self._cashback_rate,
            calendar=self.calendar,
            clock=self.clock,
        )
        self.bonus = Bonus(
            self.repository, self.access, {self.trading_server.name: self.trading_server}
        )
        ranks = options.get("ib_ranks")
        self._ib_rank_activity = pinned()
        self._ib_rank_logins = TradingLogins()
        self.ib_ranks = None
        if ranks is not None:
            self.ib_ranks = IbRanks(
                self.repository,
                self.access,
                self.approvals,
                self.ib_network,
                self._ib_rank_activity.activity,
                ranks=ranks,
                programme=options.get("ib_rank_programme", "ib-ranks"),
                approval=options.get("ib_ranks_approval", False),
                calendar=self.calendar,
                clock=self.clock,
            )
        self._kpis: dict[date, LoyaltyKpis] = {}
        self._ib_ranks_approval = options.get("ib_ranks_approval", False)
        self._closes = _Closes(store, self.codec)
        if self.ib_ranks is not None:
            self.ib_network.rank_guard = self._ib_rank_by_hand
            self.ib_ranks.guard = self._ib_ranks_decided

    def _tiers_policy(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        # Deals and deposits: evaluate each client touched at the event's recording time;
        # a closed trading day that ends a period: close it for every client with activity.
        # The activity and the logins are read as the log stood at this event.
        if not self.tiers.programmes():
            return  # no programme recorded yet: nothing to decide
        event = recorded.event
        activity = self._tier_activity.at(recorded.position)
        if isinstance(event, TradingDayClosed):
            end = self.calendar.session(event.trading_day)[1]
            try:
                programme = self.tiers.programme_at(end)
            except NotFoundError:
                return
            if programme.window.period(self.calendar, end).start == end:
                self.tiers.close_period(end, activity.clients(), uow=uow)
            return
        if isinstance(event, DealsReceived):
            self.projections.catch_up(self._tier_logins, upto=recorded.position)
            days: dict[str, set[date]] = {}
            for item in event.items:
                client = self._tier_logins.client_of(event.server, item.deal.login)
                if client is not None and item.deal.action.is_trade:
                    days.setdefault(client, set()).add(self.calendar.trading_day(item.deal.time))
            clients = sorted(days)
            closed = self._closes.last_day_before(recorded.position)
            for client_id in clients:  # deals of a day already closed (pulled late)
                for day in sorted(d for d in days[client_id] if closed and d <= closed):
                    self.tiers.reconsider(client_id, day, recorded.recorded_at, uow=uow)
        elif isinstance(event, WireCredited):
            clients = [uow.get(Wire, recorded.stream_id.removeprefix("wire-")).client_id]
        else:  # DepositCredited
            deposit = uow.get(Deposit, recorded.stream_id.removeprefix("deposit-"))
            clients = [deposit.client_id]
        for client_id in clients:
            try:
                self.tiers.evaluate(client_id, recorded.recorded_at, uow=uow)
            except NotFoundError:
                return  # the programme takes effect later

    def _points_policy(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        if self._points_rules is None:
            return
        self.projections.catch_up(self._points_logins, upto=recorded.position)
        with self._benefits_for(POINTS_POLICY, recorded):
            self.points.handle(recorded, uow)

    @contextlib.contextmanager
    def _benefits_for(self, policy: str, recorded: RecordedEvent[Any]) -> Iterator[None]:
        """While ``policy`` handles ``recorded``, tier benefits are read as they stood then
        (each reading policy follows the tier policy's advances on its own: they read in log
        order, each at its own pace)."""
        advances = self._tier_advances.get(policy)
        if advances is None:
            advances = self._tier_advances[policy] = _TierAdvances(self.store, self.codec)
        self._benefits_upstream = (recorded, advances)
        try:
            yield
        finally:
            self._benefits_upstream = None

    def _tier_benefits(self, client_id: str, at: datetime) -> Benefits | None:
        """The benefits of the client's tier at ``at``, from the tier decisions as they stood
        when the policy's upstream event was handled: the tier policy's decisions for events up
        to it (it runs first) and other decisions (overrides) recorded before it. None: no
        programme in force (or no policy event being handled)."""
        if self._benefits_upstream is None or not self.tiers.programmes():
            return None
        upstream, advances = self._benefits_upstream
        decided = advances.decided_upto(upstream.position)
        tier_actor = f"policy:{TIER_POLICY}"

        def keep(row: RecordedEvent[DomainEvent]) -> bool:
            if row.metadata.actor == tier_actor:
                return row.position <= decided
            return row.position < upstream.position

        try:
            state = self.tiers.state_as_of(client_id, keep)
            return self.tiers.standing_of(state, at).benefits
        except NotFoundError:
            return None

    def _points_multiplier(self, client_id: str, at: datetime) -> Decimal:
        benefits = self._tier_benefits(client_id, at)
        return Decimal(1) if benefits is None else benefits.points_multiplier

    def _cashback_rate(self, client_id: str, at: datetime) -> Money | None:
        benefits = self._tier_benefits(client_id, at)
        rate = None if benefits is None else benefits.cashback_per_lot
        plan = self._cashback_plan
        if rate is None or plan is None or rate.currency != plan.currency:
            return None  # a tier rate in another currency than the plan pays is not used
        return rate

    def _cashback_policy(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        if self._cashback_plan is None:
            return
        self.projections.catch_up(self._cashback_logins, upto=recorded.position)
        with self._benefits_for(CASHBACK_POLICY, recorded):
            self.cashback.handle(recorded, uow)

    def _ib_ranks_policy(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        ranks = self.ib_ranks
        if ranks is None or not ranks.tiers.programmes():
            return
        event = recorded.event
        if isinstance(event, DealsReceived):
            closed = self._closes.last_day_before(recorded.position)
            if closed is None:
                return
            self.projections.catch_up(self._ib_rank_logins, upto=recorded.position)
            days: dict[str, set[date]] = {}
            for item in event.items:
                client = self._ib_rank_logins.client_of(event.server, item.deal.login)
                day = self.calendar.trading_day(item.deal.time)
                if client is not None and item.deal.action.is_trade and day <= closed:
                    days.setdefault(client, set()).add(day)
            if days:
                self._ib_rank_activity.at(recorded.position)
                ranks.on_late_deals(recorded, uow, days)
            return
        self._ib_rank_activity.at(recorded.position)
        ranks.on_trading_day_closed(recorded, uow)

    def _points_expiry(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        # Lots past their time by the close of the day are recorded expired (idempotent).
        if self._points_rules is None:
            return
        event = recorded.event
        assert isinstance(event, TradingDayClosed)
        self.points.expire(self.calendar.session(event.trading_day)[1], uow=uow)

    def _churn_policy(self, recorded: RecordedEvent[Any], uow: UnitOfWork) -> None:
        self._churn_activity.at(recorded.position)
        self.churn.on_trading_day_closed(recorded, uow)

    def _schedule_as_configured(self) -> bool:
        """Whether the log holds the configured schedule versions, each as configured (a
        redeploy that edits a recorded version instead of adding one does not match)."""
        book = self.rebate_schedules
        recorded = len(book)
        if self._configured_checked == recorded:
            return True
        configured = [v for v in self._configured_schedules if v.schedule_id == book.schedule_id]
        if recorded < len(configured) or any(book.version(v.version) != v for v in configured):
            return False
        self._configured_checked = recorded
        return True

    def record_configuration(self) -> list[str]:
        """Record in the log, as ``system:config``, what the broker was configured with and the
        log does not hold yet: its schedule versions and the IBs' payout policies. Idempotent
        and safe from several processes at once; :meth:`pull_deals` and payout runs call it, so
        a host only calls it to make a deployed change show in the audit trail at once.
        Returns what was recorded (``schedule <id> v<n>``, ``payout policy <ib>``)."""
        done: list[str] = []
        if self._configured_schedules:
            for attempt in range(2):
                try:
                    new = self.schedules.ensure(
                        CONFIG_ACTOR, self._configured_schedules, reason="broker configuration"
                    )
                except ConcurrencyError:
                    if attempt:
                        raise
                    continue  # another process recorded them first: look again
                done += [f"schedule {v.schedule_id} v{v.version}" for v in new]
                break
        done += [f"payout policy {ib}" for ib in self.payouts.ensure_policies()]
        return done

    def pull_deals(self, *, limit: int = 1000, batch: int = 100) -> int:
        """Record the trading server's new deals in the log (its scheduled pull; the policies
        then react: first trades, rebates); returns how many feed items were recorded. The
        configured schedule is recorded first, if it is not yet."""
        self.rebate_schedules.catch_up()
        if not self._schedule_as_configured():
            self.record_configuration()  # (a version edited since it was recorded: refused)
        return self.feeds.pull(self.trading_server, limit=limit, batch=batch)

    def close_trading_days(self) -> list[date]:
        """Record the trading days that have ended by the broker's clock (its scheduled check:
        call it from a scheduler, e.g. after 17:00 New York); returns the days closed. A day
        closed also snapshots the rebate engine (a cache: a restart then reads only the
        batches recorded since)."""
        closed = self.lifecycle.close_trading_days(self.clock)
        if closed:
            self.rebates.snapshot()
        return closed

    def end_of_day(self) -> dict[str, list[Any]]:
        """The host scheduler's daily job (e.g. a few minutes after 17:00 New York, and safe to
        run more often, from any process): close the trading days that have ended (their
        policies fix each client's cashback, close tier periods, expire points, raise churn
        warnings and evaluate IB ranks), expire pending holds, pay the cashback due, burn bonus
        credit for withdrawals and take it back where equity fell below it. Each step is
        idempotent; returns what each did."""
        # Inline, the day closes' policies have run when this returns; in worker mode, what
        # the worker has not fixed yet is paid by a later run.
        done: dict[str, list[Any]] = {"closed": self.close_trading_days()}
        done["holds_expired"] = self.expire_holds()
        paid: list[CashbackPaid] = (
            [] if self._cashback_plan is None else self.cashback.pay_due(self.clock.now())
        )
        done["cashback_paid"] = paid
        burnt: list[BonusBurnt] = self.bonus.settle() + self.bonus.check_equity()
        done["bonus_burnt"] = burnt
        done["messages_queued"] = [self.queue_scheduled_messages()]
        done["complaints_escalated"] = self.complaints.check_deadlines()
        return done

    def queue_scheduled_messages(self, *, batch: int = 500) -> int:
        """The engagement rules' scheduled triggers (birthdays, documents expiring, N days
        after a milestone) for every registered client on its own local date now, queued in
        the outbox in batches of ``batch`` clients (each its own commit); returns how many
        messages were queued (0 when run again the same day: the outbox keys)."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValidationError("batch is a positive number of clients")
        if not any(not isinstance(r.trigger, OnEvent) for r in self.engagement.rules):
            return 0
        self.projections.catch_up(self._client_ids)
        ids = list(self._client_ids.ids)
        now = self.clock.now()
        queued = 0
        for i in range(0, len(ids), batch):
            chunk = ids[i : i + batch]
            try:
                queued += self._queue_due(now, chunk)
            except ConcurrencyError:
                # Another process's run committed some of these keys first: this batch again,
                # client by client (each its own commit; a key already there queues nothing).
                for client_id in chunk:
                    try:
                        queued += self._queue_due(now, [client_id])
                    except ConcurrencyError:
                        continue  # decided by the other process just now
        return queued

    def _queue_due(self, now: datetime, clients: list[str]) -> int:
        with UnitOfWork(self.repository, EventMetadata(_ENGAGEMENT, reason="daily")) as uow:
            count = self.engagement.run_due(now, uow, clients)
            if count:
                uow.commit()
        return count

    def send_messages(self, *, limit: int = 100) -> RelayReport:
        """Hand up to ``limit`` due messages to the notifier (the host's relay job, run every
        few seconds from any process: each outcome is its own commit)."""
        return self.relay.run_once(limit)

    def kpis(self, since: date | None = None) -> LoyaltyKpis:
        """The loyalty KPIs per month or quarter (docs/loyalty_kpis.md), counting lifetime value
        and cohorts from ``since`` (default: the month of the log's first event, so every
        process counts alike). A memory read model over the log, kept per ``since``."""
        if since is None:
            first = self.store.read_all(after_position=0, limit=1)
            when = first[0].recorded_at if first else self.clock.now()
            since = self.calendar.trading_day(when)
        if not isinstance(since, date) or isinstance(since, datetime):
            raise ValidationError("since is a date (the first month counted)")
        since = since.replace(day=1)
        kpis = self._kpis.get(since)
        if kpis is None:
            if len(self._kpis) >= 4:  # a few read models at most (each rebuilt from the log)
                self._kpis.pop(next(iter(self._kpis)))
            kpis = self._kpis[since] = LoyaltyKpis(
                self.projections, self.activity, since=since, calendar=self.calendar,
                programmes=(self.tiers.programme_id,),
            )  # fmt: skip
        return kpis

    def expire_holds(self) -> list[str]:
        """Expire every pending ledger hold past its timeout (any process's); returns their
        transfer ids. Call it from the host's scheduler."""
        self.projections.catch_up(self.holds)
        return self.ledger.expire_due(self.holds)

    # -- units of work ----------------------------------------------------------------------------
    def unit_of_work(
        self,
        actor: Actor | str,
        *,
        reason: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> UnitOfWork:
        """A unit of work whose events carry the actor (who) and the reason (why)."""
        actor_id = actor.id if isinstance(actor, Actor) else actor
        metadata = EventMetadata(
            actor_id, correlation_id or self.ids(), causation_id=causation_id, reason=reason
        )
        return UnitOfWork(self.repository, metadata)

    def close(self) -> None:
        keystore = self.encryption.keystore if self.encryption else None
        for resource in (self.store, keystore, *self._owned):
            close = getattr(resource, "close", None)
            if callable(close):
                close()
