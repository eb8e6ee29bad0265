"""The cost of PII field encryption on event append and replay, as a ratio to the same run
without it (same store, same events, same process; median of paired rounds).

Two workloads: every event carries three PII fields (the worst case), and a realistic mix where
one event in ten does (profile changes among money movements). Keys exist before timing starts:
creating a subject's key happens once per client lifetime, at registration.

    python benchmarks/bench_encryption.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import attrs

from fxcrm_core.broker import Broker, BrokerOptions
from fxcrm_core.events import Aggregate, DomainEvent, pii
from fxcrm_core.kernel import FixedClock, Money, ValidationError
from fxcrm_core.privacy import MasterKeyring

T0 = datetime(2026, 3, 9, 12, tzinfo=UTC)


@attrs.frozen
class BenchProfileChanged(DomainEvent):
    __subject__ = "client_id"
    client_id: str
    name: str = pii()
    email: str = pii()
    phone: str = pii()


@attrs.frozen
class Funded(DomainEvent):
    amount: Money
    reference: str


@attrs.frozen(kw_only=True)
class Profile(Aggregate):
    category = "profile"
    updates: int = 0
    funded: Money = attrs.field(factory=lambda: Money.zero("USD"))

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, BenchProfileChanged):
            return self.evolve(updates=self.updates + 1)
        if isinstance(event, Funded):
            return self.evolve(funded=self.funded + event.amount)
        raise ValidationError("unexpected event")


def _events(subject: str, count: int, pii_every: int) -> list[DomainEvent]:
    out: list[DomainEvent] = []
    for i in range(count):
        if i % pii_every == 0:
            out.append(
                BenchProfileChanged(
                    subject, f"Client Name {i}", f"c{i}@example.com", "+447911123456"
                )
            )
        else:
            out.append(Funded(Money.from_minor(1000 + i, "USD"), f"psp-{subject}-{i}"))
    return out


def _broker(kind: str, directory: Path, encrypted: bool) -> Broker:
    options: BrokerOptions = {
        "events": (BenchProfileChanged, Funded),
        "identity_key": b"benchmark deduplication key, 32 bytes",
    }
    if encrypted:
        options["keyring"] = MasterKeyring({"m1": bytes(32)}, "m1")
    else:
        options["allow_clear_pii"] = True  # the baseline: the same events in clear
    clock = FixedClock(T0)
    if kind == "memory":
        return Broker.in_memory(clock=clock, **options)
    name = "enc" if encrypted else "plain"
    return Broker.sqlite(directory / f"{name}.sqlite", clock=clock, **options)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_once(
    kind: str, encrypted: bool, subjects: int, per_subject: int, pii_every: int
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        broker = _broker(kind, Path(tmp), encrypted)
        if broker.encryption is not None:  # keys exist already: made once, at registration
            for s in range(subjects):
                broker.encryption.encrypt_for(f"c{s}", "warm-up", b"x")
        batches = [(f"c{s}", _events(f"c{s}", per_subject, pii_every)) for s in range(subjects)]

        def append() -> None:
            for subject, events in batches:
                with broker.unit_of_work("bench") as uow:
                    uow.record(Profile.blank(subject), *events)
                    uow.commit()

        def replay() -> None:
            decode = broker.codec.decode
            position = 0
            while chunk := broker.store.read_all(after_position=position, limit=5000):
                for stored in chunk:
                    decode(stored)
                position = chunk[-1].position

        result = (_timed(append), _timed(replay))
        broker.close()
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    subjects, per_subject, rounds = (20, 10, 1) if args.quick else (1000, 20, args.rounds)
    n = subjects * per_subject
    print(f"{n} events per run, {subjects} clients, rounds {rounds}")
    print(f"{'workload':<46}{'append x':>9}{'replay x':>9}{'target':>9}  events/s plain->enc")
    failed = 0
    for kind in ("memory", "sqlite"):
        for label, pii_every in (
            ("every event has 3 PII fields", 1),
            ("1 event in 10 has PII", 10),
        ):
            appends, replays, rates = [], [], []
            for _ in range(rounds):
                plain = run_once(kind, False, subjects, per_subject, pii_every)
                enc = run_once(kind, True, subjects, per_subject, pii_every)
                appends.append(enc[0] / plain[0])
                replays.append(enc[1] / plain[1])
                rates.append((n / plain[0], n / enc[0]))
            a, r = statistics.median(appends), statistics.median(replays)
            ok = a <= 1.5 and r <= 1.5
            failed += not ok
            p_rate = statistics.median(x for x, _ in rates)
            e_rate = statistics.median(y for _, y in rates)
            print(
                f"  {kind + ': ' + label:<44}{a:>9.2f}{r:>9.2f}{'<= 1.5':>9}"
                f"  {p_rate:,.0f} -> {e_rate:,.0f}{'' if ok else '  ABOVE TARGET'}"
            )
    print("\nall within target" if not failed else f"\n{failed} workload(s) above target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
