"""The API's tokens and audit log: ``/tokens`` (admin) and ``GET /audit`` (operator and admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict

from fleet_server.access import AuditItem, Role, TokenInfo, check_token_name
from fleet_server.api.auth import Guards, principal_of
from fleet_server.registry import MAX_AUDIT_LIMIT, Registry

__all__ = ["AuditView", "NewToken", "TokenRequest", "TokenView", "access_routes"]

TokenName = Annotated[str, AfterValidator(check_token_name)]


class TokenRequest(BaseModel):
    """A token to create: its name (who it is, in the audit log) and its role."""

    model_config = ConfigDict(extra="forbid")

    name: TokenName
    role: Role


class TokenView(BaseModel):
    """An API token (never its secret): role, who made it and when, last use, revocation."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: Role
    active: bool
    created_at: float
    created_by: str
    last_used_at: float | None
    """When it was last accepted (written at most once a minute)."""
    revoked_at: float | None
    revoked_by: str | None

    @classmethod
    def of(cls, info: TokenInfo) -> TokenView:
        return cls(
            name=info.name,
            role=info.role,
            active=info.active,
            created_at=info.created_at,
            created_by=info.created_by,
            last_used_at=info.last_used_at,
            revoked_at=info.revoked_at,
            revoked_by=info.revoked_by,
        )


class NewToken(BaseModel):
    """A token just created, with its secret: shown this once (the server keeps only its SHA-256)."""

    token: TokenView
    secret: str


class AuditView(BaseModel):
    """One audit entry: who (token and role; none when no valid token came), from where, when,
    what (method, path, the first KiB of the body) and the outcome (status, error)."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: int
    at: float
    actor: str | None
    role: Role | None
    client: str | None
    method: str
    path: str
    status: int
    error: str | None
    body: str | None

    @classmethod
    def of(cls, item: AuditItem) -> AuditView:
        return cls.model_validate(item)


def access_routes(app: FastAPI, registry: Registry, guards: Guards) -> None:
    """Tokens: list, create, revoke (admin); the audit log (operator)."""

    @app.get("/tokens", tags=["access"], dependencies=guards.admin)
    def list_tokens() -> list[TokenView]:
        """Every API token, active and revoked, oldest first (never a secret)."""
        return [TokenView.of(t) for t in registry.tokens()]

    @app.post("/tokens", status_code=201, tags=["access"], dependencies=guards.admin)
    def create_token(body: TokenRequest, request: Request) -> NewToken:
        """Create a token; the reply holds its secret, shown this once (only its hash is kept)."""
        info, secret = registry.create_token(
            body.name, body.role, created_by=principal_of(request).name
        )
        return NewToken(token=TokenView.of(info), secret=secret)

    @app.delete("/tokens/{name}", tags=["access"], dependencies=guards.admin)
    def revoke_token(name: str, request: Request) -> TokenView:
        """Revoke a token: refused from now on, by every replica."""
        return TokenView.of(registry.revoke_token(name, revoked_by=principal_of(request).name))

    @app.get("/audit", tags=["access"], dependencies=guards.operator)
    def audit(
        since: Annotated[
            float | None, Query(ge=0, allow_inf_nan=False, description="Unix time: at or after")
        ] = None,
        actor: Annotated[str | None, Query(max_length=64, description="A token's name")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_LIMIT)] = 100,
    ) -> list[AuditView]:
        """The newest ``limit`` audit entries (filtered by ``since`` and ``actor``), oldest first."""
        return [AuditView.of(e) for e in registry.audit(since=since, actor=actor, limit=limit)]
