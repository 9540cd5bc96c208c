"""The fleet server's database: SQLAlchemy models, engine and session helpers.

SQLite (one file, WAL) is the default; PostgreSQL is the production and
scale-out path. Every time is a Unix timestamp in seconds (a double), as in
the device protocol (``docs/protocol.md``), so both databases store the same
values without time-zone conversions. JSON columns are ``JSONB`` on
PostgreSQL and JSON text on SQLite.

Only :mod:`fleet_server.registry` reads and writes these models; everything
else talks to the registry and gets plain frozen records back.

On SQLite, SQLAlchemy emits ``BEGIN`` itself (the pysqlite recipe in
SQLAlchemy's SQLite dialect documentation) so that a write transaction can
start with ``BEGIN IMMEDIATE``: it takes the write lock first and waits up to
the busy timeout for it, instead of failing with "database is locked" when
a read lock cannot be upgraded. Open a write transaction by acquiring the
session's connection with :data:`WRITE_OPTIONS`.
"""

from fleet_server.db.access import ApiToken, AuditEntry
from fleet_server.db.engine import (
    DEFAULT_DATABASE_URL,
    SCHEMA_VERSION,
    SQLITE_BUSY_TIMEOUT_S,
    WRITE_OPTIONS,
    create_schema,
    make_engine,
    session_factory,
    sqlite_url,
)
from fleet_server.db.leases import Lease
from fleet_server.db.models import (
    Assignment,
    Base,
    Bundle,
    Device,
    DeviceTag,
    Rollout,
    RolloutPlan,
    SchemaInfo,
    Telemetry,
    TimelineEntry,
    Wave,
    WaveDevice,
)
from fleet_server.db.windows import MaintenanceWindowRow

__all__ = [
    "DEFAULT_DATABASE_URL",
    "SCHEMA_VERSION",
    "SQLITE_BUSY_TIMEOUT_S",
    "WRITE_OPTIONS",
    "ApiToken",
    "Assignment",
    "AuditEntry",
    "Base",
    "Bundle",
    "Device",
    "DeviceTag",
    "Lease",
    "MaintenanceWindowRow",
    "Rollout",
    "RolloutPlan",
    "SchemaInfo",
    "Telemetry",
    "TimelineEntry",
    "Wave",
    "WaveDevice",
    "create_schema",
    "make_engine",
    "session_factory",
    "sqlite_url",
]
