"""The device's one YAML config, parsed once at start-up into typed, frozen models.

Unknown keys are refused (``extra="forbid"``), and every error names the
field and the line of the YAML file it came from, so a typo stops the
device before anything runs instead of silently changing behaviour.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_runtime.camera_fleet_config import check_camera_fleets
from edge_runtime.errors import ConfigError
from edge_runtime.line_config import LocalServiceConfig, OpcUaOutputConfig
from edge_runtime.plugins import BACKENDS_GROUP, installed_names
from edge_runtime.sources import SourceConfig

__all__ = [
    "CameraConfig",
    "CameraFleetConfig",
    "DeviceConfig",
    "HealthConfig",
    "JsonLinesOutputConfig",
    "MetricsConfig",
    "MqttConfig",
    "MqttOutputConfig",
    "OutputsConfig",
    "TlsConfig",
    "UpdateConfig",
    "load_config",
    "parse_config",
]

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Strict):
    """TLS towards the broker: the CA that signed its certificate, a client certificate for mutual TLS.

    An empty section (``tls: {}``) trusts the system's CAs. ``cert_file`` and
    ``key_file`` are the device's certificate and key (``edgefleet fleet
    provision --client-cert`` writes both); the key may instead sit in the
    certificate file. ``insecure_skip_verify`` checks neither the broker's
    certificate nor its name: for a test bench only, never on a line.
    """

    ca_file: Path | None = Field(
        default=None,
        description="CA certificate(s) that signed the broker's; default: the system's",
    )
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _key_needs_certificate(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the certificate it belongs to)")
        return self


class MqttConfig(_Strict):
    """Broker connection; the device publishes only under ``{topic_prefix}/devices/{device_id}/``."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    topic_prefix: str = Field(default="edgefleet", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    telemetry_interval_s: float = Field(
        default=10.0, gt=0, description="seconds between telemetry snapshots (QoS 0)"
    )


class JsonLinesOutputConfig(_Strict):
    """Predictions as JSON lines: ``-`` for stdout, or a file path (appended)."""

    path: str = "-"


class MqttOutputConfig(_Strict):
    """Predictions on ``{prefix}/devices/{id}/predictions``; ``every_n`` thins a fast stream."""

    qos: Literal[0, 1] = 0
    every_n: int = Field(default=1, ge=1)


class OutputsConfig(_Strict):
    """Where predictions go; ``plugins`` names entry points in the ``edgefleet.outputs`` group.

    Each output that can block (JSON lines, plug-ins, writes to a PLC) runs on
    its own thread behind a queue of ``queue_size`` predictions (newest first:
    when its consumer falls behind, the oldest waiting prediction is dropped
    and counted), so a slow or hung consumer never stalls classification;
    MQTT and the device's OPC UA server never wait and need no thread (the
    OPC UA server's per-camera queue has the same size). ``queue_size: 0``
    calls outputs inline, on the inference thread. A delivery running longer
    than ``stall_s`` is reported as a warning in ``/healthz``.
    """

    jsonl: JsonLinesOutputConfig | None = None
    mqtt: MqttOutputConfig | None = None
    opcua: OpcUaOutputConfig | None = None
    plugins: list[str] = Field(default_factory=list)
    queue_size: int = Field(default=256, ge=0, le=100_000)
    stall_s: float = Field(default=5.0, gt=0)


