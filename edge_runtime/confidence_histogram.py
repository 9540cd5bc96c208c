"""Histograms of top-1 confidence: one binning for the device, the converter and the server.

A confidence in 0..1 falls in one of :data:`CONFIDENCE_BINS` equal bins
(``[0, 0.1)``, ``[0.1, 0.2)`` ... ``[0.9, 1]``); 1.0 is in the last one, a
value outside 0..1 is clipped into the nearest, and NaN or infinity counts in
none (as for the mean confidence). The device's telemetry sends running
counts per bin (``quality.confidence_histogram``); a bundle's quality report
carries the parity set's shares (``quality.confidence_histogram``), the
baseline drift compares them against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["CONFIDENCE_BINS", "confidence_bin", "confidence_counts", "confidence_shares"]

CONFIDENCE_BINS = 10
"""Equal bins over 0..1."""


def confidence_bin(confidence: float, bins: int = CONFIDENCE_BINS) -> int | None:
    """The bin of ``confidence`` (None when it is not a finite number)."""
    if not math.isfinite(confidence):
        return None
    return min(bins - 1, max(0, int(confidence * bins)))


def confidence_counts(confidences: Iterable[float], bins: int = CONFIDENCE_BINS) -> list[int]:
    """How many of ``confidences`` fall in each bin."""
    counts = [0] * bins
    for confidence in confidences:
        found = confidence_bin(float(confidence), bins)
        if found is not None:
            counts[found] += 1
    return counts


def confidence_shares(counts: Sequence[float]) -> list[float] | None:
    """Each bin's share of the counts; None when they add up to nothing."""
    total = sum(max(0.0, float(c)) for c in counts)
    if total <= 0:
        return None
    return [max(0.0, float(c)) / total for c in counts]
