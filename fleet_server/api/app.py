"""The fleet server's FastAPI app: bearer auth, the fleet's errors as JSON, health and metrics."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge_runtime import __version__
from edge_runtime.errors import EdgefleetError
from fleet_server.api.routes import bundle_routes, device_routes, rollout_routes
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
from fleet_server.server import FleetServer

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False)
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


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

    @app.get(
        "/metrics",
        tags=["server"],
        dependencies=guarded,
        response_class=PlainTextResponse,
    )
    def metrics() -> Response:
        """The fleet's state for Prometheus (text format), behind the token like every route."""
        return Response(fleet_metrics.render(), media_type=METRICS_CONTENT_TYPE)

    device_routes(app, server, guarded, mqtt_settings)
    bundle_routes(app, server, guarded)
    rollout_routes(app, server, guarded)
    return app
