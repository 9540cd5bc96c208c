"""Leases on the shared database: one holder at a time for a job, and the epoch that fences it.

A server replica calls :meth:`Leases.acquire_lease` every few seconds: it
gets (or keeps) the lease when it is free, expired or already its own.
Each change of holder bumps the lease's epoch; every write the job makes
checks its :class:`Fence` (holder and epoch) in the same transaction, with
the lease's row locked (:meth:`Leases.check_fence`), so a replica paused
past its expiry and replaced can never write again with its old epoch. A
holder whose lease merely expired (nobody took it) may still write: no
other replica has written under a newer epoch. Times are the
replicas' clocks: keep them in step (NTP), far tighter than the lease's
time to live.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fleet_server import db
from fleet_server.errors import LeaseLostError
from fleet_server.registry.unit import UnitOfWork

__all__ = ["Fence", "LeaseInfo", "Leases"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fence:
    """What a lease holder writes under: the lease's name, its holder and the epoch it got."""

    name: str
    holder: str
    epoch: int


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as stored: who holds it, since when, until when, at which epoch."""

    name: str
    holder: str
    epoch: int
    acquired_at: float
    expires_at: float

    @property
    def fence(self) -> Fence:
        return Fence(self.name, self.holder, self.epoch)


class Leases(UnitOfWork):
    """Leases: one holder at a time for a job, and the epoch that fences its writes."""

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> LeaseInfo | None:
        """Take or renew the lease ``name`` for ``ttl_s`` seconds; None while another holds it."""
        if not ttl_s > 0:
            raise ValueError(f"a lease's time to live must be positive, got {ttl_s}")
        now = self._clock()
        try:
            with self._transaction(write=True) as session:
                row = self._lease_row(session, name)
                if row is None:
                    row = db.Lease(
                        name=name, holder=holder, epoch=1, acquired_at=now, expires_at=now + ttl_s
                    )
                    session.add(row)
                elif row.holder == holder and row.expires_at > now:
                    row.expires_at = now + ttl_s
                elif row.expires_at <= now and row.holder == holder:
                    # lapsed, and nobody took it since: nobody wrote under another epoch, so
                    # the holder's fence stays good (a new epoch would cost a full takeover)
                    log.info(
                        "lease %s: %s renews it %.1f s after it lapsed (nobody took it)",
                        name,
                        holder,
                        now - row.expires_at,
                    )
                    row.expires_at = now + ttl_s
                elif row.expires_at <= now:
                    if row.holder != holder:
                        log.warning(
                            "lease %s: %s takes over from %s (expired %.1f s ago), epoch %d",
                            name,
                            holder,
                            row.holder,
                            now - row.expires_at,
                            row.epoch + 1,
                        )
                    row.holder, row.epoch = holder, row.epoch + 1
                    row.acquired_at, row.expires_at = now, now + ttl_s
                else:
                    return None
                session.flush()
                return _info(row)
        except IntegrityError:
            return None  # another replica created it first

    def release_lease(self, fence: Fence) -> bool:
        """Give the lease up now (a clean stop), so another replica need not wait for its expiry."""
        with self._transaction(write=True) as session:
            row = self._lease_row(session, fence.name)
            if row is None or (row.holder, row.epoch) != (fence.holder, fence.epoch):
                return False
            row.expires_at = self._clock()
            return True

    def lease(self, name: str) -> LeaseInfo | None:
        """The lease as stored (held or expired), or None if nobody ever took it."""
        with self._transaction() as session:
            row = session.get(db.Lease, name)
            return None if row is None else _info(row)

    def check_fence(self, fence: Fence) -> None:
        """:class:`LeaseLostError` unless ``fence`` still holds its lease (inside the caller's
        batch this shares its transaction, so the check and the writes commit together)."""
        with self._transaction(write=True) as session:
            self._checked(session, fence)

    def _checked(self, session: Session, fence: Fence) -> None:
        row = self._lease_row(session, fence.name)
        if row is None or (row.holder, row.epoch) != (fence.holder, fence.epoch):
            holder = "nobody" if row is None else f"{row.holder} (epoch {row.epoch})"
            raise LeaseLostError(
                f"lease {fence.name} is held by {holder}, not {fence.holder} (epoch {fence.epoch})"
            )

    def _lease_row(self, session: Session, name: str) -> db.Lease | None:
        query = select(db.Lease).where(db.Lease.name == name)
        if self._row_locks:
            query = query.with_for_update()
        return session.scalar(query)


def _info(row: db.Lease) -> LeaseInfo:
    return LeaseInfo(row.name, row.holder, row.epoch, row.acquired_at, row.expires_at)
