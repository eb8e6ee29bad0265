"""PostgreSQL adapters of the storage ports (psycopg 3, the ``postgres`` extra).

Create or upgrade the schema first, explicitly: ``migrate(dsn)`` (or ``fxcrm migrate --db
postgresql://...``); a store refuses a database whose schema version it does not know.
See docs/postgres.md.
"""

from fxcrm_core.stores.postgres._db import PostgresDatabase
from fxcrm_core.stores.postgres._schema import SCHEMA_VERSION, migrate, schema_version
from fxcrm_core.stores.postgres.audit import PostgresAuditLog
from fxcrm_core.stores.postgres.events import PostgresEventStore
from fxcrm_core.stores.postgres.keys import PostgresKeyStore
from fxcrm_core.stores.postgres.leases import PostgresLeases, lease_key
from fxcrm_core.stores.postgres.tables import (
    TableProjection,
    TableProjectionError,
    TableProjectionRunner,
    checkpoint_name,
)

__all__ = [
    "SCHEMA_VERSION",
    "PostgresAuditLog",
    "PostgresDatabase",
    "PostgresEventStore",
    "PostgresKeyStore",
    "PostgresLeases",
    "TableProjection",
    "TableProjectionError",
    "TableProjectionRunner",
    "checkpoint_name",
    "lease_key",
    "migrate",
    "schema_version",
]
