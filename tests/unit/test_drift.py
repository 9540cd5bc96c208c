"""Drift's pure core and its registry room: divergences, windows from running totals, verdicts,
alerts recorded once, on a real SQLite registry."""

from __future__ import annotations

import math

import pytest

from edgefleet.testing import FakeClock
from fleet_server.drift import (
    DriftStatus,
    DriftThresholds,
    QualityPoint,
    WindowFigures,
    js_divergence,
    judge,
    measure,
    next_status,
    pool,
    psi,
    read_point,
    window_between,
)
from fleet_server.drift_fleet import FleetDriftInputs, assess
from fleet_server.drift_monitor import DriftMonitor
from fleet_server.quality_figures import Baseline
from fleet_server.registry import Registry

BUNDLE = "a" * 64
BASELINE = Baseline(mean_confidence=0.9, class_distribution={"glass": 0.5, "paper": 0.5})


def test_divergences_are_zero_for_the_same_mix_and_grow_with_the_shift() -> None:
    same = {"glass": 0.5, "paper": 0.5}
    assert js_divergence(same, {"glass": 5, "paper": 5}) == pytest.approx(0.0)
    assert psi(same, same) == pytest.approx(0.0)
    assert js_divergence({"glass": 1.0}, {"paper": 1.0}) == pytest.approx(1.0)
    small = js_divergence({"glass": 0.55, "paper": 0.45}, same)
    large = js_divergence({"glass": 0.9, "paper": 0.1}, same)
    assert 0 < small < large < 1
    assert 0 < psi({"glass": 0.55, "paper": 0.45}, same) < psi({"glass": 0.9, "paper": 0.1}, same)
    assert math.isfinite(psi({"glass": 1.0}, same))  # an empty class is smoothed, not infinite


def point(at: float, predictions: float, confidence: float | None, **counts: float) -> QualityPoint:
    return QualityPoint(at, BUNDLE, predictions, confidence, counts)


def test_a_window_is_the_difference_of_two_snapshots_running_totals() -> None:
    first = point(0, 100, 0.9, glass=50, paper=50)
    last = point(10, 200, 0.8, glass=50, paper=50, cardboard=100)
    window = window_between(first, last)
    assert window.predictions == 100
    assert window.class_counts == {"cardboard": 100}
    assert window.mean_confidence == pytest.approx(0.7)  # (0.8*200 - 0.9*100) / 100


def test_a_restart_or_a_new_bundle_counts_from_the_last_snapshot_alone() -> None:
    first = point(0, 100, 0.9, glass=100)
    restarted = point(10, 30, 0.5, paper=30)
    assert window_between(first, restarted).class_counts == {"paper": 30}
    other = QualityPoint(10, "b" * 64, 40, 0.6, {"glass": 40})
    assert window_between(first, other).bundle == "b" * 64
    assert window_between(first, other).predictions == 40


def test_read_point_skips_what_is_not_a_figure() -> None:
    snapshot = {
        "quality": {
            "bundle": BUNDLE,
            "predictions": 10,
            "mean_confidence": 1.5,
            "class_counts": {"glass": 4, "paper": -1, "metal": "x"},
        }
    }
    read = read_point(snapshot, 1.0)
    assert read is not None
    assert read.mean_confidence is None and read.class_counts == {"glass": 4.0}
    assert read_point({"metrics": {}}, 1.0) is None


def test_judge_needs_enough_predictions_and_clears_with_hysteresis() -> None:
    thresholds = DriftThresholds(min_predictions=50, max_class_divergence=0.1, clear_ratio=0.5)
    few = measure(WindowFigures(BUNDLE, 10, {"glass": 10}, 0.9), BASELINE)
    assert judge(few, thresholds, drifting=False).state == "unknown"
    shifted = measure(WindowFigures(BUNDLE, 100, {"glass": 100}, 0.9), BASELINE)
    verdict = judge(shifted, thresholds, drifting=False)
    assert verdict.state == "drifting" and "class divergence" in verdict.reasons[0]
    assert shifted.biggest_shift is not None
    assert shifted.biggest_shift[0] == "glass"
    assert shifted.biggest_shift[1] == pytest.approx(0.5)
    # a little over half the limit: still drifting once drifting, fine otherwise
    slight = measure(WindowFigures(BUNDLE, 100, {"glass": 78, "paper": 22}, 0.9), BASELINE)
    assert slight.class_divergence is not None and 0.05 < slight.class_divergence < 0.1
    assert judge(slight, thresholds, drifting=False).state == "ok"
    assert judge(slight, thresholds, drifting=True).state == "drifting"


def test_confidence_drop_alone_is_drift_and_uncertain_is_reported_apart() -> None:
    window = WindowFigures(BUNDLE, 100, {"glass": 40, "paper": 40, "uncertain": 20}, 0.6)
    figures = measure(window, BASELINE)
    assert figures.class_divergence == pytest.approx(0.0)
    assert figures.uncertain_share == pytest.approx(0.2)
    assert figures.confidence_drop == pytest.approx(0.3)
    verdict = judge(figures, DriftThresholds(min_predictions=10), drifting=False)
    assert verdict.state == "drifting" and "confidence drop" in verdict.reasons[0]


