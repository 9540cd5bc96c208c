"""Which camera took a field sample: a table of its own beside ``field_samples``.

Samples from a multi-camera device name their camera (``camera_id`` in the
sample's header); single-camera devices, and devices from before the field,
name none, and have no row here. A table of its own, not a column, because
``create_all`` adds new tables to an existing database but never new columns
to an existing table. A sample's row goes with it (``ON DELETE CASCADE``;
retention also deletes it explicitly).
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.field_data import FieldSampleRow
from fleet_server.db.models import Base

__all__ = ["FieldSampleCameraRow"]


class FieldSampleCameraRow(Base):
    """The camera of one field sample (keyed by the sample's sha256)."""

    __tablename__ = "field_sample_cameras"
    __table_args__ = (Index("ix_field_sample_cameras_camera", "camera_id"),)

    sha256: Mapped[str] = mapped_column(
        String(64), ForeignKey(FieldSampleRow.sha256, ondelete="CASCADE"), primary_key=True
    )
    camera_id: Mapped[str] = mapped_column(String(64))
