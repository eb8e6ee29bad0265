"""The parity harness: one scenario, three ways of running it, every answer compared.

The log is the only truth, so a scenario must give the same answers however its commands are
spread over processes. :func:`run_parity` runs a :class:`Scenario` in three modes, each on its
own SQLite file, and compares them with mode (a):

(a) ``ONE_BROKER``: every step on one broker, in one worker process;
(b) ``FRESH_PROCESS_PER_STEP``: a new process and a fresh broker for every step (and for the
    final probes), so nothing survives that is not in the store;
(c) ``TWO_PROCESSES``: two live workers on one store, the steps sent to them in turn, so each
    step meets a broker that did not see the step before.

What is compared, in the order it happens: every step's result (a raised ``FxCrmError`` is a
result too); every probe, after every step (run by the process that runs the next step: in (b)
a fresh one, in (c) the other one) and at the end; then every aggregate of the log, each loaded
cold (a new ``Repository``, no cache, no snapshots) and found by its stream's category; streams of
no known category as their decoded events; and the decoded log itself (positions, streams,
versions, types, recorded-at, data, metadata). :class:`ParityReport` names the first difference
per mode: ``step 7 'approve withdrawal': result differs: mode a '...' vs mode b '...'``.

A scenario crosses process boundaries, so it is made of importable references,
``"package.module:function"``:

- ``build(path) -> Broker`` opens a broker on the SQLite file ``path``, with a ``FixedClock``
  and keys that every process derives alike (a ``MasterKeyring`` from fixed bytes, a fixed
  identity key). It only opens: anything written belongs in a step.
- a step is ``fn(broker, *args, **kwargs) -> result``; an argument may be a :class:`Ref` to an
  earlier step's result (in its canonical form, see below).
- a probe is ``fn(broker, *args) -> value``: read models, statements, balances, levels. Probes
  only read (whatever they write, e.g. a read model's catch-up, must be the same in every mode).

Determinism: before every step and every probe the harness reseeds ``broker.ids`` with a seed
derived from the scenario's seed and the step's index, following the last id made so far, so ids
match across modes and never repeat across processes; it sets the clock to the step's ``at``, or
else to where the clock stood after the previous step (a step may advance it).

Results and probe values are compared in a canonical, JSON-like form (:func:`canonical`): attrs
objects field by field with their type's name, Decimals, Money, dates and times as text, enums by
name, PII as it reads (decrypted, or ``[erased]``). Anything else is a :class:`ScenarioError`.

A step that raises something other than an ``FxCrmError`` fails the run in every mode (a bug in
the step or in the SDK, not a refusal); the report shows its traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import importlib
import json
import multiprocessing
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, Protocol, cast

import attrs

from fxcrm_core.events import Aggregate, EventCodec, EventStore, Repository, iter_all
from fxcrm_core.kernel.clock import Clock, FixedClock
from fxcrm_core.kernel.errors import FxCrmError, ValidationError
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kernel.money import Currency, Money, UnroundedMoney

__all__ = [
    "Mode",
    "ModeOutcome",
    "ParityBroker",
    "ParityReport",
    "Probe",
    "Ref",
    "Scenario",
    "ScenarioError",
    "Step",
    "assert_parity",
    "canonical",
    "run_parity",
]

Json = None | bool | int | float | str | list["Json"] | dict[str, "Json"]

_ABSENT = "<absent>"
_SHOWN = 160  # characters of a value shown in a difference


class ScenarioError(ValidationError):
    """A scenario that cannot run as written: a reference that does not import, a step name used
    twice, a build without a FixedClock, a result with no canonical form."""

    default_message = "the scenario cannot run as written"


class ParityBroker(Protocol):
    """What the harness needs of the broker a scenario builds (``fxcrm_core.broker.Broker``)."""

    store: EventStore
    codec: EventCodec
    clock: Clock
    ids: IdGenerator

    def close(self) -> None: ...


def _check_ref(ref: str) -> str:
    module, colon, name = ref.partition(":")
    if not (module and colon and name) or " " in ref:
        raise ScenarioError(f"a reference reads 'package.module:function', not {ref!r}")
    return ref


def resolve(ref: str) -> Any:
    """The object a ``"package.module:qualified.name"`` reference names."""
    module_name, _, name = _check_ref(ref).partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in name.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ScenarioError(f"cannot resolve {ref!r}: {exc}") from None
    if not callable(found):
        raise ScenarioError(f"{ref!r} is not callable")
    return found


@attrs.frozen(init=False)
class Ref:
    """An earlier step's result, or a part of it (``Ref("register ana")``,
    ``Ref("deposit", "status")``), as an argument of a later step or a probe.

    It resolves to the result's canonical form (an id stays a string; an attrs object is a dict
    of its fields), the same in every mode.
    """

    step: str
    path: tuple[str | int, ...] = ()

    def __init__(self, step: str, *path: str | int) -> None:
        cast(Any, self).__attrs_init__(step, tuple(path))


@attrs.frozen(init=False)
class Step:
    """One command: ``Step("approve", "pkg.mod:approve", Ref("submit"), at=datetime(...))``.

    ``at`` sets the broker's clock before the step; without it the clock stays where the
    previous step left it.
    """

    name: str
    call: str = attrs.field(validator=lambda _, __, value: _check_ref(value))
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    at: datetime | None = None

    def __init__(
        self,
        name: str,
        call: str,
        *args: Any,
        at: datetime | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not name:
            raise ScenarioError("a step needs a name")
        if at is not None and (at.tzinfo is None or at.utcoffset() is None):
            raise ScenarioError("a step's time must be timezone-aware")
        cast(Any, self).__attrs_init__(name, call, tuple(args), dict(kwargs or {}), at)


@attrs.frozen(init=False)
class Probe:
    """A read compared after every step and at the end: ``fn(broker, *args) -> value``.

    A probe whose arguments refer to a step not yet run is skipped until that step has run.
    """

    call: str = attrs.field(validator=lambda _, __, value: _check_ref(value))
    args: tuple[Any, ...] = ()
    name: str = ""

    def __init__(self, call: str, *args: Any, name: str | None = None) -> None:
        cast(Any, self).__attrs_init__(call, tuple(args), name or call.rpartition(":")[2])


def _as_probe(probe: Probe | str) -> Probe:
    return probe if isinstance(probe, Probe) else Probe(probe)


def _probes(probes: Iterable[Probe | str]) -> tuple[Probe, ...]:
    return tuple(_as_probe(p) for p in probes)


def _steps(steps: Iterable[Step]) -> tuple[Step, ...]:
    return tuple(steps)


def _refs_in(value: object) -> Iterable[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _refs_in(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _refs_in(item)


@attrs.frozen
class Scenario:
    """A build reference, steps and probes: everything a process needs to play its part."""

    build: str = attrs.field(validator=lambda _, __, value: _check_ref(value))
    steps: tuple[Step, ...] = attrs.field(converter=_steps)
    probes: tuple[Probe, ...] = attrs.field(default=(), converter=_probes)
    seed: int = 0
    name: str = "scenario"
    probe_every_step: bool = True

    def __attrs_post_init__(self) -> None:
        if not self.steps:
            raise ScenarioError("a scenario needs at least one step")
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ScenarioError(f"step name {step.name!r} is used twice")
            for ref in _refs_in((step.args, step.kwargs)):
                if ref.step not in seen:
                    raise ScenarioError(
                        f"step {step.name!r} refers to {ref.step!r}, which is not an earlier step"
                    )
            seen.add(step.name)
        for probe in self.probes:
            for ref in _refs_in(probe.args):
                if ref.step not in seen:
                    raise ScenarioError(f"probe {probe.name!r} refers to unknown step {ref.step!r}")

    def references(self) -> list[str]:
        return [self.build, *(s.call for s in self.steps), *(p.call for p in self.probes)]


class Mode(enum.Enum):
    """The three ways a scenario is run; (a) is the reference the others are compared with."""

    ONE_BROKER = "a"
    FRESH_PROCESS_PER_STEP = "b"
    TWO_PROCESSES = "c"

    @property
    def label(self) -> str:
        return {
            "a": "one broker",
            "b": "a fresh process per step",
            "c": "two live processes in turn",
        }[self.value]


ALL_MODES = (Mode.ONE_BROKER, Mode.FRESH_PROCESS_PER_STEP, Mode.TWO_PROCESSES)


# -- canonical forms -------------------------------------------------------------------------------
def canonical(value: object) -> Json:
    """A JSON-like form of a result or a read, equal exactly when the values are equal.

    >>> from decimal import Decimal
    >>> from fxcrm_core.kernel import Money
    >>> canonical({"fee": Money.of("2", "USD"), "rate": Decimal("1.0842"), "n": (1, 2)})
    {'fee': '2.00 USD', 'rate': '1.0842', 'n': [1, 2]}
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if getattr(type(value), "__pii_value__", False) is True:  # PII as it reads ("[erased]")
        return canonical(cast(Any, value).reveal())
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, str):
        return str(value)  # Erased reads as "[erased]"
    if isinstance(value, Decimal | Money | UnroundedMoney | Currency):
        return str(value)
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"{value.total_seconds()}s"
    if isinstance(value, bytes | bytearray):
        return "bytes:" + bytes(value).hex()
    if isinstance(value, BaseException):
        return {"raised": type(value).__name__, "message": str(value)}
    cls = type(value)
    if attrs.has(cls):
        form: dict[str, Json] = {"__type__": cls.__name__}
        for field in attrs.fields(cls):
            form[field.name] = canonical(getattr(value, field.name))
        return form
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        form = {"__type__": cls.__name__}
        for dc_field in dataclasses.fields(value):
            form[dc_field.name] = canonical(getattr(value, dc_field.name))
        return form
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        form = {"__type__": cls.__name__}
        form.update({name: canonical(getattr(value, name)) for name in value._fields})
        return form
    if isinstance(value, Mapping):
        return {_key(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((canonical(item) for item in value), key=_text)
    raise ScenarioError(
        f"no canonical form for a {cls.__name__}: return attrs objects, mappings, sequences, "
        "text, numbers, Decimals, Money or datetimes"
    )


def _key(key: object) -> str:
    form = canonical(key)
    return form if isinstance(form, str) else _text(form)


def _text(form: Json) -> str:
    return json.dumps(form, sort_keys=True, ensure_ascii=False)


# -- what a worker does ----------------------------------------------------------------------------
@attrs.frozen
class _Order:
    """Run one step (or the probes, when ``call`` is empty) at ``at`` with a fresh seed."""

    index: int
    call: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    at: datetime | None
    seed: int
    after_id: str | None


@attrs.frozen
class _Outcome:
    result: Json
    unexpected: str | None  # the traceback of an error that is not an FxCrmError
    clock_after: datetime
    last_id: str | None


def _aggregate_classes() -> dict[str, type[Aggregate] | None]:
    """Category -> class for every Aggregate subclass imported; None where two claim one."""
    claims: dict[str, set[type[Aggregate]]] = {}
    pending: list[type[Aggregate]] = list(Aggregate.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        category = vars(cls).get("category")
        if isinstance(category, str):
            claims.setdefault(category, set()).add(cls)
    found: dict[str, type[Aggregate] | None] = {}
    for category, classes in claims.items():
        # attrs' slotted classes replace the class they decorate; the replaced one lingers in
        # __subclasses__ until collected: keep the class its module actually holds.
        live = {c for c in classes if _published(c)} or classes
        found[category] = live.pop() if len(live) == 1 else None
    return found


def _published(cls: type) -> bool:
    module = sys.modules.get(cls.__module__)
    held: Any = module
    for part in cls.__qualname__.split("."):
        held = getattr(held, part, None)
    return held is cls


class _Session:
    """A broker opened by the scenario's build, answering the harness's orders (in a worker)."""

    def __init__(self, scenario: Scenario, path: str) -> None:
        # Import every module the scenario names, in every process alike, so each one knows the
        # same aggregate classes when it maps streams to them.
        self.calls = {ref: resolve(ref) for ref in scenario.references()}
        broker = cast(ParityBroker, self.calls[scenario.build](path))
        for attribute in ("store", "codec", "clock", "ids"):
            if not hasattr(broker, attribute):
                raise ScenarioError(f"build must return a Broker (no .{attribute})")
        if not isinstance(broker.clock, FixedClock):
            raise ScenarioError("build must give the broker a FixedClock")
        if not isinstance(broker.ids, IdGenerator):
            raise ScenarioError("build must give the broker an IdGenerator")
        self.broker = broker
        self.clock: FixedClock = broker.clock

    def _prepare(self, order: _Order) -> None:
        if order.at is not None:
            self.clock.set(order.at)
        self.broker.ids.reseed(order.seed, after=order.after_id)

    def _call(
        self, fn: Callable[..., object], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[Json, str | None]:
        try:
            value = fn(self.broker, *args, **kwargs)
        except FxCrmError as exc:
            return canonical(exc), None
        except Exception as exc:
            return canonical(exc), traceback.format_exc()
        return canonical(value), None  # outside the try: no canonical form is a ScenarioError

    def step(self, order: _Order) -> _Outcome:
        self._prepare(order)
        result, unexpected = self._call(self.calls[order.call], order.args, order.kwargs)
        return _Outcome(result, unexpected, self.clock.now(), self.broker.ids.last)

    def probe(self, orders: Sequence[tuple[_Order, str]]) -> list[tuple[Json, str | None]]:
        """Each probe with its own seed, at the time the last step left; the clock is put back
        after (the next step sets the id sequence afresh anyway)."""
        now = self.clock.now()
        answers = []
        for order, _ in orders:
            self._prepare(order)
            answers.append(self._call(self.calls[order.call], order.args, order.kwargs))
        self.clock.set(now)
        return answers

    def dump(self, _: object = None) -> list[tuple[tuple[str, str], Json]]:
        """Every aggregate, loaded cold, then the decoded log: (key, canonical form) in order."""
        store, codec = self.broker.store, self.broker.codec
        cold = Repository(store, codec, cache_size=0)
        classes = _aggregate_classes()
        events = list(iter_all(store))
        streams: dict[str, list[Json]] = {}
        log: list[tuple[tuple[str, str], Json]] = []
        for stored in events:
            try:
                recorded = codec.decode(stored)
                event: Json = canonical(recorded.event)
                metadata: Json = canonical(recorded.metadata)
            except FxCrmError as exc:
                event, metadata = {"undecodable": type(exc).__name__}, None
            streams.setdefault(stored.stream_id, []).append(
                {"version": stored.version, "type": stored.event_type, "event": event}
            )
            log.append(
                (
                    (f"log position {stored.position}", ""),
                    {
                        "stream": stored.stream_id,
                        "version": stored.version,
                        "type": stored.event_type,
                        "recorded_at": stored.recorded_at.isoformat(),
                        "event": event,
                        "metadata": metadata,
                    },
                )
            )
        found: list[tuple[tuple[str, str], Json]] = []
        for stream_id, decoded in streams.items():
            category, _, aggregate_id = stream_id.partition("-")
            cls = classes.get(category)
            if cls is not None and aggregate_id and cls.stream_id_for(aggregate_id) == stream_id:
                try:
                    state: Json = canonical(cold.load(cls, aggregate_id))
                except FxCrmError as exc:
                    state = canonical(exc)
                found.append(((f"aggregate {stream_id}", ""), state))
            else:
                found.append(((f"stream {stream_id}", ""), cast(Json, decoded)))
        return found + log

    def close(self, _: object = None) -> None:
        close = getattr(self.broker, "close", None)
        if callable(close):
            close()


def _serve(conn: Connection, scenario: Scenario, path: str) -> None:
    """A worker process: wait for "open", build the broker, then answer orders until "close"."""
    session: _Session | None = None
    try:
        while True:
            kind, payload = conn.recv()
            try:
                if kind == "open":
                    session = _Session(scenario, path)
                    conn.send(("ok", None))
                    continue
                assert session is not None
                answer = getattr(session, kind)(payload)
                conn.send(("ok", answer))
                if kind == "close":
                    return
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except (EOFError, OSError, KeyboardInterrupt):
        return


# -- the parent's side -----------------------------------------------------------------------
class _BrokenError(Exception):
    """A worker died, hung or failed outside a step: the mode stops there."""


class _Worker:
    """One spawned process serving one broker; started at once, built on ``open``."""

    _context = multiprocessing.get_context("spawn")

    def __init__(self, scenario: Scenario, path: Path, timeout: float) -> None:
        self.timeout = timeout
        self.conn, child = self._context.Pipe()
        self.process: SpawnProcess = self._context.Process(
            target=_serve, args=(child, scenario, str(path)), daemon=True, name="parity-worker"
        )
        self.process.start()
        child.close()
        self.opened = False

    def call(self, kind: str, payload: object = None) -> Any:
        try:
            self.conn.send((kind, payload))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise ScenarioError(f"what a step or probe is given must pickle: {exc}") from None
        except OSError:
            pass  # the worker is gone: recv below says how
        try:
            ready = self.conn.poll(self.timeout)
            if not ready:
                self.kill()
                raise _BrokenError(f"the worker process gave no answer in {self.timeout:g} s")
            status, value = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise _BrokenError(
                f"the worker process died (exit code {self.process.exitcode})"
            ) from None
        if status == "error":
            raise _BrokenError(f"the worker process failed:\n{value}")
        return value

    def open(self) -> _Worker:
        if not self.opened:
            self.call("open")
            self.opened = True
        return self

    def close(self) -> None:
        with contextlib.suppress(_BrokenError):
            if self.process.is_alive() and self.opened:
                self.call("close")
        self.process.join(10)
        if self.process.is_alive():
            self.kill()
        self.conn.close()

    def kill(self) -> None:
        self.process.kill()  # this very process, which the harness started
        self.process.join(5)


def _seed(scenario_seed: int, index: int, purpose: str) -> int:
    digest = hashlib.sha256(f"{scenario_seed}:{index}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class _UnresolvedError(Exception):
    pass


def _resolve_args(value: Any, results: Mapping[str, Json]) -> Any:
    if isinstance(value, Ref):
        if value.step not in results:
            raise _UnresolvedError(value.step)
        found: Any = results[value.step]
        for part in value.path:
            try:
                found = found[part]
            except (KeyError, IndexError, TypeError):
                raise _UnresolvedError(value.step) from None
        return found
    if isinstance(value, tuple):
        return tuple(_resolve_args(v, results) for v in value)
    if isinstance(value, list):
        return [_resolve_args(v, results) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_args(v, results) for k, v in value.items()}
    return value


Key = tuple[str, str]  # (where, what): ("step 3 'deposit'", "result"), ("aggregate client-1", "")


@attrs.define
class _Run:
    """One mode's run: what it observed, in order, and where it stopped if it broke."""

    mode: Mode
    observed: dict[Key, Json] = attrs.field(factory=dict)
    unexpected: list[str] = attrs.field(factory=list)
    broken: str | None = None
    seconds: float = 0.0


class _Driver:
    def __init__(self, scenario: Scenario, mode: Mode, directory: Path, timeout: float) -> None:
        self.scenario = scenario
        self.mode = mode
        self.path = directory / f"mode-{mode.value}" / "broker.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.run = _Run(mode)
        self.results: dict[str, Json] = {}
        self.at: datetime | None = None
        self.last_id: str | None = None
        self.workers: list[_Worker] = []
        self.spare: _Worker | None = None

    def _new(self) -> _Worker:
        worker = _Worker(self.scenario, self.path, self.timeout)
        self.workers.append(worker)
        return worker

    def _fresh(self, *, last: bool) -> _Worker:
        # Mode (b) starts the next process while this one works: its interpreter and imports
        # are ready when its turn comes; it builds its broker only then.
        worker = self.spare or self._new()
        self.spare = None if last else self._new()
        return worker.open()

    def _worker_for(self, index: int) -> _Worker:
        if self.mode is Mode.FRESH_PROCESS_PER_STEP:
            return self._fresh(last=index == len(self.scenario.steps))
        if not self.workers:
            # Both brokers of mode (c) are built before the first step: each one must follow
            # what the other writes after it was built.
            count = 2 if self.mode is Mode.TWO_PROCESSES else 1
            for worker in [self._new() for _ in range(count)]:
                worker.open()
        return self.workers[index % len(self.workers)]

    def _done_with(self, worker: _Worker) -> None:
        if self.mode is Mode.FRESH_PROCESS_PER_STEP:
            worker.close()

    def _probe(self, worker: _Worker, index: int, where: str) -> None:
        orders = []
        for number, probe in enumerate(self.scenario.probes):
            try:
                args = _resolve_args(probe.args, self.results)
            except _UnresolvedError:
                continue
            seed = _seed(self.scenario.seed, index, f"probe {number}")
            orders.append(
                (_Order(index, probe.call, args, {}, self.at, seed, self.last_id), probe.name)
            )
        if not orders:
            return
        answers = worker.call("probe", orders)
        for (_, name), (value, unexpected) in zip(orders, answers, strict=True):
            self.run.observed[(where, f"probe '{name}'")] = value
            if unexpected:
                self.run.unexpected.append(f"{where}: probe '{name}' raised\n{unexpected}")

    def _step(self, worker: _Worker, index: int, step: Step) -> None:
        where = f"step {index + 1} '{step.name}'"
        try:
            args = _resolve_args(step.args, self.results)
            kwargs = _resolve_args(dict(step.kwargs), self.results)
        except _UnresolvedError as missing:
            self.run.observed[(where, "result")] = {"unresolved": f"Ref({missing.args[0]!r})"}
            return
        at = step.at or self.at
        seed = _seed(self.scenario.seed, index, "step")
        outcome: _Outcome = worker.call(
            "step", _Order(index, step.call, args, kwargs, at, seed, self.last_id)
        )
        self.run.observed[(where, "result")] = outcome.result
        self.results[step.name] = outcome.result
        self.at, self.last_id = outcome.clock_after, outcome.last_id
        if outcome.unexpected:
            self.run.unexpected.append(
                f"{where}: raised {_show(outcome.result)}, not an FxCrmError\n{outcome.unexpected}"
            )

    def drive(self) -> _Run:
        started = time.perf_counter()
        steps = self.scenario.steps
        where = "the start"
        try:
            for index, step in enumerate(steps):
                where = f"step {index + 1} '{step.name}'"
                worker = self._worker_for(index)
                if index and self.scenario.probe_every_step:
                    self._probe(worker, index, f"after step {index} '{steps[index - 1].name}'")
                self._step(worker, index, step)
                self._done_with(worker)
            where = "the end"
            worker = self._worker_for(len(steps))
            self._probe(worker, len(steps), "at the end")
            for key, value in worker.call("dump"):
                self.run.observed[(key[0], key[1])] = value
        except _BrokenError as broken:
            self.run.broken = f"{where}: {broken}"
        finally:
            for worker in self.workers:
                worker.close()
        self.run.seconds = time.perf_counter() - started
        return self.run


# -- comparing -------------------------------------------------------------------------------
def _show(form: Json) -> str:
    text = form if isinstance(form, str) else _text(form)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _first_difference(a: Json, b: Json, path: str = "") -> tuple[str, str, str] | None:
    """Where two canonical forms first differ: (field path, a's value, b's value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for name in [*a, *(k for k in b if k not in a)]:
            here = f"{path}.{name}" if path else name
            if name not in a or name not in b:
                return (
                    here,
                    _show(a[name]) if name in a else _ABSENT,
                    _show(b[name]) if name in b else _ABSENT,
                )
            found = _first_difference(a[name], b[name], here)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        if len(a) != len(b):
            n = min(len(a), len(b))
            return (
                f"{path}[{n}]",
                _show(a[n]) if n < len(a) else _ABSENT,
                _show(b[n]) if n < len(b) else _ABSENT,
            )
        return None
    if type(a) is not type(b) or a != b:
        return path, _show(a), _show(b)
    return None


def _compare(reference: _Run, other: _Run) -> str | None:
    a, b = reference.mode.value, other.mode.value
    keys = list(reference.observed)
    keys += [k for k in other.observed if k not in reference.observed]
    for key in keys:
        where, what = key
        if key not in other.observed or key not in reference.observed:
            if reference.broken or other.broken:
                break  # a run that stopped early lacks what came after: say why it stopped
            which = a if key in reference.observed else b
            subject = f"{what} " if what else ""
            return f"{where}: {subject}only in mode {which}"
        found = _first_difference(reference.observed[key], other.observed[key])
        if found:
            path, va, vb = found
            subject = " ".join(p for p in (what, f"field {path}" if path else "") if p)
            subject = f"{subject} " if subject else ""
            return f"{where}: {subject}differs: mode {a} '{va}' vs mode {b} '{vb}'"
    for run in (reference, other):
        if run.broken:
            return f"mode {run.mode.value} stopped at {run.broken}"
    return None


@attrs.frozen
class ModeOutcome:
    """How one mode fared: passed, or the first difference from mode (a) (or its own failure)."""

    mode: Mode
    passed: bool
    difference: str | None
    seconds: float
    observed: Mapping[str, Json] = attrs.field(factory=dict, repr=False, eq=False)
    """What the mode saw, in order: ``"step 1 'register': result"``, ``"aggregate client-1"``..."""

    def __str__(self) -> str:
        verdict = "pass" if self.passed else f"FAIL: {self.difference}"
        return f"mode {self.mode.value} ({self.mode.label}): {verdict} ({self.seconds:.1f} s)"


@attrs.frozen
class ParityReport:
    """Per mode pass or fail and the first difference; ``str()`` is the whole story."""

    scenario: str
    outcomes: tuple[ModeOutcome, ...]
    tracebacks: tuple[str, ...] = attrs.field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def first_difference(self) -> str | None:
        return next((o.difference for o in self.outcomes if not o.passed), None)

    def outcome(self, mode: Mode) -> ModeOutcome:
        return next(o for o in self.outcomes if o.mode is mode)

    def __str__(self) -> str:
        lines = [f"parity of {self.scenario!r}: {'pass' if self.ok else 'FAIL'}"]
        lines += [f"  {o}" for o in self.outcomes]
        if self.tracebacks:
            lines += ["", "first unexpected error:", self.tracebacks[0]]
        return "\n".join(lines)


def _own_failure(run: _Run) -> str | None:
    if run.unexpected:
        return run.unexpected[0].splitlines()[0]
    if run.broken:
        return f"stopped at {run.broken}"
    return None


def run_parity(
    scenario: Scenario,
    directory: str | Path,
    *,
    modes: Sequence[Mode] = ALL_MODES,
    timeout: float = 120.0,
) -> ParityReport:
    """Run ``scenario`` in each of ``modes`` (each on its own file under ``directory``, the modes
    side by side) and compare each with mode (a), which always runs."""
    for ref in scenario.references():
        resolve(ref)  # fail here, clearly, rather than in three workers
    wanted = [Mode.ONE_BROKER, *(m for m in modes if m is not Mode.ONE_BROKER)]
    base = Path(directory)
    with ThreadPoolExecutor(max_workers=len(wanted), thread_name_prefix="parity") as pool:
        futures = [pool.submit(_Driver(scenario, m, base, timeout).drive) for m in wanted]
        runs = [f.result() for f in futures]
    reference = runs[0]
    outcomes = []
    for run in runs:
        difference = _own_failure(run) if run is reference else None
        if run is not reference:
            difference = _compare(reference, run) or _own_failure(run)
        observed = {(f"{w}: {what}" if what else w): v for (w, what), v in run.observed.items()}
        outcomes.append(
            ModeOutcome(run.mode, difference is None, difference, run.seconds, observed)
        )
    tracebacks = tuple(t for run in runs for t in run.unexpected)
    return ParityReport(scenario.name, tuple(outcomes), tracebacks)


def assert_parity(
    scenario: Scenario,
    directory: str | Path,
    *,
    modes: Sequence[Mode] = ALL_MODES,
    timeout: float = 120.0,
) -> ParityReport:
    """:func:`run_parity`, raising AssertionError with the report's text unless every mode
    passed."""
    report = run_parity(scenario, directory, modes=modes, timeout=timeout)
    if not report.ok:
        raise AssertionError(str(report))
    return report
