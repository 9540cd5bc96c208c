"""Shadow reports in: devices' figures from ``devices/+/shadow/report`` into the database.

:class:`ShadowReceiver` subscribes on the server's paho client (a shared
subscription when replicas split the traffic), queues each payload on paho's
thread and, on its own worker, parses it once
(:class:`~edge_runtime.protocol.shadow.ShadowReport`: size, fields, the
device its topic names) and stores it; the rollout leader reads the stored
reports of a running shadow wave on every tick
(:meth:`~fleet_server.coordinator.RolloutCoordinator.tick`). Reports of
unknown devices, over the rate limit or malformed are dropped, counted and
logged. Old reports are pruned after ``keep_s``.
"""

from __future__ import annotations

import logging
import time

import paho.mqtt.client as mqtt

from edge_runtime.errors import EdgefleetError
from edge_runtime.protocol.shadow import ShadowReport
from fleet_server.device_inbox import DeviceTopicReceiver
from fleet_server.errors import NotFoundError, RegistryStorageError
from fleet_server.rate_limit import DeviceRateLimiter
from fleet_server.registry import Registry

__all__ = ["ShadowReceiver"]

log = logging.getLogger(__name__)

QUEUE_SIZE = 1024
KEEP_S = 30 * 86400.0
"""How long stored reports are kept (a rollout's shadow wave reads only its own)."""


class ShadowReceiver(DeviceTopicReceiver):
    """Devices' shadow reports into the registry (see the module)."""

    worker_name = "shadow-reports"
    leaf = "shadow/report"
    what = "shadow report"

    def __init__(
        self,
        client: mqtt.Client,
        registry: Registry,
        *,
        prefix: str = "edgefleet",
        share_group: str | None = None,
        keep_s: float = KEEP_S,
        prune_every_s: float = 3600.0,
    ) -> None:
        super().__init__(client, prefix=prefix, share_group=share_group, queue_size=QUEUE_SIZE)
        self.registry = registry
        self.keep_s = keep_s
        self.prune_every_s = prune_every_s
        self.rate_limiter = DeviceRateLimiter(per_minute=60.0, burst=120.0)
        """Reports per device: 60 a minute (a window is at least a second; a minute by default)."""
        self.stored = 0
        self.refused = 0
        self._last_prune = time.monotonic()

    def handle(self, topic: str, payload: bytes) -> bool:
        """Store one report; False when it was refused (logged)."""
        device_id = self.device_of(topic)
        if not self.rate_limiter.admit(device_id, "shadow", time.monotonic()):
            self.refused += 1
            return False
        try:
            report = ShadowReport.parse(payload, device_id)
            self.registry.device(device_id)
        except RegistryStorageError:
            raise
        except NotFoundError:
            log.warning("shadow report from unknown device %s dropped", device_id[:64])
            self.refused += 1
            return False
        except EdgefleetError as exc:
            log.warning("shadow report refused: %s", exc)
            self.refused += 1
            return False
        self.registry.record_shadow_report(report)
        self.stored += 1
        return True

    def started(self) -> None:
        """The first prune comes one interval after the start."""
        self._last_prune = time.monotonic()

    def periodic(self, now: float) -> None:
        """Drop the reports older than ``keep_s`` every ``prune_every_s``."""
        if now - self._last_prune < self.prune_every_s:
            return
        self._last_prune = now
        try:
            self.registry.prune_shadow_reports(time.time() - self.keep_s)
        except Exception:  # retried at the next prune
            log.exception("pruning shadow reports failed")
