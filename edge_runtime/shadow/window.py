"""One shadow window's figures: plain counters in, a :class:`ShadowReport` out (no I/O, no clock)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edge_runtime.protocol._wire import clip
from edge_runtime.protocol.shadow import (
    MAX_SHADOW_CAMERA_CLASSES,
    MAX_SHADOW_CAMERAS,
    MAX_SHADOW_CLASSES,
    ShadowCamera,
    ShadowReport,
)

__all__ = ["ShadowWindow"]

_LATENCIES_KEPT = 2048
"""Latency samples kept per window for the p95 (a window of more frames keeps the first ones)."""


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None


def _unit(value: float | None) -> float | None:
    """A confidence mean as the report takes it: finite, within [0, 1]."""
    if value is None or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, value))


@dataclass
class ShadowWindow:
    """What the candidate did beside the active model since ``start`` (Unix seconds)."""

    start: float
    offered: int = 0
    compared: int = 0
    agreed: int = 0
    skipped_budget: int = 0
    skipped_busy: int = 0
    errors: int = 0
    last_error: str = ""
    candidate_confidence_sum: float = 0.0
    active_confidence_sum: float = 0.0
    candidate_classes: dict[str, int] = field(default_factory=dict)
    active_classes: dict[str, int] = field(default_factory=dict)
    candidate_ms: list[float] = field(default_factory=list)
    candidate_ms_sum: float = 0.0
    active_ms_sum: float = 0.0
    cameras: dict[str, _Camera] = field(default_factory=dict)
    """Camera id -> its figures (multi-camera devices only)."""

    def compare(
        self,
        *,
        active_label: str,
        active_confidence: float,
        active_ms: float,
        candidate_label: str,
        candidate_confidence: float,
        candidate_ms: float,
        camera: str | None = None,
    ) -> bool:
        """Count one frame both models answered; whether they agreed. A non-finite candidate
        confidence counts as an error, not a comparison."""
        if not math.isfinite(candidate_confidence):
            self.error(f"the candidate answered a non-finite score ({candidate_confidence})")
            return False
        agreed = candidate_label == active_label
        self.compared += 1
        self.agreed += agreed
        self.candidate_confidence_sum += candidate_confidence
        self.active_confidence_sum += active_confidence if math.isfinite(active_confidence) else 0
        _count(self.candidate_classes, candidate_label)
        _count(self.active_classes, active_label)
        self.candidate_ms_sum += candidate_ms
        self.active_ms_sum += active_ms
        if len(self.candidate_ms) < _LATENCIES_KEPT:
            self.candidate_ms.append(candidate_ms)
        key = None if camera is None else camera[:64]
        if key is not None and (key in self.cameras or len(self.cameras) < MAX_SHADOW_CAMERAS):
            own = self.cameras.setdefault(key, _Camera())
            own.compared += 1
            own.agreed += agreed
            own.candidate_confidence_sum += candidate_confidence
            own.active_confidence_sum += (
                active_confidence if math.isfinite(active_confidence) else 0
            )
            _count(own.candidate_classes, candidate_label, MAX_SHADOW_CAMERA_CLASSES)
            _count(own.active_classes, active_label, MAX_SHADOW_CAMERA_CLASSES)
        return agreed

    def error(self, message: str) -> None:
        """The candidate failed on a frame."""
        self.errors += 1
        self.last_error = clip(message, 512)

    def p95_ms(self) -> float | None:
        """The candidate's 95th percentile time per frame (nearest rank)."""
        if not self.candidate_ms:
            return None
        ordered = sorted(self.candidate_ms)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]

    def report(
        self,
        device_id: str,
        candidate: str,
        active: str | None,
        end: float,
        *,
        status: str = "running",
        reason: str = "",
    ) -> ShadowReport:
        """The protocol's report of this window, ending at ``end`` (without the cameras'
        class counts and confidences when they would put it over its size cap)."""
        report = ShadowReport(
            device_id=device_id,
            candidate_sha256=candidate,
            active_sha256=active,
            status=status,  # type: ignore[arg-type]  # one of the three, said by the caller
            reason=clip(reason, 1024),
            window_start=self.start,
            window_end=max(end, self.start),
            offered=self.offered,
            compared=self.compared,
            agreed=self.agreed,
            skipped_budget=self.skipped_budget,
            skipped_busy=self.skipped_busy,
            errors=self.errors,
            last_error=self.last_error,
            candidate_confidence=_unit(_mean(self.candidate_confidence_sum, self.compared)),
            active_confidence=_unit(_mean(self.active_confidence_sum, self.compared)),
            candidate_classes=dict(self.candidate_classes),
            active_classes=dict(self.active_classes),
            candidate_ms=_mean(self.candidate_ms_sum, self.compared),
            candidate_p95_ms=self.p95_ms(),
            active_ms=_mean(self.active_ms_sum, self.compared),
            cameras={camera: own.figures() for camera, own in self.cameras.items()},
        )
        if len(report.encode()) > ShadowReport.max_bytes:
            report = report.model_copy(
                update={
                    "cameras": {
                        camera: ShadowCamera(compared=own.compared, agreed=own.agreed)
                        for camera, own in self.cameras.items()
                    }
                }
            )
        return report


@dataclass
class _Camera:
    """One camera's share of the window."""

    compared: int = 0
    agreed: int = 0
    candidate_confidence_sum: float = 0.0
    active_confidence_sum: float = 0.0
    candidate_classes: dict[str, int] = field(default_factory=dict)
    active_classes: dict[str, int] = field(default_factory=dict)

    def figures(self) -> ShadowCamera:
        return ShadowCamera(
            compared=self.compared,
            agreed=self.agreed,
            candidate_confidence=_unit(_mean(self.candidate_confidence_sum, self.compared)),
            active_confidence=_unit(_mean(self.active_confidence_sum, self.compared)),
            candidate_classes=dict(self.candidate_classes),
            active_classes=dict(self.active_classes),
        )


def _count(counts: dict[str, int], label: str, most: int = MAX_SHADOW_CLASSES) -> None:
    label = label[:128]
    if label in counts or len(counts) < most:
        counts[label] = counts.get(label, 0) + 1
