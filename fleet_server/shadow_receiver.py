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
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.errors import EdgefleetError
from edge_runtime.protocol.shadow import ShadowReport
from edge_runtime.supervise import SupervisedThread, WorkerHealth
from fleet_server.errors import NotFoundError, RegistryStorageError
from fleet_server.rate_limit import DeviceRateLimiter
from fleet_server.registry import Registry
from fleet_server.workers import FailureStreak

__all__ = ["ShadowReceiver"]

log = logging.getLogger(__name__)

QUEUE_SIZE = 1024
KEEP_S = 30 * 86400.0
"""How long stored reports are kept (a rollout's shadow wave reads only its own)."""


class ShadowReceiver:
    """Devices' shadow reports into the registry (see the module)."""

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
        self.client = client
        self.registry = registry
        self.prefix = prefix
        self.share_group = share_group
        self.keep_s = keep_s
        self.prune_every_s = prune_every_s
        self.rate_limiter = DeviceRateLimiter(per_minute=60.0, burst=120.0)
        """Reports per device: 60 a minute (a window is at least a second; a minute by default)."""
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(QUEUE_SIZE)
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self._prev_on_connect: Any = None
        self.streak = FailureStreak()
        """Reports the database refused in a row."""
        self.stored = 0
        self.refused = 0
        self.dropped = 0

    @property
    def _filter(self) -> str:
        return f"{self.prefix}/devices/+/shadow/report"

    def _share(self, topic: str) -> str:
        return f"$share/{self.share_group}/{topic}" if self.share_group else topic

    def start(self) -> None:
        """Subscribe and start the worker."""
        if self._thread is not None:
            return
        self.client.message_callback_add(self._filter, self._on_message)
        self._prev_on_connect = self.client.on_connect
        self.client.on_connect = self._on_connect
        self.client.subscribe(self._share(self._filter), qos=1)
        self._stop.clear()
        self._thread = SupervisedThread(self._loop, "shadow-reports")
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.stop(timeout=5)
        self.client.on_connect = self._prev_on_connect
        self.client.message_callback_remove(self._filter)
        self.client.unsubscribe(self._share(self._filter))

    def health(self) -> WorkerHealth:
        """The worker's health."""
        if self._thread is None:
            return WorkerHealth("shadow-reports", False, 0, "not started")
        return self.streak.judge(self._thread.health())

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        if self._prev_on_connect is not None:
            self._prev_on_connect(client, *args)
        self.client.subscribe(self._share(self._filter), qos=1)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._inbox.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            self.dropped += 1

    def handle(self, topic: str, payload: bytes) -> bool:
        """Store one report; False when it was refused (logged)."""
        parts = topic.split("/")
        device_id = parts[-3] if len(parts) >= 3 else ""
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

    def _loop(self) -> None:
        last_prune = time.monotonic()
        while not self._stop.is_set():
            try:
                topic, payload = self._inbox.get(timeout=0.25)
            except queue.Empty:
                pass
            else:
                try:
                    stored = self.handle(topic, payload)
                except Exception as exc:  # the database is away: this window is lost
                    self.streak.failed(exc)
                    log.exception("storing a shadow report failed")
                else:
                    if stored:
                        self.streak.passed()
            if time.monotonic() - last_prune >= self.prune_every_s:
                last_prune = time.monotonic()
                try:
                    self.registry.prune_shadow_reports(time.time() - self.keep_s)
                except Exception:  # retried at the next prune
                    log.exception("pruning shadow reports failed")
