"""Load on PostgreSQL: 10 processes for a fixed time — eight making deposits, ledger transfers and
commission postings, two running the policies as workers — then the books are checked: debits
equal credits in every currency, every command that succeeded is in the log exactly once and
nothing else is, positions are gapless, and a read model (the clients' fund flows) equals the
ledger folded afresh. Figures (events/s, transfers/s) are printed, never asserted."""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.events import iter_all
from fxcrm_core.kernel import FixedClock, FxCrmError, Money
from fxcrm_core.ledger import LedgerAccount, TransferRequest
from fxcrm_core.payments import PaymentLimits
from fxcrm_core.privacy import MasterKeyring
from tests import parity_scenarios as ps
from tests.pg import pg_dsn

__all__ = ["pg_dsn"]

pytestmark = pytest.mark.postgres

SECONDS = 6.0
MAKERS, WORKERS = 8, 2
HOUSE = [f"house-{n}" for n in range(4)]


def open_broker(dsn: str) -> Broker:
    return Broker.postgres(
        dsn,
        clock=FixedClock(ps.T0),
        keyring=MasterKeyring({"m1": bytes(range(32))}, "m1"),
        identity_key=b"parity-test deduplication key, 32+ bytes",
        payment_limits=PaymentLimits([Money.of("50000", "USD")]),
        policies="worker",
        max_size=2,
    )


def set_up(dsn: str) -> list[str]:
    """One verified client per maker, house and IB accounts; returns the client ids."""
    broker = open_broker(dsn)
    try:
        clients = []
        for n in range(MAKERS):
            client = ps.register(broker, f"Client {n}", f"client{n}@example.com")
            broker.clock.set(ps.T0)  # type: ignore[attr-defined]
            ps.approve(broker, ps.submit(broker, client, "passport"))
            ps.approve(broker, ps.submit(broker, client, "proof_of_address"))
            clients.append(client)
        broker.clock.advance(hours=2)  # type: ignore[attr-defined]
        usd = Money.zero("USD").currency
        for account in HOUSE:
            broker.ledger.open_account(account, owner="broker", currency=usd, purpose="house")
        broker.ledger.open_account(
            "rebate_expense:USD", owner="broker", currency=usd, purpose="rebate_expense"
        )
        for n in range(MAKERS):
            broker.ledger.open_account(
                f"ib-wallet:ib-{n}:USD", owner=f"ib-{n}", currency=usd, purpose="ib_wallet"
            )
        broker.run_policies()
        return clients
    finally:
        broker.close()


