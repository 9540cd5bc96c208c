"""The device's field-data collector: a FrameObserver, an encoding worker, an uploader that resumes.

On the inference thread :meth:`FieldCollector.observe` only decides (the
rules, then the caps) and hands a chosen frame to a bounded queue (a full
queue drops the frame, counted): the pipeline never waits for it. A
supervised worker encodes queued frames (JPEG), writes each into the
:class:`~edge_runtime.field_data.ring.SampleRing` and uploads the ring's
oldest samples over MQTT (QoS 1, ``devices/<id>/field-data/samples``) within
the upload bandwidth, at most :data:`IN_FLIGHT` unacknowledged at a time. A
sample leaves the ring only when the server acks its sha256; after a
reconnect, or when an ack is late, the unacknowledged ones are sent again
(the server keeps each image once). Settings arrive retained on
``devices/<id>/field-data/settings``; until then, and when disabled, nothing
is collected.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from edge_runtime.errors import EdgefleetError
from edge_runtime.field_data.ring import SampleRing
from edge_runtime.field_data.rules import Caps, choose_reason
from edge_runtime.prediction import Prediction
from edge_runtime.protocol.field_data import (
    MAX_HEADER_BYTES,
    MAX_SAMPLE_BYTES,
    FieldAck,
    FieldDataSettings,
    FieldSample,
    FieldSampleHeader,
)
from edge_runtime.protocol.predictions import ScoredLabel
from edge_runtime.sources.base import Frame
from edge_runtime.supervise import SupervisedThread, WorkerHealth

__all__ = ["IN_FLIGHT", "FieldCollector", "FieldLink"]

log = logging.getLogger(__name__)

IN_FLIGHT = 4
"""Samples sent and not yet acknowledged, at most."""
ACK_TIMEOUT_S = 30.0
"""A sample unacknowledged this long is sent again."""
QUEUE_SIZE = 8
"""Chosen frames waiting for the encoder; more are dropped (counted)."""


_MAX_IMAGE_BYTES = MAX_SAMPLE_BYTES - MAX_HEADER_BYTES - 4


def _jpeg_under(image: npt.NDArray[np.uint8], quality: int, limit: int) -> bytes | None:
    """``image`` as JPEG of at most ``limit`` bytes: lower qualities first, then halved sizes."""
    for _ in range(6):
        for q in sorted(
            {quality, min(quality, 75), min(quality, 50), min(quality, 30)}, reverse=True
        ):
            ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                return None
            if buffer.nbytes <= limit:
                return buffer.tobytes()
        height, width = image.shape[:2]
        if min(height, width) < 16:
            return None
        image = np.asarray(
            cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA), np.uint8
        )
    return None


class FieldLink(Protocol):
    """What the collector needs of the device's MQTT link (:class:`~edge_runtime.mqtt_link.MqttLink`)."""

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None: ...

    def subscribe(self, topic_filter: str, handler: Callable[[str, bytes], None]) -> None: ...

    def add_connect_listener(self, listener: Callable[[], None]) -> None: ...


