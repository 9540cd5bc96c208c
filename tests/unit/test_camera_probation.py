"""CameraProbation: a multi-camera device's new bundle is judged on each camera's stream.

Pure: predictions and times in, verdicts out. A single-camera device's
probation must say exactly what a plain ProbationMonitor says.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edge_runtime.prediction import Prediction
from edge_runtime.update import CameraProbation, ProbationMonitor
from edgefleet.testing import sample_prediction

T0 = 1_800_000_000.0
CAMERAS = ["cam-1", "cam-2", "cam-3"]


def monitor(baseline: float | None = None) -> ProbationMonitor:
    return ProbationMonitor(
        T0,
        window_s=10.0,
        min_predictions=5,
        baseline_confidence=baseline,
        latency_budget_ms=20.0,
        min_samples=5,
    )


def cameras(silence_s: float | None = 3.0, **baselines: float) -> CameraProbation:
    return CameraProbation(
        {c: monitor(baselines.get(c.replace("-", "_"))) for c in CAMERAS}, silence_s=silence_s
    )


def seen(camera: str | None, at: float, **fields: Any) -> Prediction:
    return dataclasses.replace(
        sample_prediction(inference_ms=5.0, confidence=0.9),
        camera_id=camera,
        captured_at=at,
        **fields,
    )


def feed(probation: CameraProbation, until: float, **per_camera: dict[str, Any]) -> None:
    """Each camera one prediction a second from T0 + 1 to ``until``, with its own fields."""
    at = T0 + 1
    while at <= until:
        for camera in CAMERAS:
            probation.record(seen(camera, at, **per_camera.get(camera.replace("-", "_"), {})))
        at += 1


def test_a_single_camera_probation_is_its_monitor_word_for_word() -> None:
    plain, single = monitor(baseline=0.9), CameraProbation({None: monitor(baseline=0.9)})
    for k in range(1, 9):
        prediction = seen(None, T0 + k, inference_ms=5.0 + 5 * k)  # drifts over the budget
        plain.record(prediction)
        single.record(prediction)
        assert single.verdict(T0 + k) == plain.verdict(T0 + k)
    failed = single.verdict(T0 + 9)
    assert failed is not None and not failed.passed and failed.reason.startswith("latency p95")
    assert "camera" not in failed.reason

    plain, single = monitor(), CameraProbation({None: monitor()})
    for k in range(1, 12):
        plain.record(seen(None, T0 + k))
        single.record(seen(None, T0 + k))
    assert single.verdict(T0 + 30) == plain.verdict(T0 + 30)  # passed, same words
    assert plain.verdict(T0 + 30) is not None

    plain, single = monitor(), CameraProbation({None: monitor()})
    plain.record_error("boom")
    single.record_error("boom")
    assert single.verdict(T0) == plain.verdict(T0)


def test_latency_over_budget_on_one_camera_fails_naming_it() -> None:
    probation = cameras()
    feed(probation, T0 + 6, cam_3={"inference_ms": 45.0})
    verdict = probation.verdict(T0 + 6)
    assert verdict is not None and not verdict.passed
    assert verdict.reason.startswith("camera cam-3: latency p95 45.00 ms is over the budget")
    assert probation.verdict(T0 + 60) == verdict  # final


def test_an_inference_error_on_one_camera_fails_naming_it() -> None:
    probation = cameras()
    feed(probation, T0 + 2)
    assert probation.verdict(T0 + 2) is None
    probation.record_error("output tensor has NaN", "cam-2")
    verdict = probation.verdict(T0 + 2)
    assert verdict is not None and not verdict.passed
    assert verdict.reason == "camera cam-2: inference error: output tensor has NaN"


def test_a_confidence_collapse_is_judged_against_that_cameras_own_baseline() -> None:
    # cam-1 always ran at 0.5 (its belt is hard); cam-2 ran at 0.95 and now gets 0.4
    probation = cameras(cam_1=0.5, cam_2=0.95, cam_3=0.9)
    feed(probation, T0 + 6, cam_1={"confidence": 0.45}, cam_2={"confidence": 0.4})
    verdict = probation.verdict(T0 + 6)
    assert verdict is not None and not verdict.passed
    assert verdict.reason.startswith("camera cam-2: confidence collapse: mean confidence 0.400")


def test_a_camera_without_predictions_of_the_new_bundle_fails_naming_it() -> None:
    probation = CameraProbation({c: monitor() for c in CAMERAS}, silence_s=3.0)
    for k in (1, 2, 3):
        for camera in ("cam-1", "cam-2"):
            probation.record(seen(camera, T0 + k))
    assert probation.verdict(T0 + 3) is None  # within the limit
    verdict = probation.verdict(T0 + 3.5)
    assert verdict is not None and not verdict.passed
    assert verdict.reason == (
        "camera cam-3: no prediction with the new bundle for 3.5 s since activation (limit 3 s)"
    )


def test_a_camera_that_stops_mid_probation_fails_naming_it() -> None:
    probation = cameras()
    feed(probation, T0 + 4)
    for k in (5, 6, 7, 8):
        for camera in ("cam-1", "cam-3"):
            probation.record(seen(camera, T0 + k))
    verdict = probation.verdict(T0 + 8)
    assert verdict is not None and not verdict.passed
    assert verdict.reason.startswith("camera cam-2: no prediction with the new bundle for 4.0 s")
    assert "after 4 predictions" in verdict.reason


def test_passes_once_every_cameras_window_is_over() -> None:
    probation = cameras(silence_s=None)
    for k in range(1, 12):
        for camera in ("cam-1", "cam-2"):
            probation.record(seen(camera, T0 + k))
    probation.record(seen("cam-3", T0 + 1))
    assert probation.verdict(T0 + 12) is None  # cam-3 has 1 of its 5 predictions
    for k in range(2, 6):
        probation.record(seen("cam-3", T0 + k))
    verdict = probation.verdict(T0 + 12)
    assert verdict is not None and verdict.passed, verdict
    assert verdict.reason.startswith("3 cameras without failure: cam-1: 11 predictions")
    assert "cam-3: 5 predictions" in verdict.reason
    assert probation.predictions == 27


def test_predictions_of_unknown_cameras_are_ignored_and_bad_settings_refused() -> None:
    probation = cameras(silence_s=None)
    probation.record(seen("cam-9", T0 + 1, confidence=float("nan")))
    assert probation.predictions == 0 and probation.verdict(T0 + 1) is None
    with pytest.raises(ValueError, match="at least one"):
        CameraProbation({})
    with pytest.raises(ValueError, match="silence_s"):
        CameraProbation({"a": monitor()}, silence_s=0)
