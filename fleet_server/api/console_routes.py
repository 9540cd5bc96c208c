"""The reads the operator's console needs beyond the API's own routes (any token: viewer).

``GET /console/api/me`` (who the token is, so the page can disable what its
role may not do), ``/console/api/fleet`` (every device with health and field
figures), ``/console/api/devices/{id}`` (versions run, events, telemetry
series), ``/console/api/bundles/{sha256}`` (quality report, provenance,
release signature) and ``/console/api/rollouts/{id}`` (each wave's devices
and gate verdict). Each page carries an ``ETag`` (the page's stamp, see
:class:`~fleet_server.console.page_cache.PageCache`): a console polling with
``If-None-Match`` gets a bodiless ``304`` while nothing changed, and every
open console shares one build per change. Writes stay on the API's own
routes (``POST /rollouts``, ``PUT /devices/{id}/pin`` ...), with their roles
and audit trail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi import Path as FastApiPath
from fastapi.responses import Response

from fleet_server.api.auth import Guards, principal_of
from fleet_server.console.page_cache import Built, PageCache
from fleet_server.console.signatures import ReleaseCheck
from fleet_server.registry.console_views import ConsoleViews
from fleet_server.rollout_spec import Sha256
from fleet_server.server import FleetServer

__all__ = ["console_routes"]

RolloutId = Annotated[int, FastApiPath(ge=1, le=2**31 - 1)]
_JSON = "application/json"
FLEET_MIN_AGE_S = 5.0
"""The fleet overview is rebuilt at most this often: on a live fleet its telemetry figures move
every second, and rebuilding a 1,000-device page on each poll is what an open console would
cost the server (devices report every 10 s by default)."""


def _schema(description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entry of a page: a JSON object (its ETag'd bytes are built by the cache)."""
    body = {"type": "object", "description": description}
    return {200: {"content": {_JSON: {"schema": body}}}, 304: {"description": "not changed"}}


def _reply(request: Request, built: Built) -> Response:
    headers = {"ETag": built.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == built.etag:
        return Response(status_code=304, headers=headers)
    if built.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        return Response(
            built.gzipped, media_type=_JSON, headers=headers | {"Content-Encoding": "gzip"}
        )
    return Response(built.body, media_type=_JSON, headers=headers)


def console_routes(
    app: FastAPI, server: FleetServer, guards: Guards, *, cache: PageCache | None = None
) -> PageCache:
    """Add the console's reads to ``app``; the page cache they share (one per app)."""
    views = ConsoleViews(server.registry)
    pages = cache or PageCache()
    releases = ReleaseCheck(server.repository.folder)

    def page(
        request: Request,
        key: str,
        stamp: Callable[[], str],
        build: Callable[[], Any],
        min_age_s: float | None = None,
    ) -> Response:
        return _reply(request, pages.get(key, stamp, build, min_age_s=min_age_s))

    @app.get("/console/api/me", tags=["console"], dependencies=guards.viewer)
    def me(request: Request) -> dict[str, str]:
        """Who this token is: its name and role (the console disables what the role may not do)."""
        principal = principal_of(request)
        return {"name": principal.name, "role": principal.role.value}

    @app.get(
        "/console/api/fleet",
        tags=["console"],
        dependencies=guards.viewer,
        response_class=Response,
        responses=_schema("every device with its health and newest field figures"),
    )
    def fleet(request: Request) -> Response:
        """Every device: link, update phase, version, last seen, health, newest field figures."""
        return page(
            request,
            "fleet",
            lambda: views.stamp("fleet"),
            lambda: views.fleet(time.time()),
            FLEET_MIN_AGE_S,
        )

    @app.get(
        "/console/api/devices/{device_id}",
        tags=["console"],
        dependencies=guards.viewer,
        response_class=Response,
        responses=_schema("one device: versions run, update events, telemetry series"),
    )
    def device(device_id: str, request: Request) -> Response:
        """One device: the versions it ran and why each ended, update events, telemetry series."""
        return page(
            request,
            f"device:{device_id}",
            lambda: views.stamp("device", device_id),
            lambda: views.device(device_id, time.time()),
        )

    def bundle_page(sha256: str) -> dict[str, Any]:
        found = views.bundle(sha256)
        status = releases.status(sha256, int(found["size"]))
        return {**found, "signature": status.__dict__ | {"signed_by": list(status.signed_by)}}

    @app.get(
        "/console/api/bundles/{sha256}",
        tags=["console"],
        dependencies=guards.viewer,
        response_class=Response,
        responses=_schema("one bundle: quality report, provenance, release signature"),
    )
    def bundle(sha256: Sha256, request: Request) -> Response:
        """A bundle's quality report, provenance, compatibility and release signature status."""
        targets = server.repository.folder / "targets.json"

        def stamp() -> str:
            mtime = targets.stat().st_mtime if targets.exists() else 0.0
            return f"{views.stamp('bundles')}-{mtime:.3f}"

        return page(request, f"bundle:{sha256}", stamp, lambda: bundle_page(sha256))

    @app.get(
        "/console/api/rollouts/{rollout_id}",
        tags=["console"],
        dependencies=guards.viewer,
        response_class=Response,
        responses=_schema("one rollout: each wave's spec, devices and gate verdict"),
    )
    def rollout(rollout_id: RolloutId, request: Request) -> Response:
        """A rollout as its planner saved it: each wave's spec, devices and gate verdict."""
        return page(
            request,
            f"rollout:{rollout_id}",
            lambda: views.stamp("rollout", rollout_id),
            lambda: views.rollout(rollout_id),
        )

    return pages
