"""Drift: how far a device's (or a group's) live predictions moved from its bundle's baseline. Pure.

The baseline is what the bundle's manifest carries (its quality report's
class shares and mean confidence, :class:`~fleet_server.quality_figures.Baseline`).
The live figures come from the telemetry the devices already send: its
``quality`` section holds, for the bundle serving now, running totals (the
predictions, each label's count, the mean confidence since that bundle
started). Two snapshots of one device, the first and the last of a sliding
window, give what the device predicted *in that window*
(:func:`window_between`); devices of a group that run the same bundle pool
their windows (:func:`pool`).

From a window and a baseline, :func:`measure` gives the divergence figures:

- ``class_divergence``: Jensen-Shannon divergence (base 2, 0..1) between the
  window's class shares and the baseline's, over the baseline's labels (the
  ``uncertain`` answer, which a test set does not have, is reported apart as
  ``uncertain_share``);
- ``psi``: the population stability index over the same shares (smoothed,
  so an empty class is not infinite); the usual reading is under 0.1 stable,
  0.1-0.25 moving, over 0.25 shifted;
- ``confidence_drop``: the baseline's mean confidence minus the window's.

:func:`judge` applies :class:`DriftThresholds` with hysteresis (an alert is
raised over a limit and cleared only under ``clear_ratio`` of it), and
:func:`next_status` turns a verdict into the subject's new status and the
alert to record, if any.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet_server.quality_figures import Baseline

__all__ = [
    "DriftFigures",
    "DriftStatus",
    "DriftThresholds",
    "DriftVerdict",
    "QualityPoint",
    "Scope",
    "State",
    "WindowFigures",
    "js_divergence",
    "judge",
    "measure",
    "next_status",
    "pool",
    "psi",
    "read_point",
    "shares",
    "window_between",
]

Scope = Literal["device", "group"]
State = Literal["ok", "drifting", "unknown"]

_PSI_FLOOR = 1e-4


class DriftThresholds(BaseModel):
    """When a subject drifts. A limit set to None switches its check off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(default=600.0, gt=0, le=7 * 86400)
    """The sliding window the live figures cover (seconds back from now)."""
    min_predictions: int = Field(default=200, ge=1)
    """Predictions needed in the window before a verdict (fewer: ``unknown``)."""
    max_class_divergence: float | None = Field(default=0.1, gt=0, le=1)
    """Jensen-Shannon divergence (base 2) from the baseline's class shares."""
    max_psi: float | None = Field(default=None, gt=0)
    """Population stability index over the class shares (0.25 is the usual 'shifted')."""
    max_confidence_drop: float | None = Field(default=0.15, gt=0, le=1)
    """The baseline's mean confidence minus the window's."""
    clear_ratio: float = Field(default=0.8, gt=0, le=1)
    """A drifting subject clears once every figure is under this share of its limit."""


@dataclass(frozen=True)
class QualityPoint:
    """The ``quality`` section of one telemetry snapshot: running totals for one bundle."""

    at: float
    bundle: str | None
    predictions: float
    mean_confidence: float | None
    class_counts: Mapping[str, float]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def read_point(snapshot: Mapping[str, Any], at: float) -> QualityPoint | None:
    """The quality totals of a stored telemetry snapshot; None when it has none."""
    quality = snapshot.get("quality")
    if not isinstance(quality, Mapping):
        return None
    bundle = quality.get("bundle")
    predictions = _number(quality.get("predictions"))
    counts_in = quality.get("class_counts")
    counts: dict[str, float] = {}
    if isinstance(counts_in, Mapping):
        for label, value in counts_in.items():
            count = _number(value)
            if count is not None and count >= 0:
                counts[str(label)] = count
    confidence = _number(quality.get("mean_confidence"))
    return QualityPoint(
        at=at,
        bundle=bundle if isinstance(bundle, str) else None,
        predictions=predictions if predictions is not None and predictions >= 0 else 0.0,
        mean_confidence=confidence if confidence is not None and 0 <= confidence <= 1 else None,
        class_counts=counts,
    )


@dataclass(frozen=True)
class WindowFigures:
    """What one device (or a pool of them) predicted in a window, on one bundle."""

    bundle: str | None
    predictions: float
    class_counts: Mapping[str, float]
    mean_confidence: float | None
    devices: int = 1


