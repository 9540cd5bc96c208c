"""Drift in the database: the live windows read from stored telemetry, statuses kept, alerts recorded.

One pass (:meth:`DriftWatch.watch_drift`) reads, for every device, the first
and the last telemetry snapshot of the sliding window (two rows a device,
whatever the telemetry rate: one ``GROUP BY`` and one ``IN`` query per 500
devices), the groups and the bundles' baselines, judges them with the pure
:func:`fleet_server.drift_fleet.assess`, stores each subject's status and
records each alert on the timeline once (its dedupe key names the subject and
the time the drift began, so two replicas never record it twice).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from fleet_server import db
from fleet_server.db.drift import DriftSettingsRow, DriftStatusRow
from fleet_server.drift import (
    DriftStatus,
    DriftThresholds,
    WindowFigures,
    read_point,
    window_between,
)
from fleet_server.drift_fleet import Change, FleetDriftInputs, assess
from fleet_server.errors import RegistryError
from fleet_server.quality_figures import Baseline
from fleet_server.records import TimelineItem
from fleet_server.registry._rows import timeline_entry, timeline_item
from fleet_server.registry.timeline import MAX_TIMELINE_LIMIT
from fleet_server.registry.unit import UnitOfWork

log = logging.getLogger(__name__)

__all__ = ["DRIFT_ALERT_KINDS", "DriftWatch"]

DRIFT_ALERT_KINDS = ("drift-raised", "drift-cleared")
"""The timeline kinds of drift alerts."""

_IN_CHUNK = 500


def _status(row: DriftStatusRow) -> DriftStatus:
    scope: Literal["device", "group"] = "group" if row.scope == "group" else "device"
    state: Literal["ok", "drifting", "unknown"] = (
        "drifting" if row.state == "drifting" else "ok" if row.state == "ok" else "unknown"
    )
    return DriftStatus(
        scope=scope,
        name=row.name,
        state=state,
        since=row.since,
        updated_at=row.updated_at,
        bundle=row.bundle,
        reasons=tuple(line for line in row.reasons.split("\n") if line),
        figures=dict(row.figures or {}),
    )


def _confidence_histogram(quality: Mapping[str, Any] | None) -> list[float] | None:
    """The confidence histogram a stored quality report carries (bundles made before it: None)."""
    found = None if quality is None else quality.get("confidence_histogram")
    if not isinstance(found, list) or not found:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in found):
        return None
    return [float(v) for v in found]


class DriftWatch(UnitOfWork):
    """Drift statuses per device and group, and the pass that updates them."""

    def drift_windows(self, since: float) -> dict[str, WindowFigures]:
        """What each device predicted since ``since``: its first and last snapshot there."""
        with self._transaction() as session:
            ends = session.execute(
                select(db.Telemetry.device_id, func.min(db.Telemetry.id), func.max(db.Telemetry.id))
                .where(db.Telemetry.at >= since)
                .group_by(db.Telemetry.device_id)
            ).all()
            wanted = sorted({i for _, first, last in ends for i in (first, last)})
            snapshots = {}
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                for row_id, at, snapshot in session.execute(
                    select(db.Telemetry.id, db.Telemetry.at, db.Telemetry.snapshot).where(
                        db.Telemetry.id.in_(chunk)
                    )
                ):
                    snapshots[row_id] = read_point(
                        snapshot if isinstance(snapshot, dict) else {}, at
                    )
        windows = {}
        for device_id, first_id, last_id in ends:
            first, last = snapshots.get(first_id), snapshots.get(last_id)
            if last is None:
                continue
            windows[device_id] = window_between(first or last, last)
        return windows

    def drift_inputs(self, since: float) -> FleetDriftInputs:
        """Everything a drift pass reads, as plain values."""
        windows = self.drift_windows(since)
        with self._transaction() as session:
            groups: dict[str, list[str]] = {}
            for tag, device_id in session.execute(select(db.DeviceTag.tag, db.DeviceTag.device_id)):
                groups.setdefault(tag, []).append(device_id)
            baselines, names, histograms = {}, {}, {}
            for bundle in session.scalars(select(db.Bundle)):
                names[bundle.sha256] = f"{bundle.name} {bundle.version}"
                histogram = _confidence_histogram(bundle.quality)
                if histogram is not None:
                    histograms[bundle.sha256] = histogram
                baselines[bundle.sha256] = Baseline(
                    mean_confidence=bundle.baseline_mean_confidence,
                    class_distribution=bundle.baseline_class_distribution,
                    latency_budget_ms=bundle.latency_budget_ms,
                )
        return FleetDriftInputs(windows, groups, baselines, names, histograms)

    def drift_statuses(
        self, scope: str | None = None, *, drifting_only: bool = False
    ) -> list[DriftStatus]:
        """The stored statuses (of one scope: ``device`` or ``group``), by scope and name."""
        if scope not in {None, "device", "group"}:
            raise RegistryError(f"drift scope is 'device' or 'group', not {scope!r}")
        query = select(DriftStatusRow).order_by(DriftStatusRow.scope, DriftStatusRow.name)
        if scope is not None:
            query = query.where(DriftStatusRow.scope == scope)
        if drifting_only:
            query = query.where(DriftStatusRow.state == "drifting")
        with self._transaction() as session:
            return [_status(row) for row in session.scalars(query)]

    def save_drift(self, changes: Iterable[Change]) -> int:
        """Store the statuses and record the alerts (each once); the number of alerts recorded."""
        recorded = 0
        with self._transaction(write=True) as session, session.no_autoflush:
            rows = {(r.scope, r.name): r for r in session.scalars(select(DriftStatusRow))}
            known = set(session.scalars(select(db.Device.id)))
            for change in changes:
                status = change.status
                row = rows.get((status.scope, status.name))
                if row is None:
                    row = DriftStatusRow(scope=status.scope, name=status.name)
                    rows[(status.scope, status.name)] = row
                    session.add(row)
                row.state = status.state
                row.since = status.since
                row.updated_at = status.updated_at
                row.bundle = status.bundle
                row.reasons = "\n".join(status.reasons)
                row.figures = dict(status.figures)
                if change.alert is None or change.message is None:
                    continue
                device = status.name if status.scope == "device" else None
                if device is not None and device not in known:
                    device = None
                began = status.since if change.alert == "raised" else status.updated_at
                entry = timeline_entry(
                    f"drift-{change.alert}",
                    change.message,
                    device_id=device,
                    at=status.updated_at,
                    data={"scope": status.scope, "name": status.name, **status.figures},
                )
                entry.dedupe_key = f"drift:{change.alert}:{status.scope}:{status.name}:{began!r}"
                try:
                    with session.begin_nested():
                        session.add(entry)
                except IntegrityError:  # another replica recorded it first
                    continue
                recorded += 1
                log.warning("%s", change.message)
        return recorded

    def drift_alerts(self, limit: int = 100, *, after_id: int | None = None) -> list[TimelineItem]:
        """Drift alerts (raised and cleared) from the timeline, oldest first: the newest ``limit``,
        or the first ``limit`` after ``after_id``."""
        if not 1 <= limit <= MAX_TIMELINE_LIMIT:
            raise RegistryError(f"limit must be between 1 and {MAX_TIMELINE_LIMIT}, not {limit}")
        query = select(db.TimelineEntry).where(db.TimelineEntry.kind.in_(DRIFT_ALERT_KINDS))
        if after_id is not None:
            query = query.where(db.TimelineEntry.id > after_id).order_by(db.TimelineEntry.id)
        else:
            query = query.order_by(db.TimelineEntry.id.desc())
        with self._transaction() as session:
            items = [timeline_item(row) for row in session.scalars(query.limit(limit))]
        return items if after_id is not None else items[::-1]

    def drift_thresholds(self) -> DriftThresholds:
        """The limits the operator set (the defaults until then)."""
        with self._transaction() as session:
            row = session.get(DriftSettingsRow, 1)
            return (
                DriftThresholds() if row is None else DriftThresholds.model_validate(row.thresholds)
            )

    def set_drift_thresholds(
        self, thresholds: DriftThresholds, by: str | None = None
    ) -> DriftThresholds:
        """Judge drift by these limits from the next pass on."""
        with self._transaction(write=True) as session:
            row = session.get(DriftSettingsRow, 1)
            if row is None:
                row = DriftSettingsRow(id=1)
                session.add(row)
            row.thresholds = thresholds.model_dump()
            row.set_at = self._clock()
            row.set_by = by
        return thresholds

    def watch_drift(self, thresholds: DriftThresholds, now: float | None = None) -> list[Change]:
        """One pass over the fleet: read the windows, judge, store; the changes made."""
        at = self._clock() if now is None else now
        inputs = self.drift_inputs(at - thresholds.window_s)
        previous: dict[tuple[str, str], DriftStatus] = {
            (s.scope, s.name): s for s in self.drift_statuses()
        }
        changes = assess(inputs, thresholds, previous, at)
        self.save_drift(changes)
        return changes
