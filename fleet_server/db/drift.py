"""Drift status: per device and per group (tag), where its live predictions stand against the
baseline of the bundle it runs (see :mod:`fleet_server.drift`).

A new table on the same :class:`~fleet_server.db.models.Base`: ``create_all``
adds it to an existing database, so it needs no schema migration.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Double, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.models import Base

__all__ = ["DriftSettingsRow", "DriftStatusRow"]

_JSON = JSON().with_variant(JSONB(), "postgresql")


class DriftStatusRow(Base):
    """One subject's drift: ``ok``, ``drifting`` (since when) or ``unknown``, with its figures."""

    __tablename__ = "drift_status"
    __table_args__ = (Index("ix_drift_status_state", "state"),)

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # device | group
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[float | None] = mapped_column(Double, nullable=True)
    updated_at: Mapped[float] = mapped_column(Double)
    bundle: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reasons: Mapped[str] = mapped_column(Text, default="")
    """The limits crossed, one per line."""
    figures: Mapped[dict[str, Any]] = mapped_column(_JSON)


class DriftSettingsRow(Base):
    """The fleet's drift limits as the operator set them (one row; absent: the defaults)."""

    __tablename__ = "drift_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    thresholds: Mapped[dict[str, Any]] = mapped_column(_JSON)
    set_at: Mapped[float] = mapped_column(Double)
    set_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
