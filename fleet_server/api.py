"""The fleet server's HTTP API: devices, bundles and staged rollouts as JSON, for the operator CLI.

:func:`create_app` wraps one running :class:`~fleet_server.server.FleetServer`
in a FastAPI app. Every route except ``GET /healthz`` needs
``Authorization: Bearer <token>``; a missing or wrong token is a 401 with a
JSON error. Request bodies are pydantic models with ``extra="forbid"`` (a
wrong or unknown field is a 422 naming it). The fleet's typed errors become
JSON errors ``{"error": message}``: an unknown device, bundle or rollout is a
404, a conflicting request (already provisioned, a rollout that cannot move
as asked) a 409, an unplannable rollout or an unreleased bundle a 400, and an
unreachable database a 503. A guard (:mod:`fleet_server.http_guard`) checks
the token and the body's declared size from the headers, before a byte of
the body is read. OpenAPI docs are at ``/docs``, behind the token unless
``public_docs``.

Routes are plain (not ``async``) functions: FastAPI runs them on its thread
pool, so database and signing work never blocks the event loop.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as FastApiPath
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from edge_runtime import __version__
from edge_runtime.errors import EdgefleetError
from fleet_server.errors import (
    NotFoundError,
    RegistryError,
    RegistryStorageError,
    RolloutError,
    RolloutPlanError,
)
from fleet_server.http_guard import DEFAULT_MAX_BODY_BYTES, DOCS_PATHS, RequestGuard
from fleet_server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fleet_server.metrics import FleetMetrics
from fleet_server.records import TargetSelector, check_name
from fleet_server.registry import MAX_TIMELINE_LIMIT
from fleet_server.rollout_spec import Sha256, WaveSpec
from fleet_server.server import FleetServer
from fleet_server.statuses import TERMINAL_ROLLOUT_STATUSES

__all__ = [
    "CommandRequest",
    "ImportRequest",
    "PinRequest",
    "ProvisionRequest",
    "RolloutRequest",
    "TargetRequest",
    "create_app",
]

log = logging.getLogger(__name__)

Verb = Literal["pause", "resume", "approve", "abort"]

# ids are 32-bit integers in every database we run on: anything larger is a 422, never a 500
RolloutId = Annotated[int, FastApiPath(ge=1, le=2**31 - 1)]
EntryId = Annotated[int, Query(ge=0, le=2**31 - 1)]

_bearer = HTTPBearer(auto_error=False)
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


DeviceId = Annotated[str, AfterValidator(lambda v: check_name(v, "device id"))]
Tag = Annotated[str, AfterValidator(lambda v: check_name(v, "tag"))]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProvisionRequest(_Request):
    """A device to register ahead of its first contact."""

    id: DeviceId
    tags: list[Tag] = Field(default_factory=list)
    profile: str | None = None


class PinRequest(_Request):
    """The bundle to keep a device on (``null`` unpins it)."""

    sha256: Sha256 | None


class ImportRequest(_Request):
    """A released bundle file, as a path on the fleet server's machine."""

    path: str = Field(min_length=1)


class TargetRequest(_Request):
    """Which devices a rollout covers: all, those carrying every tag, or named ones."""

    kind: Literal["all", "tags", "devices"]
    values: list[str] = Field(default_factory=list)


class RolloutRequest(_Request):
    """A rollout: the bundle, its target, what a rollback restores, and its waves (canary first)."""

    bundle_sha256: Sha256
    target: TargetRequest
    previous_sha256: Sha256 | None = None
    waves: list[WaveSpec] = Field(min_length=1, max_length=100)
    seed: int = 0


class CommandRequest(_Request):
    """Why an operator aborts (ignored by the other commands)."""

    reason: str = Field(default="operator abort", max_length=1024)


class _UnauthorisedError(Exception):
    """Raised by the auth dependency; answered with a 401."""


def _status_for(exc: EdgefleetError) -> int:
    if isinstance(exc, RegistryStorageError):
        return 503
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, RolloutPlanError):
        return 400
    if isinstance(exc, RegistryError | RolloutError):
        return 409
    return 400


def _plain(record: Any) -> dict[str, Any]:
    """A frozen registry record as JSON-ready values."""
    data = dataclasses.asdict(record)
    for key, value in data.items():
        if isinstance(value, TargetSelector):
            data[key] = value.to_json()
    return data


def _bundle(record: Any) -> dict[str, Any]:
    data = _plain(record)
    data.pop("quality", None)
    return data


