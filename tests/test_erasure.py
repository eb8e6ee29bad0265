"""End to end: register clients, move money, erase one; PII gone, everything else unchanged."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Self

import attrs
import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.accounts import TradingAccount
from fxcrm_core.accounts.model import TradingAccountOpened
from fxcrm_core.broker import Broker
from fxcrm_core.clients import Client, ClientKind, DuplicateClientError, Registration, Stage
from fxcrm_core.erasure_checks import BrokerErasureChecks
from fxcrm_core.events import ERASED, Aggregate, DomainEvent, RecordedEvent, pii
from fxcrm_core.kernel import (
    AccessDeniedError,
    Currency,
    FixedClock,
    Money,
    RetentionHoldError,
    StoreError,
    SubjectErasedError,
    ValidationError,
)
from fxcrm_core.ledger import TransferRequest
from fxcrm_core.payments.transfers import MoneyAccounts
from fxcrm_core.privacy import (
    ErasureBlockedError,
    FieldEncryption,
    MasterKeyring,
    SubjectErased,
)
from fxcrm_core.stores import SqliteDatabase
from fxcrm_core.stores.sqlite_keys import SqliteKeyStore
from fxcrm_core.trading import AccountState, TradingServerError
from tests.sample_domain import EVENTS as TILL_EVENTS
from tests.sample_domain import Till


@attrs.frozen
class PersonRegistered(DomainEvent):
    __subject__ = "client_id"
    client_id: str
    country: str
    name: str = pii()
    email: str = pii()
    passport: str = pii()


@attrs.frozen(kw_only=True)
class ClientFile(Aggregate):
    category = "person"
    name: str | None = attrs.field(default=None, repr=False)
    country: str = ""

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, PersonRegistered):
            return self.evolve(name=event.name, country=event.country)
        raise ValidationError("unexpected event")


class Directory:
    """A read model holding PII: it drops a subject when it sees SubjectErased."""

    name = "directory"
    event_types: frozenset[str] | None = frozenset({"host.PersonRegistered", "SubjectErased"})

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, str]] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, PersonRegistered):
            self.entries[event.client_id] = (event.name, event.email)
        elif isinstance(event, SubjectErased):
            self.entries.pop(event.subject_id, None)

    def reset(self) -> None:
        self.entries.clear()


PEOPLE = {
    "c-1": ("Ana Lima", "ana.lima@example.com", "X1234567"),
    "c-2": ("Bo Chen", "bo.chen@example.org", "E98765432"),
    "c-3": ("Cy Diaz", "cy.diaz@example.net", "P55501234"),
}
NOW = datetime(2032, 6, 1, 12, tzinfo=UTC)
OFFICER = Actor.staff("dpo", Role.COMPLIANCE)


def build(tmp_path: Path) -> Broker:
    clock = FixedClock(NOW)
    broker = Broker.sqlite(
        tmp_path / "broker.sqlite",
        clock=clock,
        keyring=MasterKeyring({"m1": bytes(32)}, "m1"),
        events=(PersonRegistered, *TILL_EVENTS),
        synchronous="NORMAL",
        identity_key=b"i" * 32,
    )
    for cid, (name, email, passport) in PEOPLE.items():
        with broker.unit_of_work(Actor.staff("onboarding", Role.SALES)) as uow:
            uow.record(ClientFile.blank(cid), PersonRegistered(cid, "GB", name, email, passport))
            till = Till.blank(cid)
            till = uow.record(till, *till.open("USD", name))
            till = uow.record(till, *till.pay_in(Money.of("1000", "USD")))
            uow.record(till, *till.pay_out(Money.of("125.50", "USD")))
            uow.commit()
    return broker


def test_erasing_one_client(tmp_path: Path) -> None:
    broker = build(tmp_path)
    assert broker.erasure is not None
    directory = Directory()
    broker.projections.catch_up(directory)
    before = {cid: broker.repository.get(Till, cid) for cid in PEOPLE}
    versions = {cid: broker.store.stream_version(f"till-{cid}") for cid in PEOPLE}

    receipt = broker.erasure.erase(
        OFFICER,
        "c-2",
        relationship_ended_at=datetime(2026, 5, 1, tzinfo=UTC),
        reason="GDPR art. 17 request",
        snapshot_streams=["till-c-2"],
    )
    assert receipt.key_destroyed

    # Events: every PII field of c-2 reads as ERASED; the others' are intact.
    for stored in broker.store.read_all(limit=10_000):
        event = broker.codec.decode(stored).event
        if isinstance(event, PersonRegistered):
            fields = (event.name, event.email, event.passport)
            if event.client_id == "c-2":
                assert all(f is ERASED for f in fields)
            else:
                assert fields == PEOPLE[event.client_id]
    assert broker.repository.get(Till, "c-2").holder is ERASED
    assert broker.repository.get(ClientFile, "c-2").country == "GB"

    # Balances, versions and replays are unchanged.
    for cid in PEOPLE:
        after = broker.repository.get(Till, cid)
        assert after.balance == before[cid].balance == Money.of("874.50", "USD")
        assert broker.store.stream_version(f"till-{cid}") == versions[cid]
        if cid != "c-2":
            assert after == before[cid]

    # Projections: the live one drops c-2 on SubjectErased; a rebuild from zero agrees.
    broker.projections.catch_up(directory)
    assert set(directory.entries) == {"c-1", "c-3"}
    rebuilt = Directory()
    broker.projections.rebuild(rebuilt)
    assert rebuilt.entries == directory.entries
    assert rebuilt.entries["c-1"] == PEOPLE["c-1"][:2]

    # Audit: ids only, chain whole, the erasure itself recorded with who did it.
    broker.audit.catch_up(broker.store, broker.codec)
    records = broker.audit.log.records()
    assert broker.audit.verify() is None
    assert [(r.actor, r.target) for r in records if r.action == "SubjectErased"] == [
        ("staff:dpo", "erasure-c-2")
    ]
    flat = repr(records)
    for name, email, passport in PEOPLE.values():
        assert name not in flat
        assert email not in flat
        assert passport not in flat

    # At rest: no plaintext PII in any file, before or after erasure.
    broker.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for values in PEOPLE.values():
        for value in values:
            assert value.encode() not in raw

    # No new PII can be stored for the erased subject.
    again = build_again(tmp_path)
    with again.unit_of_work("staff:x") as uow:
        uow.record(ClientFile.blank("c-2b"), PersonRegistered("c-2", "GB", "Bo", "b@x.io", "E1"))
        with pytest.raises(SubjectErasedError):
            uow.commit()


def build_again(tmp_path: Path) -> Broker:
    return Broker.sqlite(
        tmp_path / "broker.sqlite",
        clock=FixedClock(NOW),
        keyring=MasterKeyring({"m1": bytes(32)}, "m1"),
        events=(PersonRegistered, *TILL_EVENTS),
        identity_key=b"i" * 32,
    )


def test_erasure_is_idempotent(tmp_path: Path) -> None:
    broker = build(tmp_path)
    assert broker.erasure is not None
    ended = datetime(2020, 1, 1, tzinfo=UTC)
    first = broker.erasure.erase(OFFICER, "c-1", relationship_ended_at=ended, reason="r")
    position = broker.store.last_position()
    second = broker.erasure.erase(OFFICER, "c-1", relationship_ended_at=ended, reason="r")
    assert first.key_destroyed
    assert not second.key_destroyed
    assert broker.store.last_position() == position


@pytest.mark.parametrize(
    ("ended", "hold", "fragment"),
    [
        (None, False, "has not ended"),
        (datetime(2028, 6, 2, tzinfo=UTC), False, "until 2033-06-02"),  # 5 years not yet over
        (datetime(2020, 1, 1, tzinfo=UTC), True, "legal hold"),
    ],
)
def test_erasure_is_refused_under_a_retention_hold(
    tmp_path: Path, ended: datetime | None, hold: bool, fragment: str
) -> None:
    broker = build(tmp_path)
    assert broker.erasure is not None
    position = broker.store.last_position()
    with pytest.raises(RetentionHoldError, match=fragment):
        broker.erasure.erase(
            OFFICER, "c-1", relationship_ended_at=ended, reason="r", legal_hold=hold
        )
    assert broker.store.last_position() == position
    assert broker.repository.get(Till, "c-1").holder == "Ana Lima"


def test_erasure_needs_permission(tmp_path: Path) -> None:
    broker = build(tmp_path)
    assert broker.erasure is not None
    with pytest.raises(AccessDeniedError):
        broker.erasure.erase(
            Actor.staff("s", Role.SUPPORT),
            "c-1",
            relationship_ended_at=datetime(2020, 1, 1, tzinfo=UTC),
            reason="r",
        )
    assert broker.repository.get(Till, "c-1").holder == "Ana Lima"


# -- a client of the CRM: its own record says when it ended; money and accounts block --------
CLOSED_ON = datetime(2026, 3, 2, 10, tzinfo=UTC)
BO = Registration(
    ClientKind.INDIVIDUAL, "GB", "Bo Chen", "bo.chen@example.org", "07400 123456",
    owner_id="staff:rep-1",
)  # fmt: skip
REP = Actor.staff("rep-1", Role.SALES)
PORTAL = Actor.system("portal", Role.PORTAL)
DESK = Actor.staff("desk-1", Role.SUPPORT)


class FakeServer:
    """Answers account_state only (what the checks ask); other calls are not made."""

    name = "sim-mt5"

    def __init__(self) -> None:
        self.states: dict[int, AccountState] = {}

    def account_state(self, login: int) -> AccountState:
        if login not in self.states:
            raise TradingServerError("no such login")
        return self.states[login]


def crm(server: FakeServer | None = None) -> tuple[Broker, FixedClock, str]:
    clock = FixedClock(CLOSED_ON - timedelta(days=400))
    broker = Broker.in_memory(clock=clock, keyring=MasterKeyring.generate(), identity_key=b"i" * 32)
    servers = {"sim-mt5": server or FakeServer()}
    broker.erasure.checks = BrokerErasureChecks(
        broker.repository, broker.projections, broker.ledger, broker.lifecycle.accounts_of, servers
    )
    bo = broker.clients.register(PORTAL, BO)
    return broker, clock, bo


def fund(broker: Broker, client_id: str, amount: str, transfer_id: str) -> str:
    money = MoneyAccounts(broker.ledger)
    wallet = money.wallet(client_id, Currency.of("USD"))
    clearing = money.broker("psp_clearing", Currency.of("USD"))
    request = TransferRequest(transfer_id, clearing, wallet, Money.of(amount, "USD"))
    broker.ledger.transfer(request)
    return wallet


def close(broker: Broker, clock: FixedClock, client_id: str) -> None:
    clock.set(CLOSED_ON)
    broker.clients.move(REP, client_id, Stage.CLOSED)
    clock.set(CLOSED_ON + timedelta(days=5 * 366 + 1))


def test_a_client_is_erased_only_once_closed_and_its_money_gone() -> None:
    broker, clock, bo = crm()
    wallet = fund(broker, bo, "495.50", "dep-1")
    before = broker.store.last_position()
    # The caller's 2020 is not the client's record: Bo is not closed (erased before).
    with pytest.raises(RetentionHoldError, match="not closed"):
        broker.erasure.erase(
            OFFICER, bo, relationship_ended_at=datetime(2020, 1, 1, tzinfo=UTC), reason="r"
        )
    close(broker, clock, bo)
    with pytest.raises(ErasureBlockedError) as blocked:
        broker.erasure.erase(OFFICER, bo, reason="r")
    assert blocked.value.remaining == ("balance",)
    assert isinstance(blocked.value, RetentionHoldError)
    # The money leaves as a hold first: both still block.
    clearing = MoneyAccounts(broker.ledger).broker("psp_clearing", Currency.of("USD"))
    out = TransferRequest("wd-1", wallet, clearing, Money.of("495.50", "USD"), pending=True)
    broker.ledger.transfer(out)
    with pytest.raises(ErasureBlockedError) as held:
        broker.erasure.erase(OFFICER, bo, reason="r")
    assert held.value.remaining == ("balance", "hold")
    # A date that differs from the client's record is refused, not recorded.
    broker.ledger.post_pending("wd-1")
    with pytest.raises(ValidationError, match="2026-03-02"):
        broker.erasure.erase(
            OFFICER, bo, relationship_ended_at=datetime(2020, 1, 1, tzinfo=UTC), reason="r"
        )
    assert not any(
        s.event_type == "SubjectErased" for s in broker.store.read_all(after_position=before)
    )

    receipt = broker.erasure.erase(OFFICER, bo, reason="GDPR art. 17 request")
    assert receipt.key_destroyed
    erased = [
        broker.codec.decode(s).event
        for s in broker.store.read_all(after_position=before)
        if s.event_type == "SubjectErased"
    ]
    assert erased == [SubjectErased(bo, CLOSED_ON, datetime(2031, 3, 2, 10, tzinfo=UTC))]
    erased_name = broker.repository.get(Client, bo).name
    assert erased_name is not None
    assert erased_name.erased
    assert erased_name.reveal() is ERASED
    # The person may register again; the refusal of a duplicate names no erased client.
    assert broker.clients.find_by_email(OFFICER, BO.email) is None
    again = broker.clients.register(PORTAL, BO)
    assert again != bo
    with pytest.raises(DuplicateClientError) as duplicate:
        broker.clients.register(DESK, BO)
    assert duplicate.value.existing_client_id == again
    assert set(duplicate.value.matched_on) == {"email", "phone"}
    # Erasing again finishes quietly.
    assert not broker.erasure.erase(OFFICER, bo, reason="r").key_destroyed


def test_an_open_trading_account_blocks_erasure() -> None:
    server = FakeServer()
    broker, clock, bo = crm(server)
    with broker.unit_of_work(DESK) as uow:
        uow.record(
            TradingAccount.blank("acc-1"),
            TradingAccountOpened("acc-1", bo, "sim-mt5", 7001, "std", "USD", 100, True),
        )
        uow.commit()
    close(broker, clock, bo)
    usd = Money.zero(Currency.of("USD"))
    for state, blocks in [
        (None, True),  # the server cannot tell: open
        (AccountState(7001, "std", 100, True, usd, usd, usd), True),
        (AccountState(7001, "std", 100, False, Money.of("1", "USD"), usd, usd), True),
        (AccountState(7001, "std", 100, False, usd, usd, usd), False),  # disabled and empty
    ]:
        if state is not None:
            server.states[7001] = state
        if blocks:
            with pytest.raises(ErasureBlockedError) as blocked:
                broker.erasure.erase(OFFICER, bo, reason="r")
            assert blocked.value.remaining == ("open account",)
        else:
            assert broker.erasure.erase(OFFICER, bo, reason="r").key_destroyed


def test_a_blocked_checkpoint_fails_loudly_and_a_retry_finishes(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    keys = SqliteKeyStore(SqliteDatabase(path), checkpoint_wait=0.3)
    enc = FieldEncryption(keys, MasterKeyring({"m1": bytes(32)}, "m1"))
    enc.encrypt_for("c-1", "ctx", b"Ana Lima")  # makes and stores c-1's data key
    wrapped = keys.get("c-1")
    assert wrapped is not None
    assert wrapped.wrapped
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM fx_data_keys").fetchone()  # holds a read snapshot
    with pytest.raises(StoreError, match="WAL"):
        keys.destroy("c-1", NOW)
    reader.rollback()
    reader.close()
    assert keys.destroy("c-1", NOW) is False  # already destroyed; this call checkpoints
    keys.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert wrapped.wrapped not in raw
