"""The API's tokens (hashed) and its audit log, as tables (see :mod:`fleet_server.access`).

New tables on the same :class:`~fleet_server.db.models.Base`: ``create_all``
adds them to an existing database, so they need no schema migration.
"""

from __future__ import annotations

from sqlalchemy import Double, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.models import Base

__all__ = ["ApiToken", "AuditEntry"]

_NAME = 64  # token names: ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$
_ROLE = 16


class ApiToken(Base):
    """An API token: its name, role and the SHA-256 of its secret (never the secret)."""

    __tablename__ = "api_tokens"

    name: Mapped[str] = mapped_column(String(_NAME), primary_key=True)
    role: Mapped[str] = mapped_column(String(_ROLE))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Double)
    created_by: Mapped[str] = mapped_column(String(_NAME))
    last_used_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(_NAME), nullable=True)


class AuditEntry(Base):
    """One API request that could change something: who, what, when, from where, and how it ended."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_actor", "actor", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Double)
    actor: Mapped[str | None] = mapped_column(String(_NAME), nullable=True)
    role: Mapped[str | None] = mapped_column(String(_ROLE), nullable=True)
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    status: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
