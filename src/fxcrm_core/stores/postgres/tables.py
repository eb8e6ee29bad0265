"""Read models kept as PostgreSQL tables (a portal, reports and replicas query them), fed from the
log exactly once however many processes run the feeder.

Each read model's position is a row of ``fx_checkpoints`` (``table:<name>``) in the database
that holds its tables. A page of events goes in by one transaction that first locks that row
(``SELECT ... FOR UPDATE``), applies only the events after the position it finds there, and
moves the position to the end of the page: the rows and the position commit together or not at
all, and a second feeder waits on the row, then sees the moved position and skips what the
first applied. The log may live anywhere (PostgreSQL, SQLite, memory): only the tables and the
checkpoint must share a database.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import psycopg

from fxcrm_core.events.codec import EventCodec
from fxcrm_core.events.event import DomainEvent, RecordedEvent
from fxcrm_core.events.store import EventStore, StoredEvent, read_types
from fxcrm_core.kernel.errors import FxCrmError, NotFoundError, ValidationError
from fxcrm_core.stores.postgres._db import Conn, PostgresDatabase

__all__ = ["TableProjection", "TableProjectionError", "TableProjectionRunner", "checkpoint_name"]

TABLES_LOCK = 0x66786372_6D000003  # held while read models create their tables ("fxcrm" + 3)

_LOCK_ROW = (
    "INSERT INTO fx_checkpoints (name, position) VALUES (%s, 0) ON CONFLICT (name) DO NOTHING"
)
_SELECT_FOR_UPDATE = "SELECT position FROM fx_checkpoints WHERE name = %s FOR UPDATE"
_SET = "UPDATE fx_checkpoints SET position = %s WHERE name = %s"


class TableProjectionError(FxCrmError, RuntimeError):
    """A table read model failed on an event: that page's rows and position were rolled back."""

    default_message = "a table read model failed; its position was not advanced"


@runtime_checkable
class TableProjection(Protocol):
    """A read model whose rows are tables in the host's PostgreSQL database.

    ``name`` is its identity (its checkpoint is ``table:<name>``): keep it stable, and change it
    when the tables' meaning changes (then the new one is built from position 0). ``event_types``
    are stored type names (None: every event), which spares the runner the other rows.
    Every method runs SQL on the connection it is given, inside the runner's transaction, and
    never commits or rolls back.
    """

    name: str
    event_types: frozenset[str] | None

    def schema(self, conn: Conn) -> None:
        """Create the read model's tables if they do not exist (``CREATE TABLE IF NOT
        EXISTS``): the host's own tables, apart from the SDK's migrated ones."""
        ...

    def handle(self, conn: Conn, recorded: RecordedEvent[DomainEvent]) -> None:
        """Apply one event to the tables."""
        ...

    def reset(self, conn: Conn) -> None:
        """Empty the tables (``TRUNCATE`` or ``DELETE``), for a rebuild."""
        ...


def checkpoint_name(projection_name: str) -> str:
    """The ``fx_checkpoints`` row that holds a table read model's position."""
    return f"table:{projection_name}"


def _check(projections: Iterable[TableProjection]) -> dict[str, TableProjection]:
    if isinstance(projections, str | bytes) or not isinstance(projections, Iterable):
        raise ValidationError("table read models are given as a list")
    named: dict[str, TableProjection] = {}
    for p in projections:
        if not isinstance(p, TableProjection):
            raise ValidationError(
                "a table read model has name, event_types, schema(), handle() and reset()"
            )
        name = p.name
        if not isinstance(name, str) or not name or len(name) > 200 or not name.isprintable():
            raise ValidationError("a table read model's name is printable text, 1 to 200 chars")
        if name in named:
            raise ValidationError(f"two table read models are named {name}")
        types = p.event_types
        if types is not None and (
            not isinstance(types, frozenset) or not all(isinstance(t, str) for t in types)
        ):
            raise ValidationError(
                f"table read model {name}: event_types is a frozenset of type names, or None"
            )
        named[name] = p
    if not named:
        raise ValidationError("a table read model runner needs at least one read model")
    return named


