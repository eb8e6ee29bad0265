"""Issue 18's benchmark: every scheduled engagement rule for 100,000 clients for one day
(birthdays, a birthday offer to one segment, documents expiring, a month after sign-up), the
outbox written, on SQLite; clients/s and the ratio to a hand-written loop over the same rows in
the same run.

The input log (clients registered through the broker, with birth dates, consents and
registration times spread over 60 days; personal data stored in clear: allow_clear_pii) is
generated once and cached in $TMPDIR/fxcrm-bench-engagement/ (not timed). Each run copies it.

* SDK: ``EngagementRules.run_due(now, uow, clients)`` in units of work of ``--batch`` clients,
  each committed (what ``Broker.queue_scheduled_messages`` does), through the library's
  ``ClientAudience`` (each client's stream read and folded), documents and segments from host
  maps (as a host's read models would answer).
* Loop: one SQL pass over the client streams' rows (JSON decoded by hand), the same decisions
  written with one executemany into a table of its own.

The keys the two write are compared.

    python benchmarks/bench_engagement.py [--quick] [--clients N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, Consent, Registration
from fxcrm_core.engagement import (
    CATCH_UP_DAYS,
    Audience,
    Channel,
    ClientAudience,
    EngagementRule,
    EngagementRules,
    MessageKind,
    Outbox,
    RulePeriod,
    Scheduled,
    observed_birthday,
)
from fxcrm_core.events import EventMetadata, UnitOfWork
from fxcrm_core.kernel import FixedClock

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START = datetime(2026, 1, 5, 12, tzinfo=UTC)  # registrations spread over 60 days from here
DAY = date(2026, 3, 20)  # the day evaluated
NOW = datetime(2026, 3, 20, 12, tzinfo=UTC)  # noon UTC: the same local date in every zone below
ZONES = {"GB": "Europe/London", "DE": "Europe/Berlin", "JP": "Asia/Tokyo", "AE": "Asia/Dubai"}
COUNTRIES = tuple(ZONES)
SEGMENTS = ("loyal", "potential", "at_risk", "lost")
RULES = (
    EngagementRule(
        rule_id="birthday", trigger=Scheduled.birthday(), template="birthday",
        channel=Channel.EMAIL, kind=MessageKind.MARKETING, period=RulePeriod.YEAR,
    ),
    EngagementRule(
        rule_id="vip-birthday", trigger=Scheduled.birthday(), template="birthday",
        channel=Channel.SMS, kind=MessageKind.MARKETING, period=RulePeriod.YEAR,
        audience=Audience(segments=("loyal",)),
    ),
    EngagementRule(
        rule_id="kyc-expiring", trigger=Scheduled.document_expiring(30),
        template="kyc-expiring", channel=Channel.EMAIL, kind=MessageKind.SERVICE,
        period=RulePeriod.DAY,
    ),
    EngagementRule(
        rule_id="month-one", trigger=Scheduled.days_after("ClientRegistered", 30),
        template="news", channel=Channel.EMAIL, kind=MessageKind.MARKETING,
    ),
)  # fmt: skip


def _segment(client_id: str) -> str:
    return SEGMENTS[int(hashlib.sha256(client_id.encode()).hexdigest()[:4], 16) % 4]


def _documents(client_id: str) -> list[tuple[str, str, date]]:
    """One passport in ten clients, expiring within 60 days of the day (a host's register)."""
    n = int(hashlib.sha256(b"doc" + client_id.encode()).hexdigest()[:6], 16)
    if n % 10:
        return []
    return [(f"doc-{client_id}", "passport", DAY + timedelta(days=1 + n % 60))]


# -- the input log --------------------------------------------------------------------------------


def input_log(clients: int) -> tuple[Path, float, bool]:
    folder = Path(tempfile.gettempdir()) / "fxcrm-bench-engagement"
    folder.mkdir(exist_ok=True)
    path = folder / f"input-{clients}.sqlite"
    if path.exists():
        return path, 0.0, True
    work = path.with_suffix(".partial")
    work.unlink(missing_ok=True)
    started = time.perf_counter()
    clock = FixedClock(START)
    broker = Broker.sqlite(work, clock=clock, allow_clear_pii=True, identity_key=b"b" * 32)
    portal, rep = Actor.system("portal", Role.PORTAL), Actor.staff("rep-1", Role.SALES)
    rng = random.Random(18)
    step = timedelta(days=60) / clients
    for i in range(clients):
        clock.set(START + step * i)
        registration = Registration(
            ClientKind.INDIVIDUAL, COUNTRIES[i % 4], f"Client {i}", f"c{i}@example.com",
            owner_id="staff:rep-1",
        )  # fmt: skip
        cid = broker.clients.register(portal, registration)
        born = date(1950 + rng.randrange(50), 1, 1) + timedelta(days=rng.randrange(365))
        broker.clients.update_profile(rep, cid, birth_date=born)
        if i % 3 == 0:
            broker.clients.give_consent(Actor.client(cid), cid, Consent.MARKETING)
    broker.close()
    work.rename(path)
    return path, time.perf_counter() - started, False


# -- the SDK ------------------------------------------------------------------------------------


def run_sdk(path: Path, batch: int) -> tuple[float, int, list[str]]:
    clock = FixedClock(NOW)
    broker = Broker.sqlite(path, clock=clock, allow_clear_pii=True, identity_key=b"b" * 32)
    clients = [
        row[0].removeprefix("client-")
        for row in sqlite3.connect(path).execute(
            "SELECT stream_id FROM fx_events WHERE event_type = 'ClientRegistered' "
            "ORDER BY position"
        )
    ]
    audience = ClientAudience(
        broker.repository, zones=ZONES, segment_of=_segment, documents_of=_documents
    )
    rules = EngagementRules(Outbox(), RULES, audience, clock=clock)
    started = time.perf_counter()
    queued = 0
    for i in range(0, len(clients), batch):
        with UnitOfWork(broker.repository, EventMetadata("system:bench", reason="day")) as uow:
            count = rules.run_due(NOW, uow, clients[i : i + batch])
            if count:
                uow.commit()
        queued += count
    seconds = time.perf_counter() - started
    broker.close()
    keys = [
        row[0].removeprefix("outbox-")
        for row in sqlite3.connect(path).execute(
            "SELECT stream_id FROM fx_events WHERE event_type = 'MessageQueued'"
        )
    ]
    return seconds, len(clients), sorted(keys)


# -- the hand-written loop ----------------------------------------------------------------------


def run_loop(path: Path) -> tuple[float, list[str]]:
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    people: dict[str, dict[str, object]] = {}
    for stream, etype, data, recorded in conn.execute(
        "SELECT stream_id, event_type, data, recorded_at FROM fx_events "
        "WHERE stream_id LIKE 'client-%' ORDER BY position"
    ):
        cid = stream[7:]
        if etype == "ClientRegistered":
            body = json.loads(data)
            people[cid] = {"country": body["country"], "registered": recorded, "born": None}
        elif etype == "ProfileUpdated":
            born = json.loads(data)["birth_date"]
            if born is not None:
                people[cid]["born"] = date.fromisoformat(born)
    zones = {c: ZoneInfo(z) for c, z in ZONES.items()}
    rows: list[tuple[str, str, str]] = []
    for cid, p in people.items():
        zone = zones[str(p["country"])]
        day = NOW.astimezone(zone).date()
        born = p["born"]
        if isinstance(born, date) and born <= day:
            for year in (day.year, day.year - 1):
                observed = observed_birthday(born, year)
                if 0 <= (day - observed).days <= CATCH_UP_DAYS:
                    label = str(observed.year)
                    rows.append((f"birthday:{label}:{cid}", cid, "birthday"))
                    if _segment(cid) == "loyal":
                        rows.append((f"vip-birthday:{label}:{cid}", cid, "vip-birthday"))
                    break
        for _, _, expires in _documents(cid):
            if day < expires and (expires - day).days <= 30:
                rows.append((f"kyc-expiring:{expires.isoformat()}:{cid}", cid, "kyc-expiring"))
        registered = p["registered"]  # microseconds since the epoch, UTC
        assert isinstance(registered, int)
        start = (EPOCH + timedelta(microseconds=registered)).astimezone(zone).date()
        if 0 <= (day - (start + timedelta(days=30))).days <= CATCH_UP_DAYS:
            rows.append((f"month-one:once:{cid}", cid, "month-one"))
    conn.execute("CREATE TABLE IF NOT EXISTS loop_outbox (key TEXT PRIMARY KEY, client, rule)")
    conn.execute("BEGIN")
    conn.executemany("INSERT OR IGNORE INTO loop_outbox VALUES (?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - started, sorted(r[0] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    clients = args.clients or (2_000 if args.quick else 100_000)
    source, generated, cached = input_log(clients)
    how = "cached" if cached else f"generated in {generated:.1f} s"
    print(
        f"{clients:,} clients; input log {source.stat().st_size / 1e6:,.0f} MB ({how}; not timed)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "engagement.sqlite"
        shutil.copyfile(source, work)
        t_loop, loop_keys = run_loop(work)
        t_sdk, n, sdk_keys = run_sdk(work, args.batch)
    print(f"messages queued: SDK {len(sdk_keys):,}, loop {len(loop_keys):,}")
    verdict = "agree" if sdk_keys == loop_keys else "DISAGREE"
    print(f"keys SDK vs loop: {verdict}")
    print(f"\n{'':44}{'seconds':>9}{'clients/s':>12}")
    print(f"  {'hand-written loop':42}{t_loop:9.2f}{n / t_loop:12,.0f}")
    print(f"  {'SDK: every rule, outbox written (SQLite)':42}{t_sdk:9.2f}{n / t_sdk:12,.0f}")
    print(f"\nratio SDK / hand-written loop (clients/s)  {t_loop / t_sdk:.3f}")
    sys.exit(0 if verdict == "agree" else 1)


if __name__ == "__main__":
    main()
