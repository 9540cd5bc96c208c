"""A camera that is its own fleet device, inside a multi-camera box's process.

Everything the fleet does is keyed by the device id: assignments, MQTT
topics and the broker's ACL (``PREFIX/devices/%u/#``), the availability
Will (one per connection), the update state (one ``state.json`` per store),
telemetry, quality and drift. A camera whose config has a ``fleet:`` section
therefore gets all of that for itself, in the box's process: its own MQTT
connection with its own credentials and Will, its own update agent and
bundle store, its own active model (an interpreter of its own bundle) and
its own telemetry and quality tracker fed by its frames alone. The cameras
without ``fleet:`` share the box's bundle and identity as before.

The box keeps one ``/metrics`` and ``/healthz``: the camera's predictions
still count in the box's series (and its ``camera`` label), the camera
device's own figures go to the fleet in its telemetry, and the box shows
each camera device's id, bundle and link (``edgefleet_camera_fleet_device_info``,
``edgefleet_camera_fleet_connected``, ``details.fleet_devices``). A camera
device that is unhealthy (no frames, a dead update worker) makes the box
unhealthy, naming it.

It also has its own field-data collector (settings and uploads on its own
topics; samples name its id and the camera, kept in ``<its store>/field-data``)
and its own shadow controller (a shadow wave that includes its id runs the
candidate beside its model on this camera's frames and reports under its
id), both fed by its pipeline alone: the box's collector and shadow run
never see this camera's frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric

from edge_runtime.agent import UpdateAgent
from edge_runtime.camera_fleet_config import camera_store
from edge_runtime.cameras import WakingSlot
from edge_runtime.classifier import Classifier
from edge_runtime.config import CameraConfig, DeviceConfig, MetricsConfig
from edge_runtime.field_data import FieldCollector
from edge_runtime.field_data.metrics import FieldDataCollector
from edge_runtime.health import HealthState
from edge_runtime.metrics import MetricsRegistry, RuntimeMetrics
from edge_runtime.mqtt_link import MqttLink, device_topic
from edge_runtime.pipeline import ActiveModel, FrameObserver
from edge_runtime.probation_cameras import frame_age
from edge_runtime.shadow import ShadowController
from edge_runtime.sources import LatestFrameSlot
from edge_runtime.telemetry import QualityTracker, TelemetryPublisher

__all__ = [
    "CameraDeviceMetrics",
    "CameraFleetDevice",
    "camera_fleet_devices",
    "shared_config",
    "unit_config",
]


def shared_config(config: DeviceConfig) -> DeviceConfig:
    """The box's config as its own update agent sees it: only the cameras that share its bundle."""
    if config.cameras is None or all(c.fleet is None for c in config.cameras):
        return config
    return config.model_copy(update={"cameras": [c for c in config.cameras if c.fleet is None]})


def unit_config(box: DeviceConfig, camera: CameraConfig) -> DeviceConfig:
    """A camera device's config: a single-camera device with the camera's identity, on the box's settings."""
    fleet = camera.fleet
    if fleet is None or box.mqtt is None or box.update is None:
        raise ValueError(f"camera {camera.id} is not its own fleet device")
    username = fleet.username
    if username is None and (box.mqtt.username is not None or fleet.password is not None):
        username = fleet.device_id  # the broker's ACL: the user name is the device id
    mqtt = box.mqtt.model_copy(
        update={
            "username": username,
            "password": fleet.password,
            "tls": fleet.tls if fleet.tls is not None else box.mqtt.tls,
        }
    )
    # one camera, by its id: its predictions carry camera_id, and its agent judges that stream
    return DeviceConfig(
        device_id=fleet.device_id,
        cameras=[camera.model_copy(update={"fleet": None})],
        bundle=fleet.bundle if fleet.bundle is not None else box.bundle,
        store=camera_store(box, camera),
        backend=box.backend,
        threads=box.threads,
        outputs=camera.outputs or box.outputs,
        mqtt=mqtt,
        metrics=MetricsConfig(enabled=False),
        health=box.health,
        update=box.update.model_copy(update={"groups": list(fleet.groups)}),
    )


