"""The API's routes: devices, bundles and rollouts, each answering a typed reply."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import Response

from fleet_server.api.auth import Guards, principal_of
from fleet_server.api.models import (
    BundleView,
    CommandRequest,
    CrlRequest,
    CrlView,
    DeviceView,
    ImportRequest,
    MqttSettings,
    PinRequest,
    ProvisionReply,
    ProvisionRequest,
    RolloutRequest,
    RolloutSummary,
    RolloutView,
    TimelineView,
    Verb,
    WaveView,
)
from fleet_server.certificates import check_crl_update, crl_number
from fleet_server.errors import FleetError, NotFoundError
from fleet_server.records import TargetSelector
from fleet_server.registry import MAX_TIMELINE_LIMIT
from fleet_server.server import FleetServer

__all__ = ["broker_routes", "bundle_routes", "device_routes", "rollout_routes"]

log = logging.getLogger(__name__)

# ids are 32-bit integers in every database we run on: anything larger is a 422, never a 500
RolloutId = Annotated[int, FastApiPath(ge=1, le=2**31 - 1)]
EntryId = Annotated[int, Query(ge=0, le=2**31 - 1)]
_TUF_ROOT = {
    "type": "object",
    "description": "TUF root metadata (signed, signatures), as python-tuf writes it",
    "required": ["signed", "signatures"],
}


def device_routes(
    app: FastAPI, server: FleetServer, guards: Guards, mqtt_settings: dict[str, Any]
) -> None:
    """Devices: list and read (viewer), provision and pin (operator), credentials (admin), and
    the root a new device trusts (viewer)."""
    registry = server.registry

    @app.get("/devices", tags=["devices"], dependencies=guards.viewer)
    def list_devices(tag: Annotated[list[str] | None, Query()] = None) -> list[DeviceView]:
        """Every device, or those carrying every ``tag`` given."""
        return [d for d in registry.devices(tag)]

    @app.get("/devices/{device_id}", tags=["devices"], dependencies=guards.viewer)
    def get_device(device_id: str) -> DeviceView:
        """One device."""
        return registry.device(device_id)

    def with_credentials(device_id: str, password: str | None) -> MqttSettings:
        settings = dict(mqtt_settings)
        if password is not None:
            settings |= {"username": device_id, "password": password}
        return MqttSettings.model_validate(settings)

    @app.post("/devices", status_code=201, tags=["devices"], dependencies=guards.operator)
    def provision(body: ProvisionRequest) -> ProvisionReply:
        """Provision a device; the reply holds the MQTT settings for its config.

        When the server manages broker credentials the reply also holds the
        device's broker username and password: this is the only time the
        password is shown (the server keeps only its hash).
        """
        info, password = server.credentials.provision(body.id, body.tags, body.profile)
        log.info("provisioned device %s via the API", body.id)
        return ProvisionReply(device=info, mqtt=with_credentials(body.id, password))

    @app.post("/devices/{device_id}/credentials", tags=["devices"], dependencies=guards.admin)
    def rotate(device_id: str) -> ProvisionReply:
        """Issue a new broker password for a device (the old one stops at the broker's reload)."""
        password = server.credentials.rotate(device_id)
        log.info("rotated the broker credentials of %s via the API", device_id)
        return ProvisionReply(
            device=registry.device(device_id),
            mqtt=with_credentials(device_id, password),
        )

    @app.delete("/devices/{device_id}/credentials", tags=["devices"], dependencies=guards.admin)
    def revoke(device_id: str) -> DeviceView:
        """Remove a device's broker credentials: it can no longer connect."""
        server.credentials.revoke(device_id)
        log.info("revoked the broker credentials of %s via the API", device_id)
        return registry.device(device_id)

    @app.get(
        "/trust/root",
        tags=["devices"],
        dependencies=guards.viewer,
        response_class=Response,
        responses={200: {"content": {"application/json": {"schema": _TUF_ROOT}}}},
    )
    def trusted_root() -> Response:
        """The newest TUF root metadata: what a newly provisioned device is given to trust."""
        return Response(server.repository.root_bytes(), media_type="application/json")

    @app.put("/devices/{device_id}/pin", tags=["devices"], dependencies=guards.operator)
    def pin(device_id: str, body: PinRequest) -> DeviceView:
        """Keep a device on a bundle whatever rollouts say (``null`` unpins)."""
        return registry.pin(device_id, body.sha256)


def broker_routes(
    app: FastAPI, server: FleetServer, guarded: list[Any], fleet_ca_pem: bytes | None
) -> None:
    """The broker's TLS files the server manages: the fleet CA's revocation list."""

    @app.put("/broker/crl", tags=["broker"], dependencies=guarded)
    def install_crl(body: CrlRequest) -> CrlView:
        """Give the broker a new revocation list (``edgefleet fleet ca revoke`` sends it).

        It must be signed by the fleet CA (``serve --fleet-ca``, its certificate
        only) and not older than the list in place; the server writes it beside
        the broker's password file and reloads the broker, which checks it at
        every TLS connection from then on.
        """
        broker_auth = server.broker_auth
        if broker_auth is None:
            raise FleetError(
                "this server does not manage the broker's files (no --broker-auth-dir)"
            )
        if fleet_ca_pem is None:
            raise FleetError(
                "this server was not given the fleet CA certificate (serve --fleet-ca) to check "
                "revocation lists with"
            )
        current = broker_auth.crl_path.read_bytes() if broker_auth.crl_path.exists() else None
        pem = body.crl_pem.encode("ascii", "replace")
        crl = check_crl_update(pem, fleet_ca_pem, current)
        broker_auth.write_crl(pem)
        log.warning(
            "installed the fleet CA's revocation list number %d (%d revoked) via the API",
            crl_number(crl),
            len(crl),
        )
        next_update = crl.next_update_utc
        return CrlView(
            crl_number=crl_number(crl),
            revoked=len(crl),
            next_update=None if next_update is None else next_update.timestamp(),
        )


def bundle_routes(app: FastAPI, server: FleetServer, guards: Guards) -> None:
    """Bundles: list (viewer) and import (operator)."""
    registry = server.registry

    @app.get("/bundles", tags=["bundles"], dependencies=guards.viewer)
    def list_bundles() -> list[BundleView]:
        """Every imported bundle, oldest first."""
        return [BundleView.of(b) for b in registry.bundles()]

    @app.post("/bundles/import", status_code=201, tags=["bundles"], dependencies=guards.operator)
    def import_bundle(body: ImportRequest) -> BundleView:
        """Import a released bundle file from the server's disk."""
        path = Path(body.path)
        if not path.is_file():
            raise NotFoundError(f"unknown bundle file {body.path}: not a file on the server")
        sha256 = server.import_bundle(path)
        return BundleView.of(registry.bundle(sha256))


def _rollout_view(server: FleetServer, rollout_id: int) -> RolloutView:
    """A rollout's status, waves with device counts per status, and the planner's summary."""
    registry = server.registry
    info = registry.rollout(rollout_id)
    devices = registry.wave_devices(rollout_id)
    waves = []
    for wave in registry.waves(rollout_id):
        counts = Counter(d.status for d in devices if d.wave_id == wave.id)
        waves.append(
            WaveView(
                index=wave.index,
                status=wave.status,
                started_at=wave.started_at,
                finished_at=wave.finished_at,
                devices=len(wave.device_ids),
                counts=dict(counts),
            )
        )
    totals = dict(Counter(d.status for d in devices))
    plan = server.plan(rollout_id)
    saved = registry.rollout_state(rollout_id) if plan is None else None  # ended: its shape
    return RolloutView.build(info, waves, totals, plan, saved)


def rollout_routes(app: FastAPI, server: FleetServer, guards: Guards) -> None:
    """Rollouts: list, view and timeline (viewer); plan and start, command (operator)."""
    registry = server.registry

    def rollout_view(rollout_id: RolloutId) -> RolloutView:
        return _rollout_view(server, rollout_id)

    @app.get("/rollouts", tags=["rollouts"], dependencies=guards.viewer)
    def list_rollouts() -> list[RolloutSummary]:
        """Every rollout, oldest first."""
        return [RolloutSummary.of(r) for r in registry.rollouts()]

    @app.get("/rollouts/{rollout_id}", tags=["rollouts"], dependencies=guards.viewer)
    def get_rollout(rollout_id: RolloutId) -> RolloutView:
        """A rollout's status, its waves with device counts per status, and the planner's summary."""
        return rollout_view(rollout_id)

    @app.post("/rollouts", status_code=201, tags=["rollouts"], dependencies=guards.operator)
    def create_rollout(body: RolloutRequest, request: Request) -> RolloutView:
        """Plan and start a staged rollout (``ignore_windows``: sent at once, windows or not)."""
        target = TargetSelector(body.target.kind, tuple(sorted(set(body.target.values))))
        registry.bundle(body.bundle_sha256)  # 404 for an unknown bundle before planning
        rollout_id = server.create_rollout(
            body.bundle_sha256,
            target,
            body.waves,
            previous_sha256=body.previous_sha256,
            seed=body.seed,
            ignore_windows=body.ignore_windows,
        )
        if body.ignore_windows:
            who = principal_of(request).name
            message = f"maintenance windows ignored (created by {who} with ignore_windows)"
            registry.add_timeline(
                "windows-ignored", message, rollout_id=rollout_id, data={"by": who}
            )
        return rollout_view(rollout_id)

    @app.post("/rollouts/{rollout_id}/{verb}", tags=["rollouts"], dependencies=guards.operator)
    def command(
        rollout_id: RolloutId, verb: Verb, request: Request, body: CommandRequest | None = None
    ) -> RolloutView:
        """Pause, resume, approve or abort a running rollout.

        An approval counts once per token: a wave with ``approvals_required: 2``
        (four-eyes) goes on at the second approval by a different token.
        """
        registry.rollout(rollout_id)  # 404 for an unknown rollout
        reason = body.reason if body is not None else "operator abort"
        who = principal_of(request).name
        server.command(rollout_id, verb, reason, by=who)
        log.info("rollout %d: %s by %s", rollout_id, verb, who)
        return rollout_view(rollout_id)

    @app.get("/rollouts/{rollout_id}/timeline", tags=["rollouts"], dependencies=guards.viewer)
    def timeline(
        rollout_id: RolloutId,
        limit: Annotated[int, Query(ge=1, le=MAX_TIMELINE_LIMIT)] = 100,
        after_id: EntryId | None = None,
    ) -> list[TimelineView]:
        """The rollout's timeline entries, oldest first (the newest ``limit``, or those after ``after_id``)."""
        registry.rollout(rollout_id)
        return [
            TimelineView.model_validate(t)
            for t in registry.timeline(rollout_id=rollout_id, limit=limit, after_id=after_id)
        ]
