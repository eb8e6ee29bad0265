"""Policies: reactions of one part of the system to another's events, each handled exactly once.

A policy reads the global log in order and, for each event of the types it handles, records its
own events through a unit of work. Its position (the last upstream event handled) is a small
event on its own stream (``policy-<name>``), committed in the same atomic append as its output:
the output and the position land together or not at all, so a crash between the upstream commit
and the policy's commit repeats nothing and loses nothing, on any event store. Two workers on one
store race on that stream's version: one commits, the other finds the work done and moves on.

With :class:`~fxcrm_core.events.leases.Leases` (several worker processes), each policy runs in
the one worker that holds its lease: a pass first tries to take the leases it lacks (a dead
worker's policies pass to the next live one that tries), handles only the policies it holds, and
checks the lease again right before each commit. The version check above stays the last guard.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

import attrs

from fxcrm_core.events.aggregate import Aggregate
from fxcrm_core.events.event import DomainEvent, EventMetadata, RecordedEvent
from fxcrm_core.events.leases import Leases
from fxcrm_core.events.repository import Repository
from fxcrm_core.events.store import read_types
from fxcrm_core.events.unit_of_work import UnitOfWork
from fxcrm_core.kernel.errors import ConcurrencyError, FxCrmError, NotFoundError, ValidationError

__all__ = [
    "POLICY_EVENTS",
    "Handler",
    "Policy",
    "PolicyAdvanced",
    "PolicyError",
    "PolicyWaitingError",
    "PolicyRunner",
    "PolicyTracker",
]

log = logging.getLogger("fxcrm_core.policies")

Handler = Callable[[RecordedEvent[Any], UnitOfWork], None]
"""Reacts to one upstream event by recording events through the unit of work it is given (and
never committing it: the runner commits the output with the policy's position)."""


class PolicyError(FxCrmError, RuntimeError):
    """A policy failed on an upstream event; its position stays before that event."""

    default_message = "a policy failed; its position was not advanced"


class PolicyWaitingError(PolicyError):
    """A policy waits for another's output (or the scheduler's) before it can handle an
    upstream event: not a fault; the next run retries it."""

    default_message = "a policy waits for another policy's output"


class _LeaseLostError(Exception):
    """This runner no longer holds a policy's lease: it stops that policy without committing
    (not a failure: the policy's new owner carries on from its recorded position)."""


@attrs.frozen
class PolicyAdvanced(DomainEvent):
    """A policy handled the upstream events up to ``position`` (``handled`` of them here)."""

    position: int
    handled: int


POLICY_EVENTS = (PolicyAdvanced,)


@attrs.frozen(kw_only=True)
class PolicyTracker(Aggregate):
    """How far one policy has handled the log: the position of the last upstream event."""

    category = "policy"
    position: int = 0
    handled: int = 0

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, PolicyAdvanced):
            return self.evolve(position=event.position, handled=self.handled + event.handled)
        raise ValidationError(f"PolicyTracker cannot apply {type(event).__name__}")


def _types(types: Iterable[type[DomainEvent] | str]) -> tuple[type[DomainEvent] | str, ...]:
    if isinstance(types, str | bytes) or not isinstance(types, Iterable):
        raise ValidationError("a policy's event types are a list of event classes or names")
    out = tuple(types)
    for t in out:
        if not (isinstance(t, str) or (isinstance(t, type) and issubclass(t, DomainEvent))):
            raise ValidationError("a policy's event types are event classes or their names")
    return out


def _handler(value: Handler) -> Handler:
    if not callable(value):
        raise ValidationError("a policy's handler is a function of (event, unit of work)")
    return value


@attrs.frozen
class Policy:
    """One line of the policy table: ``handler`` runs for every event named in ``event_types``.

    ``name`` is the policy's identity in the log (its position stream): keep it stable. Event
    types are given as classes or as their registered names (host events: ``"host.Name"``).
    """

    name: str = attrs.field()
    event_types: tuple[type[DomainEvent] | str, ...] = attrs.field(converter=_types)
    handler: Handler = attrs.field(eq=False, converter=_handler)

    @name.validator
    def _check_name(self, _: object, value: str) -> None:
        plain = (
            value.replace("-", "").replace("_", "").replace(".", "")
            if isinstance(value, str)
            else ""
        )
        if not (plain.isascii() and plain.isalnum() and len(value) <= 100):
            raise ValidationError(
                "a policy name is up to 100 ASCII letters, digits, '-', '_' and '.'"
            )

    @event_types.validator
    def _check_types(self, _: object, value: tuple[type[DomainEvent] | str, ...]) -> None:
        if not value:
            raise ValidationError("a policy handles at least one event type")


