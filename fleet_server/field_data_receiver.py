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
import threading
import time

import paho.mqtt.client as mqtt

from edge_runtime.errors import EdgefleetError
from edge_runtime.protocol.field_data import FieldAck, FieldSample
from fleet_server.device_inbox import DeviceTopicReceiver
from fleet_server.errors import NotFoundError, RegistryStorageError
from fleet_server.field_data import FieldRetention, FieldStore
from fleet_server.rate_limit import DeviceRateLimiter
from fleet_server.registry import Registry

__all__ = ["FieldDataReceiver"]

log = logging.getLogger(__name__)

QUEUE_SIZE = 256


class FieldDataReceiver(DeviceTopicReceiver):
    """Field samples in, acks and settings out, on the server's MQTT client (see the module)."""

    worker_name = "field-data"
    leaf = "field-data/samples"
    what = "field sample"

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
        super().__init__(client, prefix=prefix, share_group=share_group, queue_size=QUEUE_SIZE)
        self.registry = registry
        self.store = store
        self.retention = retention or FieldRetention()
        self.settings_every_s = settings_every_s
        self.prune_every_s = prune_every_s
        self.rate_limiter = DeviceRateLimiter(per_minute=60.0, burst=120.0)
        """Samples per device: 60 a minute, bursts of 120 (a device's own caps are lower)."""
        self._published: dict[str, bytes] = {}
        self._refresh = threading.Event()
        self._last_settings = self._last_prune = 0.0
        self.received = 0
        self.stored = 0
        self.repeats = 0
        self.malformed = 0

    def refresh_settings(self) -> None:
        """Publish the devices' settings soon (after an operator changed a group's)."""
        self._refresh.set()

    def started(self) -> None:
        """Settings are published and retention applied as soon as the worker runs."""
        self._refresh.set()
        self._last_settings = self._last_prune = 0.0

    def reconnected(self) -> None:
        """The broker may have lost its retained settings: publish them all again."""
        self._published.clear()
        self._refresh.set()

    def handle(self, topic: str, payload: bytes) -> bool:
        """Store one sample payload and ack it; False when it was refused (logged)."""
        device_id = self.device_of(topic)
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

    def periodic(self, now: float) -> None:
        """Settings when asked or every ``settings_every_s``; retention every ``prune_every_s``."""
        if self._refresh.is_set() or now - self._last_settings >= self.settings_every_s:
            self._refresh.clear()
            self._last_settings = now
            self.attempt("publishing field-data settings", self.publish_settings)
        if now - self._last_prune >= self.prune_every_s:
            self._last_prune = now
            self.attempt("field-data retention", self.prune)
