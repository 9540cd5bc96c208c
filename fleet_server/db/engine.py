"""Engines, sessions and the schema's version: SQLite set up for one writer, PostgreSQL checked."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, select, update
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from fleet_server.db.models import Base, SchemaInfo
from fleet_server.errors import RegistryError, RegistryStorageError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "SCHEMA_VERSION",
    "SQLITE_BUSY_TIMEOUT_S",
    "WRITE_OPTIONS",
    "create_schema",
    "make_engine",
    "session_factory",
    "sqlite_url",
]

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///edgefleet.db"
"""The database ``edgefleet serve`` uses when no ``--db`` is given (a file in the working folder)."""

SCHEMA_VERSION = 4
# Each step takes a database from version N - 1 to N in the same transaction as the check.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (  # state reports ordered by the device's (epoch, sequence); clock skew measured
        "ALTER TABLE devices ADD COLUMN state_sequence BIGINT",
        "ALTER TABLE devices ADD COLUMN state_epoch VARCHAR(32)",
        "ALTER TABLE devices ADD COLUMN state_received_at DOUBLE PRECISION",
        "ALTER TABLE devices ADD COLUMN clock_skew_s DOUBLE PRECISION",
    ),
    3: (  # one status vocabulary, the rollout planner's (fleet_server.statuses)
        "UPDATE waves SET status = 'passed' WHERE status = 'succeeded'",
        "UPDATE wave_devices SET status = 'in-progress' WHERE status = 'downloading'",
    ),
    4: (  # replicas: a device's newest event reason is stored, not kept in one process's memory
        "ALTER TABLE devices ADD COLUMN last_event_reason TEXT",
    ),
}
"""The schema these models describe; a database holding another version is refused."""

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite connection waits for another writer before giving up."""

WRITE_OPTIONS: Mapping[str, Any] = {"edgefleet_write": True}
"""Connection execution options that make a transaction a write transaction (``BEGIN IMMEDIATE`` on SQLite)."""


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path``."""
    return URL.create("sqlite", database=str(Path(path))).render_as_string()


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def make_engine(
    url: str = DEFAULT_DATABASE_URL,
    *,
    busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
    pool_size: int | None = None,
) -> Engine:
    """An engine for ``url`` set up for the fleet server.

    SQLite: WAL journal (readers never block the writer), foreign keys on, a
    busy timeout, and ``BEGIN IMMEDIATE`` for write transactions; the file's
    folder must exist. PostgreSQL (``postgresql://`` means psycopg 3):
    connections are checked before use (``pool_pre_ping``), so a restarted
    database server costs no failed request; ``pool_size`` caps the pool
    exactly (no overflow: a dedicated engine), else SQLAlchemy's default.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise RegistryError(f"not a database URL: {url!r} ({exc})") from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # SQLAlchemy 2.0 would pick psycopg2
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": busy_timeout_s})
            _configure_sqlite(engine, busy_timeout_s)
        else:
            sizing = {} if pool_size is None else {"pool_size": pool_size, "max_overflow": 0}
            engine = create_engine(parsed, pool_pre_ping=True, **sizing)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise RegistryError(f"cannot use database {_safe(parsed)}: {exc}") from exc
    return engine


def _configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
    busy_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite would emit its own BEGIN (deferred) only before DML; take that over.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("edgefleet_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def create_schema(engine: Engine) -> None:
    """Create the tables and indexes that do not exist yet; refuse a database of another schema."""
    where = _safe(engine.url)
    try:
        with (
            engine.connect().execution_options(**WRITE_OPTIONS) as connection,
            connection.begin(),
        ):
            Base.metadata.create_all(connection)
            row = connection.execute(select(SchemaInfo.version)).first()
            if row is None:
                connection.execute(insert(SchemaInfo).values(id=1, version=SCHEMA_VERSION))
                log.info("created fleet database schema v%d in %s", SCHEMA_VERSION, where)
            elif row.version < SCHEMA_VERSION:
                for version in range(row.version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[version]:
                        connection.exec_driver_sql(statement)
                connection.execute(update(SchemaInfo).values(version=SCHEMA_VERSION))
                log.warning(
                    "migrated fleet database %s from schema v%d to v%d",
                    where,
                    row.version,
                    SCHEMA_VERSION,
                )
            elif row.version != SCHEMA_VERSION:
                raise RegistryStorageError(
                    f"database {where} holds schema version {row.version}; this server "
                    f"uses version {SCHEMA_VERSION} (a newer server wrote it)"
                )
    except OperationalError as exc:
        raise RegistryStorageError(f"cannot open database {where}: {exc.orig}") from exc


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` whose loaded objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