@attrs.define
class _Progress:
    policy: Policy
    types: frozenset[str]  # the stored names of the event types it handles
    tracker: PolicyTracker | None  # read from the log when an event of its types turns up
    scanned: int  # read up to here: nothing after it handled yet
    idle: int = 0  # upstream events handled with no output since the tracker's position...
    idle_upto: int = 0  # ...the last of them (recorded in bulk, after the batch)


class PolicyRunner:
    """Runs the policies of one broker over its log: on demand (:meth:`run`) or as a worker
    (:meth:`follow`). Safe to run in several threads or processes at once.

    ``leases``: with several workers, each policy runs only in the runner holding its lease
    (see the module docstring); without, every runner runs every policy."""

    def __init__(
        self,
        repository: Repository,
        policies: Sequence[Policy] = (),
        *,
        read_batch: int = 500,
        retries: int = 5,
        progress_every: int = 1000,
        leases: Leases | None = None,
    ) -> None:
        if leases is not None and not isinstance(leases, Leases):
            raise ValidationError("leases is a Leases adapter (or None)")
        self.repository = repository
        self.leases = leases
        self.read_batch = read_batch
        self.retries = retries
        self.progress_every = progress_every
        self._policies: dict[str, Policy] = {}
        self._names: dict[str, frozenset[str]] = {}
        self._scanned: dict[str, int] = {}
        self._known: dict[str, int] = {}  # each policy's recorded position, as last seen here
        self._lock = threading.RLock()
        self._local = threading.local()
        for policy in policies:
            self.add(policy)

    @property
    def policies(self) -> tuple[Policy, ...]:
        return tuple(self._policies.values())

    def add(self, policy: Policy) -> None:
        if policy.name in self._policies:
            raise ValidationError(f"a policy named {policy.name} is already registered")
        registry = self.repository.codec.registry
        known = registry.names()
        names = frozenset(
            t if isinstance(t, str) else registry.name_of(t) for t in policy.event_types
        )
        if not names <= known:
            # A name the codec cannot read would never fire: a typo, or a host event not
            # registered (host events are stored as "host.<Name>").
            raise ValidationError(
                f"policy {policy.name} names an event type that is not registered"
            )
        self._names[policy.name] = names
        self._policies[policy.name] = policy

    def position(self, name: str) -> int:
        """The position of the last upstream event the named policy has handled (any process)."""
        if name not in self._policies:
            raise NotFoundError("no policy of that name")
        return self._tracker(name).position

    def lag(self) -> dict[str, int]:
        """Per policy: how many events of its types wait after its recorded position."""
        out = {}
        for name in self._policies:
            position, waiting, types = self._tracker(name).position, 0, self._names[name]
            while True:
                events, position, done = read_types(
                    self.repository.store, position, types, self.read_batch
                )
                waiting += len(events)
                if done:
                    break
            out[name] = waiting
        return out

    def _tracker(self, name: str) -> PolicyTracker:
        return self.repository.load(PolicyTracker, name) or PolicyTracker.blank(name)

    def run(self) -> int:
        """Handle every event committed so far (and every event the policies record meanwhile);
        returns how many upstream events were handled. A call from inside a handler returns 0:
        the outer run picks up what the handler recorded.

        A policy that fails stops where it failed (its position stays before that event) and
        the others carry on; the run then raises the first failure as a PolicyError. One that
        waits (:class:`PolicyWaitingError`) is tried again in the same run once the others have
        handled something.
        """
        if getattr(self._local, "running", False) or not self._policies:
            return 0
        self._local.running = True
        failed: dict[str, PolicyError] = {}
        try:
            with self._lock:
                total = retried_at = 0
                while True:
                    handled = self._pass(failed)
                    total += handled
                    if handled:
                        continue
                    # A policy waiting for another's output is tried again once the others
                    # have handled something since it last waited (they may be what it waits
                    # for); never twice on no progress.
                    waiting = [n for n, e in failed.items() if isinstance(e, PolicyWaitingError)]
                    if not waiting or total == retried_at:
                        break
                    retried_at = total
                    for name in waiting:
                        del failed[name]
        finally:
            self._local.running = False
        if failed:
            first = next(iter(failed.values()))
            if len(failed) > 1:
                others = ", ".join(sorted(failed)[:5])
                waits = all(isinstance(f, PolicyWaitingError) for f in failed.values())
                kind = PolicyWaitingError if waits else PolicyError
                raise kind(f"{first} (failed too: {others})") from first
            raise first
        return total

    def follow(
        self,
        stop: threading.Event,
        *,
        interval: float = 0.5,
        on_error: Callable[[PolicyError], None] | None = None,
    ) -> None:
        """Run the policies until ``stop`` is set, polling the log every ``interval`` seconds.
        A failure (a policy's, or the store's) is reported to ``on_error`` (default: logged)
        and retried at the next poll; the loop itself never stops on one."""
        while not stop.is_set():
            try:
                self.run()
            except Exception as exc:  # a worker outlives any one failure
                error = exc if isinstance(exc, PolicyError) else _wrapped("the runner", exc)
                if on_error is not None:
                    on_error(error)
                elif isinstance(error, PolicyWaitingError):
                    log.info("a policy waits: %s", error)
                else:
                    log.error("policy failed: %s", error)
            stop.wait(interval)
        if self.leases is not None:
            # A worker stopping hands its policies over now, not when its connection ends.
            for name in self._policies:
                try:
                    self.leases.release(name)
                except Exception:
                    log.warning("policy %s: could not release its lease", name)

    def _claim(self) -> frozenset[str] | None:
        """With leases: take the policies' leases this runner lacks (a dead worker's included);
        returns the names it holds. Without: None (it runs them all)."""
        if self.leases is None:
            return None
        try:
            held = self.leases.owned()
            for name in self._policies:
                if name not in held and self.leases.acquire(name):
                    # Another worker may have moved it on: start from its recorded position.
                    self._drop(name)
            return self.leases.owned()
        except Exception as exc:
            raise _wrapped("the runner could not take its policies' leases", exc) from exc

    def _check_lease(self, name: str) -> None:
        """Right before a commit: still this runner's policy? (else it does not commit)."""
        if self.leases is not None and name not in self.leases.owned():
            raise _LeaseLostError(name)

    def _drop(self, name: str) -> None:
        self._scanned.pop(name, None)
        self._known.pop(name, None)

    def _pass(self, failed: dict[str, PolicyError]) -> int:
        """One read of the log from the slowest policy to the head; returns how many upstream
        events were handled. A policy's position is read from the log only when an event of
        its types turns up (so a command with nothing for the policies costs one read)."""
        progress = []
        owned = self._claim()
        lost: set[str] = set()  # leases lost during this pass: those policies stop, unfailed
        for name, policy in self._policies.items():
            if name in failed:
                continue
            if owned is not None and name not in owned:
                self._drop(name)  # another worker's: when it is ours again, start afresh
                continue
            scanned = self._scanned.get(name)
            tracker = None
            if scanned is None:  # first run in this process: start from the recorded position
                try:
                    tracker = self._tracker(name)
                except Exception as exc:
                    failed[name] = _wrapped(f"policy {name}", exc)
                    continue
                scanned = tracker.position
            progress.append(_Progress(policy, self._names[name], tracker, scanned))
        if not progress:
            return 0
        store = self.repository.store
        decode = self.repository.codec.decode
        handled = 0
        position = min(p.scanned for p in progress)
        # A store that can read only some types (optional, see store.py) returns the events of
        # any policy's types and how far it read, so the others are skipped without being
        # fetched; every policy then reads the same rows it would pick from the whole batch.
        types = frozenset[str]().union(*(p.types for p in progress))
        while True:
            batch, upto, done = read_types(store, position, types, self.read_batch)
            if upto <= position:
                break
            # Each event is decoded once for every policy of the pass that handles it (a deal
            # batch feeds half a dozen): decoded events are immutable.
            decoded: dict[int, RecordedEvent[DomainEvent]] = {}
            for p in progress:
                name = p.policy.name
                if name in failed or name in lost:
                    continue
                try:
                    for stored in batch:
                        if stored.position <= p.scanned or stored.event_type not in p.types:
                            continue
                        if p.tracker is None:  # another process may have moved it: read it now
                            p.tracker = self._tracker(name)
                        if stored.position > p.tracker.position:  # else: another worker did it
                            recorded = decoded.get(stored.position)
                            if recorded is None:
                                recorded = decoded[stored.position] = decode(stored)
                            handled += self._handle(p, recorded)
                        p.scanned = stored.position
                    self._record_idle(p)
                except _LeaseLostError:
                    lost.add(name)
                    self._drop(name)
                    continue
                except Exception as exc:
                    failed[name] = (
                        exc if isinstance(exc, PolicyError) else _wrapped(f"policy {name}", exc)
                    )
                    self._safely_record_idle(p)
                    continue
                p.scanned = max(p.scanned, upto)
                self._scanned[name] = p.scanned
            position = upto
            if done:
                # Read up to the head as it was. What a handler recorded since is read by the
                # run's next pass (any recording counts as handled, so there is one).
                break
        for p in progress:
            if p.policy.name not in failed and p.policy.name not in lost:
                self._safely_record_progress(p)
        return handled

    def _handle(self, p: _Progress, recorded: RecordedEvent[DomainEvent]) -> int:
        name = p.policy.name
        metadata = EventMetadata(
            f"policy:{name}",
            recorded.metadata.correlation_id,
            causation_id=f"{recorded.stream_id}/{recorded.version}",
            reason=f"policy {name} on {type(recorded.event).__name__}",
        )
        for _ in range(self.retries):
            with UnitOfWork(self.repository, metadata) as uow:
                try:
                    p.policy.handler(recorded, uow)
                except Exception as exc:
                    raise _wrapped(
                        f"policy {name} failed on the event at position {recorded.position} "
                        f"({type(recorded.event).__name__})",
                        exc,
                    ) from exc
                if not uow.staged:
                    p.idle, p.idle_upto = p.idle + 1, recorded.position
                    return 1
                assert p.tracker is not None
                tracker = uow.record(p.tracker, PolicyAdvanced(recorded.position, p.idle + 1))
                self._check_lease(name)
                try:
                    uow.commit()
                except ConcurrencyError:
                    # A handler may have decided on a cached state (Repository._cached) that
                    # another writer moved on: the retry reads every state afresh.
                    self.repository.forget()
                    self._reload(p)
                    if p.tracker is not None and p.tracker.position >= recorded.position:
                        return 0  # another worker handled it
                    continue  # an aggregate moved under the handler: decide again
                except Exception as exc:
                    raise _wrapped(
                        f"policy {name} could not record its output for the event at position "
                        f"{recorded.position}",
                        exc,
                    ) from exc
            p.tracker, p.idle = tracker, 0
            return 1
        raise PolicyError(
            f"policy {name} kept conflicting on the event at position {recorded.position}"
        )

    def _record_idle(self, p: _Progress) -> None:
        """Record the no-op events handled since the last output (one small event for many)."""
        if p.idle and p.tracker is not None:
            self._advance(p, p.idle_upto, p.idle, "events with nothing to do")

    def _safely_record_idle(self, p: _Progress) -> None:
        try:
            self._record_idle(p)
        except _LeaseLostError:
            self._drop(p.policy.name)
        except Exception:  # the failure being reported matters more; these are re-handled
            log.warning("policy %s: could not record its no-op events", p.policy.name)

    def _safely_record_progress(self, p: _Progress) -> None:
        """Record how far a policy has read when it is far past its recorded position with
        nothing to handle, so a new process does not read the same stretch again."""
        name = p.policy.name
        known = p.tracker.position if p.tracker is not None else self._known.get(name, 0)
        if p.scanned - known < self.progress_every:
            return  # (no read of its position: a command with nothing to do costs one read)
        try:
            p.tracker = tracker = p.tracker or self._tracker(name)
            if p.scanned - tracker.position >= self.progress_every:
                self._advance(p, p.scanned, 0, "read with nothing to do")
            if p.tracker is not None:
                self._known[name] = p.tracker.position
        except _LeaseLostError:
            self._drop(name)
        except Exception:
            log.warning("policy %s: could not record how far it has read", p.policy.name)

    def _advance(self, p: _Progress, position: int, handled: int, reason: str) -> None:
        assert p.tracker is not None
        metadata = EventMetadata(f"policy:{p.policy.name}", reason=reason)
        with UnitOfWork(self.repository, metadata) as uow:
            tracker = uow.record(p.tracker, PolicyAdvanced(position, handled))
            self._check_lease(p.policy.name)
            try:
                uow.commit()
            except ConcurrencyError:
                self._reload(p)
                return
        p.tracker, p.idle = tracker, 0

    def _reload(self, p: _Progress) -> None:
        p.tracker = self._tracker(p.policy.name)  # a load reads every newer event
        if p.tracker.position >= p.idle_upto:
            p.idle = 0


def _wrapped(what: str, exc: BaseException) -> PolicyError:
    """A PolicyError saying what failed; an FxCrmError's message is free of personal data, so it
    is kept, while another's text is not repeated (only its type)."""
    if isinstance(exc, PolicyError):
        return exc
    said = f": {exc}" if isinstance(exc, FxCrmError) else ""
    error = PolicyError(f"{what}: {type(exc).__name__}{said}")
    error.__cause__ = exc
    return error