class FieldCollector:
    """Collects field samples for ``device_id`` into ``folder`` and uploads them (see the module)."""

    def __init__(
        self,
        device_id: str,
        folder: Path,
        link: FieldLink | None = None,
        *,
        prefix: str = "edgefleet",
        settings: FieldDataSettings | None = None,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.device_id = device_id
        self.settings = settings or FieldDataSettings()
        self.ring = SampleRing(folder, self.settings.max_disk_bytes)
        self.caps = Caps(self.settings.per_minute, self.settings.per_day)
        self._link = link
        self._topic = f"{prefix}/devices/{device_id}/field-data"
        self._clock = clock
        self._random = random.Random(seed)  # noqa: S311  # sampling, not secrets
        self._queue: queue.Queue[tuple[npt.NDArray[np.uint8], Prediction, str]] = queue.Queue(
            QUEUE_SIZE
        )
        self._lock = threading.Lock()
        self._in_flight: dict[str, float] = {}
        self._tokens = 0.0
        self._tokens_at = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: SupervisedThread | None = None
        self.chosen = 0
        """Frames a rule chose (before the caps)."""
        self.queue_full = 0
        """Chosen, admitted frames dropped because the encoder was behind."""
        self.stored = 0
        self.sent = 0
        self.acked = 0
        self.bytes_sent = 0

    # --- settings and acks, from the server ---------------------------------------------

    def apply(self, settings: FieldDataSettings) -> None:
        """Use new settings from now on (caps restart; the ring keeps what it holds)."""
        with self._lock:
            self.settings = settings
            refused = self.caps.refused  # a counter: it carries on across settings
            self.caps = Caps(settings.per_minute, settings.per_day)
            self.caps.refused = refused
            self.ring.max_bytes = settings.max_disk_bytes
        log.info(
            "field data %s (under %s confidence, classes %s, random %g; %d/min, %d/day)",
            "on" if settings.enabled else "off",
            settings.below_confidence,
            settings.classes or "none",
            settings.random_fraction,
            settings.per_minute,
            settings.per_day,
        )

    def _on_settings(self, _topic: str, payload: bytes) -> None:
        if not payload:
            self.apply(FieldDataSettings())
            return
        try:
            self.apply(FieldDataSettings.parse(payload))
        except EdgefleetError as exc:
            log.warning("ignored field-data settings: %s", exc)

    def _on_ack(self, _topic: str, payload: bytes) -> None:
        try:
            ack = FieldAck.parse(payload)
        except EdgefleetError as exc:
            log.warning("ignored field-data ack: %s", exc)
            return
        with self._lock:
            self._in_flight.pop(ack.sha256, None)
        if self.ring.remove(ack.sha256):
            self.acked += 1
        self._wake.set()

    def _on_connect(self) -> None:
        with self._lock:
            self._in_flight.clear()  # a new session: send the unacknowledged again
        self._wake.set()

    # --- the inference thread -----------------------------------------------------------

    def observe(self, frame: Frame, prediction: Prediction) -> None:
        """The FrameObserver: keep this frame when a rule and the caps say so (never blocks)."""
        settings = self.settings
        if not settings.enabled:
            return
        reason = choose_reason(settings, prediction, self._random.random())
        if reason is None:
            return
        self.chosen += 1
        with self._lock:
            if not self.caps.admit(self._clock()):
                return
        try:
            self._queue.put_nowait((frame.image.copy(), prediction, reason))
        except queue.Full:
            self.queue_full += 1
            return
        self._wake.set()

    def shadow_disagreed(self, image: npt.NDArray[np.uint8], prediction: Prediction) -> bool:
        """A shadow candidate answered this frame otherwise than the active model (``prediction``):
        keep it when the rule is on and the caps allow (never blocks; ``image`` is the caller's
        own copy). Whether it was queued."""
        settings = self.settings
        if not (settings.enabled and settings.shadow_disagreement):
            return False
        self.chosen += 1
        with self._lock:
            if not self.caps.admit(self._clock()):
                return False
        try:
            self._queue.put_nowait((image, prediction, "shadow-disagreement"))
        except queue.Full:
            self.queue_full += 1
            return False
        self._wake.set()
        return True

    # --- the worker ---------------------------------------------------------------------

    def encode(self, image: npt.NDArray[np.uint8], prediction: Prediction, reason: str) -> bool:
        """Encode one chosen frame and keep it in the ring; False when it cannot be kept."""
        data = _jpeg_under(image, self.settings.jpeg_quality, _MAX_IMAGE_BYTES)
        if data is None:
            log.warning("a field sample could not be encoded as JPEG")
            return False
        header = FieldSampleHeader(
            device_id=self.device_id,
            sha256=hashlib.sha256(data).hexdigest(),
            image_format="jpeg",
            captured_at=prediction.captured_at,
            reason=reason,  # type: ignore[arg-type]  # one of choose_reason's
            label=prediction.label[:128],
            confidence=prediction.confidence if np.isfinite(prediction.confidence) else None,
            top_k=[
                ScoredLabel(label=label[:128], score=score if np.isfinite(score) else None)
                for label, score in prediction.top_k[:16]
            ],
            bundle_sha256=prediction.bundle_sha256,
            bundle_name=prediction.bundle_name,
            bundle_version=prediction.bundle_version,
            camera_id=prediction.camera_id,
        )
        payload = FieldSample(header, data).encode()
        if len(payload) > MAX_SAMPLE_BYTES:
            log.warning("a field sample of %d bytes is over the upload cap: dropped", len(payload))
            return False
        if self.ring.put(header.sha256, payload):
            self.stored += 1
            return True
        return False

    def upload(self, now_monotonic: float | None = None) -> int:
        """Send the ring's oldest unacknowledged samples the bandwidth allows; how many were sent."""
        if self._link is None:
            return 0
        now = time.monotonic() if now_monotonic is None else now_monotonic
        rate = float(self.settings.upload_bytes_per_s)
        with self._lock:
            # a bucket of one second's bytes that may go into debt by one sample: the average
            # stays within the rate, and a sample larger than a second's budget still goes
            self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            for sha, sent_at in list(self._in_flight.items()):
                if now - sent_at > ACK_TIMEOUT_S:
                    del self._in_flight[sha]  # late: send it again
            room = IN_FLIGHT - len(self._in_flight)
            skip = set(self._in_flight)
        if room <= 0:
            return 0
        sent = 0
        for sha256, payload in self.ring.oldest(room, skip):
            with self._lock:
                if self._tokens <= 0:
                    break
                self._tokens -= len(payload)
                self._in_flight[sha256] = now
            self._link.publish(f"{self._topic}/samples", payload, qos=1)
            self.sent += 1
            self.bytes_sent += len(payload)
            sent += 1
        return sent

    def drain(self) -> int:
        """Encode and keep every frame waiting in the queue; how many were kept."""
        kept = 0
        while True:
            try:
                image, prediction, reason = self._queue.get_nowait()
            except queue.Empty:
                return kept
            kept += self.encode(image, prediction, reason)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            self.drain()
            self.upload()

    def start(self) -> None:
        """Subscribe to settings and acks, and start the worker."""
        if self._thread is not None:
            return
        if self._link is not None:
            self._link.subscribe(f"{self._topic}/settings", self._on_settings)
            self._link.subscribe(f"{self._topic}/acks", self._on_ack)
            self._link.add_connect_listener(self._on_connect)
        self._stop.clear()
        self._thread = SupervisedThread(self._loop, f"field-data-{self.device_id}")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker (samples not yet acknowledged stay in the ring for the next run)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.stop(timeout=timeout)

    def worker_problem(self) -> str | None:
        """Why the field-data worker is not running (for ``/healthz``), or None."""
        thread = self._thread
        if thread is None or thread.health().alive:
            return None
        return f"the field-data worker is not running ({thread.health().last_error or 'ended'})"

    def health(self) -> WorkerHealth | None:
        """The worker's health, or None when not started."""
        return None if self._thread is None else self._thread.health()
