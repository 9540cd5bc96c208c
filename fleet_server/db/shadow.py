"""Shadow reports: one row per window a device reported while running a candidate in shadow.

A new table on the same :class:`~fleet_server.db.models.Base`: ``create_all``
adds it to an existing database, so it needs no schema migration.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Double, Index, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.models import Base

__all__ = ["ShadowReportRow"]

_JSON = JSON().with_variant(JSONB(), "postgresql")


class ShadowReportRow(Base):
    """One shadow report as the device sent it (its figures in ``report``), keyed for the gate."""

    __tablename__ = "shadow_reports"
    __table_args__ = (Index("ix_shadow_reports_candidate", "candidate_sha256", "window_end"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    candidate_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    window_end: Mapped[float] = mapped_column(Double)
    received_at: Mapped[float] = mapped_column(Double)
    report: Mapped[dict[str, Any]] = mapped_column(_JSON)
