"""Which server replica leads the rollouts: a lease on the shared database, renewed as it ticks.

Every replica ingests device reports (MQTT shared subscriptions spread them)
and serves chunks; only the holder of the ``rollouts`` lease drives the
rollout planner, signs assignments and publishes TUF metadata. The holder
renews the lease every third of its time to live; a replica that stops
renewing (killed, paused, cut off) loses it when it expires and another
takes over, with the next epoch: every write the old one might still try
is fenced by its stale epoch (:class:`~fleet_server.registry.leases.Fence`).
A lone server is simply a replica that always wins.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_runtime.supervise import SupervisedThread, WorkerHealth
from fleet_server.errors import NotLeaderError
from fleet_server.registry import Registry
from fleet_server.registry.leases import Fence, LeaseInfo

__all__ = ["LEADER_LEASE", "Leadership", "LeaseKeeper", "Turn", "default_replica_id"]

log = logging.getLogger(__name__)

LEADER_LEASE = "rollouts"
"""The lease whose holder drives rollouts and publishes TUF metadata."""


def default_replica_id() -> str:
    """This host's name: a lone server keeps the lead across its own restarts."""
    return socket.gethostname()[:100] or "edgefleet-serve"


@dataclass(frozen=True)
class Turn:
    """What one renewal changed: this replica ``gained`` or ``lost`` the lead (or neither)."""

    leading: bool
    gained: bool = False
    lost: bool = False


class Leadership:
    """This replica's hold on the leader lease."""

    def __init__(self, registry: Registry, replica_id: str, ttl_s: float = 10.0) -> None:
        if not ttl_s > 0:
            raise ValueError(f"the lease's time to live must be positive, got {ttl_s}")
        self.registry = registry
        self.replica_id = replica_id
        self.ttl_s = ttl_s
        self.fence: Fence | None = None
        """The lease this replica holds now (None: it does not lead)."""
        self._renewed_at: float | None = None

    @property
    def leading(self) -> bool:
        return self.fence is not None

    @property
    def next_due(self) -> float:
        """When (monotonic) the next renewal is due: every third of the time to live."""
        return float("-inf") if self._renewed_at is None else self._renewed_at + self.ttl_s / 3

    def renew(self, monotonic_now: float) -> Turn:
        """Take or keep the lease; say whether the lead changed hands here."""
        self._renewed_at = monotonic_now
        held: LeaseInfo | None = self.registry.acquire_lease(
            LEADER_LEASE, self.replica_id, self.ttl_s
        )
        was = self.fence
        self.fence = None if held is None else held.fence
        if held is not None and (was is None or was.epoch != held.epoch):
            log.info("replica %s leads the rollouts (epoch %d)", self.replica_id, held.epoch)
            return Turn(True, gained=True, lost=was is not None)
        if held is None and was is not None:
            log.warning("replica %s lost the lead of the rollouts", self.replica_id)
            return Turn(False, lost=True)
        return Turn(self.leading)

    def lose(self, why: str) -> None:
        """Stop leading now (a fenced write was refused: another replica took over)."""
        if self.fence is not None:
            log.warning("replica %s stops leading: %s", self.replica_id, why)
        self.fence = None

    def release(self) -> None:
        """Give the lease up (a clean stop), so another replica takes over at once."""
        if self.fence is not None:
            self.registry.release_lease(self.fence)
            self.fence = None

    def require(self) -> None:
        """:class:`NotLeaderError` (a 503 naming the leader) unless this replica leads."""
        if not self.leading:
            leader = self.leader() or "no replica yet"
            raise NotLeaderError(
                f"replica {self.replica_id} does not lead the rollouts; {leader} does: "
                "send rollout changes there"
            )

    def leader(self) -> str | None:
        """The replica that holds the lease now, as stored (None: nobody, or it expired)."""
        info = self.registry.lease(LEADER_LEASE)
        return None if info is None else info.holder


class LeaseKeeper:
    """Renews the lease on its own thread, every third of its time to live, while the server's
    worker shows signs of life.

    Renewing between the worker's batches let the lease lapse whenever one batch (or one tick)
    took longer than the lease on a loaded machine: the lead changed hands for nothing, and
    every change costs a resume, a metadata republish and a sweep. Here a long batch delays
    nothing; a worker that stops beating for ``stall_s`` (stuck, not busy) stops the renewals,
    so the lease expires and another replica leads. Every write stays fenced either way.
    """

    def __init__(
        self, leadership: Leadership, renew: Callable[[], None], *, stall_s: float = 120.0
    ) -> None:
        self.leadership = leadership
        self._renew = renew
        self.stall_s = stall_s
        """A worker silent this long is stuck: the lease is left to expire."""
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread = SupervisedThread(self._loop, "leader-lease")
        self._stalled = False

    def beat(self) -> None:
        """The worker is alive (called on every turn of its loop)."""
        self._beat = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.stop(timeout=10)

    def health(self) -> WorkerHealth:
        return self._thread.health()

    def _loop(self) -> None:
        while not self._stop.wait(max(0.0, self.leadership.next_due - time.monotonic())):
            silent = time.monotonic() - self._beat
            if silent > self.stall_s:
                if not self._stalled:
                    log.error(
                        "the fleet server's worker has not moved for %.0f s: not renewing the "
                        "lead of the rollouts (another replica takes over when it expires)",
                        silent,
                    )
                self._stalled = True
                self._stop.wait(1.0)
                continue
            self._stalled = False
            started = time.monotonic()
            self._renew()
            took = time.monotonic() - started
            if took > self.leadership.ttl_s / 3:  # the lease's slack is running out: say why
                log.warning(
                    "renewing the lease of the rollouts took %.1f s (its time to live is %g s)",
                    took,
                    self.leadership.ttl_s,
                )
