"""The device process: config in, a running capture -> classify -> publish loop out.

Wires the parts together from one :class:`DeviceConfig`: each camera's frame
source and capture thread (one, or several sharing one inference loop), the
active bundle, the outputs (each on its own queue thread), MQTT with a
retained availability topic and periodic telemetry, the optional OPC UA
server and local classify service, metrics and the local ``/metrics`` +
``/healthz`` endpoint. Everything is started by :meth:`DeviceRuntime.run` and
stopped, in reverse order, when it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from edge_runtime.bundle import read_bundle
from edge_runtime.camera_fleet import CameraFleetDevice, camera_fleet_devices, shared_config
from edge_runtime.cameras import (
    CameraModel,
    PerCameraInference,
    RoundRobinInference,
    WakingSlot,
)
from edge_runtime.classifier import Classifier
from edge_runtime.config import CameraConfig, DeviceConfig, OutputsConfig

if TYPE_CHECKING:
    from edge_runtime.agent import UpdateAgent
    from edge_runtime.field_data import FieldCollector
    from edge_runtime.http_status import StatusServer
    from edge_runtime.local_service import LocalClassifyService
    from edge_runtime.opcua_output import OpcUaServer
    from edge_runtime.shadow import ShadowController
from edge_runtime.health import HealthState
from edge_runtime.metrics import MetricsRegistry, RuntimeMetrics
from edge_runtime.mqtt_link import MqttLink, device_topic
from edge_runtime.output_queue import OutputQueueCollector, QueuedSink, ReportsOutputStats
from edge_runtime.outputs import JsonLinesSink, MqttPredictionSink, PredictionSink, load_plugin
from edge_runtime.pipeline import ActiveModel, FrameObserver, Pipeline, PipelineStats
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
    outputs_dropped: int = 0
    """Predictions the outputs' queues dropped (a consumer fell behind)."""
    cameras: int = 1

    def __str__(self) -> str:
        fps = self.stats.predictions / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.device_id}: {self.stats.predictions} predictions in {self.seconds:.1f} s "
            f"({fps:.1f}/s) with {self.bundle or 'no bundle'}; captured {self.frames_captured}, "
            f"dropped {self.frames_dropped} (newer frame arrived first), corrupt {self.frames_corrupt}, "
            f"reconnects {self.reconnects}, inference errors {self.stats.inference_errors}, "
            f"output errors {self.stats.output_errors}, outputs dropped {self.outputs_dropped}, "
            f"watchdog restarts {self.stats.watchdog_restarts}"
            + (f"; {self.cameras} cameras" if self.cameras > 1 else "")
        )


class Camera:
    """One camera of the device: its slot, capture thread and outputs."""

    def __init__(
        self,
        config: CameraConfig,
        slot: LatestFrameSlot,
        sinks: list[PredictionSink],
        model: ActiveModel,
    ) -> None:
        self.id = config.id
        self.model = model
        """The device's active model, or this camera's own interpreter of it (per-camera inference)."""
        self.config = config
        self.slot = slot
        self.sinks = sinks
        source_config = config.source
        self.read_timeout_s = float(getattr(source_config, "read_timeout_s", 5.0))
        # a factory: a watchdog restart gets a fresh source, never one a stuck read still holds
        self.capture = CaptureThread(
            lambda: create_source(source_config),
            slot,
            read_timeout_s=self.read_timeout_s,
            open_timeout_s=float(getattr(source_config, "open_timeout_s", 10.0)),
        )


