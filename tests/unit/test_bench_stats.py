"""The bench's pure statistics, profiles and comparison, checked against values known by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edge_runtime.bench import BenchReport, BenchSettings, compare_reports, parse_profile
from edge_runtime.bench.stats import (
    Interval,
    bootstrap_median_diff,
    bootstrap_median_ratio,
    percentile,
    single_stream_valid,
    summarize,
    verdict,
)
from edge_runtime.errors import ConfigError

# --- percentiles and summaries ---------------------------------------------------------------


def test_percentile_interpolates_between_closest_ranks() -> None:
    data = [4.0, 1.0, 3.0, 2.0]
    assert percentile(data, 50) == 2.5
    assert percentile(data, 90) == pytest.approx(3.7)
    assert percentile(data, 0) == 1.0
    assert percentile(data, 100) == 4.0


def test_summary_of_one_to_a_hundred() -> None:
    s = summarize(np.arange(1, 101, dtype=float))
    assert (s.count, s.min, s.max, s.mean) == (100, 1.0, 100.0, 50.5)
    assert s.p50 == pytest.approx(50.5)
    assert s.p90 == pytest.approx(90.1)
    assert s.p95 == pytest.approx(95.05)
    assert s.p99 == pytest.approx(99.01)
    assert s.std == pytest.approx(math.sqrt(sum((x - 50.5) ** 2 for x in range(1, 101)) / 99))


def test_summary_of_one_sample_has_zero_spread() -> None:
    s = summarize([7.0])
    assert (s.std, s.p50, s.p99) == (0.0, 7.0, 7.0)


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [1.0, float("inf")], [[1.0, 2.0]]])
def test_summary_refuses_empty_or_non_finite_samples(bad: Any) -> None:
    with pytest.raises(ValueError, match="samples"):
        summarize(bad)


def test_percentile_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0, 2.0], 101)


# --- bootstrap --------------------------------------------------------------------------------


def _noisy(center: float, n: int, seed: int) -> np.ndarray:
    return center + np.random.default_rng(seed).exponential(0.5, n)


def test_bootstrap_finds_a_real_shift_and_its_size() -> None:
    a, b = _noisy(10.0, 300, 1), _noisy(12.0, 300, 2)
    diff = bootstrap_median_diff(a, b)
    assert diff.estimate == pytest.approx(float(np.median(b) - np.median(a)))
    assert 1.7 < diff.low < diff.estimate < diff.high < 2.3
    assert diff.excludes(0.0)


def test_bootstrap_of_the_same_distribution_straddles_zero() -> None:
    diff = bootstrap_median_diff(_noisy(10.0, 300, 1), _noisy(10.0, 300, 2))
    assert diff.low < 0 < diff.high


def test_bootstrap_is_reproducible_from_its_seed() -> None:
    a, b = _noisy(10.0, 50, 1), _noisy(10.5, 50, 2)
    assert bootstrap_median_diff(a, b, seed=3) == bootstrap_median_diff(a, b, seed=3)
    assert bootstrap_median_diff(a, b, seed=3) != bootstrap_median_diff(a, b, seed=4)


def test_wider_confidence_gives_a_wider_interval() -> None:
    a, b = _noisy(10.0, 80, 1), _noisy(10.3, 80, 2)
    narrow = bootstrap_median_diff(a, b, confidence=0.8)
    wide = bootstrap_median_diff(a, b, confidence=0.99)
    assert wide.low < narrow.low and wide.high > narrow.high


def test_bootstrap_ratio_of_doubled_samples_is_two() -> None:
    a = _noisy(5.0, 200, 1)
    ratio = bootstrap_median_ratio(a, 2 * a)
    assert ratio.estimate == pytest.approx(2.0)
    assert ratio.low <= 2.0 <= ratio.high


# --- verdicts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimate", "low", "high", "expected"),
    [
        (1.0, 0.5, 1.5, "slower"),  # +10% beyond a 5% threshold, CI above zero
        (1.0, -0.1, 2.0, "same"),  # +10% but the CI includes zero: noise
        (0.3, 0.1, 0.5, "same"),  # a real but small change, within the threshold
        (-1.0, -1.5, -0.5, "faster"),
        (-1.0, -1.5, 0.2, "same"),
    ],
)
def test_verdict_needs_both_threshold_and_a_ci_clear_of_zero(
    estimate: float, low: float, high: float, expected: str
) -> None:
    assert verdict(10.0, Interval(estimate, low, high, 0.95), threshold_pct=5.0) == expected


def test_verdict_refuses_a_non_positive_baseline() -> None:
    with pytest.raises(ValueError, match="baseline"):
        verdict(0.0, Interval(1.0, 0.5, 1.5, 0.95), 5.0)


# --- single stream ----------------------------------------------------------------------------


def test_single_stream_validity_needs_both_minimums() -> None:
    assert single_stream_valid(1024, 600.0, 1024, 600.0)
    assert not single_stream_valid(1023, 900.0, 1024, 600.0)
    assert not single_stream_valid(5000, 599.9, 1024, 600.0)


def test_single_stream_settings_run_until_both_minimums() -> None:
    settings = BenchSettings(single_stream=True, min_queries=100, min_duration_s=2.0)
    assert not settings.done(100, 1.9)
    assert not settings.done(99, 5.0)
    assert settings.done(100, 2.0)
    capped = BenchSettings(single_stream=True, runs=10, min_queries=100, min_duration_s=2.0)
    assert capped.done(10, 0.1)  # a cap ends the run early; the result is then invalid


def test_plain_settings_default_to_two_hundred_frames() -> None:
    assert not BenchSettings().done(199, 100.0)
    assert BenchSettings().done(200, 0.0)
    assert BenchSettings(seconds=1.0).done(3, 1.0)


# --- profiles ---------------------------------------------------------------------------------

PROFILE = """
name: test-box
cores: 4
threads: [2, 1]
backends: [litert]
budgets:
  - family: mobilenetv2
    match: ["*mnv2*"]
    input_size: 224
    p95_ms: {fp32: 40, int8: 20}