class CameraDeviceMetrics(RuntimeMetrics):
    """A camera device's own series (for its telemetry), also counted in the box's.

    Its registry is not served on ``/metrics``: the box's is, where the
    camera's predictions add to the totals and to its ``camera`` series.
    """

    def __init__(self, box: RuntimeMetrics) -> None:
        super().__init__(MetricsRegistry())
        self.box = box
        self.own_inference_errors = self.inference_errors
        """This device's count (the pipeline increments :attr:`inference_errors`, the box's)."""
        self.inference_errors = box.inference_errors

    def observe_stages(
        self,
        capture_wait_ms: float,
        preprocess_ms: float,
        invoke_ms: float,
        postprocess_ms: float,
        end_to_end_ms: float,
    ) -> None:
        stages = (capture_wait_ms, preprocess_ms, invoke_ms, postprocess_ms, end_to_end_ms)
        super().observe_stages(*stages)
        self.box.observe_stages(*stages)

    def record_prediction(self, now_monotonic: float, uncertain: bool, staleness_ms: float) -> None:
        super().record_prediction(now_monotonic, uncertain, staleness_ms)
        self.box.record_prediction(now_monotonic, uncertain, staleness_ms)

    def set_counter_totals(
        self,
        *,
        dropped: float | None = None,
        corrupt: float | None = None,
        reconnects: float | None = None,
        camera: str | None = None,
    ) -> None:
        super().set_counter_totals(dropped=dropped, corrupt=corrupt, reconnects=reconnects)
        self.box.set_counter_totals(
            dropped=dropped, corrupt=corrupt, reconnects=reconnects, camera=camera
        )

    def record_camera_prediction(self, camera: str, staleness_ms: float) -> None:
        self.box.record_camera_prediction(camera, staleness_ms)  # a camera series: the box's only


class CameraFleetDevice:
    """One camera's fleet identity in the box's process: MQTT link, update agent, model, telemetry."""

    def __init__(
        self, box: DeviceConfig, camera: CameraConfig, box_metrics: RuntimeMetrics
    ) -> None:
        self.camera = camera.id
        self.box_id = box.device_id
        self.config = unit_config(box, camera)
        self.device_id = self.config.device_id
        settings = box.health
        self.health = HealthState(
            max_frame_age_s=settings.max_frame_age_s,
            max_inference_s=settings.max_inference_s,
            startup_grace_s=settings.startup_grace_s,
        )
        """Fed by the camera's pipeline; judged into the box's ``/healthz`` by :meth:`problem`."""
        self.metrics = CameraDeviceMetrics(box_metrics)
        self.model = ActiveModel()
        self.model.listeners.append(self._on_swap)
        mqtt = self.config.mqtt
        if mqtt is None:  # unit_config always sets it
            raise ValueError(f"camera {camera.id}: a fleet device needs an mqtt section")
        self.mqtt = MqttLink(mqtt, self.device_id)
        self.agent = UpdateAgent(self.config, self.model, self.mqtt)
        self.health.add_check(self.agent.worker_problem)
        self.health.add_check(self.agent.store_warning, fatal=False)
        initial = self.agent.boot_classifier()
        if initial is not None:
            self.model.swap(initial)
        self.quality = QualityTracker()
        self.source_info: Callable[[], Mapping[str, object]] = dict
        """The camera's capture figures for telemetry's ``info`` (set by the device)."""
        self.telemetry = TelemetryPublisher(
            self.mqtt,
            device_topic(mqtt.topic_prefix, self.device_id, "telemetry"),
            device_id=self.device_id,
            metrics=self.metrics,
            quality=self.quality,
            health=self.health,
            info=self._info,
            interval_s=mqtt.telemetry_interval_s,
        )
        self.health.add_check(self.telemetry.worker_problem)
        self.observers: list[FrameObserver] = []
        """Called with this camera's classified frames: its field data and shadow runs."""
        self.field_data = self._field_data()
        self.shadow = self._shadow()

    def _field_data(self) -> FieldCollector:
        """Its field-data collector (off until the server says on for one of its groups)."""
        collector = FieldCollector(
            self.device_id,
            self.config.store / "field-data",
            self.mqtt,
            prefix=self.mqtt.config.topic_prefix,
        )
        self.observers.append(collector.observe)
        self.metrics.registry.register(FieldDataCollector(collector))  # in its telemetry
        self.health.add_check(collector.worker_problem)
        return collector

    def _shadow(self) -> ShadowController:
        """Its shadow controller (idle until a shadow wave names its id)."""
        controller = ShadowController(
            self.device_id,
            self.mqtt,
            self.agent.trust,
            self.agent.store,
            self.config.store / "shadow",
            backend=self.config.backend,
            on_disagreement=self.field_data.shadow_disagreed,
        )
        self.observers.append(controller.observe)
        self.health.add_check(controller.worker_problem)
        return controller

    def _on_swap(self, classifier: Classifier) -> None:
        manifest = classifier.bundle.manifest
        self.metrics.set_active_bundle(manifest.name, manifest.version, classifier.bundle.sha256)
        self.health.set_active_bundle(manifest.name, manifest.version, classifier.bundle.sha256)

    def _info(self) -> dict[str, object]:
        classifier = self.model.current
        return {
            "device_id": self.device_id,
            "camera": self.camera,
            "box": self.box_id,
            "bundle": None if classifier is None else classifier.bundle.id,
            "backend": None if classifier is None else classifier.backend.name,
            **self.source_info(),
        }

    def attach(
        self, slot: LatestFrameSlot, source_info: Callable[[], Mapping[str, object]]
    ) -> None:
        """The camera's slot (its frame age, asked at activation) and capture figures (telemetry)."""
        self.source_info = source_info
        if isinstance(slot, WakingSlot):
            self.agent.watch_camera(self.camera, frame_age(slot))

    def on_inference_error(self, message: str) -> None:
        """An inference on this camera failed: counted as this device's, judged by its probation."""
        self.metrics.own_inference_errors.inc()
        self.agent.record_inference_error(message, camera=self.camera)

    def problem(self) -> str | None:
        """Why this camera device is unhealthy (for the box's ``/healthz``), or None."""
        report = self.health.evaluate()
        if report.healthy:
            return None
        return f"camera {self.camera} (fleet device {self.device_id}): " + "; ".join(report.reasons)

    def details(self) -> dict[str, object]:
        """For the box's ``/healthz``: the camera device's id, bundle, update phase and link."""
        classifier = self.model.current
        return {
            "device_id": self.device_id,
            "bundle": None if classifier is None else classifier.bundle.id,
            "update_phase": self.agent.state.phase.value,
            "connected": self.mqtt.connected.is_set(),
        }

    def start_link(self) -> None:
        self.mqtt.start()

    def start(self) -> None:
        """The update agent, telemetry, field data and shadow runs (after the link and the cameras)."""
        self.agent.start()
        self.telemetry.start()
        self.field_data.start()
        self.shadow.start()

    def stop(self) -> None:
        """Shadow runs, field data, telemetry, the update agent and the link (the loop has ended)."""
        self.shadow.stop()
        self.field_data.stop()
        self.telemetry.stop()
        self.agent.stop()
        self.mqtt.stop()  # its predictions go out inline on the inference thread: none is queued


