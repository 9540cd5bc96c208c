"""The rollout quality gate with plain numbers: every check just under and just over its limit."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from edge_runtime.bundle.manifest import Compatibility, DatasetRef, QualityReport
from fleet_server.quality_gate import (
    Baseline,
    CheckStatus,
    GateOutcome,
    GateThresholds,
    QualityFigures,
    WaveTelemetry,
    evaluate_gate,
    jensen_shannon,
    total_variation,
)
from tests.conftest import manifest_for
from tests.models import LABELS

EVEN = dict.fromkeys(LABELS, 100)
"""600 predictions spread evenly over the six labels."""


def figures(**overrides: Any) -> QualityFigures:
    """Healthy figures: 1000 predictions, no errors, p95 20 ms, confidence 0.8, even classes."""
    fields: dict[str, Any] = {
        "predictions": 1000,
        "errors": 0,
        "latency_p95_ms": 20.0,
        "mean_confidence": 0.8,
        "class_counts": EVEN,
    }
    fields.update(overrides)
    return QualityFigures(**fields)


def only(check: str, **limits: Any) -> GateThresholds:
    """Thresholds with every check off except the one (or ones) given."""
    off: dict[str, Any] = {
        "max_latency_ratio": None,
        "max_budget_ratio": None,
        "max_error_rate": None,
        "max_confidence_drop": None,
        "max_baseline_confidence_drop": None,
        "max_class_shift": None,
        "max_baseline_class_shift": None,
    }
    off.update(limits)
    assert check in limits
    return GateThresholds(**off)


def gate(new: QualityFigures, previous: QualityFigures | None = None, **kwargs: Any):
    thresholds = kwargs.pop("thresholds", GateThresholds())
    baseline = kwargs.pop("baseline", None)
    return evaluate_gate(
        WaveTelemetry(new=new, previous=previous), thresholds, baseline, label="wave 1", **kwargs
    )


# --- healthy, undecided ------------------------------------------------------------


def test_healthy_wave_passes_every_check_with_values_and_limits() -> None:
    baseline = Baseline(
        mean_confidence=0.82, class_distribution=dict.fromkeys(LABELS, 1 / 6), latency_budget_ms=30
    )
    verdict = gate(figures(), figures(), baseline=baseline)
    assert verdict.outcome is GateOutcome.PASSED
    assert {c.name for c in verdict.checks} == {
        "latency_p95_vs_previous",
        "latency_p95_vs_budget",
        "error_rate",
        "confidence_drop_vs_previous",
        "confidence_drop_vs_baseline",
        "class_shift_vs_previous",
        "class_shift_vs_baseline",
    }
    assert all(c.status is CheckStatus.PASSED for c in verdict.checks)
    assert all(c.measured is not None and c.limit is not None for c in verdict.checks)
    assert verdict.check("latency_p95_vs_previous").measured == pytest.approx(1.0)
    assert verdict.check("latency_p95_vs_budget").limit == 30
    assert verdict.reason == "wave 1: quality gate passed (7 checks passed, 0 skipped)"


def test_no_telemetry_is_undecided_not_pass() -> None:
    verdict = evaluate_gate(None, GateThresholds(), None, label="wave 2")
    assert verdict.outcome is GateOutcome.UNDECIDED
    assert verdict.reason == "wave 2: no telemetry from the new bundle yet"


def test_too_few_predictions_is_undecided_even_when_the_numbers_look_bad() -> None:
    new = figures(predictions=199, errors=0, latency_p95_ms=500.0, mean_confidence=0.1)
    verdict = gate(new, figures())
    assert verdict.outcome is GateOutcome.UNDECIDED
    latency = verdict.check("latency_p95_vs_previous")
    assert latency.status is CheckStatus.UNDECIDED
    assert latency.measured is None
    assert "199 predictions on the new bundle (need 200)" in verdict.reason
    assert verdict.reason.startswith("wave 1: ")
    assert verdict.reason.count("wave 1") == 1


def test_exactly_min_samples_decides() -> None:
    verdict = gate(figures(predictions=200, class_counts={}), figures())
    assert verdict.check("latency_p95_vs_previous").status is CheckStatus.PASSED
    assert verdict.check("error_rate").status is CheckStatus.PASSED


def test_class_shift_needs_its_own_sample_size() -> None:
    small = dict.fromkeys(LABELS, 83)  # 498 labelled predictions
    verdict = gate(figures(class_counts=small), figures())
    shift = verdict.check("class_shift_vs_previous")
    assert shift.status is CheckStatus.UNDECIDED
    assert "498 labelled predictions on the new bundle (need 500)" in shift.reason
    assert verdict.outcome is GateOutcome.UNDECIDED
    assert verdict.check("latency_p95_vs_previous").status is CheckStatus.PASSED
    enough = {**small, LABELS[0]: 85}
    assert gate(figures(class_counts=enough), figures()).outcome is GateOutcome.PASSED


def test_missing_reference_is_skipped_not_blocking() -> None:
    verdict = gate(figures(), None)
    assert verdict.outcome is GateOutcome.PASSED
    for name in (
        "latency_p95_vs_previous",
        "confidence_drop_vs_previous",
        "class_shift_vs_previous",
    ):
        assert verdict.check(name).status is CheckStatus.SKIPPED
    assert verdict.check("latency_p95_vs_budget").status is CheckStatus.SKIPPED
    assert verdict.check("error_rate").status is CheckStatus.PASSED


def test_previous_with_too_little_data_is_skipped() -> None:
    previous = figures(predictions=50, latency_p95_ms=1.0, mean_confidence=0.99, class_counts={})
    verdict = gate(figures(), previous)
    assert verdict.outcome is GateOutcome.PASSED
    assert verdict.check("latency_p95_vs_previous").status is CheckStatus.SKIPPED
    assert verdict.check("confidence_drop_vs_previous").status is CheckStatus.SKIPPED
    assert verdict.check("class_shift_vs_previous").status is CheckStatus.SKIPPED


def test_limit_none_switches_a_check_off() -> None:
    thresholds = only("max_error_rate", max_error_rate=None)
    verdict = gate(figures(errors=500), figures(latency_p95_ms=1.0), thresholds=thresholds)
    assert verdict.outcome is GateOutcome.PASSED
    assert all(c.status is CheckStatus.SKIPPED for c in verdict.checks)


# --- latency --------------------------------------------------------------------------


def test_latency_ratio_reason_reads_like_the_operator_expects() -> None:
    verdict = gate(figures(latency_p95_ms=41.2), figures(latency_p95_ms=21.7))
    assert verdict.outcome is GateOutcome.FAILED
    assert verdict.reason == "wave 1: latency p95 41.2 ms is 1.9x the previous 21.7 ms (limit 1.5x)"
    check = verdict.check("latency_p95_vs_previous")
    assert check.measured == pytest.approx(41.2 / 21.7)
    assert check.limit == 1.5
    assert check.reference == 21.7


@pytest.mark.parametrize(
    ("p95", "status"),
    [(29.9, CheckStatus.PASSED), (30.0, CheckStatus.PASSED), (30.1, CheckStatus.FAILED)],
)
def test_latency_ratio_just_under_at_and_over(p95: float, status: CheckStatus) -> None:
    thresholds = only("max_latency_ratio", max_latency_ratio=1.5)
    verdict = gate(figures(latency_p95_ms=p95), figures(latency_p95_ms=20.0), thresholds=thresholds)
    assert verdict.check("latency_p95_vs_previous").status is status


def test_latency_ratio_near_the_limit_shows_enough_digits() -> None:
    thresholds = only("max_latency_ratio", max_latency_ratio=1.5)
    verdict = gate(
        figures(latency_p95_ms=30.08), figures(latency_p95_ms=20.0), thresholds=thresholds
    )
    assert verdict.outcome is GateOutcome.FAILED
    assert "is 1.504x the previous" in verdict.reason


@pytest.mark.parametrize(
    ("p95", "status"), [(29.9, CheckStatus.PASSED), (30.1, CheckStatus.FAILED)]
)
def test_latency_budget_just_under_and_over(p95: float, status: CheckStatus) -> None:
    thresholds = only("max_budget_ratio", max_budget_ratio=1.0)
    baseline = Baseline(latency_budget_ms=30.0)
    verdict = gate(figures(latency_p95_ms=p95), None, thresholds=thresholds, baseline=baseline)
    check = verdict.check("latency_p95_vs_budget")
    assert check.status is status
    assert check.measured == p95
    assert check.limit == 30.0
    if status is CheckStatus.FAILED:
        assert verdict.reason == ("wave 1: latency p95 30.1 ms is over the bundle's budget 30 ms")


def test_previous_p95_of_zero_skips_the_ratio() -> None:
    verdict = gate(figures(), figures(latency_p95_ms=0.0))
    assert verdict.check("latency_p95_vs_previous").status is CheckStatus.SKIPPED


def test_new_p95_missing_is_undecided() -> None:
    verdict = gate(figures(latency_p95_ms=None), figures())
    assert verdict.check("latency_p95_vs_previous").status is CheckStatus.UNDECIDED
    assert verdict.outcome is GateOutcome.UNDECIDED


# --- error rate -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("errors", "status"),
    [(9, CheckStatus.PASSED), (10, CheckStatus.PASSED), (11, CheckStatus.FAILED)],
)
def test_error_rate_just_under_at_and_over(errors: int, status: CheckStatus) -> None:
    thresholds = only("max_error_rate", max_error_rate=0.01)
    new = figures(predictions=1000 - errors, errors=errors)
    check = gate(new, thresholds=thresholds).check("error_rate")
    assert check.status is status
    assert check.measured == pytest.approx(errors / 1000)
    assert check.limit == 0.01


def test_error_rate_reason_and_every_frame_failing() -> None:
    thresholds = only("max_error_rate", max_error_rate=0.01)
    verdict = gate(figures(predictions=0, errors=300), thresholds=thresholds)
    assert verdict.outcome is GateOutcome.FAILED
    assert verdict.reason == "wave 1: 300 inference errors in 300 attempts is 100% (limit 1%)"


# --- confidence -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mean", "status"), [(0.751, CheckStatus.PASSED), (0.749, CheckStatus.FAILED)]
)
def test_confidence_drop_vs_previous_just_under_and_over(mean: float, status: CheckStatus) -> None:
    thresholds = only("max_confidence_drop", max_confidence_drop=0.05)
    verdict = gate(
        figures(mean_confidence=mean), figures(mean_confidence=0.8), thresholds=thresholds
    )
    check = verdict.check("confidence_drop_vs_previous")
    assert check.status is status
    assert check.measured == pytest.approx(0.8 - mean)
    assert check.reference == 0.8
    if status is CheckStatus.FAILED:
        assert verdict.reason == (
            "wave 1: mean confidence 74.9% is 5.1 points below the previous 80% "
            "(limit 5 points below)"
        )


@pytest.mark.parametrize(
    ("mean", "status"), [(0.76, CheckStatus.PASSED), (0.74, CheckStatus.FAILED)]
)
def test_confidence_drop_vs_baseline_just_under_and_over(mean: float, status: CheckStatus) -> None:
    thresholds = only("max_baseline_confidence_drop", max_baseline_confidence_drop=0.15)
    verdict = gate(
        figures(mean_confidence=mean),
        thresholds=thresholds,
        baseline=Baseline(mean_confidence=0.9),
    )
    check = verdict.check("confidence_drop_vs_baseline")
    assert check.status is status
    assert "the quality report's 90%" in check.reason


def test_confidence_rise_always_passes() -> None:
    thresholds = only("max_confidence_drop", max_confidence_drop=0.0)
    verdict = gate(
        figures(mean_confidence=0.9), figures(mean_confidence=0.8), thresholds=thresholds
    )
    check = verdict.check("confidence_drop_vs_previous")
    assert check.status is CheckStatus.PASSED
    assert check.measured == pytest.approx(-0.1)
    assert "is 10 points above the previous 80%" in check.reason


def test_latency_budget_with_a_ratio_says_the_scaled_limit() -> None:
    thresholds = only("max_budget_ratio", max_budget_ratio=1.5)
    baseline = Baseline(latency_budget_ms=30.0)
    verdict = gate(figures(latency_p95_ms=44.0), thresholds=thresholds, baseline=baseline)
    check = verdict.check("latency_p95_vs_budget")
    assert check.status is CheckStatus.PASSED
    assert check.limit == 45.0
    assert (
        check.reason
        == "wave 1: latency p95 44 ms is within the bundle's budget 30 ms x 1.5 = 45 ms"
    )


# --- class distribution -----------------------------------------------------------------


def test_divergences_on_known_distributions() -> None:
    assert jensen_shannon({"a": 1, "b": 1}, {"a": 5, "b": 5}) == 0.0
    assert jensen_shannon({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    p, q = {"a": 3.0, "b": 1.0}, {"a": 1.0, "b": 1.0, "c": 2.0}
    assert jensen_shannon(p, q) == pytest.approx(jensen_shannon(q, p))
    # by hand: m = (0.5, 0.375, 0.125)
    pa, pb = 0.75, 0.25
    qa, qb, qc = 0.25, 0.25, 0.5
    ma, mb, mc = 0.5, 0.25, 0.25
    expected = 0.5 * (pa * math.log2(pa / ma) + pb * math.log2(pb / mb)) + 0.5 * (
        qa * math.log2(qa / ma) + qb * math.log2(qb / mb) + qc * math.log2(qc / mc)
    )
    assert jensen_shannon(p, q) == pytest.approx(expected)
    assert total_variation({"a": 3, "b": 1}, {"a": 1, "b": 1}) == pytest.approx(0.25)
    assert total_variation({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    assert total_variation({}, {}) == 0.0


SKEWED = {**EVEN, "cardboard": 400}
"""900 predictions, cardboard four times as often as each other label."""


@pytest.mark.parametrize(
    ("delta", "status"), [(1e-6, CheckStatus.PASSED), (-1e-6, CheckStatus.FAILED)]
)
def test_class_shift_vs_previous_just_under_and_over(delta: float, status: CheckStatus) -> None:
    shift = jensen_shannon(
        {k: float(v) for k, v in SKEWED.items()}, {k: float(v) for k, v in EVEN.items()}
    )
    assert 0.01 < shift < 0.2
    thresholds = only("max_class_shift", max_class_shift=shift + delta)
    verdict = gate(figures(class_counts=SKEWED), figures(class_counts=EVEN), thresholds=thresholds)
    check = verdict.check("class_shift_vs_previous")
    assert check.status is status
    assert check.measured == pytest.approx(shift)
    assert "(Jensen-Shannon) from the previous version's" in check.reason


@pytest.mark.parametrize(
    ("delta", "status"), [(1e-6, CheckStatus.PASSED), (-1e-6, CheckStatus.FAILED)]
)
def test_class_shift_vs_baseline_just_under_and_over(delta: float, status: CheckStatus) -> None:
    shares = dict.fromkeys(LABELS, 1 / 6)
    shift = jensen_shannon({k: float(v) for k, v in SKEWED.items()}, shares)
    thresholds = only("max_baseline_class_shift", max_baseline_class_shift=shift + delta)
    baseline = Baseline(class_distribution=shares)
    verdict = gate(figures(class_counts=SKEWED), thresholds=thresholds, baseline=baseline)
    assert verdict.check("class_shift_vs_baseline").status is status


def test_a_new_label_counts_as_a_shift() -> None:
    thresholds = only("max_class_shift", max_class_shift=0.1)
    new = {"cardboard": 300, "surprise": 300}
    verdict = gate(figures(class_counts=new), figures(class_counts=EVEN), thresholds=thresholds)
    assert verdict.outcome is GateOutcome.FAILED


# --- verdict shape ------------------------------------------------------------------------


def test_several_failures_are_all_in_the_reason_with_one_label() -> None:
    verdict = gate(figures(latency_p95_ms=60.0, mean_confidence=0.5), figures(latency_p95_ms=20.0))
    assert verdict.outcome is GateOutcome.FAILED
    assert verdict.reason.startswith("wave 1: latency p95 60 ms is 3x the previous 20 ms")
    assert "; mean confidence 50% is 30 points below the previous 80%" in verdict.reason
    assert verdict.reason.count("wave 1") == 1
    failed = {c.name for c in verdict.checks if c.status is CheckStatus.FAILED}
    assert failed == {"latency_p95_vs_previous", "confidence_drop_vs_previous"}


def test_failure_wins_over_undecided() -> None:
    new = figures(latency_p95_ms=60.0, class_counts={"glass": 10})
    verdict = gate(new, figures())
    assert verdict.check("class_shift_vs_previous").status is CheckStatus.UNDECIDED
    assert verdict.outcome is GateOutcome.FAILED


def test_check_lookup_of_an_unknown_name() -> None:
    with pytest.raises(KeyError):
        gate(figures()).check("nope")


# --- inputs ---------------------------------------------------------------------------------


def test_combine_sums_counts_weights_confidence_and_keeps_the_worst_p95() -> None:
    a = QualityFigures(
        predictions=300, errors=1, latency_p95_ms=20.0, mean_confidence=0.9, class_counts={"a": 300}
    )
    b = QualityFigures(
        predictions=100,
        errors=3,
        latency_p95_ms=35.0,
        mean_confidence=0.5,
        class_counts={"a": 50, "b": 50},
    )
    c = QualityFigures(predictions=0)
    combined = QualityFigures.combine([a, b, c])
    assert combined.predictions == 400
    assert combined.errors == 4
    assert combined.latency_p95_ms == 35.0
    assert combined.mean_confidence == pytest.approx(0.8)
    assert combined.class_counts == {"a": 350, "b": 50}
    assert combined.error_rate == pytest.approx(4 / 404)
    empty = QualityFigures.combine([])
    assert empty.predictions == 0
    assert empty.error_rate is None
    assert empty.mean_confidence is None
    assert empty.latency_p95_ms is None


def test_figures_refuse_impossible_values() -> None:
    with pytest.raises(ValidationError):
        QualityFigures(predictions=-1)
    with pytest.raises(ValidationError):
        QualityFigures(predictions=1, mean_confidence=1.2)
    with pytest.raises(ValidationError):
        QualityFigures(predictions=1, latency_p95_ms=math.nan)
    with pytest.raises(ValidationError):
        QualityFigures(predictions=1, surprise=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        GateThresholds(max_error_rate=2.0)


def test_baseline_from_a_manifest() -> None:
    report = QualityReport(
        dataset=DatasetRef(name="trashnet-val", sha256="d" * 64, num_images=600),
        accuracy=0.9,
        mean_confidence=0.84,
        class_distribution=[0.1, 0.2, 0.3, 0.2, 0.1, 0.1],
    )
    manifest = manifest_for(quality=report, compatibility=Compatibility(latency_budget_ms=25.0))
    baseline = Baseline.from_manifest(manifest)
    assert baseline.mean_confidence == 0.84
    assert baseline.latency_budget_ms == 25.0
    assert baseline.class_distribution == dict(
        zip(LABELS, [0.1, 0.2, 0.3, 0.2, 0.1, 0.1], strict=True)
    )
    bare = Baseline.from_manifest(manifest_for())
    assert bare == Baseline()
