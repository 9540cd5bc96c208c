"""Drift: how far a device's (or a group's) live predictions moved from its bundle's baseline. Pure.

The baseline is what the bundle's manifest carries (its quality report's
class shares and mean confidence, :class:`~fleet_server.quality_figures.Baseline`).
The live figures come from the telemetry the devices already send: its
``quality`` section holds, for the bundle serving now, running totals (the
predictions, each label's count, the mean confidence, the predictions per
confidence bin since that bundle started). Two snapshots of one device, the
first and the last of a sliding window, give what the device predicted *in
that window*; devices of a group that run the same bundle pool their windows
(:mod:`fleet_server.drift_window`: :func:`window_between`, :func:`pool`).

From a window and a baseline, :func:`measure` gives the divergence figures:

- ``class_divergence``: Jensen-Shannon divergence (base 2, 0..1) between the
  window's class shares and the baseline's, over the baseline's labels (the
  ``uncertain`` answer, which a test set does not have, is reported apart as
  ``uncertain_share``);
- ``psi``: the population stability index over the same shares (smoothed,
  so an empty class is not infinite); the usual reading is under 0.1 stable,
  0.1-0.25 moving, over 0.25 shifted;
- ``confidence_drop``: the baseline's mean confidence minus the window's;
- ``confidence_divergence``: Jensen-Shannon divergence (base 2, 0..1) between
  the window's histogram of top-1 confidence and the baseline's (the bundle's
  quality report carries one since bundles made with it; older ones have
  none, so the figure is None and not judged): a model that stays as sure
  on average but is now often unsure and often certain shows here, not in
  the mean.

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

from edge_runtime.confidence_histogram import confidence_shares
from fleet_server.drift_window import QualityPoint, WindowFigures, pool, read_point, window_between
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
    max_confidence_divergence: float | None = Field(default=0.15, gt=0, le=1)
    """Jensen-Shannon divergence (base 2) of the top-1 confidence histogram from the baseline's."""
    clear_ratio: float = Field(default=0.8, gt=0, le=1)
    """A drifting subject clears once every figure is under this share of its limit."""


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
    confidence_divergence: float | None = None
    confidence_histogram: Sequence[float] | None = None
    """The window's share of predictions per confidence bin."""
    baseline_confidence_histogram: Sequence[float] | None = None

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
            "confidence_divergence": self.confidence_divergence,
            "confidence_histogram": _listed(self.confidence_histogram),
            "baseline_confidence_histogram": _listed(self.baseline_confidence_histogram),
        }


def _listed(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [round(v, 6) for v in values]


def _bins(values: Sequence[float]) -> dict[str, float]:
    return {str(i): v for i, v in enumerate(values)}


def measure(
    window: WindowFigures,
    baseline: Baseline | None,
    confidence_baseline: Sequence[float] | None = None,
) -> DriftFigures:
    """The window's divergence from ``baseline`` (the manifest's figures of the window's bundle)
    and from ``confidence_baseline`` (its quality report's confidence histogram, if any)."""
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
    histogram = confidence_shares(window.confidence_histogram)
    expected_histogram = None if not confidence_baseline else confidence_shares(confidence_baseline)
    confidence_divergence = None
    if (
        histogram is not None
        and expected_histogram is not None
        and len(histogram) == len(expected_histogram)
    ):
        confidence_divergence = js_divergence(_bins(histogram), _bins(expected_histogram))
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
        confidence_divergence=confidence_divergence,
        confidence_histogram=histogram,
        baseline_confidence_histogram=expected_histogram,
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
        (
            "confidence divergence (Jensen-Shannon)",
            figures.confidence_divergence,
            thresholds.max_confidence_divergence,
        ),
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
