"""The console's reads that the API's routes do not already make: one query set per page, and a
cheap stamp per page that changes whenever what the page shows may have changed.

Read-only: nothing here writes. Each page is built in one read transaction
and returned as JSON-ready values; :meth:`ConsoleViews.stamp` is a handful
of indexed ``max()`` lookups, so a console that polls asks it and rebuilds a
page only when its stamp moved (the HTTP layer answers ``304`` otherwise).
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleet_server import db
from fleet_server.console.figures import (
    DeviceFigures,
    class_shares,
    device_health,
    latest_figures,
    telemetry_series,
    version_runs,
)
from fleet_server.console.plan_view import plan_view
from fleet_server.errors import NotFoundError
from fleet_server.registry import Registry
from fleet_server.registry._rows import device_info, get_device, timeline_item
from fleet_server.rollout_plan import RolloutState

__all__ = ["ConsoleViews"]

_IN_CHUNK = 500
_OVERVIEW_COLUMNS = (
    db.Device.id,
    db.Device.availability,
    db.Device.last_seen,
    db.Device.phase,
    db.Device.active_bundle,
    db.Device.active_version,
    db.Device.pinned_bundle,
    db.Device.last_event_reason,
)


class _OverviewRow(NamedTuple):
    """What the overview reads of a device (the columns above, in order)."""

    id: str
    availability: str
    last_seen: float | None
    phase: str | None
    active_bundle: str | None
    active_version: str | None
    pinned_bundle: str | None
    last_event_reason: str | None


def _figures_json(figures: DeviceFigures) -> dict[str, Any]:
    return {
        "at": figures.at,
        "latency_p95_ms": figures.latency_p95_ms,
        "mean_confidence": figures.mean_confidence,
        "uncertain_rate": figures.uncertain_rate,
        "error_rate": figures.error_rate,
        "predictions_per_s": figures.predictions_per_s,
        "bundle": figures.bundle,
    }


_HISTORY = 300
"""Telemetry snapshots and timeline entries a device page shows (its newest)."""


def _max(session: Session, column: Any, *where: Any) -> float:
    value = session.scalar(select(func.max(column)).where(*where))
    return float(value) if value is not None else 0.0


class ConsoleViews:
    """The console's page queries over a :class:`Registry` (its sessions, read-only)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._figures: dict[int, DeviceFigures] = {}
        """Figures of each device's newest snapshot, by telemetry row id."""

    def _read(self) -> Any:
        return self._registry._transaction()  # the registry package's own unit of work

    # --- stamps --------------------------------------------------------------------------

    def stamp(self, page: str, key: str | int | None = None) -> str:
        """A short string that changes whenever ``page`` (``fleet``, ``device``, ``rollout``,
        ``bundles``) may show something new; ``key`` names the device or rollout."""
        with self._read() as session:
            if page == "fleet":
                parts = [
                    session.scalar(select(func.count()).select_from(db.Device)) or 0,
                    _max(session, db.Device.state_received_at),
                    _max(session, db.Device.last_seen),
                    _max(session, db.Telemetry.id),
                    _max(session, db.TimelineEntry.id),
                ]
            elif page == "device":
                row = get_device(session, str(key), tags=False)
                parts = [
                    row.state_received_at or 0,
                    row.last_seen or 0,
                    row.availability,
                    row.pinned_bundle or "",
                    _max(session, db.TimelineEntry.id, db.TimelineEntry.device_id == row.id),
                ]
            elif page == "rollout":
                rollout = session.get(db.Rollout, int(str(key)))
                if rollout is None:
                    raise NotFoundError(f"unknown rollout {key!r}")
                parts = [
                    rollout.updated_at,
                    rollout.status,
                    _max(
                        session, db.RolloutPlan.updated_at, db.RolloutPlan.rollout_id == rollout.id
                    ),
                    _max(session, db.TimelineEntry.id, db.TimelineEntry.rollout_id == rollout.id),
                ]
            elif page == "bundles":
                parts = [
                    session.scalar(select(func.count()).select_from(db.Bundle)) or 0,
                    _max(session, db.Bundle.released_at),
                ]
            else:
                raise ValueError(f"no console page called {page!r}")
        return f"{page}-" + "-".join(_compact(part) for part in parts)

    # --- fleet overview ------------------------------------------------------------------

    def fleet(self, now: float) -> dict[str, Any]:
        """Every device with its state, health and newest telemetry figures; counts by version.

        Plain column reads (no ORM objects), and each telemetry snapshot is read once: its
        figures are kept by row id (stored snapshots never change) until a newer one comes.
        """
        with self._read() as session:
            tags: dict[str, list[str]] = {}
            for device_id, tag in session.execute(
                select(db.DeviceTag.device_id, db.DeviceTag.tag).order_by(db.DeviceTag.tag)
            ):
                tags.setdefault(device_id, []).append(tag)
            rows = session.execute(select(*_OVERVIEW_COLUMNS).order_by(db.Device.id)).all()
            figures = self._newest_figures(session)
            versions = dict(session.execute(select(db.Bundle.sha256, db.Bundle.version)).all())
        devices = []
        by_version: dict[str, int] = {}
        for row in rows:
            state = _OverviewRow(*row)
            mine = figures.get(state.id)
            health = device_health(state, mine, now)
            version = state.active_version or versions.get(state.active_bundle or "")
            by_version[version or "none"] = by_version.get(version or "none", 0) + 1
            devices.append(
                {
                    "id": state.id,
                    "tags": tags.get(state.id, []),
                    "availability": state.availability,
                    "phase": state.phase,
                    "version": version,
                    "bundle": state.active_bundle,
                    "pinned": state.pinned_bundle,
                    "last_seen": state.last_seen,
                    "health": health.status,
                    "health_reason": health.reason,
                    "figures": None if mine is None else _figures_json(mine),
                }
            )
        return {
            "now": now,
            "devices": devices,
            "by_version": dict(sorted(by_version.items())),
            "tags": sorted({tag for found in tags.values() for tag in found}),
        }

    def _newest_figures(self, session: Session) -> dict[str, DeviceFigures]:
        """Each device's newest telemetry snapshot read into figures (one indexed seek per
        device; only snapshots not read before are fetched and parsed)."""
        newest = (
            select(db.Telemetry.id)
            .where(db.Telemetry.device_id == db.Device.id)
            .order_by(db.Telemetry.at.desc(), db.Telemetry.id.desc())
            .limit(1)
            .correlate(db.Device)
            .scalar_subquery()
        )
        ids = {
            device_id: telemetry_id
            for device_id, telemetry_id in session.execute(select(db.Device.id, newest))
            if telemetry_id is not None
        }
        with self._lock:
            known = dict(self._figures)
        missing = sorted(set(ids.values()) - known.keys())
        for start in range(0, len(missing), _IN_CHUNK):
            chunk = missing[start : start + _IN_CHUNK]
            for telemetry_id, at, snapshot in session.execute(
                select(db.Telemetry.id, db.Telemetry.at, db.Telemetry.snapshot).where(
                    db.Telemetry.id.in_(chunk)
                )
            ):
                if isinstance(snapshot, dict):
                    known[telemetry_id] = latest_figures(float(at), snapshot)
        current = {i: known[i] for i in ids.values() if i in known}
        with self._lock:
            self._figures = current  # only the newest per device: bounded by the fleet's size
        return {device_id: current[i] for device_id, i in ids.items() if i in current}

    # --- one device ----------------------------------------------------------------------

    def device(self, device_id: str, now: float) -> dict[str, Any]:
        """One device: state, health, the versions it ran, its update events, telemetry series,
        and its part in each rollout."""
        with self._read() as session:
            device = device_info(get_device(session, device_id))
            snapshots = list(
                reversed(
                    session.execute(
                        select(db.Telemetry.at, db.Telemetry.snapshot)
                        .where(db.Telemetry.device_id == device_id)
                        .order_by(db.Telemetry.at.desc(), db.Telemetry.id.desc())
                        .limit(_HISTORY)
                    ).all()
                )
            )
            entries = [
                timeline_item(row)
                for row in session.scalars(
                    select(db.TimelineEntry)
                    .where(db.TimelineEntry.device_id == device_id)
                    .order_by(db.TimelineEntry.id.desc())
                    .limit(_HISTORY)
                )
            ][::-1]
            rollouts = session.execute(
                select(db.WaveDevice, db.Wave.index, db.Rollout)
                .join(db.Wave, db.Wave.id == db.WaveDevice.wave_id)
                .join(db.Rollout, db.Rollout.id == db.WaveDevice.rollout_id)
                .where(db.WaveDevice.device_id == device_id)
                .order_by(db.WaveDevice.rollout_id)
            ).all()
            previous_of = {r.id: r.previous_sha256 for _w, _i, r in rollouts if r.previous_sha256}
            names = _bundle_names(session)
        rows = [(float(at), dict(snapshot)) for at, snapshot in snapshots]
        newest = latest_figures(*rows[-1]) if rows else None
        health = device_health(device, newest, now)
        return {
            "now": now,
            "device": asdict(device),
            "health": asdict(health),
            "figures": None if newest is None else asdict(newest),
            "runs": [
                asdict(run) for run in version_runs(entries, device.active_bundle, previous_of)
            ],
            "events": [
                {**asdict(item), "data": dict(item.data) if item.data else None} for item in entries
            ],
            "series": telemetry_series(rows),
            "class_shares": class_shares(rows),
            "rollouts": [
                {
                    "rollout_id": wave_device.rollout_id,
                    "wave": index + 1,
                    "status": wave_device.status,
                    "reason": wave_device.reason,
                    "updated_at": wave_device.updated_at,
                    "rollout_status": rollout.status,
                    "bundle": rollout.bundle_sha256,
                }
                for wave_device, index, rollout in rollouts
            ],
            "bundles": names,
        }

    # --- bundles -------------------------------------------------------------------------

    def bundle(self, sha256: str) -> dict[str, Any]:
        """A bundle's manifest parts people read: quality report, provenance, compatibility."""
        with self._read() as session:
            row = session.get(db.Bundle, sha256)
            if row is None:
                raise NotFoundError(f"unknown bundle {sha256!r}: it was never imported")
            manifest = dict(row.manifest)
            running = session.scalar(
                select(func.count()).select_from(db.Device).where(db.Device.active_bundle == sha256)
            )
        golden = manifest.get("golden") or {}
        return {
            "sha256": row.sha256,
            "name": row.name,
            "version": row.version,
            "format": row.format,
            "precision": row.precision,
            "size": row.size,
            "released_at": row.released_at,
            "labels": list(row.labels),
            "description": manifest.get("description", ""),
            "quality": manifest.get("quality"),
            "provenance": manifest.get("provenance"),
            "compatibility": manifest.get("compatibility"),
            "golden_vectors": len(golden.get("vectors", [])) if isinstance(golden, dict) else 0,
            "flipped_images": None,  # in the converter's HTML report beside the bundle, not in it
            "float_fallback": (manifest.get("model") or {}).get("float_fallback"),
            "devices_running": int(running or 0),
        }

    # --- one rollout ---------------------------------------------------------------------

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        """A rollout as its planner saved it: each wave's spec, devices and gate verdict."""
        with self._read() as session:
            row = session.get(db.Rollout, rollout_id)
            if row is None:
                raise NotFoundError(f"unknown rollout {rollout_id!r}")
            saved = session.get(db.RolloutPlan, rollout_id)
            plan = None if saved is None else RolloutState.model_validate(saved.plan)
            names = _bundle_names(session)
            info = {
                "id": row.id,
                "bundle": row.bundle_sha256,
                "previous": row.previous_sha256,
                "target": dict(row.target),
                "status": row.status,
                "reason": row.reason,
                "created_at": row.created_at,
                "updated_at": row.updated_at,
            }
        return {**info, "bundles": names, **plan_view(plan)}


def _bundle_names(session: Session) -> dict[str, str]:
    """sha256 -> ``name version`` of every bundle in the catalogue."""
    return {
        sha: f"{name} {version}"
        for sha, name, version in session.execute(
            select(db.Bundle.sha256, db.Bundle.name, db.Bundle.version)
        )
    }


def _compact(part: object) -> str:
    if isinstance(part, float):
        return f"{part:.3f}".rstrip("0").rstrip(".")
    return str(part)
