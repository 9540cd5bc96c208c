"""Periodic telemetry: the device's ``/stats`` snapshot plus prediction quality, over MQTT.

The fleet server's quality gate reads these snapshots
(``fleet_server.telemetry.read_sample``): the frame, error and uncertain
counters, the fps gauge, the p95 of the ``invoke`` stage latency and the
``quality`` section this module adds. :class:`QualityTracker` is a
prediction sink that keeps, for the bundle serving now, how many predictions
of each label it made, their mean confidence and a histogram of their
confidences (:mod:`edge_runtime.confidence_histogram`); :class:`TelemetryPublisher`
publishes the whole snapshot every ``interval_s`` seconds, QoS 0 and not
retained, on ``{prefix}/devices/{id}/telemetry`` (``docs/protocol.md``).
Telemetry is advisory: a snapshot that cannot be built or published is
logged and skipped, and never stops the device.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from pydantic import JsonValue

from edge_runtime.confidence_histogram import CONFIDENCE_BINS, confidence_bin
from edge_runtime.health import HealthReport, HealthState
from edge_runtime.metrics import RuntimeMetrics
from edge_runtime.outputs import PredictionSink, Publisher
from edge_runtime.prediction import Prediction
from edge_runtime.protocol import TelemetryHealth, TelemetryQuality, TelemetryReport
from edge_runtime.supervise import SupervisedThread

__all__ = [
    "DEFAULT_TELEMETRY_INTERVAL_S",
    "QualityTracker",
    "TelemetryPublisher",
]

log = logging.getLogger(__name__)

DEFAULT_TELEMETRY_INTERVAL_S = 10.0


class QualityTracker(PredictionSink):
    """Running class counts, mean confidence and confidence histogram of the bundle serving now.

    The figures start again from zero when a prediction comes from another
    bundle than the previous one (keyed by ``bundle_sha256``), so they always
    describe one bundle. Non-finite confidences count towards the class but
    not towards the mean. ``emit`` runs on the inference thread; ``snapshot``
    may be called from any thread.
    """

    name = "quality"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bundle: str | None = None
        self._counts: dict[str, int] = {}
        self._predictions = 0
        self._confidence_sum = 0.0
        self._confidences = 0
        self._histogram = [0] * CONFIDENCE_BINS

    def emit(self, prediction: Prediction) -> None:
        """Count one prediction (starting afresh when its bundle differs from the last one's)."""
        with self._lock:
            if prediction.bundle_sha256 != self._bundle:
                self._reset(prediction.bundle_sha256)
            self._predictions += 1
            self._counts[prediction.label] = self._counts.get(prediction.label, 0) + 1
            if math.isfinite(prediction.confidence):
                self._confidence_sum += prediction.confidence
                self._confidences += 1
                self._histogram[confidence_bin(prediction.confidence) or 0] += 1

    def _reset(self, bundle: str | None) -> None:
        if self._bundle is not None:
            log.debug("quality figures start again for bundle %s", bundle)
        self._bundle = bundle
        self._counts = {}
        self._predictions = 0
        self._confidence_sum = 0.0
        self._confidences = 0
        self._histogram = [0] * CONFIDENCE_BINS

    def snapshot(self, bundle: str | None = None) -> TelemetryQuality:
        """The figures so far (the telemetry's ``quality`` section); for ``bundle``, when given,
        empty if none of its predictions came yet."""
        with self._lock:
            if bundle is not None and bundle != self._bundle:
                return TelemetryQuality(bundle=bundle)
            mean = self._confidence_sum / self._confidences if self._confidences else None
            return TelemetryQuality(
                bundle=self._bundle,
                predictions=self._predictions,
                mean_confidence=mean if mean is None or math.isfinite(mean) else None,
                class_counts=dict(sorted(self._counts.items())),
                confidence_histogram=list(self._histogram),
            )


class TelemetryPublisher:
    """Publishes a telemetry snapshot every ``interval_s`` seconds from a daemon thread.

    The payload is ``/stats`` (``health``, ``metrics``, ``info``) plus
    ``quality``, ``protocol``, ``device_id``, ``bundle`` (the sha256 serving
    now, or None) and ``at`` (wall-clock Unix seconds). ``health`` and
    ``info`` are optional; ``clock`` (wall-clock seconds) is for tests.
    """

    def __init__(
        self,
        publisher: Publisher,
        topic: str,
        *,
        device_id: str,
        metrics: RuntimeMetrics,
        quality: QualityTracker,
        health: HealthState | None = None,
        info: Callable[[], Mapping[str, Any]] | None = None,
        interval_s: float = DEFAULT_TELEMETRY_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"telemetry interval must be positive, got {interval_s}")
        self._publisher = publisher
        self.topic = topic
        self.device_id = device_id
        self.metrics = metrics
        self.quality = quality
        self.health = health
        self.info = info
        self.interval_s = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self.published = 0
        """Snapshots handed to the MQTT link."""
        self.failures = 0
        """Snapshots that could not be built or published."""

    def report(self) -> TelemetryReport:
        """The telemetry snapshot as of now."""
        active = self.metrics.active_bundle
        bundle = None if active is None else active[2]
        return TelemetryReport(
            device_id=self.device_id,
            bundle=bundle,
            at=self._clock(),
            health=None if self.health is None else _health(self.health.evaluate()),
            metrics=cast("dict[str, JsonValue]", self.metrics.registry.snapshot()),
            info={} if self.info is None else _json_values(self.info()),
            quality=self.quality.snapshot(bundle),
        )

    def publish_once(self) -> bool:
        """Build and publish one snapshot; False (logged) when that failed."""
        try:
            self._publisher.publish(self.topic, self.report().encode(), qos=0)
        except Exception as exc:  # telemetry is advisory: never let it stop the device
            self.failures += 1
            log.warning(
                "telemetry on %s not published: %s",
                self.topic,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return False
        self.published += 1
        return True

    def start(self) -> None:
        """Publish every ``interval_s`` seconds from now on, the first after one interval."""
        if self._thread is not None:
            raise RuntimeError("telemetry publisher already started")
        self._stop.clear()
        self._thread = SupervisedThread(self._loop, f"telemetry-{self.device_id}")
        self._thread.start()
        log.info("telemetry every %g s on %s", self.interval_s, self.topic)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop publishing and wait for the thread (does nothing when not started)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.stop(timeout=timeout)

    @property
    def running(self) -> bool:
        """Whether the publishing thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def worker_problem(self) -> str | None:
        """Why the telemetry worker is not running (for ``/healthz``), or None."""
        thread = self._thread
        if thread is None or thread.health().alive:
            return None
        return f"the telemetry worker is not running ({thread.health().last_error or 'ended'})"

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.publish_once()


def _json_values(info: Mapping[str, Any]) -> dict[str, Any]:
    """``info`` with values JSON cannot hold (paths, enums) as their text."""
    return {
        str(key): value
        if value is None or isinstance(value, str | int | float | bool)
        else str(value)
        for key, value in info.items()
    }


def _health(report: HealthReport) -> TelemetryHealth:
    """The telemetry's ``health`` section (reasons clipped to what the protocol allows)."""
    return TelemetryHealth(
        status=report.status,
        reasons=[reason[:500] for reason in report.reasons[:32]],
        details=report.details,
    )
