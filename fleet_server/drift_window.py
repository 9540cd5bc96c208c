"""What a device predicted in a sliding window, from the running totals its telemetry carries. Pure.

The ``quality`` section of a telemetry snapshot holds, for the bundle serving
now, running totals: the predictions, each label's count, the mean
confidence and the predictions per confidence bin
(:mod:`edge_runtime.confidence_histogram`), all since that bundle started.
Two snapshots of one device, the first and the last of a window, give what
it predicted *in that window* (:func:`window_between`); devices of a group
that run the same bundle pool their windows (:func:`pool`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["QualityPoint", "WindowFigures", "pool", "read_point", "window_between"]


@dataclass(frozen=True)
class QualityPoint:
    """The ``quality`` section of one telemetry snapshot: running totals for one bundle."""

    at: float
    bundle: str | None
    predictions: float
    mean_confidence: float | None
    class_counts: Mapping[str, float]
    confidence_histogram: tuple[float, ...] = ()
    """Predictions per confidence bin (empty: the device sends none)."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _histogram(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) > 100:
        return ()
    counts = [_number(v) for v in value]
    if any(c is None or c < 0 for c in counts):
        return ()
    return tuple(c for c in counts if c is not None)


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
        confidence_histogram=_histogram(quality.get("confidence_histogram")),
    )


@dataclass(frozen=True)
class WindowFigures:
    """What one device (or a pool of them) predicted in a window, on one bundle."""

    bundle: str | None
    predictions: float
    class_counts: Mapping[str, float]
    mean_confidence: float | None
    devices: int = 1
    confidence_histogram: tuple[float, ...] = ()
    """Predictions per confidence bin in the window (empty: not reported)."""


def _histogram_between(first: QualityPoint, last: QualityPoint) -> tuple[float, ...]:
    if not first.confidence_histogram or len(first.confidence_histogram) != len(
        last.confidence_histogram
    ):
        return last.confidence_histogram  # the first predates it: the totals since the start
    return tuple(
        max(0.0, b - a)
        for a, b in zip(first.confidence_histogram, last.confidence_histogram, strict=True)
    )


def window_between(first: QualityPoint, last: QualityPoint) -> WindowFigures:
    """What a device predicted between two of its snapshots (``first`` the older).

    The totals restart when the bundle changes or the device restarts; then
    ``last``'s totals alone are the window (everything since the restart).
    """
    shrunk = len(first.confidence_histogram) == len(last.confidence_histogram) and any(
        b < a for a, b in zip(first.confidence_histogram, last.confidence_histogram, strict=True)
    )
    restarted = (
        first is last
        or first.bundle != last.bundle
        or last.predictions < first.predictions
        or any(last.class_counts.get(k, 0.0) < v for k, v in first.class_counts.items())
        or shrunk
    )
    if restarted:
        return WindowFigures(
            last.bundle,
            last.predictions,
            dict(last.class_counts),
            last.mean_confidence,
            confidence_histogram=last.confidence_histogram,
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
    return WindowFigures(
        last.bundle,
        predictions,
        counts,
        confidence,
        confidence_histogram=_histogram_between(first, last),
    )


def _pooled_histogram(windows: Sequence[WindowFigures]) -> tuple[float, ...]:
    """The bins summed over the windows that report them in the most common binning."""
    sizes: dict[int, int] = {}
    for window in windows:
        if window.confidence_histogram:
            size = len(window.confidence_histogram)
            sizes[size] = sizes.get(size, 0) + 1
    if not sizes:
        return ()
    size = max(sizes, key=lambda n: (sizes[n], n))
    total = [0.0] * size
    for window in windows:
        if len(window.confidence_histogram) == size:
            total = [t + c for t, c in zip(total, window.confidence_histogram, strict=True)]
    return tuple(total)


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
        confidence_histogram=_pooled_histogram(windows),
    )
