"""Two latency reports side by side: per configuration, the change in median with a bootstrap CI.

Pure: it takes two parsed reports and returns rows; the command prints them
and turns a ``slower`` verdict into exit status 3 for CI gates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_runtime.bench.report import BenchReport, ConfigResult
from edge_runtime.bench.stats import (
    DEFAULT_BOOTSTRAP_SEED,
    DEFAULT_RESAMPLES,
    Verdict,
    bootstrap_median_diff,
    verdict,
)

__all__ = ["Comparison", "ComparisonRow", "Metric", "compare_reports"]

Metric = Literal["end_to_end", "invoke"]


@dataclass(frozen=True)
class ComparisonRow:
    """One configuration present in both reports."""

    key: str
    median_a_ms: float
    median_b_ms: float
    change_pct: float
    ci_low_pct: float
    ci_high_pct: float
    verdict: Verdict


@dataclass(frozen=True)
class Comparison:
    """Rows for the configurations both reports hold, and the keys only one of them has."""

    metric: Metric
    threshold_pct: float
    confidence: float
    rows: list[ComparisonRow]
    only_a: list[str]
    only_b: list[str]

    @property
    def regressions(self) -> list[ComparisonRow]:
        """Rows whose verdict is ``slower``."""
        return [row for row in self.rows if row.verdict == "slower"]


def _samples(result: ConfigResult, metric: Metric) -> list[float]:
    return result.samples.end_to_end if metric == "end_to_end" else result.samples.invoke


def compare_reports(
    a: BenchReport,
    b: BenchReport,
    *,
    threshold_pct: float = 5.0,
    metric: Metric = "end_to_end",
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_BOOTSTRAP_SEED,
) -> Comparison:
    """Compare ``b`` against the baseline ``a`` configuration by configuration."""
    by_key_a = {r.key: r for r in a.results}
    by_key_b = {r.key: r for r in b.results}
    rows = []
    for key, ra in by_key_a.items():
        rb = by_key_b.get(key)
        if rb is None:
            continue
        xa, xb = _samples(ra, metric), _samples(rb, metric)
        diff = bootstrap_median_diff(xa, xb, confidence=confidence, resamples=resamples, seed=seed)
        base = float(np.median(xa))
        rows.append(
            ComparisonRow(
                key=key,
                median_a_ms=base,
                median_b_ms=float(np.median(xb)),
                change_pct=100 * diff.estimate / base,
                ci_low_pct=100 * diff.low / base,
                ci_high_pct=100 * diff.high / base,
                verdict=verdict(base, diff, threshold_pct),
            )
        )
    return Comparison(
        metric=metric,
        threshold_pct=threshold_pct,
        confidence=confidence,
        rows=rows,
        only_a=[k for k in by_key_a if k not in by_key_b],
        only_b=[k for k in by_key_b if k not in by_key_a],
    )
