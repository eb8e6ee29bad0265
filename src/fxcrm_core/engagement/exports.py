"""Client exports: a list of clients' fields for one actor, masked for its roles, capped in size,
and audited (who, which fields, how many rows, why) in the log and the audit trail.

Rules:

- ``client.export`` is required on **every** row. A row the actor may not export is
  **refused**, not silently dropped: the whole export fails with AccessDeniedError and records
  nothing (a list that quietly lacks rows reads as complete; a host narrows the selection
  instead, e.g. ``ExportFilter(owner_id=actor.id)``). This holds for a filter too.
- Personal fields are masked for the roles that grant ``client.export`` on that client
  (the broker's :class:`~fxcrm_core.privacy.MaskingPolicy`, as :meth:`Clients.get` masks a
  view for ``client.read``). ``clear=True`` gives them in full and needs ``pii.export`` on
  every row as well.
- At most ``max_rows`` rows (the service's cap) and at most ``limit`` (the caller's); a
  selection above either is refused (:class:`ExportTooLargeError`), never truncated.
- One :class:`ClientsExported` event per export (the actor and the reason in its metadata; the
  fields, the row count and the client ids in the event), and a
  :class:`~fxcrm_core.privacy.PiiExported` event per client whose personal fields left in
  full (clear, or a role the masking policy shows them in full to), all in one commit, before
  the rows are returned. The audit trail is then caught up, so it holds the export's record.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Self

import attrs

from fxcrm_core.access import AccessControl, Actor, Role
from fxcrm_core.access.audit import AuditTrail
from fxcrm_core.clients import Client, ClientRegistered, Stage
from fxcrm_core.clients.service import CLIENT_PII
from fxcrm_core.engagement._clients import check_parts
from fxcrm_core.events import (
    Aggregate,
    DomainEvent,
    EventMetadata,
    ProjectionRunner,
    RecordedEvent,
    Repository,
    UnitOfWork,
)
from fxcrm_core.kernel.clock import Clock, SystemClock
from fxcrm_core.kernel.errors import ArgumentTypeError, ValidationError
from fxcrm_core.kernel.ids import IdGenerator
from fxcrm_core.kernel.text import checked_text
from fxcrm_core.privacy.masking import DEFAULT_MASKING, MaskingPolicy, Reveal
from fxcrm_core.privacy.pii import PiiExported, PiiValue, RevealLog, require_reason

__all__ = [
    "CLEAR_EXPORT",
    "EXPORT",
    "EXPORT_EVENTS",
    "EXPORT_FIELDS",
    "EXPORT_GRANTS",
    "ClientExport",
    "ClientExports",
    "ClientsExported",
    "ExportFilter",
    "ExportLog",
    "ExportTooLargeError",
]

EXPORT = "client.export"
CLEAR_EXPORT = "pii.export"

#: What a broker grants by default on top of its policy (the integrator adds it).
EXPORT_GRANTS: Mapping[str, frozenset[str]] = {Role.COMPLIANCE: frozenset({CLEAR_EXPORT})}

_PLAIN = ("id", "kind", "country", "stage", "owner_id", "introducer_id", "risk_profile")
#: The fields an export may name: the client's plain fields, then its personal ones.
EXPORT_FIELDS: tuple[str, ...] = (*_PLAIN, *CLIENT_PII)

DEFAULT_CAP = 1000
_MAX_CAP = 100_000


class ExportTooLargeError(ValidationError):
    """The selection holds more rows than the cap or the caller's limit: nothing exported."""


