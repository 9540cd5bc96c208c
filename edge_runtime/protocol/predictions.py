"""The prediction message, as a reader (a sorter, a dashboard) parses it.

The device writes predictions on its hot path with
:meth:`edge_runtime.prediction.Prediction.to_json` (built by hand: one frame's
output must cost microseconds); :class:`PredictionReport` is the same object
typed for readers and for the published schema. A test keeps the two equal.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from edge_runtime.protocol._wire import DeviceId, DeviceReport, Sha256, Timestamp, WireMessage

__all__ = ["PredictionReport", "ScoredLabel"]

_Text = Annotated[str, Field(max_length=128)]


class ScoredLabel(WireMessage):
    """One of the top-k answers."""

    label: _Text
    score: float | None
    """The model's score for the label; null when it was not a finite number."""


class PredictionReport(DeviceReport):
    """One classified frame on ``PREFIX/devices/<id>/predictions`` (and in the JSON-lines output)."""

    kind_name: ClassVar[str] = "prediction"

    device_id: DeviceId
    """The device (the box), as in the topic."""
    camera_id: DeviceId | None = None
    """The camera of a multi-camera device; null on a single-camera device."""
    frame_id: int = Field(ge=0)
    captured_at: Timestamp
    """Wall-clock capture time (Unix seconds)."""
    label: _Text
    """The answer, or the bundle's uncertain label."""
    confidence: float | None
    """The answer's score; null when it was not a finite number."""
    top_k: list[ScoredLabel] = Field(max_length=1024)
    uncertain: bool
    """Whether the confidence was under the bundle's threshold."""
    latency_ms: float | None
    """Capture to prediction: how stale the answer is when it leaves the device."""
    inference_ms: float | None
    """Preprocess, invoke and postprocess."""
    bundle_name: Annotated[str, Field(max_length=64)]
    bundle_version: Annotated[str, Field(max_length=64)]
    bundle_sha256: Sha256
