"""A host app embedding fxcrm_core on SQLite: its own event and aggregate, idempotent callbacks,
a read model, and a restart that replays the log. CI runs this file."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import attrs

from fxcrm_core.broker import Broker, BrokerOptions
from fxcrm_core.events import Aggregate, DomainEvent, RecordedEvent, pii
from fxcrm_core.kernel import FixedClock, Money, NegativeAmountError, ValidationError
from fxcrm_core.privacy import MasterKeyring

# A host loads these from its KMS; they must stay the same for the life of the log.
SECRETS: BrokerOptions = {
    "keyring": MasterKeyring({"master-1": bytes(range(32))}, "master-1"),
    "identity_key": b"example deduplication secret, 32+ bytes",
}


@attrs.frozen
class BonusAccountOpened(DomainEvent):
    __subject__ = "client_id"
    client_id: str
    client_name: str = pii()


@attrs.frozen
class BonusGranted(DomainEvent):
    amount: Money
    campaign: str


@attrs.frozen
class BonusUsed(DomainEvent):
    amount: Money


@attrs.frozen(kw_only=True)
class BonusAccount(Aggregate):
    """The host's own aggregate: bonus credit a client may spend on trading fees."""

    category = "bonus"
    client_id: str = ""
    available: Money = attrs.field(factory=lambda: Money.zero("USD"))

    def apply(self, event: DomainEvent) -> Self:
        match event:
            case BonusAccountOpened(client_id=client_id):
                return self.evolve(client_id=client_id)
            case BonusGranted(amount=amount):
                return self.evolve(available=self.available + amount)
            case BonusUsed(amount=amount):
                return self.evolve(available=self.available - amount)
        raise ValidationError(f"BonusAccount cannot apply {type(event).__name__}")

    def grant(self, amount: Money, campaign: str) -> list[DomainEvent]:
        return [BonusGranted(amount.require_positive("bonus"), campaign)]

    def use(self, amount: Money) -> list[DomainEvent]:
        if amount.require_positive("bonus use") > self.available:
            raise NegativeAmountError("not enough bonus")
        return [BonusUsed(amount)]


class GrantedPerCampaign:
    name = "granted-per-campaign"
    event_types = frozenset({"host.BonusGranted"})  # a host's events live under "host."

    def __init__(self) -> None:
        self.totals: dict[str, Money] = {}
        self.seen = 0

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if recorded.position <= self.seen or not isinstance(event, BonusGranted):
            return
        self.seen = recorded.position
        self.totals[event.campaign] = self.totals.get(event.campaign, Money.zero("USD")) + (
            event.amount
        )

    def reset(self) -> None:
        self.totals.clear()
        self.seen = 0


EVENTS = (BonusAccountOpened, BonusGranted, BonusUsed)


def main() -> None:
    path = Path(tempfile.mkdtemp()) / "host.sqlite"
    clock = FixedClock(datetime(2026, 11, 2, 9, tzinfo=UTC))
    broker = Broker.sqlite(path, clock=clock, events=EVENTS, **SECRETS)

    with broker.unit_of_work("system:signup") as uow:
        account = uow.record(BonusAccount.blank("c-1"), BonusAccountOpened("c-1", "Ana Lima"))
        uow.commit()

    # The marketing service calls us at least once per grant: the key makes retries harmless.
    for request in ["grant-1", "grant-2", "grant-1"]:
        account = broker.repository.get(BonusAccount, "c-1")
        with broker.unit_of_work("svc:marketing", correlation_id=request) as uow:
            uow.record(account, *account.grant(Money.of("25", "USD"), "welcome"))
            uow.commit(idempotency_key=request)

    account = broker.repository.get(BonusAccount, "c-1")
    try:
        account.use(Money.of("80", "USD"))
    except NegativeAmountError as refused:
        print("refused:", refused)
    with broker.unit_of_work("svc:billing", reason="fee offset") as uow:
        uow.record(account, *account.use(Money.of("30", "USD")))
        uow.commit()

    view = GrantedPerCampaign()
    broker.projections.catch_up(view)
    broker.close()

    # A restart: a new Broker on the same file replays to the same state.
    again = Broker.sqlite(path, clock=clock, events=EVENTS, **SECRETS)
    replayed = again.repository.get(BonusAccount, "c-1")
    assert replayed.available == Money.of("20", "USD"), replayed
    assert view.totals == {"welcome": Money.of("50", "USD")}, view.totals
    # A memory read model is rebuilt from the log in each process: the new one reads it all.
    rebuilt = GrantedPerCampaign()
    again.projections.catch_up(rebuilt)
    assert rebuilt.totals == view.totals, rebuilt.totals
    print("bonus available after restart:", replayed.available)
    print("granted per campaign:", {k: str(v) for k, v in view.totals.items()})
    again.close()


if __name__ == "__main__":
    main()
