"""The confidence histogram: made at conversion, carried by telemetry, judged by drift (issue #20)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from converter.parity import compare_scores
from edge_runtime.bundle import DatasetRef, QualityReport
from edge_runtime.confidence_histogram import confidence_bin, confidence_counts
from fleet_server.drift import (
    DriftThresholds,
    QualityPoint,
    WindowFigures,
    judge,
    measure,
    pool,
    read_point,
    window_between,
)
from fleet_server.drift_fleet import FleetDriftInputs, assess
from fleet_server.quality_figures import Baseline

BUNDLE = "b" * 64
SURE = [0.0] * 9 + [1.0]  # a parity set the model was sure of


def test_bins_are_equal_tenths_with_one_in_the_last_and_nonfinite_in_none() -> None:
    assert [confidence_bin(c) for c in (0.0, 0.09, 0.1, 0.55, 0.99, 1.0)] == [0, 0, 1, 5, 9, 9]
    assert confidence_bin(float("nan")) is None and confidence_bin(-0.2) == 0
    assert confidence_counts([0.95, 0.97, 0.15, float("inf")]) == [0, 1, 0, 0, 0, 0, 0, 0, 0, 2]


def test_the_parity_report_carries_the_histogram_and_old_reports_stay_byte_identical() -> None:
    scores = np.array([[0.95, 0.05], [0.08, 0.92], [0.55, 0.45], [0.25, 0.75]], np.float32)
    report = compare_scores(
        scores,
        scores,
        np.array([0, 1, 0, 1]),
        ["glass", "paper"],
        DatasetRef(name="belt", sha256=hashlib.sha256(b"belt").hexdigest(), num_images=4),
    )
    assert report.confidence_histogram == pytest.approx([0, 0, 0, 0, 0, 0.25, 0, 0.25, 0, 0.5])
    dumped = report.model_dump(mode="json")
    assert QualityReport.model_validate(dumped) == report
    # a report without one serialises without the key, as before: older runtimes still read it
    old = report.model_copy(update={"confidence_histogram": None})
    assert "confidence_histogram" not in old.model_dump(mode="json")
    assert QualityReport.model_validate(json.loads(json.dumps(old.model_dump(mode="json")))) == old


def _point(at: float, predictions: float, histogram: tuple[float, ...]) -> QualityPoint:
    return QualityPoint(at, BUNDLE, predictions, 0.9, {"glass": predictions}, histogram)


def test_windows_take_the_histogram_s_difference_and_pools_add_them() -> None:
    snapshot = {
        "quality": {
            "bundle": BUNDLE,
            "predictions": 30,
            "class_counts": {"glass": 30},
            "confidence_histogram": [0, 0, 0, 0, 0, 0, 0, 0, 10, 20],
        }
    }
    first = read_point(snapshot, 0.0)
    assert first is not None and first.confidence_histogram == (0,) * 8 + (10.0, 20.0)
    last = _point(10, 60, (0,) * 5 + (25.0, 0, 0, 10.0, 25.0))
    window = window_between(first, last)
    assert window.confidence_histogram == (0,) * 5 + (25.0, 0, 0, 0, 5.0)
    # totals that went down: a restart, the last snapshot alone counts
    assert window_between(last, first).confidence_histogram == first.confidence_histogram
    # a device that predates the histogram: none; the pool takes those that report one
    assert read_point({"quality": {"predictions": 5}}, 0.0).confidence_histogram == ()  # type: ignore[union-attr]
    old = WindowFigures(BUNDLE, 10, {"glass": 10}, 0.9)
    assert pool([window, old, window]).confidence_histogram == (0,) * 5 + (50.0, 0, 0, 0, 10.0)


def test_a_confidence_histogram_far_from_the_baseline_s_drifts_though_the_mean_holds() -> None:
    # as sure on average (0.75), but now half unsure and half certain
    split = WindowFigures(BUNDLE, 400, {"glass": 400}, 0.75, 1, (0,) * 5 + (200.0, 0, 0, 0, 200.0))
    steady = WindowFigures(BUNDLE, 400, {"glass": 400}, 0.75, 1, (0,) * 7 + (400.0, 0, 0))
    baseline = Baseline(mean_confidence=0.75, class_distribution={"glass": 1.0})
    expected = [0.0] * 7 + [1.0, 0.0, 0.0]
    thresholds = DriftThresholds(max_confidence_divergence=0.2)
    calm = measure(steady, baseline, expected)
    assert calm.confidence_divergence == pytest.approx(0.0)
    assert judge(calm, thresholds, drifting=False).state == "ok"
    moved = measure(split, baseline, expected)
    assert moved.confidence_drop == pytest.approx(0.0) and moved.class_divergence == 0.0
    assert moved.confidence_divergence == pytest.approx(1.0)
    verdict = judge(moved, thresholds, drifting=False)
    assert verdict.state == "drifting"
    assert verdict.reasons == ("confidence divergence (Jensen-Shannon) 1.000 over 0.200",)
    figures = moved.to_dict()
    assert figures["confidence_histogram"] == [0, 0, 0, 0, 0, 0.5, 0, 0, 0, 0.5]
    assert figures["baseline_confidence_histogram"] == expected
    # no baseline histogram (a bundle made before it), or another binning: not judged
    assert measure(split, baseline).confidence_divergence is None
    assert measure(split, baseline, [0.5, 0.5]).confidence_divergence is None
    # switched off
    off = DriftThresholds(max_confidence_divergence=None)
    assert judge(moved, off, drifting=False).state == "ok"


def test_the_fleet_pass_judges_each_bundle_against_its_own_histogram() -> None:
    unsure = WindowFigures(BUNDLE, 300, {"glass": 300}, None, 1, (300.0,) + (0.0,) * 9)
    inputs = FleetDriftInputs(
        {"cam-1": unsure},
        {"line-1": ["cam-1"]},
        {BUNDLE: Baseline(class_distribution={"glass": 1.0})},
        {BUNDLE: "tiny 1.0.0"},
        {BUNDLE: SURE},
    )
    changes = {(c.status.scope, c.status.name): c for c in assess(inputs, DriftThresholds(), {}, 1)}
    group = changes[("group", "line-1")]
    assert group.status.state == "drifting"
    assert group.message is not None and "confidence divergence (Jensen-Shannon)" in group.message
    without = FleetDriftInputs(inputs.windows, inputs.groups, inputs.baselines, {})
    assert {c.status.state for c in assess(without, DriftThresholds(), {}, 1)} == {"ok"}
