"""The fleet server's tables, as SQLAlchemy models (see :mod:`fleet_server.db`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
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
]

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
    last_event_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The reason the device's newest event gave (a refusal, a rollback): read with its state."""
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
