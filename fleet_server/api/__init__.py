"""The fleet server's HTTP API: devices, bundles and staged rollouts as JSON, for the operator CLI.

:func:`create_app` wraps one running :class:`~fleet_server.server.FleetServer`
in a FastAPI app. Every route except ``GET /healthz`` needs
``Authorization: Bearer <token>``; a missing or wrong token is a 401 with a
JSON error, a token whose role (viewer, operator, admin) is too low for the
route a 403 naming the role needed (:mod:`.auth`). Every request that is not
a read is recorded in the audit log (:mod:`.audit`). Request bodies are pydantic models with ``extra="forbid"`` (a
wrong or unknown field is a 422 naming it). The fleet's typed errors become
JSON errors ``{"error": message}``: an unknown device, bundle or rollout is a
404, a conflicting request (already provisioned, a rollout that cannot move
as asked) a 409, an unplannable rollout or an unreleased bundle a 400, and an
unreachable database a 503. A guard (:mod:`fleet_server.http_guard`) checks
the token and the body's declared size from the headers, before a byte of
the body is read. OpenAPI docs are at ``/docs``, behind the token unless
``public_docs``.

Layout: ``app.py`` (this app: errors, health, metrics), ``models.py``
(request bodies and typed replies), ``routes.py`` (devices, bundles,
rollouts), ``auth.py`` (tokens, roles), ``audit.py`` (the audit trail),
``access_routes.py`` (``/tokens``, ``/audit``). Routes are plain (not ``async``) functions: FastAPI runs them on its thread
pool, so database and signing work never blocks the event loop.
"""

from fleet_server.api.app import create_app
from fleet_server.api.models import (
    CommandRequest,
    ImportRequest,
    PinRequest,
    ProvisionRequest,
    RolloutRequest,
    TargetRequest,
)

__all__ = [
    "CommandRequest",
    "ImportRequest",
    "PinRequest",
    "ProvisionRequest",
    "RolloutRequest",
    "TargetRequest",
    "create_app",
]