class DeviceRuntime:
    """One camera box: built from config, run until told to stop."""

    fleet_cameras: dict[str, CameraFleetDevice]
    """Camera id -> its own fleet identity, for the cameras with a ``fleet:`` section."""

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

            # the cameras that are fleet devices of their own are not the box's to judge
            self.agent = UpdateAgent(shared_config(config), self.model, self.mqtt)
            self.health.add_check(self.agent.worker_problem)
            self.health.add_check(self.agent.store_warning, fatal=False)
            initial = self.agent.boot_classifier()
        elif config.bundle is not None:
            initial = Classifier(
                read_bundle(config.bundle), backend=config.backend, threads=config.threads
            )
        if initial is not None:
            self.model.swap(initial)
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
        self.queued: list[QueuedSink] = []
        self.counted: list[ReportsOutputStats] = []
        """Every output that counts its deliveries and drops (queued ones and OPC UA's)."""
        self.registry.register(OutputQueueCollector(lambda: list(self.counted)))
        self.health.add_detail("outputs", self._output_details)
        self.opcua_server: OpcUaServer | None = None
        opcua = config.outputs.opcua
        if opcua is not None and opcua.server is not None:
            from edge_runtime.opcua_output import OpcUaServer

            self.opcua_server = OpcUaServer(opcua.server)
        self.multi = config.cameras is not None
        self._wake = threading.Event()
        self.cameras = self._cameras()
        self._watch_cameras()
        first = self.cameras[0]
        self.slot, self.capture, self.read_timeout_s = (
            first.slot,
            first.capture,
            first.read_timeout_s,
        )
        self.sinks = first.sinks
        self.observers: list[FrameObserver] = []
        """Called with every camera's classified frames (see :data:`~edge_runtime.pipeline.FrameObserver`)."""
        self.field_data = self._field_collector()
        self.shadow = self._shadow_controller()
        self.local_service: LocalClassifyService | None = None
        self.status_server: StatusServer | None = None
        self._local_endpoints()

    def _on_swap(self, classifier: Classifier) -> None:
        manifest = classifier.bundle.manifest
        self.metrics.set_active_bundle(manifest.name, manifest.version, classifier.bundle.sha256)
        self.health.set_active_bundle(manifest.name, manifest.version, classifier.bundle.sha256)

    def _local_endpoints(self) -> None:
        """The optional loopback ``/classify`` service and the ``/metrics`` + ``/healthz`` server."""
        config = self.config
        if config.local_service.enabled:
            from edge_runtime.local_service import CameraModel, LocalClassifyService

            cameras = {}
            if self.multi:  # ?camera=ID: its own fleet device's model, else the box's
                for camera in self.cameras:
                    own = self.fleet_cameras.get(camera.id)
                    cameras[camera.id] = (
                        CameraModel(self.model, config.device_id)
                        if own is None
                        else CameraModel(own.model, own.device_id)
                    )
            self.local_service = LocalClassifyService(
                self.model, config.local_service, device_id=config.device_id, cameras=cameras
            )
        if config.metrics.enabled:
            from edge_runtime.http_status import StatusServer

            self.status_server = StatusServer(
                host=config.metrics.host,
                port=config.metrics.port,
                registry=self.registry,
                health=self.health,
                extra_info=self._info,
            )

    def _cameras(self) -> list[Camera]:
        """The cameras, each with its slot, outputs and model (first: :attr:`fleet_cameras`)."""
        self.fleet_cameras = camera_fleet_devices(self.config, self.metrics, self.health)
        cameras = []
        for camera_config in self.config.camera_list():
            slot: LatestFrameSlot = LatestFrameSlot()
            if self.multi:
                waking = WakingSlot(self._wake)
                self.health.add_check(self._camera_check(waking, camera_config.id))
                slot = waking
            own = self.fleet_cameras.get(camera_config.id)
            sinks = self._sinks(camera_config.id, camera_config.outputs or self.config.outputs, own)
            model: ActiveModel = self.model
            if own is not None:
                model = own.model  # its own bundle, its own interpreter
            elif self.multi and self.config.inference == "per-camera":
                model = CameraModel(self.model, self.config.backend, self.config.threads)
            camera = Camera(camera_config, slot, sinks, model)
            if own is not None:
                own.attach(slot, partial(_capture_info, camera))
            cameras.append(camera)
        return cameras

    def _watch_cameras(self) -> None:
        """Several cameras: the update agent leaves those dead at activation out of probation."""
        if self.agent is not None and self.multi:
            from edge_runtime.probation_cameras import watch_cameras

            slots = {
                c.id: c.slot
                for c in self.cameras
                if isinstance(c.slot, WakingSlot) and c.id not in self.fleet_cameras
            }
            watch_cameras(self.agent, slots, self.health, self.registry)

    def _sinks(
        self, camera: str, outputs: OutputsConfig, own: CameraFleetDevice | None = None
    ) -> list[PredictionSink]:
        """The camera's outputs, each behind its own queue thread, then the update agent's and quality's taps.

        A camera that is its own fleet device (``own``) publishes on its own
        link and topic, and feeds its own update agent and quality tracker.
        """
        external: list[PredictionSink] = []
        if outputs.jsonl is not None:
            external.append(JsonLinesSink(outputs.jsonl.path.replace("{camera}", camera)))
        link, device_id = (
            (self.mqtt, self.config.device_id) if own is None else (own.mqtt, own.device_id)
        )
        if outputs.mqtt is not None and link is not None:
            topic = device_topic(link.config.topic_prefix, device_id, "predictions")
            external.append(MqttPredictionSink(link, topic, outputs.mqtt.qos, outputs.mqtt.every_n))
        if self.opcua_server is not None:
            # never waits: its own bounded queue, drained in order by the server's event loop
            opcua = self.opcua_server.camera(
                camera, max(1, outputs.queue_size), label=camera if self.multi else ""
            )
            self.counted.append(opcua)
            self.health.add_check(opcua.problem)
            external.append(opcua)
        if outputs.opcua is not None and outputs.opcua.write is not None:
            from edge_runtime.opcua_output import OpcUaWriteSink

            external.append(OpcUaWriteSink(outputs.opcua.write))
        external.extend(load_plugin(name) for name in outputs.plugins)
        sinks: list[PredictionSink] = []
        for sink in external:
            if outputs.queue_size == 0 or not sink.blocking:
                sinks.append(sink)
                continue
            queued = QueuedSink(
                sink,
                capacity=outputs.queue_size,
                stall_s=outputs.stall_s,
                camera=camera if self.multi else "",
            )
            self.queued.append(queued)
            self.counted.append(queued)
            self.health.add_check(queued.problem)
            self.health.add_check(queued.stall_warning, fatal=False)
            sinks.append(queued)
        if own is not None:
            sinks.extend((own.agent.sink, own.quality))
            return sinks
        if self.agent is not None:
            sinks.append(self.agent.sink)
        if self.quality is not None:
            sinks.append(self.quality)
        return sinks

    def _camera_check(self, slot: WakingSlot, camera: str) -> Callable[[], str | None]:
        """A multi-camera device's health check for one camera: frames keep arriving."""
        health = self.health
        created = time.monotonic()

        def check() -> str | None:
            now = time.monotonic()
            last = slot.last_put
            if last is None:
                if now - created > health.startup_grace_s:
                    return (
                        f"camera {camera}: no frame received yet ({now - created:.1f} s,"
                        f" grace {health.startup_grace_s:g} s)"
                    )
                return None
            if now - last > health.max_frame_age_s:
                return (
                    f"camera {camera}: no frame for {now - last:.1f} s"
                    f" (limit {health.max_frame_age_s:g} s)"
                )
            return None

        return check

    def _output_details(self) -> list[dict[str, object]]:
        """Per counted output: delivered, dropped, errors, waiting, thread alive (for ``/healthz``)."""
        return [
            {
                "output": s.output,
                "camera": s.camera,
                "delivered": s.delivered,
                "dropped": s.dropped,
                "errors": s.errors,
                "queued": s.queued,
                "alive": s.alive,
            }
            for s in (c.stats() for c in self.counted)
        ]

    def _info(self) -> dict[str, object]:
        classifier = self.model.current
        info: dict[str, object] = {
            "device_id": self.config.device_id,
            "source": self.capture.source.name,
            "bundle": None if classifier is None else classifier.bundle.id,
            "backend": None if classifier is None else classifier.backend.name,
            "reconnects": self.capture.reconnects,
            "dropped": self.slot.dropped,
            "outputs": self._output_details(),
        }
        if self.multi:
            info["cameras"] = [
                {
                    "id": camera.id,
                    "source": camera.capture.source.name,
                    "captured": camera.slot.produced,
                    "dropped": camera.slot.dropped,
                    "reconnects": camera.capture.reconnects,
                    **(
                        {"fleet_device": self.fleet_cameras[camera.id].device_id}
                        if camera.id in self.fleet_cameras
                        else {}
                    ),
                }
                for camera in self.cameras
            ]
        if self.local_service is not None and self.local_service.running:
            info["local_service"] = self.local_service.url
        return info

    def _field_collector(self) -> FieldCollector | None:
        """Field-data collection (off until the server says on), for a fleet-managed device."""
        if self.mqtt is None or self.config.update is None:
            return None
        from edge_runtime.field_data import FieldCollector
        from edge_runtime.field_data.metrics import FieldDataCollector

        collector = FieldCollector(
            self.config.device_id,
            self.config.store / "field-data",
            self.mqtt,
            prefix=self.mqtt.config.topic_prefix,
        )
        self.observers.append(collector.observe)
        self.registry.register(FieldDataCollector(collector))
        self.health.add_check(collector.worker_problem)
        return collector

    def _shadow_controller(self) -> ShadowController | None:
        """Shadow evaluation (idle until the server asks), for a device the update agent runs."""
        if self.agent is None or self.mqtt is None:
            return None
        from edge_runtime.shadow import ShadowController

        controller = ShadowController(
            self.config.device_id,
            self.mqtt,
            self.agent.trust,
            self.agent.store,
            self.config.store / "shadow",
            backend=self.config.backend,
            on_disagreement=None if self.field_data is None else self.field_data.shadow_disagreed,
        )
        self.observers.append(controller.observe)
        self.health.add_check(controller.worker_problem)
        return controller

    def _pipeline(self, camera: Camera) -> Pipeline:
        own = self.fleet_cameras.get(camera.id)
        if own is not None:
            # its own identity, figures, health, probation, field data and shadow runs (the
            # box's are not fed frames that its bundle does not classify)
            return Pipeline(
                own.device_id,
                capture=camera.capture,
                slot=camera.slot,
                model=camera.model,
                sinks=camera.sinks,
                metrics=own.metrics,
                health=own.health,
                read_timeout_s=camera.read_timeout_s,
                on_inference_error=own.on_inference_error,
                observers=own.observers,
                camera=camera.id,
            )
        return Pipeline(
            self.config.device_id,
            capture=camera.capture,
            slot=camera.slot,
            model=camera.model,
            sinks=camera.sinks,
            metrics=self.metrics,
            health=self.health,
            read_timeout_s=camera.read_timeout_s,
            on_inference_error=None
            if self.agent is None
            else partial(
                self.agent.record_inference_error, camera=camera.id if self.multi else None
            ),
            observers=self.observers,
            camera=camera.id if self.multi else None,
        )

    def _start(self) -> None:
        if self.mqtt is not None:
            self.mqtt.start()
        for own in self.fleet_cameras.values():
            own.start_link()
        if self.status_server is not None:
            self.status_server.start()
            log.info("metrics and health on %s", self.status_server.url)
        if self.local_service is not None:
            self.local_service.start()
        if self.opcua_server is not None:
            self.opcua_server.start()
        for camera in self.cameras:
            camera.capture.start()
        if self.agent is not None:
            self.agent.start()
        if self.telemetry is not None:
            self.telemetry.start()
        for worker in self._workers():
            worker.start()

    def _workers(self) -> list[FieldCollector | ShadowController | CameraFleetDevice]:
        """Field-data collection and shadow evaluation, where the device has them, and the
        cameras' own fleet identities (update agent, telemetry; their links start earlier)."""
        workers: list[FieldCollector | ShadowController | CameraFleetDevice] = [
            worker for worker in (self.field_data, self.shadow) if worker is not None
        ]
        return workers + list(self.fleet_cameras.values())

    def _stop(self) -> None:
        for worker in self._workers():
            worker.stop()
        if self.telemetry is not None:
            self.telemetry.stop()
        if self.agent is not None:
            self.agent.stop()
        for camera in self.cameras:
            camera.capture.stop(timeout=2.0)
        for queued in self.queued:
            queued.request_close()  # all drain at once; close() below waits for each
        closed: set[int] = set()  # the update agent's and quality's taps are shared by the cameras
        for camera in self.cameras:
            for sink in camera.sinks:
                if id(sink) not in closed:
                    closed.add(id(sink))
                    sink.close()
        if self.opcua_server is not None:
            self.opcua_server.close()
        if self.local_service is not None:
            self.local_service.stop()
        if self.status_server is not None:
            self.status_server.stop()
        if self.mqtt is not None:
            self.mqtt.stop()

    def run(
        self, stop: threading.Event, max_frames: int | None = None, duration_s: float | None = None
    ) -> RunSummary:
        """Start everything, run the loop until a stop condition, stop everything."""
        started = time.monotonic()
        self._start()
        pipelines = [self._pipeline(camera) for camera in self.cameras]
        deadline = None if duration_s is None else started + duration_s
        try:
            if self.multi and self.config.inference == "per-camera":
                stats = PerCameraInference(pipelines).run(stop, max_frames, deadline)
            elif self.multi:
                loop = RoundRobinInference(pipelines, self._wake)
                stats = loop.run(stop, max_frames=max_frames, deadline=deadline)
            else:
                stats = pipelines[0].run(stop, max_frames=max_frames, deadline=deadline)
        finally:
            self._stop()
        counts = [c.stats() for c in self.counted]
        stats.output_errors += sum(c.errors for c in counts)
        classifier = self.model.current
        return RunSummary(
            device_id=self.config.device_id,
            stats=stats,
            frames_captured=sum(c.slot.produced for c in self.cameras),
            frames_dropped=sum(c.slot.dropped for c in self.cameras),
            frames_corrupt=sum(c.capture.corrupt for c in self.cameras),
            reconnects=sum(c.capture.reconnects for c in self.cameras),
            seconds=time.monotonic() - started,
            bundle=None
            if classifier is None
            else f"{classifier.bundle.manifest.name} {classifier.bundle.manifest.version}",
            outputs_dropped=sum(c.dropped for c in counts),
            cameras=len(self.cameras),
        )


def _capture_info(camera: Camera) -> dict[str, object]:
    """A camera's capture figures, for the telemetry of a camera that is its own fleet device."""
    return {
        "source": camera.capture.source.name,
        "captured": camera.slot.produced,
        "dropped": camera.slot.dropped,
        "reconnects": camera.capture.reconnects,
    }
