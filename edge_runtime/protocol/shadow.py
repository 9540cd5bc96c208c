"""Shadow evaluation on the wire: the server's request, a device's figures per window.

=========================================  ==================  ====  ======
topic (under ``PREFIX/devices/<id>/``)     payload             QoS   retain
=========================================  ==================  ====  ======
``shadow/request`` (server)                :class:`ShadowRequest`  1  yes
``shadow/report`` (device)                 :class:`ShadowReport`   1  no
=========================================  ==================  ====  ======

A retained request makes the device fetch and verify the candidate bundle
(it must be release-signed, like any bundle it runs) and classify every Nth
frame with it beside the active model, under a CPU budget, never sending its
answers to any output. An empty retained payload ends the shadow run. Every
``window_s`` the device reports what it saw in that window; the rollout's
shadow wave is judged on the sum of those windows.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from edge_runtime.protocol._wire import (
    PROTOCOL_VERSION,
    DeviceId,
    DeviceReport,
    Sha256,
    Timestamp,
    WireMessage,
)

__all__ = [
    "MAX_SHADOW_CAMERAS",
    "MAX_SHADOW_CAMERA_CLASSES",
    "MAX_SHADOW_CLASSES",
    "ShadowCamera",
    "ShadowReport",
    "ShadowRequest",
]

MAX_SHADOW_CLASSES = 256
"""The most classes a report counts per side."""
MAX_SHADOW_CAMERAS = 64
"""The most cameras a report breaks its figures down by."""

_Label = Annotated[str, Field(max_length=128)]
_Count = Annotated[int, Field(ge=0)]
_Ms = Annotated[float, Field(ge=0.0)]


class ShadowRequest(WireMessage):
    """Run ``bundle_sha256`` in shadow beside the active model (retained on ``shadow/request``)."""

    kind_name: ClassVar[str] = "shadow request"
    max_bytes: ClassVar[int] = 4096

    protocol: Literal[1] = PROTOCOL_VERSION
    bundle_sha256: Sha256
    """The candidate: a release-signed bundle the device fetches and verifies as for an update."""
    every_nth: int = Field(default=5, ge=1, le=10_000)
    """Offer the candidate one classified frame in this many, of each camera."""
    cpu_budget: float = Field(default=0.25, gt=0.0, le=1.0)
    """The share of one core the candidate may use; frames that come sooner are skipped."""
    window_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    """Seconds between two reports."""

    @classmethod
    def parse(cls, payload: object) -> ShadowRequest:
        """Read a request payload; :class:`MalformedMessageError` if bad."""
        return cls._read(payload, cls.kind_name)


MAX_SHADOW_CAMERA_CLASSES = 32
"""The most classes a report counts per side for one camera."""


class ShadowCamera(WireMessage):
    """One camera's share of a window's figures (a multi-camera device).

    The confidences and class counts are optional (devices before them send
    only ``compared`` and ``agreed``; a report that would exceed its size cap
    with them leaves them out)."""

    compared: _Count = 0
    agreed: _Count = 0
    candidate_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Mean top-1 confidence of the candidate on this camera's compared frames."""
    active_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    candidate_classes: dict[_Label, _Count] = Field(
        default_factory=dict, max_length=MAX_SHADOW_CAMERA_CLASSES
    )
    """This camera's compared frames per answer of the candidate."""
    active_classes: dict[_Label, _Count] = Field(
        default_factory=dict, max_length=MAX_SHADOW_CAMERA_CLASSES
    )
    """This camera's compared frames per answer of the active model."""


class ShadowReport(DeviceReport):
    """What the candidate did beside the active model in one window (``shadow/report``).

    ``status`` is ``preparing`` while the candidate is fetched and checked,
    ``running`` while it classifies frames, ``failed`` when it cannot run
    (``reason`` says why: not released, a download or smoke-test failure, a
    model that does not load). Means and shares are over the ``compared``
    frames, on which both models answered.
    """

    kind_name: ClassVar[str] = "shadow report"
    max_bytes: ClassVar[int] = 32 * 1024

    protocol: Literal[1] = PROTOCOL_VERSION
    device_id: DeviceId
    candidate_sha256: Sha256
    active_sha256: Sha256 | None = None
    """The bundle serving the frames (its answers went to the outputs, as always)."""
    status: Literal["preparing", "running", "failed"]
    reason: str = Field(default="", max_length=1024)
    window_start: Timestamp
    window_end: Timestamp
    offered: _Count = 0
    """Frames picked (every Nth) in the window."""
    compared: _Count = 0
    """Picked frames both models answered."""
    agreed: _Count = 0
    """Compared frames on which the candidate gave the active model's answer."""
    skipped_budget: _Count = 0
    """Picked frames left out because the candidate was within its CPU budget's pause."""
    skipped_busy: _Count = 0
    """Picked frames left out because the candidate was still busy with one (never queued)."""
    errors: _Count = 0
    """Frames on which the candidate failed (an exception, NaN or infinite scores)."""
    last_error: str = Field(default="", max_length=512)
    candidate_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Mean top-1 confidence of the candidate on the compared frames."""
    active_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    candidate_classes: dict[_Label, _Count] = Field(
        default_factory=dict, max_length=MAX_SHADOW_CLASSES
    )
    """Compared frames per answer of the candidate."""
    active_classes: dict[_Label, _Count] = Field(
        default_factory=dict, max_length=MAX_SHADOW_CLASSES
    )
    """Compared frames per answer of the active model."""
    candidate_ms: _Ms | None = None
    """The candidate's mean time per frame (preprocess, invoke, postprocess), in its thread."""
    candidate_p95_ms: _Ms | None = None
    active_ms: _Ms | None = None
    """The active model's mean inference time on the compared frames."""
    cameras: dict[Annotated[str, Field(max_length=64)], ShadowCamera] = Field(
        default_factory=dict, max_length=MAX_SHADOW_CAMERAS
    )
    """On a multi-camera device, each camera's compared and agreed frames, both models' mean
    confidences and class counts (empty on one with a single camera)."""
