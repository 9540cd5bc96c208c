"""Maintenance windows: when each device group (tag) may change models (see :mod:`fleet_server.windows`)."""

from __future__ import annotations

from sqlalchemy import Double, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.models import Base

__all__ = ["MaintenanceWindowRow"]


class MaintenanceWindowRow(Base):
    """One maintenance window of a tag, in its canonical spelling; a tag may have several.

    Tags are free names here (no foreign key): a group's windows may be set
    before its first device is provisioned.
    """

    __tablename__ = "maintenance_windows"
    __table_args__ = (UniqueConstraint("tag", "position", name="uq_maintenance_windows_tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tag: Mapped[str] = mapped_column(String(64), index=True)
    position: Mapped[int] = mapped_column(Integer)
    """The window's place in the tag's list, from 0 (the order the operator gave)."""
    spec: Mapped[str] = mapped_column(String(200))
    set_at: Mapped[float] = mapped_column(Double)
