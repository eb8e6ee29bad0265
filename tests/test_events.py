"""The event core: codec, aggregates, repositories, units of work, projections, snapshots."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxcrm_core.events import (
    ERASED,
    Aggregate,
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventRegistry,
    EventStore,
    NewEvent,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    StoredEvent,
    StreamAppend,
    UnitOfWork,
    ValueCodec,
    iter_all,
    pii,
)
from fxcrm_core.kernel import (
    CodecError,
    ConcurrencyError,
    Currency,
    FixedClock,
    Money,
    NotFoundError,
    UnknownEventTypeError,
    ValidationError,
)
from fxcrm_core.stores import (
    MemoryEventStore,
    MemorySnapshotStore,
    SqliteDatabase,
    SqliteEventStore,
)
from tests.sample_domain import CashPaidIn, Till, TillOpened, registry

META = EventMetadata(actor="staff:7", correlation_id="req-1", reason="test")
USD = Currency.of("USD")


class ReversibleFieldCipher:
    """A toy field cipher (reversal) that also supports erasing a subject."""

    def __init__(self) -> None:
        self.erased: set[str] = set()

    def encrypt_for(self, subject_id: str, context: str, plaintext: bytes) -> str:
        return f"{subject_id}|{context}|{plaintext.decode()[::-1]}"

    def decrypt_for(self, subject_id: str, context: str, token: str) -> bytes | None:
        subject, bound, body = token.split("|", 2)
        if (subject, bound) != (subject_id, context):
            raise CodecError("token bound to another subject or context")
        return None if subject_id in self.erased else body[::-1].encode()


class XorPayloadCipher:
    def encrypt_payload(self, plaintext: bytes, associated_data: bytes) -> bytes:
        return associated_data + b"#" + bytes(b ^ 0x5A for b in plaintext)

    def decrypt_payload(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        ad, _, body = ciphertext.partition(b"#")
        if ad != associated_data:
            raise CodecError("payload bound to another stream")
        return bytes(b ^ 0x5A for b in body)


def make(store: EventStore | None = None, **codec_kwargs: Any) -> tuple[EventStore, Repository]:
    store = store or MemoryEventStore()
    return store, Repository(store, EventCodec(registry(), **codec_kwargs))


def open_till(repo: Repository, till_id: str = "t1", holder: str = "Ana Lima") -> Till:
    with UnitOfWork(repo, META) as uow:
        till = Till.blank(till_id)
        till = uow.record(till, *till.open("USD", holder))
        uow.commit()
    return till


# -- codec -------------------------------------------------------------------------------
def test_codec_round_trips_events_and_metadata() -> None:
    codec = EventCodec(registry())
    event = CashPaidIn(Money.of("12.34", "USD"))
    new = codec.encode("till-1", event, META)
    assert json.loads(new.data) == {"amount": "12.34 USD"}
    assert codec.decode_event("till-1", new.event_type, new.data) == event
    assert codec.decode_metadata(new.metadata) == META


def test_unknown_and_unregistered_types_are_typed_errors() -> None:
    codec = EventCodec(registry())
    with pytest.raises(UnknownEventTypeError):
        codec.decode_event("s", "NoSuchEvent", b"{}")

    @attrs.frozen
    class Stray(DomainEvent):
        x: int

    with pytest.raises(UnknownEventTypeError):
        codec.encode("s", Stray(1), META)


def test_corrupt_payloads_are_codec_errors_that_do_not_echo_data() -> None:
    codec = EventCodec(registry())
    with pytest.raises(CodecError):
        codec.decode_event("s", "CashPaidIn", b"\xff\xfe")
    with pytest.raises(CodecError) as info:
        codec.decode_event("s", "TillOpened", b'{"till_id":"t-secret","currency":"XXQ"}')
    assert "TillOpened" in str(info.value)
    assert "secret" not in str(info.value)
    assert info.value.__cause__ is None


def test_values_json_cannot_hold_are_codec_errors() -> None:
    @attrs.frozen
    class Odd(DomainEvent):
        value: object

    reg = EventRegistry()
    reg.register(Odd)
    codec = EventCodec(reg)
    with pytest.raises(CodecError):
        codec.encode("s", Odd(float("nan")), META)
    with pytest.raises(CodecError):
        codec.encode("s", Odd(object()), META)


def test_registry_refuses_pii_without_subject_and_duplicate_names() -> None:
    @attrs.frozen
    class Leaky(DomainEvent):
        name: str = pii()

    reg = EventRegistry()
    with pytest.raises(ValidationError):
        reg.register(Leaky)
    reg.register(CashPaidIn)
    with pytest.raises(ValidationError):
        reg.register(TillOpened, name="CashPaidIn")


def test_upcasting_old_versions_through_named_steps() -> None:
    @attrs.frozen
    class FeeCharged(DomainEvent):
        amount: Money
        reason: str

    old = EventRegistry()
    old.register(FeeCharged, version=1)
    v1 = EventCodec(old).encode("s", FeeCharged(Money.of(1, "USD"), "x"), META)
    legacy = b'{"fee":"1.00","ccy":"USD"}'  # how version 1 really looked

    new = EventRegistry()
    new.register(FeeCharged, version=3)

    @new.upcaster("FeeCharged", from_version=1)
    def _money_in_one_field(d: dict[str, Any]) -> dict[str, Any]:
        return {"amount": f"{d['fee']} {d['ccy']}"}

    @new.upcaster("FeeCharged", from_version=2)
    def _add_reason(d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "reason": "unspecified"}

    codec = EventCodec(new)
    assert codec.decode_event("s", "FeeCharged", legacy) == FeeCharged(
        Money.of(1, "USD"), "unspecified"
    )
    assert v1.event_type == "FeeCharged"
    current = codec.encode("s", FeeCharged(Money.of(2, "USD"), "late"), META)
    assert json.loads(current.data)["_v"] == 3
    decoded = codec.decode_event("s", "FeeCharged", current.data)
    assert isinstance(decoded, FeeCharged)
    assert decoded.reason == "late"
    with pytest.raises(CodecError):
        EventCodec(new).decode_event("s", "FeeCharged", b'{"_v":0}')


def test_field_cipher_hook_encrypts_pii_and_erasure_reads_as_marker() -> None:
    cipher = ReversibleFieldCipher()
    store, repo = make(field_cipher=cipher)
    open_till(repo, "t1", "Ana Lima")
    open_till(repo, "t2", "Bo Chen")
    raw = b"".join(e.data for e in store.read_all())
    assert b"Ana Lima" not in raw
    assert b"Bo Chen" not in raw
    assert repo.get(Till, "t1").holder == "Ana Lima"
    cipher.erased.add("t1")
    repo.forget()  # cached states were decrypted before: the erasure service does this too
    erased = repo.get(Till, "t1")
    assert erased.holder is ERASED
    assert erased.balance == Money.zero("USD")
    assert repo.get(Till, "t2").holder == "Bo Chen"


def test_field_tokens_are_bound_to_subject_and_field() -> None:
    codec = EventCodec(registry(), field_cipher=ReversibleFieldCipher())
    new = codec.encode("till-a", TillOpened("a", USD, "Ana"), META)
    moved = new.data.replace(b'"till_id":"a"', b'"till_id":"b"')
    with pytest.raises(CodecError):
        codec.decode_event("till-b", "TillOpened", moved)


def test_payload_cipher_hook_wraps_the_whole_payload() -> None:
    store, repo = make(payload_cipher=XorPayloadCipher())
    open_till(repo, "t1", "Ana Lima")
    stored = store.read_all()[0]
    assert stored.data.startswith(b"e")
    assert b"Ana" not in stored.data
    assert repo.get(Till, "t1").holder == "Ana Lima"
    with pytest.raises(CodecError):
        repo.codec.decode_event("till-other", stored.event_type, stored.data)
    with pytest.raises(CodecError):
        EventCodec(registry()).decode_event(stored.stream_id, stored.event_type, stored.data)


def test_pii_is_hidden_from_reprs() -> None:
    assert "Ana" not in repr(TillOpened("t", USD, "Ana Lima"))
    assert "Ana" not in repr(Till(id="t", holder="Ana Lima"))


# -- aggregates, repository, unit of work ------------------------------------------------------
def test_commands_record_and_load_by_replay() -> None:
    _, repo = make()
    till = open_till(repo)
    with UnitOfWork(repo, META) as uow:
        till = uow.record(till, *till.pay_in(Money.of("100", "USD")))
        till = uow.record(till, *till.pay_out(Money.of("30.50", "USD")))
        result = uow.commit(idempotency_key="cmd-1")
    assert result.versions == {"till-t1": 3}
    loaded = repo.get(Till, "t1")
    assert loaded == till
    assert loaded.balance == Money.of("69.50", "USD")


def test_missing_aggregates() -> None:
    _, repo = make()
    assert repo.load(Till, "ghost") is None
    with pytest.raises(NotFoundError):
        repo.get(Till, "ghost")


def test_a_command_spanning_aggregates_commits_all_or_nothing() -> None:
    store, repo = make()
    a, b = open_till(repo, "a"), open_till(repo, "b")
    with UnitOfWork(repo, META) as uow:
        a = uow.record(a, *a.pay_in(Money.of(50, "USD")))
        uow.commit()
    stale_b = b
    with UnitOfWork(repo, META) as uow:  # someone else moves b meanwhile
        uow.record(b, *b.pay_in(Money.of(1, "USD")))
        uow.commit()
    before = store.last_position()
    with UnitOfWork(repo, META) as uow:
        uow.record(a, *a.pay_out(Money.of(10, "USD")))
        uow.record(stale_b, *stale_b.pay_in(Money.of(10, "USD")))
        with pytest.raises(ConcurrencyError):
            uow.commit()
    assert store.last_position() == before
    assert repo.get(Till, "a").balance == Money.of(50, "USD")


def test_leaving_without_commit_discards_and_closed_units_refuse_work() -> None:
    store, repo = make()
    with UnitOfWork(repo, META) as uow:
        till = Till.blank("t")
        uow.record(till, *till.open("USD", "X"))
    assert store.last_position() == 0
    with pytest.raises(Exception, match="closed"):
        uow.record(till, *till.open("USD", "X"))
    with UnitOfWork(repo, META) as uow2, pytest.raises(ValidationError):
        uow2.commit()


def test_refused_commands_write_nothing() -> None:
    store, repo = make()
    till = open_till(repo)
    with UnitOfWork(repo, META) as uow:
        till = uow.record(till, *till.pay_in(Money.of(5, "USD")))
        with pytest.raises(ValidationError):
            uow.record(till, *till.pay_out(Money.of(6, "USD")))
    # The refused command left the block without commit: the staged pay-in is gone too.
    assert store.last_position() == 1


def test_metadata_travels_with_every_event() -> None:
    store, repo = make()
    open_till(repo)
    recorded = repo.codec.decode(store.read_all()[0])
    assert recorded.metadata == META
    assert (recorded.stream_id, recorded.version, recorded.position) == ("till-t1", 1, 1)


@st.composite
def till_commands(draw: st.DrawFn) -> list[tuple[str, int]]:
    return draw(
        st.lists(
            st.tuples(st.sampled_from(["in", "out", "close"]), st.integers(1, 10**7)),
            max_size=25,
        )
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@given(commands=till_commands(), batch=st.booleans())
def test_replay_of_any_history_equals_the_live_aggregate(
    kind: str,
    commands: list[tuple[str, int]],
    batch: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    store: EventStore = (
        MemoryEventStore()
        if kind == "memory"
        else SqliteEventStore(tmp_path_factory.mktemp("replay") / "e.sqlite", synchronous="NORMAL")
    )
    _, repo = make(store, field_cipher=ReversibleFieldCipher())
    live = open_till(repo, "law", "Holder Name")
    uow = UnitOfWork(repo, META)
    for op, cents in commands:
        amount = Money.from_minor(cents, "USD")
        try:
            events = (
                {"in": live.pay_in, "out": live.pay_out}[op](amount)
                if op != "close"
                else (live.close("end of day"))
            )
        except ValidationError:
            continue  # refused commands record nothing
        live = uow.record(live, *events)
        if not batch:
            uow.commit()
            uow = UnitOfWork(repo, META)
    if batch and live.version > 1:
        uow.commit()
    assert repo.get(Till, "law") == live
    # And a full replay of the global log through a projection agrees too.
    assert Balances.rebuilt_from(store, repo.codec).totals["till-law"] == live.balance


# -- projections ----------------------------------------------------------------------------
class Balances:
    """A read model: balance per till stream."""

    name = "balances"
    event_types: frozenset[str] | None = frozenset({"TillOpened", "CashPaidIn", "CashPaidOut"})

    def __init__(self) -> None:
        self.totals: dict[str, Money] = {}
        self.seen = 0

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        if recorded.position <= self.seen:
            return
        self.seen = recorded.position
        e = recorded.event
        if isinstance(e, TillOpened):
            self.totals[recorded.stream_id] = Money.zero(e.currency)
        elif isinstance(e, CashPaidIn):
            self.totals[recorded.stream_id] += e.amount
        else:
            self.totals[recorded.stream_id] -= e.amount  # type: ignore[attr-defined]

    def reset(self) -> None:
        self.totals.clear()
        self.seen = 0

    @classmethod
    def rebuilt_from(cls, store: EventStore, codec: EventCodec) -> Balances:
        view = cls()
        ProjectionRunner(store, codec).rebuild(view)
        return view


def test_projection_catches_up_and_rebuilds(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "p.sqlite")
    store = SqliteEventStore(db)
    _, repo = make(store)
    till = open_till(repo)
    runner = ProjectionRunner(store, repo.codec, batch_size=2)
    view = Balances()
    assert runner.catch_up(view) == 1
    with UnitOfWork(repo, META) as uow:
        till = uow.record(till, *till.pay_in(Money.of(7, "USD")))
        till = uow.record(till, *till.close("done"))
        uow.commit()
    assert runner.catch_up(view) == 1  # TillClosed is not decoded for this view
    assert runner.position(view) == 3
    assert view.totals == {"till-t1": Money.of(7, "USD")}
    assert runner.rebuild(view) == 2
    assert view.totals == {"till-t1": Money.of(7, "USD")}


def test_a_memory_read_model_in_a_new_process_reads_the_log_from_the_start(
    tmp_path: Path,
) -> None:
    """A memory read model never starts past what it has not seen: its position is its own,
    never a checkpoint another process (or this one before a restart) stored."""
    db = SqliteDatabase(tmp_path / "p.sqlite")
    store = SqliteEventStore(db)
    _, repo = make(store)
    till = open_till(repo)
    with UnitOfWork(repo, META) as uow:
        uow.record(till, *till.pay_in(Money.of(7, "USD")))
        uow.commit()
    first = Balances()
    ProjectionRunner(store, repo.codec).catch_up(first)
    # "A restart": a new runner and a new view on the same file.
    again = Balances()
    assert (
        ProjectionRunner(SqliteEventStore(tmp_path / "p.sqlite"), repo.codec).catch_up(again) == 2
    )
    assert again.totals == first.totals == {"till-t1": Money.of(7, "USD")}


def test_iter_all_walks_the_log_in_batches() -> None:
    store, repo = make()
    for i in range(7):
        open_till(repo, f"t{i}")
    assert [e.position for e in iter_all(store, batch=3)] == list(range(1, 8))
    assert [e.position for e in iter_all(store, after_position=5, batch=3)] == [6, 7]


# -- snapshots ------------------------------------------------------------------------------
def test_snapshots_shorten_replay_and_are_only_a_cache() -> None:
    store = MemoryEventStore()
    snaps = MemorySnapshotStore()
    repo = Repository(store, EventCodec(registry()), snaps)
    till = open_till(repo)
    with UnitOfWork(repo, META) as uow:
        till = uow.record(till, *till.pay_in(Money.of(10, "USD")))
        uow.commit()
    repo.snapshot(till)
    with UnitOfWork(repo, META) as uow:
        till = uow.record(till, *till.pay_in(Money.of(5, "USD")))
        uow.commit()
    assert repo.get(Till, "t1") == till
    snaps.delete_snapshot(till.stream_id)
    assert repo.get(Till, "t1") == till
    assert Repository(store, repo.codec).get(Till, "t1") == till


def test_aggregate_base_rules() -> None:
    with pytest.raises(ValidationError):
        Till.stream_id_for("")

    @attrs.frozen(kw_only=True)
    class Lazy(Aggregate):
        category = "lazy"

    with pytest.raises(NotImplementedError):
        Lazy.blank("x").apply(CashPaidIn(Money.of(1, "USD")))
    assert Till.blank("x").fold([]).version == 0


def test_clock_in_store_controls_recorded_at() -> None:
    clock = FixedClock(datetime(2026, 5, 1, tzinfo=UTC))
    store = MemoryEventStore(clock)
    _, repo = make(store)
    open_till(repo)
    assert store.read_all()[0].recorded_at == clock.now()


def test_the_state_cache_never_hides_events_written_by_others() -> None:
    store = MemoryEventStore()
    mine = Repository(store, EventCodec(registry()))
    theirs = Repository(store, EventCodec(registry()))  # another process, say
    till = open_till(mine)
    assert mine.get(Till, "t1") == till  # now cached
    with UnitOfWork(theirs, META) as uow:
        t = theirs.get(Till, "t1")
        uow.record(t, *t.pay_in(Money.of(9, "USD")))
        uow.commit()
    assert mine.get(Till, "t1").balance == Money.of(9, "USD")
    assert mine.get(Till, "t1").version == 2
    uncached = Repository(store, EventCodec(registry()), cache_size=0)
    assert uncached.get(Till, "t1") == mine.get(Till, "t1")


class _CountingStore(MemoryEventStore):
    """Counts the events read back from each stream."""

    def __init__(self) -> None:
        super().__init__()
        self.read: dict[str, int] = {}

    def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        found = super().read_stream(stream_id, after_version=after_version)
        self.read[stream_id] = self.read.get(stream_id, 0) + len(found)
        return found


def test_committed_states_are_not_read_back_unless_they_carry_pii() -> None:
    store = _CountingStore()
    repo = Repository(store, EventCodec(registry()))
    till = open_till(repo)  # TillOpened carries the holder's name: not remembered
    with UnitOfWork(repo, META) as uow:
        loaded = uow.get(Till, "t1")
        assert store.read["till-t1"] == 1  # read back once, as before
        paid = uow.record(loaded, *loaded.pay_in(Money.of(9, "USD")))
        uow.commit()
    assert repo.get(Till, "t1") == paid  # remembered at commit: no PII in CashPaidIn
    assert store.read["till-t1"] == 1  # ... so the payment was never read back
    assert Repository(store, EventCodec(registry())).get(Till, "t1") == paid
    assert till.version == 1


@attrs.frozen
class _Point:
    x: int
    y: int


_POINT_ROWS = ValueCodec(_Point, lambda p: [p.x, p.y], lambda row: _Point(*row))


@attrs.frozen
class _Traced(DomainEvent):
    points: tuple[_Point, ...]

    __value_codecs__ = (_POINT_ROWS,)


def test_value_codecs_store_bulk_values_compactly_even_when_registered_late() -> None:
    registry = EventRegistry()
    codec = EventCodec(registry)  # built before the event is registered
    registry.register(_Traced)
    event = _Traced((_Point(1, 2), _Point(3, 4)))
    stored = codec.encode("trace-1", event, META)
    assert json.loads(stored.data) == {"points": [[1, 2], [3, 4]]}
    assert codec.decode_event("trace-1", stored.event_type, stored.data) == event


@attrs.frozen
class _Path(DomainEvent):
    hops: tuple[_Point, ...]
    start: _Point

    __value_codecs__ = (
        ValueCodec(
            tuple[_Point, ...],
            lambda ps: ";".join(f"{p.x},{p.y}" for p in ps),
            lambda text: tuple(_Point(*map(int, p.split(","))) for p in text.split(";")),
        ),
    )


def test_a_value_codec_may_encode_a_whole_collection_at_once() -> None:
    registry = EventRegistry()
    registry.register(_Path)
    codec = EventCodec(registry)
    event = _Path((_Point(1, 2), _Point(3, 4)), _Point(5, 6))
    stored = codec.encode("path-1", event, META)
    # The collection is one value; a lone _Point keeps the generic form.
    assert json.loads(stored.data) == {"hops": "1,2;3,4", "start": {"x": 5, "y": 6}}
    assert codec.decode_event("path-1", stored.event_type, stored.data) == event


def test_value_codecs_must_be_declared_properly_and_agree() -> None:
    @attrs.frozen
    class Loose(DomainEvent):
        points: tuple[_Point, ...]
        __value_codecs__ = ("rows",)

    @attrs.frozen
    class Rival(DomainEvent):
        points: tuple[_Point, ...]
        __value_codecs__ = (ValueCodec(_Point, lambda p: [p.y, p.x], lambda r: _Point(*r)),)

    registry = EventRegistry()
    with pytest.raises(ValidationError, match="ValueCodec entries"):
        registry.register(Loose)
    registry.register(_Traced)
    with pytest.raises(ValidationError, match="another value codec"):
        registry.register(Rival)
    assert "Rival" not in registry.names()


@attrs.frozen
class _Batch(DomainEvent):
    names: tuple[str, ...]
    pairs: tuple[tuple[int, int], ...]
    amounts: tuple[Decimal, ...]  # not JSON scalars: still each turned to text


@given(
    names=st.lists(st.text(), max_size=5).map(tuple),
    pairs=st.lists(st.tuples(st.integers(), st.integers()), max_size=5).map(tuple),
    amounts=st.lists(st.decimals(allow_nan=False, allow_infinity=False), max_size=3).map(tuple),
)
def test_tuples_of_json_scalars_are_stored_as_arrays_and_read_back(
    names: tuple[str, ...], pairs: tuple[tuple[int, int], ...], amounts: tuple[Decimal, ...]
) -> None:
    registry = EventRegistry()
    registry.register(_Batch)
    codec = EventCodec(registry)
    event = _Batch(names, pairs, amounts)
    stored = codec.encode("batch-1", event, META)
    assert json.loads(stored.data) == {
        "names": list(names),
        "pairs": [list(p) for p in pairs],
        "amounts": [str(a) for a in amounts],
    }
    assert codec.decode_event("batch-1", stored.event_type, stored.data) == event


# -- the append path, as made cheaper: same results, same refusals ----------------------------
def test_equal_metadata_records_encode_once_to_the_same_bytes() -> None:
    codec = EventCodec(registry())
    event = CashPaidIn(Money.of(1, "USD"))
    first = codec.encode("till-1", event, EventMetadata("staff:7", reason="pay in"))
    again = codec.encode("till-1", event, EventMetadata("staff:7", reason="pay in"))
    other = codec.encode("till-1", event, EventMetadata("staff:8", reason="pay in"))
    assert first.metadata == again.metadata == b'{"a":"staff:7","r":"pay in"}'
    assert other.metadata == b'{"a":"staff:8","r":"pay in"}'
    # Many distinct records (request ids) still encode each to its own bytes.
    for n in range(2_500):
        meta = EventMetadata("staff:7", correlation_id=f"req-{n}")
        assert codec.decode_metadata(codec.encode("till-1", event, meta).metadata) == meta


def test_a_unit_of_work_tells_its_listeners_of_each_commit_and_only_of_commits() -> None:
    store, repo = make()
    heard: list[int] = []
    repo.on_commit(lambda result: heard.append(result.last_position))
    till = open_till(repo)
    assert heard == [1]
    with UnitOfWork(repo, META) as uow:  # a stale state: refused, nothing heard
        uow.record(Till.blank("t1"), *Till.blank("t1").open("USD", "Bo"))
        with pytest.raises(ConcurrencyError):
            uow.commit()
    with UnitOfWork(repo, META) as uow:
        uow.record(till, *till.pay_in(Money.of(5, "USD")))
        uow.commit()
    assert heard == [1, 2] == [1, store.last_position()]


def _ev(n: int) -> NewEvent:
    return NewEvent("Happened", f'{{"n":{n}}}'.encode(), b"{}")


def test_sqlite_append_results_name_the_positions_and_versions_written(tmp_path: Path) -> None:
    # Two stores on one file take turns, so each append starts after the other's rows.
    one = SqliteEventStore(tmp_path / "log.sqlite")
    two = SqliteEventStore(tmp_path / "log.sqlite")
    try:
        for n in range(6):
            store = (one, two)[n % 2]
            result = store.append(
                StreamAppend("shared", 2 * n, [_ev(n), _ev(n)]),
                StreamAppend(f"own-{n}", 0, [_ev(n)]),
                StreamAppend("audit", None, [_ev(n)]),
            )
            assert dict(result.versions) == {"shared": 2 * n + 2, f"own-{n}": 1, "audit": n + 1}
            assert result.last_position == store.last_position() == 4 * (n + 1)
            written = store.read_all(after_position=4 * n)
            assert [e.position for e in written] == list(range(4 * n + 1, 4 * n + 5))
            assert [(e.stream_id, e.version) for e in written] == [
                ("shared", 2 * n + 1), ("shared", 2 * n + 2), (f"own-{n}", 1), ("audit", n + 1),
            ]  # fmt: skip
    finally:
        one.close()
        two.close()


@pytest.mark.parametrize("expected", [0, 1, 3])
def test_sqlite_conflicts_name_the_stream_s_real_version(tmp_path: Path, expected: int) -> None:
    store = SqliteEventStore(tmp_path / "log.sqlite")
    try:
        store.append(StreamAppend("s", 0, [_ev(1), _ev(2)]))
        with pytest.raises(ConcurrencyError, match=f"at version 2, expected {expected};"):
            store.append(StreamAppend("fresh", 0, [_ev(3)]), StreamAppend("s", expected, [_ev(3)]))
        assert store.last_position() == 2
    finally:
        store.close()


def test_sqlite_appends_to_hundreds_of_streams_check_every_one(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "log.sqlite")
    streams = [f"s-{n}" for n in range(450)]  # more than one statement reads
    try:
        first = store.append(*(StreamAppend(s, 0, [_ev(n)]) for n, s in enumerate(streams)))
        assert first.last_position == 450
        assert set(first.versions.values()) == {1}
        stale = [StreamAppend(s, 0 if n == 420 else 1, [_ev(n)]) for n, s in enumerate(streams)]
        with pytest.raises(ConcurrencyError, match="s-420 is at version 1"):
            store.append(*stale)
        assert store.last_position() == 450
        fresh = [StreamAppend(s, 1, [_ev(n)]) for n, s in enumerate(streams)]
        assert store.append(*fresh).last_position == 900
        assert store.stream_version("s-449") == 2
    finally:
        store.close()


# -- typed reads (an optional store capability the runners use when a store has it) -----------


class WithoutTypedReads:
    """The same store without ``read_all_of_types``: the runners fall back to read_all."""

    def __init__(self, inner: EventStore) -> None:
        self.inner = inner
        self.read_alls = 0

    def append(self, *appends: StreamAppend, idempotency_key: str | None = None) -> Any:
        return self.inner.append(*appends, idempotency_key=idempotency_key)

    def read_stream(self, stream_id: str, *, after_version: int = 0) -> list[StoredEvent]:
        return self.inner.read_stream(stream_id, after_version=after_version)

    def read_all(self, *, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        self.read_alls += 1
        return self.inner.read_all(after_position=after_position, limit=limit)

    def stream_version(self, stream_id: str) -> int:
        return self.inner.stream_version(stream_id)

    def last_position(self) -> int:
        return self.inner.last_position()


class CountingTypedReads(WithoutTypedReads):
    """The store with its typed reads, counting both kinds of read."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner)
        self.typed_reads = 0

    def read_all_of_types(
        self, after_position: int, types: frozenset[str], limit: int
    ) -> tuple[list[StoredEvent], int]:
        self.typed_reads += 1
        typed = getattr(self.inner, "read_all_of_types")  # noqa: B009
        result: tuple[list[StoredEvent], int] = typed(after_position, types, limit)
        return result


