"""API tokens (only their hashes) and the API's audit log: who did what, when, from where, with what outcome."""

from __future__ import annotations

import logging

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from fleet_server import db
from fleet_server.access import (
    AuditItem,
    AuditRecord,
    Principal,
    Role,
    TokenInfo,
    check_token_name,
    new_secret,
    token_hash,
)
from fleet_server.errors import NotFoundError, RegistryError
from fleet_server.registry.retention import AuditRetention
from fleet_server.registry.unit import UnitOfWork

__all__ = ["LAST_USED_EVERY_S", "MAX_AUDIT_LIMIT", "Access"]

log = logging.getLogger(__name__)

MAX_AUDIT_LIMIT = 10_000
"""The most audit entries one query returns."""
LAST_USED_EVERY_S = 60.0
"""A token's ``last_used_at`` is written at most this often (not one write per request)."""
_LIMITS = {"path": 1024, "error": 2048, "body": 1024, "client": 64, "method": 16}


def _clip(value: str | None, field: str) -> str | None:
    limit = _LIMITS[field]
    if value is None or len(value) <= limit:
        return value
    return value[: limit - 3] + "..."


def _token_info(row: db.ApiToken) -> TokenInfo:
    return TokenInfo(
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        created_by=row.created_by,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
    )


def _audit_item(row: db.AuditEntry) -> AuditItem:
    return AuditItem(
        id=row.id,
        at=row.at,
        actor=row.actor,
        role=None if row.role is None else Role(row.role),
        client=row.client,
        method=row.method,
        path=row.path,
        status=row.status,
        error=row.error,
        body=row.body,
    )