def _why(exc: BaseException) -> str:
    """What went wrong, free of personal data: an FxCrmError's message is (and is kept);
    another error's text is not repeated (a database's can quote a row), only its type and,
    from PostgreSQL, its SQLSTATE."""
    if isinstance(exc, FxCrmError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        return f"{type(exc).__name__} (SQLSTATE {exc.sqlstate})"
    return type(exc).__name__


def _failure(name: str, stored: StoredEvent, exc: BaseException) -> TableProjectionError:
    error = TableProjectionError(
        f"table read model {name} failed on the event at position {stored.position} "
        f"({stored.event_type}): {_why(exc)}; nothing of that page was kept"
    )
    error.__cause__ = exc
    return error


class TableProjectionRunner:
    """Feeds table read models from ``store`` into ``db``, each event applied exactly once
    across every runner on that database (see the module's docstring).

    ``page``: the events applied per transaction. Call :meth:`catch_up` from a worker loop, or
    before an answer that must see the latest events; :meth:`rebuild` replays one read model.
    The read models' tables are created (``schema``) by :meth:`create_tables`, which the first
    :meth:`catch_up` or :meth:`rebuild` calls.
    """

    def __init__(
        self,
        db: PostgresDatabase,
        store: EventStore,
        codec: EventCodec,
        projections: Sequence[TableProjection],
        *,
        page: int = 1000,
    ) -> None:
        if not isinstance(db, PostgresDatabase):
            raise ValidationError("a table read model runner writes to a PostgresDatabase")
        if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= 100_000:
            raise ValidationError("page is a whole number of events between 1 and 100000")
        self.db, self.store, self.codec, self.page = db, store, codec, page
        self._projections = _check(projections)
        self._lock = threading.Lock()  # one object shared by threads: one feeder at a time
        self._created = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._projections)

    def create_tables(self) -> None:
        """Run every read model's ``schema`` in one transaction, under an advisory lock (two
        processes running ``CREATE TABLE IF NOT EXISTS`` at once can collide in the catalog)."""
        with self.db.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (TABLES_LOCK,))
            for name, p in self._projections.items():
                try:
                    p.schema(conn)
                except Exception as exc:
                    raise TableProjectionError(
                        f"table read model {name} could not create its tables: {_why(exc)}"
                    ) from exc
        self._created = True

    def position(self, name: str) -> int:
        """The log position read model ``name`` has applied up to (0: none yet)."""
        self._projection(name)
        return self.db.get_checkpoint(checkpoint_name(name))

    def catch_up(self) -> int:
        """Apply every event recorded after each read model's position; returns how many this
        call applied (events another runner applied meanwhile are not counted). A handler that
        raises rolls its page back and raises TableProjectionError; the read models before it
        in the list keep what they applied."""
        with self._lock:
            if not self._created:
                self.create_tables()
            return sum(self._catch_up(p) for p in self._projections.values())

    def rebuild(self, name: str) -> int:
        """Empty read model ``name``'s tables and set its position to 0 (one transaction), then
        replay the whole log into it; returns how many events it applied. Its tables grow
        page by page meanwhile (a host that must keep answering builds a new read model under
        a new name and switches to it when caught up)."""
        p = self._projection(name)
        with self._lock:
            if not self._created:
                self.create_tables()
            checkpoint = checkpoint_name(name)
            with self.db.transaction() as conn:
                self._lock_position(conn, checkpoint)
                try:
                    p.reset(conn)
                except Exception as exc:
                    raise TableProjectionError(
                        f"table read model {name} could not empty its tables: {_why(exc)}"
                    ) from exc
                conn.execute(_SET, (0, checkpoint))
            return self._catch_up(p)

    # -- inside ----------------------------------------------------------------------------
    def _projection(self, name: str) -> TableProjection:
        p = self._projections.get(name)
        if p is None:
            raise NotFoundError("no table read model of that name in this runner")
        return p

    @staticmethod
    def _lock_position(conn: Conn, checkpoint: str) -> int:
        """Lock the read model's checkpoint row (made at 0 if missing) and return its position,
        the latest committed: FOR UPDATE waits for a transaction holding the row, then reads the
        row as that transaction left it."""
        with conn.pipeline():
            conn.execute(_LOCK_ROW, (checkpoint,))
            cur = conn.execute(_SELECT_FOR_UPDATE, (checkpoint,))
        row = cur.fetchone()
        if row is None:  # pragma: no cover - the row was just made, and rows are never deleted
            raise NotFoundError("a table read model's checkpoint row vanished")
        return int(row[0])

    def _catch_up(self, p: TableProjection) -> int:
        checkpoint = checkpoint_name(p.name)
        position = self.db.get_checkpoint(checkpoint)
        applied = 0
        while True:
            # Read the page without holding the row: a runner waiting for the row keeps no
            # connection busy but the one it waits on (a pool of one connection is enough
            # when the log lives elsewhere).
            events, read_to, done = read_types(self.store, position, p.event_types, self.page)
            with self.db.transaction() as conn:
                current = self._lock_position(conn, checkpoint)
                if current < position:
                    # Rebuilt meanwhile: this page starts past the position; read again from it.
                    position, done = current, False
                    continue
                # The page holds every event of the read model's types in (position, read_to];
                # those at or before ``current`` were applied by another runner: skip them.
                for stored in events:
                    if stored.position <= current:
                        continue
                    try:
                        p.handle(conn, self.codec.decode(stored))
                    except Exception as exc:
                        raise _failure(p.name, stored, exc) from exc
                    applied += 1
                if read_to > current:
                    conn.execute(_SET, (read_to, checkpoint))
                position = max(current, read_to)
            if done:
                return applied
