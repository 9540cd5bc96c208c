"""The API's drift watch: ``GET /drift``, ``/drift/alerts``, ``/drift/thresholds`` (any token);
``POST /drift/check`` and ``PUT /drift/thresholds`` (operators).

Mounting the routes also runs a :class:`~fleet_server.drift_monitor.DriftMonitor`
while the app serves (started and stopped with it; it judges the fleet while
this replica leads the rollouts), reports it among the server's workers
(``/healthz``, ``edgefleet_server_worker_up``) and adds its series to
``/metrics`` (:class:`~fleet_server.drift_monitor.DriftCollector`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict

from fleet_server.api.auth import Guards, principal_of
from fleet_server.drift import DriftStatus, DriftThresholds
from fleet_server.drift_monitor import DEFAULT_DRIFT_INTERVAL_S, DriftCollector, DriftMonitor
from fleet_server.registry import MAX_TIMELINE_LIMIT

if TYPE_CHECKING:
    from fleet_server.server import FleetServer

__all__ = ["DriftCheck", "DriftView", "drift_routes"]


class DriftView(BaseModel):
    """A device's or group's drift: state, since when, the limits crossed, the figures."""

    model_config = ConfigDict(extra="forbid")

    scope: Literal["device", "group"]
    name: str
    state: Literal["ok", "drifting", "unknown"]
    since: float | None
    """When it began drifting (None unless drifting)."""
    updated_at: float
    bundle: str | None
    reasons: list[str]
    figures: dict[str, Any]

    @classmethod
    def of(cls, status: DriftStatus) -> DriftView:
        """The view of a stored status."""
        return cls(
            scope=status.scope,
            name=status.name,
            state=status.state,
            since=status.since,
            updated_at=status.updated_at,
            bundle=status.bundle,
            reasons=list(status.reasons),
            figures=dict(status.figures),
        )


class DriftCheck(BaseModel):
    """What a pass found: every subject's status, and the alerts it raised or cleared."""

    model_config = ConfigDict(extra="forbid")

    subjects: list[DriftView]
    alerts: list[str]
    seconds: float


def drift_routes(
    app: FastAPI,
    server: FleetServer,
    guards: Guards,
    metrics: CollectorRegistry,
    monitor: DriftMonitor | None = None,
    *,
    interval_s: float = DEFAULT_DRIFT_INTERVAL_S,
) -> DriftMonitor:
    """Mount ``/drift`` and run ``monitor`` (when None, one that passes every ``interval_s``
    while ``server`` leads the rollouts) while the app serves, as one of the server's workers."""
    registry = server.registry
    leadership = server.leadership
    watch = monitor or DriftMonitor(
        registry, interval_s=interval_s, leading=lambda: leadership.leading
    )
    server.workers.add("drift-monitor", watch.health)
    metrics.register(DriftCollector(registry, watch))
    app.router.on_startup.append(watch.start)
    app.router.on_shutdown.append(watch.stop)

    @app.get("/drift", tags=["drift"], dependencies=guards.viewer)
    def list_drift(
        scope: Literal["device", "group"] | None = None,
        drifting: bool = Query(default=False, description="only those drifting now"),
    ) -> list[DriftView]:
        """Each device's and group's drift against its bundle's baseline (from the last pass)."""
        return [DriftView.of(s) for s in registry.drift_statuses(scope, drifting_only=drifting)]

    @app.get("/drift/alerts", tags=["drift"], dependencies=guards.viewer)
    def drift_alerts(
        limit: Annotated[int, Query(ge=1, le=MAX_TIMELINE_LIMIT)] = 100,
        after_id: Annotated[int | None, Query(ge=0)] = None,
    ) -> list[dict[str, Any]]:
        """Drift alerts raised and cleared (timeline entries), oldest first."""
        return [
            {
                "id": t.id,
                "at": t.at,
                "kind": t.kind,
                "device_id": t.device_id,
                "message": t.message,
                "data": dict(t.data or {}),
            }
            for t in registry.drift_alerts(limit, after_id=after_id)
        ]

    @app.get("/drift/thresholds", tags=["drift"], dependencies=guards.viewer)
    def drift_thresholds() -> DriftThresholds:
        """The limits drift is judged by."""
        return registry.drift_thresholds()

    @app.put("/drift/thresholds", tags=["drift"], dependencies=guards.operator)
    def set_drift_thresholds(body: DriftThresholds, request: Request) -> DriftThresholds:
        """Judge drift by these limits from the next pass on (omitted fields: their defaults)."""
        return registry.set_drift_thresholds(body, by=principal_of(request).name)

    @app.post("/drift/check", tags=["drift"], dependencies=guards.operator)
    def check_drift() -> DriftCheck:
        """Run a pass over the fleet now (otherwise one runs every interval)."""
        changes = watch.check()
        return DriftCheck(
            subjects=[DriftView.of(c.status) for c in changes],
            alerts=[c.message for c in changes if c.message is not None],
            seconds=watch.last_pass_s or 0.0,
        )

    return watch
