"""Who is calling the API, and whether their role lets them: the token check and the per-route roles.

Two kinds of token are valid: the bootstrap token ``edgefleet serve`` was
started with (an admin named :data:`~fleet_server.access.BOOTSTRAP_NAME`,
compared in constant time, never stored), and the tokens made with
``POST /tokens`` (``edgefleet fleet tokens create``), found by their SHA-256
in the database, so a revoked token is refused at once by every replica.
The request guard (:mod:`fleet_server.http_guard`) checks the token before a
body is read; each route then names the role it needs (:class:`Guards`): a
token with a lesser role gets a 403 that names the role needed.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, Request

from fleet_server.access import BOOTSTRAP_NAME, Principal, Role
from fleet_server.http_guard import PRINCIPAL
from fleet_server.registry import Registry

__all__ = [
    "Authenticator",
    "ForbiddenError",
    "Guards",
    "RoleCheck",
    "UnauthorisedError",
    "principal_of",
]


class UnauthorisedError(Exception):
    """No valid token came with the request (answered with a 401)."""


class ForbiddenError(Exception):
    """The token is valid but its role is not enough for the route (answered with a 403)."""


class Authenticator:
    """A presented token to who holds it: the bootstrap token, else a stored, unrevoked one."""

    def __init__(self, registry: Registry, bootstrap_token: str) -> None:
        if not bootstrap_token:
            raise ValueError("the API token must not be empty")
        self._registry = registry
        self._bootstrap = bootstrap_token.encode("utf-8")
        self._admin = Principal(BOOTSTRAP_NAME, Role.ADMIN)

    def __call__(self, secret: str) -> Principal | None:
        """Who holds ``secret`` (None: nobody); a database failure raises its typed error."""
        if hmac.compare_digest(secret.encode("utf-8"), self._bootstrap):
            return self._admin
        return self._registry.principal(secret)


def principal_of(request: Request) -> Principal:
    """Who made ``request`` (the guard left it in the scope); :class:`UnauthorisedError` if nobody."""
    principal = request.scope.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise UnauthorisedError
    return principal


class RoleCheck:
    """A route dependency: the caller's role must allow ``role``."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __call__(self, request: Request) -> Principal:
        principal = principal_of(request)
        if not principal.role.allows(self.role):
            raise ForbiddenError(
                f"{request.method} {request.url.path} needs the {self.role.value} role; "
                f"token {principal.name!r} has {principal.role.value}"
            )
        return principal


class Guards:
    """The dependency list each route declares, one per role (``dependencies=guards.operator``)."""

    def __init__(self) -> None:
        self.viewer: list[Any] = [Depends(RoleCheck(Role.VIEWER))]
        self.operator: list[Any] = [Depends(RoleCheck(Role.OPERATOR))]
        self.admin: list[Any] = [Depends(RoleCheck(Role.ADMIN))]
