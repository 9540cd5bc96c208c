"""Who may do what on the HTTP API, and the record of what they did: roles, tokens, audit records.

Plain values and pure functions only (the registry stores tokens and the
audit log, :mod:`fleet_server.api.auth` checks them per request).

Roles are ordered, each holding the rights of the ones below it:

* ``viewer``: read everything (devices, bundles, rollouts, timelines, metrics);
* ``operator``: also change the fleet: rollouts and their pause, resume,
  approve and abort, pins, provisioning, bundle imports, and read the audit log;
* ``admin``: also API tokens and devices' broker credentials.

API tokens are random 256-bit secrets (:func:`new_secret`); the registry
keeps only their SHA-256 (:func:`token_hash`). A fast hash is the right one
here, unlike for passwords: a secret drawn from 2**256 values cannot be
guessed whatever the hash costs, so a slow hash (PBKDF2, bcrypt, Argon2)
would buy nothing and cost every API request tens of milliseconds of CPU
(and let anyone with a wrong token make the server burn it); a fast hash
also lets the server find the token by its hash with one indexed lookup
instead of trying a salted hash against every row.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import Enum

from fleet_server.records import check_name

__all__ = [
    "BOOTSTRAP_NAME",
    "MAX_SECRET_LENGTH",
    "SECRET_PREFIX",
    "AuditItem",
    "AuditRecord",
    "Principal",
    "Role",
    "TokenInfo",
    "check_token_name",
    "new_secret",
    "token_hash",
]

BOOTSTRAP_NAME = "bootstrap"
"""The name of the token ``edgefleet serve`` was started with (an admin, never stored): the
audit log's "who" for it, and a name no stored token may take."""
SECRET_PREFIX = "eft_"  # noqa: S105 - a marker every secret starts with, not a secret
"""Every secret made here starts with this, so secret scanners and people can tell one apart."""
MAX_SECRET_LENGTH = 256
"""A bearer token longer than this is refused before it is hashed or looked up."""


class Role(str, Enum):
    """What a token may do; each role holds the rights of the ones before it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """Whether a token with this role may do what ``needed`` is required for."""
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name (the audit log's "who") and its role."""

    name: str
    role: Role


@dataclass(frozen=True)
class TokenInfo:
    """An API token as the registry keeps it (never its secret)."""

    name: str
    role: Role
    created_at: float
    created_by: str
    last_used_at: float | None
    """When it was last accepted (written at most once a minute)."""
    revoked_at: float | None
    revoked_by: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One API request that could change something, as the audit log is asked to keep it."""

    at: float
    actor: str | None
    """The token's name; None when no valid token came with the request."""
    role: Role | None
    client: str | None
    """The client's address (``host:port`` is not kept: the host only)."""
    method: str
    path: str
    status: int
    """The HTTP status the server answered."""
    error: str | None = None
    """The error it answered with, for statuses of 400 and over."""
    body: str | None = None
    """The request body (its first KiB), or a note of its size when it was not text."""


@dataclass(frozen=True, kw_only=True)
class AuditItem(AuditRecord):
    """An entry of the audit log, with its id (entries are numbered in the order recorded)."""

    id: int


def check_token_name(name: str) -> str:
    """``name`` if it may name a stored token; ``ValueError`` saying why not."""
    check_name(name, "token name")
    if name == BOOTSTRAP_NAME:
        raise ValueError(
            f"token name {name!r} is reserved for the token `edgefleet serve` was started with"
        )
    return name


def new_secret() -> str:
    """A new API token secret: :data:`SECRET_PREFIX` and 32 random bytes, URL-safe base64."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def token_hash(secret: str) -> str:
    """What the registry keeps of a secret: its SHA-256, hex (see the module's note on why)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
