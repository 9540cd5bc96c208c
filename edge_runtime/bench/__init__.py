"""The latency-benchmark engine, runnable on a device with only ``edgefleet[device]`` installed.

``edgefleet bench latency`` drives :func:`bench_configuration` per bundle x
backend x threads; the statistics (:mod:`edge_runtime.bench.stats`) and the
comparison of two reports (:mod:`edge_runtime.bench.compare`) are pure.
Plots live outside ``edge_runtime`` (``edgefleet.latency_report_html``), so this
package needs no plotting library.
"""

from __future__ import annotations

from edge_runtime.bench.compare import Comparison, ComparisonRow, compare_reports
from edge_runtime.bench.environment import Environment, collect_environment
from edge_runtime.bench.inputs import BenchInputs, ImageInputs, SyntheticInputs, VideoInputs
from edge_runtime.bench.latency import (
    MLPERF_MIN_DURATION_S,
    MLPERF_MIN_QUERIES,
    BenchSettings,
    bench_configuration,
)
from edge_runtime.bench.profile import DeviceProfile, LatencyBudget, load_profile, parse_profile
from edge_runtime.bench.report import BenchReport, ConfigResult, load_report, write_report
from edge_runtime.bench.swap import SwapRun, SwapSummary, bench_swap

__all__ = [
    "MLPERF_MIN_DURATION_S",
    "MLPERF_MIN_QUERIES",
    "BenchInputs",
    "BenchReport",
    "BenchSettings",
    "Comparison",
    "ComparisonRow",
    "ConfigResult",
    "DeviceProfile",
    "Environment",
    "ImageInputs",
    "LatencyBudget",
    "SwapRun",
    "SwapSummary",
    "SyntheticInputs",
    "VideoInputs",
    "bench_configuration",
    "bench_swap",
    "collect_environment",
    "compare_reports",
    "load_profile",
    "load_report",
    "parse_profile",
    "write_report",
]
