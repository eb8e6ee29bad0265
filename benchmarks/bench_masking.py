"""The cost of masking a client's personal data on read, as a ratio to the same reads unmasked
in the same run (same SQLite file, same clients, same process; median of paired rounds).

Masked: ``Clients.get`` for a support agent under the default masking policy (name in full,
e-mail, phone and birth date partial, address hidden). Unmasked: the same ``Clients.get`` for
the same actor through a policy that shows the support role everything in full, so the only
difference is the masking itself. Every client has all five personal fields. Target: masking
costs at most 1.3x.

    python benchmarks/bench_masking.py [--quick] [--clients N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from fxcrm_core.access import Actor, Role
from fxcrm_core.broker import Broker
from fxcrm_core.clients import ClientKind, ClientRegistered, Clients, Stage
from fxcrm_core.clients.model import Client, ProfileUpdated
from fxcrm_core.events import EventMetadata, UnitOfWork
from fxcrm_core.kernel import FixedClock
from fxcrm_core.privacy import DEFAULT_MASKING, MaskingPolicy, MasterKeyring, PiiKind, Reveal

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
TARGET = 1.3
CHUNK = 250
SUPPORT = Actor.staff("sam", Role.SUPPORT)


def populate(broker: Broker, count: int) -> list[str]:
    """``count`` clients with every personal field, appended in batches (not the subject of
    the measure, so not through registration's deduplication)."""
    ids = [f"c-{n:06d}" for n in range(count)]
    for start in range(0, count, 500):
        with UnitOfWork(broker.repository, EventMetadata("system:bench", reason="seed")) as uow:
            for n, cid in enumerate(ids[start : start + 500], start):
                uow.record(
                    Client.blank(cid),
                    ClientRegistered(
                        cid,
                        ClientKind.INDIVIDUAL,
                        "GB",
                        Stage.REGISTERED,
                        None,
                        f"Client Number {n}",
                        f"client.{n}@example.com",
                        f"+44791{n % 1000000:06d}",
                    ),
                    ProfileUpdated(
                        cid, None, date(1980, 1, 1 + n % 28).isoformat(), f"{n} High St"
                    ),
                )
            uow.commit()
    return ids


def read_all(clients: Clients, ids: list[str]) -> float:
    started = time.perf_counter()
    for cid in ids:
        clients.get(SUPPORT, cid)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    count, rounds = (200, 1) if args.quick else (args.clients, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker.sqlite(
            Path(tmp) / "bench.sqlite",
            clock=FixedClock(T0),
            keyring=MasterKeyring.generate(),
            identity_key=b"i" * 32,
        )
        ids = populate(broker, count)
        masked = broker.clients
        everything = MaskingPolicy({Role.SUPPORT: dict.fromkeys(PiiKind, Reveal.FULL)})
        clear = Clients(broker.repository, broker.access, masked.identities, masking=everything)
        assert masked.masking is DEFAULT_MASKING
        sample = ids[0]
        assert masked.get(SUPPORT, sample).email != clear.get(SUPPORT, sample).email
        read_all(clear, ids)  # warm: every key unwrapped once, statements prepared
        read_all(masked, ids)
        ratios, plain_times, masked_times = [], [], []
        for _ in range(rounds):
            # Chunks of the two reads interleaved (the order alternating), so drift in a
            # shared machine's speed falls on both alike.
            plain = shown = 0.0
            for n, start in enumerate(range(0, count, CHUNK)):
                chunk = ids[start : start + CHUNK]
                if n % 2:
                    shown += read_all(masked, chunk)
                    plain += read_all(clear, chunk)
                else:
                    plain += read_all(clear, chunk)
                    shown += read_all(masked, chunk)
            plain_times.append(plain)
            masked_times.append(shown)
            ratios.append(shown / plain)
    ratio = statistics.median(ratios)
    plain_rate = count / statistics.median(plain_times)
    masked_rate = count / statistics.median(masked_times)
    print(f"{count} client views on SQLite, support role, rounds {rounds}")
    print(f"{'read':<40}{'views/s':>12}")
    print(f"{'  unmasked (policy: support sees all)':<40}{plain_rate:>12,.0f}")
    print(f"{'  masked (default policy)':<40}{masked_rate:>12,.0f}")
    verdict = "" if ratio <= TARGET else "  ABOVE TARGET"
    print(f"ratio masked / unmasked: {ratio:.3f} (target <= {TARGET}){verdict}")
    print("per round: " + ", ".join(f"{r:.3f}" for r in ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
