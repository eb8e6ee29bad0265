"""Service records on a client: notes, calls and follow-up tasks, each an event on the client's
``servicerecord-<client id>`` stream with its actor (the metadata) and its instant.

Free text (a note, a call's note, a task's title) is personal data: sealed under the client's
own key like the client's contact details, so an erasure (the key shredded) leaves it
``[erased]`` in every process. Who may see a record is who may see the client: every command
and read checks its permission with the client's id, so the role's row scope applies (a sales
rep: the clients it owns; an IB: none, it holds no records permission).

Permissions (:data:`RECORDS_GRANTS` lists what a broker grants by default):

- ``client.note``: add a note, log a call, open a task, complete one's own task;
- ``note.read``: read a client's notes, calls and tasks;
- ``task.assign``: reassign a task, complete another's, list another owner's tasks.

:class:`OpenTasks` is the memory read model of open tasks per owner, rebuilt from the log in
each process (no text in it: ids, owners and due instants only).
"""

from __future__ import annotations

import enum
import threading
import unicodedata
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Self

import attrs

from fxcrm_core.access import AccessControl, AccessPolicy, Actor, Role
from fxcrm_core.engagement._clients import check_parts, live_client
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
    pii,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import (
    AccessDeniedError,
    ArgumentTypeError,
    ConcurrencyError,
    IllegalTransitionError,
    NotFoundError,
    ValidationError,
)
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.kernel.time import to_utc

__all__ = [
    "NOTE_READ",
    "NOTE_WRITE",
    "RECORDS_GRANTS",
    "RECORD_EVENTS",
    "TASK_ASSIGN",
    "CallDirection",
    "CallLogged",
    "CallOutcome",
    "CallView",
    "NoteAdded",
    "NoteView",
    "OpenTask",
    "OpenTasks",
    "ServiceRecord",
    "ServiceRecords",
    "TaskDone",
    "TaskOpened",
    "TaskReassigned",
    "TaskStatus",
    "TaskView",
    "with_records_grants",
]

NOTE_WRITE = "client.note"
NOTE_READ = "note.read"
TASK_ASSIGN = "task.assign"

#: The grants a broker gives by default (the integrator adds them to ``DEFAULT_POLICY``); every
#: one is checked with the client's id, so the role's row scope applies.
RECORDS_GRANTS: Mapping[str, frozenset[str]] = {
    Role.SALES: frozenset({NOTE_WRITE, NOTE_READ}),
    Role.SUPPORT: frozenset({NOTE_WRITE, NOTE_READ}),
    Role.COMPLIANCE: frozenset({NOTE_READ}),
    Role.ADMIN: frozenset({NOTE_READ, TASK_ASSIGN}),
}

NOTE_LIMIT = 4000
TITLE_LIMIT = 200
_MAX_CALL = timedelta(hours=24)
_ATTEMPTS = 3


def with_records_grants(policy: AccessPolicy) -> AccessPolicy:
    """``policy`` with :data:`RECORDS_GRANTS` added to its roles (each keeps its row scope)."""
    grants = {role: set(perms) for role, perms in policy.grants.items()}
    for role, perms in RECORDS_GRANTS.items():
        grants.setdefault(role, set()).update(perms)
    return AccessPolicy(grants, policy.scopes)


