"""The API's shadow figures: what a rollout's shadow wave saw, device by device.

Mounting the routes also runs a :class:`~fleet_server.shadow_receiver.ShadowReceiver`
on the server's MQTT client while the app serves (devices' shadow reports
into the database, where the rollout leader's gate reads them; one of the
server's workers in ``/healthz``).

=========================================  ========  ==========================================
route                                      role      what
=========================================  ========  ==========================================
``GET /rollouts/{id}/shadow``              viewer    the shadow wave's figures, summed and per device
=========================================  ========  ==========================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI
from fastapi import Path as FastApiPath

from fleet_server.api.auth import Guards
from fleet_server.errors import NotFoundError
from fleet_server.shadow_gate import sum_reports
from fleet_server.shadow_receiver import ShadowReceiver

if TYPE_CHECKING:
    from fleet_server.server import FleetServer

__all__ = ["shadow_routes"]

RolloutId = Annotated[int, FastApiPath(ge=1, le=2**31 - 1)]


def shadow_routes(app: FastAPI, server: FleetServer, guards: Guards) -> ShadowReceiver:
    """Mount ``/rollouts/{id}/shadow`` and run the shadow report receiver while the app serves."""
    registry = server.registry
    receiver = ShadowReceiver(
        server.client, registry, prefix=server.prefix, share_group=server.share_group
    )
    server.workers.add("shadow-reports", receiver.health)
    app.router.on_startup.append(receiver.start)
    app.router.on_shutdown.append(receiver.stop)

    @app.get("/rollouts/{rollout_id}/shadow", tags=["rollouts"], dependencies=guards.viewer)
    def rollout_shadow(rollout_id: RolloutId) -> dict[str, Any]:
        """The rollout's shadow wave: its settings and limits, status, verdict, and the figures
        its devices reported (all together and per device). 404 when it has no shadow wave."""
        registry.rollout(rollout_id)  # 404 for an unknown rollout
        state = server.plan(rollout_id) or registry.rollout_state(rollout_id)
        if state is None or state.spec.waves[0].shadow is None:
            raise NotFoundError(f"rollout {rollout_id} has no shadow wave")
        wave, stage = state.waves[0], state.spec.waves[0].shadow
        reports = (
            []
            if wave.started_at is None
            else registry.shadow_reports(state.spec.bundle, wave.devices, wave.started_at)
        )
        if wave.finished_at is not None:
            reports = [r for r in reports if r.window_start <= wave.finished_at]
        return {
            "rollout_id": rollout_id,
            "bundle_sha256": state.spec.bundle,
            "status": wave.status.value,
            "started_at": wave.started_at,
            "finished_at": wave.finished_at,
            "devices": list(wave.devices),
            "stage": stage.model_dump(mode="json"),
            "verdict": None if wave.verdict is None else wave.verdict.model_dump(mode="json"),
            "figures": sum_reports(reports).as_dict(),
            "per_device": {
                device: sum_reports(r for r in reports if r.device_id == device).as_dict()
                for device in wave.devices
            },
        }

    return receiver
