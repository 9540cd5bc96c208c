"""Field data in the database: samples (one row per image), people's labels, settings per group."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, delete, func, select

from edge_runtime.protocol.field_data import FieldDataSettings, FieldSampleHeader
from fleet_server import db
from fleet_server.db.field_cameras import FieldSampleCameraRow
from fleet_server.db.field_data import FieldSampleRow, FieldSettingsRow
from fleet_server.errors import NotFoundError, RegistryError
from fleet_server.field_data import FieldRetention, FieldSampleInfo, check_label
from fleet_server.records import check_name
from fleet_server.registry.unit import UnitOfWork

log = logging.getLogger(__name__)

__all__ = ["MAX_FIELD_LIMIT", "FieldData"]

MAX_FIELD_LIMIT = 10_000
"""The most samples one query returns."""


def _info(row: FieldSampleRow, camera_id: str | None) -> FieldSampleInfo:
    return FieldSampleInfo(
        sha256=row.sha256,
        device_id=row.device_id,
        image_format=row.image_format,
        size=row.size,
        captured_at=row.captured_at,
        received_at=row.received_at,
        reason=row.reason,
        label=row.label,
        confidence=row.confidence,
        top_k=list(row.top_k or []),
        bundle_sha256=row.bundle_sha256,
        bundle_name=row.bundle_name,
        bundle_version=row.bundle_version,
        uploads=row.uploads,
        true_label=row.true_label,
        labelled_by=row.labelled_by,
        labelled_at=row.labelled_at,
        camera_id=camera_id,
    )


def _with_camera() -> Select[FieldSampleRow, str]:
    """Samples with their camera (None: the device named none)."""
    return select(FieldSampleRow, FieldSampleCameraRow.camera_id).outerjoin(
        FieldSampleCameraRow, FieldSampleCameraRow.sha256 == FieldSampleRow.sha256
    )


class FieldData(UnitOfWork):
    """Field samples and the collection settings of each group (tag)."""

    def add_field_sample(self, header: FieldSampleHeader, size: int) -> bool:
        """Record a received sample; False when that image was stored before (counted again)."""
        now = self._clock()
        with self._transaction(write=True) as session:
            row = session.get(FieldSampleRow, header.sha256)
            if row is not None:
                row.uploads += 1
                return False
            session.add(
                FieldSampleRow(
                    sha256=header.sha256,
                    device_id=header.device_id,
                    image_format=header.image_format,
                    size=size,
                    captured_at=header.captured_at,
                    received_at=now,
                    reason=header.reason,
                    label=header.label,
                    confidence=header.confidence,
                    top_k=[item.to_dict() for item in header.top_k],
                    bundle_sha256=header.bundle_sha256,
                    bundle_name=header.bundle_name,
                    bundle_version=header.bundle_version,
                    uploads=1,
                )
            )
            if header.camera_id is not None:
                session.flush()  # the sample's row first: the camera's refers to it
                session.add(FieldSampleCameraRow(sha256=header.sha256, camera_id=header.camera_id))
            return True

    def field_samples(
        self,
        *,
        device_id: str | None = None,
        version: str | None = None,
        reason: str | None = None,
        labelled: bool | None = None,
        camera_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[FieldSampleInfo]:
        """Samples, newest first, filtered by device, bundle version, reason, labelled or not,
        and camera."""
        if not 1 <= limit <= MAX_FIELD_LIMIT:
            raise RegistryError(f"limit must be between 1 and {MAX_FIELD_LIMIT}, not {limit}")
        if offset < 0:
            raise RegistryError(f"offset must not be negative, not {offset}")
        query = _with_camera()
        if camera_id is not None:
            query = query.where(FieldSampleCameraRow.camera_id == camera_id)
        if device_id is not None:
            query = query.where(FieldSampleRow.device_id == device_id)
        if version is not None:
            query = query.where(FieldSampleRow.bundle_version == version)
        if reason is not None:
            query = query.where(FieldSampleRow.reason == reason)
        if labelled is not None:
            column = FieldSampleRow.true_label
            query = query.where(column.is_not(None) if labelled else column.is_(None))
        query = query.order_by(FieldSampleRow.received_at.desc(), FieldSampleRow.sha256)
        with self._transaction() as session:
            rows = session.execute(query.offset(offset).limit(limit))
            return [_info(row, camera) for row, camera in rows]

    def field_sample(self, sha256: str) -> FieldSampleInfo:
        """One sample; :class:`NotFoundError` when unknown."""
        with self._transaction() as session:
            found = session.execute(_with_camera().where(FieldSampleRow.sha256 == sha256)).first()
            if found is None:
                raise NotFoundError(f"no field sample {sha256[:64]!r}")
            return _info(found[0], found[1])

    def label_field_sample(self, sha256: str, label: str, by: str | None = None) -> FieldSampleInfo:
        """Record what a person says the frame shows (one of its bundle's labels, when known)."""
        check_label(label)
        with self._transaction(write=True) as session:
            row = session.get(FieldSampleRow, sha256)
            if row is None:
                raise NotFoundError(f"no field sample {sha256[:64]!r}")
            bundle = session.get(db.Bundle, row.bundle_sha256)
            if bundle is not None and label not in bundle.labels:
                raise RegistryError(
                    f"{label!r} is not a label of {bundle.name} {bundle.version} "
                    f"({', '.join(bundle.labels)})"
                )
            row.true_label = label
            row.labelled_by = by
            row.labelled_at = self._clock()
            camera = session.get(FieldSampleCameraRow, sha256)
            return _info(row, None if camera is None else camera.camera_id)

    def prune_field_samples(
        self, retention: FieldRetention, now: float | None = None
    ) -> list[tuple[str, str]]:
        """Apply ``retention``: the ``(sha256, format)`` of the samples dropped (their files go too)."""
        at = self._clock() if now is None else now
        dropped: list[tuple[str, str]] = []
        with self._transaction(write=True) as session:
            if retention.max_age_s is not None:
                old = select(FieldSampleRow.sha256, FieldSampleRow.image_format).where(
                    FieldSampleRow.true_label.is_(None),
                    FieldSampleRow.received_at < at - retention.max_age_s,
                )
                dropped.extend((sha, fmt) for sha, fmt in session.execute(old))
            kept = session.scalar(select(func.count()).select_from(FieldSampleRow)) or 0
            excess = kept - len(dropped) - retention.max_samples
            if excess > 0:
                taken = {sha for sha, _ in dropped}
                order = select(FieldSampleRow.sha256, FieldSampleRow.image_format).order_by(
                    FieldSampleRow.true_label.is_not(None),  # unlabelled first
                    FieldSampleRow.received_at,
                )
                for sha, fmt in session.execute(order.limit(excess + len(taken))):
                    if excess <= 0:
                        break
                    if sha not in taken:
                        dropped.append((sha, fmt))
                        excess -= 1
            shas = [sha for sha, _ in dropped]
            for start in range(0, len(shas), 500):
                chunk = shas[start : start + 500]
                session.execute(
                    delete(FieldSampleCameraRow).where(FieldSampleCameraRow.sha256.in_(chunk))
                )
                session.execute(delete(FieldSampleRow).where(FieldSampleRow.sha256.in_(chunk)))
        if dropped:
            log.info("dropped %d field samples beyond the retention bounds", len(dropped))
        return dropped

    # --- settings per group -------------------------------------------------------------

    def set_field_settings(
        self, tag: str, settings: FieldDataSettings, by: str | None = None
    ) -> FieldDataSettings:
        """Give a group (tag) these collection settings (replacing its previous ones)."""
        check_name(tag, "tag")
        with self._transaction(write=True) as session:
            row = session.get(FieldSettingsRow, tag)
            if row is None:
                row = FieldSettingsRow(tag=tag)
                session.add(row)
            row.settings = settings.to_dict()
            row.set_at = self._clock()
            row.set_by = by
        return settings

    def clear_field_settings(self, tag: str) -> bool:
        """Stop collecting in a group; False when it had no settings."""
        with self._transaction(write=True) as session:
            row = session.get(FieldSettingsRow, tag)
            if row is None:
                return False
            session.delete(row)
            return True

    def field_settings(self) -> dict[str, FieldDataSettings]:
        """Every group's collection settings."""
        with self._transaction() as session:
            rows = session.scalars(select(FieldSettingsRow).order_by(FieldSettingsRow.tag))
            return {row.tag: FieldDataSettings.parse(row.settings) for row in rows}

    def device_field_settings(self) -> dict[str, FieldDataSettings]:
        """Device id -> the settings it should run: its first tag (by name) that has some;
        devices without any get the disabled default."""
        by_tag = self.field_settings()
        with self._transaction() as session:
            device_ids = list(session.scalars(select(db.Device.id)))
            tags: dict[str, list[str]] = {}
            for tag, device_id in session.execute(select(db.DeviceTag.tag, db.DeviceTag.device_id)):
                tags.setdefault(device_id, []).append(tag)
        off = FieldDataSettings()
        result: dict[str, FieldDataSettings] = {}
        for device_id in device_ids:
            chosen = next((by_tag[t] for t in sorted(tags.get(device_id, ())) if t in by_tag), off)
            result[device_id] = chosen
        return result

    def field_counts(self) -> Mapping[str, Any]:
        """Samples kept, labelled, and bytes, for a summary."""
        with self._transaction() as session:
            total, labelled, size = session.execute(
                select(
                    func.count(),
                    func.count(FieldSampleRow.true_label),
                    func.coalesce(func.sum(FieldSampleRow.size), 0),
                )
            ).one()
        return {"samples": int(total), "labelled": int(labelled), "bytes": int(size)}
