"""Device telemetry turned into the figures rollouts gate on: pure functions, no I/O.

A device publishes its ``/stats`` content (``edge_runtime.http_status``) on
``devices/<id>/telemetry``. From each snapshot this module reads:

- ``metrics.counters["edgefleet_frames_total"]``, ``..._inference_errors_total``
  and ``..._predictions_uncertain_total`` (running totals since the device
  started; a total that goes down means the device restarted);
- ``metrics.gauges["edgefleet_predictions_per_second"]`` (recent window);
- ``metrics.histograms['edgefleet_stage_latency_seconds{stage="invoke"}']["p95"]``,
  the device's own p95 of model latency in seconds, the figure probation
  watches (kept here, as the quality gate reads it, in milliseconds);
- optionally ``quality.mean_confidence`` (0..1, over recent predictions) and
  ``quality.class_counts`` (label -> running total of predictions of that
  label, ``uncertain`` included when the device counts it).

Anything missing or of the wrong type is skipped, never an error: telemetry
is advisory and devices of several runtime versions report side by side.
:func:`quality_figures` turns the result into the quality gate's input.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from fleet_server.quality_gate import QualityFigures

__all__ = [
    "LATENCY_SERIES",
    "TelemetryFigures",
    "TelemetrySample",
    "TelemetrySummary",
    "combine_figures",
    "device_figures",
    "quality_figures",
    "read_sample",
]

LATENCY_SERIES = 'edgefleet_stage_latency_seconds{stage="invoke"}'
"""The histogram whose p95 is the device's model latency (in seconds, as Prometheus names go)."""

_FRAMES = "edgefleet_frames_total"
_ERRORS = "edgefleet_inference_errors_total"
_UNCERTAIN = "edgefleet_predictions_uncertain_total"
_RATE = "edgefleet_predictions_per_second"


@dataclass(frozen=True)
class TelemetrySample:
    """The figures read from one snapshot, at the time the server received it."""

    at: float
    frames: float | None = None
    errors: float | None = None
    uncertain: float | None = None
    fps: float | None = None
    latency_p95_ms: float | None = None
    mean_confidence: float | None = None
    class_counts: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TelemetryFigures:
    """Aggregated figures over a time window, for one device or a set of them.

    ``predictions``/``errors``/``uncertain`` count what happened in the window
    (or since the device started, when the window holds one snapshot and no
    earlier one exists). Rates are ``None`` when nothing was counted.
    """

    devices: int
    samples: int
    first_at: float | None
    last_at: float | None
    predictions: float
    errors: float
    uncertain: float
    predictions_per_s: float | None
    latency_p95_ms: float | None
    error_rate: float | None
    uncertain_rate: float | None
    mean_confidence: float | None
    class_counts: Mapping[str, float]

    @property
    def class_distribution(self) -> dict[str, float] | None:
        """Each label's share of the counted predictions; None before any."""
        total = sum(self.class_counts.values())
        if total <= 0:
            return None
        return {label: count / total for label, count in sorted(self.class_counts.items())}


@dataclass(frozen=True)
class TelemetrySummary:
    """Figures per device and for all of them together (a wave, a rollout)."""

    since: float | None
    until: float | None
    devices: Mapping[str, TelemetryFigures] = field(default_factory=dict)
    overall: TelemetryFigures | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _section(data: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    for key in keys:
        value = data.get(key)
        if not isinstance(value, Mapping):
            return {}
        data = value
    return data


def _counts(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): n for k, v in value.items() if (n := _number(v)) is not None and n >= 0}


def read_sample(snapshot: Mapping[str, Any], at: float) -> TelemetrySample:
    """The figures of one telemetry snapshot received at ``at``."""
    metrics = _section(snapshot, "metrics")
    counters = _section(metrics, "counters")
    gauges = _section(metrics, "gauges")
    latency = _section(metrics, "histograms", LATENCY_SERIES)
    quality = _section(snapshot, "quality")
    confidence = _number(quality.get("mean_confidence"))
    p95_s = _number(latency.get("p95"))
    return TelemetrySample(
        at=at,
        frames=_number(counters.get(_FRAMES)),
        errors=_number(counters.get(_ERRORS)),
        uncertain=_number(counters.get(_UNCERTAIN)),
        fps=_number(gauges.get(_RATE)),
        latency_p95_ms=None if p95_s is None else p95_s * 1e3,
        mean_confidence=confidence if confidence is not None and 0 <= confidence <= 1 else None,
        class_counts=_counts(quality.get("class_counts")),
    )