class CameraFleetCollector:
    """The box's ``/metrics``: each camera device's id and bundle, and whether its link is up."""

    def __init__(self, devices: Iterable[CameraFleetDevice]) -> None:
        self._devices = list(devices)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "edgefleet_camera_fleet_device_info",
            "A camera that is its own fleet device: its device id and the bundle it serves (1).",
            labels=["camera", "device_id", "bundle_name", "bundle_version", "bundle_sha256"],
        )
        connected = GaugeMetricFamily(
            "edgefleet_camera_fleet_connected",
            "1 while a camera device's own MQTT connection is up, else 0.",
            labels=["camera", "device_id"],
        )
        for device in self._devices:
            classifier = device.model.current
            bundle = ("", "", "")
            if classifier is not None:
                manifest = classifier.bundle.manifest
                bundle = (manifest.name, manifest.version, classifier.bundle.sha256)
            info.add_metric([device.camera, device.device_id, *bundle], 1.0)
            connected.add_metric(
                [device.camera, device.device_id], 1.0 if device.mqtt.connected.is_set() else 0.0
            )
        return [info, connected]


def camera_fleet_devices(
    config: DeviceConfig, metrics: RuntimeMetrics, health: HealthState
) -> dict[str, CameraFleetDevice]:
    """Camera id -> its fleet device, for the cameras with ``fleet:`` (shown on the box's endpoints)."""
    devices = {
        camera.id: CameraFleetDevice(config, camera, metrics)
        for camera in config.cameras or []
        if camera.fleet is not None
    }
    if devices:
        for device in devices.values():
            health.add_check(device.problem)
        health.add_detail("fleet_devices", lambda: {c: d.details() for c, d in devices.items()})
        metrics.registry.register(CameraFleetCollector(devices.values()))
    return devices
