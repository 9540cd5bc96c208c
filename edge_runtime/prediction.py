"""The record every output receives for each classified frame."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction:
    """One frame's answer, with where it came from and how long it took."""

    device_id: str
    frame_id: int
    captured_at: float
    """Wall-clock capture time (Unix seconds)."""
    label: str
    confidence: float
    top_k: list[tuple[str, float]]
    uncertain: bool
    latency_ms: float
    """Capture to prediction: how stale the answer is when it leaves the device."""
    inference_ms: float
    """Preprocess + invoke + postprocess."""
    bundle_name: str
    bundle_version: str
    bundle_sha256: str
    camera_id: str | None = None
    """The camera of a multi-camera device (``device_id`` is then the device's); None on a single-camera one."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (top-k as ``[{"label", "score"}]``; non-finite numbers as null)."""
        # built by hand: dataclasses.asdict deep-copies and costs more than the rest of a frame's output
        return {
            "device_id": self.device_id,
            "camera_id": self.camera_id,
            "frame_id": self.frame_id,
            "captured_at": self.captured_at,
            "label": self.label,
            "confidence": _number(self.confidence, 6),
            "top_k": [{"label": label, "score": _number(score, 6)} for label, score in self.top_k],
            "uncertain": self.uncertain,
            "latency_ms": _number(self.latency_ms, 3),
            "inference_ms": _number(self.inference_ms, 3),
            "bundle_name": self.bundle_name,
            "bundle_version": self.bundle_version,
            "bundle_sha256": self.bundle_sha256,
        }

    def to_json(self) -> str:
        """One compact JSON line (no trailing newline)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)


def _number(value: float, digits: int) -> float | None:
    """Rounded, or None for NaN/inf (a broken model must not break the JSON output)."""
    return round(value, digits) if math.isfinite(value) else None
