"""Pure latency statistics: summaries, bootstrap confidence intervals, regression verdicts.

No I/O and no clock: every function takes plain numbers, so each is tested
with values whose answers are known. Percentiles use linear interpolation
between closest ranks (numpy's default), the method ``benchmark_model`` and
``onnxruntime_perf_test`` users compare against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_BOOTSTRAP_SEED",
    "DEFAULT_RESAMPLES",
    "Interval",
    "LatencySummary",
    "Verdict",
    "bootstrap_median_diff",
    "bootstrap_median_ratio",
    "percentile",
    "single_stream_valid",
    "summarize",
    "verdict",
]

DEFAULT_RESAMPLES = 2000
DEFAULT_BOOTSTRAP_SEED = 20240607

Verdict = Literal["slower", "faster", "same"]


def _array(samples: Sequence[float] | npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("need a non-empty one-dimensional sequence of samples")
    if not np.all(np.isfinite(data)):
        raise ValueError("samples must be finite numbers")
    return data


def percentile(samples: Sequence[float] | npt.NDArray[np.float64], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between closest ranks."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must lie in [0, 100], got {q}")
    return float(np.percentile(_array(samples), q))


@dataclass(frozen=True)
class LatencySummary:
    """Distribution of one latency series, in milliseconds."""

    count: int
    min: float
    mean: float
    std: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float


def summarize(samples: Sequence[float] | npt.NDArray[np.float64]) -> LatencySummary:
    """Count, min, mean, sample standard deviation, p50/p90/p95/p99 and max of ``samples``."""
    data = _array(samples)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(data, [50, 90, 95, 99]))
    return LatencySummary(
        count=int(data.size),
        min=float(data.min()),
        mean=float(data.mean()),
        std=float(data.std(ddof=1)) if data.size > 1 else 0.0,
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        max=float(data.max()),
    )


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the interval."""
        return value < self.low or value > self.high


def _boot_medians(
    data: npt.NDArray[np.float64], resamples: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Medians of ``resamples`` resamples of ``data`` with replacement (in chunks to bound memory)."""
    out = np.empty(resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // data.size)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        picks = rng.integers(0, data.size, size=(stop - start, data.size))
        out[start:stop] = np.median(data[picks], axis=1)
    return out


def _percentile_interval(
    estimate: float, boots: npt.NDArray[np.float64], confidence: float
) -> Interval:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(boots, [tail, 100 - tail])
    return Interval(estimate=estimate, low=float(low), high=float(high), confidence=confidence)


def bootstrap_median_diff(
    a: Sequence[float] | npt.NDArray[np.float64],
    b: Sequence[float] | npt.NDArray[np.float64],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
) -> Interval:
    """``median(b) - median(a)`` with a percentile-bootstrap interval (independent resamples)."""
    xa, xb = _array(a), _array(b)
    rng = np.random.default_rng(seed)
    boots = _boot_medians(xb, resamples, rng) - _boot_medians(xa, resamples, rng)
    return _percentile_interval(float(np.median(xb) - np.median(xa)), boots, confidence)


def bootstrap_median_ratio(
    a: Sequence[float] | npt.NDArray[np.float64],
    b: Sequence[float] | npt.NDArray[np.float64],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
) -> Interval:
    """``median(b) / median(a)`` with a percentile-bootstrap interval (independent resamples)."""
    xa, xb = _array(a), _array(b)
    if np.median(xa) <= 0:
        raise ValueError("the reference median must be positive for a ratio")
    rng = np.random.default_rng(seed)
    boots = _boot_medians(xb, resamples, rng) / np.maximum(
        _boot_medians(xa, resamples, rng), np.finfo(np.float64).tiny
    )
    return _percentile_interval(float(np.median(xb) / np.median(xa)), boots, confidence)


def verdict(baseline_median: float, diff: Interval, threshold_pct: float) -> Verdict:
    """Regression verdict for one configuration.

    ``slower`` when the new median exceeds the baseline by more than
    ``threshold_pct`` percent *and* the interval of the difference lies wholly
    above zero; ``faster`` symmetrically; otherwise ``same`` (within the
    threshold or within noise).
    """
    if baseline_median <= 0 or not math.isfinite(baseline_median):
        raise ValueError(f"baseline median must be a positive number, got {baseline_median}")
    if threshold_pct < 0:
        raise ValueError(f"threshold must be zero or more, got {threshold_pct}")
    change_pct = 100.0 * diff.estimate / baseline_median
    if change_pct > threshold_pct and diff.low > 0:
        return "slower"
    if change_pct < -threshold_pct and diff.high < 0:
        return "faster"
    return "same"


def single_stream_valid(
    queries: int, duration_s: float, min_queries: int, min_duration_s: float
) -> bool:
    """MLPerf single-stream validity: at least ``min_queries`` queries and ``min_duration_s`` seconds."""
    return queries >= min_queries and duration_s >= min_duration_s
