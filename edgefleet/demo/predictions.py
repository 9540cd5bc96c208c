"""What each camera served, measured from the predictions it wrote (its JSON lines file).

:class:`PredictionLog` follows one camera's file as it grows and keeps the
figures the demo reports: predictions per bundle version, inference
latencies per version, and the longest gap between two consecutive
predictions (capture times) once the camera first served one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["LatencySummary", "PredictionLog"]


@dataclass(frozen=True)
class LatencySummary:
    """Inference latency (preprocess + invoke + postprocess) of one version on one camera."""

    predictions: int
    p50_ms: float
    p95_ms: float
    max_ms: float


@dataclass
class PredictionLog:
    """Follows one camera's predictions file."""

    path: Path
    count: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    first_at: float | None = None
    last_at: float | None = None
    max_gap_s: float = 0.0
    max_gap_at: float | None = None
    version: str | None = None
    _latencies: dict[str, list[float]] = field(default_factory=dict)
    _offset: int = 0
    _partial: bytes = b""

    def poll(self) -> int:
        """Read what was appended since the last call; returns how many predictions it held."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return 0
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        added = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            self._add(record)
            added += 1
        return added

    def _add(self, record: dict[str, object]) -> None:
        at = float(record["captured_at"])  # type: ignore[arg-type]
        version = str(record.get("bundle_version"))
        self.count += 1
        self.by_version[version] = self.by_version.get(version, 0) + 1
        self.version = version
        latency = record.get("inference_ms")
        if isinstance(latency, (int, float)):
            self._latencies.setdefault(version, []).append(float(latency))
        if self.last_at is not None and at - self.last_at > self.max_gap_s:
            self.max_gap_s = at - self.last_at
            self.max_gap_at = at
        if self.first_at is None:
            self.first_at = at
        self.last_at = max(at, self.last_at or at)

    def latency(self) -> dict[str, LatencySummary]:
        """Latency per version, from every prediction read so far."""
        out = {}
        for version, values in sorted(self._latencies.items()):
            p50, p95 = (float(v) for v in np.percentile(values, [50, 95]))
            out[version] = LatencySummary(len(values), p50, p95, float(max(values)))
        return out
