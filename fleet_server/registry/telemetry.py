"""Stored telemetry: retention, per-device history, and figures over devices and waves."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from fleet_server import db
from fleet_server.quality_figures import WaveTelemetry
from fleet_server.registry.timeline import MAX_TIMELINE_LIMIT
from fleet_server.registry.unit import UnitOfWork
from fleet_server.telemetry import (
    TelemetrySample,
    TelemetrySummary,
    combine_figures,
    device_figures,
    quality_figures,
    read_sample,
)

log = logging.getLogger(__name__)

__all__ = ["TelemetryStore"]

_IN_CHUNK = 500  # bound the size of SQL IN lists


class TelemetryStore(UnitOfWork):
    """Stored telemetry: retention, per-device history, and figures over devices and waves."""

    def _prune_device_telemetry(self, session: Session, device_id: str, now: float) -> None:
        mine = db.Telemetry.device_id == device_id
        if self.retention.max_age_s is not None:
            session.execute(
                delete(db.Telemetry).where(mine, db.Telemetry.at < now - self.retention.max_age_s)
            )
        if self.retention.max_per_device is not None:
            cutoff = session.execute(
                select(db.Telemetry.at, db.Telemetry.id)
                .where(mine)
                .order_by(db.Telemetry.at.desc(), db.Telemetry.id.desc())
                .offset(self.retention.max_per_device)
                .limit(1)
            ).first()
            if cutoff is not None:
                older = or_(
                    db.Telemetry.at < cutoff.at,
                    and_(db.Telemetry.at == cutoff.at, db.Telemetry.id <= cutoff.id),
                )
                session.execute(delete(db.Telemetry).where(mine, older))

    def prune_telemetry(self, now: float | None = None) -> int:
        """Drop every snapshot older than the retention age; the number dropped."""
        if self.retention.max_age_s is None:
            return 0
        horizon = (self._clock() if now is None else now) - self.retention.max_age_s
        with self._transaction(write=True) as session:
            result = session.execute(delete(db.Telemetry).where(db.Telemetry.at < horizon))
            dropped = int(getattr(result, "rowcount", 0) or 0)
        if dropped:
            log.info("dropped %d telemetry snapshots older than %.0f", dropped, horizon)
        return dropped

    def telemetry(self, device_id: str, limit: int = 100) -> list[tuple[float, dict[str, Any]]]:
        """The device's newest snapshots as ``(at, snapshot)``, oldest first."""
        with self._transaction() as session:
            rows = session.execute(
                select(db.Telemetry.at, db.Telemetry.snapshot)
                .where(db.Telemetry.device_id == device_id)
                .order_by(db.Telemetry.at.desc(), db.Telemetry.id.desc())
                .limit(max(1, min(limit, MAX_TIMELINE_LIMIT)))
            ).all()
        return [(at, dict(snapshot)) for at, snapshot in reversed(rows)]

    def aggregate_telemetry(
        self,
        device_ids: Iterable[str],
        since: float | None = None,
        until: float | None = None,
        *,
        bundle: str | None = None,
    ) -> TelemetrySummary:
        """Figures per device and together over ``[since, until]`` (see :mod:`fleet_server.telemetry`).

        With ``bundle``, only the snapshots a device sent while serving that
        bundle count (each snapshot names it), so a wave's figures never mix
        the old model's predictions with the new one's.
        """
        ids = sorted(set(device_ids))
        window: dict[str, list[TelemetrySample]] = {device_id: [] for device_id in ids}
        baselines: dict[str, TelemetrySample] = {}
        with self._transaction() as session:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                query = select(
                    db.Telemetry.device_id, db.Telemetry.at, db.Telemetry.snapshot
                ).where(db.Telemetry.device_id.in_(chunk))
                if since is not None:
                    query = query.where(db.Telemetry.at >= since)
                if until is not None:
                    query = query.where(db.Telemetry.at <= until)
                query = query.order_by(db.Telemetry.device_id, db.Telemetry.at, db.Telemetry.id)
                for device_id, at, snapshot in session.execute(query):
                    if bundle is None or (
                        isinstance(snapshot, dict) and snapshot.get("bundle") == bundle
                    ):
                        window[device_id].append(read_sample(snapshot, at))
            if since is not None and bundle is None:  # a filtered window has no baseline
                for device_id in ids:
                    before = session.execute(
                        select(db.Telemetry.at, db.Telemetry.snapshot)
                        .where(db.Telemetry.device_id == device_id, db.Telemetry.at < since)
                        .order_by(db.Telemetry.at.desc(), db.Telemetry.id.desc())
                        .limit(1)
                    ).first()
                    if before is not None:
                        baselines[device_id] = read_sample(before.snapshot, before.at)
        figures = {
            device_id: device_figures(samples, baselines.get(device_id))
            for device_id, samples in window.items()
        }
        return TelemetrySummary(
            since=since,
            until=until,
            devices=figures,
            overall=combine_figures(list(figures.values())),
        )

    def wave_figures(
        self, device_ids: Iterable[str], started_at: float, bundle: str, previous: str | None
    ) -> WaveTelemetry | None:
        """A wave's quality-gate input: its devices' figures on ``bundle`` since ``started_at``,
        and on ``previous`` before (each side counts only what its own bundle served); None
        while they sent no telemetry on ``bundle``."""
        ids = list(device_ids)
        new = self.aggregate_telemetry(ids, since=started_at, bundle=bundle).overall
        if new is None:
            return None
        before = self.aggregate_telemetry(ids, until=started_at, bundle=previous).overall
        return WaveTelemetry(
            new=quality_figures(new),
            previous=quality_figures(before) if before is not None else None,
        )