class Access(UnitOfWork):
    """API tokens and the audit log.

    ``audit_retention`` bounds the audit log (set it on the registry to
    change it); :meth:`prune_audit` applies it, with the other bounds, in
    the server's background pruning.
    """

    audit_retention: AuditRetention = AuditRetention()

    # --- tokens ---------------------------------------------------------------------------

    def create_token(
        self, name: str, role: Role | str, *, created_by: str
    ) -> tuple[TokenInfo, str]:
        """A new token and its secret (the only time the secret exists: only its hash is kept).

        A name in use by an active token is refused; a revoked token's name
        may be given to a new token (its old secret stays refused).
        """
        try:
            check_token_name(name)
        except ValueError as exc:
            raise RegistryError(str(exc)) from exc
        if role not in {r.value for r in Role}:
            raise RegistryError(f"role {role!r} is not one of {', '.join(r.value for r in Role)}")
        wanted = Role(role)
        secret = new_secret()
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                row = session.get(db.ApiToken, name)
                if row is not None and row.revoked_at is None:
                    raise RegistryError(
                        f"token {name!r} exists ({row.role}); revoke it first or choose another name"
                    )
                if row is None:
                    row = db.ApiToken(name=name)
                    session.add(row)
                row.role = wanted.value
                row.secret_sha256 = token_hash(secret)
                row.created_at = now
                row.created_by = created_by
                row.last_used_at = None
                row.revoked_at = None
                row.revoked_by = None
                session.flush()
                info = _token_info(row)
        except IntegrityError as exc:
            raise RegistryError(f"token {name!r} was created concurrently; retry") from exc
        log.info("API token %s (%s) created by %s", name, wanted.value, created_by)
        return info, secret

    def tokens(self) -> list[TokenInfo]:
        """Every token, active and revoked, oldest first."""
        query = select(db.ApiToken).order_by(db.ApiToken.created_at, db.ApiToken.name)
        with self._transaction() as session:
            return [_token_info(row) for row in session.scalars(query)]

    def token(self, name: str) -> TokenInfo:
        """One token; :class:`NotFoundError` for a name no token has."""
        with self._transaction() as session:
            row = session.get(db.ApiToken, name)
            if row is None:
                raise NotFoundError(f"unknown API token {name!r}")
            return _token_info(row)

    def revoke_token(self, name: str, *, revoked_by: str) -> TokenInfo:
        """Refuse the token from now on (its row stays, for the record)."""
        with self._transaction(write=True) as session:
            row = session.get(db.ApiToken, name)
            if row is None:
                raise NotFoundError(f"unknown API token {name!r}")
            if row.revoked_at is not None:
                raise RegistryError(f"token {name!r} is already revoked (by {row.revoked_by})")
            row.revoked_at = self._clock()
            row.revoked_by = revoked_by
            session.flush()
            info = _token_info(row)
        log.info("API token %s revoked by %s", name, revoked_by)
        return info

    def principal(self, secret: str) -> Principal | None:
        """Who holds ``secret``: the active token whose hash it has, or None."""
        digest = token_hash(secret)
        query = select(db.ApiToken).where(
            db.ApiToken.secret_sha256 == digest, db.ApiToken.revoked_at.is_(None)
        )
        with self._transaction() as session:
            row = session.scalar(query)
            if row is None:
                return None
            name, role, last_used = row.name, Role(row.role), row.last_used_at
        now = self._clock()
        if last_used is None or now - last_used >= LAST_USED_EVERY_S:
            with self._transaction(write=True) as session:
                session.execute(
                    update(db.ApiToken).where(db.ApiToken.name == name).values(last_used_at=now)
                )
        return Principal(name, role)

    # --- the audit log --------------------------------------------------------------------

    def add_audit(self, record: AuditRecord) -> AuditItem:
        """Append a request to the audit log (long texts clipped)."""
        row = db.AuditEntry(
            at=record.at,
            actor=record.actor,
            role=None if record.role is None else record.role.value,
            client=_clip(record.client, "client"),
            method=_clip(record.method, "method") or "",
            path=_clip(record.path, "path") or "",
            status=record.status,
            error=_clip(record.error, "error"),
            body=_clip(record.body, "body"),
        )
        with self._transaction(write=True) as session:
            session.add(row)
            session.flush()
            return _audit_item(row)

    def audit(
        self,
        *,
        since: float | None = None,
        actor: str | None = None,
        limit: int = 100,
    ) -> list[AuditItem]:
        """The newest ``limit`` entries (at or after ``since``, by ``actor``), oldest first."""
        if not 1 <= limit <= MAX_AUDIT_LIMIT:
            raise RegistryError(f"limit must be between 1 and {MAX_AUDIT_LIMIT}, not {limit}")
        query = select(db.AuditEntry)
        if since is not None:
            query = query.where(db.AuditEntry.at >= since)
        if actor is not None:
            query = query.where(db.AuditEntry.actor == actor)
        query = query.order_by(db.AuditEntry.id.desc()).limit(limit)
        with self._transaction() as session:
            entries = [_audit_item(row) for row in session.scalars(query)]
        return entries[::-1]

    def prune_audit(self, now: float | None = None) -> int:
        """Apply :class:`AuditRetention`: the number of entries dropped."""
        keep = self.audit_retention
        dropped = 0
        with self._transaction(write=True) as session:
            if keep.max_age_s is not None:
                horizon = (self._clock() if now is None else now) - keep.max_age_s
                result = session.execute(delete(db.AuditEntry).where(db.AuditEntry.at < horizon))
                dropped += int(getattr(result, "rowcount", 0) or 0)
            if keep.max_entries is not None:
                cutoff = session.scalar(
                    select(db.AuditEntry.id)
                    .order_by(db.AuditEntry.id.desc())
                    .offset(keep.max_entries)
                    .limit(1)
                )
                if cutoff is not None:
                    result = session.execute(
                        delete(db.AuditEntry).where(db.AuditEntry.id <= cutoff)
                    )
                    dropped += int(getattr(result, "rowcount", 0) or 0)
        if dropped:
            log.info("dropped %d audit log entries beyond the retention bounds", dropped)
        return dropped
