"""Field-data collection on the wire: the server's settings, a device's samples, the server's acks.

=========================================  ==================  ====  ======
topic (under ``PREFIX/devices/<id>/``)     payload             QoS   retain
=========================================  ==================  ====  ======
``field-data/settings`` (server)           :class:`FieldDataSettings`  1  yes
``field-data/samples`` (device)            a framed sample     1     no
``field-data/acks`` (server)               :class:`FieldAck`   1     no
=========================================  ==================  ====  ======

A sample is one binary payload of at most :data:`MAX_SAMPLE_BYTES`: a 4-byte
big-endian length, that many bytes of :class:`FieldSampleHeader` (UTF-8 JSON,
at most :data:`MAX_HEADER_BYTES`), then the image bytes (JPEG or PNG) whose
sha256 the header names. The device keeps a sample until the server acks its
sha256, and sends it again after a reconnect: the server stores each image
once (content-addressed), so a repeat costs nothing but the bytes.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field

from edge_runtime.errors import MalformedMessageError
from edge_runtime.protocol._wire import (
    PROTOCOL_VERSION,
    DeviceId,
    DeviceReport,
    Sha256,
    Timestamp,
    WireMessage,
)
from edge_runtime.protocol.predictions import ScoredLabel

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_SAMPLE_BYTES",
    "REASONS",
    "FieldAck",
    "FieldDataSettings",
    "FieldSample",
    "FieldSampleHeader",
]

MAX_SAMPLE_BYTES: Final = 256 * 1024
"""The largest sample payload (header and image) a reader takes: one bundle chunk's size."""
MAX_HEADER_BYTES: Final = 4096
"""The largest sample header."""
REASONS: Final = ("low-confidence", "class", "random", "shadow-disagreement")
"""Why a frame was sampled: under the confidence threshold, a chosen class, the random fraction,
a shadow candidate that answered otherwise (``docs/shadow.md``)."""

_Label = Annotated[str, Field(max_length=128)]
_LENGTH = struct.Struct(">I")


class FieldDataSettings(WireMessage):
    """What a device collects (retained on ``field-data/settings``); absent or disabled: nothing.

    A frame is kept when any rule says so: its confidence is under
    ``below_confidence``, its answer is one of ``classes``, it falls in the
    ``random_fraction``, or (``shadow_disagreement``) a candidate running in
    shadow answered it otherwise than the active model. Caps bound how many
    are kept and sent.
    """

    kind_name: ClassVar[str] = "field-data settings"
    max_bytes: ClassVar[int] = 8192

    protocol: Literal[1] = PROTOCOL_VERSION
    enabled: bool = False
    below_confidence: float | None = Field(default=0.5, ge=0.0, le=1.0)
    classes: list[_Label] = Field(default_factory=list, max_length=256)
    random_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow_disagreement: bool = False
    """Keep the frames on which a shadow candidate answered otherwise than the active model."""
    per_minute: int = Field(default=6, ge=0, le=10_000)
    per_day: int = Field(default=500, ge=0, le=1_000_000)
    max_disk_bytes: int = Field(default=64 * 1024 * 1024, ge=0, le=2**40)
    """The local ring's size; the oldest samples go first."""
    upload_bytes_per_s: int = Field(default=64 * 1024, ge=1024, le=2**32)
    jpeg_quality: int = Field(default=90, ge=10, le=100)

    @classmethod
    def parse(cls, payload: object) -> FieldDataSettings:
        """Read a settings payload; :class:`MalformedMessageError` if bad."""
        return cls._read(payload, cls.kind_name)


class FieldAck(WireMessage):
    """The server stored a sample (``field-data/acks``): the device may forget it."""

    kind_name: ClassVar[str] = "field-data ack"
    max_bytes: ClassVar[int] = 1024

    protocol: Literal[1] = PROTOCOL_VERSION
    sha256: Sha256

    @classmethod
    def parse(cls, payload: object) -> FieldAck:
        """Read an ack payload; :class:`MalformedMessageError` if bad."""
        return cls._read(payload, cls.kind_name)


class FieldSampleHeader(DeviceReport):
    """What a sampled frame is: the image's hash and the prediction the device made on it."""

    kind_name: ClassVar[str] = "field-data sample"
    max_bytes: ClassVar[int] = MAX_HEADER_BYTES

    protocol: Literal[1] = PROTOCOL_VERSION
    device_id: DeviceId
    sha256: Sha256
    """Of the image bytes."""
    image_format: Literal["jpeg", "png"]
    captured_at: Timestamp
    reason: Literal["low-confidence", "class", "random", "shadow-disagreement"]
    label: _Label
    """The device's answer (or the bundle's uncertain label)."""
    confidence: float | None
    top_k: list[ScoredLabel] = Field(default_factory=list, max_length=16)
    bundle_sha256: Sha256
    bundle_name: Annotated[str, Field(max_length=64)]
    bundle_version: Annotated[str, Field(max_length=64)]
    camera_id: DeviceId | None = None
    """The camera that took the frame (its id in ``cameras:``) on a multi-camera device; null
    on a single-camera device. Optional: devices from before it send none."""


class FieldSample:
    """A header and its image, framed as one payload (see the module)."""

    def __init__(self, header: FieldSampleHeader, image: bytes) -> None:
        self.header = header
        self.image = image

    def encode(self) -> bytes:
        """The payload bytes."""
        head = self.header.encode()
        return _LENGTH.pack(len(head)) + head + self.image

    @classmethod
    def parse(cls, payload: bytes, device_id: str) -> FieldSample:
        """Read a sample published under ``devices/<device_id>/``; checks sizes and the hash."""
        what = f"field-data sample from {device_id}"
        if len(payload) > MAX_SAMPLE_BYTES:
            raise MalformedMessageError(
                f"{what} is {len(payload)} bytes, over the {MAX_SAMPLE_BYTES}-byte cap"
            )
        if len(payload) < _LENGTH.size:
            raise MalformedMessageError(f"{what} is too short to hold a header")
        (length,) = _LENGTH.unpack_from(payload)
        if length > MAX_HEADER_BYTES or _LENGTH.size + length > len(payload):
            raise MalformedMessageError(f"{what} declares a {length}-byte header, out of bounds")
        header = FieldSampleHeader.parse(
            bytes(payload[_LENGTH.size : _LENGTH.size + length]), device_id
        )
        image = bytes(payload[_LENGTH.size + length :])
        if not image:
            raise MalformedMessageError(f"{what} carries no image")
        if hashlib.sha256(image).hexdigest() != header.sha256:
            raise MalformedMessageError(f"{what}: the image does not match its sha256")
        return cls(header, image)