class Paid:
    """A read model of one type: the payments it saw, in order, and their positions."""

    name = "paid"
    event_types: frozenset[str] | None = frozenset({"CashPaidIn"})

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, Money]] = []

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        assert isinstance(event, CashPaidIn)
        self.seen.append((recorded.position, recorded.stream_id, event.amount))

    def reset(self) -> None:
        self.seen.clear()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from(["in", "out", "close", "catch-up"]), max_size=30),
    st.integers(1, 4),
    st.booleans(),
)
def test_a_projection_reads_the_same_with_typed_reads_and_without(
    steps: list[str], batch_size: int, sqlite: bool
) -> None:
    """Law: a read model fed through a store's typed reads handles exactly the events, in the
    same order, with the same counts and positions, as one fed through read_all alone."""
    with tempfile.TemporaryDirectory() as directory:
        inner: EventStore = (
            SqliteEventStore(Path(directory) / "log.sqlite") if sqlite else MemoryEventStore()
        )
        typed, plain = CountingTypedReads(inner), WithoutTypedReads(inner)
        _, repo = make(inner)
        runners = {
            s: ProjectionRunner(s, repo.codec, batch_size=batch_size) for s in (typed, plain)
        }
        views = {typed: Paid(), plain: Paid()}
        till: Till | None = open_till(repo, "t0")
        number = 0
        for step in steps:
            if step == "catch-up":
                counts = {s: runners[s].catch_up(views[s]) for s in (typed, plain)}
                assert counts[typed] == counts[plain]
                assert runners[typed].position(views[typed]) == runners[plain].position(
                    views[plain]
                )
                continue
            balance = till.balance if till is not None else None
            if till is None or (
                step == "out" and (balance is None or balance < Money.of(1, "USD"))
            ):
                number += 1
                till = open_till(repo, f"t{number}")
                continue
            with UnitOfWork(repo, META) as uow:
                if step == "in":
                    till = uow.record(till, *till.pay_in(Money.of(2, "USD")))
                elif step == "out":
                    till = uow.record(till, *till.pay_out(Money.of(1, "USD")))
                else:
                    uow.record(till, *till.close("done"))
                    till = None
                uow.commit()
        for s in (typed, plain):
            runners[s].catch_up(views[s])
        assert views[typed].seen == views[plain].seen
        assert [p for p, _, _ in views[typed].seen] == [
            s.position for s in inner.read_all(limit=10_000) if s.event_type == "CashPaidIn"
        ]
        assert runners[typed].position(views[typed]) == inner.last_position()
        assert runners[typed].position(views[typed]) == runners[plain].position(views[plain])
        assert typed.read_alls == 0  # the capability was used, not read_all
        assert typed.typed_reads >= 1
        assert runners[typed].rebuild(views[typed]) == len(views[plain].seen)
        if isinstance(inner, SqliteEventStore):
            inner.close()