class CallDirection(enum.Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallOutcome(enum.Enum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    VOICEMAIL = "voicemail"
    BUSY = "busy"
    WRONG_NUMBER = "wrong_number"


class TaskStatus(enum.Enum):
    OPEN = "open"
    DONE = "done"


# -- events -----------------------------------------------------------------------------------
@attrs.frozen
class NoteAdded(DomainEvent):
    """A note on the client; ``text`` sealed under the client's key."""

    __subject__ = "client_id"
    client_id: str
    note_id: str
    at: datetime
    text: str = pii()


@attrs.frozen
class CallLogged(DomainEvent):
    """A call with the client: its direction, outcome, length (whole seconds) and a note (sealed
    under the client's key; empty text for none)."""

    __subject__ = "client_id"
    client_id: str
    call_id: str
    at: datetime
    direction: CallDirection
    outcome: CallOutcome
    duration_seconds: int
    note: str = pii()


@attrs.frozen
class TaskOpened(DomainEvent):
    """A follow-up task on the client for ``owner_id`` (a staff actor id), due at ``due_at``;
    its ``title`` sealed under the client's key."""

    __subject__ = "client_id"
    client_id: str
    task_id: str
    at: datetime
    owner_id: str
    due_at: datetime
    title: str = pii()


@attrs.frozen
class TaskDone(DomainEvent):
    client_id: str
    task_id: str
    at: datetime


@attrs.frozen
class TaskReassigned(DomainEvent):
    client_id: str
    task_id: str
    at: datetime
    owner_id: str
    previous_owner_id: str


RECORD_EVENTS: tuple[type[DomainEvent], ...] = (
    NoteAdded,
    CallLogged,
    TaskOpened,
    TaskDone,
    TaskReassigned,
)


@attrs.frozen
class _Task:
    owner_id: str
    due_at: datetime
    status: TaskStatus = TaskStatus.OPEN


@attrs.frozen(kw_only=True)
class ServiceRecord(Aggregate):
    """One client's service records (id: the client id): the tasks' owners and states (no
    text: the text is read from the log when shown)."""

    category = "servicerecord"
    tasks: Mapping[str, _Task] = attrs.field(factory=dict)
    entries: int = 0

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, NoteAdded | CallLogged):
            return self.evolve(entries=self.entries + 1)
        if isinstance(event, TaskOpened):
            tasks = {**self.tasks, event.task_id: _Task(event.owner_id, event.due_at)}
            return self.evolve(tasks=tasks, entries=self.entries + 1)
        if isinstance(event, TaskDone):
            task = self.tasks[event.task_id]
            done = attrs.evolve(task, status=TaskStatus.DONE)
            return self.evolve(tasks={**self.tasks, event.task_id: done})
        if isinstance(event, TaskReassigned):
            task = attrs.evolve(self.tasks[event.task_id], owner_id=event.owner_id)
            return self.evolve(tasks={**self.tasks, event.task_id: task})
        raise ValidationError(f"ServiceRecord cannot apply {type(event).__name__}")

    def task(self, task_id: str) -> _Task:
        found = self.tasks.get(task_id)
        if found is None:
            raise NotFoundError("no such task on this client")
        return found


# -- views ------------------------------------------------------------------------------------
@attrs.frozen
class NoteView:
    note_id: str
    client_id: str
    at: datetime
    author: str
    text: str  # "[erased]" once the client was erased


@attrs.frozen
class CallView:
    call_id: str
    client_id: str
    at: datetime
    author: str
    direction: CallDirection
    outcome: CallOutcome
    duration: timedelta
    note: str


@attrs.frozen
class TaskView:
    task_id: str
    client_id: str
    opened_at: datetime
    opened_by: str
    owner_id: str
    due_at: datetime
    title: str
    status: TaskStatus
    history: tuple[tuple[str, datetime, str], ...]  # (what, when, who): opened, reassigned, done


@attrs.frozen
class OpenTask:
    """An open task in the read model: ids, owner and due instant (no text)."""

    task_id: str
    client_id: str
    owner_id: str
    due_at: datetime


class OpenTasks:
    """A memory read model of open tasks per owner, rebuilt from the log in each process."""

    name = "open-tasks"
    event_types: frozenset[str] | None = frozenset({"TaskOpened", "TaskDone", "TaskReassigned"})

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tasks: dict[str, OpenTask] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        event = recorded.event
        if isinstance(event, TaskOpened):
            self.tasks[event.task_id] = OpenTask(
                event.task_id, event.client_id, event.owner_id, event.due_at
            )
        elif isinstance(event, TaskDone):
            self.tasks.pop(event.task_id, None)
        elif isinstance(event, TaskReassigned):
            task = self.tasks.get(event.task_id)
            if task is not None:
                self.tasks[event.task_id] = attrs.evolve(task, owner_id=event.owner_id)

    def of(self, owner_id: str) -> list[OpenTask]:
        """The owner's open tasks, soonest due first."""
        return sorted(
            (t for t in self.tasks.values() if t.owner_id == owner_id),
            key=lambda t: (t.due_at, t.task_id),
        )


# -- the service ------------------------------------------------------------------------------
def _id(value: object, what: str) -> str:
    return checked_text(value, what, 100)


def _staff_id(value: object) -> str:
    owner = _id(value, "task owner")
    if not owner.startswith("staff:"):
        raise ValidationError("a task's owner is a staff actor id ('staff:<id>')")
    return owner


def _free_text(value: object, what: str, limit: int) -> str:
    """A note's text: printable, newlines and tabs allowed (a note is a paragraph)."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"the {what} is text")
    flat = value.replace("\n", " ").replace("\t", " ").replace("\r", " ")
    checked_text(flat, what, limit)
    if any(unicodedata.category(ch) == "Cs" for ch in value):
        # A lone surrogate cannot be encoded (sealing it would raise UnicodeEncodeError).
        raise ValidationError(f"the {what} holds a control character")
    return value.strip()


class ServiceRecords:
    """Notes, calls and follow-up tasks on clients. Every command records its events in one
    commit (metadata: the actor); a racing writer on the same client is retried."""

    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        projections: ProjectionRunner,
        *,
        clock: Clock | None = None,
        ids: Callable[[], str] | None = None,
    ) -> None:
        check_parts("service records", repository, access, projections)
        self.repository = repository
        self.access = access
        self.projections = projections
        self.clock = clock or SystemClock()
        self.ids = ids or IdGenerator(self.clock)
        self.open_tasks = OpenTasks()
        self._lock = threading.Lock()

    # -- writing ------------------------------------------------------------------------------
    def _live_client(self, client_id: str) -> None:
        live_client(self.repository, client_id)

    def _record(
        self,
        actor: Actor,
        client_id: str,
        reason: str,
        decide: Callable[[ServiceRecord], list[DomainEvent]],
    ) -> None:
        for _ in range(_ATTEMPTS):
            state = self.repository.load(ServiceRecord, client_id) or ServiceRecord.blank(client_id)
            events = decide(state)
            if not events:
                return
            try:
                with UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason)) as uow:
                    uow.record(state, *events)
                    uow.commit()
            except ConcurrencyError:
                continue
            return
        raise ConcurrencyError("the client's service record kept changing; try again")

    def add_note(self, actor: Actor, client_id: str, text: str) -> str:
        """Add a note; returns its id. Needs ``client.note`` on the client's rows."""
        key = _id(client_id, "client id")
        self.access.require(actor, NOTE_WRITE, client_id=key)
        body = _free_text(text, "note", NOTE_LIMIT)
        self._live_client(key)
        note_id = self.ids()
        at = self.clock.now()
        self._record(actor, key, "note", lambda _: [NoteAdded(key, note_id, at, body)])
        return note_id

    def log_call(
        self,
        actor: Actor,
        client_id: str,
        *,
        direction: CallDirection,
        outcome: CallOutcome,
        duration: timedelta,
        note: str = "",
        at: datetime | None = None,
    ) -> str:
        """Log a call (``at``: when it started, default now); returns its id."""
        key = _id(client_id, "client id")
        self.access.require(actor, NOTE_WRITE, client_id=key)
        if not isinstance(direction, CallDirection) or not isinstance(outcome, CallOutcome):
            raise ArgumentTypeError("a call's direction and outcome are CallDirection/CallOutcome")
        if not isinstance(duration, timedelta):
            raise ArgumentTypeError("a call's duration is a timedelta")
        if not timedelta(0) <= duration <= _MAX_CALL:
            raise ValidationError("a call lasts from 0 to 24 hours")
        body = "" if note == "" else _free_text(note, "call note", NOTE_LIMIT)
        now = self.clock.now()
        when = now if at is None else to_utc(at, "at")
        if when > now:
            raise ValidationError("a call is logged after it started")
        self._live_client(key)
        call_id = self.ids()
        seconds = int(duration.total_seconds())
        self._record(
            actor,
            key,
            "call",
            lambda _: [CallLogged(key, call_id, when, direction, outcome, seconds, body)],
        )
        return call_id

    def open_task(
        self, actor: Actor, client_id: str, *, title: str, due_at: datetime, owner_id: str
    ) -> str:
        """Open a follow-up task for ``owner_id`` (a staff id), due at ``due_at``; returns its
        id. Opening one for another owner than oneself needs ``task.assign`` too."""
        key = _id(client_id, "client id")
        self.access.require(actor, NOTE_WRITE, client_id=key)
        owner = _staff_id(owner_id)
        if owner != actor.id:
            self.access.require(actor, TASK_ASSIGN, client_id=key)
        text = _free_text(title, "task title", TITLE_LIMIT)
        due = to_utc(due_at, "due_at")
        self._live_client(key)
        task_id = self.ids()
        at = self.clock.now()
        self._record(
            actor, key, "task opened", lambda _: [TaskOpened(key, task_id, at, owner, due, text)]
        )
        return task_id

    def complete_task(self, actor: Actor, client_id: str, task_id: str) -> None:
        """Mark a task done: its owner (``client.note``) or a supervisor (``task.assign``).
        A task already done is refused (IllegalTransitionError)."""
        key = _id(client_id, "client id")
        task_key = _id(task_id, "task id")
        self.access.require(actor, NOTE_WRITE, client_id=key)

        def decide(state: ServiceRecord) -> list[DomainEvent]:
            task = state.task(task_key)
            if task.owner_id != actor.id:
                self.access.require(actor, TASK_ASSIGN, client_id=key)
            if task.status is TaskStatus.DONE:
                raise IllegalTransitionError("the task is done already")
            return [TaskDone(key, task_key, self.clock.now())]

        self._record(actor, key, "task done", decide)

    def reassign_task(self, actor: Actor, client_id: str, task_id: str, owner_id: str) -> None:
        """Give an open task to another owner (``task.assign``); the same owner is a no-op."""
        key = _id(client_id, "client id")
        task_key = _id(task_id, "task id")
        self.access.require(actor, TASK_ASSIGN, client_id=key)
        owner = _staff_id(owner_id)

        def decide(state: ServiceRecord) -> list[DomainEvent]:
            task = state.task(task_key)
            if task.status is TaskStatus.DONE:
                raise IllegalTransitionError("a done task is not reassigned")
            if task.owner_id == owner:
                return []
            return [TaskReassigned(key, task_key, self.clock.now(), owner, task.owner_id)]

        self._record(actor, key, "task reassigned", decide)

    # -- reading ------------------------------------------------------------------------------
    def _history(self, actor: Actor, client_id: str) -> list[RecordedEvent[DomainEvent]]:
        key = _id(client_id, "client id")
        self.access.require(actor, NOTE_READ, client_id=key)
        stream = ServiceRecord.stream_id_for(key)
        decode = self.repository.codec.decode
        return [decode(row) for row in self.repository.store.read_stream(stream)]

    def notes(self, actor: Actor, client_id: str) -> list[NoteView]:
        """The client's notes, oldest first (``note.read`` on the client's rows)."""
        return [
            NoteView(e.note_id, e.client_id, e.at, r.metadata.actor, e.text)
            for r in self._history(actor, client_id)
            if isinstance(e := r.event, NoteAdded)
        ]

    def calls(self, actor: Actor, client_id: str) -> list[CallView]:
        """The client's calls, oldest first (``note.read`` on the client's rows)."""
        return [
            CallView(
                e.call_id,
                e.client_id,
                e.at,
                r.metadata.actor,
                e.direction,
                e.outcome,
                timedelta(seconds=e.duration_seconds),
                e.note,
            )
            for r in self._history(actor, client_id)
            if isinstance(e := r.event, CallLogged)
        ]

    def tasks(self, actor: Actor, client_id: str) -> list[TaskView]:
        """The client's tasks, open and done, in the order opened (``note.read``)."""
        views: dict[str, TaskView] = {}
        for r in self._history(actor, client_id):
            e = r.event
            who = r.metadata.actor
            if isinstance(e, TaskOpened):
                views[e.task_id] = TaskView(
                    e.task_id, e.client_id, e.at, who, e.owner_id, e.due_at, e.title,
                    TaskStatus.OPEN, (("opened", e.at, who),),
                )  # fmt: skip
            elif isinstance(e, TaskDone) and e.task_id in views:
                v = views[e.task_id]
                views[e.task_id] = attrs.evolve(
                    v, status=TaskStatus.DONE, history=(*v.history, ("done", e.at, who))
                )
            elif isinstance(e, TaskReassigned) and e.task_id in views:
                v = views[e.task_id]
                views[e.task_id] = attrs.evolve(
                    v, owner_id=e.owner_id, history=(*v.history, ("reassigned", e.at, who))
                )
        return list(views.values())

    def _caught_up(self) -> OpenTasks:
        with self._lock:
            self.projections.catch_up(self.open_tasks)
        return self.open_tasks

    def open_tasks_of(self, actor: Actor, owner_id: str | None = None) -> list[OpenTask]:
        """The open tasks of ``owner_id`` (default: the actor's own), soonest due first. Another
        owner's list needs ``task.assign``. Tasks on clients the actor may not read
        (``note.read`` on the client's rows) are left out of the list: a listing shows what
        the actor may see (a client reassigned to another rep takes its tasks' rows along)."""
        owner = actor.id if owner_id is None else _id(owner_id, "owner id")
        if owner != actor.id and not self.access.allows(actor, TASK_ASSIGN):
            raise self._denied(actor)
        found = self._caught_up().of(owner)
        return [t for t in found if self.access.allows(actor, NOTE_READ, client_id=t.client_id)]

    def overdue(
        self, actor: Actor, owner_id: str | None = None, *, at: datetime | None = None
    ) -> list[OpenTask]:
        """The owner's open tasks due before ``at`` (default now), most overdue first."""
        when = self.clock.now() if at is None else to_utc(at, "at")
        return [t for t in self.open_tasks_of(actor, owner_id) if t.due_at < when]

    @staticmethod
    def _denied(actor: Actor) -> AccessDeniedError:
        return AccessDeniedError(f"{actor.id} may not {TASK_ASSIGN} here")
