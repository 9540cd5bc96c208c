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

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

from fleet_server.errors import RegistryError, RegistryStorageError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "SCHEMA_VERSION",
    "SQLITE_BUSY_TIMEOUT_S",
    "WRITE_OPTIONS",
    "Assignment",
    "Base",
    "Bundle",
    "Device",
    "DeviceTag",
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

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///edgefleet.db"
"""The database ``edgefleet serve`` uses when no ``--db`` is given (a file in the working folder)."""

SCHEMA_VERSION = 3
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
}
"""The schema these models describe; a database holding another version is refused."""

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite connection waits for another writer before giving up."""

WRITE_OPTIONS: Mapping[str, Any] = {"edgefleet_write": True}
"""Connection execution options that make a transaction a write transaction (``BEGIN IMMEDIATE`` on SQLite)."""

_ID = 64  # device ids, tags, group names: ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$
_SHA = 64
_STATUS = 32

_JSON = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of every fleet server table."""


class SchemaInfo(Base):
    """One row: the schema version this database holds."""

    __tablename__ = "schema_info"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class Bundle(Base):
    """A released bundle, with its quality report and the baseline figures rollouts gate on."""

    __tablename__ = "bundles"
    __table_args__ = (Index("ix_bundles_name_version", "name", "version"),)

    sha256: Mapped[str] = mapped_column(String(_SHA), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    precision: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    released_at: Mapped[float] = mapped_column(Double)
    labels: Mapped[list[str]] = mapped_column(_JSON)
    quality: Mapped[dict[str, Any] | None] = mapped_column(_JSON, nullable=True)
    baseline_accuracy: Mapped[float | None] = mapped_column(Double, nullable=True)
    baseline_mean_confidence: Mapped[float | None] = mapped_column(Double, nullable=True)
    baseline_class_distribution: Mapped[dict[str, float] | None] = mapped_column(
        _JSON, nullable=True
    )
    latency_budget_ms: Mapped[float | None] = mapped_column(Double, nullable=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(_JSON)


class Device(Base):
    """A camera device: provisioning, availability and the state it last reported."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(_ID), primary_key=True)
    profile: Mapped[str | None] = mapped_column(String(128), nullable=True)
    origin: Mapped[str] = mapped_column(String(16))  # provisioned | first-contact
    pinned_bundle: Mapped[str | None] = mapped_column(ForeignKey("bundles.sha256"), nullable=True)
    registered_at: Mapped[float] = mapped_column(Double)
    last_seen: Mapped[float | None] = mapped_column(Double, nullable=True)
    availability: Mapped[str] = mapped_column(String(16), default="unknown")
    phase: Mapped[str | None] = mapped_column(String(_STATUS), nullable=True)
    active_bundle: Mapped[str | None] = mapped_column(String(_SHA), nullable=True)
    active_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    active_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_good_bundle: Mapped[str | None] = mapped_column(String(_SHA), nullable=True)
    target_bundle: Mapped[str | None] = mapped_column(String(_SHA), nullable=True)
    target_assignment: Mapped[int | None] = mapped_column(Integer, nullable=True)
    runtime_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state_updated_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    state_sequence: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    state_epoch: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state_received_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    clock_skew_s: Mapped[float | None] = mapped_column(Double, nullable=True)
    """The server's receive time minus the device's clock, on its latest fresh state report."""
    credentials_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    tags: Mapped[list[DeviceTag]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="DeviceTag.tag"
    )


class DeviceTag(Base):
    """One tag of one device; a group is every device carrying a tag."""

    __tablename__ = "device_tags"
    __table_args__ = (Index("ix_device_tags_tag", "tag"),)

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(_ID), primary_key=True)


class Assignment(Base):
    """Which bundle a device or group should run: the mirror of the TUF ``assignments`` role."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("kind", "name", name="uq_assignments_kind_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # devices | groups
    name: Mapped[str] = mapped_column(String(_ID))
    bundle_sha256: Mapped[str] = mapped_column(ForeignKey("bundles.sha256"))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[float] = mapped_column(Double)


class Rollout(Base):
    """A staged rollout of one bundle to a set of devices."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_status", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bundle_sha256: Mapped[str] = mapped_column(ForeignKey("bundles.sha256"))
    previous_sha256: Mapped[str | None] = mapped_column(ForeignKey("bundles.sha256"), nullable=True)
    target: Mapped[dict[str, Any]] = mapped_column(_JSON)
    status: Mapped[str] = mapped_column(String(_STATUS))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    settings: Mapped[dict[str, Any]] = mapped_column(_JSON)


class RolloutPlan(Base):
    """The rollout planner's saved state (JSON), apart from the rollout row: it is large and changes often."""

    __tablename__ = "rollout_plans"

    rollout_id: Mapped[int] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
    )
    plan: Mapped[dict[str, Any]] = mapped_column(_JSON)
    updated_at: Mapped[float] = mapped_column(Double)


class Wave(Base):
    """One wave of a rollout: the devices it covers and where it stands."""

    __tablename__ = "waves"
    __table_args__ = (UniqueConstraint("rollout_id", "index", name="uq_waves_rollout_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(_STATUS))
    started_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    settings: Mapped[dict[str, Any]] = mapped_column(_JSON)


class WaveDevice(Base):
    """One device in one wave: how far the update went and why it stopped."""

    __tablename__ = "wave_devices"
    __table_args__ = (
        UniqueConstraint("rollout_id", "device_id", name="uq_wave_devices_rollout_device"),
        Index("ix_wave_devices_wave", "wave_id"),
        Index("ix_wave_devices_device", "device_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    wave_id: Mapped[int] = mapped_column(ForeignKey("waves.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(_STATUS))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[float] = mapped_column(Double)


class TimelineEntry(Base):
    """Something that happened to a rollout or a device, in order of recording."""

    __tablename__ = "timeline"
    __table_args__ = (
        Index("ix_timeline_rollout", "rollout_id", "id"),
        Index("ix_timeline_device", "device_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int | None] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), nullable=True
    )
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"), nullable=True
    )
    at: Mapped[float] = mapped_column(Double)
    kind: Mapped[str] = mapped_column(String(_STATUS))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(_JSON, nullable=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(256), nullable=True, unique=True)


class Telemetry(Base):
    """One telemetry snapshot a device published (its ``/stats`` content)."""

    __tablename__ = "telemetry"
    __table_args__ = (Index("ix_telemetry_device_at", "device_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    at: Mapped[float] = mapped_column(Double)
    snapshot: Mapped[dict[str, Any]] = mapped_column(_JSON)


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path``."""
    return URL.create("sqlite", database=str(Path(path))).render_as_string()


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def make_engine(
    url: str = DEFAULT_DATABASE_URL, *, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S
) -> Engine:
    """An engine for ``url`` set up for the fleet server.

    SQLite: WAL journal (readers never block the writer), foreign keys on, a
    busy timeout, and ``BEGIN IMMEDIATE`` for write transactions; the file's
    folder must exist. PostgreSQL (``postgresql://`` means psycopg 3):
    connections are checked before use (``pool_pre_ping``), so a restarted
    database server costs no failed request.
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
            engine = create_engine(parsed, pool_pre_ping=True)
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