def window_between(first: QualityPoint, last: QualityPoint) -> WindowFigures:
    """What a device predicted between two of its snapshots (``first`` the older).

    The totals restart when the bundle changes or the device restarts; then
    ``last``'s totals alone are the window (everything since the restart).
    """
    restarted = (
        first is last
        or first.bundle != last.bundle
        or last.predictions < first.predictions
        or any(last.class_counts.get(k, 0.0) < v for k, v in first.class_counts.items())
    )
    if restarted:
        return WindowFigures(
            last.bundle, last.predictions, dict(last.class_counts), last.mean_confidence
        )
    predictions = last.predictions - first.predictions
    counts = {
        label: count - first.class_counts.get(label, 0.0)
        for label, count in last.class_counts.items()
        if count - first.class_counts.get(label, 0.0) > 0
    }
    confidence: float | None = None
    if predictions > 0 and last.mean_confidence is not None:
        if first.mean_confidence is None or first.predictions == 0:
            confidence = last.mean_confidence
        else:
            total = last.mean_confidence * last.predictions
            earlier = first.mean_confidence * first.predictions
            confidence = min(1.0, max(0.0, (total - earlier) / predictions))
    return WindowFigures(last.bundle, predictions, counts, confidence)


def pool(windows: Sequence[WindowFigures]) -> WindowFigures:
    """Several devices' windows on one bundle as one: counts summed, confidence weighted."""
    counts: dict[str, float] = {}
    weighted, weight = 0.0, 0.0
    for window in windows:
        for label, count in window.class_counts.items():
            counts[label] = counts.get(label, 0.0) + count
        if window.mean_confidence is not None and window.predictions > 0:
            weighted += window.mean_confidence * window.predictions
            weight += window.predictions
    bundles = {w.bundle for w in windows}
    return WindowFigures(
        bundle=bundles.pop() if len(bundles) == 1 else None,
        predictions=sum(w.predictions for w in windows),
        class_counts=counts,
        mean_confidence=weighted / weight if weight > 0 else None,
        devices=sum(w.devices for w in windows),
    )


def shares(counts: Mapping[str, float], labels: Sequence[str]) -> dict[str, float] | None:
    """Each of ``labels``' share of their counts together; None when they add up to nothing."""
    total = sum(max(0.0, counts.get(label, 0.0)) for label in labels)
    if total <= 0:
        return None
    return {label: max(0.0, counts.get(label, 0.0)) / total for label in labels}


def _normalised(p: Mapping[str, float], labels: Sequence[str]) -> list[float]:
    values = [max(0.0, p.get(label, 0.0)) for label in labels]
    total = sum(values)
    return [v / total for v in values] if total > 0 else values


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence (base 2, 0 same .. 1 disjoint) between two distributions."""
    labels = sorted({*p, *q})
    a, b = _normalised(p, labels), _normalised(q, labels)
    divergence = 0.0
    for x, y in zip(a, b, strict=True):
        m = (x + y) / 2
        if x > 0:
            divergence += 0.5 * x * math.log2(x / m)
        if y > 0:
            divergence += 0.5 * y * math.log2(y / m)
    return min(1.0, max(0.0, divergence))


def psi(actual: Mapping[str, float], expected: Mapping[str, float]) -> float:
    """Population stability index of ``actual`` against ``expected`` (shares floored at 1e-4)."""
    labels = sorted({*actual, *expected})
    a = [max(v, _PSI_FLOOR) for v in _normalised(actual, labels)]
    e = [max(v, _PSI_FLOOR) for v in _normalised(expected, labels)]
    return sum((x - y) * math.log(x / y) for x, y in zip(a, e, strict=True))


@dataclass(frozen=True)
class DriftFigures:
    """A window against a baseline (None where either side lacks the figure)."""

    bundle: str | None
    devices: int
    predictions: float
    class_divergence: float | None
    psi: float | None
    confidence_drop: float | None
    mean_confidence: float | None
    baseline_mean_confidence: float | None
    uncertain_share: float | None
    distribution: Mapping[str, float] | None
    baseline_distribution: Mapping[str, float] | None
    biggest_shift: tuple[str, float] | None
    """The label whose share moved most, and by how much (signed, live minus baseline)."""

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON values."""
        return {
            "bundle": self.bundle,
            "devices": self.devices,
            "predictions": self.predictions,
            "class_divergence": self.class_divergence,
            "psi": self.psi,
            "confidence_drop": self.confidence_drop,
            "mean_confidence": self.mean_confidence,
            "baseline_mean_confidence": self.baseline_mean_confidence,
            "uncertain_share": self.uncertain_share,
            "distribution": None if self.distribution is None else dict(self.distribution),
            "baseline_distribution": (
                None if self.baseline_distribution is None else dict(self.baseline_distribution)
            ),
            "biggest_shift": None if self.biggest_shift is None else list(self.biggest_shift),
        }


