"""Field data over MQTT on the server: samples in (stored once, acknowledged), settings out.

:class:`FieldDataReceiver` subscribes, on the server's paho client, to
``PREFIX/devices/+/field-data/samples`` (a shared subscription when the
replicas split device traffic). paho's thread only queues a payload (a
bounded queue: a full one drops it, and the device sends it again when its
ack does not come); a supervised worker parses it once
(:class:`~edge_runtime.protocol.field_data.FieldSample`: size caps, header
bounds, the image's hash), stores the image (content-addressed) and its
record, and acks its sha256 on ``PREFIX/devices/<id>/field-data/acks``, a
repeat included. Samples of unknown devices, and those over a device's rate
(60 a minute, bursts of 120), are dropped unacknowledged.

The worker also publishes each device's collection settings, retained, on
``PREFIX/devices/<id>/field-data/settings`` (those of its first tag with
settings; the disabled default otherwise) whenever they change, at start and
every ``settings_every_s`` (devices provisioned or re-tagged since), and
applies the field samples' retention bounds. Its database work that fails
(a sample not stored, settings not read) is logged and tried again; from
three failures in a row on, until some succeeds, the worker counts as down
in ``/healthz``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from edge_runtime.errors import EdgefleetError
from edge_runtime.protocol.field_data import FieldAck, FieldSample
from edge_runtime.supervise import SupervisedThread, WorkerHealth
from fleet_server.errors import NotFoundError, RegistryStorageError
from fleet_server.field_data import FieldRetention, FieldStore
from fleet_server.rate_limit import DeviceRateLimiter
from fleet_server.registry import Registry
from fleet_server.workers import FailureStreak

__all__ = ["FieldDataReceiver"]

log = logging.getLogger(__name__)

QUEUE_SIZE = 256


class FieldDataReceiver:
    """Field samples in, acks and settings out, on the server's MQTT client (see the module)."""

    def __init__(
        self,
        client: mqtt.Client,
        registry: Registry,
        store: FieldStore,
        *,
        prefix: str = "edgefleet",
        share_group: str | None = None,
        retention: FieldRetention | None = None,
        settings_every_s: float = 30.0,
        prune_every_s: float = 300.0,
    ) -> None:
        self.client = client
        self.registry = registry
        self.store = store
        self.prefix = prefix
        self.share_group = share_group
        self.retention = retention or FieldRetention()
        self.settings_every_s = settings_every_s
        self.prune_every_s = prune_every_s
        self.rate_limiter = DeviceRateLimiter(per_minute=60.0, burst=120.0)
        """Samples per device: 60 a minute, bursts of 120 (a device's own caps are lower)."""
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(QUEUE_SIZE)
        self._published: dict[str, bytes] = {}
        self._refresh = threading.Event()
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self._prev_on_connect: Any = None
        self.streak = FailureStreak()
        """Database work failed in a row (storing samples, reading settings, retention)."""
        self.received = 0
        self.stored = 0
        self.repeats = 0
        self.malformed = 0
        self.dropped = 0

    @property
    def _filter(self) -> str:
        return f"{self.prefix}/devices/+/field-data/samples"

    def start(self) -> None:
        """Subscribe and start the worker."""
        if self._thread is not None:
            return
        self.client.message_callback_add(self._filter, self._on_message)
        self._prev_on_connect = self.client.on_connect
        self.client.on_connect = self._on_connect
        self._subscribe()
        self._stop.clear()
        self._refresh.set()
        self._thread = SupervisedThread(self._loop, "field-data")
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving (devices keep what was not acknowledged)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.stop(timeout=5)
        self.client.on_connect = self._prev_on_connect
        self.client.message_callback_remove(self._filter)
        self.client.unsubscribe(self._share(self._filter))

    def health(self) -> WorkerHealth:
        """The worker's health; down after its database work failed several times in a row."""
        if self._thread is None:
            return WorkerHealth("field-data", False, 0, "not started")
        return self.streak.judge(self._thread.health())

    def refresh_settings(self) -> None:
        """Publish the devices' settings soon (after an operator changed a group's)."""
        self._refresh.set()

    def _share(self, topic: str) -> str:
        return f"$share/{self.share_group}/{topic}" if self.share_group else topic

    def _subscribe(self) -> None:
        self.client.subscribe(self._share(self._filter), qos=1)

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        if self._prev_on_connect is not None:
            self._prev_on_connect(client, *args)
        self._subscribe()
        self._published.clear()  # the broker may have lost its retained settings
        self._refresh.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._inbox.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            self.dropped += 1  # the device sends it again: no ack came

    def handle(self, topic: str, payload: bytes) -> bool:
        """Store one sample payload and ack it; False when it was refused (logged)."""
        parts = topic.split("/")
        device_id = parts[-3] if len(parts) >= 3 else ""
        self.received += 1
        if not self.rate_limiter.admit(device_id, "field-data", time.monotonic()):
            return False  # unacknowledged: the device sends it again later
        try:
            sample = FieldSample.parse(payload, device_id)
            self.registry.device(device_id)
        except RegistryStorageError:
            raise  # the database is away, the sample is fine: unacknowledged, it comes again
        except NotFoundError:
            log.warning("field sample from unknown device %s dropped", device_id[:64])
            self.malformed += 1
            return False
        except EdgefleetError as exc:
            log.warning("field sample refused: %s", exc)
            self.malformed += 1
            return False
        header = sample.header
        self.store.put(header.sha256, header.image_format, sample.image)
        if self.registry.add_field_sample(header, len(sample.image)):
            self.stored += 1
        else:
            self.repeats += 1
        self.client.publish(
            f"{self.prefix}/devices/{device_id}/field-data/acks",
            FieldAck(sha256=header.sha256).encode(),
            qos=1,
        )
        return True

    def publish_settings(self) -> int:
        """Publish (retained) each device's settings that changed since last published; how many."""
        published = 0
        for device_id, settings in self.registry.device_field_settings().items():
            payload = settings.encode()
            if self._published.get(device_id) == payload:
                continue
            self.client.publish(
                f"{self.prefix}/devices/{device_id}/field-data/settings",
                payload,
                qos=1,
                retain=True,
            )
            self._published[device_id] = payload
            published += 1
        return published

    def prune(self) -> int:
        """Apply the retention bounds to records and files; samples dropped."""
        dropped = self.registry.prune_field_samples(self.retention)
        self.store.delete(dropped)
        return len(dropped)

    def _loop(self) -> None:
        last_settings = last_prune = 0.0
        while not self._stop.is_set():
            try:
                topic, payload = self._inbox.get(timeout=0.25)
            except queue.Empty:
                pass
            else:
                try:
                    stored = self.handle(topic, payload)
                except Exception as exc:  # the database is away: the device resends, unacked
                    self.streak.failed(exc)
                    log.exception("storing a field sample failed")
                else:
                    if stored:  # a refused one may never have reached the database
                        self.streak.passed()
            now = time.monotonic()
            if self._refresh.is_set() or now - last_settings >= self.settings_every_s:
                self._refresh.clear()
                last_settings = now
                try:
                    self.publish_settings()
                except Exception as exc:
                    self.streak.failed(exc)
                    log.exception("publishing field-data settings failed")
                else:
                    self.streak.passed()
            if now - last_prune >= self.prune_every_s:
                last_prune = now
                try:
                    self.prune()
                except Exception as exc:
                    self.streak.failed(exc)
                    log.exception("field-data retention failed")
