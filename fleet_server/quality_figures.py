"""What a rollout wave's quality gate reads: aggregated figures, the bundle's baseline, thresholds.

Plain frozen values (see :mod:`fleet_server.quality_gate` for the gate itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from edge_runtime.bundle.manifest import ManifestSpec

__all__ = [
    "Baseline",
    "Frozen",
    "GateThresholds",
    "QualityFigures",
    "WaveTelemetry",
]

NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QualityFigures(Frozen):
    """What a set of devices reported while running one bundle, summed over a window.

    ``predictions`` counts classified frames, ``errors`` inference errors;
    ``class_counts`` maps label to predictions of that label (the
    ``uncertain`` answer may be one of them).
    """

    predictions: int = Field(ge=0)
    errors: int = Field(default=0, ge=0)
    latency_p95_ms: NonNegative | None = None
    mean_confidence: Share | None = None
    class_counts: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)

    @property
    def attempts(self) -> int:
        """Inferences tried: predictions plus errors."""
        return self.predictions + self.errors

    @property
    def error_rate(self) -> float | None:
        """Errors per inference attempt; None before any attempt."""
        return self.errors / self.attempts if self.attempts else None

    @classmethod
    def combine(cls, parts: Iterable[QualityFigures]) -> QualityFigures:
        """Several devices' figures as one: counts summed, confidence weighted by predictions.

        The latency p95 of the whole is the highest device p95: a
        conservative figure, and the same rule on both sides of a comparison
        between the same devices.
        """
        items = list(parts)
        predictions = sum(p.predictions for p in items)
        weighted = [
            (p.mean_confidence, p.predictions) for p in items if p.mean_confidence is not None
        ]
        weight = sum(n for _, n in weighted)
        latencies = [p.latency_p95_ms for p in items if p.latency_p95_ms is not None]
        counts: dict[str, int] = {}
        for part in items:
            for label, count in part.class_counts.items():
                counts[label] = counts.get(label, 0) + count
        return cls(
            predictions=predictions,
            errors=sum(p.errors for p in items),
            latency_p95_ms=max(latencies) if latencies else None,
            mean_confidence=sum(c * n for c, n in weighted) / weight if weight else None,
            class_counts=counts,
        )


class Baseline(Frozen):
    """The bundle's own figures: its quality report's confidence and class shares, its latency budget."""

    mean_confidence: Share | None = None
    class_distribution: dict[str, NonNegative] | None = None
    latency_budget_ms: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None

    @classmethod
    def from_manifest(cls, manifest: ManifestSpec) -> Baseline:
        """The baseline a bundle's manifest carries (quality report and compatibility)."""
        quality = manifest.quality
        distribution = None
        if quality is not None and quality.class_distribution is not None:
            distribution = dict(zip(manifest.labels, quality.class_distribution, strict=False))
        return cls(
            mean_confidence=None if quality is None else quality.mean_confidence,
            class_distribution=distribution,
            latency_budget_ms=manifest.compatibility.latency_budget_ms,
        )


class WaveTelemetry(Frozen):
    """A wave's devices on the new bundle, and the same devices on the previous one (if known)."""

    new: QualityFigures
    previous: QualityFigures | None = None


class GateThresholds(Frozen):
    """The limits of one wave's gate; None switches a check off.

    Confidences are on the 0..1 scale, so a drop of 0.05 is 5 points.
    """

    min_samples: int = Field(default=200, ge=1)
    """Predictions (inference attempts for the error rate) needed before a check decides."""
    min_shift_samples: int = Field(default=500, ge=1)
    """Labelled predictions needed before a class-distribution check decides."""
    max_latency_ratio: Annotated[float, Field(gt=0.0)] | None = 1.5
    """New p95 over the previous version's p95 on the same devices."""
    max_budget_ratio: Annotated[float, Field(gt=0.0)] | None = 1.0
    """New p95 over the bundle's latency budget."""
    max_error_rate: Share | None = 0.01
    max_confidence_drop: Share | None = 0.05
    """Previous mean confidence minus the new one."""
    max_baseline_confidence_drop: Share | None = 0.15
    """The quality report's mean confidence minus the new one (field frames differ from test sets)."""
    max_class_shift: Share | None = 0.1
    """Jensen-Shannon divergence (base 2) from the previous version's class shares."""
    max_baseline_class_shift: Share | None = 0.2
    """Jensen-Shannon divergence (base 2) from the quality report's class shares."""