def test_next_status_keeps_since_and_alerts_once() -> None:
    thresholds = DriftThresholds(min_predictions=10)
    shifted = measure(WindowFigures(BUNDLE, 100, {"glass": 100}, 0.9), BASELINE)
    verdict = judge(shifted, thresholds, drifting=False)
    first, alert = next_status(None, "device", "cam-1", figures=shifted, verdict=verdict, now=100)
    assert alert == "raised" and first.since == 100
    again, alert = next_status(first, "device", "cam-1", figures=shifted, verdict=verdict, now=160)
    assert alert is None and again.since == 100
    quiet = measure(WindowFigures(BUNDLE, 5, {"glass": 5}, 0.9), BASELINE)
    unknown = judge(quiet, thresholds, drifting=True)
    kept, alert = next_status(again, "device", "cam-1", figures=quiet, verdict=unknown, now=220)
    assert alert is None and kept.drifting and kept.since == 100
    fine = measure(WindowFigures(BUNDLE, 100, {"glass": 50, "paper": 50}, 0.9), BASELINE)
    cleared, alert = next_status(
        kept, "device", "cam-1", figures=fine, verdict=judge(fine, thresholds, True), now=280
    )
    assert alert == "cleared" and cleared.state == "ok" and cleared.since is None


def test_a_group_pools_the_devices_on_its_most_used_bundle() -> None:
    windows = {
        "cam-1": WindowFigures(BUNDLE, 100, {"glass": 80, "paper": 20}, 0.9),
        "cam-2": WindowFigures(BUNDLE, 100, {"glass": 100}, 0.9),
        "cam-3": WindowFigures("b" * 64, 10, {"paper": 10}, 0.9),
    }
    inputs = FleetDriftInputs(
        windows, {"line-1": ["cam-1", "cam-2", "cam-3"]}, {BUNDLE: BASELINE}, {BUNDLE: "m 1.0"}
    )
    changes = {
        (c.status.scope, c.status.name): c
        for c in assess(inputs, DriftThresholds(min_predictions=50), {}, now=1.0)
    }
    assert changes[("device", "cam-1")].status.state == "ok"
    assert changes[("device", "cam-2")].status.state == "drifting"
    assert changes[("device", "cam-3")].status.state == "unknown"  # no baseline, few predictions
    group = changes[("group", "line-1")]
    assert group.status.figures["devices"] == 2 and group.status.state == "drifting"
    assert group.message is not None and "candidate for retraining" in group.message
    assert pool(list(windows.values())[:2]).class_counts == {"glass": 180, "paper": 20}


def _snapshot(predictions: int, **counts: int) -> dict[str, object]:
    return {
        "protocol": 1,
        "quality": {
            "bundle": BUNDLE,
            "predictions": predictions,
            "mean_confidence": 0.9,
            "class_counts": counts,
        },
    }


def test_the_registry_stores_statuses_and_records_each_alert_once(database_url: str) -> None:
    clock = FakeClock()
    with Registry.open(database_url, clock=clock) as registry:
        registry.provision_device("cam-1", tags=["line-1"])
        start = clock.now
        registry.record_telemetry("cam-1", _snapshot(100, glass=50, paper=50), at=start)
        registry.record_telemetry("cam-1", _snapshot(300, glass=250, paper=50), at=start + 10)
        windows = registry.drift_windows(start - 1)
        assert windows["cam-1"].class_counts == {"glass": 200}
        # no bundle in the catalogue: no baseline, so no verdict
        thresholds = DriftThresholds(window_s=60, min_predictions=50)
        changes = registry.watch_drift(thresholds, now=start + 11)
        assert {c.status.state for c in changes} == {"unknown"}
        # with the baseline, the device and its group drift: one alert each, once
        inputs = registry.drift_inputs(start - 1)
        baselines = {BUNDLE: BASELINE}
        previous: dict[tuple[str, str], DriftStatus] = {
            (s.scope, s.name): s for s in registry.drift_statuses()
        }
        for now in (start + 12, start + 13):
            changes = assess(
                FleetDriftInputs(inputs.windows, inputs.groups, baselines, {}),
                thresholds,
                previous,
                now,
            )
            registry.save_drift(changes)
            previous = {(s.scope, s.name): s for s in registry.drift_statuses()}
        drifting = registry.drift_statuses(drifting_only=True)
        assert [(s.scope, s.name, s.since) for s in drifting] == [
            ("device", "cam-1", start + 12),
            ("group", "line-1", start + 12),
        ]
        alerts = [t for t in registry.timeline(limit=50) if t.kind == "drift-raised"]
        assert len(alerts) == 2
        assert {a.device_id for a in alerts} == {"cam-1", None}
        with pytest.raises(Exception, match="scope"):
            registry.drift_statuses("wave")
        assert [a.kind for a in registry.drift_alerts()] == ["drift-raised", "drift-raised"]
        assert registry.drift_alerts(after_id=alerts[-1].id) == []
        # the operator's limits, read by the monitor at each pass
        assert registry.drift_thresholds() == DriftThresholds()
        registry.set_drift_thresholds(DriftThresholds(window_s=60, max_class_divergence=0.9))
        monitor = DriftMonitor(registry, clock=clock)
        monitor.check(now=start + 14)
        assert monitor.thresholds.max_class_divergence == 0.9
        # no bundle in this catalogue, so no baseline: 'unknown', which never clears a drift
        assert [a.kind for a in registry.drift_alerts()] == ["drift-raised", "drift-raised"]
        assert len(registry.drift_statuses(drifting_only=True)) == 2
