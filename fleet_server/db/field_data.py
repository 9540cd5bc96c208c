"""Field data: the frames devices sampled and uploaded, and the collection settings per group.

New tables on the same :class:`~fleet_server.db.models.Base`: ``create_all``
adds them to an existing database, so they need no schema migration. The
images themselves are files named by their sha256 (:mod:`fleet_server.field_data`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Double, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.models import Base

__all__ = ["FieldSampleRow", "FieldSettingsRow"]

_JSON = JSON().with_variant(JSONB(), "postgresql")


class FieldSampleRow(Base):
    """One sampled frame, stored once whatever the number of uploads (keyed by the image's sha256)."""

    __tablename__ = "field_samples"
    __table_args__ = (
        Index("ix_field_samples_device", "device_id", "received_at"),
        Index("ix_field_samples_received", "received_at"),
        Index("ix_field_samples_version", "bundle_version"),
    )

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    """The device that sent it first (no foreign key: the sample outlives a removed device)."""
    image_format: Mapped[str] = mapped_column(String(8))
    size: Mapped[int] = mapped_column(BigInteger)
    captured_at: Mapped[float] = mapped_column(Double)
    received_at: Mapped[float] = mapped_column(Double)
    reason: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(128))
    """What the device answered."""
    confidence: Mapped[float | None] = mapped_column(Double, nullable=True)
    top_k: Mapped[list[Any]] = mapped_column(_JSON)
    bundle_sha256: Mapped[str] = mapped_column(String(64))
    bundle_name: Mapped[str] = mapped_column(String(64))
    bundle_version: Mapped[str] = mapped_column(String(64))
    uploads: Mapped[int] = mapped_column(Integer, default=1)
    """How many times it arrived (a device resends what was not acknowledged)."""
    true_label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """What a person said it is (confirming the device's answer, or correcting it)."""
    labelled_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    labelled_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class FieldSettingsRow(Base):
    """A group's (tag's) collection settings, as devices receive them (JSON of the protocol's)."""

    __tablename__ = "field_settings"

    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(_JSON)
    set_at: Mapped[float] = mapped_column(Double)
    set_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
