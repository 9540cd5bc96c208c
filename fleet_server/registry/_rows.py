"""Registry internals: argument checks, row lookups that name what is missing, rows to records.

Private to the :mod:`fleet_server.registry` package; nothing here opens a transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, cast

from sqlalchemy.orm import Session, lazyload

from fleet_server import db
from fleet_server.broker_auth import SERVER_USERNAME
from fleet_server.errors import NotFoundError, RegistryError
from fleet_server.records import (
    AssignmentInfo,
    AssignmentKind,
    Availability,
    BundleInfo,
    DeviceInfo,
    DeviceOrigin,
    RolloutInfo,
    TargetSelector,
    TimelineItem,
    WaveDeviceInfo,
    WaveInfo,
    check_name,
)
from fleet_server.statuses import DeviceStatus, RolloutStatus, WaveStatus

__all__ = [
    "assignment_info",
    "bundle_info",
    "check_id",
    "check_status",
    "check_tags",
    "checked_name",
    "device_info",
    "get_bundle",
    "get_device",
    "get_rollout",
    "get_wave",
    "new_device",
    "replace_tags",
    "rollout_info",
    "timeline_entry",
    "timeline_item",
    "wave_device_info",
    "wave_info",
]


# --- checks -----------------------------------------------------------------------------


RESERVED_DEVICE_IDS = frozenset({SERVER_USERNAME})


def checked_name(value: str, what: str) -> str:
    try:
        return check_name(value, what)
    except ValueError as exc:
        raise RegistryError(str(exc)) from exc


def check_id(device_id: str) -> str:
    """A valid device id; the fleet server's own broker username is never one (checked before
    anything is written, so a refused provisioning leaves no row behind)."""
    checked = checked_name(device_id, "device id")
    if checked in RESERVED_DEVICE_IDS:
        raise RegistryError(
            f"{checked!r} is reserved for the fleet server and cannot name a device"
        )
    return checked


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise RegistryError(f"tags must be a list of tags, not the string {tags!r}")
    return tuple(sorted({checked_name(tag, "tag") for tag in tags}))


def check_status(value: str, allowed: type[Enum], what: str) -> None:
    if value not in {member.value for member in allowed}:
        names = ", ".join(member.value for member in allowed)
        raise RegistryError(f"{what} status {value!r} is not one of {names}")


def get_bundle(session: Session, sha256: str) -> db.Bundle:
    row = session.get(db.Bundle, sha256)
    if row is None:
        raise NotFoundError(f"unknown bundle {sha256!r}: it was never imported")
    return row


def get_device(
    session: Session, device_id: str, *, lock: bool = False, tags: bool = True
) -> db.Device:
    """The device row; ``tags=False`` loads its tags only if they are read (reports never do)."""
    options = [] if tags else [lazyload(db.Device.tags)]
    # FOR NO KEY UPDATE: it never blocks the key-share locks that inserting a row which refers
    # to the device takes (timeline entries), so replicas' writers cannot deadlock on them
    locking = {"key_share": True} if lock else False
    row = session.get(db.Device, device_id, with_for_update=locking, options=options)
    if row is None:
        raise NotFoundError(f"unknown device {device_id!r}")
    return row


def get_rollout(session: Session, rollout_id: int, *, lock: bool = False) -> db.Rollout:
    row = session.get(
        db.Rollout, rollout_id, with_for_update={"key_share": True} if lock else False
    )
    if row is None:
        raise NotFoundError(f"unknown rollout {rollout_id!r}")
    return row


def get_wave(session: Session, wave_id: int, *, lock: bool = False) -> db.Wave:
    row = session.get(db.Wave, wave_id, with_for_update=lock)
    if row is None:
        raise NotFoundError(f"unknown wave {wave_id!r}")
    return row


def new_device(device_id: str, origin: DeviceOrigin, now: float) -> db.Device:
    return db.Device(
        id=device_id, origin=origin, registered_at=now, availability="unknown", tags=[]
    )


def replace_tags(row: db.Device, tags: Iterable[str]) -> None:
    """Give the device exactly ``tags``, keeping the rows of tags it already has."""
    wanted = set(tags)
    kept = [tag for tag in row.tags if tag.tag in wanted]
    have = {tag.tag for tag in kept}
    row.tags = kept + [db.DeviceTag(device_id=row.id, tag=tag) for tag in sorted(wanted - have)]


def timeline_entry(
    kind: str,
    message: str,
    *,
    at: float,
    rollout_id: int | None = None,
    device_id: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> db.TimelineEntry:
    return db.TimelineEntry(
        kind=kind,
        message=message,
        at=at,
        rollout_id=rollout_id,
        device_id=device_id,
        data=None if data is None else dict(data),
    )


def bundle_info(row: db.Bundle) -> BundleInfo:
    return BundleInfo(
        sha256=row.sha256,
        name=row.name,
        version=row.version,
        format=row.format,
        precision=row.precision,
        size=row.size,
        released_at=row.released_at,
        labels=tuple(row.labels),
        quality=None if row.quality is None else dict(row.quality),
        baseline_accuracy=row.baseline_accuracy,
        baseline_mean_confidence=row.baseline_mean_confidence,
        baseline_class_distribution=(
            None
            if row.baseline_class_distribution is None
            else dict(row.baseline_class_distribution)
        ),
        latency_budget_ms=row.latency_budget_ms,
    )


def device_info(row: db.Device) -> DeviceInfo:
    return DeviceInfo(
        id=row.id,
        tags=tuple(sorted(tag.tag for tag in row.tags)),
        profile=row.profile,
        origin=cast(DeviceOrigin, row.origin),
        pinned_bundle=row.pinned_bundle,
        registered_at=row.registered_at,
        last_seen=row.last_seen,
        availability=cast(Availability, row.availability),
        phase=row.phase,
        active_bundle=row.active_bundle,
        active_name=row.active_name,
        active_version=row.active_version,
        last_good_bundle=row.last_good_bundle,
        target_bundle=row.target_bundle,
        target_assignment=row.target_assignment,
        runtime_version=row.runtime_version,
        state_updated_at=row.state_updated_at,
        has_credentials=row.credentials_hash is not None,
        state_received_at=row.state_received_at,
        clock_skew_s=row.clock_skew_s,
        last_event_reason=row.last_event_reason,
    )


def assignment_info(row: db.Assignment) -> AssignmentInfo:
    return AssignmentInfo(
        kind=cast(AssignmentKind, row.kind),
        name=row.name,
        bundle_sha256=row.bundle_sha256,
        version=row.version,
        updated_at=row.updated_at,
    )


def rollout_info(row: db.Rollout) -> RolloutInfo:
    return RolloutInfo(
        id=row.id,
        bundle_sha256=row.bundle_sha256,
        previous_sha256=row.previous_sha256,
        target=TargetSelector.from_json(row.target),
        status=RolloutStatus(row.status),
        reason=row.reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        settings=dict(row.settings),
    )


def wave_info(row: db.Wave, device_ids: tuple[str, ...]) -> WaveInfo:
    return WaveInfo(
        id=row.id,
        rollout_id=row.rollout_id,
        index=row.index,
        status=WaveStatus(row.status),
        started_at=row.started_at,
        finished_at=row.finished_at,
        settings=dict(row.settings),
        device_ids=device_ids,
    )


def wave_device_info(row: db.WaveDevice, wave_index: int) -> WaveDeviceInfo:
    return WaveDeviceInfo(
        rollout_id=row.rollout_id,
        wave_id=row.wave_id,
        wave_index=wave_index,
        device_id=row.device_id,
        status=DeviceStatus(row.status),
        reason=row.reason,
        updated_at=row.updated_at,
    )


def timeline_item(row: db.TimelineEntry) -> TimelineItem:
    return TimelineItem(
        id=row.id,
        at=row.at,
        kind=row.kind,
        message=row.message,
        rollout_id=row.rollout_id,
        device_id=row.device_id,
        data=None if row.data is None else dict(row.data),
    )
