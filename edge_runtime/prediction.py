"""The record every output receives for each classified frame."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (top-k as ``[{"label", "score"}]``)."""
        data = asdict(self)
        data["top_k"] = [{"label": label, "score": round(score, 6)} for label, score in self.top_k]
        data["confidence"] = round(self.confidence, 6)
        data["latency_ms"] = round(self.latency_ms, 3)
        data["inference_ms"] = round(self.inference_ms, 3)
        return data

    def to_json(self) -> str:
        """One compact JSON line (no trailing newline)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)