# -- a corrupt store reads as CodecError, never a builtin, never the data (issue 14 item 6) ------
SECRET = "Ana-Lima-4111111111111111"
CORRUPT_PAYLOADS: list[Any] = [
    b"[]",
    b"1",
    b'"' + SECRET.encode() + b'"',
    b"null",
    b'{"_v": "2"}',
    b'{"_v": []}',
    b'{"_v": true}',
    b'{"_v": 99}',  # newer than this codec knows
    b"[" * 100_000 + b"]" * 100_000,  # deep nesting
    b'{"till_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    '{"till_id": "t1"}',  # a TEXT column, not bytes
    None,
    b"\xff\xfe{}",
]


@pytest.mark.parametrize("payload", CORRUPT_PAYLOADS, ids=range(len(CORRUPT_PAYLOADS)))
def test_decoding_a_corrupt_payload_raises_codec_error_without_echoing_it(payload: Any) -> None:
    codec = EventCodec(registry())
    with pytest.raises(CodecError) as raised:
        codec.decode_event("s", "TillOpened", payload)
    assert SECRET not in str(raised.value)
    stored = StoredEvent(1, "s", 1, "TillOpened", payload, b'{"a":"x"}', datetime.now(UTC))
    with pytest.raises(CodecError):
        codec.decode(stored)


