"""The fleet server's FastAPI app: bearer auth and roles, the audit trail, the fleet's errors as JSON,
health and metrics."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from edge_runtime import __version__
from edge_runtime.errors import EdgefleetError
from fleet_server.api.access_routes import access_routes
from fleet_server.api.audit import AuditTrail
from fleet_server.api.auth import Authenticator, ForbiddenError, Guards, UnauthorisedError
from fleet_server.api.console_routes import console_routes
from fleet_server.api.drift_routes import drift_routes
from fleet_server.api.field_routes import field_routes
from fleet_server.api.routes import broker_routes, bundle_routes, device_routes, rollout_routes
from fleet_server.api.shadow_routes import shadow_routes
from fleet_server.api.window_routes import window_routes
from fleet_server.console.assets import console_assets
from fleet_server.console.assets import public_paths as console_paths
from fleet_server.drift_monitor import DEFAULT_DRIFT_INTERVAL_S
from fleet_server.errors import (
    LeaseLostError,
    NotFoundError,
    NotLeaderError,
    RegistryError,
    RegistryStorageError,
    RolloutError,
    RolloutPlanError,
)
from fleet_server.http_guard import DEFAULT_MAX_BODY_BYTES, DOCS_PATHS, RequestGuard
from fleet_server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fleet_server.metrics import FleetMetrics
from fleet_server.server import FleetServer

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _status_for(exc: EdgefleetError) -> int:
    if isinstance(exc, RegistryStorageError | NotLeaderError | LeaseLostError):
        return 503  # the database is down, or another replica leads the rollouts
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, RolloutPlanError):
        return 400
    if isinstance(exc, RegistryError | RolloutError):
        return 409
    return 400


def create_app(
    server: FleetServer,
    token: str,
    *,
    device_mqtt: dict[str, Any] | None = None,
    public_docs: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    fleet_ca_pem: bytes | None = None,
    drift_interval_s: float = DEFAULT_DRIFT_INTERVAL_S,
) -> FastAPI:
    """The HTTP API over ``server``, guarded by bearer tokens with roles.

    ``token`` is the bootstrap token (an admin, named ``bootstrap`` in the
    audit log); the tokens made with ``POST /tokens`` are valid too
    (:mod:`fleet_server.api.auth`). Every request that is not a read is
    recorded in the audit log (:mod:`fleet_server.api.audit`).
    ``device_mqtt`` (host, port, topic_prefix; tls and ca_pem for an mqtts://
    broker) is what a newly provisioned device should connect to; it is
    returned by ``POST /devices`` for its config.
    ``fleet_ca_pem`` (the fleet CA's certificate) checks the revocation lists
    ``PUT /broker/crl`` installs. ``drift_interval_s``: how often the drift monitor
    judges the fleet (on the leading replica).
    """
    authenticate = Authenticator(server.registry, token)
    mqtt_settings = dict(device_mqtt or {"topic_prefix": server.prefix})

    app = FastAPI(
        title="edgefleet fleet server",
        version=__version__,
        description="Devices, bundles and staged rollouts of an edgefleet fleet.",
    )
    public = {"/healthz", *console_paths(), *(DOCS_PATHS if public_docs else ())}
    app.add_middleware(
        RequestGuard,
        authenticate=authenticate,
        public_paths=public,
        max_body_bytes=max_body_bytes,
    )
    app.add_middleware(AuditTrail, record=server.registry.add_audit)  # outermost: sees 401s too

    @app.exception_handler(UnauthorisedError)
    def _unauthorised(_request: Request, _exc: UnauthorisedError) -> JSONResponse:
        return JSONResponse(
            {"error": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(ForbiddenError)
    def _forbidden(_request: Request, exc: ForbiddenError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=403)

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

    guards = Guards()
    fleet_metrics = FleetMetrics(server)

    @app.get(
        "/metrics",
        tags=["server"],
        dependencies=guards.viewer,
        response_class=PlainTextResponse,
    )
    def metrics() -> Response:
        """The fleet's state for Prometheus (text format), for any token (a viewer's is enough)."""
        return Response(fleet_metrics.render(), media_type=METRICS_CONTENT_TYPE)

    device_routes(app, server, guards, mqtt_settings)
    bundle_routes(app, server, guards)
    rollout_routes(app, server, guards)
    broker_routes(app, server, guards.admin, fleet_ca_pem)
    access_routes(app, server.registry, guards)
    window_routes(app, server.registry, guards)
    console_routes(app, server, guards)
    app.router.routes.extend(console_assets())  # the console's page: public files, no data
    drift_routes(app, server, guards, fleet_metrics.registry, interval_s=drift_interval_s)
    field_routes(app, server, guards, fleet_metrics.registry)
    shadow_routes(app, server, guards)
    return app
