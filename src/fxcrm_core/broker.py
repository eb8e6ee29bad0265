"""The composition root: the one object a host builds, wiring stores, codec, clock and services.

Each bounded context adds its events and services here as it lands; a host swaps any adapter
(its own event store, key store, clock) through the constructor.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, TypedDict, Unpack

from fxcrm_core.access import (
    APPROVAL_EVENTS,
    DEFAULT_POLICY,
    AccessControl,
    AccessPolicy,
    Actor,
    Approvals,
    AuditLog,
    AuditTrail,
    MemoryAuditLog,
)
from fxcrm_core.accounts import ACCOUNT_EVENTS, Accounts, GroupRule, LeverageCaps
from fxcrm_core.clients import ALL_CLIENT_EVENTS, Client, Clients, DedupPolicy, IdentityKeys
from fxcrm_core.commissions import REBATE_EVENTS
from fxcrm_core.events import (
    CheckpointStore,
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    PayloadCipher,
    ProjectionRunner,
    Repository,
    SnapshotStore,
    UnitOfWork,
)
from fxcrm_core.kernel import Clock, IdGenerator, Money, SystemClock, TradingCalendar
from fxcrm_core.kyc import DEFAULT_LEVELS, DOCUMENT_EVENTS, KycService, LevelPolicy
from fxcrm_core.ledger import LEDGER_EVENTS, Ledger
from fxcrm_core.payments import (
    DEPOSIT_EVENTS,
    INTERNAL_EVENTS,
    WITHDRAWAL_EVENTS,
    Deposits,
    FeePolicy,
    PaymentLimits,
    TradingTransfers,
    Withdrawals,
)
from fxcrm_core.privacy import (
    DEFAULT_MASKING,
    ERASURE_EVENTS,
    Erasure,
    FieldEncryption,
    KeyStore,
    MaskingPolicy,
    MasterKeyring,
    MemoryKeyStore,
    RetentionPolicy,
)
from fxcrm_core.stores import (
    MemoryCheckpointStore,
    MemoryEventStore,
    MemorySnapshotStore,
    SqliteDatabase,
    SqliteEventStore,
)
from fxcrm_core.stores.sqlite_audit import SqliteAuditLog
from fxcrm_core.stores.sqlite_keys import SqliteKeyStore
from fxcrm_core.trading import TradingServer

__all__ = ["Broker", "BrokerOptions"]


class BrokerOptions(TypedDict, total=False):
    """Optional adapters and settings shared by every way of building a Broker."""

    calendar: TradingCalendar
    events: Iterable[type[DomainEvent]]
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


class _Relationships:
    """Row-scope answers from the CRM's own records (IB downlines come with commissions)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    def sales_owner(self, client_id: str) -> str | None:
        client = self.repository.load(Client, client_id)
        return client.owner_id if client else None

    def in_downline(self, ib_id: str, client_id: str) -> bool:
        return False