class MetricsConfig(_Strict):
    """The local Prometheus ``/metrics`` and ``/healthz`` endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)


class HealthConfig(_Strict):
    """When the device reports itself unhealthy, and when the watchdog restarts capture."""

    max_frame_age_s: float = Field(default=5.0, gt=0)
    max_inference_s: float = Field(default=2.0, gt=0)
    startup_grace_s: float = Field(default=15.0, ge=0)


class UpdateConfig(_Strict):
    """Over-the-air model updates: trust, delivery, smoke test and probation settings."""

    trusted_root: Path | None = Field(
        default=None,
        description="root.json provisioned at first boot (later roots arrive over MQTT)",
    )
    groups: list[str] = Field(
        default_factory=list, description="group names this device belongs to"
    )
    probation_s: float = Field(default=30.0, ge=0)
    probation_min_predictions: int = Field(
        default=10,
        ge=0,
        description="predictions (per camera) before probation may end; 0: probation_s alone",
    )
    exclude_dead_cameras: bool = Field(
        default=True,
        description="several cameras: one without a frame for health.max_frame_age_s at "
        "activation is not judged (false: it fails the new bundle)",
    )
    min_confidence_ratio: float = Field(default=0.5, ge=0, le=1)
    smoke_latency_runs: int = Field(default=20, ge=1)
    window_timeout_s: float = Field(default=10.0, gt=0)


class CameraFleetConfig(_Strict):
    """A camera that is its own fleet device: its own id, MQTT credentials, store and bundle.

    The rest of the connection (host, port, prefix, intervals) and the update
    settings are the box's. See ``edge_runtime.camera_fleet``.
    """

    device_id: str = Field(pattern=_DEVICE_ID.pattern, description="the camera's fleet device id")
    username: str | None = Field(
        default=None, description="its MQTT user; default: device_id where the box has a user"
    )
    password: str | None = None
    tls: TlsConfig | None = Field(
        default=None, description="its own TLS section (its client certificate); default: the box's"
    )
    store: Path | None = Field(
        default=None, description="its bundle store; default: <store>/cameras/<camera id>"
    )
    groups: list[str] = Field(default_factory=list, description="its update groups")
    bundle: Path | None = Field(
        default=None, description="bundle to serve at first boot; default: the box's bundle"
    )


class CameraConfig(_Strict):
    """One camera of a multi-camera device: its own id, source and (optionally) outputs.

    Without ``outputs`` the camera uses the device's. The camera's id names
    its predictions (their ``camera_id``; ``device_id`` stays the device's),
    its OPC UA object and its metrics series (label ``camera``). With
    ``fleet`` the camera is a fleet device of its own (its own bundle and
    updates; its predictions' ``device_id`` is ``fleet.device_id``).
    """

    id: str = Field(pattern=_DEVICE_ID.pattern)
    source: SourceConfig
    outputs: OutputsConfig | None = None
    fleet: CameraFleetConfig | None = None

    @model_validator(mode="after")
    def _no_own_opcua_server(self) -> CameraConfig:
        if (
            self.outputs is not None
            and self.outputs.opcua is not None
            and self.outputs.opcua.server
        ):
            raise ValueError(
                "a device runs one OPC UA server for all its cameras: set outputs.opcua.server"
                " at the top level (each camera gets its own object there)"
            )
        return self


class DeviceConfig(_Strict):
    """Everything ``edgefleet device run`` needs: one ``source``, or several ``cameras``."""

    device_id: str = Field(pattern=_DEVICE_ID.pattern)
    source: SourceConfig = Field(  # type: ignore[assignment]  # absent only beside cameras
        default=None, description="the one camera's frame source (absent when cameras is given)"
    )
    cameras: list[CameraConfig] | None = Field(
        default=None, min_length=1, description="several cameras in one process (instead of source)"
    )
    inference: Literal["round-robin", "per-camera"] = Field(
        default="round-robin",
        description="several cameras: one interpreter taking them in turn, or one per camera"
        " on its own thread",
    )
    bundle: Path | None = Field(default=None, description="bundle to serve at start")
    store: Path = Field(default=Path("/var/lib/edgefleet"), description="bundle store folder")
    backend: str = Field(
        default="auto", description="auto, or a backend declared in the edgefleet.backends group"
    )
    threads: int = Field(default=1, ge=1, le=64)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    mqtt: MqttConfig | None = None
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    update: UpdateConfig | None = None
    local_service: LocalServiceConfig = Field(default_factory=LocalServiceConfig)

    @model_validator(mode="after")
    def _source_or_cameras(self) -> DeviceConfig:
        if (self.source is None) == (self.cameras is None):
            raise ValueError("give either source (one camera) or cameras (several), not both")
        if self.cameras is not None:
            ids = [camera.id for camera in self.cameras]
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                raise ValueError(f"camera ids must be unique; repeated: {', '.join(repeated)}")
        return self

    def camera_list(self) -> list[CameraConfig]:
        """The cameras this device serves: ``cameras``, or the one ``source`` as a camera named like the device."""
        if self.cameras is not None:
            return list(self.cameras)
        return [CameraConfig(id=self.device_id, source=self.source)]

    @field_validator("backend")
    @classmethod
    def _declared_backend(cls, value: str) -> str:
        declared = installed_names(BACKENDS_GROUP)
        if value != "auto" and value not in declared:
            raise ValueError(f"unknown backend {value!r}; known: {', '.join(['auto', *declared])}")
        return value

    @model_validator(mode="after")
    def _update_needs_mqtt(self) -> DeviceConfig:
        if self.update is not None and self.mqtt is None:
            raise ValueError("update needs an mqtt section (updates arrive over MQTT)")
        return self

    @model_validator(mode="after")
    def _camera_fleet_devices(self) -> DeviceConfig:
        check_camera_fleets(self)
        return self


def _line_index(node: yaml.Node, path: tuple[Any, ...], index: dict[tuple[Any, ...], int]) -> None:
    """Map every key path in a composed YAML document to its 1-based line."""
    index.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            index[child] = key_node.start_mark.line + 1
            _line_index(value_node, child, index)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            _line_index(item, (*path, position), index)


def _line_for(location: tuple[Any, ...], index: dict[tuple[Any, ...], int]) -> int | None:
    path = tuple(location)
    while path:
        if path in index:
            return index[path]
        path = path[:-1]
    return index.get(())


def parse_config(text: str, source: str = "<config>") -> DeviceConfig:
    """Parse YAML text into a :class:`DeviceConfig`; errors name field and line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping of settings")
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    try:
        return DeviceConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = tuple(error["loc"])
            line = _line_for(location, lines)
            field = ".".join(str(p) for p in location) or "(top level)"
            where = f"line {line}: " if line is not None else ""
            problems.append(f"{where}{field}: {error['msg']}")
        raise ConfigError(f"{source} is invalid:\n  " + "\n  ".join(problems)) from exc


def load_config(path: str | Path) -> DeviceConfig:
    """Read and parse a device config file."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {target}: {exc}") from exc
    return parse_config(text, str(target))