CORRUPT_METADATA: list[Any] = [
    b"[]",
    b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"a": []}',
    b'{"a": {"x": 1}}',
    b'{"a": "x", "c": 5}',
    b'{"a": "x", "r": ["' + SECRET.encode() + b'"]}',
    '{"a": "x"}',
    None,
    b"\xff",
]


@pytest.mark.parametrize("raw", CORRUPT_METADATA, ids=range(len(CORRUPT_METADATA)))
def test_decoding_corrupt_metadata_raises_codec_error(raw: Any) -> None:
    with pytest.raises(CodecError) as raised:
        EventCodec(registry()).decode_metadata(raw)
    assert SECRET not in str(raised.value)


def test_an_upcaster_meeting_a_corrupt_old_payload_raises_codec_error() -> None:
    reg = EventRegistry()
    reg.register(TillOpened, version=2)

    @reg.upcaster("TillOpened", from_version=1)
    def _rename(d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "till_id": d["till"]}  # KeyError on a payload that lacks the field

    codec = EventCodec(reg)
    with pytest.raises(CodecError):
        codec.decode_event("s", "TillOpened", b'{"holder": "' + SECRET.encode() + b'"}')


def test_a_corrupt_snapshot_state_raises_codec_error() -> None:
    codec = EventCodec(registry())
    for raw in (b"[]", b"\xff", b"[" * 100_000, b'{"x": 1}'):
        with pytest.raises(CodecError):
            codec.decode_state(Till, raw)