def measure(window: WindowFigures, baseline: Baseline | None) -> DriftFigures:
    """The window's divergence from ``baseline`` (the manifest's figures of the window's bundle)."""
    base = baseline or Baseline()
    expected = base.class_distribution
    live = None
    divergence = stability = None
    shift: tuple[str, float] | None = None
    labels = sorted(expected) if expected else sorted(window.class_counts)
    counted = sum(window.class_counts.values())
    uncertain = counted - sum(window.class_counts.get(label, 0.0) for label in labels)
    if expected:
        live = shares(window.class_counts, labels)
        expected_shares = shares(expected, labels)
        if live is not None and expected_shares is not None:
            divergence = js_divergence(live, expected_shares)
            stability = psi(live, expected_shares)
            label = max(labels, key=lambda k: abs(live[k] - expected_shares[k]))
            shift = (label, live[label] - expected_shares[label])
            expected = expected_shares
    drop = None
    if base.mean_confidence is not None and window.mean_confidence is not None:
        drop = base.mean_confidence - window.mean_confidence
    return DriftFigures(
        bundle=window.bundle,
        devices=window.devices,
        predictions=window.predictions,
        class_divergence=divergence,
        psi=stability,
        confidence_drop=drop,
        mean_confidence=window.mean_confidence,
        baseline_mean_confidence=base.mean_confidence,
        uncertain_share=uncertain / counted if counted > 0 else None,
        distribution=live,
        baseline_distribution=expected,
        biggest_shift=shift,
    )


@dataclass(frozen=True)
class DriftVerdict:
    """``drifting`` (with the limits crossed), ``ok``, or ``unknown`` (too few predictions,
    no baseline)."""

    state: State
    reasons: tuple[str, ...] = ()


def judge(figures: DriftFigures, thresholds: DriftThresholds, drifting: bool) -> DriftVerdict:
    """The verdict on ``figures``; ``drifting`` says whether the subject drifts now (hysteresis)."""
    if figures.predictions < thresholds.min_predictions:
        return DriftVerdict(
            "unknown",
            (
                f"{figures.predictions:.0f} predictions in the window, {thresholds.min_predictions} needed",
            ),
        )
    checks = [
        (
            "class divergence (Jensen-Shannon)",
            figures.class_divergence,
            thresholds.max_class_divergence,
        ),
        ("class PSI", figures.psi, thresholds.max_psi),
        ("confidence drop", figures.confidence_drop, thresholds.max_confidence_drop),
    ]
    judged = [
        (name, value, limit)
        for name, value, limit in checks
        if value is not None and limit is not None
    ]
    if not judged:
        return DriftVerdict("unknown", ("no baseline figure to compare with",))
    scale = thresholds.clear_ratio if drifting else 1.0
    crossed = tuple(
        f"{name} {value:.3f} over {limit * scale:.3f}"
        for name, value, limit in judged
        if value > limit * scale
    )
    return DriftVerdict("drifting" if crossed else "ok", crossed)


@dataclass(frozen=True)
class DriftStatus:
    """Where a subject (a device, or a group: a tag) stands; ``since`` is when it began drifting."""

    scope: Scope
    name: str
    state: State
    since: float | None
    updated_at: float
    bundle: str | None = None
    reasons: tuple[str, ...] = ()
    figures: Mapping[str, Any] = field(default_factory=dict)

    @property
    def drifting(self) -> bool:
        """Whether the subject drifts now."""
        return self.state == "drifting"


def next_status(
    previous: DriftStatus | None,
    scope: Scope,
    name: str,
    *,
    figures: DriftFigures,
    verdict: DriftVerdict,
    now: float,
) -> tuple[DriftStatus, Literal["raised", "cleared"] | None]:
    """The subject's new status, and the alert this change makes (None: nothing new).

    ``unknown`` keeps a drifting subject drifting (too little data is no
    recovery); a new bundle starts over (its baseline is another).
    """
    was = previous is not None and previous.drifting and previous.bundle == figures.bundle
    state: State = verdict.state
    if verdict.state == "unknown" and was:
        state = "drifting"
    since = None
    if state == "drifting":
        since = previous.since if was and previous is not None else now
    alert: Literal["raised", "cleared"] | None = None
    if state == "drifting" and not was:
        alert = "raised"
    elif state == "ok" and previous is not None and previous.drifting:
        alert = "cleared"
    reasons = verdict.reasons
    if verdict.state == "unknown" and was and previous is not None:
        reasons = previous.reasons
    return (
        DriftStatus(scope, name, state, since, now, figures.bundle, reasons, figures.to_dict()),
        alert,
    )