def create_app(
    server: FleetServer,
    token: str,
    *,
    device_mqtt: dict[str, Any] | None = None,
    public_docs: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The HTTP API over ``server``, guarded by the bearer ``token``.

    ``device_mqtt`` (host, port, topic_prefix) is what a newly provisioned
    device should connect to; it is returned by ``POST /devices`` for its config.
    """
    if not token:
        raise ValueError("the API token must not be empty")
    expected = token.encode("utf-8")
    mqtt_settings = dict(device_mqtt or {"topic_prefix": server.prefix})

    def authorised(credentials: _Credentials) -> None:
        given = b"" if credentials is None else credentials.credentials.encode("utf-8")
        if credentials is None or not hmac.compare_digest(given, expected):
            raise _UnauthorisedError

    app = FastAPI(
        title="edgefleet fleet server",
        version=__version__,
        description="Devices, bundles and staged rollouts of an edgefleet fleet.",
    )
    public = {"/healthz", *(DOCS_PATHS if public_docs else ())}
    app.add_middleware(
        RequestGuard, token=token, public_paths=public, max_body_bytes=max_body_bytes
    )

    @app.exception_handler(_UnauthorisedError)
    def _unauthorised(_request: Request, _exc: _UnauthorisedError) -> JSONResponse:
        return JSONResponse(
            {"error": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(EdgefleetError)
    def _fleet_error(_request: Request, exc: EdgefleetError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=_status_for(exc))

    @app.exception_handler(ValueError)
    def _value_error(_request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get("/healthz", tags=["server"])
    def healthz() -> JSONResponse:
        """Liveness, no token needed: 200 while every worker thread runs, 503 naming any that does not."""
        workers = server.health()
        dead = {name: w for name, w in workers.items() if not w.alive}
        body: dict[str, Any] = {
            "status": "unhealthy" if dead else "ok",
            "version": __version__,
            "workers": {name: w.to_dict() for name, w in workers.items()},
        }
        if dead:
            body["reason"] = "; ".join(
                f"worker {name} is not running ({w.last_error or 'ended'})"
                for name, w in dead.items()
            )
        return JSONResponse(body, status_code=503 if dead else 200)

    guarded: list[Any] = [Depends(authorised)]
    fleet_metrics = FleetMetrics(server)

    @app.get("/metrics", tags=["server"], dependencies=guarded, response_class=Response)
    def metrics() -> Response:
        """The fleet's state for Prometheus (text format), behind the token like every route."""
        return Response(fleet_metrics.render(), media_type=METRICS_CONTENT_TYPE)

    _device_routes(app, server, guarded, mqtt_settings)
    _bundle_routes(app, server, guarded)
    _rollout_routes(app, server, guarded)
    return app


def _device_routes(
    app: FastAPI, server: FleetServer, guarded: list[Any], mqtt_settings: dict[str, Any]
) -> None:
    registry = server.registry

    @app.get("/devices", tags=["devices"], dependencies=guarded)
    def list_devices(tag: Annotated[list[str] | None, Query()] = None) -> list[dict[str, Any]]:
        """Every device, or those carrying every ``tag`` given."""
        return [_plain(d) for d in registry.devices(tag)]

    @app.get("/devices/{device_id}", tags=["devices"], dependencies=guarded)
    def get_device(device_id: str) -> dict[str, Any]:
        """One device."""
        return _plain(registry.device(device_id))

    def with_credentials(device_id: str, password: str | None) -> dict[str, Any]:
        settings = dict(mqtt_settings)
        if password is not None:
            settings |= {"username": device_id, "password": password}
        return settings

    @app.post("/devices", status_code=201, tags=["devices"], dependencies=guarded)
    def provision(body: ProvisionRequest) -> dict[str, Any]:
        """Provision a device; the reply holds the MQTT settings for its config.

        When the server manages broker credentials the reply also holds the
        device's broker username and password: this is the only time the
        password is shown (the server keeps only its hash).
        """
        info, password = server.provision_device(body.id, body.tags, body.profile)
        log.info("provisioned device %s via the API", body.id)
        return {"device": _plain(info), "mqtt": with_credentials(body.id, password)}

    @app.post("/devices/{device_id}/credentials", tags=["devices"], dependencies=guarded)
    def rotate(device_id: str) -> dict[str, Any]:
        """Issue a new broker password for a device (the old one stops at the broker's reload)."""
        password = server.rotate_credentials(device_id)
        log.info("rotated the broker credentials of %s via the API", device_id)
        return {
            "device": _plain(registry.device(device_id)),
            "mqtt": with_credentials(device_id, password),
        }

    @app.delete("/devices/{device_id}/credentials", tags=["devices"], dependencies=guarded)
    def revoke(device_id: str) -> dict[str, Any]:
        """Remove a device's broker credentials: it can no longer connect."""
        server.revoke_credentials(device_id)
        log.info("revoked the broker credentials of %s via the API", device_id)
        return _plain(registry.device(device_id))

    @app.get("/trust/root", tags=["devices"], dependencies=guarded)
    def trusted_root() -> Response:
        """The newest TUF root metadata: what a newly provisioned device is given to trust."""
        return Response(server.repository.root_bytes(), media_type="application/json")

    @app.put("/devices/{device_id}/pin", tags=["devices"], dependencies=guarded)
    def pin(device_id: str, body: PinRequest) -> dict[str, Any]:
        """Keep a device on a bundle whatever rollouts say (``null`` unpins)."""
        return _plain(registry.pin(device_id, body.sha256))


def _bundle_routes(app: FastAPI, server: FleetServer, guarded: list[Any]) -> None:
    registry = server.registry

    @app.get("/bundles", tags=["bundles"], dependencies=guarded)
    def list_bundles() -> list[dict[str, Any]]:
        """Every imported bundle, oldest first."""
        return [_bundle(b) for b in registry.bundles()]

    @app.post("/bundles/import", status_code=201, tags=["bundles"], dependencies=guarded)
    def import_bundle(body: ImportRequest) -> dict[str, Any]:
        """Import a released bundle file from the server's disk."""
        path = Path(body.path)
        if not path.is_file():
            raise NotFoundError(f"unknown bundle file {body.path}: not a file on the server")
        sha256 = server.import_bundle(path)
        return _bundle(registry.bundle(sha256))


def _rollout_view(server: FleetServer, rollout_id: int) -> dict[str, Any]:
    """A rollout's status, waves with device counts per status, and the planner's summary."""
    registry = server.registry
    info = registry.rollout(rollout_id)
    devices = registry.wave_devices(rollout_id)
    waves = []
    for wave in registry.waves(rollout_id):
        counts: dict[str, int] = {}
        for device in devices:
            if device.wave_id == wave.id:
                counts[device.status] = counts.get(device.status, 0) + 1
        waves.append(
            {
                "index": wave.index,
                "status": wave.status,
                "started_at": wave.started_at,
                "finished_at": wave.finished_at,
                "devices": len(wave.device_ids),
                "counts": counts,
            }
        )
    totals: dict[str, int] = {}
    for device in devices:
        totals[device.status] = totals.get(device.status, 0) + 1
    plan = server.plan(rollout_id)
    planner = None
    if plan is not None:
        planner = {
            "status": plan.status.value,
            "current_wave": plan.current_wave,
            "waves": len(plan.waves),
            "devices": len(plan.devices),
            "skipped": dict(plan.skipped),
            "counts": {k.value: v for k, v in plan.device_counts().items() if v},
        }
    view = {k: v for k, v in _plain(info).items() if k != "settings"}
    view.update(
        {
            "finished": info.status in TERMINAL_ROLLOUT_STATUSES,
            "waves": waves,
            "counts": totals,
            "planner": planner,
        }
    )
    return view


def _rollout_routes(app: FastAPI, server: FleetServer, guarded: list[Any]) -> None:
    registry = server.registry

    def rollout_view(rollout_id: RolloutId) -> dict[str, Any]:
        return _rollout_view(server, rollout_id)

    @app.get("/rollouts", tags=["rollouts"], dependencies=guarded)
    def list_rollouts() -> list[dict[str, Any]]:
        """Every rollout, oldest first."""
        return [
            {k: v for k, v in _plain(r).items() if k != "settings"} for r in registry.rollouts()
        ]

    @app.get("/rollouts/{rollout_id}", tags=["rollouts"], dependencies=guarded)
    def get_rollout(rollout_id: RolloutId) -> dict[str, Any]:
        """A rollout's status, its waves with device counts per status, and the planner's summary."""
        return rollout_view(rollout_id)

    @app.post("/rollouts", status_code=201, tags=["rollouts"], dependencies=guarded)
    def create_rollout(body: RolloutRequest) -> dict[str, Any]:
        """Plan and start a staged rollout."""
        target = TargetSelector(body.target.kind, tuple(sorted(set(body.target.values))))
        registry.bundle(body.bundle_sha256)  # 404 for an unknown bundle before planning
        rollout_id = server.create_rollout(
            body.bundle_sha256,
            target,
            body.waves,
            previous_sha256=body.previous_sha256,
            seed=body.seed,
        )
        return rollout_view(rollout_id)

    @app.post("/rollouts/{rollout_id}/{verb}", tags=["rollouts"], dependencies=guarded)
    def command(
        rollout_id: RolloutId, verb: Verb, body: CommandRequest | None = None
    ) -> dict[str, Any]:
        """Pause, resume, approve or abort a running rollout."""
        registry.rollout(rollout_id)  # 404 for an unknown rollout
        reason = body.reason if body is not None else "operator abort"
        server.command(rollout_id, verb, reason)
        log.info("rollout %d: %s by the operator", rollout_id, verb)
        return rollout_view(rollout_id)

    @app.get("/rollouts/{rollout_id}/timeline", tags=["rollouts"], dependencies=guarded)
    def timeline(
        rollout_id: RolloutId,
        limit: Annotated[int, Query(ge=1, le=MAX_TIMELINE_LIMIT)] = 100,
        after_id: EntryId | None = None,
    ) -> list[dict[str, Any]]:
        """The rollout's timeline entries, oldest first (the newest ``limit``, or those after ``after_id``)."""
        registry.rollout(rollout_id)
        return [
            _plain(t)
            for t in registry.timeline(rollout_id=rollout_id, limit=limit, after_id=after_id)
        ]