def maker(dsn: str, index: int, client: str, go: Any, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Deposits for its client, transfers between house accounts, commission postings."""
    broker = open_broker(dsn)
    out.put(("ready", index, [], 0))
    go.wait()
    until = time.monotonic() + SECONDS
    rng = random.Random(index)
    done: list[tuple[str, str, str, str, str]] = []  # (kind, id, debit, credit, amount)
    refused = 0
    n = 0
    try:
        broker.clock.set(ps.T0 + timedelta(hours=3))  # type: ignore[attr-defined]
        while time.monotonic() < until:
            n += 1
            amount = Money.of(Decimal(rng.randint(1, 50_000)) / 100, "USD")
            roll = rng.random()
            try:
                if roll < 0.3:
                    ref = f"psp-{index}-{n}"
                    deposit_id = broker.deposits.initiate(
                        Actor.client(client), client, amount, psp="acq", method="card"
                    )
                    broker.deposits.psp_confirmed(deposit_id, ref, amount)
                    done.append(("deposit", deposit_id, "", client, str(amount.amount)))
                elif roll < 0.7:
                    a, b = rng.sample(HOUSE, 2)
                    tid = f"load:{index}:{n}"
                    broker.ledger.transfer(TransferRequest(tid, a, b, amount), actor="system:load")
                    done.append(("transfer", tid, a, b, str(amount.amount)))
                else:
                    tid = f"commission:{index}:{n}"
                    wallet = f"ib-wallet:ib-{index}:USD"
                    request = TransferRequest(tid, "rebate_expense:USD", wallet, amount)
                    broker.ledger.transfer(request, actor="system:load")
                    posted = ("commission", tid, "rebate_expense:USD", wallet, str(amount.amount))
                    done.append(posted)
            except FxCrmError:
                refused += 1  # a conflict or a limit: refused whole, nothing written
    finally:
        broker.close()
    out.put(("maker", index, done, refused))


def policy_worker(dsn: str, index: int, go: Any, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    broker = open_broker(dsn)
    out.put(("ready", index, [], 0))
    go.wait()
    until = time.monotonic() + SECONDS
    handled = 0
    try:
        while time.monotonic() < until:
            # (another worker committing first is refused: the next pass goes on from there)
            with contextlib.suppress(FxCrmError):
                handled += broker.run_policies()
            time.sleep(0.05)
    finally:
        broker.close()
    out.put(("worker", index, handled, 0))


@pytest.mark.slow
def test_eight_processes_under_load_keep_the_books_exact(pg_dsn: str) -> None:
    clients = set_up(pg_dsn)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    go = ctx.Event()  # every process opened its broker first (spawned interpreters import)
    procs = [
        ctx.Process(target=maker, args=(pg_dsn, i, clients[i], go, out)) for i in range(MAKERS)
    ]
    procs += [ctx.Process(target=policy_worker, args=(pg_dsn, i, go, out)) for i in range(WORKERS)]
    for p in procs:
        p.start()
    ready = [out.get(timeout=180) for _ in procs]
    assert all(r[0] == "ready" for r in ready)
    go.set()
    reports = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    made = [r for r in reports if r[0] == "maker"]
    done = [entry for r in made for entry in r[2]]
    assert done, "the makers did nothing"
    assert sum(r[2] for r in reports if r[0] == "worker") > 0, "the workers handled nothing"

    broker = open_broker(pg_dsn)  # a fresh process's view: the log folded afresh
    try:
        while broker.run_policies():
            pass
        rows = list(iter_all(broker.store))
        positions = [r.position for r in rows]
        assert positions == list(range(1, len(rows) + 1))  # gapless, in order
        # Debits equal credits: every ledger account's posted net sums to zero, per currency.
        prefix = f"{LedgerAccount.category}-"
        accounts = sorted(
            {r.stream_id[len(prefix) :] for r in rows if r.stream_id.startswith(prefix)}
        )
        totals: Counter[str] = Counter()
        balances = broker.ledger.balances(accounts)
        for b in balances.values():
            totals[b.net_credit.currency.code] += b.net_credit.amount  # type: ignore[assignment]
        assert all(v == 0 for v in totals.values()), totals
        # Every success is recorded once, and the ledger holds exactly them.
        ids = [d[1] for d in done]
        assert len(ids) == len(set(ids))
        expected: Counter[str] = Counter()
        for kind, _, debit, credit, amount in done:
            if kind != "deposit":
                expected[debit] -= Decimal(amount)  # type: ignore[assignment]
                expected[credit] += Decimal(amount)  # type: ignore[assignment]
        for account in [*HOUSE, "rebate_expense:USD"]:
            assert balances[account].net_credit.amount == expected[account]
        for n in range(MAKERS):
            wallet = f"ib-wallet:ib-{n}:USD"
            assert balances[wallet].net_credit.amount == expected[wallet]
        # The read model (fund flows) equals the ledger folded afresh, client by client.
        officer = Actor.staff("ops", Role.COMPLIANCE)
        for n, client in enumerate(clients):
            deposited = sum(
                (Decimal(d[4]) for d in done if d[0] == "deposit" and d[3] == client), Decimal(0)
            )
            statement = broker.fund_flows.statement(
                officer, client, ps.T0 - timedelta(days=1), ps.T0 + timedelta(days=2)
            )
            into = sum((line.amount.amount for line in statement.lines), Decimal(0))
            assert into == deposited, n
        events = len(rows)
    finally:
        broker.close()
    transfers = sum(1 for d in done if d[0] != "deposit")
    print(
        f"\nPostgreSQL load, {MAKERS} makers + {WORKERS} policy workers for {SECONDS:.0f} s: "
        f"{events / SECONDS:,.0f} events/s, {transfers / SECONDS:,.0f} transfers/s, "
        f"{sum(1 for d in done if d[0] == 'deposit') / SECONDS:,.0f} deposits/s, "
        f"refused {sum(r[3] for r in made)}"
    )
