"""The on-the-line settings of a device config: OPC UA towards the PLC and the local classify service.

Parsed as part of :class:`~edge_runtime.config.DeviceConfig` (same rules:
unknown keys refused, errors name the field); kept apart so that reading a
config imports neither ``asyncua`` nor an HTTP server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "VARIABLES",
    "WRITTEN_FIRST",
    "LocalServiceConfig",
    "OpcUaOutputConfig",
    "OpcUaServerConfig",
    "OpcUaWriteConfig",
    "PredictionField",
    "SecurityName",
]

SecurityName = Literal["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"]
PredictionField = Literal[
    "device_id",
    "camera_id",
    "label",
    "confidence",
    "uncertain",
    "captured_at",
    "latency_ms",
    "bundle_name",
    "bundle_version",
    "bundle_sha256",
    "frame_id",
]

VARIABLES: tuple[tuple[str, str, str], ...] = (
    ("Label", "String", "label"),
    ("Confidence", "Double", "confidence"),
    ("Uncertain", "Boolean", "uncertain"),
    ("CaptureTime", "DateTime", "captured_at"),
    ("LatencyMs", "Double", "latency_ms"),
    ("ModelName", "String", "bundle_name"),
    ("ModelVersion", "String", "bundle_version"),
    ("BundleSha256", "String", "bundle_sha256"),
    ("FrameId", "UInt64", "frame_id"),
)
"""(browse name, OPC UA built-in type, prediction field) per camera; written in this order, FrameId last."""

WRITTEN_FIRST: tuple[tuple[str, str, str], ...] = (
    ("DeviceId", "String", "device_id"),
    ("CameraId", "String", "camera_id"),
)
"""Fields a ``write`` section may also send, before :data:`VARIABLES` (the device's own
server names the camera by its object instead); ``camera_id`` is '' on a single-camera device."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpcUaServerConfig(_Strict):
    """The device's own OPC UA server."""

    endpoint: str = Field(
        default="opc.tcp://127.0.0.1:4840/edgefleet/",
        pattern=r"^opc\.tcp://",
        description="where to listen; 0.0.0.0 for every interface",
    )
    namespace: str = Field(default="urn:edgefleet:line", min_length=1)
    application_uri: str = Field(
        default="urn:edgefleet:camera-box",
        min_length=1,
        description="the server's application URI; its certificate must name it (subject alt. name)",
    )
    security: list[SecurityName] = Field(default=["Basic256Sha256_SignAndEncrypt"], min_length=1)
    certificate: Path | None = Field(default=None, description="the server's certificate (DER/PEM)")
    private_key: Path | None = Field(default=None, description="its private key (PEM)")
    trusted_clients: list[Path] | None = Field(
        default=None,
        description="client certificates accepted (pinned by fingerprint); default: any",
    )

    @model_validator(mode="after")
    def _secure_needs_certificate(self) -> OpcUaServerConfig:
        if any(s != "None" for s in self.security) and (
            self.certificate is None or self.private_key is None
        ):
            raise ValueError("security other than None needs certificate and private_key")
        if self.trusted_clients is not None and "None" in self.security:
            raise ValueError(
                "trusted_clients pins client certificates, but security None lets clients in"
                " without one: drop one of them"
            )
        return self


class OpcUaWriteConfig(_Strict):
    """Writes each prediction to a PLC's OPC UA server at the given node ids."""

    url: str = Field(pattern=r"^opc\.tcp://")
    security: SecurityName = "Basic256Sha256_SignAndEncrypt"
    certificate: Path | None = Field(default=None, description="the device's client certificate")
    private_key: Path | None = None
    server_certificate: Path | None = Field(
        default=None, description="the PLC's certificate; default: taken from its endpoints"
    )
    nodes: dict[PredictionField, str] = Field(
        min_length=1,
        description="prediction field -> node id (e.g. frame_id: 'ns=2;s=Sorter.FrameId')",
    )
    timeout_s: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _secure_needs_certificate(self) -> OpcUaWriteConfig:
        if self.security != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError("security other than None needs certificate and private_key")
        return self


class OpcUaOutputConfig(_Strict):
    """OPC UA: the device's own ``server``, ``write`` to a PLC's server, or both."""

    server: OpcUaServerConfig | None = None
    write: OpcUaWriteConfig | None = None

    @model_validator(mode="after")
    def _one_at_least(self) -> OpcUaOutputConfig:
        if self.server is None and self.write is None:
            raise ValueError("opcua needs a server or a write section")
        return self


class LocalServiceConfig(_Strict):
    """``POST /classify`` for other applications on the box: off by default, loopback by default."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9109, ge=0, le=65535)
    max_concurrency: int = Field(
        default=2, ge=1, le=64, description="requests classified at once; more get 503"
    )
    max_image_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    threads: int = Field(default=1, ge=1, le=64, description="interpreter threads per request")