def _ids(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ArgumentTypeError("name the clients as a list of ids")
    return tuple(dict.fromkeys(checked_text(v, "client id", 100) for v in value))


def _texts(value: object, what: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, frozenset | set | list | tuple):
        raise ArgumentTypeError(f"the {what} are a set of text")
    return frozenset(checked_text(v, what, 100) for v in value)


def _countries(value: object) -> frozenset[str]:
    return frozenset(c.upper() for c in _texts(value, "countries"))


def _stages(value: object) -> frozenset[Stage]:
    if isinstance(value, str) or not isinstance(value, frozenset | set | list | tuple):
        raise ArgumentTypeError("the stages are a set of Stage")
    if not all(isinstance(s, Stage) for s in value):
        raise ArgumentTypeError("the stages are a set of Stage")
    return frozenset(value)


def _optional_id(value: object) -> str | None:
    return None if value is None else checked_text(value, "id", 100)


@attrs.frozen
class ExportFilter:
    """Selects clients by country, stage, sales owner, introducer (empty: any)."""

    countries: frozenset[str] = attrs.field(default=frozenset(), converter=_countries)
    stages: frozenset[Stage] = attrs.field(default=frozenset(), converter=_stages)
    owner_id: str | None = attrs.field(default=None, converter=_optional_id)
    introducer_id: str | None = attrs.field(default=None, converter=_optional_id)

    def admits(self, client: Client) -> bool:
        return (
            (not self.countries or client.country in self.countries)
            and (not self.stages or client.stage in self.stages)
            and (self.owner_id is None or client.owner_id == self.owner_id)
            and (self.introducer_id is None or client.introducer_id == self.introducer_id)
        )


@attrs.frozen
class ClientsExported(DomainEvent):
    """An export: its fields, how many rows, which clients, whether personal fields were in
    clear; the actor and the reason are in the event's metadata."""

    export_id: str
    at: datetime
    fields: tuple[str, ...]
    rows: int
    client_ids: tuple[str, ...]
    clear: bool
    selection: str  # "ids" or "filter"


EXPORT_EVENTS: tuple[type[DomainEvent], ...] = (ClientsExported,)


@attrs.frozen(kw_only=True)
class ExportLog(Aggregate):
    """One export's stream: ``clientexport-<export id>``."""

    category = "clientexport"

    def apply(self, event: DomainEvent) -> Self:
        if isinstance(event, ClientsExported):
            return self
        raise ValidationError(f"ExportLog cannot apply {type(event).__name__}")


@attrs.frozen
class ClientExport:
    """What an export returns: its id, the fields in order and one row per client."""

    export_id: str
    fields: tuple[str, ...]
    rows: tuple[Mapping[str, str | None], ...]
    clear: bool


class _KnownClients:
    """A memory read model of registered client ids, in registration order (for filters)."""

    name = "export-clients"
    event_types: frozenset[str] | None = frozenset({"ClientRegistered"})

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.ids: dict[str, None] = {}

    def handle(self, recorded: RecordedEvent[DomainEvent]) -> None:
        if isinstance(recorded.event, ClientRegistered):
            self.ids[recorded.event.client_id] = None


def _plain(client: Client, name: str) -> str | None:
    value = getattr(client, name)
    if value is None:
        return None
    return value.value if hasattr(value, "value") and not isinstance(value, str) else str(value)


class ClientExports:
    """Audited, masked, capped exports of clients' fields (see the module's rules)."""

    def __init__(
        self,
        repository: Repository,
        access: AccessControl,
        projections: ProjectionRunner,
        *,
        masking: MaskingPolicy = DEFAULT_MASKING,
        audit: AuditTrail | None = None,
        max_rows: int = DEFAULT_CAP,
        clock: Clock | None = None,
        ids: IdGenerator | None = None,
    ) -> None:
        check_parts("exports", repository, access, projections)
        if not isinstance(masking, MaskingPolicy):
            raise ArgumentTypeError("masking is a MaskingPolicy")
        if audit is not None and not isinstance(audit, AuditTrail):
            raise ArgumentTypeError("audit is the broker's AuditTrail")
        if type(max_rows) is not int or not 1 <= max_rows <= _MAX_CAP:
            raise ValidationError(f"the export cap is 1 to {_MAX_CAP} rows")
        self.repository = repository
        self.access = access
        self.projections = projections
        self.masking = masking
        self.audit = audit
        self.max_rows = max_rows
        self.clock = clock or SystemClock()
        self.ids = ids or IdGenerator(self.clock)
        self._known = _KnownClients()
        self._lock = threading.Lock()

    def export(
        self,
        actor: Actor,
        selection: Sequence[str] | ExportFilter,
        fields: Sequence[str],
        reason: str,
        *,
        limit: int | None = None,
        clear: bool = False,
    ) -> ClientExport:
        """The clients of ``selection`` (ids, or an :class:`ExportFilter`) with ``fields``
        (names from :data:`EXPORT_FIELDS`), masked for the actor's roles unless ``clear``.
        Refused as a whole (nothing recorded) without ``client.export`` (and ``pii.export``
        when ``clear``) on every row, without a reason (or one quoting the data exported),
        or above the cap or ``limit``."""
        if not isinstance(actor, Actor):
            raise ArgumentTypeError("an export needs an Actor")
        self.access.require(actor, EXPORT)
        names = self._fields(fields)
        if not isinstance(clear, bool):
            raise ArgumentTypeError("clear is True or False")
        cap = self._cap(limit)
        require_reason(reason)
        if isinstance(selection, ExportFilter):
            kind = "filter"
            with self._lock:
                self.projections.catch_up(self._known)
                known = list(self._known.ids)
            clients = [
                c
                for cid in known
                if (c := self.repository.load(Client, cid)) is not None and selection.admits(c)
            ]
        else:
            kind = "ids"
            wanted = _ids(selection)
            if not wanted:
                raise ValidationError("name the clients to export")
            if len(wanted) > cap:
                raise ExportTooLargeError(f"{len(wanted)} rows asked; at most {cap}")
            clients = [self.repository.get(Client, cid) for cid in wanted]
        for client in clients:  # refused, not dropped
            self.access.require(actor, EXPORT, client_id=client.id)
            if clear:
                self.access.require(actor, CLEAR_EXPORT, client_id=client.id)
        if len(clients) > cap:
            raise ExportTooLargeError(f"{len(clients)} rows selected; at most {cap}")
        require_reason(reason, [v for c in clients for v in _values(c)])
        rows: list[dict[str, str | None]] = []
        audit: list[PiiExported] = []
        for client in clients:
            row, full = self._row(actor, client, names, clear)
            rows.append(row)
            if full:
                audit.append(PiiExported(client.id, full))
        export_id = self.ids()
        event = ClientsExported(
            export_id,
            self.clock.now(),
            names,
            len(rows),
            tuple(c.id for c in clients),
            clear,
            kind,
        )
        with UnitOfWork(self.repository, EventMetadata(actor.id, reason=reason)) as uow:
            uow.record(ExportLog.blank(export_id), event)
            by_subject: dict[str, list[DomainEvent]] = {}
            for item in audit:
                by_subject.setdefault(item.subject_id, []).append(item)
            for subject, events in by_subject.items():
                log = self.repository.load(RevealLog, subject) or RevealLog.blank(subject)
                uow.record(log, *events)
            uow.commit()
        if self.audit is not None:
            self.audit.catch_up(self.repository.store, self.repository.codec)
        return ClientExport(export_id, names, tuple(rows), clear)

    def history(self, export_id: str) -> RecordedEvent[DomainEvent] | None:
        """The export's recorded event (actor and reason in its metadata), from the log."""
        stream = ExportLog.stream_id_for(checked_text(export_id, "export id", 100))
        rows = self.repository.store.read_stream(stream)
        return self.repository.codec.decode(rows[0]) if rows else None

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _fields(fields: object) -> tuple[str, ...]:
        if isinstance(fields, str) or not isinstance(fields, Sequence):
            raise ArgumentTypeError("name the fields as a list")
        if not all(isinstance(f, str) and f in EXPORT_FIELDS for f in fields):
            # Checked before hashing: an unhashable item (a list) is refused typed here.
            raise ValidationError(f"an export's fields are {', '.join(EXPORT_FIELDS)}")
        names = tuple(dict.fromkeys(fields))
        if not names:
            raise ValidationError("name at least one field")
        return names

    def _cap(self, limit: object) -> int:
        if limit is None:
            return self.max_rows
        if type(limit) is not int or limit < 1:
            raise ValidationError("a limit is a positive number of rows")
        if limit > self.max_rows:
            raise ExportTooLargeError(f"at most {self.max_rows} rows per export")
        return limit

    def _row(
        self, actor: Actor, client: Client, names: tuple[str, ...], clear: bool
    ) -> tuple[dict[str, str | None], tuple[str, ...]]:
        roles = self.access.roles_allowing(actor, EXPORT, client_id=client.id)
        row: dict[str, str | None] = {}
        full: list[str] = []
        for name in names:
            kind = CLIENT_PII.get(name)
            if kind is None:
                row[name] = _plain(client, name)
                continue
            value: PiiValue | None = getattr(client, name)
            if value is None:
                row[name] = None
                continue
            if clear:
                row[name] = value.value
            else:
                row[name] = self.masking.show(roles, kind, value.value)
            if not value.erased and (clear or self.masking.reveal_for(roles, kind) is Reveal.FULL):
                full.append(name)
        return row, tuple(full)


def _values(client: Client) -> list[PiiValue]:
    return [v for f in CLIENT_PII if (v := getattr(client, f)) is not None]
