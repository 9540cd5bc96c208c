"""Leases: which server replica does a job that only one may do at a time (the rollout leader)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Double, String
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.models import Base

__all__ = ["Lease"]


class Lease(Base):
    """A named lease: its holder until ``expires_at``, and the epoch that fences its writes.

    The epoch grows by one each time the lease changes hands, so a holder that
    was paused past its expiry (and replaced) finds its epoch stale and writes
    nothing.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    epoch: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[float] = mapped_column(Double)
    acquired_at: Mapped[float] = mapped_column(Double)