class Broker:
    """Everything a host needs to run commands, approvals and read models on one event log.

    Give it a ``keyring`` (master keys from your KMS) and a ``keystore`` to encrypt PII fields
    per client; ``erasure`` is available only then. ``clients`` needs an ``identity_key`` (the
    secret of the deduplication hashes; ``in_memory`` makes one up), ``accounts`` a
    ``trading_server`` and its ``groups``.

    >>> broker = Broker.in_memory(keyring=MasterKeyring.generate())
    >>> broker.store.last_position(), broker.erasure is not None
    (0, True)
    """

    def __init__(
        self,
        store: EventStore,
        *,
        checkpoints: CheckpointStore,
        snapshots: SnapshotStore | None = None,
        keystore: KeyStore | None = None,
        audit_log: AuditLog | None = None,
        clock: Clock | None = None,
        **options: Unpack[BrokerOptions],
    ) -> None:
        self.clock = clock or SystemClock()
        self.calendar = options.get("calendar") or TradingCalendar()
        self.ids = options.get("ids") or IdGenerator(self.clock)
        self.store = store
        self.snapshots = snapshots
        self.registry = EventRegistry()
        self.registry.register_all(
            (
                *APPROVAL_EVENTS,
                *ERASURE_EVENTS,
                *ALL_CLIENT_EVENTS,
                *DOCUMENT_EVENTS,
                *ACCOUNT_EVENTS,
                *LEDGER_EVENTS,
                *INTERNAL_EVENTS,
                *DEPOSIT_EVENTS,
                *WITHDRAWAL_EVENTS,
                *REBATE_EVENTS,
            )
        )
        self.registry.register_all(options.get("events", ()))
        keyring = options.get("keyring")
        self.encryption = (
            FieldEncryption(keystore or MemoryKeyStore(), keyring, clock=self.clock)
            if keyring is not None
            else None
        )
        self.codec = EventCodec(
            self.registry,
            field_cipher=self.encryption,
            payload_cipher=options.get("payload_cipher"),
        )
        self.repository = Repository(store, self.codec, snapshots)
        self.projections = ProjectionRunner(store, self.codec)
        self.access = options.get("access") or AccessControl(
            options.get("policy", DEFAULT_POLICY), _Relationships(self.repository)
        )
        self.masking = options.get("masking") or DEFAULT_MASKING
        self.approvals = Approvals(self.repository, self.access, self.ids)
        self.audit = AuditTrail(audit_log or MemoryAuditLog(), key=options.get("audit_key"))
        self.erasure = (
            Erasure(
                self.repository,
                self.encryption,
                self.access,
                policy=options.get("retention"),
                snapshots=snapshots,
                clock=self.clock,
            )
            if self.encryption is not None
            else None
        )
        identity_key = options.get("identity_key")
        self.clients = (
            Clients(
                self.repository,
                self.access,
                IdentityKeys(identity_key),
                policy=options.get("dedup", DedupPolicy.REFUSE),
                clock=self.clock,
                ids=self.ids,
            )
            if identity_key is not None
            else None
        )
        self.kyc = KycService(
            self.repository,
            self.projections,
            self.access,
            levels=options.get("levels", DEFAULT_LEVELS),
            clock=self.clock,
            ids=self.ids,
        )
        self.ledger = Ledger(self.repository, clock=self.clock)
        self.deposits = Deposits(
            self.repository,
            self.ledger,
            self.access,
            self.kyc,
            options.get("payment_limits", PaymentLimits(())),
            ids=self.ids,
        )
        self.withdrawals = Withdrawals(
            self.repository,
            self.ledger,
            self.access,
            self.kyc,
            self.approvals,
            options.get("payment_limits", PaymentLimits(())),
            daily=options.get("daily_withdrawal_limits"),
            fees=options.get("withdrawal_fees"),
            calendar=self.calendar,
            clock=self.clock,
            ids=self.ids,
        )
        server = options.get("trading_server")
        self.transfers = (
            TradingTransfers(self.repository, self.ledger, self.access, {server.name: server})
            if server is not None
            else None
        )
        self.accounts = (
            Accounts(
                self.repository,
                self.access,
                server,
                self.kyc,
                options.get("groups", {}),
                caps=options.get("caps"),
                approvals=self.approvals,
                ids=self.ids,
            )
            if server is not None
            else None
        )

    @classmethod
    def in_memory(cls, *, clock: Clock | None = None, **options: Unpack[BrokerOptions]) -> Broker:
        """A broker whose log and keys live in memory (tests, simulations)."""
        options.setdefault("identity_key", secrets.token_bytes(32))
        return cls(
            MemoryEventStore(clock),
            checkpoints=MemoryCheckpointStore(),
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
        **options: Unpack[BrokerOptions],
    ) -> Broker:
        """A broker on one SQLite file (events, checkpoints, snapshots, audit), with the data
        keys in a second file (``<path>.keys`` unless ``keys_path`` says otherwise)."""
        db = SqliteDatabase(path, synchronous=synchronous)
        keystore = None
        if "keyring" in options:
            keystore = SqliteKeyStore(keys_path or f"{path}.keys")
        return cls(
            SqliteEventStore(db, clock=clock),
            checkpoints=db,
            snapshots=db,
            keystore=keystore,
            audit_log=SqliteAuditLog(db),
            clock=clock,
            **options,
        )

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
        for resource in (self.store, self.encryption.keystore if self.encryption else None):
            close = getattr(resource, "close", None)
            if callable(close):
                close()
