"""The device process: config in, a running capture -> classify -> publish loop out.

Wires the parts together from one :class:`DeviceConfig`: the frame source and
its capture thread, the active bundle, the outputs, MQTT with a retained
availability topic and periodic telemetry, metrics and the local
``/metrics`` + ``/healthz`` endpoint. Everything is started by :meth:`DeviceRuntime.run` and stopped,
in reverse order, when it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_runtime.bundle import read_bundle
from edge_runtime.classifier import Classifier
from edge_runtime.config import DeviceConfig

if TYPE_CHECKING:
    from edge_runtime.agent import UpdateAgent
from edge_runtime.health import HealthState
from edge_runtime.metrics import MetricsRegistry, RuntimeMetrics
from edge_runtime.mqtt_link import MqttLink, device_topic
from edge_runtime.outputs import JsonLinesSink, MqttPredictionSink, PredictionSink, load_plugin
from edge_runtime.pipeline import ActiveModel, Pipeline, PipelineStats
from edge_runtime.sources import CaptureThread, LatestFrameSlot, create_source
from edge_runtime.telemetry import QualityTracker, TelemetryPublisher

__all__ = ["DeviceRuntime", "RunSummary"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    """What one run did, for the log and the CLI."""

    device_id: str
    stats: PipelineStats
    frames_captured: int
    frames_dropped: int
    frames_corrupt: int
    reconnects: int
    seconds: float
    bundle: str | None

    def __str__(self) -> str:
        fps = self.stats.predictions / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.device_id}: {self.stats.predictions} predictions in {self.seconds:.1f} s "
            f"({fps:.1f}/s) with {self.bundle or 'no bundle'}; captured {self.frames_captured}, "
            f"dropped {self.frames_dropped} (newer frame arrived first), corrupt {self.frames_corrupt}, "
            f"reconnects {self.reconnects}, inference errors {self.stats.inference_errors}, "
            f"output errors {self.stats.output_errors}, watchdog restarts {self.stats.watchdog_restarts}"
        )


class DeviceRuntime:
    """One camera box: built from config, run until told to stop."""

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.registry = MetricsRegistry()
        self.metrics = RuntimeMetrics(self.registry)
        health = config.health
        self.health = HealthState(
            max_frame_age_s=health.max_frame_age_s,
            max_inference_s=health.max_inference_s,
            startup_grace_s=health.startup_grace_s,
        )
        self.model = ActiveModel()
        self.model.listeners.append(self._on_swap)
        self.mqtt = MqttLink(config.mqtt, config.device_id) if config.mqtt is not None else None
        self.agent: UpdateAgent | None = None
        initial: Classifier | None = None
        if config.update is not None and self.mqtt is not None:
            from edge_runtime.agent import UpdateAgent

            self.agent = UpdateAgent(config, self.model, self.mqtt)
            self.health.add_check(self.agent.worker_problem)
            self.health.add_check(self.agent.store_warning, fatal=False)
            initial = self.agent.boot_classifier()
        elif config.bundle is not None:
            initial = Classifier(
                read_bundle(config.bundle), backend=config.backend, threads=config.threads
            )
        if initial is not None:
            self.model.swap(initial)
        self.slot = LatestFrameSlot()
        self.read_timeout_s = float(getattr(config.source, "read_timeout_s", 5.0))
        source_config = config.source
        # a factory: a watchdog restart gets a fresh source, never one a stuck read still holds
        self.capture = CaptureThread(
            lambda: create_source(source_config),
            self.slot,
            read_timeout_s=self.read_timeout_s,
            open_timeout_s=float(getattr(source_config, "open_timeout_s", 10.0)),
        )
        self.quality: QualityTracker | None = None
        self.telemetry: TelemetryPublisher | None = None
        if self.mqtt is not None:
            self.quality = QualityTracker()
            self.telemetry = TelemetryPublisher(
                self.mqtt,
                device_topic(self.mqtt.config.topic_prefix, config.device_id, "telemetry"),
                device_id=config.device_id,
                metrics=self.metrics,
                quality=self.quality,
                health=self.health,
                info=self._info,
                interval_s=self.mqtt.config.telemetry_interval_s,
            )
            self.health.add_check(self.telemetry.worker_problem)
        self.sinks = self._sinks()
        self.status_server = None
        if config.metrics.enabled:
            from edge_runtime.http_status import StatusServer

            self.status_server = StatusServer(
                host=config.metrics.host,
                port=config.metrics.port,
                registry=self.registry,
                health=self.health,
                extra_info=self._info,
            )

    def _on_swap(self, classifier: Classifier) -> None:
        manifest = classifier.bundle.manifest
        self.metrics.set_active_bundle(manifest.name, manifest.version, classifier.bundle.sha256)
        self.health.set_active_bundle(manifest.name, manifest.version, classifier.bundle.sha256)

    def _sinks(self) -> list[PredictionSink]:
        outputs = self.config.outputs
        sinks: list[PredictionSink] = []
        if outputs.jsonl is not None:
            sinks.append(JsonLinesSink(outputs.jsonl.path))
        if outputs.mqtt is not None and self.mqtt is not None:
            topic = device_topic(
                self.mqtt.config.topic_prefix, self.config.device_id, "predictions"
            )
            sinks.append(
                MqttPredictionSink(self.mqtt, topic, outputs.mqtt.qos, outputs.mqtt.every_n)
            )
        sinks.extend(load_plugin(name) for name in outputs.plugins)
        if self.agent is not None:
            sinks.append(self.agent.sink)
        if self.quality is not None:
            sinks.append(self.quality)
        return sinks

    def _info(self) -> dict[str, object]:
        classifier = self.model.current
        return {
            "device_id": self.config.device_id,
            "source": self.capture.source.name,
            "bundle": None if classifier is None else classifier.bundle.id,
            "backend": None if classifier is None else classifier.backend.name,
            "reconnects": self.capture.reconnects,
            "dropped": self.slot.dropped,
        }

    def run(
        self, stop: threading.Event, max_frames: int | None = None, duration_s: float | None = None
    ) -> RunSummary:
        """Start everything, run the loop until a stop condition, stop everything."""
        started = time.monotonic()
        if self.mqtt is not None:
            self.mqtt.start()
        if self.status_server is not None:
            self.status_server.start()
            log.info("metrics and health on %s", self.status_server.url)
        self.capture.start()
        if self.agent is not None:
            self.agent.start()
        if self.telemetry is not None:
            self.telemetry.start()
        pipeline = Pipeline(
            self.config.device_id,
            capture=self.capture,
            slot=self.slot,
            model=self.model,
            sinks=self.sinks,
            metrics=self.metrics,
            health=self.health,
            read_timeout_s=self.read_timeout_s,
            on_inference_error=None if self.agent is None else self.agent.record_inference_error,
        )
        deadline = None if duration_s is None else started + duration_s
        try:
            stats = pipeline.run(stop, max_frames=max_frames, deadline=deadline)
        finally:
            if self.telemetry is not None:
                self.telemetry.stop()
            if self.agent is not None:
                self.agent.stop()
            self.capture.stop(timeout=2.0)
            for sink in self.sinks:
                sink.close()
            if self.status_server is not None:
                self.status_server.stop()
            if self.mqtt is not None:
                self.mqtt.stop()
        classifier = self.model.current
        return RunSummary(
            device_id=self.config.device_id,
            stats=stats,
            frames_captured=self.slot.produced,
            frames_dropped=self.slot.dropped,
            frames_corrupt=self.capture.corrupt,
            reconnects=self.capture.reconnects,
            seconds=time.monotonic() - started,
            bundle=None
            if classifier is None
            else f"{classifier.bundle.manifest.name} {classifier.bundle.manifest.version}",
        )