def _increase(values: Sequence[float | None]) -> float:
    """How much a running total grew along ``values``; a drop is a restart from zero."""
    known = [v for v in values if v is not None]
    return sum(after - before if after >= before else after for before, after in pairwise(known))


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def device_figures(
    samples: Sequence[TelemetrySample], baseline: TelemetrySample | None = None
) -> TelemetryFigures:
    """One device's figures from its ``samples`` in a window, oldest first.

    ``baseline`` is the last snapshot before the window: counts are measured
    from it. Without one, a single snapshot's totals count (since the device
    started) and several snapshots count from the first. Latency is the
    median of the snapshots' p95; confidence is the snapshots' mean.
    """
    if not samples:
        return _empty(devices=1)
    chain = [baseline, *samples] if baseline is not None else list(samples)
    labels = sorted({label for sample in chain for label in sample.class_counts})
    if len(chain) == 1:
        only = chain[0]
        frames, errors, uncertain = only.frames or 0.0, only.errors or 0.0, only.uncertain or 0.0
        counts = dict(only.class_counts)
        rate = only.fps
    else:
        frames = _increase([s.frames for s in chain])
        errors = _increase([s.errors for s in chain])
        uncertain = _increase([s.uncertain for s in chain])
        counts = {label: _increase([s.class_counts.get(label) for s in chain]) for label in labels}
        span = chain[-1].at - chain[0].at
        rate = frames / span if span > 0 else _mean([s.fps for s in samples])
    latencies = [s.latency_p95_ms for s in samples if s.latency_p95_ms is not None]
    return TelemetryFigures(
        devices=1,
        samples=len(samples),
        first_at=samples[0].at,
        last_at=samples[-1].at,
        predictions=frames,
        errors=errors,
        uncertain=uncertain,
        predictions_per_s=rate,
        latency_p95_ms=statistics.median(latencies) if latencies else None,
        error_rate=_ratio(errors, frames + errors),
        uncertain_rate=_ratio(uncertain, frames),
        mean_confidence=_mean([s.mean_confidence for s in samples]),
        class_counts={label: count for label, count in counts.items() if count > 0},
    )


def combine_figures(per_device: Sequence[TelemetryFigures]) -> TelemetryFigures:
    """Figures for a set of devices (a wave): counts and rates add up, the rest is weighted.

    ``predictions_per_s`` is the set's total throughput; ``latency_p95_ms`` is
    the highest device p95 (the quality gate's conservative rule, see
    :meth:`fleet_server.quality_gate.QualityFigures.combine`); confidence is
    weighted by each device's predictions (equally when none were counted).
    """
    reporting = [f for f in per_device if f.samples > 0]
    if not reporting:
        return _empty(devices=len(per_device))
    predictions = sum(f.predictions for f in reporting)
    errors = sum(f.errors for f in reporting)
    uncertain = sum(f.uncertain for f in reporting)
    rates = [f.predictions_per_s for f in reporting if f.predictions_per_s is not None]
    latencies = [f.latency_p95_ms for f in reporting if f.latency_p95_ms is not None]
    weighted_confidence, confidence_weight = 0.0, 0.0
    for figures in reporting:
        if figures.mean_confidence is not None:
            weight = figures.predictions if predictions > 0 else 1.0
            weighted_confidence += figures.mean_confidence * weight
            confidence_weight += weight
    counts: dict[str, float] = {}
    for figures in reporting:
        for label, count in figures.class_counts.items():
            counts[label] = counts.get(label, 0.0) + count
    return TelemetryFigures(
        devices=len(per_device),
        samples=sum(f.samples for f in reporting),
        first_at=min(f.first_at for f in reporting if f.first_at is not None),
        last_at=max(f.last_at for f in reporting if f.last_at is not None),
        predictions=predictions,
        errors=errors,
        uncertain=uncertain,
        predictions_per_s=sum(rates) if rates else None,
        latency_p95_ms=max(latencies) if latencies else None,
        error_rate=_ratio(errors, predictions + errors),
        uncertain_rate=_ratio(uncertain, predictions),
        mean_confidence=(
            weighted_confidence / confidence_weight if confidence_weight > 0 else None
        ),
        class_counts=dict(sorted(counts.items())),
    )


def quality_figures(figures: TelemetryFigures) -> QualityFigures:
    """The quality gate's input for these figures (counts rounded to whole predictions)."""
    return QualityFigures(
        predictions=round(figures.predictions),
        errors=round(figures.errors),
        latency_p95_ms=figures.latency_p95_ms,
        mean_confidence=figures.mean_confidence,
        class_counts={label: round(count) for label, count in figures.class_counts.items()},
    )


def _empty(devices: int) -> TelemetryFigures:
    return TelemetryFigures(
        devices=devices,
        samples=0,
        first_at=None,
        last_at=None,
        predictions=0.0,
        errors=0.0,
        uncertain=0.0,
        predictions_per_s=None,
        latency_p95_ms=None,
        error_rate=None,
        uncertain_rate=None,
        mean_confidence=None,
        class_counts={},
    )