"""


def test_profile_budget_matches_family_size_and_precision() -> None:
    profile = parse_profile(PROFILE)
    assert profile.threads == [2, 1]
    assert profile.budget_for("trashnet-MNV2", "int8", 224) == 20.0
    assert profile.budget_for("trashnet-mnv2", "fp32") == 40.0
    assert profile.budget_for("trashnet-mnv2", "int8", 160) is None
    assert profile.budget_for("trashnet-mnv2", "fp16", 224) is None
    assert profile.budget_for("resnet50", "int8", 224) is None


def test_profile_refuses_unknown_fields_and_names_them() -> None:
    with pytest.raises(ConfigError, match="threadz"):
        parse_profile(PROFILE + "threadz: 3\n")
    with pytest.raises(ConfigError, match=r"budgets\.0\.p95_ms"):
        parse_profile(PROFILE.replace("int8: 20", "int4: 20"))


def test_the_shipped_profiles_parse() -> None:
    from pathlib import Path

    from edge_runtime.bench import load_profile

    folder = Path(__file__).resolve().parents[2] / "devices" / "profiles"
    names = {load_profile(p).name for p in folder.glob("*.yaml")}
    assert names == {"raspberry-pi-4", "jetson-orin-nano-cpu", "x86-gateway"}


# --- comparison of two reports ----------------------------------------------------------------


def _summary(data: list[float]) -> dict[str, Any]:
    return summarize(data).__dict__


def _report(samples: dict[str, list[float]]) -> BenchReport:
    results = []
    for precision, e2e in samples.items():
        s = _summary(e2e)
        results.append(
            {
                "bundle": "m.efb",
                "bundle_name": "m",
                "bundle_version": "1",
                "bundle_sha256": "0" * 64,
                "format": "onnx",
                "precision": precision,
                "input_size": "32x32",
                "backend": "onnxruntime",
                "threads": 1,
                "xnnpack": None,
                "load_ms": 1.0,
                "init_ms": 1.0,
                "first_inference_ms": 1.0,
                "warmup": 0,
                "runs": len(e2e),
                "duration_s": 1.0,
                "stages": {
                    "decode": None,
                    "preprocess": s,
                    "invoke": s,
                    "postprocess": s,
                    "end_to_end": s,
                },
                "bare": {
                    "bare_invoke": s,
                    "invoke_ratio": 1.0,
                    "invoke_ratio_low": 1.0,
                    "invoke_ratio_high": 1.0,
                    "end_to_end_ratio": 1.0,
                    "tolerance": 0.05,
                    "matches_bare": True,
                },
                "throughput_fps": 1.0,
                "cpu_percent": 100.0,
                "peak_rss_mb": None,
                "accuracy": None,
                "accuracy_images": 0,
                "budget_p95_ms": None,
                "budget_pass": None,
                "single_stream": None,
                "samples": {"end_to_end": e2e, "invoke": e2e, "bare_invoke": e2e},
            }
        )
    return BenchReport.model_validate(
        {
            "schema": "edgefleet.bench.latency/1",
            "created_at": "now",
            "inputs": "test",
            "profile": None,
            "settings": {},
            "environment": {
                "cpu_model": "x",
                "logical_cores": 1,
                "usable_cores": 1,
                "machine": "x",
                "system": "x",
                "python": "3",
                "libraries": {},
            },
            "results": results,
        }
    )


def test_compare_flags_only_the_slowed_configuration() -> None:
    base = list(_noisy(10.0, 200, 1))
    a = _report({"fp32": base, "int8": list(_noisy(5.0, 200, 2))})
    b = _report({"fp32": [x * 1.3 for x in base], "int8": list(_noisy(5.0, 200, 3)), "fp16": [1.0]})
    comparison = compare_reports(a, b, threshold_pct=5.0)
    verdicts = {row.key.split()[2]: row.verdict for row in comparison.rows}
    assert verdicts == {"fp32": "slower", "int8": "same"}
    assert [r.key for r in comparison.regressions] == ["m onnx fp32 onnxruntime x1"]
    assert comparison.only_b == ["m onnx fp16 onnxruntime x1"]
    fp32 = comparison.rows[0]
    assert fp32.change_pct == pytest.approx(30.0, abs=3.0)
    assert 0 < fp32.ci_low_pct < fp32.change_pct < fp32.ci_high_pct


def test_compare_of_a_report_with_itself_finds_nothing() -> None:
    a = _report({"fp32": list(_noisy(10.0, 100, 1))})
    comparison = compare_reports(a, a, threshold_pct=0.0)
    assert [row.verdict for row in comparison.rows] == ["same"]
    assert comparison.rows[0].change_pct == 0.0
