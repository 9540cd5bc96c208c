"""HealthState verdicts, driven with explicit monotonic timestamps."""

from __future__ import annotations

import json

import pytest

from edge_runtime.health import HealthReport, HealthState
from edgefleet.testing import FakeClock


def make_state() -> HealthState:
    return HealthState(
        max_frame_age_s=5.0, max_inference_s=2.0, startup_grace_s=10.0, started_at=0.0
    )


def test_healthy_during_startup_grace_then_unhealthy_without_frames() -> None:
    health = make_state()
    report = health.evaluate(9.9)
    assert report.healthy
    assert report.reasons == []
    assert report.details["last_frame_age_s"] is None
    late = health.evaluate(12.0)
    assert not late.healthy
    assert late.reasons == ["no frame received yet (12.0 s since start, grace 10 s)"]


def test_frames_keep_it_healthy_and_a_stale_frame_does_not() -> None:
    health = make_state()
    health.frame_received(3.0)
    assert health.evaluate(8.0).healthy  # exactly at the limit is still fine
    stale = health.evaluate(15.3)
    assert not stale.healthy
    assert stale.reasons == ["no frame for 12.3 s (limit 5 s)"]
    assert stale.details["last_frame_age_s"] == pytest.approx(12.3)
    assert stale.details["frames_received"] == 1
    health.frame_received(15.5)  # recovery
    assert health.evaluate(16.0).healthy


def test_stuck_inference_is_unhealthy_until_it_finishes() -> None:
    health = make_state()
    health.frame_received(20.0)
    health.inference_started(20.0)
    assert health.evaluate(21.9).healthy
    stuck = health.evaluate(23.1)
    assert stuck.reasons == ["inference running for 3.1 s (limit 2 s)"]
    assert stuck.details["inference_running_s"] == pytest.approx(3.1)
    both = health.evaluate(26.0)
    assert both.reasons == [
        "no frame for 6.0 s (limit 5 s)",
        "inference running for 6.0 s (limit 2 s)",
    ]
    health.inference_finished(26.0)
    health.frame_received(26.1)
    recovered = health.evaluate(26.2)
    assert recovered.healthy
    assert recovered.details["inference_running_s"] is None
    assert recovered.details["inferences"] == 1
    assert recovered.details["last_inference_s"] == pytest.approx(6.0)


def test_stuck_inference_counts_even_within_the_grace_window() -> None:
    health = make_state()
    health.inference_started(1.0)
    assert health.evaluate(4.0).reasons == ["inference running for 3.0 s (limit 2 s)"]


def test_injected_clock_is_used_when_no_time_is_given() -> None:
    clock = FakeClock(100.0)
    health = HealthState(max_frame_age_s=1.0, startup_grace_s=0.0, clock=clock)
    clock.now = 100.1
    assert not health.evaluate().healthy  # grace 0: any time without a frame is too long
    health.frame_received()
    assert health.evaluate().healthy
    clock.now = 101.6
    assert health.evaluate().reasons == ["no frame for 1.5 s (limit 1 s)"]


def test_report_details_and_json_form() -> None:
    health = make_state()
    health.set_active_bundle("tiny", "1.0.0", "ab" * 32)
    health.frame_received(1.0)
    report = health.evaluate(2.0)
    body = report.to_dict()
    assert json.loads(json.dumps(body)) == body
    assert body["status"] == "ok"
    assert body["details"]["active_bundle"] == {
        "name": "tiny",
        "version": "1.0.0",
        "sha256": "ab" * 32,
    }
    assert body["details"]["limits"] == {
        "max_frame_age_s": 5.0,
        "max_inference_s": 2.0,
        "startup_grace_s": 10.0,
    }
    assert HealthReport(healthy=False, reasons=["x"]).status == "unhealthy"


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_frame_age_s"):
        HealthState(max_frame_age_s=0)
    with pytest.raises(ValueError, match="max_inference_s"):
        HealthState(max_inference_s=-1)
    with pytest.raises(ValueError, match="startup_grace_s"):
        HealthState(startup_grace_s=-1)


def test_checks_add_reasons_or_warnings_to_the_verdict() -> None:
    """A dead worker makes /healthz unhealthy; a held-back store is a warning while it classifies."""
    health = HealthState(startup_grace_s=10.0, clock=lambda: 0.0, started_at=0.0)
    problems: dict[str, str | None] = {"worker": None, "store": None}
    health.add_check(lambda: problems["worker"])
    health.add_check(lambda: problems["store"], fatal=False)
    assert health.evaluate().healthy and "warnings" not in health.evaluate().details
    problems["store"] = "update state not persisted, updates held: disk full"
    report = health.evaluate()
    assert report.healthy and report.details["warnings"] == [problems["store"]]
    problems["worker"] = "the update agent's worker is not running (RuntimeError: boom)"
    report = health.evaluate()
    assert not report.healthy and report.reasons == [problems["worker"]]
